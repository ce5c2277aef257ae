//! [`Node`]: `init`, message ids, dispatch of each request by its kind's row in the
//! `payloads!` table, replies, the RPC table for requests to peers, the reply cache
//! for retried client requests, and periodic gossip for the Maelstrom workloads. On a
//! cluster, the replication glue (`replication/cluster.rs`) extends `Node` with the
//! Raft side of a step.

use crate::broker::{Broker, BrokerMetrics};
use crate::replication::{forward_failed, Replication};
use crate::runtime::{cx, Ctx, Lru, Periodic, ReplyCache, RpcTable, RpcTimeout};
use crate::wire::msg::{
    Access, ErrorBody, ErrorCode, GenerateOk, Gossip, Init, NodeStatus, Payload, ReadOk, Route,
};
use crate::wire::{Body, Invalid, Message};
use crate::workloads::{BroadcastSet, Counter};
use crate::ClusterStatus;
use crate::{Config, Effect, Effects, Event, Level, LogLine, Rng, Time, WalRecord};

/// What a pending request to a peer is for: the callback, as data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Purpose {
    /// A gossip batch to broadcast target `target`.
    Gossip { target: usize },
    /// Counter state of `version` to counter peer `peer`.
    Merge { peer: usize, version: u64 },
    /// A client's broker request, forwarded to the leader; its reply is relayed.
    Forward {
        client: String,
        msg_id: Option<u64>,
        /// A read: if it fails, the client may simply try again (11), whereas a write's
        /// outcome is unknown (0).
        read: bool,
    },
}

/// The replicated state machine: the broker and the replies to its write-once
/// requests (so a retried request gets its first reply on every replica alike).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Machine {
    pub(crate) broker: Broker,
    pub(crate) replies: ReplyCache,
    /// Forwarded requests applied lately, by (forwarding node, msg_id): a copy the
    /// network duplicated is dropped, not run again (its reply could overtake the
    /// first one's and, for a `fetch` or `dequeue`, hide what the first returned).
    pub(crate) forwarded: Lru<(String, u64), ()>,
    /// The latest time applied: entries' times never go back.
    pub(crate) time: Time,
}

/// Who this node is, once `init` has said so.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Identity {
    id: String,
    node_ids: Vec<String>,
}

/// What a node holds now, for an operator's metrics ([`Node::metrics`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMetrics {
    /// Its queues and consumer groups.
    pub broker: BrokerMetrics,
    /// Where it stands in its cluster; `None` on a single node.
    pub cluster: Option<ClusterStatus>,
}

/// A Herald node: a pure state machine. Feed it events with [`Node::step`], carry out
/// the effects it returns in order, and call `step(now, Event::Tick, ..)` when
/// [`Node::next_deadline`] is reached. It reads no clock and does no I/O.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Not part of a snapshot: given again when restoring.
    #[serde(skip)]
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) now: Time,
    identity: Option<Identity>,
    next_msg_id: u64,
    next_unique_id: u64,
    rpc: RpcTable<Purpose>,
    /// Replies to write-once requests the node runs itself (not the broker's).
    replies: ReplyCache,
    broadcast: BroadcastSet,
    counter: Counter,
    gossip: Periodic,
    pub(crate) machine: Machine,
    /// Raft replication of `machine`, on a cluster of more than one node.
    pub(crate) cluster: Option<Replication>,
    /// Set by recovery: the next step raises `next_msg_id` past every id the node may
    /// have used before it crashed (see [`Node::step`]).
    #[serde(skip)]
    restarted: bool,
    /// True while records are replayed: no elections, no proposals.
    #[serde(skip)]
    pub(crate) replaying: bool,
}

/// The reply a request gets: an `*_ok` payload or an error.
pub(crate) type Reply = Result<Payload, ErrorBody>;

impl Node {
    /// A node waiting for `init`.
    ///
    /// # Panics
    /// If `config` is invalid: drivers call [`Config::validate`] first and report the
    /// error to their operator.
    pub fn new(config: Config) -> Node {
        if let Err(e) = config.validate() {
            panic!("invalid configuration: {e}");
        }
        Node {
            rng: Rng::new(config.seed),
            now: Time::ZERO,
            identity: None,
            next_msg_id: 0,
            next_unique_id: 0,
            rpc: RpcTable::new(config.max_pending_rpcs),
            replies: ReplyCache::new(config.dedup_capacity),
            broadcast: BroadcastSet::default(),
            counter: Counter::default(),
            gossip: Periodic::new(config.gossip_interval_ms),
            machine: Machine {
                broker: Broker::new(&config),
                replies: ReplyCache::new(config.dedup_capacity),
                forwarded: Lru::new(config.dedup_capacity),
                time: Time::ZERO,
            },
            cluster: None,
            restarted: false,
            replaying: false,
            config,
        }
    }

    /// Rebuilds a node from its records (see [`WalRecord`]), in the order they were
    /// persisted. Effects of the replay (replies sent long ago) are dropped.
    pub fn recover(config: Config, records: impl IntoIterator<Item = WalRecord>) -> Node {
        let mut node = Node::new(config);
        node.replay(records);
        node.restarted = true;
        node
    }

    /// The node's whole state (JSON). With the records persisted after it, it rebuilds
    /// the node ([`Node::restore`]), so older records can be deleted.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("node state always serializes")
    }

    /// Rebuilds a node from a [`Node::snapshot`] and the records persisted after it.
    /// Limits stored in the snapshot (table capacities) are the ones it was taken with.
    pub fn restore(
        config: Config,
        snapshot: &[u8],
        records: impl IntoIterator<Item = WalRecord>,
    ) -> Result<Node, String> {
        config.validate().map_err(|e| e.to_string())?;
        let mut node: Node =
            serde_json::from_slice(snapshot).map_err(|e| format!("unreadable snapshot: {e}"))?;
        node.config = config;
        node.replay(records);
        node.restarted = true;
        Ok(node)
    }

    /// Rebuilds a node as a restart does: from its newest snapshot, if it has one
    /// ([`Node::restore`]), else from nothing ([`Node::recover`]), and the records
    /// persisted after it.
    pub fn rebuild(
        config: Config,
        snapshot: Option<&[u8]>,
        records: impl IntoIterator<Item = WalRecord>,
    ) -> Result<Node, String> {
        match snapshot {
            Some(bytes) => Node::restore(config, bytes, records),
            None => Ok(Node::recover(config, records)),
        }
    }

    fn replay(&mut self, records: impl IntoIterator<Item = WalRecord>) {
        let mut scratch = Effects::new();
        self.replaying = true;
        for record in records {
            if let Some(raft) = record.raft {
                self.restore_raft(record.at, raft, &mut scratch);
                scratch.clear();
                continue;
            }
            let event = record.msg.map_or(Event::Tick, Event::Message);
            self.step(record.at, event, &mut scratch);
            scratch.clear();
        }
        self.replaying = false;
    }

    /// The latest time the node has seen.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The broker's state, to compare two nodes (`Debug`) or inspect it (`Serialize`).
    #[cfg(feature = "sim")]
    pub fn broker(&self) -> &(impl std::fmt::Debug + serde::Serialize) {
        &self.machine.broker
    }

    /// What the node holds now, for an operator's metrics: its queues, its consumer
    /// groups' lag, and where it stands in its cluster. Nothing is stepped.
    pub fn metrics(&self) -> NodeMetrics {
        NodeMetrics {
            broker: self.machine.broker.metrics(self.now),
            cluster: self.cluster_status(),
        }
    }

    /// This node's id, once initialised.
    pub fn id(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.id.as_str())
    }

    /// Requests to peers still awaiting a reply (or a retry).
    pub fn pending_rpcs(&self) -> usize {
        self.rpc.len()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles one event at time `now` (earlier times are treated as the latest time
    /// seen), appending effects to `out`. What is due runs first.
    pub fn step(&mut self, now: Time, event: Event, out: &mut Effects) {
        self.now = self.now.max(now);
        if std::mem::take(&mut self.restarted) {
            // Messages sent after the last record (gossip, replies) are not replayed,
            // so the counter is behind ids already used, and a late reply to one of
            // them would match a new request. Ids jump to the clock in µs instead:
            // past every id used so far unless the node averaged over one message
            // per µs since its start.
            self.next_msg_id = self.next_msg_id.max(self.now.as_micros().saturating_add(1));
            if let Some(c) = &mut self.cluster {
                c.restarted(&mut cx!(self));
            }
        }
        // Read before the event: the `init` that starts a cluster ends like a single
        // node's step.
        let clustered = self.cluster.is_some();
        self.persist_input(&event, clustered, out);
        self.run_due(out);
        match event {
            Event::Message(msg) => self.on_message(msg, out),
            Event::Invalid(bad) => self.on_invalid(bad, out),
            Event::Tick => {}
        }
        if clustered {
            self.drive_cluster(out);
        } else {
            self.send_completions(out);
        }
    }

    /// Records the step's input first, if replaying it would change state: a request
    /// that writes, or broker timers due in it (on a cluster, the Raft log holds both).
    fn persist_input(&mut self, event: &Event, clustered: bool, out: &mut Effects) {
        let timers_due = !clustered
            && self
                .machine
                .broker
                .next_deadline()
                .is_some_and(|t| t <= self.now);
        if matches!(event, Event::Message(msg) if persists(msg, clustered)) {
            out.push(Effect::PersistInput { at: self.now });
        } else if timers_due {
            out.push(Effect::Persist(WalRecord {
                at: self.now,
                msg: None,
                raft: None,
            }));
        }
    }

    /// Answers parked requests whose replies became due.
    pub(crate) fn send_completions(&mut self, out: &mut Effects) {
        for done in self.machine.broker.take_completions() {
            let src = self.id().unwrap_or_default().to_owned();
            let msg = self.message(src, done.client, done.reply, Some(done.msg_id));
            out.push(Effect::Send(msg));
        }
    }

    /// When the node next needs a `Tick`, if ever.
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.rpc.next_deadline(),
            self.gossip.next_deadline(),
            match &self.cluster {
                Some(c) => c.next_deadline(&self.machine.broker),
                None => self.machine.broker.next_deadline(),
            },
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Panics if any internal invariant is broken (for tests, fuzzing, the simulator).
    pub fn check_invariants(&self) {
        self.rpc.check_invariants();
        self.replies.check_invariants();
        self.broadcast
            .check_invariants(self.config.max_broadcast_values);
        self.machine.broker.check_invariants();
        self.machine.replies.check_invariants();
        self.machine.forwarded.check_invariants();
        if let Some(c) = &self.cluster {
            c.check_invariants();
        }
        let mut gossips = Vec::new();
        let mut merges = Vec::new();
        for purpose in self.rpc.purposes() {
            match *purpose {
                Purpose::Gossip { target } => gossips.push(target),
                Purpose::Merge { peer, .. } => merges.push(peer),
                Purpose::Forward { .. } => {}
            }
        }
        gossips.sort_unstable();
        merges.sort_unstable();
        let in_flight: Vec<usize> = self.broadcast.in_flight().collect();
        assert_eq!(
            gossips, in_flight,
            "gossip batches in flight must match pending RPCs"
        );
        let in_flight: Vec<usize> = self.counter.in_flight().collect();
        assert_eq!(
            merges, in_flight,
            "merges in flight must match pending RPCs"
        );
        if self.identity.is_none() {
            assert!(self.rpc.is_empty(), "no peer requests before init");
        }
    }

    /// Runs everything due now: RPC retries and give-ups, a gossip round, and Raft's
    /// timers (on a cluster) or the broker's (on a single node).
    fn run_due(&mut self, out: &mut Effects) {
        while let Some(timeout) = self.rpc.pop_due(&mut cx!(self)) {
            match timeout {
                RpcTimeout::Resend(msg) => {
                    self.log(Level::Debug, "rpc_retry", out, || {
                        format!("to={} msg_id={:?}", msg.dest, msg.body.msg_id)
                    });
                    out.push(Effect::Send(msg));
                }
                RpcTimeout::GaveUp { request, purpose } => {
                    self.log(Level::Info, "rpc_gave_up", out, || {
                        format!("to={} type={}", request.dest, request.body.payload.kind())
                    });
                    self.rpc_failed(purpose, out);
                }
            }
        }
        if self.gossip.pop_due(self.now) {
            self.gossip_round(out);
        }
        match &mut self.cluster {
            Some(_) if self.replaying => {}
            Some(c) => c.run_due(&mut cx!(self)),
            None => self.run_broker_timers(self.now, out),
        }
    }

    /// Runs the broker's due timers (visibility timeouts, sessions, long polls, ...).
    pub(crate) fn run_broker_timers(&mut self, now: Time, out: &mut Effects) {
        for (group, consumer) in self.machine.broker.run_due(now) {
            self.log(Level::Info, "group_session_expired", out, || {
                format!("group={group} consumer={consumer}")
            });
        }
    }

    fn gossip_round(&mut self, out: &mut Effects) {
        for target in 0..self.broadcast.target_count() {
            let Some((to, values)) = self
                .broadcast
                .next_batch(target, self.config.gossip_batch_max)
            else {
                continue;
            };
            let purpose = Purpose::Gossip { target };
            if !self.call(to, Payload::Gossip(Gossip { values }), purpose, out) {
                self.broadcast.failed(target);
            }
        }
        for peer in 0..self.counter.peer_count() {
            let Some((to, state, version)) = self.counter.next_sync(peer) else {
                continue;
            };
            if !self.call(
                to,
                Payload::Merge(state),
                Purpose::Merge { peer, version },
                out,
            ) {
                self.counter.synced(peer, None);
            }
        }
    }

    /// Sends a request to a peer and tracks it in the RPC table; false if the table is
    /// full (nothing was sent).
    pub(crate) fn call(
        &mut self,
        to: String,
        payload: Payload,
        purpose: Purpose,
        out: &mut Effects,
    ) -> bool {
        let src = self.id().unwrap_or_default().to_owned();
        let msg = self.message(src, to, payload, None);
        // A forwarded request is sent once: its client retries (or not) on its own,
        // and a resend could apply it long after that client gave up.
        let attempts = match purpose {
            Purpose::Forward { .. } => 1,
            _ => self.config.rpc_max_attempts,
        };
        // A request the leader may park waits that long more for its reply.
        let timeout_ms = self.config.rpc_timeout_ms + max_park_ms(&msg.body.payload);
        match self
            .rpc
            .start(&cx!(self), msg.clone(), purpose, attempts, timeout_ms)
        {
            Ok(()) => {
                out.push(Effect::Send(msg));
                true
            }
            Err(_) => {
                self.log(Level::Warn, "rpc_table_full", out, || {
                    format!("limit={}", self.config.max_pending_rpcs)
                });
                false
            }
        }
    }

    fn rpc_failed(&mut self, purpose: Purpose, out: &mut Effects) {
        match purpose {
            Purpose::Gossip { target } => self.broadcast.failed(target),
            Purpose::Merge { peer, .. } => self.counter.synced(peer, None),
            Purpose::Forward {
                client,
                msg_id,
                read,
            } => {
                let err = forward_failed(read, "the leader did not answer in time");
                self.answer(client, String::new(), msg_id, Err(err), out);
            }
        }
    }

    fn on_message(&mut self, msg: Message, out: &mut Effects) {
        let Message { src, dest, body } = msg;
        match body.in_reply_to {
            Some(request_id) => self.on_reply(&src, request_id, body.payload, out),
            None => {
                // `None`: parked (a long poll); the broker completes it later.
                if let Some(reply) = self.on_request(&src, body.msg_id, body.payload, out) {
                    self.answer(src, dest, body.msg_id, reply, out);
                }
            }
        }
    }

    fn on_invalid(&mut self, bad: Invalid, out: &mut Effects) {
        self.log(Level::Warn, "invalid_request", out, || {
            format!(
                "src={} code={} reason={:?}",
                bad.src,
                bad.code.code(),
                bad.reason
            )
        });
        let reply = Err(ErrorBody::new(bad.code, bad.reason));
        self.answer(bad.src, bad.dest, bad.msg_id, reply, out);
    }

    /// Sends `reply` to a request's sender `to` (the request's names are reused for
    /// the reply's, not copied); a request without `msg_id` cannot be answered, so an
    /// error for it is only logged.
    pub(crate) fn answer(
        &mut self,
        to: String,
        dest: String,
        msg_id: Option<u64>,
        reply: Reply,
        out: &mut Effects,
    ) {
        let Some(msg_id) = msg_id else {
            if let Err(err) = reply {
                self.log(Level::Warn, "unanswerable_error", out, || {
                    format!("src={to} code={} text={:?}", err.code, err.text)
                });
            }
            return;
        };
        let payload = reply.unwrap_or_else(Payload::Error);
        // Before init the node has no id of its own: answer as whom it was addressed to.
        let src = match self.id() {
            Some(id) if id != dest => id.to_owned(),
            _ => dest,
        };
        let msg = self.message(src, to, payload, Some(msg_id));
        out.push(Effect::Send(msg));
    }

    /// A message from this node, with the next of its own `msg_id`s (0 first).
    pub(crate) fn message(
        &mut self,
        src: String,
        dest: String,
        payload: Payload,
        in_reply_to: Option<u64>,
    ) -> Message {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        Message {
            src,
            dest,
            body: Body {
                payload,
                msg_id: Some(msg_id),
                in_reply_to,
            },
        }
    }

    /// Runs a request by its kind's route; `None` means it was parked (a long poll, or
    /// a cluster request answered once it commits).
    fn on_request(
        &mut self,
        src: &str,
        msg_id: Option<u64>,
        payload: Payload,
        out: &mut Effects,
    ) -> Option<Reply> {
        if let Payload::Init(init) = payload {
            return Some(self.init(init));
        }
        let route = payload.route();
        if route == Route::Raft {
            return self.on_raft(src, payload, out);
        }
        if self.identity.is_none() {
            return Some(Err(ErrorBody::new(
                ErrorCode::TemporarilyUnavailable,
                format!("not initialised: got {:?} before init", payload.kind()),
            )));
        }
        match route {
            Route::Broker if self.cluster.is_some() => {
                self.cluster_request(src, msg_id, payload, out)
            }
            Route::Broker => self.run_broker(self.now, src, msg_id, payload),
            Route::Node => Some(self.run_node(src, msg_id, payload, out)),
            Route::Reply | Route::Raft => Some(Err(ErrorBody::new(
                ErrorCode::NotSupported,
                format!(
                    "{:?} is a reply, not a request (no in_reply_to)",
                    payload.kind()
                ),
            ))),
        }
    }

    /// Runs a node request; a retried write-once request gets its first reply.
    fn run_node(
        &mut self,
        src: &str,
        msg_id: Option<u64>,
        payload: Payload,
        out: &mut Effects,
    ) -> Reply {
        let key = ReplyCache::key(msg_id, &payload);
        if let Some(cached) = key.and_then(|id| self.replies.get(src, id)) {
            self.log(Level::Debug, "duplicate_request", out, || {
                format!("src={src} msg_id={msg_id:?}")
            });
            return Ok(cached);
        }
        let reply = self.handle(src, payload);
        if let (Some(id), Ok(ok)) = (key, &reply) {
            self.replies.insert(src, id, ok.clone());
        }
        reply
    }

    /// Runs a broker request on the state machine at time `now`; a retried write-once
    /// request gets its first reply. `None`: parked.
    pub(crate) fn run_broker(
        &mut self,
        now: Time,
        src: &str,
        msg_id: Option<u64>,
        payload: Payload,
    ) -> Option<Reply> {
        let key = ReplyCache::key(msg_id, &payload);
        if let Some(cached) = key.and_then(|id| self.machine.replies.get(src, id)) {
            return Some(Ok(cached));
        }
        let cx = Ctx {
            now,
            config: &self.config,
            rng: &mut self.rng,
        };
        let reply = self
            .machine
            .broker
            .handle(&cx, src, msg_id, payload)
            .transpose()?;
        if let (Some(id), Ok(ok)) = (key, &reply) {
            self.machine.replies.insert(src, id, ok.clone());
        }
        Some(reply)
    }

    fn init(&mut self, init: Init) -> Reply {
        if let Some(me) = &self.identity {
            if me.id == init.node_id && me.node_ids == init.node_ids {
                return Ok(Payload::InitOk); // a retried init
            }
            return Err(ErrorBody::new(
                ErrorCode::PreconditionFailed,
                format!("already initialised as {:?}", me.id),
            ));
        }
        if !init.node_ids.contains(&init.node_id) {
            return Err(ErrorBody::new(
                ErrorCode::MalformedRequest,
                format!("node_id {:?} is not in node_ids", init.node_id),
            ));
        }
        let peers: Vec<String> = init
            .node_ids
            .iter()
            .filter(|n| **n != init.node_id)
            .cloned()
            .collect();
        self.broadcast.set_peers(peers.clone());
        self.counter.set_peers(peers);
        self.gossip.start(self.now);
        if init.node_ids.len() > 1 {
            self.start_cluster(&init.node_id, init.node_ids.clone());
        }
        self.identity = Some(Identity {
            id: init.node_id,
            node_ids: init.node_ids,
        });
        Ok(Payload::InitOk)
    }

    /// Runs an initialised node's request (one of [`Route::Node`], `init` aside).
    fn handle(&mut self, src: &str, payload: Payload) -> Reply {
        let me = self.identity.as_ref().expect("handle runs after init");
        let set_full = || {
            ErrorBody::new(
                ErrorCode::TemporarilyUnavailable,
                format!(
                    "broadcast set is full (max_broadcast_values={})",
                    self.config.max_broadcast_values
                ),
            )
        };
        let limit = self.config.max_broadcast_values;
        match payload {
            Payload::Echo(echo) => Ok(Payload::EchoOk(echo)),
            Payload::Auth(_) => Err(ErrorBody::new(
                ErrorCode::NotSupported,
                "auth is answered by herald serve when it has users; this node has none",
            )),
            Payload::Status => Ok(Payload::StatusOk(self.status())),
            Payload::Generate => {
                let id = format!("{}-{}", me.id, self.next_unique_id);
                self.next_unique_id += 1;
                Ok(Payload::GenerateOk(GenerateOk { id }))
            }
            Payload::Topology(topology) => {
                if let Some(neighbours) = topology.topology.get(&me.id) {
                    self.broadcast.restrict_to(neighbours);
                }
                self.broadcast.activate();
                Ok(Payload::TopologyOk)
            }
            Payload::Broadcast(b) => {
                self.broadcast
                    .insert(&[b.message], None, limit)
                    .map_err(|_| set_full())?;
                Ok(Payload::BroadcastOk)
            }
            Payload::Gossip(g) => {
                self.broadcast
                    .insert(&g.values, Some(src), limit)
                    .map_err(|_| set_full())?;
                Ok(Payload::GossipOk)
            }
            Payload::Read => Ok(Payload::ReadOk(self.read())),
            Payload::Add(add) => {
                self.counter
                    .add(&me.id, add.delta)
                    .map_err(|_| ErrorBody::new(ErrorCode::Abort, "the counter would overflow"))?;
                Ok(Payload::AddOk)
            }
            Payload::Merge(state) => {
                self.counter.merge(&state, &me.node_ids);
                Ok(Payload::MergeOk)
            }
            other => unreachable!("{:?} is not routed to the node", other.kind()),
        }
    }

    /// `read`: the broadcast set once `topology` started that workload, else the counter.
    fn read(&self) -> ReadOk {
        if self.broadcast.is_active() {
            ReadOk {
                messages: Some(self.broadcast.values()),
                value: None,
            }
        } else {
            ReadOk {
                messages: None,
                value: Some(self.counter.value()),
            }
        }
    }

    /// `status`: this node, the leader it knows of (itself on a single node), and its
    /// Raft indexes (zero on a single node).
    fn status(&self) -> NodeStatus {
        let me = self.id().unwrap_or_default().to_owned();
        let status = self.cluster_status();
        let single = self.cluster.is_none();
        NodeStatus {
            leader: status
                .as_ref()
                .and_then(|s| s.leader.clone())
                .or(single.then(|| me.clone())),
            node: me,
            term: status.as_ref().map_or(0, |s| s.term),
            commit_index: status.as_ref().map_or(0, |s| s.commit_index),
            applied_index: status.as_ref().map_or(0, |s| s.applied_index),
        }
    }

    fn on_reply(&mut self, src: &str, request_id: u64, payload: Payload, out: &mut Effects) {
        // A forwarded request is not retried on 11: the leader meant it.
        let forwarded = matches!(self.rpc.purpose(request_id), Some(Purpose::Forward { .. }));
        let transient = !forwarded
            && matches!(&payload, Payload::Error(e) if e.is(ErrorCode::TemporarilyUnavailable));
        let Some((request, purpose)) = self.rpc.on_reply(&mut cx!(self), request_id, transient)
        else {
            self.log(Level::Debug, "reply_ignored", out, || {
                format!("src={src} in_reply_to={request_id} type={}", payload.kind())
            });
            return;
        };
        match (purpose, payload, request.body.payload) {
            (Purpose::Gossip { target }, Payload::GossipOk, Payload::Gossip(sent)) => {
                self.broadcast.delivered(target, &sent.values);
            }
            (Purpose::Merge { peer, version }, Payload::MergeOk, _) => {
                self.counter.synced(peer, Some(version));
            }
            (
                Purpose::Forward {
                    client,
                    msg_id,
                    read,
                },
                reply,
                _,
            ) => {
                let reply = match reply {
                    Payload::Error(e) if e.is(ErrorCode::NotLeader) => {
                        Err(forward_failed(read, &e.text))
                    }
                    Payload::Error(e) => Err(e),
                    ok => Ok(ok),
                };
                self.answer(client, String::new(), msg_id, reply, out);
            }
            (purpose, reply, _) => {
                self.log(Level::Info, "rpc_failed", out, || {
                    format!("src={src} reply={reply:?}")
                });
                self.rpc_failed(purpose, out);
            }
        }
    }

    pub(crate) fn log(
        &self,
        level: Level,
        event: &'static str,
        out: &mut Effects,
        detail: impl FnOnce() -> String,
    ) {
        if level >= self.config.log_level {
            out.push(Effect::Log(LogLine {
                level,
                event,
                detail: detail(),
            }));
        }
    }
}

/// True if a message is persisted as it is: a request whose kind writes, unless the
/// Raft log of a cluster (`clustered`) holds it, as it holds every broker request.
/// Replies, reads and Raft messages (which persist their own changes) are not.
fn persists(msg: &Message, clustered: bool) -> bool {
    let payload = &msg.body.payload;
    msg.body.in_reply_to.is_none()
        && matches!(payload.access(), Some(Access::Write | Access::WriteOnce))
        && !(clustered && payload.route() == Route::Broker)
}

/// How long the broker may hold `payload` parked before it answers: a long-polling
/// `dequeue` its wait, a Kafka join its rebalance timeout, a Kafka sync (waiting for
/// the leader's) Kafka's default rebalance timeout, five minutes.
fn max_park_ms(payload: &Payload) -> u64 {
    match payload {
        Payload::Dequeue(d) => d.wait_ms.unwrap_or(0),
        Payload::KafkaJoinGroup(j) => j.rebalance_timeout_ms,
        Payload::KafkaSyncGroup(_) => 300_000,
        _ => 0,
    }
}
