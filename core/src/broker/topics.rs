//! Topics with partitions, and consumer groups (Kafka-style).
//!
//! A keyed publish goes to partition `fnv1a(key) % partitions`, so one key stays in one
//! partition, in order. A group consumes one topic. Its members share the partitions:
//! partition `p` belongs to the `p % n`-th member in name order, members beyond the
//! partition count sit idle. Any change of membership (join, leave, a session timing
//! out) starts a new generation; `fetch` and `commit` must quote the current one, so a
//! consumer that missed a rebalance cannot read or commit a partition it lost. A new
//! owner reads from the group's committed offset.

use std::collections::BTreeMap;

use crate::wire::Json;

use super::producers::Idempotence;
use super::Broker;
use crate::broker::logs::PartitionLog;
use crate::runtime::Ctx;
use crate::runtime::{TimerId, Timers};
use crate::wire::msg::{Assignment, ErrorBody, ErrorCode, Fetched};
use crate::wire::msg::{FetchOk, Payload, Publish, PublishOk, TopicList};
use crate::{Config, Time};

/// FNV-1a, 64-bit: a stable hash (the same on every node and every run).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Topic {
    partitions: Vec<PartitionLog>,
    next_round_robin: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Member {
    session: TimerId,
    partitions: Vec<u32>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Group {
    topic: String,
    generation: u64,
    members: BTreeMap<String, Member>,
    /// Partition → next offset to consume, as committed.
    committed: BTreeMap<u32, u64>,
    /// Partition → next offset to fetch in this generation.
    positions: BTreeMap<u32, u64>,
}

/// Every topic and consumer group.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Topics {
    topics: BTreeMap<String, Topic>,
    groups: BTreeMap<String, Group>,
    /// Session deadlines: (group, consumer).
    sessions: Timers<(String, String)>,
}

fn err(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, text)
}

impl Topics {
    /// Creates a topic; repeating an identical create is fine, a different partition
    /// count is error 21.
    pub(super) fn create(
        &mut self,
        config: &Config,
        topic: &str,
        partitions: u32,
    ) -> Result<(), ErrorBody> {
        if partitions == 0 || partitions > config.max_partitions {
            let max = config.max_partitions;
            return Err(err(
                ErrorCode::MalformedRequest,
                format!("partitions must be 1..={max}"),
            ));
        }
        match self.topics.get(topic) {
            Some(t) if t.partitions.len() == partitions as usize => Ok(()),
            Some(t) => Err(err(
                ErrorCode::KeyAlreadyExists,
                format!(
                    "topic {topic:?} exists with {} partitions",
                    t.partitions.len()
                ),
            )),
            None if self.topics.len() >= config.max_topics => Err(err(
                ErrorCode::TemporarilyUnavailable,
                format!("too many topics (max_topics={})", config.max_topics),
            )),
            None => {
                let partitions = (0..partitions).map(|_| PartitionLog::default()).collect();
                self.topics.insert(
                    topic.to_owned(),
                    Topic {
                        partitions,
                        next_round_robin: 0,
                    },
                );
                Ok(())
            }
        }
    }

    /// True if `topic` exists.
    pub(super) fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The partition count of `topic`, if it exists.
    pub(super) fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|t| t.partitions.len() as u32)
    }

    /// A partition's log, if the topic and partition exist.
    pub(super) fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionLog> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// A partition's log, to append to, if the topic and partition exist.
    /// Every committed position of every group: `(group, topic, partition, lag)`, the
    /// lag being the records between the committed offset and the partition's end.
    pub(super) fn lag(&self) -> impl Iterator<Item = (&str, &str, u32, u64)> + '_ {
        self.groups.iter().flat_map(move |(name, g)| {
            g.committed.iter().filter_map(move |(&p, &offset)| {
                let end = self.partition(&g.topic, p)?.end_offset();
                Some((
                    name.as_str(),
                    g.topic.as_str(),
                    p,
                    end.saturating_sub(offset),
                ))
            })
        })
    }

    pub(super) fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Option<&mut PartitionLog> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(partition as usize)
    }

    /// Deletes a topic and the groups that consume it; returns how many records it
    /// held.
    pub(super) fn delete(&mut self, topic: &str) -> Result<usize, ErrorBody> {
        let t = self.topics.remove(topic).ok_or_else(|| no_topic(topic))?;
        let gone: Vec<String> = (self.groups.iter())
            .filter(|(_, g)| g.topic == topic)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let g = self.groups.remove(&name).expect("listed above");
            for member in g.members.values() {
                self.sessions.cancel(member.session);
            }
        }
        Ok(t.partitions.iter().map(PartitionLog::len).sum())
    }

    /// Records kept in all partitions of all topics.
    pub(super) fn record_count(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .map(PartitionLog::len)
            .sum()
    }

    /// Topic name → partition count.
    pub(super) fn list(&self) -> BTreeMap<String, u32> {
        self.topics
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Appends to a topic, keeping each partition's last `keep` records; returns
    /// (partition, offset, old records dropped).
    pub(super) fn publish(
        &mut self,
        topic: &str,
        key: Option<String>,
        msg: Json,
        keep: usize,
    ) -> Result<(u32, u64, usize), ErrorBody> {
        let t = self.topics.get_mut(topic).ok_or_else(|| no_topic(topic))?;
        let count = t.partitions.len() as u32;
        let partition = match &key {
            Some(key) => (fnv1a(key.as_bytes()) % u64::from(count)) as u32,
            None => {
                t.next_round_robin = (t.next_round_robin + 1) % count;
                t.next_round_robin
            }
        };
        let (offset, dropped) = t.partitions[partition as usize].append(key, msg, keep);
        Ok((partition, offset, dropped))
    }

    /// Adds `consumer` to `group` on `topic` and rebalances; a member that joins again
    /// keeps its partitions and resumes them from the committed offsets.
    pub(super) fn join(
        &mut self,
        now: Time,
        config: &Config,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Assignment, ErrorBody> {
        if !self.topics.contains_key(topic) {
            return Err(no_topic(topic));
        }
        if !self.groups.contains_key(group) && self.groups.len() >= config.max_groups {
            let max = config.max_groups;
            return Err(err(
                ErrorCode::TemporarilyUnavailable,
                format!("too many groups (max_groups={max})"),
            ));
        }
        let g = self
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                topic: topic.to_owned(),
                generation: 0,
                members: BTreeMap::new(),
                committed: BTreeMap::new(),
                positions: BTreeMap::new(),
            });
        if g.topic != topic {
            let text = format!("group {group:?} consumes topic {:?}", g.topic);
            return Err(err(ErrorCode::PreconditionFailed, text));
        }
        let deadline = now.plus_millis(config.group_session_timeout_ms);
        if let Some(member) = g.members.get_mut(consumer) {
            // A rejoin means the consumer restarted or lost a fetch reply: it resumes
            // from the committed offsets, so nothing fetched but unprocessed is skipped.
            renew_session(&mut self.sessions, member, deadline, group, consumer);
            for p in &member.partitions {
                g.positions.remove(p);
            }
        } else {
            if g.members.len() >= config.max_group_members {
                let max = config.max_group_members;
                return Err(err(
                    ErrorCode::TemporarilyUnavailable,
                    format!("group is full (max_group_members={max})"),
                ));
            }
            let session = self
                .sessions
                .schedule(deadline, (group.to_owned(), consumer.to_owned()));
            g.members.insert(
                consumer.to_owned(),
                Member {
                    session,
                    partitions: Vec::new(),
                },
            );
            let partitions = self.topics[topic].partitions.len() as u32;
            rebalance(g, partitions);
        }
        Ok(assignment(g, consumer))
    }

    /// Keeps a member's session alive; answers its current assignment (which tells a
    /// consumer that missed a rebalance its new generation).
    pub(super) fn heartbeat(
        &mut self,
        now: Time,
        config: &Config,
        group: &str,
        consumer: &str,
    ) -> Result<Assignment, ErrorBody> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown_member(group, consumer))?;
        let member = g
            .members
            .get_mut(consumer)
            .ok_or_else(|| unknown_member(group, consumer))?;
        let deadline = now.plus_millis(config.group_session_timeout_ms);
        renew_session(&mut self.sessions, member, deadline, group, consumer);
        Ok(assignment(g, consumer))
    }

    /// Removes a member and rebalances.
    pub(super) fn leave(&mut self, group: &str, consumer: &str) -> Result<(), ErrorBody> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown_member(group, consumer))?;
        let member = g
            .members
            .remove(consumer)
            .ok_or_else(|| unknown_member(group, consumer))?;
        self.sessions.cancel(member.session);
        let partitions = self.topics[&g.topic].partitions.len() as u32;
        rebalance(g, partitions);
        Ok(())
    }

    /// Removes members whose session ended by `now`; returns (group, consumer) of each.
    pub(super) fn run_due(&mut self, now: Time) -> Vec<(String, String)> {
        let mut expired = Vec::new();
        while let Some((timer, (group, consumer))) = self.sessions.pop_due(now) {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            if g.members.get(&consumer).is_some_and(|m| m.session == timer) {
                g.members.remove(&consumer);
                let partitions = self.topics[&g.topic].partitions.len() as u32;
                rebalance(g, partitions);
                expired.push((group, consumer));
            }
        }
        expired
    }

    /// When the next session may end.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.sessions.next_deadline()
    }

    /// The partitions `consumer` owns, if it is a member of `group` at `generation`.
    fn owned(&self, group: &str, consumer: &str, generation: u64) -> Result<Vec<u32>, ErrorBody> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| unknown_member(group, consumer))?;
        let member = g
            .members
            .get(consumer)
            .ok_or_else(|| unknown_member(group, consumer))?;
        if generation != g.generation {
            let text = format!(
                "generation {generation} is stale: the group is at {}; rejoin",
                g.generation
            );
            return Err(err(ErrorCode::StaleGeneration, text));
        }
        Ok(member.partitions.clone())
    }

    /// The next up-to-`max` messages of the consumer's partitions.
    pub(super) fn fetch(
        &mut self,
        group: &str,
        consumer: &str,
        generation: u64,
        max: usize,
    ) -> Result<Vec<Fetched>, ErrorBody> {
        let owned = self.owned(group, consumer, generation)?;
        let g = self.groups.get_mut(group).expect("checked by owned()");
        let topic = &self.topics[&g.topic];
        let mut msgs = Vec::new();
        for p in owned {
            let from = *g.positions.get(&p).or(g.committed.get(&p)).unwrap_or(&0);
            let mut next = from;
            for record in topic.partitions[p as usize].read(from, max - msgs.len()) {
                msgs.push(Fetched {
                    partition: p,
                    offset: record.offset,
                    key: record.key,
                    msg: record.msg,
                });
                // Past the last returned: retention may have skipped dropped offsets.
                next = record.offset + 1;
            }
            g.positions.insert(p, next);
        }
        Ok(msgs)
    }

    /// What a `commit` would commit, as (partition, next offset) pairs, or why it
    /// would refuse (all or nothing, never backwards); changes nothing.
    pub(super) fn check_commit(
        &self,
        group: &str,
        consumer: &str,
        generation: u64,
        offsets: &BTreeMap<String, u64>,
    ) -> Result<Vec<(u32, u64)>, ErrorBody> {
        let owned = self.owned(group, consumer, generation)?;
        let g = &self.groups[group];
        let partitions = &self.topics[&g.topic].partitions;
        let mut parsed = Vec::with_capacity(offsets.len());
        for (p, &offset) in offsets {
            let partition: u32 = p.parse().map_err(|_| {
                err(
                    ErrorCode::MalformedRequest,
                    format!("partition {p:?} is not a number"),
                )
            })?;
            if !owned.contains(&partition) {
                let text = format!(
                    "{consumer:?} does not own partition {partition} in generation {generation}"
                );
                return Err(err(ErrorCode::NotOwner, text));
            }
            let end = partitions[partition as usize].end_offset();
            if offset > end {
                let text =
                    format!("offset {offset} is past the end ({end}) of partition {partition}");
                return Err(err(ErrorCode::PreconditionFailed, text));
            }
            parsed.push((partition, offset));
        }
        Ok(parsed)
    }

    /// Commits pairs that [`Topics::check_commit`] accepted (a prepared transaction
    /// applies them later, whatever the generation is by then); never backwards.
    pub(super) fn apply_commit(&mut self, group: &str, parsed: &[(u32, u64)]) {
        let g = self.groups.get_mut(group).expect("checked by check_commit");
        for &(partition, offset) in parsed {
            let slot = g.committed.entry(partition).or_insert(offset);
            *slot = (*slot).max(offset);
        }
    }

    /// Panics if a partition has two owners or a member lacks its session timer.
    pub(super) fn check_invariants(&self) {
        let mut sessions = 0;
        for g in self.groups.values() {
            let mut owners = BTreeMap::new();
            for (name, member) in &g.members {
                sessions += 1;
                assert!(
                    self.sessions.contains(member.session),
                    "member without a session timer"
                );
                for &p in &member.partitions {
                    assert!(
                        owners.insert(p, name).is_none(),
                        "partition {p} has two owners"
                    );
                }
            }
            let partitions = self.topics[&g.topic].partitions.len();
            let expected = partitions.min(usize::from(!g.members.is_empty()) * partitions);
            assert_eq!(
                owners.len(),
                expected,
                "every partition has an owner while members exist"
            );
        }
        assert_eq!(sessions, self.sessions.len(), "stale session timers");
    }
}

/// Moves a member's session deadline to `deadline` (a new timer id, so the old one,
/// if it fires anyway, is recognised as stale).
fn renew_session(
    sessions: &mut Timers<(String, String)>,
    member: &mut Member,
    deadline: Time,
    group: &str,
    consumer: &str,
) {
    sessions.cancel(member.session);
    member.session = sessions.schedule(deadline, (group.to_owned(), consumer.to_owned()));
}

fn rebalance(g: &mut Group, partitions: u32) {
    g.generation += 1;
    g.positions.clear();
    let names: Vec<String> = g.members.keys().cloned().collect();
    for member in g.members.values_mut() {
        member.partitions.clear();
    }
    if names.is_empty() {
        return;
    }
    for p in 0..partitions {
        let owner = &names[p as usize % names.len()];
        g.members.get_mut(owner).expect("member").partitions.push(p);
    }
}

fn assignment(g: &Group, consumer: &str) -> Assignment {
    Assignment {
        generation: g.generation,
        partitions: g.members[consumer].partitions.clone(),
    }
}

fn no_topic(topic: &str) -> ErrorBody {
    err(ErrorCode::KeyDoesNotExist, format!("no topic {topic:?}"))
}

fn unknown_member(group: &str, consumer: &str) -> ErrorBody {
    err(
        ErrorCode::UnknownMember,
        format!("{consumer:?} is not a member of group {group:?}; join"),
    )
}

impl Broker {
    /// Runs a topic or consumer-group request.
    pub(super) fn handle_topics(
        &mut self,
        cx: &Ctx<'_>,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        let (now, config) = (cx.now, cx.config);
        let max_of = |max: Option<usize>| {
            max.unwrap_or(config.max_poll_messages)
                .min(config.max_poll_messages)
        };
        Ok(match payload {
            Payload::CreateTopic(create) => {
                self.topics
                    .create(config, &create.topic, create.partitions)?;
                Payload::CreateTopicOk(create)
            }
            Payload::Publish(publish) => self.publish(now, config, publish)?,
            Payload::ListTopics => Payload::ListTopicsOk(TopicList {
                topics: self.topics.list(),
            }),
            Payload::Join(m) => {
                let topic = m
                    .topic
                    .as_deref()
                    .ok_or_else(|| err(ErrorCode::MalformedRequest, "join needs a topic"))?;
                Payload::JoinOk(
                    self.topics
                        .join(now, config, topic, &m.group, &m.consumer)?,
                )
            }
            Payload::Heartbeat(m) => {
                Payload::HeartbeatOk(self.topics.heartbeat(now, config, &m.group, &m.consumer)?)
            }
            Payload::Leave(m) => {
                self.topics.leave(&m.group, &m.consumer)?;
                Payload::LeaveOk
            }
            Payload::Fetch(f) => Payload::FetchOk(FetchOk {
                msgs: self
                    .topics
                    .fetch(&f.group, &f.consumer, f.generation, max_of(f.max))?,
            }),
            Payload::Commit(c) => {
                let parsed =
                    self.topics
                        .check_commit(&c.group, &c.consumer, c.generation, &c.offsets)?;
                self.txns.check_partitions(&c.group, &parsed)?;
                self.topics.apply_commit(&c.group, &parsed);
                Payload::CommitOk
            }
            other => unreachable!("{:?} is not a topic request", other.kind()),
        })
    }

    fn publish(
        &mut self,
        now: Time,
        config: &Config,
        publish: Publish,
    ) -> Result<Payload, ErrorBody> {
        let idempotence = Idempotence::of(publish.producer, publish.epoch, publish.seq)?;
        let stream = format!("topic/{}", publish.topic);
        self.idempotent(now, config, idempotence, &stream, |b| {
            b.reserve_record(config)?;
            let keep = config.max_records_per_log;
            let (partition, offset, dropped) =
                b.topics
                    .publish(&publish.topic, publish.key, publish.msg, keep)?;
            b.records = b.records + 1 - dropped;
            Ok(Payload::PublishOk(PublishOk {
                partition,
                offset,
                duplicate: false,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bolero::TypeGenerator;

    #[derive(Clone, Copy, Debug, TypeGenerator)]
    enum Op {
        Join(u8),
        Leave(u8),
        Heartbeat(u8),
        Fetch {
            consumer: u8,
            stale: bool,
            max: u8,
        },
        Commit {
            consumer: u8,
            partition: u8,
            offset: u8,
            stale: bool,
        },
        Publish(u8),
        AdvanceMs(u8),
    }

    const PARTITIONS: u32 = 3;

    fn config() -> Config {
        Config {
            group_session_timeout_ms: 50,
            ..Config::default()
        }
    }

    /// Membership, generations, assignment, positions and commits, the slow way.
    #[derive(Default)]
    struct Model {
        members: BTreeMap<String, Time>,
        generation: u64,
        lengths: [u64; PARTITIONS as usize],
        committed: BTreeMap<u32, u64>,
        positions: BTreeMap<u32, u64>,
    }

    impl Model {
        fn rebalance(&mut self) {
            self.generation += 1;
            self.positions.clear();
        }
        fn owned(&self, consumer: &str) -> Vec<u32> {
            let names: Vec<&String> = self.members.keys().collect();
            (0..PARTITIONS)
                .filter(|p| names[*p as usize % names.len()] == consumer)
                .collect()
        }
        /// What `Topics::fetch` should return, as (partition, offset) pairs.
        fn fetch(
            &mut self,
            consumer: &str,
            generation: u64,
            max: usize,
        ) -> Result<Vec<(u32, u64)>, u32> {
            self.check(consumer, generation).map(|owned| {
                let mut out = Vec::new();
                for p in owned {
                    let from = *self
                        .positions
                        .get(&p)
                        .or(self.committed.get(&p))
                        .unwrap_or(&0);
                    let end = self.lengths[p as usize].min(from + (max - out.len()) as u64);
                    out.extend((from..end.max(from)).map(|o| (p, o)));
                    self.positions.insert(p, end.max(from));
                }
                out
            })
        }

        /// What a commit of `offset` for partition `p` should answer.
        fn commit(
            &mut self,
            consumer: &str,
            generation: u64,
            p: u32,
            offset: u64,
        ) -> Result<(), u32> {
            self.check(consumer, generation).and_then(|owned| {
                if !owned.contains(&p) {
                    Err(ErrorCode::NotOwner.code())
                } else if offset > self.lengths[p as usize] {
                    Err(ErrorCode::PreconditionFailed.code())
                } else {
                    let slot = self.committed.entry(p).or_insert(offset);
                    *slot = (*slot).max(offset);
                    Ok(())
                }
            })
        }

        /// The (group, consumer) pairs whose session ends by `now`, removed.
        fn expire(&mut self, now: Time, timeout: u64) -> Vec<(String, String)> {
            let gone: Vec<String> = self
                .members
                .iter()
                .filter(|(_, seen)| seen.plus_millis(timeout) <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in &gone {
                self.members.remove(name);
                self.rebalance();
            }
            gone.into_iter().map(|n| ("g".to_owned(), n)).collect()
        }

        fn check(&self, consumer: &str, generation: u64) -> Result<Vec<u32>, u32> {
            if !self.members.contains_key(consumer) {
                return Err(ErrorCode::UnknownMember.code());
            }
            if generation != self.generation {
                return Err(ErrorCode::StaleGeneration.code());
            }
            Ok(self.owned(consumer))
        }
    }

    #[test]
    fn groups_match_a_reference_model() {
        bolero::check!().with_type::<Vec<Op>>().for_each(|ops| {
            let config = config();
            let mut topics = Topics::default();
            topics.create(&config, "t", PARTITIONS).unwrap();
            let mut model = Model::default();
            let mut now = Time::ZERO;
            for &op in ops {
                let name = |c: u8| format!("c{}", c % 5);
                match op {
                    Op::Join(c) => {
                        let got = topics.join(now, &config, "t", "g", &name(c)).unwrap();
                        if model.members.insert(name(c), now).is_none() {
                            model.rebalance();
                        } else {
                            for p in model.owned(&name(c)) {
                                model.positions.remove(&p);
                            }
                        }
                        assert_eq!(
                            (got.generation, got.partitions),
                            (model.generation, model.owned(&name(c)))
                        );
                    }
                    Op::Leave(c) => {
                        let got = topics.leave("g", &name(c)).map_err(|e| e.code);
                        let want = match model.members.remove(&name(c)) {
                            Some(_) => {
                                model.rebalance();
                                Ok(())
                            }
                            None => Err(ErrorCode::UnknownMember.code()),
                        };
                        assert_eq!(got, want);
                    }
                    Op::Heartbeat(c) => {
                        let got = topics
                            .heartbeat(now, &config, "g", &name(c))
                            .map_err(|e| e.code);
                        let want = match model.members.get_mut(&name(c)) {
                            Some(seen) => {
                                *seen = now;
                                Ok(model.generation)
                            }
                            None => Err(ErrorCode::UnknownMember.code()),
                        };
                        assert_eq!(got.map(|a| a.generation), want);
                    }
                    Op::Fetch {
                        consumer,
                        stale,
                        max,
                    } => {
                        let generation =
                            model.generation - u64::from(stale && model.generation > 0);
                        let max = usize::from(max % 5) + 1;
                        let got = topics
                            .fetch("g", &name(consumer), generation, max)
                            .map_err(|e| e.code);
                        let want = model.fetch(&name(consumer), generation, max);
                        assert_eq!(
                            got.map(|msgs| msgs.iter().map(|m| (m.partition, m.offset)).collect()),
                            want
                        );
                    }
                    Op::Commit {
                        consumer,
                        partition,
                        offset,
                        stale,
                    } => {
                        let generation =
                            model.generation - u64::from(stale && model.generation > 0);
                        let (p, offset) =
                            (u32::from(partition) % PARTITIONS, u64::from(offset % 8));
                        let offsets = BTreeMap::from([(p.to_string(), offset)]);
                        let got = topics
                            .check_commit("g", &name(consumer), generation, &offsets)
                            .map(|parsed| topics.apply_commit("g", &parsed))
                            .map_err(|e| e.code);
                        let want = model.commit(&name(consumer), generation, p, offset);
                        assert_eq!(got, want);
                    }
                    Op::Publish(key) => {
                        let (p, offset, _) = topics
                            .publish("t", Some(format!("k{key}")), key.into(), usize::MAX)
                            .unwrap();
                        assert_eq!(
                            p as u64,
                            fnv1a(format!("k{key}").as_bytes()) % u64::from(PARTITIONS)
                        );
                        assert_eq!(offset, model.lengths[p as usize]);
                        model.lengths[p as usize] += 1;
                    }
                    Op::AdvanceMs(ms) => now = now.plus_millis(u64::from(ms % 40)),
                }
                let mut expired: Vec<(String, String)> = topics.run_due(now);
                expired.sort();
                let want = model.expire(now, config.group_session_timeout_ms);
                assert_eq!(expired, want, "session expiry");
                topics.check_invariants();
            }
        });
    }

    #[test]
    fn keys_stick_to_partitions_and_topics_are_checked() {
        let config = config();
        let mut topics = Topics::default();
        topics.create(&config, "t", 4).unwrap();
        topics.create(&config, "t", 4).unwrap(); // idempotent
        assert_eq!(
            topics.create(&config, "t", 5).unwrap_err().code,
            ErrorCode::KeyAlreadyExists.code()
        );
        assert_eq!(
            topics.create(&config, "u", 0).unwrap_err().code,
            ErrorCode::MalformedRequest.code()
        );
        let (p, _, _) = topics
            .publish("t", Some("user-7".into()), 1.into(), usize::MAX)
            .unwrap();
        for i in 1..20 {
            assert_eq!(
                topics
                    .publish("t", Some("user-7".into()), i.into(), usize::MAX)
                    .unwrap(),
                (p, i as u64, 0)
            );
        }
        let spread: std::collections::BTreeSet<u32> = (0..8)
            .map(|_| topics.publish("t", None, 0.into(), usize::MAX).unwrap().0)
            .collect();
        assert_eq!(spread.len(), 4, "unkeyed publishes go round robin");
        assert_eq!(
            topics
                .publish("nope", None, 0.into(), usize::MAX)
                .unwrap_err()
                .code,
            ErrorCode::KeyDoesNotExist.code()
        );
        let other = topics.join(Time::ZERO, &config, "u", "g", "c").unwrap_err();
        assert_eq!(other.code, ErrorCode::KeyDoesNotExist.code());
        topics.create(&config, "u", 1).unwrap();
        topics.join(Time::ZERO, &config, "t", "g", "c").unwrap();
        let wrong = topics.join(Time::ZERO, &config, "u", "g", "d").unwrap_err();
        assert_eq!(
            wrong.code,
            ErrorCode::PreconditionFailed.code(),
            "a group consumes one topic"
        );
    }
}
