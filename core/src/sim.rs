//! An in-process cluster on a simulated network and clock (feature `sim`).
//!
//! Nodes are real [`Node`]s; the network is a queue of messages ordered by delivery
//! time. Every choice (latency, loss) comes from one seed, so a run replays exactly.
//! Like Maelstrom, links between nodes can drop messages and be cut one way, and
//! whether a link is cut is decided when a message is delivered, not when it is sent;
//! clients are never cut off and have no latency.

use std::collections::{BTreeMap, BTreeSet};

use crate::msg::{Init, Payload};
use crate::wire::{Body, Message};
use crate::{Config, Effect, Effects, Event, Node, Rng, Time};

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
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            seed: 0,
            min_latency_ms: 1,
            max_latency_ms: 10,
            loss_percent: 0,
        }
    }
}

/// A cluster of nodes `n0..` on a simulated network.
#[derive(Debug)]
pub struct Cluster {
    now: Time,
    names: Vec<String>,
    nodes: Vec<Node>,
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
    effects: Effects,
    /// Messages delivered between nodes, and dropped (lost or cut).
    pub stats: NetStats,
}

/// Counts of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Node-to-node messages delivered.
    pub delivered: u64,
    /// Node-to-node messages dropped (loss or a cut link).
    pub dropped: u64,
}

impl Cluster {
    /// `count` nodes named `n0..`, each built from `config(i)` and initialised.
    pub fn new(count: usize, net: NetConfig, config: impl Fn(usize) -> Config) -> Cluster {
        let names: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
        let mut cluster = Cluster {
            now: Time::ZERO,
            nodes: (0..count).map(|i| Node::new(config(i))).collect(),
            rng: Rng::new(net.seed),
            net,
            in_flight: BTreeMap::new(),
            next_seq: 0,
            cut: BTreeSet::new(),
            client_inbox: Vec::new(),
            next_client_msg_id: 1,
            effects: Effects::new(),
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

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Sends `payload` from client `c<i>` to node `i` and runs the cluster until the
    /// reply arrives (at most 60 simulated seconds); returns the reply's payload.
    pub fn request(&mut self, node: usize, payload: Payload) -> Payload {
        let msg_id = self.next_client_msg_id;
        self.next_client_msg_id += 1;
        let client = format!("c{node}");
        let msg = Message {
            src: client.clone(),
            dest: self.names[node].clone(),
            body: Body {
                payload,
                msg_id: Some(msg_id),
                in_reply_to: None,
            },
        };
        self.deliver(node, Event::Message(msg));
        let give_up = self.now.plus_millis(60_000);
        loop {
            let found = self
                .client_inbox
                .iter()
                .position(|m| m.dest == client && m.body.in_reply_to == Some(msg_id));
            if let Some(i) = found {
                return self.client_inbox.remove(i).body.payload;
            }
            assert!(
                self.now < give_up,
                "no reply from n{node} to request {msg_id}"
            );
            self.run_next();
        }
    }

    /// Cuts every link between the nodes in `a` and the nodes in `b`, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
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

    fn next_event_time(&self) -> Option<Time> {
        let delivery = self.in_flight.first_key_value().map(|(k, _)| k.0);
        let timer = self.nodes.iter().filter_map(Node::next_deadline).min();
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
                if from.is_some_and(|f| self.cut.contains(&(f, to))) {
                    self.stats.dropped += 1;
                } else {
                    self.stats.delivered += 1;
                    self.deliver(to, Event::Message(msg));
                }
                return;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].next_deadline().is_some_and(|t| t <= self.now) {
                self.deliver(i, Event::Tick);
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn deliver(&mut self, node: usize, event: Event) {
        let mut out = std::mem::take(&mut self.effects);
        self.nodes[node].step(self.now, event, &mut out);
        self.nodes[node].check_invariants();
        for effect in out.drain(..) {
            let Effect::Send(msg) = effect else { continue };
            if self.index_of(&msg.dest).is_none() {
                self.client_inbox.push(msg);
            } else if self.rng.chance(self.net.loss_percent, 100) {
                self.stats.dropped += 1;
            } else {
                let latency = self
                    .rng
                    .between(self.net.min_latency_ms, self.net.max_latency_ms);
                let at = self.now.plus_millis(latency);
                self.in_flight.insert((at, self.next_seq), msg);
                self.next_seq += 1;
            }
        }
        self.effects = out;
    }
}
