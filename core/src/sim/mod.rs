//! An in-process cluster on a simulated network and clock (feature `sim`).
//!
//! Nodes are real [`Node`]s; the network is a queue of messages ordered by delivery
//! time. Every choice (latency, loss, duplication) comes from one seed, so a run
//! replays exactly; [`Cluster::trace_hash`] fingerprints everything that happened.
//! Links between nodes can drop, duplicate and reorder messages (random latency) and
//! be cut one way or both; whether a link is cut is decided when a message is
//! delivered, not when it is sent (as in Maelstrom). Clients are never cut off and
//! have no latency, but their requests and replies can be lost. Nodes crash (losing all memory) and restart from the records they
//! persisted, and a crash can fall between the effects of one step (its records
//! persisted, its messages never sent).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub mod history;

/// The work queue alone, without a node around it (for benchmarks).
pub use crate::broker::{Queue, QueueConfig, QueueError, SetAside};

use crate::broker::fnv1a;
use crate::wire::msg::{Init, Payload};
use crate::wire::{Body, Message};
use crate::{Config, Effect, Effects, Event, Node, Rng, Time, WalRecord};

/// How the simulated network behaves between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Seed for every network choice.
    pub seed: u64,
    /// Fewest milliseconds a node-to-node message takes.
    pub min_latency_ms: u64,
    /// Most milliseconds a node-to-node message takes.
    pub max_latency_ms: u64,
    /// Percent (0–100) of node-to-node messages lost.
    pub loss_percent: u64,
    /// Percent (0–100) of node-to-node messages delivered twice.
    pub duplicate_percent: u64,
    /// Percent (0–100) of client requests and replies lost on the way.
    pub client_loss_percent: u64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            seed: 0,
            min_latency_ms: 1,
            max_latency_ms: 10,
            loss_percent: 0,
            duplicate_percent: 0,
            client_loss_percent: 0,
        }
    }
}

impl NetConfig {
    /// Swarm testing: fault rates drawn from the seed, so a sweep covers calm and
    /// hostile networks alike (loss 0–40 %, duplication 0–20 %, latency up to 100 ms).
    pub fn swarm(seed: u64) -> NetConfig {
        let mut rng = Rng::new(seed ^ 0x5157_4152_4d00_0000);
        let min_latency_ms = rng.between(0, 20);
        NetConfig {
            seed,
            min_latency_ms,
            max_latency_ms: min_latency_ms + rng.between(0, 80),
            loss_percent: rng.between(0, 40),
            duplicate_percent: rng.between(0, 20),
            client_loss_percent: 0,
        }
    }
}

/// Counts of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Node-to-node messages delivered.
    pub delivered: u64,
    /// Node-to-node messages dropped (loss, a cut link, a crashed receiver).
    pub dropped: u64,
    /// Node-to-node messages sent twice.
    pub duplicated: u64,
    /// Raft snapshots delivered (a follower too far behind for the leader's log).
    pub snapshots: u64,
}

/// How many trace lines [`Cluster::trace_tail`] keeps.
const TRACE_LINES: usize = 200;

/// A cluster of nodes `n0..` on a simulated network.
#[derive(Debug)]
pub struct Cluster {
    now: Time,
    names: Vec<String>,
    configs: Vec<Config>,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    /// Everything each node persisted since its last snapshot: what it restarts from.
    records: Vec<Vec<WalRecord>>,
    /// Each node's last snapshot ([`Cluster::compact`]), if any.
    snapshots: Vec<Option<Vec<u8>>>,
    /// Nodes that crash during their next step, after persisting, before sending.
    crash_mid_step: BTreeSet<usize>,
    net: NetConfig,
    rng: Rng,
    /// (delivery time, sequence) → message.
    in_flight: BTreeMap<(Time, u64), Message>,
    next_seq: u64,
    /// (from, to) pairs whose messages are dropped.
    cut: BTreeSet<(usize, usize)>,
    /// Messages that reached clients, in arrival order.
    client_inbox: Vec<Message>,
    next_client_msg_id: u64,
    /// The msg_id of the request (from [`Cluster::request`]) whose reply is never lost.
    lossless_reply: Option<u64>,
    effects: Effects,
    trace: VecDeque<String>,
    trace_hash: u64,
    /// What the network did.
    pub stats: NetStats,
}

impl Cluster {
    /// `count` nodes named `n0..`, each built from `config(i)` and initialised.
    pub fn new(count: usize, net: NetConfig, config: impl Fn(usize) -> Config) -> Cluster {
        let names: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
        let configs: Vec<Config> = (0..count).map(config).collect();
        let mut cluster = Cluster {
            now: Time::ZERO,
            nodes: configs.iter().cloned().map(Node::new).collect(),
            configs,
            alive: vec![true; count],
            records: vec![Vec::new(); count],
            snapshots: vec![None; count],
            crash_mid_step: BTreeSet::new(),
            rng: Rng::new(net.seed),
            net,
            in_flight: BTreeMap::new(),
            next_seq: 0,
            cut: BTreeSet::new(),
            client_inbox: Vec::new(),
            next_client_msg_id: 1,
            lossless_reply: None,
            effects: Effects::new(),
            trace: VecDeque::new(),
            trace_hash: 0,
            stats: NetStats::default(),
            names,
        };
        for i in 0..count {
            let init = Init {
                node_id: cluster.names[i].clone(),
                node_ids: cluster.names.clone(),
            };
            let reply = cluster.request(i, Payload::Init(init));
            assert_eq!(reply, Payload::InitOk, "init of n{i}");
        }
        cluster
    }

    /// The simulated time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Node `i` (its state before a crash, while it is down).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Sends `payload` from client `c<i>` to node `i` and runs the cluster until the
    /// reply arrives; panics if none comes within 60 simulated seconds.
    /// Neither the request nor its reply is lost (it stands for a client that retries
    /// until it is answered).
    pub fn request(&mut self, node: usize, payload: Payload) -> Payload {
        match self.exchange(node, payload, 60_000, false) {
            Some(reply) => reply,
            None => panic!(
                "no reply from n{node} within 60 s\n{}",
                self.trace_tail().join("\n")
            ),
        }
    }

    /// Like [`Cluster::request`], but gives up after `timeout_ms` (a crashed node, or
    /// one that crashed before replying, never answers), and the request or its reply
    /// may be lost (`client_loss_percent`).
    pub fn try_request(
        &mut self,
        node: usize,
        payload: Payload,
        timeout_ms: u64,
    ) -> Option<Payload> {
        self.exchange(node, payload, timeout_ms, true)
    }

    fn exchange(
        &mut self,
        node: usize,
        payload: Payload,
        timeout_ms: u64,
        lossy: bool,
    ) -> Option<Payload> {
        let msg_id = self.send_request(node, payload, lossy);
        self.await_reply(node, msg_id, timeout_ms)
    }

    /// Sends `payload` from client `c<i>` to node `i` without waiting for the reply
    /// (neither is lost); returns the request's `msg_id` for [`Cluster::await_reply`].
    pub fn submit(&mut self, node: usize, payload: Payload) -> u64 {
        self.send_request(node, payload, false)
    }

    fn send_request(&mut self, node: usize, payload: Payload, lossy: bool) -> u64 {
        let msg_id = self.next_client_msg_id;
        self.next_client_msg_id += 1;
        let msg = Message {
            src: format!("c{node}"),
            dest: self.names[node].clone(),
            body: Body {
                payload,
                msg_id: Some(msg_id),
                in_reply_to: None,
            },
        };
        self.lossless_reply = (!lossy).then_some(msg_id);
        if self.alive[node] && !(lossy && self.lose_client_message()) {
            self.deliver(node, Event::Message(msg));
        }
        msg_id
    }

    /// Runs the cluster until client `c<node>` has the reply to request `msg_id`, or
    /// for `timeout_ms`; the reply, if it came.
    pub fn await_reply(&mut self, node: usize, msg_id: u64, timeout_ms: u64) -> Option<Payload> {
        let client = format!("c{node}");
        let give_up = self.now.plus_millis(timeout_ms);
        loop {
            let found = self
                .client_inbox
                .iter()
                .position(|m| m.dest == client && m.body.in_reply_to == Some(msg_id));
            if let Some(i) = found {
                return Some(self.client_inbox.remove(i).body.payload);
            }
            if self.now >= give_up {
                return None;
            }
            match self.next_event_time() {
                Some(t) if t <= give_up => self.run_next(),
                _ => self.now = give_up,
            }
        }
    }

    /// Cuts every link between the nodes in `a` and the nodes in `b`, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut_one_way(x, y);
                self.cut_one_way(y, x);
            }
        }
    }

    /// Drops every message from `from` to `to` (but not the other way).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Node `i` stops at once: its memory is gone; messages to it are lost.
    pub fn crash(&mut self, i: usize) {
        self.alive[i] = false;
        self.note(format!("{} crash n{i}", self.now));
    }

    /// Node `i` crashes during its next step: the step's records are persisted, its
    /// messages are never sent.
    pub fn crash_during_next_step(&mut self, i: usize) {
        self.crash_mid_step.insert(i);
    }

    /// Node `i` (if up) replaces what it persisted with a snapshot, built as the TCP
    /// server's compaction builds it: its previous snapshot, if any, and the records
    /// persisted since, replayed. A restart then rebuilds it from the snapshot and the
    /// records persisted after it.
    pub fn compact(&mut self, i: usize) {
        if self.alive[i] {
            self.snapshots[i] = Some(self.rebuilt(i).snapshot());
            self.records[i].clear();
            self.note(format!("{} compact n{i}", self.now));
        }
    }

    /// Node `i` as recovery rebuilds it: from its snapshot, if any, and the records it
    /// persisted after it.
    fn rebuilt(&self, i: usize) -> Node {
        let (config, records) = (self.configs[i].clone(), self.records[i].clone());
        Node::rebuild(config, self.snapshots[i].as_deref(), records)
            .unwrap_or_else(|e| panic!("n{i}: {e}"))
    }

    /// Node `i` starts again from its snapshot, if any, and the records it persisted.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i] = self.rebuilt(i);
        self.alive[i] = true;
        self.note(format!(
            "{} restart n{i} from {} records",
            self.now,
            self.records[i].len()
        ));
    }

    /// The healed phase: cancels crashes not yet happened and restarts every node
    /// that is down.
    pub fn restart_all(&mut self) {
        self.crash_mid_step.clear();
        for i in 0..self.nodes.len() {
            if !self.alive[i] {
                self.restart(i);
            }
        }
    }

    /// How many nodes the cluster has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// True if node `i` is up.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Runs the cluster until simulated time `until`.
    pub fn run_until(&mut self, until: Time) {
        while self.next_event_time().is_some_and(|t| t <= until) {
            self.run_next();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `ms` more simulated milliseconds.
    pub fn run_for_ms(&mut self, ms: u64) {
        self.run_until(self.now.plus_millis(ms));
    }

    /// A fingerprint of every event so far: equal runs have equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// The last events, oldest first, for a failure report.
    pub fn trace_tail(&self) -> Vec<String> {
        self.trace.iter().cloned().collect()
    }

    fn note(&mut self, line: String) {
        self.trace_hash =
            fnv1a(&[self.trace_hash.to_le_bytes().as_slice(), line.as_bytes()].concat());
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn next_event_time(&self) -> Option<Time> {
        let delivery = self.in_flight.first_key_value().map(|(k, _)| k.0);
        let timer = (0..self.nodes.len())
            .filter(|&i| self.alive[i])
            .filter_map(|i| self.nodes[i].next_deadline())
            .min();
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Processes the earliest delivery or timer (or just advances 1 ms if idle).
    fn run_next(&mut self) {
        let Some(at) = self.next_event_time() else {
            self.now = self.now.plus_millis(1);
            return;
        };
        self.now = self.now.max(at);
        if let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 <= self.now {
                let msg = entry.remove();
                let from = self.index_of(&msg.src);
                let to = self
                    .index_of(&msg.dest)
                    .expect("only node messages are queued");
                if from.is_some_and(|f| self.cut.contains(&(f, to))) || !self.alive[to] {
                    self.stats.dropped += 1;
                } else {
                    self.stats.delivered += 1;
                    if matches!(msg.body.payload, Payload::RaftSnapshot(_)) {
                        self.stats.snapshots += 1;
                    }
                    self.deliver(to, Event::Message(msg));
                }
                return;
            }
        }
        for i in 0..self.nodes.len() {
            if self.alive[i] && self.nodes[i].next_deadline().is_some_and(|t| t <= self.now) {
                self.deliver(i, Event::Tick);
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn deliver(&mut self, node: usize, event: Event) {
        self.note(format!("{} n{node} <- {event:?}", self.now));
        let mut out = std::mem::take(&mut self.effects);
        let mut input = match &event {
            Event::Message(msg) => Some(msg.clone()),
            _ => None,
        };
        self.nodes[node].step(self.now, event, &mut out);
        self.nodes[node].check_invariants();
        let crash = self.crash_mid_step.remove(&node);
        for effect in out.drain(..) {
            match effect {
                Effect::Persist(record) => self.records[node].push(record),
                Effect::PersistInput { at } => {
                    let msg = input
                        .take()
                        .expect("only a message step persists its input");
                    self.records[node].push(WalRecord::input(at, msg));
                }
                Effect::Log(_) => {}
                Effect::Send(_) if crash => {}
                Effect::Send(msg) => self.route(msg),
            }
        }
        self.effects = out;
        if crash {
            self.crash(node);
        }
    }

    /// True if a client's request or reply is lost (no draw when nothing is lost, so
    /// runs without client loss keep their traces).
    fn lose_client_message(&mut self) -> bool {
        let lost =
            self.net.client_loss_percent > 0 && self.rng.chance(self.net.client_loss_percent, 100);
        if lost {
            self.stats.dropped += 1;
        }
        lost
    }

    fn route(&mut self, msg: Message) {
        if self.index_of(&msg.dest).is_none() {
            let lossless =
                msg.body.in_reply_to.is_some() && msg.body.in_reply_to == self.lossless_reply;
            if lossless || !self.lose_client_message() {
                self.client_inbox.push(msg);
            }
            return;
        }
        if self.rng.chance(self.net.loss_percent, 100) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.net.duplicate_percent, 100) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let latency = self
                .rng
                .between(self.net.min_latency_ms, self.net.max_latency_ms);
            self.in_flight
                .insert((self.now.plus_millis(latency), self.next_seq), msg.clone());
            self.next_seq += 1;
        }
    }
}
