//! Kafka's consumer groups, classic protocol, as Kafka's `GroupCoordinator` runs them:
//! a JoinGroup barrier, SyncGroup handing out the leader's assignment, heartbeats,
//! sessions, LeaveGroup, committed offsets.
//!
//! A group is `Empty` (no members; it may still hold offsets), `PreparingRebalance`
//! (the barrier: every member's join is parked until all members have rejoined, or the
//! rebalance timeout has passed and those that did not are removed),
//! `CompletingRebalance` (the new generation is out, the leader holds every member's
//! metadata, the others' syncs wait for its assignment) or `Stable`. A new member, a
//! member leaving or timing out, and a join from the leader or with changed metadata
//! start a rebalance. Joins, syncs, heartbeats and commits renew a member's session; a
//! member whose join or sync is parked cannot heartbeat, so (as in Kafka) its session
//! does not end while it waits: the barrier and the leader's session bound the wait.
//!
//! Member ids come from a counter in the state (`{client_id}-{n}`, `n` never reused),
//! not from randomness, so every replica makes the same ones. An `Empty` group with
//! no offsets and no pending member is deleted, so the table only holds live groups.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{err, Broker, Completion};
use crate::runtime::{Ctx, TimerId, Timers};
use crate::wire::msg::kafka_code as code;
use crate::wire::msg::*;
use crate::{Config, Time};

/// A group's state, as Kafka names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    /// No members.
    #[default]
    Empty,
    /// The JoinGroup barrier: waiting for every member to rejoin.
    PreparingRebalance,
    /// A generation is out; waiting for the leader's SyncGroup.
    CompletingRebalance,
    /// Every member has (or can get) its assignment.
    Stable,
}

impl State {
    /// Kafka's name for it (ListGroups, DescribeGroups).
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// A request whose reply waits: who to answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Parked {
    /// Who asked.
    client: String,
    /// The request's `msg_id`.
    msg_id: u64,
}

impl Parked {
    /// Sends the reply.
    fn answer(self, reply: Payload, out: &mut Vec<Completion>) {
        out.push(Completion {
            client: self.client,
            msg_id: self.msg_id,
            reply,
        });
    }
}

/// What a timer is for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Deadline {
    /// The session of a member or a pending member: (group, member id).
    Session(String, String),
    /// A group's rebalance timeout: the barrier completes without the late members.
    Rebalance(String),
}

/// The time and the timers a group's transitions schedule with, and the group's name
/// (for the timers' keys).
struct Sched<'a> {
    /// The step's time.
    now: Time,
    /// The group.
    group: &'a str,
    /// Every Kafka group timer.
    timers: &'a mut Timers<Deadline>,
}

impl Sched<'_> {
    /// Schedules the session of `member` to end `timeout_ms` from now.
    fn session(&mut self, member: &str, timeout_ms: u64) -> TimerId {
        let key = Deadline::Session(self.group.to_owned(), member.to_owned());
        self.timers.schedule(self.now.plus_millis(timeout_ms), key)
    }
}

/// A member of a group.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Member {
    /// When it was added, from the id counter: members in join order sort by it.
    seq: u64,
    /// The client's name.
    client_id: String,
    /// Its static id, if it gave one (kept and shown; membership is dynamic).
    group_instance_id: Option<String>,
    /// Its session ends this long after its last join, sync, heartbeat or commit.
    session_timeout_ms: u64,
    /// How long a rebalance waits for it (at most `kafka_max_session_timeout_ms`).
    rebalance_timeout_ms: u64,
    /// The protocols it can use, preferred first, with its metadata for each.
    protocols: Vec<KafkaProtocol>,
    /// Its assignment from the leader (empty until the leader's sync).
    #[serde(with = "crate::wire::kafka_msg::base64_bytes")]
    assignment: Bytes,
    /// Its session timer.
    session: TimerId,
    /// Its join, parked at the barrier.
    join: Option<Parked>,
    /// Its sync, parked until the leader's.
    sync: Option<Parked>,
}

impl Member {
    /// A member as a join describes it, its join parked.
    fn new(config: &Config, j: &KafkaJoinGroup, seq: u64, session: TimerId, join: Parked) -> Self {
        Member {
            seq,
            client_id: j.client_id.clone(),
            group_instance_id: j.group_instance_id.clone(),
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: rebalance_timeout_ms(config, j),
            protocols: j.protocols.clone(),
            assignment: Bytes::new(),
            session,
            join: Some(join),
            sync: None,
        }
    }

    /// Restarts its session (`id` is its member id).
    fn renew(&mut self, id: &str, sched: &mut Sched<'_>) {
        sched.timers.cancel(self.session);
        self.session = sched.session(id, self.session_timeout_ms);
    }

    /// True if it can use protocol `name`.
    fn supports(&self, name: &str) -> bool {
        self.protocols.iter().any(|p| p.name == name)
    }

    /// Its metadata for protocol `name` (empty if it has none).
    fn metadata(&self, name: &str) -> Bytes {
        let found = self.protocols.iter().find(|p| p.name == name);
        found.map(|p| p.metadata.clone()).unwrap_or_default()
    }
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Committed {
    /// The next offset to consume.
    offset: i64,
    /// The client's metadata for it.
    metadata: String,
}

/// One consumer group.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Group {
    /// Where it is in the rebalance protocol.
    state: State,
    /// Its generation: bumped whenever a barrier completes (0 before the first).
    generation: i32,
    /// Its protocol type (`consumer`), from its first member; empty for a group that
    /// only stores offsets.
    protocol_type: String,
    /// The protocol chosen for the current generation.
    protocol_name: Option<String>,
    /// The leader of the current generation, while it is a member.
    leader: Option<String>,
    /// Member id → member.
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined with yet → session.
    pending: BTreeMap<String, TimerId>,
    /// The rebalance timeout, while `PreparingRebalance`.
    rebalance_deadline: Option<TimerId>,
    /// Topic → partition → committed offset.
    offsets: BTreeMap<String, BTreeMap<u32, Committed>>,
}

/// Every Kafka consumer group.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct KafkaGroups {
    /// Group id → group.
    groups: BTreeMap<String, Group>,
    /// Session and rebalance deadlines of every group.
    timers: Timers<Deadline>,
    /// The next number for a member id (and a member's join order).
    next_member: u64,
}

/// A member's rebalance timeout, capped at the longest session timeout allowed.
fn rebalance_timeout_ms(config: &Config, j: &KafkaJoinGroup) -> u64 {
    j.rebalance_timeout_ms
        .min(config.kafka_max_session_timeout_ms)
}

/// A join answered with an error.
fn join_error(member_id: &str, error_code: i16) -> KafkaJoinGroupOk {
    KafkaJoinGroupOk {
        error_code,
        generation: -1,
        protocol_name: String::new(),
        leader: String::new(),
        member_id: member_id.to_owned(),
        members: Vec::new(),
    }
}

/// A sync answered with an error.
fn sync_error(error_code: i16) -> KafkaSyncGroupOk {
    KafkaSyncGroupOk {
        error_code,
        protocol_type: String::new(),
        protocol_name: String::new(),
        assignment: Bytes::new(),
    }
}

/// A committed offset as a reply shows it.
fn committed(topic: &str, partition: u32, c: Option<&Committed>) -> KafkaCommittedOffset {
    KafkaCommittedOffset {
        topic: topic.to_owned(),
        partition,
        offset: c.map_or(-1, |c| c.offset),
        metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
        error_code: code::NONE,
    }
}

/// The Herald error for a group beyond `max_groups`.
fn too_many_groups(config: &Config) -> ErrorBody {
    let text = format!("too many Kafka groups (max_groups={})", config.max_groups);
    err(ErrorCode::TemporarilyUnavailable, text)
}

/// The Herald error for a join or sync without a `msg_id`, whose reply could not wait.
fn needs_msg_id(kind: &str) -> ErrorBody {
    let text = format!("{kind} needs a msg_id: its reply may wait for the rebalance");
    err(ErrorCode::MalformedRequest, text)
}

impl Group {
    /// True if it can go: no members, no pending member, no offsets.
    fn is_idle(&self) -> bool {
        self.state == State::Empty && self.pending.is_empty() && self.offsets.is_empty()
    }

    /// Member ids in join order.
    fn join_order(&self) -> Vec<String> {
        let mut ids: Vec<(&String, u64)> = self.members.iter().map(|(id, m)| (id, m.seq)).collect();
        ids.sort_by_key(|&(_, seq)| seq);
        ids.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// True if a join of `member_id` with these protocols fits the group: the type is
    /// the group's, and one protocol is one every other member can use.
    fn supports(&self, member_id: &str, protocol_type: &str, protocols: &[KafkaProtocol]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| *id != member_id)
            .map(|(_, m)| m)
            .collect();
        let shared = || {
            let mut names = protocols.iter().map(|p| p.name.as_str());
            names.any(|name| others.iter().all(|m| m.supports(name)))
        };
        others.is_empty() || (protocol_type == self.protocol_type && shared())
    }

    /// The protocol for a new generation: each member votes for the first of its
    /// protocols that every member can use; most votes wins, ties go to the first
    /// member's preference.
    fn select_protocol(&self) -> String {
        let order = self.join_order();
        let first = &self.members[&order[0]];
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let votes = |name: &str| {
            let vote = |m: &&Member| {
                let mut names = m.protocols.iter().map(|p| p.name.as_str());
                names.find(|n| candidates.contains(n)) == Some(name)
            };
            self.members.values().filter(vote).count()
        };
        let best = candidates
            .iter()
            .enumerate()
            .max_by_key(|&(rank, name)| (votes(name), std::cmp::Reverse(rank)));
        let (_, name) = best.expect("members share a protocol: checked at each join");
        (*name).to_owned()
    }

    /// The current generation's join reply for `member_id`; with every member's
    /// metadata if `with_members` (the leader's).
    fn current_join(&self, member_id: &str, with_members: bool) -> KafkaJoinGroupOk {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = match with_members {
            false => Vec::new(),
            true => self
                .join_order()
                .into_iter()
                .map(|id| {
                    let m = &self.members[&id];
                    KafkaMemberMetadata {
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata(&protocol),
                        member_id: id,
                    }
                })
                .collect(),
        };
        KafkaJoinGroupOk {
            error_code: code::NONE,
            generation: self.generation,
            protocol_name: protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// The error for a request of `member_id` quoting `generation`, if any.
    fn check_generation(&self, member_id: &str, generation: i32) -> Option<i16> {
        if !self.members.contains_key(member_id) {
            Some(code::UNKNOWN_MEMBER_ID)
        } else if generation != self.generation {
            Some(code::ILLEGAL_GENERATION)
        } else {
            None
        }
    }

    /// Adds a member (its join parked); the first one sets the protocol type.
    fn admit(&mut self, id: String, protocol_type: &str, member: Member) {
        if self.members.is_empty() {
            protocol_type.clone_into(&mut self.protocol_type);
        }
        self.members.insert(id, member);
    }
}

/// The rebalance protocol's transitions.
impl Group {
    /// Starts a rebalance unless one is running (parked syncs are told to rejoin),
    /// then completes the barrier if every member has rejoined.
    fn rebalance(&mut self, sched: &mut Sched<'_>, out: &mut Vec<Completion>) {
        if self.state != State::PreparingRebalance {
            if self.state == State::CompletingRebalance {
                self.abort_syncs(out);
            }
            let members = self.members.values();
            let timeout_ms = members.map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
            let key = Deadline::Rebalance(sched.group.to_owned());
            let at = sched.now.plus_millis(timeout_ms);
            self.rebalance_deadline = Some(sched.timers.schedule(at, key));
            self.state = State::PreparingRebalance;
        }
        self.try_complete(sched, out);
    }

    /// Completes the barrier if a rebalance runs and every member (pending ones too)
    /// has rejoined.
    fn try_complete(&mut self, sched: &mut Sched<'_>, out: &mut Vec<Completion>) {
        let joined = self.members.values().all(|m| m.join.is_some());
        if self.state == State::PreparingRebalance && joined && self.pending.is_empty() {
            self.complete_join(sched, out);
        }
    }

    /// Answers the syncs waiting for the leader with REBALANCE_IN_PROGRESS; forgets
    /// the assignments.
    fn abort_syncs(&mut self, out: &mut Vec<Completion>) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(parked) = m.sync.take() {
                let reply = sync_error(code::REBALANCE_IN_PROGRESS);
                parked.answer(Payload::KafkaSyncGroupOk(reply), out);
            }
        }
    }

    /// Ends the barrier: members that did not rejoin are removed, the generation
    /// moves on, and every join is answered (the leader's with the members'
    /// metadata). No member left: the group is `Empty`.
    fn complete_join(&mut self, sched: &mut Sched<'_>, out: &mut Vec<Completion>) {
        if let Some(timer) = self.rebalance_deadline.take() {
            sched.timers.cancel(timer);
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &late {
            self.drop_member(id, sched, out);
        }
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        let order = self.join_order();
        let Some(first) = order.first() else {
            self.state = State::Empty;
            self.protocol_name = None;
            return;
        };
        let leader = self.leader.get_or_insert_with(|| first.clone()).clone();
        self.protocol_name = Some(self.select_protocol());
        self.state = State::CompletingRebalance;
        for id in order {
            let reply = self.current_join(&id, id == leader);
            let m = self.members.get_mut(&id).expect("listed");
            m.renew(&id, sched);
            if let Some(parked) = m.join.take() {
                parked.answer(Payload::KafkaJoinGroupOk(reply), out);
            }
        }
    }

    /// Removes a member without starting a rebalance; its parked requests are
    /// answered UNKNOWN_MEMBER_ID.
    fn drop_member(&mut self, id: &str, sched: &mut Sched<'_>, out: &mut Vec<Completion>) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        sched.timers.cancel(m.session);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if let Some(parked) = m.join {
            let reply = join_error("", code::UNKNOWN_MEMBER_ID);
            parked.answer(Payload::KafkaJoinGroupOk(reply), out);
        }
        if let Some(parked) = m.sync {
            let reply = sync_error(code::UNKNOWN_MEMBER_ID);
            parked.answer(Payload::KafkaSyncGroupOk(reply), out);
        }
    }

    /// Removes a member (it left, or its session ended): the others rebalance.
    fn remove_member(&mut self, id: &str, sched: &mut Sched<'_>, out: &mut Vec<Completion>) {
        self.drop_member(id, sched, out);
        self.rebalance(sched, out);
    }

    /// A join of a member already in the group. Unchanged metadata while the
    /// generation is being synced, or from a follower of a stable group, gets the
    /// current generation at once; anything else rebalances (the join parks).
    fn rejoin(
        &mut self,
        sched: &mut Sched<'_>,
        config: &Config,
        j: &KafkaJoinGroup,
        parked: Parked,
        out: &mut Vec<Completion>,
    ) -> Option<KafkaJoinGroupOk> {
        let id = j.member_id.as_str();
        let is_leader = self.leader.as_deref() == Some(id);
        let m = self.members.get_mut(id).expect("checked by refuse_join");
        let unchanged = m.protocols == j.protocols;
        let current = unchanged
            && match self.state {
                State::CompletingRebalance => true,
                State::Stable => !is_leader,
                State::Empty | State::PreparingRebalance => false,
            };
        if current {
            m.renew(id, sched);
            return Some(self.current_join(id, is_leader));
        }
        m.protocols.clone_from(&j.protocols);
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = rebalance_timeout_ms(config, j);
        m.renew(id, sched);
        if let Some(old) = m.join.replace(parked.clone()).filter(|old| *old != parked) {
            let reply = join_error(id, code::REBALANCE_IN_PROGRESS);
            old.answer(Payload::KafkaJoinGroupOk(reply), out);
        }
        self.rebalance(sched, out);
        None
    }

    /// The leader's sync: stores the assignments (members it left out get an empty
    /// one), makes the group `Stable`, and answers every parked sync.
    fn assign(
        &mut self,
        given: Vec<KafkaAssignment>,
        sched: &mut Sched<'_>,
        out: &mut Vec<Completion>,
    ) {
        let mut given: BTreeMap<String, Bytes> = given
            .into_iter()
            .map(|a| (a.member_id, a.assignment))
            .collect();
        self.state = State::Stable;
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        for (id, m) in &mut self.members {
            m.assignment = given.remove(id).unwrap_or_default();
            if let Some(parked) = m.sync.take() {
                m.renew(id, sched);
                let reply = KafkaSyncGroupOk {
                    error_code: code::NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: m.assignment.clone(),
                };
                parked.answer(Payload::KafkaSyncGroupOk(reply), out);
            }
        }
    }

    /// The error for an offset commit, if any; a member's commit renews its session.
    /// Generation −1 commits from outside the group, allowed while it is `Empty`.
    fn refuse_commit(&mut self, c: &KafkaOffsetCommit, sched: &mut Sched<'_>) -> Option<i16> {
        if c.generation < 0 && self.state == State::Empty {
            return None;
        }
        if let Some(refused) = self.check_generation(&c.member_id, c.generation) {
            return Some(refused);
        }
        // Kafka takes commits while preparing a rebalance (a consumer commits before
        // it rejoins), not between the barrier and the leader's assignment.
        if self.state == State::CompletingRebalance {
            return Some(code::REBALANCE_IN_PROGRESS);
        }
        let m = self.members.get_mut(&c.member_id).expect("checked");
        m.renew(&c.member_id, sched);
        None
    }
}

impl KafkaGroups {
    /// Every committed offset of every group: `(group, topic, partition, offset)`.
    pub(super) fn committed(&self) -> impl Iterator<Item = (&str, &str, u32, i64)> + '_ {
        self.groups.iter().flat_map(|(group, g)| {
            g.offsets.iter().flat_map(move |(topic, partitions)| {
                (partitions.iter())
                    .map(move |(&p, c)| (group.as_str(), topic.as_str(), p, c.offset))
            })
        })
    }

    /// JoinGroup. `Ok(None)`: parked at the barrier (the reply goes to `out` when it
    /// completes, maybe in this call). A join without a `msg_id` is refused, since
    /// its reply may have to wait.
    pub(super) fn join(
        &mut self,
        now: Time,
        config: &Config,
        client: &str,
        msg_id: Option<u64>,
        j: KafkaJoinGroup,
        out: &mut Vec<Completion>,
    ) -> Result<Option<KafkaJoinGroupOk>, ErrorBody> {
        let msg_id = msg_id.ok_or_else(|| needs_msg_id("kafka_join_group"))?;
        if let Some(refused) = self.refuse_join(config, &j)? {
            return Ok(Some(join_error(&j.member_id, refused)));
        }
        let parked = Parked {
            client: client.to_owned(),
            msg_id,
        };
        let Self {
            groups,
            timers,
            next_member,
        } = self;
        let group = groups.entry(j.group.clone()).or_default();
        let mut sched = Sched {
            now,
            group: &j.group,
            timers,
        };
        let id = if !j.member_id.is_empty() {
            j.member_id.clone()
        } else {
            let id = format!("{}-{next_member}", j.client_id);
            *next_member += 1;
            if j.require_known_member {
                let timer = sched.session(&id, j.session_timeout_ms);
                group.pending.insert(id.clone(), timer);
                return Ok(Some(join_error(&id, code::MEMBER_ID_REQUIRED)));
            }
            id
        };
        if let Some(timer) = group.pending.remove(&id) {
            sched.timers.cancel(timer);
        } else if group.members.contains_key(&id) {
            return Ok(group.rejoin(&mut sched, config, &j, parked, out));
        }
        let session = sched.session(&id, j.session_timeout_ms);
        let member = Member::new(config, &j, *next_member, session, parked);
        *next_member += 1;
        group.admit(id, &j.protocol_type, member);
        group.rebalance(&mut sched, out);
        Ok(None)
    }

    /// Kafka's error for a join, if it is refused before it touches the group; a
    /// Herald error if it would create a group beyond `max_groups`.
    fn refuse_join(&self, config: &Config, j: &KafkaJoinGroup) -> Result<Option<i16>, ErrorBody> {
        let sessions = config.kafka_min_session_timeout_ms..=config.kafka_max_session_timeout_ms;
        if !sessions.contains(&j.session_timeout_ms) {
            return Ok(Some(code::INVALID_SESSION_TIMEOUT));
        }
        let known = !j.member_id.is_empty();
        let Some(group) = self.groups.get(&j.group) else {
            if known {
                return Ok(Some(code::UNKNOWN_MEMBER_ID));
            }
            if self.groups.len() >= config.max_groups {
                return Err(too_many_groups(config));
            }
            let fresh = Group::default();
            let fits = fresh.supports("", &j.protocol_type, &j.protocols);
            return Ok((!fits).then_some(code::INCONSISTENT_GROUP_PROTOCOL));
        };
        let size = group.members.len() + group.pending.len();
        Ok(if !known && size >= config.max_group_members {
            Some(code::GROUP_MAX_SIZE_REACHED)
        } else if !group.supports(&j.member_id, &j.protocol_type, &j.protocols) {
            Some(code::INCONSISTENT_GROUP_PROTOCOL)
        } else if known
            && !group.members.contains_key(&j.member_id)
            && !group.pending.contains_key(&j.member_id)
        {
            Some(code::UNKNOWN_MEMBER_ID)
        } else {
            None
        })
    }

    /// SyncGroup. `Ok(None)`: a follower's sync parked until the leader's (its reply,
    /// or every parked one when this is the leader's, goes to `out`).
    pub(super) fn sync(
        &mut self,
        now: Time,
        client: &str,
        msg_id: Option<u64>,
        s: KafkaSyncGroup,
        out: &mut Vec<Completion>,
    ) -> Result<Option<KafkaSyncGroupOk>, ErrorBody> {
        let msg_id = msg_id.ok_or_else(|| needs_msg_id("kafka_sync_group"))?;
        if let Err(refused) = self.renew(now, &s.group, &s.member_id, s.generation) {
            return Ok(Some(sync_error(refused)));
        }
        let Self { groups, timers, .. } = self;
        let group = groups.get_mut(&s.group).expect("renewed");
        let mut sched = Sched {
            now,
            group: &s.group,
            timers,
        };
        let m = group.members.get_mut(&s.member_id).expect("renewed");
        match group.state {
            State::Empty => Ok(Some(sync_error(code::UNKNOWN_MEMBER_ID))),
            State::PreparingRebalance => Ok(Some(sync_error(code::REBALANCE_IN_PROGRESS))),
            State::Stable => Ok(Some(KafkaSyncGroupOk {
                error_code: code::NONE,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone().unwrap_or_default(),
                assignment: m.assignment.clone(),
            })),
            State::CompletingRebalance => {
                let parked = Parked {
                    client: client.to_owned(),
                    msg_id,
                };
                if let Some(old) = m.sync.replace(parked.clone()).filter(|old| *old != parked) {
                    let reply = sync_error(code::REBALANCE_IN_PROGRESS);
                    old.answer(Payload::KafkaSyncGroupOk(reply), out);
                }
                if group.leader.as_deref() == Some(s.member_id.as_str()) {
                    group.assign(s.assignments, &mut sched, out);
                }
                Ok(None)
            }
        }
    }

    /// Heartbeat: Kafka's error code; a member's heartbeat renews its session.
    pub(super) fn heartbeat(&mut self, now: Time, h: &KafkaHeartbeat) -> i16 {
        if let Err(refused) = self.renew(now, &h.group, &h.member_id, h.generation) {
            return refused;
        }
        match self.groups[&h.group].state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            State::Empty | State::CompletingRebalance | State::Stable => code::NONE,
        }
    }

    /// Renews the session of `member` of `group`, if it is a member at `generation`;
    /// otherwise Kafka's error code for why not.
    fn renew(&mut self, now: Time, group: &str, member: &str, generation: i32) -> Result<(), i16> {
        let Self { groups, timers, .. } = self;
        let g = groups.get_mut(group).ok_or(code::UNKNOWN_MEMBER_ID)?;
        if let Some(refused) = g.check_generation(member, generation) {
            return Err(refused);
        }
        let mut sched = Sched { now, group, timers };
        let m = g.members.get_mut(member).expect("checked");
        m.renew(member, &mut sched);
        Ok(())
    }

    /// LeaveGroup: the members (pending ones too) leave, and the others rebalance.
    /// UNKNOWN_MEMBER_ID if one of them was not in the group (the rest still leave).
    pub(super) fn leave(
        &mut self,
        now: Time,
        l: &KafkaLeaveGroup,
        out: &mut Vec<Completion>,
    ) -> i16 {
        let Self { groups, timers, .. } = self;
        let Some(group) = groups.get_mut(&l.group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let mut sched = Sched {
            now,
            group: &l.group,
            timers,
        };
        let mut error_code = code::NONE;
        for id in &l.member_ids {
            if let Some(timer) = group.pending.remove(id) {
                sched.timers.cancel(timer);
                group.try_complete(&mut sched, out);
            } else if group.members.contains_key(id) {
                group.remove_member(id, &mut sched, out);
            } else {
                error_code = code::UNKNOWN_MEMBER_ID;
            }
        }
        self.drop_if_idle(&l.group);
        error_code
    }

    /// OffsetCommit: each offset with its error code. A partition that does not exist
    /// (`partition_count` says how many a topic has) is UNKNOWN_TOPIC_OR_PARTITION; a
    /// commit from outside (generation −1) to a group that does not exist creates it.
    pub(super) fn commit(
        &mut self,
        now: Time,
        config: &Config,
        mut c: KafkaOffsetCommit,
        partition_count: impl Fn(&str) -> Option<u32>,
    ) -> Result<KafkaOffsetCommitOk, ErrorBody> {
        let exists =
            |o: &KafkaCommittedOffset| partition_count(&o.topic).is_some_and(|n| o.partition < n);
        let refused = match c.offsets.iter().any(exists) {
            true => self.admit_commit(now, config, &c)?,
            false => None,
        };
        for o in &mut c.offsets {
            o.error_code = if !exists(o) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if let Some(refused) = refused {
                refused
            } else {
                let group = self.groups.get_mut(&c.group).expect("admitted");
                let offsets = group.offsets.entry(o.topic.clone()).or_default();
                let metadata = o.metadata.clone();
                offsets.insert(
                    o.partition,
                    Committed {
                        offset: o.offset,
                        metadata,
                    },
                );
                code::NONE
            };
        }
        Ok(KafkaOffsetCommitOk { offsets: c.offsets })
    }

    /// Kafka's error for a commit to a group, if any; creates the group for a commit
    /// from outside (a Herald error beyond `max_groups`).
    fn admit_commit(
        &mut self,
        now: Time,
        config: &Config,
        c: &KafkaOffsetCommit,
    ) -> Result<Option<i16>, ErrorBody> {
        if !self.groups.contains_key(&c.group) {
            if c.generation >= 0 {
                return Ok(Some(code::ILLEGAL_GENERATION));
            }
            if self.groups.len() >= config.max_groups {
                return Err(too_many_groups(config));
            }
            self.groups.insert(c.group.clone(), Group::default());
        }
        let group = self.groups.get_mut(&c.group).expect("there or made");
        let mut sched = Sched {
            now,
            group: &c.group,
            timers: &mut self.timers,
        };
        Ok(group.refuse_commit(c, &mut sched))
    }

    /// OffsetFetch: the offsets asked for (−1 where none is committed), or every
    /// committed one. A group that does not exist has none (no error, as in Kafka).
    pub(super) fn fetch(&self, f: &KafkaOffsetFetch) -> KafkaOffsetFetchOk {
        let stored = self.groups.get(&f.group).map(|g| &g.offsets);
        let offsets = match &f.partitions {
            None => stored
                .into_iter()
                .flatten()
                .flat_map(|(t, ps)| ps.iter().map(move |(&p, c)| committed(t, p, Some(c))))
                .collect(),
            Some(asked) => asked
                .iter()
                .map(|(t, p)| committed(t, *p, stored.and_then(|s| s.get(t)?.get(p))))
                .collect(),
        };
        KafkaOffsetFetchOk {
            error_code: code::NONE,
            offsets,
        }
    }

    /// ListGroups: every group, by name.
    pub(super) fn list(&self) -> KafkaListGroupsOk {
        let groups = self.groups.iter().map(|(name, g)| KafkaGroupListing {
            group: name.clone(),
            protocol_type: g.protocol_type.clone(),
            state: g.state.name().to_owned(),
        });
        KafkaListGroupsOk {
            groups: groups.collect(),
        }
    }

    /// DescribeGroups: each group asked for; one that does not exist is `Dead` with
    /// GROUP_ID_NOT_FOUND (Kafka's DescribeGroups v6; older versions answer `Dead`
    /// without an error, which the listener can do by dropping the code).
    pub(super) fn describe(&self, d: &KafkaDescribeGroups) -> KafkaDescribeGroupsOk {
        let groups = d.groups.iter().map(|name| match self.groups.get(name) {
            Some(g) => g.describe(name),
            None => KafkaGroupDescription {
                error_code: code::GROUP_ID_NOT_FOUND,
                group: name.clone(),
                state: "Dead".to_owned(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            },
        });
        KafkaDescribeGroupsOk {
            groups: groups.collect(),
        }
    }

    /// Runs session and rebalance deadlines due by `now`; replies to parked joins and
    /// syncs that became due go to `completions`.
    pub(super) fn run_due(&mut self, now: Time, completions: &mut Vec<Completion>) {
        while let Some((_, deadline)) = self.timers.pop_due(now) {
            let name = match deadline {
                Deadline::Session(name, member) => {
                    self.session_due(now, &name, &member, completions);
                    name
                }
                Deadline::Rebalance(name) => {
                    self.rebalance_due(now, &name, completions);
                    name
                }
            };
            self.drop_if_idle(&name);
        }
    }

    /// A session ended: a pending member is forgotten; a member is removed unless
    /// its join or sync is parked (then the session starts again).
    fn session_due(&mut self, now: Time, name: &str, member: &str, out: &mut Vec<Completion>) {
        self.with_group(now, name, |group, sched| {
            if group.pending.remove(member).is_some() {
                group.try_complete(sched, out);
            } else if let Some(m) = group.members.get_mut(member) {
                if m.join.is_some() || m.sync.is_some() {
                    m.renew(member, sched);
                } else {
                    group.remove_member(member, sched, out);
                }
            }
        });
    }

    /// Runs `f` on group `name`, if it exists, with a scheduler for its timers.
    fn with_group(&mut self, now: Time, name: &str, f: impl FnOnce(&mut Group, &mut Sched<'_>)) {
        let Self { groups, timers, .. } = self;
        if let Some(group) = groups.get_mut(name) {
            let mut sched = Sched {
                now,
                group: name,
                timers,
            };
            f(group, &mut sched);
        }
    }

    /// A rebalance timed out: the barrier completes without the late members.
    fn rebalance_due(&mut self, now: Time, name: &str, out: &mut Vec<Completion>) {
        self.with_group(now, name, |group, sched| {
            group.rebalance_deadline = None;
            group.complete_join(sched, out);
        });
    }

    /// Deletes a group that holds nothing any more.
    fn drop_if_idle(&mut self, name: &str) {
        if self.groups.get(name).is_some_and(Group::is_idle) {
            self.groups.remove(name);
        }
    }

    /// When a session or rebalance deadline is next due.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// Forgets the committed offsets of a deleted topic (and groups left with
    /// nothing).
    pub(super) fn forget_topic(&mut self, topic: &str) {
        for group in self.groups.values_mut() {
            group.offsets.remove(topic);
        }
        self.groups.retain(|_, g| !g.is_idle());
    }

    /// Panics if an invariant is broken (tests only).
    pub(super) fn check_invariants(&self) {
        let mut timers = 0;
        for (name, group) in &self.groups {
            group.check_invariants(name, &self.timers);
            timers += group.members.len() + group.pending.len();
            timers += usize::from(group.rebalance_deadline.is_some());
        }
        assert_eq!(timers, self.timers.len(), "Kafka group timers leak");
    }
}

impl Group {
    /// The group as DescribeGroups shows it: metadata and assignments only when
    /// `Stable` (as Kafka does).
    fn describe(&self, name: &str) -> KafkaGroupDescription {
        let stable = self.state == State::Stable;
        let protocol = match (stable, &self.protocol_name) {
            (true, Some(name)) => name.as_str(),
            _ => "",
        };
        let members = self.join_order().into_iter().map(|id| {
            let m = &self.members[&id];
            KafkaMemberDescription {
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                metadata: m.metadata(protocol),
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
                member_id: id,
            }
        });
        KafkaGroupDescription {
            error_code: code::NONE,
            group: name.to_owned(),
            state: self.state.name().to_owned(),
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol.to_owned(),
            members: members.collect(),
        }
    }

    /// Panics if the group breaks an invariant; `timers` are the groups' timers.
    fn check_invariants(&self, name: &str, timers: &Timers<Deadline>) {
        assert!(!self.is_idle(), "group {name} holds nothing but is kept");
        for (id, m) in &self.members {
            assert!(timers.contains(m.session), "{name}/{id}: no session timer");
            assert!(
                !self.pending.contains_key(id),
                "{name}/{id}: member and pending"
            );
        }
        for (id, timer) in &self.pending {
            assert!(
                timers.contains(*timer),
                "{name}/{id}: pending without a timer"
            );
        }
        let preparing = self.state == State::PreparingRebalance;
        assert_eq!(
            self.rebalance_deadline.is_some(),
            preparing,
            "{name}: rebalance timer"
        );
        if let Some(timer) = self.rebalance_deadline {
            assert!(timers.contains(timer), "{name}: rebalance timer gone");
        }
        if let Some(leader) = &self.leader {
            assert!(
                self.members.contains_key(leader),
                "{name}: leader {leader} is gone"
            );
        }
        if let Some(first) = self.members.values().next() {
            let shared = first
                .protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)));
            assert!(shared, "{name}: members share no protocol");
        }
        self.check_state(name);
    }

    /// Panics if the state does not fit the members and their parked requests.
    fn check_state(&self, name: &str) {
        let joins = self.members.values().filter(|m| m.join.is_some()).count();
        let syncs = self.members.values().filter(|m| m.sync.is_some()).count();
        match self.state {
            State::Empty => {
                assert!(self.members.is_empty(), "{name}: Empty with members");
                assert!(self.leader.is_none() && self.protocol_name.is_none());
            }
            State::PreparingRebalance => {
                assert_eq!(syncs, 0, "{name}: syncs parked while preparing");
                let complete = joins == self.members.len() && self.pending.is_empty();
                assert!(!complete, "{name}: the barrier is complete but still held");
            }
            State::CompletingRebalance | State::Stable => {
                assert_eq!(joins, 0, "{name}: joins parked after the barrier");
                let leader = self.leader.as_ref().expect("a generation has a leader");
                assert!(
                    self.members[leader].sync.is_none(),
                    "{name}: leader sync parked"
                );
                let protocol = self
                    .protocol_name
                    .as_ref()
                    .expect("a generation has a protocol");
                assert!(self.members.values().all(|m| m.supports(protocol)));
                if self.state == State::Stable {
                    assert_eq!(syncs, 0, "{name}: syncs parked while stable");
                }
            }
        }
    }
}

impl Broker {
    /// Runs a Kafka group request. `Ok(None)`: parked (a join or sync waiting for the
    /// rebalance); its reply comes through the broker's completions.
    pub(super) fn handle_kafka_groups(
        &mut self,
        cx: &Ctx<'_>,
        client: &str,
        msg_id: Option<u64>,
        payload: Payload,
    ) -> Result<Option<Payload>, ErrorBody> {
        let (now, config) = (cx.now, cx.config);
        let (groups, out) = (&mut self.kafka_groups, &mut self.completions);
        Ok(Some(match payload {
            Payload::KafkaJoinGroup(j) => {
                let reply = groups.join(now, config, client, msg_id, j, out)?;
                return Ok(reply.map(Payload::KafkaJoinGroupOk));
            }
            Payload::KafkaSyncGroup(s) => {
                let reply = groups.sync(now, client, msg_id, s, out)?;
                return Ok(reply.map(Payload::KafkaSyncGroupOk));
            }
            Payload::KafkaHeartbeat(h) => Payload::KafkaHeartbeatOk(KafkaErrorCode {
                error_code: groups.heartbeat(now, &h),
            }),
            Payload::KafkaLeaveGroup(l) => Payload::KafkaLeaveGroupOk(KafkaErrorCode {
                error_code: groups.leave(now, &l, out),
            }),
            Payload::KafkaOffsetCommit(c) => {
                let topics = &self.topics;
                let ok = groups.commit(now, config, c, |t| topics.partition_count(t))?;
                Payload::KafkaOffsetCommitOk(ok)
            }
            Payload::KafkaOffsetFetch(f) => Payload::KafkaOffsetFetchOk(groups.fetch(&f)),
            Payload::KafkaListGroups => Payload::KafkaListGroupsOk(groups.list()),
            Payload::KafkaDescribeGroups(d) => Payload::KafkaDescribeGroupsOk(groups.describe(&d)),
            other => unreachable!("{:?} is not a Kafka group request", other.kind()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use bolero::TypeGenerator;

    /// Every test member's session timeout.
    const SESSION_MS: u64 = 100;
    /// The unit tests' rebalance timeout.
    const REBALANCE_MS: u64 = 200;

    /// Session timeouts from 10 ms.
    fn config() -> Config {
        Config {
            kafka_min_session_timeout_ms: 10,
            kafka_max_session_timeout_ms: 10_000,
            ..Config::default()
        }
    }

    /// Protocols by name, all with the same metadata.
    fn protocols(names: &[&str], metadata: &str) -> Vec<KafkaProtocol> {
        let protocol = |name: &&str| KafkaProtocol {
            name: (*name).to_owned(),
            metadata: Bytes::from(metadata.to_owned()),
        };
        names.iter().map(protocol).collect()
    }

    /// A join of group `g` (JoinGroup v4+ if `require_known`).
    fn join_req(member_id: &str, client_id: &str, protocols: Vec<KafkaProtocol>) -> KafkaJoinGroup {
        KafkaJoinGroup {
            group: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: client_id.into(),
            protocol_type: "consumer".into(),
            protocols,
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            require_known_member: false,
        }
    }

    /// Partitions of the test topics: `t` has 2.
    fn partition_count(topic: &str) -> Option<u32> {
        (topic == "t").then_some(2)
    }

    /// A commit to group `g` of (topic, partition, offset)s, metadata `m{offset}`.
    fn commit_req(
        member_id: &str,
        generation: i32,
        offsets: &[(&str, u32, i64)],
    ) -> KafkaOffsetCommit {
        let offset = |&(topic, partition, offset): &(&str, u32, i64)| KafkaCommittedOffset {
            topic: topic.into(),
            partition,
            offset,
            metadata: format!("m{offset}"),
            error_code: 0,
        };
        KafkaOffsetCommit {
            group: "g".into(),
            generation,
            member_id: member_id.into(),
            offsets: offsets.iter().map(offset).collect(),
        }
    }

    /// The groups, the time, and the replies to parked requests not looked at yet.
    struct Bench {
        groups: KafkaGroups,
        config: Config,
        now: Time,
        next_msg_id: u64,
        out: Vec<Completion>,
    }

    impl Bench {
        /// Nothing yet, at time 0.
        fn new() -> Bench {
            Bench {
                groups: KafkaGroups::default(),
                config: config(),
                now: Time::ZERO,
                next_msg_id: 0,
                out: Vec::new(),
            }
        }

        /// A new `msg_id`.
        fn msg_id(&mut self) -> u64 {
            self.next_msg_id += 1;
            self.next_msg_id
        }

        /// A join from `client`: its msg_id and its reply unless parked.
        fn join(&mut self, client: &str, j: KafkaJoinGroup) -> (u64, Option<KafkaJoinGroupOk>) {
            let id = self.msg_id();
            let (now, config) = (self.now, &self.config);
            let reply = self
                .groups
                .join(now, config, client, Some(id), j, &mut self.out);
            self.groups.check_invariants();
            (id, reply.expect("no Herald error"))
        }

        /// A sync from `client`: its msg_id and its reply unless parked.
        fn sync(
            &mut self,
            client: &str,
            member_id: &str,
            generation: i32,
            assignments: &[(&str, &str)],
        ) -> (u64, Option<KafkaSyncGroupOk>) {
            let id = self.msg_id();
            let assignment = |&(m, a): &(&str, &str)| KafkaAssignment {
                member_id: m.into(),
                assignment: Bytes::from(a.to_owned()),
            };
            let s = KafkaSyncGroup {
                group: "g".into(),
                generation,
                member_id: member_id.into(),
                assignments: assignments.iter().map(assignment).collect(),
            };
            let reply = self
                .groups
                .sync(self.now, client, Some(id), s, &mut self.out);
            self.groups.check_invariants();
            (id, reply.expect("no Herald error"))
        }

        /// A heartbeat's error code.
        fn heartbeat(&mut self, member_id: &str, generation: i32) -> i16 {
            let h = KafkaHeartbeat {
                group: "g".into(),
                generation,
                member_id: member_id.into(),
            };
            let code = self.groups.heartbeat(self.now, &h);
            self.groups.check_invariants();
            code
        }

        /// A member leaves: the error code.
        fn leave(&mut self, member_id: &str) -> i16 {
            let l = KafkaLeaveGroup {
                group: "g".into(),
                member_ids: vec![member_id.into()],
            };
            let code = self.groups.leave(self.now, &l, &mut self.out);
            self.groups.check_invariants();
            code
        }

        /// The error codes of a commit, in order.
        fn commit(&mut self, c: KafkaOffsetCommit) -> Vec<i16> {
            let (now, config) = (self.now, &self.config);
            let ok = self.groups.commit(now, config, c, partition_count).unwrap();
            self.groups.check_invariants();
            ok.offsets.iter().map(|o| o.error_code).collect()
        }

        /// Moves time on and runs what is due.
        fn advance(&mut self, ms: u64) {
            self.now = self.now.plus_millis(ms);
            self.groups.run_due(self.now, &mut self.out);
            self.groups.check_invariants();
        }

        /// The reply to parked request `msg_id`, which must have come.
        fn reply(&mut self, msg_id: u64) -> Payload {
            let i = self.out.iter().position(|c| c.msg_id == msg_id);
            let i = i.unwrap_or_else(|| panic!("no reply to {msg_id} in {:?}", self.out));
            self.out.remove(i).reply
        }

        /// The reply to parked join `msg_id`.
        fn join_reply(&mut self, msg_id: u64) -> KafkaJoinGroupOk {
            match self.reply(msg_id) {
                Payload::KafkaJoinGroupOk(r) => r,
                other => panic!("not a join reply: {other:?}"),
            }
        }

        /// The reply to parked sync `msg_id`.
        fn sync_reply(&mut self, msg_id: u64) -> KafkaSyncGroupOk {
            match self.reply(msg_id) {
                Payload::KafkaSyncGroupOk(r) => r,
                other => panic!("not a sync reply: {other:?}"),
            }
        }

        /// Group `g` as DescribeGroups shows it.
        fn describe(&self) -> KafkaGroupDescription {
            let d = KafkaDescribeGroups {
                groups: vec!["g".into()],
            };
            self.groups.describe(&d).groups.remove(0)
        }

        /// A joins alone (generation 1), B joins, A rejoins: generation 2 is out, at
        /// time 0. Returns (A, B).
        fn joined_pair(&mut self) -> (String, String) {
            let (ja, _) = self.join("ca", join_req("", "a", protocols(&["range"], "ma")));
            let a = self.join_reply(ja).member_id;
            let (jb, _) = self.join("cb", join_req("", "b", protocols(&["range"], "mb")));
            let (ja, _) = self.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
            let b = self.join_reply(jb).member_id;
            assert_eq!(self.join_reply(ja).generation, 2);
            (a, b)
        }

        /// [`Bench::joined_pair`], then both synced: A gets `pa`, B `pb`.
        fn stable_pair(&mut self) -> (String, String) {
            let (a, b) = self.joined_pair();
            let (sb, _) = self.sync("cb", &b, 2, &[]);
            self.sync("ca", &a, 2, &[(&a, "pa"), (&b, "pb")]);
            assert_eq!(self.sync_reply(sb).assignment, "pb");
            self.out.clear();
            (a, b)
        }
    }

    #[test]
    fn the_barrier_waits_for_every_member() {
        let mut b = Bench::new();
        let (ja, parked) = b.join("ca", join_req("", "a", protocols(&["range"], "ma")));
        assert!(parked.is_none());
        let ra = b.join_reply(ja); // alone: the barrier is complete at once
        let a = ra.member_id.clone();
        assert_eq!((ra.error_code, ra.generation, &ra.leader), (0, 1, &a));
        let (sa, _) = b.sync("ca", &a, 1, &[(&a, "p0")]);
        assert_eq!(b.sync_reply(sa).assignment, "p0");
        assert_eq!(b.describe().state, "Stable");

        let (jb, parked) = b.join("cb", join_req("", "b", protocols(&["range"], "mb")));
        assert!(
            parked.is_none() && b.out.is_empty(),
            "B waits for A to rejoin"
        );
        assert_eq!(b.describe().state, "PreparingRebalance");
        assert_eq!(b.heartbeat(&a, 1), code::REBALANCE_IN_PROGRESS);
        b.advance(50);
        assert!(b.out.is_empty());
        let (ja, _) = b.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
        let (ra, rb) = (b.join_reply(ja), b.join_reply(jb));
        let bid = rb.member_id.clone();
        assert_eq!((ra.generation, rb.generation), (2, 2));
        assert_eq!((&ra.leader, &rb.leader), (&a, &a), "the leader stays");
        assert_eq!(
            (ra.protocol_name.as_str(), rb.protocol_name.as_str()),
            ("range", "range")
        );
        let metadata: Vec<(&str, &[u8])> = ra
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), &m.metadata[..]))
            .collect();
        assert_eq!(metadata, [(a.as_str(), &b"ma"[..]), (bid.as_str(), b"mb")]);
        assert!(rb.members.is_empty(), "only the leader gets the members");
    }

    #[test]
    fn followers_syncs_wait_for_the_leaders() {
        let mut b = Bench::new();
        let (a, bid) = b.joined_pair();
        let (sb, parked) = b.sync("cb", &bid, 2, &[]);
        assert!(
            parked.is_none() && b.out.is_empty(),
            "B waits for the leader's sync"
        );
        assert_eq!(b.heartbeat(&bid, 2), code::NONE);
        let (sa, _) = b.sync("ca", &a, 2, &[(&a, "p0"), (&bid, "p1")]);
        assert_eq!(b.sync_reply(sb).assignment, "p1");
        let ok = b.sync_reply(sa);
        assert_eq!((ok.error_code, &ok.assignment[..]), (0, &b"p0"[..]));
        assert_eq!(
            (ok.protocol_type.as_str(), ok.protocol_name.as_str()),
            ("consumer", "range")
        );
        let d = b.describe();
        assert_eq!(
            (d.state.as_str(), d.protocol_name.as_str()),
            ("Stable", "range")
        );
        let shown: Vec<(&str, &[u8], &[u8])> = d
            .members
            .iter()
            .map(|m| (m.client_id.as_str(), &m.metadata[..], &m.assignment[..]))
            .collect();
        assert_eq!(shown, [("a", &b"ma"[..], &b"p0"[..]), ("b", b"mb", b"p1")]);
        // A late sync in a stable group gets its assignment at once.
        let (_, late) = b.sync("cb", &bid, 2, &[]);
        assert_eq!(late.unwrap().assignment, "p1");
    }

    #[test]
    fn member_id_required_hands_out_an_id_that_expires_unless_used() {
        let mut b = Bench::new();
        let v4 = |member_id: &str, client: &str| KafkaJoinGroup {
            require_known_member: true,
            ..join_req(member_id, client, protocols(&["range"], "m"))
        };
        let (_, reply) = b.join("ca", v4("", "a"));
        let reply = reply.expect("answered at once");
        assert_eq!(
            (reply.error_code, reply.generation),
            (code::MEMBER_ID_REQUIRED, -1)
        );
        let a = reply.member_id;
        assert_eq!(a, "a-0");
        assert_eq!(
            b.describe().state,
            "Empty",
            "a pending member is not a member"
        );
        let (ja, parked) = b.join("ca", v4(&a, "a"));
        assert!(parked.is_none());
        let ra = b.join_reply(ja);
        assert_eq!(
            (ra.error_code, ra.generation, &ra.member_id, &ra.leader),
            (0, 1, &a, &a)
        );

        // A second consumer gets an id, but never joins with it.
        let (_, reply) = b.join("cb", v4("", "b"));
        let pending = reply.unwrap().member_id;
        assert_eq!(
            b.describe().state,
            "CompletingRebalance",
            "no rebalance for a pending id"
        );
        b.advance(SESSION_MS - 1);
        assert_eq!(b.heartbeat(&a, 1), code::NONE);
        b.advance(1); // the pending id's session ends
        let (_, reply) = b.join("cb", v4(&pending, "b"));
        assert_eq!(reply.unwrap().error_code, code::UNKNOWN_MEMBER_ID);
        let (_, reply) = b.join("cb", v4("b-99", "b"));
        assert_eq!(reply.unwrap().error_code, code::UNKNOWN_MEMBER_ID);
        // A pending id that no group remembers goes with its group.
        let mut b = Bench::new();
        b.join("ca", v4("", "a"));
        b.advance(SESSION_MS);
        assert_eq!(b.describe().state, "Dead");
        assert!(b.groups.next_deadline().is_none());
    }

    #[test]
    fn a_session_that_ends_starts_a_rebalance() {
        let mut b = Bench::new();
        let (a, bid) = b.stable_pair();
        b.advance(60);
        assert_eq!(b.heartbeat(&a, 2), code::NONE);
        b.advance(60); // B's session (renewed at 0) ended at 100
        assert_eq!(b.describe().state, "PreparingRebalance");
        assert_eq!(b.heartbeat(&a, 2), code::REBALANCE_IN_PROGRESS);
        assert_eq!(b.heartbeat(&bid, 2), code::UNKNOWN_MEMBER_ID);
        // (As in Kafka, a member may commit before it rejoins.)
        assert_eq!(b.commit(commit_req(&a, 2, &[("t", 0, 1)])), [code::NONE]);
        let (ja, _) = b.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
        let ra = b.join_reply(ja);
        assert_eq!((ra.generation, ra.members.len()), (3, 1));
    }

    #[test]
    fn the_rebalance_timeout_removes_members_that_did_not_rejoin() {
        let mut b = Bench::new();
        let (a, bid) = b.stable_pair();
        // The leader rejoins: a rebalance. B keeps heartbeating but never rejoins; A's
        // session outlives its timeout while its join is parked.
        let (ja, parked) = b.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
        assert!(parked.is_none());
        for _ in 0..2 {
            b.advance(80);
            assert_eq!(b.heartbeat(&bid, 2), code::REBALANCE_IN_PROGRESS);
        }
        assert!(b.out.is_empty());
        b.advance(REBALANCE_MS - 160);
        let ra = b.join_reply(ja);
        assert_eq!((ra.error_code, ra.generation, &ra.leader), (0, 3, &a));
        let listed: Vec<&str> = ra.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(listed, [a.as_str()]);
        assert_eq!(b.heartbeat(&bid, 2), code::UNKNOWN_MEMBER_ID);
        let (_, reply) = b.sync("cb", &bid, 3, &[]);
        assert_eq!(reply.unwrap().error_code, code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_joiner_after_the_last_member_left_mid_rebalance_leads() {
        let mut b = Bench::new();
        let v4 = |member_id: &str, client: &str| KafkaJoinGroup {
            require_known_member: true,
            ..join_req(member_id, client, protocols(&["range"], "m"))
        };
        let (ja, _) = b.join("ca", join_req("", "a", protocols(&["range"], "m")));
        let a = b.join_reply(ja).member_id;
        b.sync("ca", &a, 1, &[(&a, "all")]);
        let (_, reply) = b.join("cc", v4("", "c"));
        let c = reply.unwrap().member_id;
        // The leader rejoins; the barrier also waits for the pending member.
        let (ja, _) = b.join("ca", join_req(&a, "a", protocols(&["range"], "m")));
        assert_eq!(b.leave(&a), code::NONE);
        assert_eq!(b.join_reply(ja).error_code, code::UNKNOWN_MEMBER_ID);
        let d = b.describe();
        assert_eq!(
            (d.state.as_str(), d.members.len()),
            ("PreparingRebalance", 0)
        );
        let (jc, _) = b.join("cc", v4(&c, "c"));
        let rc = b.join_reply(jc);
        assert_eq!((rc.error_code, rc.generation, &rc.leader), (0, 2, &c));
        assert_eq!(
            rc.members.len(),
            1,
            "the new leader gets the members to assign"
        );
        let (sc, _) = b.sync("cc", &c, 2, &[(&c, "all")]);
        assert_eq!(b.sync_reply(sc).assignment, "all");

        // The last member leaves before syncing: the group goes; a new one starts.
        assert_eq!(b.leave(&c), code::NONE);
        assert_eq!(b.describe().state, "Dead");
        let (jd, _) = b.join("cd", join_req("", "d", protocols(&["range"], "m")));
        let rd = b.join_reply(jd);
        assert_eq!(
            (rd.generation, &rd.leader, rd.members.len()),
            (1, &rd.member_id, 1)
        );
        assert_eq!(b.leave("nobody"), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn offsets_commit_from_outside_a_group_and_read_back() {
        let mut b = Bench::new();
        let codes = b.commit(commit_req("", -1, &[("t", 0, 5), ("t", 2, 1), ("u", 0, 1)]));
        let unknown = code::UNKNOWN_TOPIC_OR_PARTITION;
        assert_eq!(codes, [code::NONE, unknown, unknown]);
        let fetch = |b: &Bench, partitions: Option<Vec<(String, u32)>>| {
            let f = KafkaOffsetFetch {
                group: "g".into(),
                partitions,
            };
            let ok = b.groups.fetch(&f);
            assert_eq!(ok.error_code, code::NONE);
            let offsets = ok.offsets.into_iter();
            offsets
                .map(|o| (o.partition, o.offset, o.metadata))
                .collect::<Vec<_>>()
        };
        assert_eq!(fetch(&b, None), [(0, 5, "m5".to_owned())]);
        let asked = Some(vec![("t".to_owned(), 0), ("t".to_owned(), 1)]);
        assert_eq!(
            fetch(&b, asked.clone()),
            [(0, 5, "m5".into()), (1, -1, String::new())]
        );
        b.commit(commit_req("", -1, &[("t", 0, 7)]));
        assert_eq!(fetch(&b, None), [(0, 7, "m7".to_owned())]);
        let listed = b.groups.list().groups;
        assert_eq!((listed.len(), listed[0].state.as_str()), (1, "Empty"));
        assert_eq!(listed[0].protocol_type, "");

        // A member's group takes outside commits no more.
        let (ja, _) = b.join("ca", join_req("", "a", protocols(&["range"], "m")));
        let a = b.join_reply(ja).member_id;
        assert_eq!(
            b.commit(commit_req("", -1, &[("t", 1, 1)])),
            [code::UNKNOWN_MEMBER_ID]
        );
        assert_eq!(
            b.commit(commit_req(&a, 1, &[("t", 1, 3)])),
            [code::REBALANCE_IN_PROGRESS]
        );
        b.sync("ca", &a, 1, &[]);
        assert_eq!(b.commit(commit_req(&a, 1, &[("t", 1, 3)])), [code::NONE]);
        assert_eq!(
            fetch(&b, asked.clone()),
            [(0, 7, "m7".into()), (1, 3, "m3".into())]
        );
    }

    #[test]
    fn offsets_outlive_members_not_their_topic() {
        let mut b = Bench::new();
        let (ja, _) = b.join("ca", join_req("", "a", protocols(&["range"], "m")));
        let a = b.join_reply(ja).member_id;
        b.sync("ca", &a, 1, &[]);
        assert_eq!(b.commit(commit_req(&a, 1, &[("t", 1, 3)])), [code::NONE]);
        assert_eq!(b.leave(&a), code::NONE);
        assert_eq!(b.describe().state, "Empty");
        let f = KafkaOffsetFetch {
            group: "g".into(),
            partitions: None,
        };
        assert_eq!(b.groups.fetch(&f).offsets[0].offset, 3);
        b.groups.forget_topic("t");
        b.groups.check_invariants();
        assert_eq!(b.describe().state, "Dead");
        assert!(b.groups.fetch(&f).offsets.is_empty());

        // Nothing is created by a refused commit.
        let unknown = code::UNKNOWN_TOPIC_OR_PARTITION;
        assert_eq!(
            b.commit(commit_req("x", 3, &[("t", 0, 1)])),
            [code::ILLEGAL_GENERATION]
        );
        assert_eq!(b.commit(commit_req("", -1, &[("u", 0, 1)])), [unknown]);
        assert!(b.groups.list().groups.is_empty());
    }

    #[test]
    fn stale_generations_and_unknown_members_are_refused() {
        let mut b = Bench::new();
        let (a, _) = b.stable_pair();
        assert_eq!(b.heartbeat(&a, 1), code::ILLEGAL_GENERATION);
        assert_eq!(b.heartbeat("a-77", 2), code::UNKNOWN_MEMBER_ID);
        let (_, reply) = b.sync("ca", &a, 1, &[]);
        assert_eq!(reply.unwrap().error_code, code::ILLEGAL_GENERATION);
        let (_, reply) = b.sync("ca", "a-77", 2, &[]);
        assert_eq!(reply.unwrap().error_code, code::UNKNOWN_MEMBER_ID);
        assert_eq!(
            b.commit(commit_req(&a, 1, &[("t", 0, 1)])),
            [code::ILLEGAL_GENERATION]
        );
        assert_eq!(
            b.commit(commit_req("a-77", 2, &[("t", 0, 1)])),
            [code::UNKNOWN_MEMBER_ID]
        );
        assert_eq!(b.commit(commit_req(&a, 2, &[("t", 0, 1)])), [code::NONE]);
        let (_, reply) = b.join("ca", join_req("a-77", "a", protocols(&["range"], "m")));
        assert_eq!(reply.unwrap().error_code, code::UNKNOWN_MEMBER_ID);
        let other = KafkaHeartbeat {
            group: "other".into(),
            generation: 2,
            member_id: a.clone(),
        };
        assert_eq!(b.groups.heartbeat(b.now, &other), code::UNKNOWN_MEMBER_ID);
        let d = KafkaDescribeGroups {
            groups: vec!["other".into()],
        };
        let dead = &b.groups.describe(&d).groups[0];
        assert_eq!(
            (dead.state.as_str(), dead.error_code),
            ("Dead", code::GROUP_ID_NOT_FOUND)
        );
    }

    #[test]
    fn joins_are_checked_against_the_limits_and_the_group() {
        let mut b = Bench::new();
        b.config.max_groups = 1;
        b.config.max_group_members = 2;
        let bad_session = KafkaJoinGroup {
            session_timeout_ms: 5,
            ..join_req("", "a", protocols(&["range"], "m"))
        };
        let (_, reply) = b.join("ca", bad_session);
        assert_eq!(reply.unwrap().error_code, code::INVALID_SESSION_TIMEOUT);
        let (_, reply) = b.join("ca", join_req("", "a", Vec::new()));
        assert_eq!(reply.unwrap().error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        b.join("ca", join_req("", "a", protocols(&["range", "rr"], "m")));
        let (_, reply) = b.join("cb", join_req("", "b", protocols(&["sticky"], "m")));
        assert_eq!(reply.unwrap().error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        let other_type = KafkaJoinGroup {
            protocol_type: "connect".into(),
            ..join_req("", "b", protocols(&["range"], "m"))
        };
        let (_, reply) = b.join("cb", other_type);
        assert_eq!(reply.unwrap().error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        b.join("cb", join_req("", "b", protocols(&["rr"], "m")));
        let (_, reply) = b.join("cc", join_req("", "c", protocols(&["rr"], "m")));
        assert_eq!(reply.unwrap().error_code, code::GROUP_MAX_SIZE_REACHED);
        let elsewhere = KafkaJoinGroup {
            group: "h".into(),
            ..join_req("", "c", protocols(&["rr"], "m"))
        };
        let (now, config) = (b.now, &b.config);
        let refused = b
            .groups
            .join(now, config, "cc", Some(99), elsewhere.clone(), &mut b.out);
        assert!(refused.unwrap_err().is(ErrorCode::TemporarilyUnavailable));
        let no_msg_id = b
            .groups
            .join(now, config, "cc", None, elsewhere, &mut b.out);
        assert!(no_msg_id.unwrap_err().is(ErrorCode::MalformedRequest));
        b.groups.check_invariants();
    }

    /// Forms a group whose members join one by one with these protocols (each new
    /// member's barrier waits for the earlier ones to rejoin); the last join replies.
    fn form(b: &mut Bench, lists: &[&[&str]]) -> Vec<KafkaJoinGroupOk> {
        let mut ids: Vec<String> = Vec::new();
        let mut replies = Vec::new();
        for (i, list) in lists.iter().enumerate() {
            let client = format!("c{i}");
            let mut parked = vec![
                b.join(&client, join_req("", &client, protocols(list, "m")))
                    .0,
            ];
            for (id, list) in ids.iter().zip(lists) {
                parked.push(b.join("old", join_req(id, "old", protocols(list, "m"))).0);
            }
            replies = parked.into_iter().map(|m| b.join_reply(m)).collect();
            ids.push(replies[0].member_id.clone());
        }
        replies
    }

    #[test]
    fn the_protocol_is_the_most_voted_of_those_every_member_can_use() {
        let chosen = |lists: &[&[&str]]| {
            let replies = form(&mut Bench::new(), lists);
            replies[0].protocol_name.clone()
        };
        assert_eq!(
            chosen(&[&["rr", "range"], &["range", "rr"], &["range"]]),
            "range"
        );
        assert_eq!(
            chosen(&[&["rr", "range"], &["range", "rr"], &["rr", "range"]]),
            "rr"
        );
        assert_eq!(
            chosen(&[&["rr", "range"], &["range", "rr"]]),
            "rr",
            "a tie: the first"
        );
        assert_eq!(chosen(&[&["range", "rr"], &["rr", "range"]]), "range");
    }

    #[test]
    fn a_follower_rejoining_a_stable_group_unchanged_gets_the_current_generation() {
        let mut b = Bench::new();
        let (a, bid) = b.stable_pair();
        let (_, reply) = b.join("cb", join_req(&bid, "b", protocols(&["range"], "mb")));
        let reply = reply.expect("answered at once");
        assert_eq!(
            (reply.generation, &reply.leader, reply.members.len()),
            (2, &a, 0)
        );
        assert_eq!(b.describe().state, "Stable");
        // Changed metadata rebalances.
        let (jb, reply) = b.join("cb", join_req(&bid, "b", protocols(&["range"], "new")));
        assert!(reply.is_none());
        assert_eq!(b.describe().state, "PreparingRebalance");
        // A retried join replaces the parked one, which is told to rejoin.
        let (jb2, _) = b.join("cb", join_req(&bid, "b", protocols(&["range"], "new")));
        assert_eq!(b.join_reply(jb).error_code, code::REBALANCE_IN_PROGRESS);
        let (ja, _) = b.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
        let (ra, rb) = (b.join_reply(ja), b.join_reply(jb2));
        assert_eq!((ra.generation, rb.generation), (3, 3));
        assert_eq!(&ra.members[1].metadata[..], b"new");
        // A rejoin while the leader's sync is awaited, unchanged: the same generation.
        let (_, again) = b.join("ca", join_req(&a, "a", protocols(&["range"], "ma")));
        let again = again.expect("answered at once");
        assert_eq!((again.generation, again.members.len()), (3, 2));
        // A join then aborts the syncs waiting for the leader.
        let (sb, _) = b.sync("cb", &bid, 3, &[]);
        b.join("cn", join_req("", "n", protocols(&["range"], "mn")));
        assert_eq!(b.sync_reply(sb).error_code, code::REBALANCE_IN_PROGRESS);
    }

    #[test]
    fn groups_run_through_the_broker() {
        let config = config();
        let mut broker = Broker::new(&config);
        broker.topics.create(&config, "t", 2).unwrap();
        let mut rng = crate::Rng::new(1);
        let mut cx = Ctx {
            now: Time::ZERO,
            config: &config,
            rng: &mut rng,
        };
        let commit = Payload::KafkaOffsetCommit(commit_req("", -1, &[("t", 1, 4), ("t", 2, 4)]));
        let reply = broker.handle(&cx, "c", Some(1), commit).unwrap();
        let Some(Payload::KafkaOffsetCommitOk(ok)) = reply else {
            panic!("{reply:?}")
        };
        let codes: Vec<i16> = ok.offsets.iter().map(|o| o.error_code).collect();
        assert_eq!(codes, [code::NONE, code::UNKNOWN_TOPIC_OR_PARTITION]);
        let join = Payload::KafkaJoinGroup(join_req("", "a", protocols(&["range"], "m")));
        let refused = broker.handle(&cx, "c", None, join.clone()).unwrap_err();
        assert!(refused.is(ErrorCode::MalformedRequest));
        assert_eq!(broker.handle(&cx, "c", Some(2), join).unwrap(), None);
        let done = broker.take_completions();
        assert_eq!((done.len(), done[0].msg_id), (1, 2));
        assert_eq!(broker.next_deadline(), Some(Time::from_millis(SESSION_MS)));
        cx.now = Time::from_millis(SESSION_MS);
        broker.run_due(cx.now);
        broker.check_invariants();
        let describe = Payload::KafkaDescribeGroups(KafkaDescribeGroups {
            groups: vec!["g".into()],
        });
        let reply = broker.handle(&cx, "c", Some(3), describe).unwrap();
        let Some(Payload::KafkaDescribeGroupsOk(d)) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            (d.groups[0].state.as_str(), d.groups[0].members.len()),
            ("Empty", 0)
        );
        let json = serde_json::to_string(&broker).unwrap();
        let back: Broker = serde_json::from_str(&json).unwrap();
        assert_eq!(
            format!("{:?}", back.kafka_groups),
            format!("{:?}", broker.kafka_groups)
        );
    }

    /// A step of the property test.
    #[derive(Clone, Copy, Debug, TypeGenerator)]
    enum Op {
        Join {
            client: u8,
            fresh: bool,
            require_known: bool,
            protocols: u8,
            changed: bool,
        },
        Sync {
            client: u8,
            stale: bool,
            assign: bool,
        },
        Heartbeat {
            client: u8,
            stale: bool,
        },
        Leave(u8),
        Commit {
            client: u8,
            outside: bool,
            partition: u8,
            offset: u8,
        },
        AdvanceMs(u8),
    }

    /// Consumers in the property test.
    const CLIENTS: usize = 3;

    /// What a consumer knows of its membership, from the replies it got.
    #[derive(Clone, Debug, Default)]
    struct View {
        member_id: String,
        generation: i32,
        /// The members to assign to, if it leads its generation.
        roster: Vec<String>,
    }

    /// A parked request: which client, and for a sync the member and generation.
    #[derive(Clone, Debug)]
    enum Waiting {
        Join(usize),
        Sync(usize, String, i32),
    }

    /// Consumers driving one group, and what their replies must agree on.
    struct Model {
        bench: Bench,
        views: [View; CLIENTS],
        waiting: BTreeMap<u64, Waiting>,
        /// Generation → (leader, protocol), as the first reply of it said.
        generations: BTreeMap<i32, (String, String)>,
        /// Generation → the members its leader was told of.
        rosters: BTreeMap<i32, Vec<String>>,
        /// Generation → the members told they are in it.
        joined: BTreeMap<i32, BTreeSet<String>>,
        /// The newest generation handed out (0: none since the group was made).
        latest: i32,
        /// Partition of `t` → committed offset.
        committed: BTreeMap<u32, i64>,
    }

    /// Consumer `c`'s client name (and client id).
    fn client_name(c: usize) -> String {
        format!("c{c}")
    }

    impl Model {
        /// No group, no consumer in one.
        fn new() -> Model {
            Model {
                bench: Bench::new(),
                views: Default::default(),
                waiting: BTreeMap::new(),
                generations: BTreeMap::new(),
                rosters: BTreeMap::new(),
                joined: BTreeMap::new(),
                latest: 0,
                committed: BTreeMap::new(),
            }
        }

        /// Runs one op and checks the replies it brought.
        fn run(&mut self, op: Op) {
            match op {
                Op::Join {
                    client,
                    fresh,
                    require_known,
                    protocols: list,
                    changed,
                } => self.join(
                    usize::from(client) % CLIENTS,
                    fresh,
                    require_known,
                    list,
                    changed,
                ),
                Op::Sync {
                    client,
                    stale,
                    assign,
                } => self.sync(usize::from(client) % CLIENTS, stale, assign),
                Op::Heartbeat { client, stale } => {
                    let view = &self.views[usize::from(client) % CLIENTS];
                    let generation = view.generation - i32::from(stale);
                    let current = self.generation();
                    let got = self.bench.heartbeat(&view.member_id.clone(), generation);
                    if got == code::NONE {
                        assert_eq!(
                            Some(generation),
                            current,
                            "a heartbeat of an old generation"
                        );
                    }
                }
                Op::Leave(client) => self.leave(usize::from(client) % CLIENTS),
                Op::Commit {
                    client,
                    outside,
                    partition,
                    offset,
                } => self.commit(usize::from(client) % CLIENTS, outside, partition, offset),
                Op::AdvanceMs(ms) => self.bench.advance(u64::from(ms % 120)),
            }
            self.settle();
        }

        /// The group's generation now. It can be past `latest`: a rebalance that ends
        /// with no member left makes a generation no reply names (as Kafka does).
        fn generation(&self) -> Option<i32> {
            self.bench.groups.groups.get("g").map(|g| g.generation)
        }

        /// Consumer `c` joins (with a new id if `fresh`), with one of four protocol lists.
        fn join(&mut self, c: usize, fresh: bool, require_known: bool, list: u8, changed: bool) {
            let names: &[&str] = match list % 4 {
                0 => &["range"],
                1 => &["range", "rr"],
                2 => &["rr", "range"],
                _ => &["rr"],
            };
            let metadata = if changed {
                "x".to_owned()
            } else {
                client_name(c)
            };
            let member_id = if fresh { "" } else { &self.views[c].member_id };
            let j = KafkaJoinGroup {
                require_known_member: require_known,
                rebalance_timeout_ms: 100 + 50 * c as u64,
                ..join_req(member_id, &client_name(c), protocols(names, &metadata))
            };
            match self.bench.join(&client_name(c), j) {
                (_, Some(reply)) => self.on_join(c, reply),
                (msg_id, None) => {
                    self.waiting.insert(msg_id, Waiting::Join(c));
                }
            }
        }

        /// Consumer `c` syncs; as the leader, it assigns `{generation}:{member}` to
        /// each member if `assign`.
        fn sync(&mut self, c: usize, stale: bool, assign: bool) {
            let view = self.views[c].clone();
            let generation = view.generation - i32::from(stale);
            let assignments: Vec<(String, String)> = match assign {
                true => view
                    .roster
                    .iter()
                    .map(|m| (m.clone(), format!("{generation}:{m}")))
                    .collect(),
                false => Vec::new(),
            };
            let pairs: Vec<(&str, &str)> = assignments
                .iter()
                .map(|(m, a)| (m.as_str(), a.as_str()))
                .collect();
            let member = view.member_id.clone();
            match self
                .bench
                .sync(&client_name(c), &member, generation, &pairs)
            {
                (_, Some(reply)) => self.on_sync(c, &member, generation, reply),
                (msg_id, None) => {
                    let waiting = Waiting::Sync(c, member, generation);
                    self.waiting.insert(msg_id, waiting);
                }
            }
        }

        /// Consumer `c` leaves; gone, it is unknown.
        fn leave(&mut self, c: usize) {
            let member = self.views[c].member_id.clone();
            if self.bench.leave(&member) == code::NONE {
                assert_eq!(
                    self.bench.heartbeat(&member, self.views[c].generation),
                    code::UNKNOWN_MEMBER_ID
                );
                self.views[c] = View::default();
            }
        }

        /// Consumer `c` commits one offset (partition 2 of `t` does not exist).
        fn commit(&mut self, c: usize, outside: bool, partition: u8, offset: u8) {
            let (member, generation) = match outside {
                true => (String::new(), -1),
                false => (self.views[c].member_id.clone(), self.views[c].generation),
            };
            let partition = u32::from(partition % 3);
            let offset = i64::from(offset);
            let state = self.bench.groups.groups.get("g").map(|g| g.state);
            let current = self.generation();
            let got =
                self.bench
                    .commit(commit_req(&member, generation, &[("t", partition, offset)]));
            if partition == 2 {
                assert_eq!(got, [code::UNKNOWN_TOPIC_OR_PARTITION]);
            } else if outside {
                let open = matches!(state, None | Some(State::Empty));
                let want = if open {
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                };
                assert_eq!(got, [want], "an outside commit to a group in {state:?}");
            } else if got == [code::NONE] {
                assert_eq!(Some(generation), current, "a commit of an old generation");
            }
            if got == [code::NONE] {
                self.committed.insert(partition, offset);
            }
        }

        /// Checks a join reply against the others and updates the client's view.
        fn on_join(&mut self, c: usize, r: KafkaJoinGroupOk) {
            match r.error_code {
                code::NONE => {
                    let g = r.generation;
                    assert_eq!(g, self.latest, "a join reply of another generation");
                    let said = (r.leader.clone(), r.protocol_name.clone());
                    assert_eq!(*self.generations.entry(g).or_insert(said.clone()), said);
                    let roster: Vec<String> =
                        r.members.iter().map(|m| m.member_id.clone()).collect();
                    if r.leader == r.member_id {
                        assert!(roster.contains(&r.member_id), "the leader is a member");
                        assert_eq!(*self.rosters.entry(g).or_insert(roster.clone()), roster);
                    } else {
                        assert!(roster.is_empty(), "members go to the leader only");
                    }
                    self.joined
                        .entry(g)
                        .or_default()
                        .insert(r.member_id.clone());
                    self.views[c] = View {
                        member_id: r.member_id,
                        generation: g,
                        roster,
                    };
                }
                code::MEMBER_ID_REQUIRED => self.views[c].member_id = r.member_id,
                code::UNKNOWN_MEMBER_ID => self.views[c].member_id.clear(),
                code::REBALANCE_IN_PROGRESS | code::INCONSISTENT_GROUP_PROTOCOL => {}
                other => panic!("join answered {other}"),
            }
        }

        /// Checks a sync reply: only the current generation, only the member's own
        /// assignment.
        fn on_sync(&mut self, c: usize, member: &str, generation: i32, r: KafkaSyncGroupOk) {
            match r.error_code {
                code::NONE => {
                    assert_eq!(generation, self.latest, "a sync of an old generation");
                    assert_eq!(r.protocol_name, self.generations[&generation].1);
                    if !r.assignment.is_empty() {
                        assert_eq!(r.assignment, format!("{generation}:{member}"));
                    }
                }
                code::UNKNOWN_MEMBER_ID if self.views[c].member_id == member => {
                    self.views[c].member_id.clear();
                }
                code::UNKNOWN_MEMBER_ID
                | code::ILLEGAL_GENERATION
                | code::REBALANCE_IN_PROGRESS => {}
                other => panic!("sync answered {other}"),
            }
        }

        /// Takes the replies to parked requests: each answers one parked request once,
        /// and the joins a barrier answers are of one new generation.
        fn settle(&mut self) {
            let mut barrier = false;
            for done in std::mem::take(&mut self.bench.out) {
                let waiting = self
                    .waiting
                    .remove(&done.msg_id)
                    .expect("a parked request, answered once");
                match (waiting, done.reply) {
                    (Waiting::Join(c), Payload::KafkaJoinGroupOk(r)) => {
                        assert_eq!(done.client, client_name(c));
                        if r.error_code == code::NONE && !barrier {
                            assert!(
                                r.generation > self.latest,
                                "a barrier makes a new generation"
                            );
                            self.latest = r.generation;
                            barrier = true;
                        }
                        self.on_join(c, r);
                    }
                    (Waiting::Sync(c, member, generation), Payload::KafkaSyncGroupOk(r)) => {
                        assert_eq!(done.client, client_name(c));
                        self.on_sync(c, &member, generation, r);
                    }
                    (waiting, reply) => panic!("{waiting:?} answered {reply:?}"),
                }
            }
            self.check();
        }

        /// Checks what holds after every step.
        fn check(&mut self) {
            self.bench.groups.check_invariants();
            for (g, members) in &self.joined {
                if let Some(roster) = self.rosters.get(g) {
                    assert!(
                        members.iter().all(|m| roster.contains(m)),
                        "{members:?} not in {roster:?}"
                    );
                }
            }
            let f = KafkaOffsetFetch {
                group: "g".into(),
                partitions: None,
            };
            let offsets = self.bench.groups.fetch(&f).offsets;
            let read: BTreeMap<u32, i64> =
                offsets.iter().map(|o| (o.partition, o.offset)).collect();
            assert_eq!(read, self.committed, "committed offsets read back");
            if !self.bench.groups.groups.contains_key("g") {
                // A new group starts its generations again (member ids stay unique).
                self.generations.clear();
                self.rosters.clear();
                self.joined.clear();
                self.latest = 0;
            }
        }
    }

    #[test]
    fn groups_keep_their_promises_under_random_ops() {
        bolero::check!().with_type::<Vec<Op>>().for_each(|ops| {
            let mut model = Model::new();
            for &op in ops {
                model.run(op);
            }
            // Left alone, every session ends, and every parked request is answered.
            for _ in 0..5 {
                model.run(Op::AdvanceMs(119));
                model.bench.advance(10_000);
                model.settle();
            }
            assert!(model.waiting.is_empty(), "unanswered: {:?}", model.waiting);
            assert_eq!(model.bench.groups.timers.len(), 0);
        });
    }

    /// Found by the property test: after the group's sessions all expire, a
    /// rebalance that ends with no member left makes a generation no reply names; a
    /// member that joins the next rebalance may commit in it (as in Kafka).
    #[test]
    fn a_commit_in_a_generation_no_reply_named_is_accepted() {
        let ops = [
            Op::Join {
                client: 252,
                fresh: true,
                require_known: false,
                protocols: 224,
                changed: true,
            },
            Op::Join {
                client: 231,
                fresh: false,
                require_known: false,
                protocols: 166,
                changed: false,
            },
            Op::Commit {
                client: 140,
                outside: true,
                partition: 191,
                offset: 68,
            },
            Op::Commit {
                client: 23,
                outside: false,
                partition: 122,
                offset: 6,
            },
            Op::AdvanceMs(15),
            Op::Leave(59),
            Op::Commit {
                client: 221,
                outside: true,
                partition: 57,
                offset: 79,
            },
            Op::AdvanceMs(99),
            Op::Commit {
                client: 96,
                outside: true,
                partition: 67,
                offset: 153,
            },
            Op::Sync {
                client: 13,
                stale: false,
                assign: false,
            },
            Op::Sync {
                client: 160,
                stale: true,
                assign: true,
            },
            Op::AdvanceMs(195),
            Op::Leave(145),
            Op::Join {
                client: 43,
                fresh: false,
                require_known: false,
                protocols: 157,
                changed: false,
            },
            Op::Leave(22),
            Op::Heartbeat {
                client: 123,
                stale: false,
            },
            Op::Join {
                client: 127,
                fresh: false,
                require_known: true,
                protocols: 6,
                changed: true,
            },
            Op::AdvanceMs(222),
            Op::Heartbeat {
                client: 31,
                stale: false,
            },
            Op::Sync {
                client: 103,
                stale: true,
                assign: false,
            },
            Op::AdvanceMs(4),
            Op::Heartbeat {
                client: 100,
                stale: false,
            },
            Op::Join {
                client: 94,
                fresh: false,
                require_known: true,
                protocols: 199,
                changed: false,
            },
            Op::Sync {
                client: 111,
                stale: false,
                assign: false,
            },
            Op::Sync {
                client: 238,
                stale: false,
                assign: true,
            },
            Op::AdvanceMs(140),
            Op::Join {
                client: 161,
                fresh: false,
                require_known: false,
                protocols: 14,
                changed: true,
            },
            Op::Commit {
                client: 23,
                outside: false,
                partition: 145,
                offset: 1,
            },
            Op::Commit {
                client: 226,
                outside: false,
                partition: 146,
                offset: 97,
            },
            Op::Leave(212),
            Op::Heartbeat {
                client: 120,
                stale: false,
            },
            Op::Join {
                client: 108,
                fresh: false,
                require_known: true,
                protocols: 110,
                changed: false,
            },
            Op::Leave(209),
            Op::Join {
                client: 27,
                fresh: false,
                require_known: false,
                protocols: 217,
                changed: false,
            },
            Op::AdvanceMs(134),
            Op::Join {
                client: 51,
                fresh: true,
                require_known: false,
                protocols: 85,
                changed: true,
            },
            Op::AdvanceMs(2),
            Op::Leave(143),
            Op::Commit {
                client: 81,
                outside: false,
                partition: 0,
                offset: 0,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
            Op::Join {
                client: 0,
                fresh: true,
                require_known: true,
                protocols: 0,
                changed: true,
            },
        ];
        let mut model = Model::new();
        for op in ops {
            model.run(op);
        }
        assert_eq!(model.latest, 1);
        assert_eq!(model.generation(), Some(2));
        assert_eq!(
            model.committed.get(&0),
            Some(&0),
            "the last commit was accepted"
        );
    }
}
