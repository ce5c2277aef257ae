//! The broker replicated over Raft, on a cluster of more than one node.
//!
//! One Raft group holds the whole broker ([`super::Machine`]): its leader owns every
//! key, partition and queue. A broker request that reaches a follower is forwarded to
//! the leader through the RPC table and the reply relayed. The leader appends a
//! mutating request to the log and answers once a majority has it and it is applied;
//! reads are answered from the leader's applied state while its lease holds. Broker
//! timers run when the leader's time-only entries apply, so every replica sees them at
//! the same point of the log.
//!
//! What a client hears when things go wrong: 11 (definitely not done) when no leader is
//! known, the log is full, or a read cannot be served; 0 (unknown) when the request
//! was handed to a leader that lost its leadership or stopped answering, since the
//! entry may still commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::raft::{Raft, RaftChange, Refused};
use crate::broker::Broker;
use crate::runtime::{cx, Ctx, Machine, Node, Purpose, Reply};
use crate::wire::msg::{Access, Cancelled, ErrorBody, ErrorCode, Payload, RaftEntry, RaftSnapshot};
use crate::wire::{Body, Json, Message};
use crate::{Effect, Effects, Level, Time, WalRecord};

/// A node's replication state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Replication {
    pub(crate) raft: Raft,
    /// Raft runs (elections, heartbeats) once the broker API is used on the cluster, so
    /// the gossip workloads carry no Raft traffic.
    active: bool,
    /// Entries up to here are applied to the machine.
    applied: u64,
    /// The newest commit index written to the log ([`RaftChange::Commit`]).
    #[serde(default)]
    persisted_commit: u64,
    /// The term this node leads (it answers the entries of that term as they apply).
    leading: Option<u64>,
    /// Requests proposed while leading and not applied yet, by (client, msg_id): a
    /// retry that arrives meanwhile is not proposed twice.
    #[serde(with = "crate::runtime::pairs")]
    proposed: BTreeMap<(String, u64), u64>,
    /// A time-only entry proposed to run due broker timers, not applied yet.
    tick_proposed: Option<u64>,
}

/// Where a node stands in its cluster (for operators and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node's current Raft term.
    pub term: u64,
    /// The leader it knows of (itself included), if any.
    pub leader: Option<String>,
    /// Entries up to here are committed.
    pub commit_index: u64,
    /// Entries up to here are applied to this node's broker.
    pub applied_index: u64,
    /// The last entry in its log.
    pub last_index: u64,
    /// Entries up to here were compacted out of its log (its broker holds them).
    pub compacted_index: u64,
    /// `leader`, `follower`, `pre_candidate` or `candidate`.
    pub role: &'static str,
    /// Times the leader it knows of changed since the process started.
    pub leader_changes: u64,
}

/// The error a forwarded request's client gets when the leader did not take it or did
/// not answer: a read can simply be retried (11); a write may have happened (0).
pub(crate) fn forward_failed(read: bool, why: &str) -> ErrorBody {
    if read {
        ErrorBody::new(ErrorCode::TemporarilyUnavailable, why)
    } else {
        ErrorBody::new(
            ErrorCode::Timeout,
            format!("{why}; the request may or may not have taken effect"),
        )
    }
}

fn unavailable(text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::TemporarilyUnavailable, text)
}

impl Replication {
    /// Runs Raft's due timers (elections, heartbeats), once Raft is active.
    pub(crate) fn run_due(&mut self, cx: &mut Ctx<'_>) {
        if self.active && cx.now >= self.raft.next_deadline() {
            self.raft.run_due(cx);
        }
    }

    /// When the node needs a tick: Raft's timer, or a due broker timer the leader
    /// must propose a time-only entry for.
    pub(crate) fn next_deadline(&self, broker: &Broker) -> Option<Time> {
        if !self.active {
            return None;
        }
        let broker_due = broker
            .next_deadline()
            .filter(|_| self.leading.is_some() && self.tick_proposed.is_none());
        Some(match broker_due {
            Some(t) => t.min(self.raft.next_deadline()),
            None => self.raft.next_deadline(),
        })
    }

    /// After a restart (a snapshot may have been taken while leading): a follower that
    /// waits for a leader, with nothing proposed.
    pub(crate) fn restarted(&mut self, cx: &mut Ctx<'_>) {
        self.raft.restarted(cx);
        self.leading = None;
        self.proposed.clear();
        self.tick_proposed = None;
    }

    /// Starts elections and heartbeats, if not yet running.
    fn activate(&mut self, cx: &mut Ctx<'_>) {
        if !self.active {
            self.active = true;
            self.raft.activated(cx);
        }
    }

    pub(crate) fn check_invariants(&self) {
        self.raft.check_invariants();
        assert!(
            self.applied <= self.raft.commit_index(),
            "applied past commit"
        );
        if self.leading.is_none() {
            assert!(self.proposed.is_empty(), "proposals kept without leading");
        }
        for &index in self.proposed.values() {
            assert!(index > self.applied, "an applied proposal is still pending");
        }
    }
}

impl Node {
    /// The node's place in its cluster; `None` on a single node (or before the broker
    /// API was first used on a cluster).
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref().filter(|c| c.active)?;
        Some(ClusterStatus {
            term: c.raft.term(),
            leader: c.raft.leader_name().map(str::to_owned),
            commit_index: c.raft.commit_index(),
            applied_index: c.applied,
            last_index: c.raft.last_index(),
            compacted_index: c.raft.compacted_index(),
            role: c.raft.role_name(),
            leader_changes: c.raft.leader_changes(),
        })
    }

    /// Starts Raft elections and heartbeats now rather than at the first broker request
    /// (a server that is only a broker calls this after init). No-op on a single node.
    pub fn start_replication(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.activate(&mut cx!(self));
        }
    }

    /// Starts Raft for a cluster of `nodes` (more than one), this node being `me`.
    pub(crate) fn start_cluster(&mut self, me: &str, nodes: Vec<String>) {
        let index = nodes.iter().position(|n| n == me).expect("me is in nodes");
        let raft = Raft::new(&mut cx!(self), index, nodes);
        self.cluster = Some(Replication {
            raft,
            active: false,
            applied: 0,
            persisted_commit: 0,
            leading: None,
            proposed: BTreeMap::new(),
            tick_proposed: None,
        });
    }

    /// A broker request on a cluster: proposed (leader), answered from the applied
    /// state (a read on the leader), or forwarded (follower). `None`: answered later.
    pub(crate) fn cluster_request(
        &mut self,
        src: &str,
        msg_id: Option<u64>,
        payload: Payload,
        out: &mut Effects,
    ) -> Option<Reply> {
        let me = self.id().unwrap_or_default().to_owned();
        let c = self.cluster.as_mut().expect("clustered");
        c.activate(&mut cx!(self));
        let read = payload.access() == Some(Access::Read);
        if c.raft.is_leader() {
            if read {
                if !c.raft.can_read(&cx!(self)) {
                    return Some(Err(unavailable(
                        "the leader has not confirmed its lease yet; retry",
                    )));
                }
                let time = self.machine.time;
                return self.run_broker(time, src, msg_id, payload);
            }
            if payload == Payload::CancelWaits && c.raft.node_index(src).is_some() {
                return Some(Err(unavailable("cancel_waits is not forwarded")));
            }
            let key = msg_id.map(|id| (src.to_owned(), id));
            if key.as_ref().is_some_and(|k| c.proposed.contains_key(k)) {
                return None; // a retry of a proposal in flight: its reply will come
            }
            let msg = Message {
                src: src.to_owned(),
                dest: me,
                body: Body {
                    payload,
                    msg_id,
                    in_reply_to: None,
                },
            };
            return match c.raft.propose(&mut cx!(self), Some(msg)) {
                Ok(index) => {
                    if let Some(key) = key {
                        c.proposed.insert(key, index);
                    }
                    None
                }
                Err(Refused::Full) => Some(Err(unavailable(format!(
                    "{} entries await commitment (max_uncommitted_entries); retry",
                    c.raft.uncommitted()
                )))),
                Err(Refused::NotLeader) => unreachable!("checked above"),
            };
        }
        let leader = c.raft.leader_name().map(str::to_owned);
        if c.raft.node_index(src).is_some() {
            // Forwarded by a node that thinks this one leads: never forward twice.
            let text = format!("{me} is not the leader (leader: {leader:?})");
            return Some(Err(ErrorBody::new(ErrorCode::NotLeader, text)));
        }
        if payload == Payload::CancelWaits {
            // Long polls forwarded by this node are parked under this node's name.
            return Some(Ok(Payload::CancelWaitsOk(Cancelled { cancelled: 0 })));
        }
        let Some(leader) = leader else {
            return Some(Err(unavailable(
                "no leader is known (an election is under way); retry",
            )));
        };
        let purpose = Purpose::Forward {
            client: src.to_owned(),
            msg_id,
            read,
        };
        if self.call(leader, payload, purpose, out) {
            None
        } else {
            Some(Err(unavailable(
                "too many requests in flight to the leader",
            )))
        }
    }

    /// A Raft message from `src`. Raft messages get no direct reply.
    pub(crate) fn on_raft(
        &mut self,
        src: &str,
        payload: Payload,
        out: &mut Effects,
    ) -> Option<Reply> {
        let Some(c) = self.cluster.as_mut() else {
            let text = "raft messages need a cluster of more than one node";
            return Some(Err(ErrorBody::new(ErrorCode::NotSupported, text)));
        };
        let Some(from) = c.raft.node_index(src) else {
            self.log(Level::Warn, "raft_from_stranger", out, || {
                format!("src={src}")
            });
            return None;
        };
        let cx = &mut cx!(self);
        c.activate(cx);
        match payload {
            Payload::RaftVote(m) => c.raft.on_vote(cx, from, m),
            Payload::RaftVoteResult(m) => c.raft.on_vote_result(cx, from, m),
            Payload::RaftAppend(m) => c.raft.on_append(cx, from, m),
            Payload::RaftAppendResult(m) => c.raft.on_append_result(cx, from, m),
            Payload::RaftSnapshot(m) => {
                let index = m.index;
                let machine = match m.machine.read::<Machine>() {
                    Ok(machine) => machine,
                    Err(e) => {
                        self.log(Level::Warn, "raft_bad_snapshot", out, || {
                            format!("src={src} error={e:?}")
                        });
                        return None;
                    }
                };
                if c.raft.on_snapshot(cx, from, m) {
                    self.machine = machine;
                    c.applied = index;
                    c.tick_proposed = None;
                }
            }
            _ => unreachable!("only raft payloads come here"),
        }
        None
    }

    /// Replays a persisted Raft record (recovery). What was committed is applied (its
    /// effects go to `scratch`, to be dropped) and the log compacted, as when running.
    pub(crate) fn restore_raft(&mut self, at: Time, record: RaftChange, scratch: &mut Effects) {
        self.now = self.now.max(at);
        let Some(c) = self.cluster.as_mut() else {
            return; // written before init cannot happen; ignore
        };
        c.active = true;
        c.raft.restore(&record);
        match record {
            RaftChange::Snapshot { index, machine, .. } => {
                self.machine = machine.read().expect("a persisted snapshot reads");
                c.applied = index;
            }
            RaftChange::Commit { index } => {
                c.persisted_commit = c.persisted_commit.max(index);
                self.apply_committed(scratch);
                let c = self.cluster.as_mut().expect("clustered");
                c.raft.compact(c.applied, &self.config);
            }
            RaftChange::Term { .. } | RaftChange::Append { .. } => {}
        }
    }

    /// The end of every step on a cluster: propose a time-only entry if broker timers
    /// are due, persist Raft's records, apply what committed (answering clients), then
    /// send Raft's messages.
    pub(crate) fn drive_cluster(&mut self, out: &mut Effects) {
        if self.replaying {
            return;
        }
        let c = self.cluster.as_mut().expect("clustered");
        if c.raft.is_leader() && c.leading != Some(c.raft.term()) {
            c.leading = Some(c.raft.term());
            self.log(Level::Info, "raft_leader", out, String::new);
        }
        let c = self.cluster.as_mut().expect("clustered");
        let timers_due = self
            .machine
            .broker
            .next_deadline()
            .is_some_and(|t| t <= self.now);
        if c.leading.is_some() && c.tick_proposed.is_none() && timers_due {
            if let Ok(index) = c.raft.propose(&mut cx!(self), None) {
                c.tick_proposed = Some(index);
            }
        }
        let mut raft_out = c.raft.take_out();
        // The commit index rides along with other records: a step that persists
        // nothing else needs no sync before its sends for it (recovery takes it as a
        // lower bound, so a slightly stale one only means a little more to relearn).
        if !raft_out.records.is_empty() && c.raft.commit_index() > c.persisted_commit {
            c.persisted_commit = c.raft.commit_index();
            let index = c.persisted_commit;
            raft_out.records.push(RaftChange::Commit { index });
        }
        for record in raft_out.records {
            out.push(Effect::Persist(WalRecord {
                at: self.now,
                msg: None,
                raft: Some(record),
            }));
        }
        self.apply_committed(out);
        if let Some(term) = raft_out.lost_leadership {
            self.leadership_lost(term, out);
        }
        let c = self.cluster.as_mut().expect("clustered");
        let nodes = c.raft.nodes().to_vec();
        let me = self.id().unwrap_or_default().to_owned();
        for (peer, payload) in raft_out.messages {
            let msg = self.message(me.clone(), nodes[peer].clone(), payload, None);
            out.push(Effect::Send(msg));
        }
        for peer in raft_out.snapshot_to {
            let c = self.cluster.as_mut().expect("clustered");
            let index = c.applied;
            let snapshot = RaftSnapshot {
                term: c.raft.term(),
                index,
                snapshot_term: c.raft.term_at(index).expect("applied entries are known"),
                machine: Json::serialized(&self.machine),
                sent_at: self.now,
            };
            c.raft.snapshot_sent(peer, index);
            self.log(Level::Info, "raft_snapshot_sent", out, || {
                format!("to={} index={index}", nodes[peer])
            });
            let msg = self.message(
                me.clone(),
                nodes[peer].clone(),
                Payload::RaftSnapshot(snapshot),
                None,
            );
            out.push(Effect::Send(msg));
        }
        let c = self.cluster.as_mut().expect("clustered");
        c.raft.compact(c.applied, &self.config);
    }

    /// Applies committed entries to the machine; the leader answers its own.
    fn apply_committed(&mut self, out: &mut Effects) {
        loop {
            let c = self.cluster.as_mut().expect("clustered");
            if c.applied >= c.raft.commit_index() {
                return;
            }
            let index = c.applied + 1;
            let entry = c
                .raft
                .entry(index)
                .expect("committed entries are in the log")
                .clone();
            c.applied = index;
            if c.tick_proposed.is_some_and(|t| t <= index) {
                c.tick_proposed = None;
            }
            let mine = c.leading == Some(entry.term);
            self.apply(entry, mine, out);
        }
    }

    fn apply(&mut self, entry: RaftEntry, mine: bool, out: &mut Effects) {
        let at = self.machine.time.max(entry.at);
        self.machine.time = at;
        self.run_broker_timers(at, out);
        if let Some(msg) = entry.msg {
            let Message { src, dest, body } = Arc::unwrap_or_clone(msg);
            let c = self.cluster.as_mut().expect("clustered");
            if let (true, Some(id)) = (mine, body.msg_id) {
                c.proposed.remove(&(src.clone(), id));
            }
            // (Only here, at apply: a lookup reorders the LRU, identically everywhere.)
            if let Some(id) = body.msg_id.filter(|_| c.raft.node_index(&src).is_some()) {
                let key = (src.clone(), id);
                if self.machine.forwarded.get(&key).is_some() {
                    return self.after_apply(out); // a duplicate of a forwarded request
                }
                self.machine.forwarded.insert(key, ());
            }
            let reply = self.run_broker(at, &src, body.msg_id, body.payload);
            if let (true, Some(reply)) = (mine, reply) {
                self.answer(src, dest, body.msg_id, reply, out);
            }
        }
        self.after_apply(out);
    }

    /// Parked requests that an entry completed: the leader answers them.
    fn after_apply(&mut self, out: &mut Effects) {
        if self.cluster.as_ref().is_some_and(|c| c.leading.is_some()) {
            self.send_completions(out);
        } else {
            self.machine.broker.take_completions();
        }
    }

    /// This node led `term` and no longer does: its proposals not applied yet may or
    /// may not commit under the next leader, so their clients hear "unknown". They are
    /// taken from `proposed`, not the log: the append that told this node of its
    /// successor may already have overwritten them.
    fn leadership_lost(&mut self, term: u64, out: &mut Effects) {
        self.log(Level::Info, "raft_leadership_lost", out, || {
            format!("term={term}")
        });
        let c = self.cluster.as_mut().expect("clustered");
        let mut pending: Vec<(u64, (String, u64))> = std::mem::take(&mut c.proposed)
            .into_iter()
            .map(|(key, index)| (index, key))
            .collect();
        pending.sort_unstable();
        c.leading = None;
        c.tick_proposed = None;
        let me = self.id().unwrap_or_default().to_owned();
        for (_, (client, msg_id)) in pending {
            let err = ErrorBody::new(
                ErrorCode::Timeout,
                "leadership changed before the request committed; it may or may not take effect",
            );
            self.answer(client, me.clone(), Some(msg_id), Err(err), out);
        }
    }
}
