//! Raft log replication, sans-IO: leader election with pre-vote, log replication with
//! pipelining and conflict backoff, commitment by majority, a leader lease for reads,
//! check-quorum, and log compaction with snapshot installs for followers that fell
//! behind. (Ongaro's dissertation: §3 for the core, §4.2.3 for the lease and for
//! disregarding votes while a leader is alive, §9.6 for pre-vote.)
//!
//! [`Raft`] knows nothing of what entries mean. The node feeds it messages and ticks,
//! proposes entries, carries out its [`RaftOut`] (persist first, then send), and applies
//! entries up to [`Raft::commit_index`] to its state machine. Persistent state changes
//! come out as [`RaftRecord`]s; replaying them with [`Raft::restore`] rebuilds term, vote
//! and log after a crash.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::msg::{Payload, RaftAppend, RaftAppendResult, RaftSnapshot, RaftVote, RaftVoteResult};
use crate::{Config, Message, Rng, Time};

/// One log entry: a request to apply at time `at`, or only the passage of time (the
/// leader's first entry of its term, or a tick that runs due broker timers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that proposed it.
    pub term: u64,
    /// The leader's clock when it proposed the entry: the state machine's time.
    pub at: Time,
    /// The request, or `None` for a time-only entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<Message>,
}

/// A change to the durable Raft state, to persist before any later message is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RaftRecord {
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
        entries: Vec<Entry>,
    },
    /// The state machine, as of `index` (of `term`), replaces the log up to there.
    Snapshot {
        /// Last index the snapshot covers.
        index: u64,
        /// Its term.
        term: u64,
        /// The state machine (the node knows what it is).
        machine: serde_json::Value,
    },
}

/// What [`Raft`] asks the node to do, in order: persist `records`, then send `messages`,
/// then send a snapshot of the state machine to each of `snapshot_to`.
#[derive(Debug, Default)]
pub struct RaftOut {
    /// Persist these first.
    pub records: Vec<RaftRecord>,
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
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.messages.is_empty()
            && self.snapshot_to.is_empty()
            && self.lost_leadership.is_none()
    }
}

/// Why a proposal was refused (it was not appended anywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
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
    entries: VecDeque<Entry>,
}

impl Log {
    fn last_index(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.entries.back().map_or(self.base_term, |e| e.term)
    }

    fn get(&self, index: u64) -> Option<&Entry> {
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
    fn splice(&mut self, index: u64, entries: Vec<Entry>) {
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
pub struct Raft {
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
}

impl Raft {
    /// A follower of term 0 with an empty log; `nodes` is every node, `me` among them.
    pub fn new(now: Time, me: usize, nodes: Vec<String>, config: &Config, rng: &mut Rng) -> Raft {
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
            election_at: now,
            heartbeat_at: now,
            leader_since: now,
            term_start: 0,
        };
        raft.reset_election_timer(now, config, rng);
        raft
    }

    /// The node names, in index order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// True if this node leads the current term.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leader this node knows of (itself included).
    pub fn leader(&self) -> Option<usize> {
        self.leader
    }

    /// The name of the leader this node knows of.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.map(|i| self.nodes[i].as_str())
    }

    /// The index of the node named `name`, if it is one of the cluster's.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == name)
    }

    /// Entries up to here are committed: apply them.
    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The last index in the log.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The entry at `index`, if the log holds it (not compacted away).
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The term of the entry at `index`, if known.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }

    /// Entries not yet committed (a limit on proposals).
    pub fn uncommitted(&self) -> u64 {
        self.log.last_index() - self.commit
    }

    /// True if the leader may answer reads from its applied state: an entry of its term
    /// is committed (so it has every earlier commit) and a majority answered appends sent
    /// within the last election timeout, so no other leader can have been elected since
    /// (followers disregard votes that soon after hearing from a leader).
    pub fn can_read(&self, now: Time, config: &Config) -> bool {
        let since = Time::from_micros(
            now.as_micros()
                .saturating_sub(config.election_timeout_ms * 1_000),
        );
        self.is_leader() && self.commit >= self.term_start && self.quorum_since(since, false)
    }

    /// When the node next needs a tick.
    pub fn next_deadline(&self) -> Time {
        match self.role {
            Role::Leader => self.heartbeat_at,
            _ => self.election_at,
        }
    }

    /// Appends an entry to a leader's log and starts replicating it.
    pub fn propose(
        &mut self,
        now: Time,
        msg: Option<Message>,
        config: &Config,
        out: &mut RaftOut,
    ) -> Result<u64, Refused> {
        if !self.is_leader() {
            return Err(Refused::NotLeader);
        }
        if self.uncommitted() >= config.max_uncommitted_entries as u64 {
            return Err(Refused::Full);
        }
        let index = self.append_own(now, msg, out);
        for peer in self.peers() {
            let p = &self.progress[peer];
            if !p.probing && !p.paused && p.next == index && p.in_flight < MAX_IN_FLIGHT {
                self.send_append(peer, now, config, out);
            }
        }
        Ok(index)
    }

    /// Time passed: start an election, or (a leader) send heartbeats and check that a
    /// majority still answers.
    pub fn tick(&mut self, now: Time, config: &Config, rng: &mut Rng, out: &mut RaftOut) {
        match self.role {
            Role::Leader if now >= self.heartbeat_at => {
                let grace = self.leader_since.as_micros() + 2 * config.election_timeout_ms * 1_000;
                let since = Time::from_micros(
                    now.as_micros()
                        .saturating_sub(2 * config.election_timeout_ms * 1_000),
                );
                if now.as_micros() > grace && !self.quorum_since(since, true) {
                    // Check-quorum: a leader cut off from a majority steps down, so its
                    // clients hear "unknown" instead of waiting forever.
                    self.become_follower(now, self.term, None, config, rng, out);
                    return;
                }
                self.heartbeat_at = now.plus_millis(config.heartbeat_interval_ms);
                for peer in self.peers() {
                    let p = &mut self.progress[peer];
                    p.paused = false;
                    p.in_flight = 0;
                    if !p.probing && p.next > p.matched + 1 {
                        p.next = p.matched + 1; // resend what was not acknowledged
                    }
                    self.send_append(peer, now, config, out);
                }
            }
            Role::Leader => {}
            _ if now >= self.election_at => {
                // Pre-vote: ask whether a vote would be granted before raising the term,
                // so a node cut off from the rest cannot disrupt the cluster on return.
                self.role = Role::PreCandidate;
                self.leader = None;
                self.votes = BTreeSet::from([self.me]);
                self.reset_election_timer(now, config, rng);
                self.ask_votes(true, out);
            }
            _ => {}
        }
    }

    /// Handles a vote request from `from`.
    pub fn on_vote(
        &mut self,
        now: Time,
        from: usize,
        req: RaftVote,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) {
        let leader_alive = self.is_leader()
            || self.leader_seen_at.is_some_and(|t| {
                now < t.plus_millis(config.election_timeout_ms) && self.leader.is_some()
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
            out.messages.push((from, Payload::RaftVoteResult(reply)));
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
            out.messages.push((from, Payload::RaftVoteResult(reply)));
            return;
        }
        if req.term > self.term {
            self.become_follower(now, req.term, None, config, rng, out);
        }
        let granted = req.term == self.term && self.vote.map_or(true, |v| v == from) && up_to_date;
        if granted && self.vote.is_none() {
            self.vote = Some(from);
            self.persist_term(out);
            self.reset_election_timer(now, config, rng);
        }
        let reply = RaftVoteResult {
            term: self.term,
            granted,
            pre: false,
        };
        out.messages.push((from, Payload::RaftVoteResult(reply)));
    }

    /// Handles an answer to a vote request.
    pub fn on_vote_result(
        &mut self,
        now: Time,
        from: usize,
        res: RaftVoteResult,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) {
        if res.term > self.term && !res.granted {
            self.become_follower(now, res.term, None, config, rng, out);
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
            self.persist_term(out);
            self.reset_election_timer(now, config, rng);
            self.ask_votes(false, out);
        } else {
            self.become_leader(now, config, out);
        }
    }

    /// Handles an append from the leader `from`.
    pub fn on_append(
        &mut self,
        now: Time,
        from: usize,
        req: RaftAppend,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) {
        if !self.accept_leader(now, from, req.term, config, rng, out) {
            self.answer_append(from, false, 0, req.sent_at, out);
            return;
        }
        let mut prev = req.prev_index;
        let mut entries = req.entries;
        if prev > self.log.last_index() {
            let hint = self.log.last_index();
            self.answer_append(from, false, hint, req.sent_at, out);
            return;
        }
        let last_new = prev + entries.len() as u64;
        if prev < self.log.base_index {
            // The start is compacted here, so committed: it matches.
            let skip = (self.log.base_index - prev).min(entries.len() as u64);
            entries.drain(..skip as usize);
            prev += skip;
            if prev < self.log.base_index {
                self.answer_append(from, true, last_new, req.sent_at, out);
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
            self.answer_append(from, false, hint, req.sent_at, out);
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
            out.records.push(RaftRecord::Append {
                index,
                entries: new,
            });
        }
        self.commit = self.commit.max(req.commit.min(last_new));
        self.answer_append(from, true, last_new, req.sent_at, out);
    }

    /// Handles a snapshot from the leader `from`. True if the node must install its
    /// state machine (persisted through `out`): it is news to this node.
    pub fn on_snapshot(
        &mut self,
        now: Time,
        from: usize,
        req: RaftSnapshot,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) -> bool {
        if !self.accept_leader(now, from, req.term, config, rng, out) {
            self.answer_append(from, false, 0, req.sent_at, out);
            return false;
        }
        if req.index <= self.commit {
            self.answer_append(from, true, req.index, req.sent_at, out);
            return false;
        }
        self.install(req.index, req.snapshot_term);
        self.answer_append(from, true, req.index, req.sent_at, out);
        out.records.push(RaftRecord::Snapshot {
            index: req.index,
            term: req.snapshot_term,
            machine: req.machine,
        });
        true
    }

    /// Handles an answer to an append or a snapshot.
    pub fn on_append_result(
        &mut self,
        now: Time,
        from: usize,
        res: RaftAppendResult,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) {
        if res.term > self.term {
            self.become_follower(now, res.term, None, config, rng, out);
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
            let p = &self.progress[from];
            if p.next <= last {
                self.send_append(from, now, config, out);
            }
        } else {
            p.next = (res.index.saturating_add(1))
                .min(p.next.saturating_sub(1))
                .max(p.matched + 1);
            p.probing = true;
            p.paused = false;
            self.send_append(from, now, config, out);
        }
    }

    /// The node sent `peer` its state machine as of `index` (a committed index it has
    /// applied): resume the peer after it.
    pub fn snapshot_sent(&mut self, peer: usize, index: u64) {
        let p = &mut self.progress[peer];
        p.next = index + 1;
        p.probing = true;
        p.paused = true;
    }

    /// Forgets log entries up to `applied` once the log holds more than
    /// `max_raft_log_entries` (followers that still need them get a snapshot).
    pub fn compact(&mut self, applied: u64, config: &Config) {
        if self.log.entries.len() > config.max_raft_log_entries && applied > self.log.base_index {
            self.log.compact_to(applied.min(self.commit));
        }
    }

    /// Replays a persisted record (recovery). A snapshot record also resets the commit
    /// index to it; the node installs the state machine.
    pub fn restore(&mut self, record: &RaftRecord) {
        match record {
            RaftRecord::Term { term, vote } => {
                self.term = *term;
                self.vote = *vote;
            }
            RaftRecord::Append { index, entries } => {
                let skip = self.log.base_index.saturating_sub(index - 1);
                if skip < entries.len() as u64 {
                    let from = index + skip;
                    self.log.splice(from, entries[skip as usize..].to_vec());
                }
            }
            RaftRecord::Snapshot { index, term, .. } => self.install(*index, *term),
        }
    }

    /// A cluster just started using Raft: look for a leader after a short random wait
    /// (up to one heartbeat interval) rather than a whole election timeout.
    pub fn activated(&mut self, now: Time, config: &Config, rng: &mut Rng) {
        self.restarted(now, config, rng);
        let wait_us = rng.below(config.heartbeat_interval_ms * 1_000 + 1);
        self.election_at = now.plus_micros(wait_us);
    }

    /// After a restart: forget who led and what was in flight; wait for a leader.
    pub fn restarted(&mut self, now: Time, config: &Config, rng: &mut Rng) {
        self.role = Role::Follower;
        self.leader = None;
        self.leader_seen_at = None;
        self.votes.clear();
        self.reset_election_timer(now, config, rng);
    }

    /// Panics if an invariant is broken.
    pub fn check_invariants(&self) {
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

    fn reset_election_timer(&mut self, now: Time, config: &Config, rng: &mut Rng) {
        let base = config.election_timeout_ms * 1_000;
        self.election_at = now.plus_micros(base + rng.below(base.max(1)));
    }

    fn persist_term(&self, out: &mut RaftOut) {
        out.records.push(RaftRecord::Term {
            term: self.term,
            vote: self.vote,
        });
    }

    fn ask_votes(&self, pre: bool, out: &mut RaftOut) {
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
            out.messages.push((peer, Payload::RaftVote(req.clone())));
        }
    }

    /// Takes `term` (if newer) and follows `leader` (if known).
    fn become_follower(
        &mut self,
        now: Time,
        term: u64,
        leader: Option<usize>,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) {
        if self.is_leader() {
            out.lost_leadership = Some(self.term);
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_term(out);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer(now, config, rng);
    }

    fn become_leader(&mut self, now: Time, config: &Config, out: &mut RaftOut) {
        self.role = Role::Leader;
        self.leader = Some(self.me);
        self.leader_since = now;
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
        self.term_start = self.append_own(now, None, out);
        self.heartbeat_at = now.plus_millis(config.heartbeat_interval_ms);
        for peer in self.peers() {
            self.send_append(peer, now, config, out);
        }
    }

    /// Checks an append's or snapshot's term; a current one makes `from` the leader.
    fn accept_leader(
        &mut self,
        now: Time,
        from: usize,
        term: u64,
        config: &Config,
        rng: &mut Rng,
        out: &mut RaftOut,
    ) -> bool {
        if term < self.term {
            return false;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, term, Some(from), config, rng, out);
        }
        self.leader_seen_at = Some(now);
        self.reset_election_timer(now, config, rng);
        true
    }

    fn answer_append(
        &self,
        to: usize,
        success: bool,
        index: u64,
        sent_at: Time,
        out: &mut RaftOut,
    ) {
        let res = RaftAppendResult {
            term: self.term,
            success,
            index,
            sent_at,
        };
        out.messages.push((to, Payload::RaftAppendResult(res)));
    }

    fn append_own(&mut self, now: Time, msg: Option<Message>, out: &mut RaftOut) -> u64 {
        let entry = Entry {
            term: self.term,
            at: now,
            msg,
        };
        let index = self.log.last_index() + 1;
        self.log.entries.push_back(entry.clone());
        out.records.push(RaftRecord::Append {
            index,
            entries: vec![entry],
        });
        index
    }

    fn send_append(&mut self, peer: usize, now: Time, config: &Config, out: &mut RaftOut) {
        let p = &mut self.progress[peer];
        if p.paused {
            return;
        }
        if p.next <= self.log.base_index {
            out.snapshot_to.push(peer);
            p.paused = true;
            return;
        }
        let prev_index = p.next - 1;
        let prev_term = self.log.term_at(prev_index).expect("prev is in the log");
        let end = self
            .log
            .last_index()
            .min(prev_index + config.max_append_entries as u64);
        let entries: Vec<Entry> = (p.next..=end)
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
            sent_at: now,
        };
        out.messages.push((peer, Payload::RaftAppend(req)));
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

    fn entry(term: u64) -> Entry {
        Entry {
            term,
            at: Time::ZERO,
            msg: None,
        }
    }

    /// Node 0 of 3, restored with `entries` (by term) at `term`, elected leader of the
    /// next term by node 1's pre-vote and vote.
    fn leader_with(term: u64, entries: &[u64]) -> (Raft, Config, Rng) {
        let config = Config::default();
        let mut rng = Rng::new(1);
        let nodes = vec!["n0".to_owned(), "n1".to_owned(), "n2".to_owned()];
        let mut raft = Raft::new(Time::ZERO, 0, nodes, &config, &mut rng);
        raft.restore(&RaftRecord::Term { term, vote: None });
        raft.restore(&RaftRecord::Append {
            index: 1,
            entries: entries.iter().map(|&t| entry(t)).collect(),
        });
        let mut out = RaftOut::default();
        let now = Time::from_millis(10_000);
        raft.tick(now, &config, &mut rng, &mut out);
        let grant = |pre: bool, term: u64| RaftVoteResult {
            term,
            granted: true,
            pre,
        };
        raft.on_vote_result(now, 1, grant(true, term + 1), &config, &mut rng, &mut out);
        raft.on_vote_result(now, 1, grant(false, term + 1), &config, &mut rng, &mut out);
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
        let mut out = RaftOut::default();
        raft.on_append_result(Time::from_millis(10_000), peer, res, config, rng, &mut out);
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
    fn a_follower_rewrites_a_conflicting_suffix_but_never_a_commit() {
        let config = Config::default();
        let mut rng = Rng::new(2);
        let nodes = vec!["n0".to_owned(), "n1".to_owned(), "n2".to_owned()];
        let mut raft = Raft::new(Time::ZERO, 0, nodes, &config, &mut rng);
        raft.restore(&RaftRecord::Term {
            term: 2,
            vote: None,
        });
        raft.restore(&RaftRecord::Append {
            index: 1,
            entries: vec![entry(1), entry(2), entry(2)],
        });
        let append = |prev_index, prev_term, entries: Vec<Entry>, commit| RaftAppend {
            term: 3,
            prev_index,
            prev_term,
            entries,
            commit,
            sent_at: Time::ZERO,
        };
        let mut out = RaftOut::default();
        // The leader of term 3 holds 1:[1] 2:[3]: the follower's term-2 run conflicts.
        raft.on_append(
            Time::ZERO,
            1,
            append(2, 3, vec![], 0),
            &config,
            &mut rng,
            &mut out,
        );
        let hint = match out.messages.last() {
            Some((1, Payload::RaftAppendResult(r))) => {
                assert!(!r.success);
                r.index
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(hint, 1, "back over the whole conflicting term at once");
        let mut out = RaftOut::default();
        raft.on_append(
            Time::ZERO,
            1,
            append(1, 1, vec![entry(3)], 2),
            &config,
            &mut rng,
            &mut out,
        );
        assert_eq!((raft.last_index(), raft.term_at(2)), (2, Some(3)));
        assert_eq!(raft.commit_index(), 2);
        assert_eq!(
            out.records,
            vec![RaftRecord::Append {
                index: 2,
                entries: vec![entry(3)]
            }],
            "only the rewritten suffix is persisted"
        );
        raft.check_invariants();
    }
}
