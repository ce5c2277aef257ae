//! Raft log replication, sans-IO: leader election with pre-vote, log replication with
//! pipelining and conflict backoff, commitment by majority, a leader lease for reads,
//! check-quorum, and log compaction with snapshot installs for followers that fell
//! behind. (Ongaro's dissertation: §3 for the core, §4.2.3 for the lease and for
//! disregarding votes while a leader is alive, §9.6 for pre-vote.)
//!
//! [`Raft`] knows nothing of what entries mean. The node feeds it messages and ticks,
//! proposes entries, carries out its [`RaftOut`] (persist first, then send), and applies
//! entries up to [`Raft::commit_index`] to its state machine. Persistent state changes
//! come out as [`RaftChange`]s; replaying them with [`Raft::restore`] rebuilds term, vote
//! and log after a crash.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::runtime::Ctx;
use crate::wire::msg::{
    Payload, RaftAppend, RaftAppendResult, RaftEntry, RaftSnapshot, RaftVote, RaftVoteResult,
};
use crate::wire::Json;
use crate::{Config, Message, Time};

/// A change to the durable Raft state, to persist before any later message is sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RaftChange {
    /// The current term and the vote cast in it.
    Term {
        /// The term.
        term: u64,
        /// Index (in the node list) of the node voted for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vote: Option<usize>,
    },
    /// Entries from `index` on replace whatever the log held there.
    Append {
        /// Index of the first entry.
        index: u64,
        /// The entries.
        entries: Vec<RaftEntry>,
    },
    /// The state machine, as of `index` (of `term`), replaces the log up to there.
    Snapshot {
        /// Last index the snapshot covers.
        index: u64,
        /// Its term.
        term: u64,
        /// The state machine (the node knows what it is).
        machine: Json,
    },
    /// Entries up to `index` are committed. Written with a later step's records, so
    /// it is a lower bound: recovery applies up to it and compacts the log as the
    /// running node did.
    Commit {
        /// The commit index.
        index: u64,
    },
}

/// By hand rather than serde's `tag`, which buffers the value and so cannot hand the
/// messages in log entries their text as it is; fields may come in any order.
impl<'de> Deserialize<'de> for RaftChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RaftChange, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RaftChange;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Raft change: {kind: term | append | snapshot, ...}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RaftChange, A::Error> {
                use serde::de::Error;
                let (mut kind, mut term, mut vote) = (None::<String>, None, None);
                let (mut index, mut entries, mut machine) = (None, None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "kind" => kind = Some(map.next_value()?),
                        "term" => term = Some(map.next_value()?),
                        "vote" => vote = map.next_value()?,
                        "index" => index = Some(map.next_value()?),
                        "entries" => entries = Some(map.next_value()?),
                        "machine" => machine = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let need = |name| A::Error::missing_field(name);
                match kind.as_deref() {
                    Some("term") => Ok(RaftChange::Term {
                        term: term.ok_or_else(|| need("term"))?,
                        vote,
                    }),
                    Some("append") => Ok(RaftChange::Append {
                        index: index.ok_or_else(|| need("index"))?,
                        entries: entries.ok_or_else(|| need("entries"))?,
                    }),
                    Some("snapshot") => Ok(RaftChange::Snapshot {
                        index: index.ok_or_else(|| need("index"))?,
                        term: term.ok_or_else(|| need("term"))?,
                        machine: machine.ok_or_else(|| need("machine"))?,
                    }),
                    Some("commit") => Ok(RaftChange::Commit {
                        index: index.ok_or_else(|| need("index"))?,
                    }),
                    Some(other) => Err(A::Error::unknown_variant(
                        other,
                        &["term", "append", "snapshot", "commit"],
                    )),
                    None => Err(need("kind")),
                }
            }
        }
        d.deserialize_map(Fields)
    }
}

/// What [`Raft`] asks the node to do, in order: persist `records`, then send `messages`,
/// then send a snapshot of the state machine to each of `snapshot_to`.
#[derive(Debug, Default)]
pub(crate) struct RaftOut {
    /// Persist these first.
    pub records: Vec<RaftChange>,
    /// Then send these: (peer index, a `raft_*` payload).
    pub messages: Vec<(usize, Payload)>,
    /// Peers too far behind for the log: send them the state machine
    /// ([`Raft::snapshot_sent`] says where they will be).
    pub snapshot_to: Vec<usize>,
    /// The term in which this node was leader and no longer is: proposals of that term
    /// not applied yet have an unknown outcome.
    pub lost_leadership: Option<u64>,
}

impl RaftOut {
    /// True if there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.messages.is_empty()
            && self.snapshot_to.is_empty()
            && self.lost_leadership.is_none()
    }
}

/// Why a proposal was refused (it was not appended anywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This node is not the leader.
    NotLeader,
    /// Too many entries are not committed yet (`max_uncommitted_entries`).
    Full,
}

/// The log: entries after a compacted prefix that ends at `base_index`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Log {
    base_index: u64,
    base_term: u64,
    entries: VecDeque<RaftEntry>,
}

impl Log {
    fn last_index(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.entries.back().map_or(self.base_term, |e| e.term)
    }

    fn get(&self, index: u64) -> Option<&RaftEntry> {
        let offset = index.checked_sub(self.base_index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The term of the entry at `index`, if the log still knows it.
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base_index {
            Some(self.base_term)
        } else {
            self.get(index).map(|e| e.term)
        }
    }

    /// Replaces everything from `index` on with `entries`.
    fn splice(&mut self, index: u64, entries: Vec<RaftEntry>) {
        assert!(
            index > self.base_index,
            "cannot rewrite the compacted prefix"
        );
        let keep = index - self.base_index - 1;
        self.entries.truncate(keep as usize);
        self.entries.extend(entries);
    }

    /// Forgets entries up to `index` (which the log holds).
    fn compact_to(&mut self, index: u64) {
        let term = self.term_at(index).expect("compact to a known index");
        let drop = (index - self.base_index) as usize;
        self.entries.drain(..drop);
        self.base_index = index;
        self.base_term = term;
    }
}

/// The leader's view of one follower.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// Next index to send.
    next: u64,
    /// Highest index known to match the leader's log.
    matched: u64,
    /// The match point is unknown: send one append at a time until one succeeds.
    probing: bool,
    /// A probe or snapshot is in flight: wait for its answer or the next heartbeat.
    paused: bool,
    /// Send time of the newest append (of this term) the follower answered.
    acked_at: Option<Time>,
    /// Appends with entries sent and not answered yet (reset by each heartbeat).
    in_flight: u32,
}

/// Appends with entries in flight to one follower: entries proposed while the window is
/// full go out together in one append when an answer arrives (batching under load).
const MAX_IN_FLIGHT: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// One node's Raft state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Raft {
    me: usize,
    nodes: Vec<String>,
    term: u64,
    vote: Option<usize>,
    log: Log,
    commit: u64,
    role: Role,
    leader: Option<usize>,
    /// Votes (or pre-votes) received in the current election.
    votes: BTreeSet<usize>,
    /// When this node last heard from a leader of its term (followers).
    leader_seen_at: Option<Time>,
    /// When a follower or candidate starts the next election.
    election_at: Time,
    /// When a leader sends the next heartbeat.
    heartbeat_at: Time,
    /// When this node became leader (check-quorum grace).
    leader_since: Time,
    /// First index of the leader's term (its no-op entry).
    term_start: u64,
    /// Per node (the leader's own slot unused).
    progress: Vec<Progress>,
    /// What the node must do after this step; taken by [`Raft::take_out`].
    #[serde(skip)]
    out: RaftOut,
    /// Times the leader this node knows of changed, since the process started.
    #[serde(skip)]
    leader_changes: u64,
}

impl Raft {
    /// A follower of term 0 with an empty log; `nodes` is every node, `me` among them.
    pub(crate) fn new(cx: &mut Ctx<'_>, me: usize, nodes: Vec<String>) -> Raft {
        assert!(me < nodes.len(), "me is one of the nodes");
        let mut raft = Raft {
            me,
            progress: vec![Progress::default(); nodes.len()],
            nodes,
            term: 0,
            vote: None,
            log: Log::default(),
            commit: 0,
            role: Role::Follower,
            leader: None,
            votes: BTreeSet::new(),
            leader_seen_at: None,
            election_at: cx.now,
            heartbeat_at: cx.now,
            leader_since: cx.now,
            term_start: 0,
            out: RaftOut::default(),
            leader_changes: 0,
        };
        raft.reset_election_timer(cx);
        raft
    }

    /// What to do now (persist, then send, then send snapshots), leaving nothing behind.
    pub(crate) fn take_out(&mut self) -> RaftOut {
        std::mem::take(&mut self.out)
    }

    /// The node names, in index order.
    pub(crate) fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The current term.
    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    /// True if this node leads the current term.
    pub(crate) fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The name of the leader this node knows of.
    /// Times the leader this node knows of changed (to another node, or to none),
    /// since the process started.
    pub(crate) fn leader_changes(&self) -> u64 {
        self.leader_changes
    }

    /// The node's role: `leader`, `follower`, `pre_candidate` or `candidate`.
    pub(crate) fn role_name(&self) -> &'static str {
        match self.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::PreCandidate => "pre_candidate",
            Role::Candidate => "candidate",
        }
    }

    pub(crate) fn leader_name(&self) -> Option<&str> {
        self.leader.map(|i| self.nodes[i].as_str())
    }

    /// The index of the node named `name`, if it is one of the cluster's.
    pub(crate) fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name)
    }

    /// Entries up to here are committed: apply them.
    pub(crate) fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The last index in the log.
    pub(crate) fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The last index compacted out of the log.
    pub(crate) fn compacted_index(&self) -> u64 {
        self.log.base_index
    }

    /// The entry at `index`, if the log holds it (not compacted away).
    pub(crate) fn entry(&self, index: u64) -> Option<&RaftEntry> {
        self.log.get(index)
    }

    /// The term of the entry at `index`, if known.
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }

    /// Entries not yet committed (a limit on proposals).
    pub(crate) fn uncommitted(&self) -> u64 {
        self.log.last_index() - self.commit
    }

    /// True if the leader may answer reads from its applied state: an entry of its term
    /// is committed (so it has every earlier commit) and a majority answered appends sent
    /// within the last election timeout, so no other leader can have been elected since
    /// (followers disregard votes that soon after hearing from a leader).
    pub(crate) fn can_read(&self, cx: &Ctx<'_>) -> bool {
        let since = cx.now.minus_millis(cx.config.election_timeout_ms);
        self.is_leader() && self.commit >= self.term_start && self.quorum_since(since, false)
    }

    /// When the node next needs a tick.
    pub(crate) fn next_deadline(&self) -> Time {
        match self.role {
            Role::Leader => self.heartbeat_at,
            _ => self.election_at,
        }
    }

    /// Appends an entry to a leader's log and starts replicating it.
    pub(crate) fn propose(
        &mut self,
        cx: &mut Ctx<'_>,
        msg: Option<Message>,
    ) -> Result<u64, Refused> {
        if !self.is_leader() {
            return Err(Refused::NotLeader);
        }
        if self.uncommitted() >= cx.config.max_uncommitted_entries as u64 {
            return Err(Refused::Full);
        }
        let index = self.append_own(cx, msg);
        for peer in self.peers() {
            let p = &self.progress[peer];
            if !p.probing && !p.paused && p.next == index && p.in_flight < MAX_IN_FLIGHT {
                self.send_append(cx, peer);
            }
        }
        Ok(index)
    }

    /// Time passed: start an election, or (a leader) send heartbeats and check that a
    /// majority still answers.
    pub(crate) fn run_due(&mut self, cx: &mut Ctx<'_>) {
        match self.role {
            Role::Leader if cx.now >= self.heartbeat_at => {
                let grace =
                    self.leader_since.as_micros() + 2 * cx.config.election_timeout_ms * 1_000;
                let since = cx.now.minus_millis(2 * cx.config.election_timeout_ms);
                if cx.now.as_micros() > grace && !self.quorum_since(since, true) {
                    // Check-quorum: a leader cut off from a majority steps down, so its
                    // clients hear "unknown" instead of waiting forever.
                    self.become_follower(cx, self.term, None);
                    return;
                }
                let last_round = cx.now.minus_millis(cx.config.heartbeat_interval_ms);
                self.heartbeat_at = cx.now.plus_millis(cx.config.heartbeat_interval_ms);
                for peer in self.peers() {
                    let p = &mut self.progress[peer];
                    p.paused = false;
                    // No answer to anything sent since the last heartbeat: what is in
                    // flight may be lost, so send it again. A follower that answers
                    // keeps its window (resending that would only repeat work).
                    if p.acked_at.is_none_or(|t| t < last_round) {
                        p.in_flight = 0;
                        if !p.probing && p.next > p.matched + 1 {
                            p.next = p.matched + 1;
                        }
                    }
                    self.send_append(cx, peer);
                }
            }
            Role::Leader => {}
            _ if cx.now >= self.election_at => {
                // Pre-vote: ask whether a vote would be granted before raising the term,
                // so a node cut off from the rest cannot disrupt the cluster on return.
                self.role = Role::PreCandidate;
                self.set_leader(None);
                self.votes = BTreeSet::from([self.me]);
                self.reset_election_timer(cx);
                self.ask_votes(true);
            }
            _ => {}
        }
    }

    /// Handles a vote request from `from`.
    pub(crate) fn on_vote(&mut self, cx: &mut Ctx<'_>, from: usize, req: RaftVote) {
        let leader_alive = self.is_leader()
            || self.leader_seen_at.is_some_and(|t| {
                cx.now < t.plus_millis(cx.config.election_timeout_ms) && self.leader.is_some()
            });
        let up_to_date =
            (req.last_term, req.last_index) >= (self.log.last_term(), self.log.last_index());
        if leader_alive {
            // Disregard: a leader is alive (this keeps the read lease sound).
            let reply = RaftVoteResult {
                term: self.term,
                granted: false,
                pre: req.pre,
            };
            self.out
                .messages
                .push((from, Payload::RaftVoteResult(reply)));
            return;
        }
        if req.pre {
            let granted = req.term > self.term && up_to_date;
            let term = if granted { req.term } else { self.term };
            let reply = RaftVoteResult {
                term,
                granted,
                pre: true,
            };
            self.out
                .messages
                .push((from, Payload::RaftVoteResult(reply)));
            return;
        }
        if req.term > self.term {
            self.become_follower(cx, req.term, None);
        }
        let granted = req.term == self.term && self.vote.is_none_or(|v| v == from) && up_to_date;
        if granted && self.vote.is_none() {
            self.vote = Some(from);
            self.persist_term();
            self.reset_election_timer(cx);
        }
        let reply = RaftVoteResult {
            term: self.term,
            granted,
            pre: false,
        };
        self.out
            .messages
            .push((from, Payload::RaftVoteResult(reply)));
    }

    /// Handles an answer to a vote request.
    pub(crate) fn on_vote_result(&mut self, cx: &mut Ctx<'_>, from: usize, res: RaftVoteResult) {
        if res.term > self.term && !res.granted {
            self.become_follower(cx, res.term, None);
            return;
        }
        let expected = match (&self.role, res.pre) {
            (Role::PreCandidate, true) => self.term.saturating_add(1),
            (Role::Candidate, false) => self.term,
            _ => return,
        };
        if !res.granted || res.term != expected {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() < self.majority() {
            return;
        }
        if res.pre {
            self.role = Role::Candidate;
            self.term = self.term.saturating_add(1);
            self.vote = Some(self.me);
            self.votes = BTreeSet::from([self.me]);
            self.persist_term();
            self.reset_election_timer(cx);
            self.ask_votes(false);
        } else {
            self.become_leader(cx);
        }
    }

    /// Handles an append from the leader `from`.
    pub(crate) fn on_append(&mut self, cx: &mut Ctx<'_>, from: usize, req: RaftAppend) {
        if !self.accept_leader(cx, from, req.term) {
            self.answer_append(from, false, 0, req.sent_at);
            return;
        }
        let mut prev = req.prev_index;
        let mut entries = req.entries;
        if prev > self.log.last_index() {
            let hint = self.log.last_index();
            self.answer_append(from, false, hint, req.sent_at);
            return;
        }
        let last_new = prev + entries.len() as u64;
        if prev < self.log.base_index {
            // The start is compacted here, so committed: it matches.
            let skip = (self.log.base_index - prev).min(entries.len() as u64);
            entries.drain(..skip as usize);
            prev += skip;
            if prev < self.log.base_index {
                self.answer_append(from, true, last_new, req.sent_at);
                return;
            }
        } else if let Some(conflict) = self.log.term_at(prev).filter(|&t| t != req.prev_term) {
            // (prev is in the log: past its end was refused above.) Skip back over the
            // whole conflicting term at once.
            let mut i = prev;
            while i > self.log.base_index + 1 && self.log.term_at(i - 1) == Some(conflict) {
                i -= 1;
            }
            let hint = (i - 1).max(self.commit);
            self.answer_append(from, false, hint, req.sent_at);
            return;
        }
        // Entries already held (same index and term) are skipped; from the first
        // that differs or is missing, the leader's replace whatever is there.
        let first_new = entries
            .iter()
            .enumerate()
            .position(|(k, e)| self.log.term_at(prev + 1 + k as u64) != Some(e.term));
        if let Some(k) = first_new {
            let index = prev + 1 + k as u64;
            assert!(index > self.commit, "a committed entry would be rewritten");
            let new = entries.split_off(k);
            self.log.splice(index, new.clone());
            self.out.records.push(RaftChange::Append {
                index,
                entries: new,
            });
        }
        self.commit = self.commit.max(req.commit.min(last_new));
        self.answer_append(from, true, last_new, req.sent_at);
    }

    /// Handles a snapshot from the leader `from`. True if the node must install its
    /// state machine (persisted through `out`): it is news to this node.
    pub(crate) fn on_snapshot(&mut self, cx: &mut Ctx<'_>, from: usize, req: RaftSnapshot) -> bool {
        if !self.accept_leader(cx, from, req.term) {
            self.answer_append(from, false, 0, req.sent_at);
            return false;
        }
        if req.index <= self.commit {
            self.answer_append(from, true, req.index, req.sent_at);
            return false;
        }
        self.install(req.index, req.snapshot_term);
        self.answer_append(from, true, req.index, req.sent_at);
        self.out.records.push(RaftChange::Snapshot {
            index: req.index,
            term: req.snapshot_term,
            machine: req.machine,
        });
        true
    }

    /// Handles an answer to an append or a snapshot.
    pub(crate) fn on_append_result(
        &mut self,
        cx: &mut Ctx<'_>,
        from: usize,
        res: RaftAppendResult,
    ) {
        if res.term > self.term {
            self.become_follower(cx, res.term, None);
            return;
        }
        if !self.is_leader() || res.term < self.term || from == self.me {
            return;
        }
        let last = self.log.last_index();
        let p = &mut self.progress[from];
        p.acked_at = p.acked_at.max(Some(res.sent_at));
        p.in_flight = p.in_flight.saturating_sub(1);
        if res.success {
            p.matched = p.matched.max(res.index.min(last));
            p.next = p.next.max(p.matched + 1);
            p.probing = false;
            p.paused = false;
            self.advance_commit();
            // Fill the window: what was proposed meanwhile goes out in full appends
            // (until a snapshot is due: that pauses the follower).
            while {
                let p = &self.progress[from];
                !p.paused && p.next <= last && p.in_flight < MAX_IN_FLIGHT
            } {
                self.send_append(cx, from);
            }
        } else {
            p.next = (res.index.saturating_add(1))
                .min(p.next.saturating_sub(1))
                .max(p.matched + 1);
            p.probing = true;
            p.paused = false;
            self.send_append(cx, from);
        }
    }

    /// The node sent `peer` its state machine as of `index` (a committed index it has
    /// applied): resume the peer after it.
    pub(crate) fn snapshot_sent(&mut self, peer: usize, index: u64) {
        let p = &mut self.progress[peer];
        p.next = index + 1;
        p.probing = true;
        p.paused = true;
    }

    /// Forgets applied log entries once the log holds more than `max_raft_log_entries`.
    /// A leader keeps what its slowest follower still needs unless that follower is
    /// more than half the limit behind (then it gets a snapshot): a follower that
    /// merely lags is not sent the whole state machine.
    pub(crate) fn compact(&mut self, applied: u64, config: &Config) {
        let limit = config.max_raft_log_entries as u64;
        if self.log.entries.len() as u64 <= limit {
            return;
        }
        let mut to = applied.min(self.commit);
        if self.is_leader() {
            let slowest = self.peers().map(|p| self.progress[p].matched).min();
            let floor = self.log.last_index().saturating_sub(limit / 2);
            to = to.min(slowest.unwrap_or(to).max(floor));
        }
        if to > self.log.base_index {
            self.log.compact_to(to);
        }
    }

    /// Replays a persisted record (recovery). A snapshot record also resets the commit
    /// index to it; the node installs the state machine.
    pub(crate) fn restore(&mut self, record: &RaftChange) {
        match record {
            RaftChange::Term { term, vote } => {
                self.term = *term;
                self.vote = *vote;
            }
            RaftChange::Append { index, entries } => {
                let skip = self.log.base_index.saturating_sub(index - 1);
                if skip < entries.len() as u64 {
                    let from = index + skip;
                    self.log.splice(from, entries[skip as usize..].to_vec());
                }
            }
            RaftChange::Snapshot { index, term, .. } => self.install(*index, *term),
            RaftChange::Commit { index } => {
                self.commit = self.commit.max((*index).min(self.log.last_index()));
            }
        }
    }

    /// A cluster just started using Raft: look for a leader after a short random wait
    /// (up to one heartbeat interval) rather than a whole election timeout.
    pub(crate) fn activated(&mut self, cx: &mut Ctx<'_>) {
        self.restarted(cx);
        let wait_us = cx.rng.below(cx.config.heartbeat_interval_ms * 1_000 + 1);
        self.election_at = cx.now.plus_micros(wait_us);
    }

    /// After a restart: forget who led and what was in flight; wait for a leader.
    pub(crate) fn restarted(&mut self, cx: &mut Ctx<'_>) {
        self.role = Role::Follower;
        self.set_leader(None);
        self.leader_seen_at = None;
        self.votes.clear();
        self.reset_election_timer(cx);
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        assert!(self.out.is_empty(), "raft output left between steps");
        assert!(self.commit <= self.log.last_index(), "commit past the log");
        assert!(self.log.base_index <= self.commit, "compacted past commit");
        let mut term = self.log.base_term;
        for e in &self.log.entries {
            assert!(e.term >= term, "log terms go back");
            term = e.term;
        }
        assert!(term <= self.term, "log has a future term");
        if self.is_leader() {
            assert_eq!(self.leader, Some(self.me));
            assert_eq!(self.vote, Some(self.me), "a leader voted for itself");
            for peer in self.peers() {
                let p = &self.progress[peer];
                assert!(p.matched < p.next, "matched {} next {}", p.matched, p.next);
                assert!(p.next <= self.log.last_index() + 1, "next past the log");
            }
        }
    }

    fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn peers(&self) -> impl Iterator<Item = usize> {
        let me = self.me;
        (0..self.nodes.len()).filter(move |&p| p != me)
    }

    /// True if a majority (this leader included) answered an append sent at or after
    /// `since` (or, with `grace`, the term is that young).
    fn quorum_since(&self, since: Time, grace: bool) -> bool {
        let answered = self
            .peers()
            .filter(|&p| self.progress[p].acked_at.is_some_and(|t| t >= since))
            .count();
        answered + 1 >= self.majority() || (grace && self.leader_since >= since)
    }

    fn reset_election_timer(&mut self, cx: &mut Ctx<'_>) {
        let base = cx.config.election_timeout_ms * 1_000;
        self.election_at = cx.now.plus_micros(base + cx.rng.below(base.max(1)));
    }

    fn persist_term(&mut self) {
        self.out.records.push(RaftChange::Term {
            term: self.term,
            vote: self.vote,
        });
    }

    fn ask_votes(&mut self, pre: bool) {
        let req = RaftVote {
            term: if pre {
                self.term.saturating_add(1)
            } else {
                self.term
            },
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre,
        };
        for peer in self.peers() {
            self.out
                .messages
                .push((peer, Payload::RaftVote(req.clone())));
        }
    }

    /// Takes `term` (if newer) and follows `leader` (if known).
    fn become_follower(&mut self, cx: &mut Ctx<'_>, term: u64, leader: Option<usize>) {
        if self.is_leader() {
            self.out.lost_leadership = Some(self.term);
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_term();
        }
        self.role = Role::Follower;
        self.set_leader(leader);
        self.votes.clear();
        self.reset_election_timer(cx);
    }

    fn set_leader(&mut self, leader: Option<usize>) {
        if leader != self.leader {
            self.leader_changes += 1;
        }
        self.leader = leader;
    }

    fn become_leader(&mut self, cx: &mut Ctx<'_>) {
        self.role = Role::Leader;
        self.set_leader(Some(self.me));
        self.leader_since = cx.now;
        self.votes.clear();
        let next = self.log.last_index() + 1;
        for p in &mut self.progress {
            *p = Progress {
                next,
                matched: 0,
                probing: true,
                paused: false,
                acked_at: None,
                in_flight: 0,
            };
        }
        // A no-op of the new term: committing it commits everything before it.
        self.term_start = self.append_own(cx, None);
        self.heartbeat_at = cx.now.plus_millis(cx.config.heartbeat_interval_ms);
        for peer in self.peers() {
            self.send_append(cx, peer);
        }
    }

    /// Checks an append's or snapshot's term; a current one makes `from` the leader.
    fn accept_leader(&mut self, cx: &mut Ctx<'_>, from: usize, term: u64) -> bool {
        if term < self.term {
            return false;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(cx, term, Some(from));
        }
        self.leader_seen_at = Some(cx.now);
        self.reset_election_timer(cx);
        true
    }

    fn answer_append(&mut self, to: usize, success: bool, index: u64, sent_at: Time) {
        let res = RaftAppendResult {
            term: self.term,
            success,
            index,
            sent_at,
        };
        self.out.messages.push((to, Payload::RaftAppendResult(res)));
    }

    fn append_own(&mut self, cx: &mut Ctx<'_>, msg: Option<Message>) -> u64 {
        let entry = RaftEntry {
            term: self.term,
            at: cx.now,
            msg: msg.map(Arc::new),
        };
        let index = self.log.last_index() + 1;
        self.log.entries.push_back(entry.clone());
        self.out.records.push(RaftChange::Append {
            index,
            entries: vec![entry],
        });
        index
    }

    fn send_append(&mut self, cx: &mut Ctx<'_>, peer: usize) {
        let p = &mut self.progress[peer];
        if p.paused {
            return;
        }
        if p.next <= self.log.base_index {
            self.out.snapshot_to.push(peer);
            p.paused = true;
            return;
        }
        let prev_index = p.next - 1;
        let prev_term = self.log.term_at(prev_index).expect("prev is in the log");
        let end = self
            .log
            .last_index()
            .min(prev_index + cx.config.max_append_entries as u64);
        let entries: Vec<RaftEntry> = (p.next..=end)
            .map(|i| self.log.get(i).expect("in the log").clone())
            .collect();
        if p.probing {
            p.paused = true;
        } else {
            p.next = end + 1;
        }
        if !entries.is_empty() {
            p.in_flight += 1;
        }
        let req = RaftAppend {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
            sent_at: cx.now,
        };
        self.out.messages.push((peer, Payload::RaftAppend(req)));
    }

    fn advance_commit(&mut self) {
        let mut matched: Vec<u64> = self
            .peers()
            .map(|p| self.progress[p].matched)
            .chain([self.log.last_index()])
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.majority() - 1];
        // Only an entry of the current term commits by counting (§3.6.2).
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
        }
    }

    fn install(&mut self, index: u64, term: u64) {
        if self.log.term_at(index) == Some(term) {
            self.log.compact_to(index);
        } else {
            self.log = Log {
                base_index: index,
                base_term: term,
                entries: VecDeque::new(),
            };
        }
        self.commit = self.commit.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn changes_read_back_with_fields_in_any_order_and_messages_as_they_came() {
        let line = br#"{"src":"c","dest":"n1","body":{"type":"enqueue","msg_id":1,"queue":"q","msg":{"a": 1}}}"#;
        let msg = crate::wire::decode(line).unwrap();
        let changes = [
            RaftChange::Term {
                term: 3,
                vote: Some(1),
            },
            RaftChange::Append {
                index: 7,
                entries: vec![RaftEntry {
                    msg: Some(Arc::new(msg)),
                    ..entry(3)
                }],
            },
            RaftChange::Snapshot {
                index: 9,
                term: 3,
                machine: serde_json::json!({"x": 1}).into(),
            },
            RaftChange::Commit { index: 7 },
        ];
        for change in changes {
            let text = serde_json::to_string(&change).unwrap();
            assert_eq!(serde_json::from_str::<RaftChange>(&text).unwrap(), change);
            if matches!(change, RaftChange::Append { .. }) {
                assert!(text.contains(r#""msg":{"a": 1}"#), "{text}");
            }
        }
        let late: RaftChange = serde_json::from_str(r#"{"term":5,"kind":"term"}"#).unwrap();
        assert_eq!(
            late,
            RaftChange::Term {
                term: 5,
                vote: None
            }
        );
        let missing = serde_json::from_str::<RaftChange>(r#"{"kind":"append","index":1}"#);
        assert!(missing.unwrap_err().to_string().contains("entries"));
        assert!(serde_json::from_str::<RaftChange>(r#"{"kind":"vote","term":1}"#).is_err());
    }

    fn entry(term: u64) -> RaftEntry {
        RaftEntry {
            term,
            at: Time::ZERO,
            msg: None,
        }
    }

    /// Node 0 of 3, restored with `entries` (by term) at `term`, elected leader of the
    /// next term by node 1's pre-vote and vote.
    fn cx<'a>(now: Time, config: &'a Config, rng: &'a mut Rng) -> Ctx<'a> {
        Ctx { now, config, rng }
    }

    fn leader_with(term: u64, entries: &[u64]) -> (Raft, Config, Rng) {
        let config = Config::default();
        let mut rng = Rng::new(1);
        let nodes = vec!["n0".to_owned(), "n1".to_owned(), "n2".to_owned()];
        let mut raft = Raft::new(&mut cx(Time::ZERO, &config, &mut rng), 0, nodes);
        raft.restore(&RaftChange::Term { term, vote: None });
        raft.restore(&RaftChange::Append {
            index: 1,
            entries: entries.iter().map(|&t| entry(t)).collect(),
        });
        let now = Time::from_millis(10_000);
        raft.run_due(&mut cx(now, &config, &mut rng));
        let grant = |pre: bool, term: u64| RaftVoteResult {
            term,
            granted: true,
            pre,
        };
        raft.on_vote_result(&mut cx(now, &config, &mut rng), 1, grant(true, term + 1));
        raft.on_vote_result(&mut cx(now, &config, &mut rng), 1, grant(false, term + 1));
        raft.take_out();
        assert!(raft.is_leader());
        (raft, config, rng)
    }

    fn acked(raft: &mut Raft, config: &Config, rng: &mut Rng, peer: usize, index: u64) {
        let res = RaftAppendResult {
            term: raft.term(),
            success: true,
            index,
            sent_at: Time::from_millis(10_000),
        };
        raft.on_append_result(&mut cx(Time::from_millis(10_000), config, rng), peer, res);
        raft.take_out();
        raft.check_invariants();
    }

    /// Figure 8 of the Raft paper: an entry of an older term on a majority is not
    /// committed by counting (a later leader could still overwrite it); it commits
    /// with the first entry of the leader's own term.
    #[test]
    fn an_old_term_entry_on_a_majority_is_not_committed_by_counting() {
        let (mut raft, config, mut rng) = leader_with(2, &[1, 2]);
        assert_eq!(raft.last_index(), 3, "the new leader appended its no-op");
        acked(&mut raft, &config, &mut rng, 1, 2);
        assert_eq!(raft.commit_index(), 0, "entry 2 (term 2) is on a majority");
        acked(&mut raft, &config, &mut rng, 1, 3);
        assert_eq!(
            raft.commit_index(),
            3,
            "the term-3 no-op commits all before it"
        );
    }

    #[test]
    fn a_leader_compacts_past_a_lagging_follower_only_when_it_is_half_the_limit_behind() {
        let short = Config {
            max_raft_log_entries: 20,
            ..Config::default()
        };
        for (lag, base) in [(6, 35), (16, 31)] {
            let (mut raft, config, mut rng) = leader_with(1, &[1; 40]);
            acked(&mut raft, &config, &mut rng, 1, 41);
            acked(&mut raft, &config, &mut rng, 2, 41 - lag);
            assert_eq!(raft.commit_index(), 41);
            raft.compact(41, &short);
            assert_eq!(raft.compacted_index(), base, "a follower {lag} behind");
            raft.check_invariants();
        }
    }

    #[test]
    fn a_follower_rewrites_a_conflicting_suffix_but_never_a_commit() {
        let config = Config::default();
        let mut rng = Rng::new(2);
        let nodes = vec!["n0".to_owned(), "n1".to_owned(), "n2".to_owned()];
        let mut raft = Raft::new(&mut cx(Time::ZERO, &config, &mut rng), 0, nodes);
        raft.restore(&RaftChange::Term {
            term: 2,
            vote: None,
        });
        raft.restore(&RaftChange::Append {
            index: 1,
            entries: vec![entry(1), entry(2), entry(2)],
        });
        let append = |prev_index, prev_term, entries: Vec<RaftEntry>, commit| RaftAppend {
            term: 3,
            prev_index,
            prev_term,
            entries,
            commit,
            sent_at: Time::ZERO,
        };
        // The leader of term 3 holds 1:[1] 2:[3]: the follower's term-2 run conflicts.
        raft.on_append(
            &mut cx(Time::ZERO, &config, &mut rng),
            1,
            append(2, 3, vec![], 0),
        );
        let out = raft.take_out();
        let hint = match out.messages.last() {
            Some((1, Payload::RaftAppendResult(r))) => {
                assert!(!r.success);
                r.index
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(hint, 1, "back over the whole conflicting term at once");
        raft.on_append(
            &mut cx(Time::ZERO, &config, &mut rng),
            1,
            append(1, 1, vec![entry(3)], 2),
        );
        let out = raft.take_out();
        assert_eq!((raft.last_index(), raft.term_at(2)), (2, Some(3)));
        assert_eq!(raft.commit_index(), 2);
        assert_eq!(
            out.records,
            vec![RaftChange::Append {
                index: 2,
                entries: vec![entry(3)]
            }],
            "only the rewritten suffix is persisted"
        );
        raft.check_invariants();
    }
}
