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

use crate::log::PartitionLog;
use crate::msg::{Assignment, ErrorBody, ErrorCode, Fetched};
use crate::timer::{TimerId, Timers};
use crate::{Config, Time};

/// FNV-1a, 64-bit: a stable hash (the same on every node and every run).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug)]
struct Topic {
    partitions: Vec<PartitionLog>,
    next_round_robin: u32,
}

#[derive(Debug)]
struct Member {
    session: TimerId,
    partitions: Vec<u32>,
}

#[derive(Debug)]
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
#[derive(Debug, Default)]
pub struct Topics {
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
    pub fn create(
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

    /// Topic name → partition count.
    pub fn list(&self) -> BTreeMap<String, u32> {
        self.topics
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Appends to a topic; returns (partition, offset).
    pub fn publish(
        &mut self,
        topic: &str,
        key: Option<String>,
        msg: serde_json::Value,
    ) -> Result<(u32, u64), ErrorBody> {
        let t = self.topics.get_mut(topic).ok_or_else(|| no_topic(topic))?;
        let count = t.partitions.len() as u32;
        let partition = match &key {
            Some(key) => (fnv1a(key.as_bytes()) % u64::from(count)) as u32,
            None => {
                t.next_round_robin = (t.next_round_robin + 1) % count;
                t.next_round_robin
            }
        };
        let offset = t.partitions[partition as usize].append(key, msg);
        Ok((partition, offset))
    }

    /// Adds (or re-adds) `consumer` to `group` on `topic`; rebalances if it is new.
    pub fn join(
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
            self.sessions.cancel(member.session);
            member.session = self
                .sessions
                .schedule(deadline, (group.to_owned(), consumer.to_owned()));
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
    pub fn heartbeat(
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
        self.sessions.cancel(member.session);
        let deadline = now.plus_millis(config.group_session_timeout_ms);
        member.session = self
            .sessions
            .schedule(deadline, (group.to_owned(), consumer.to_owned()));
        Ok(assignment(g, consumer))
    }

    /// Removes a member and rebalances.
    pub fn leave(&mut self, group: &str, consumer: &str) -> Result<(), ErrorBody> {
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
    pub fn expire_sessions(&mut self, now: Time) -> Vec<(String, String)> {
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
    pub fn next_deadline(&self) -> Option<Time> {
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
    pub fn fetch(
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
            let before = msgs.len();
            for (offset, record) in topic.partitions[p as usize].read(from, max - msgs.len()) {
                msgs.push(Fetched {
                    partition: p,
                    offset,
                    key: record.key.clone(),
                    msg: record.msg.clone(),
                });
            }
            g.positions.insert(p, from + (msgs.len() - before) as u64);
        }
        Ok(msgs)
    }

    /// Commits next-offsets for partitions the consumer owns; never backwards. All or
    /// nothing: one bad partition refuses the whole commit.
    pub fn commit(
        &mut self,
        group: &str,
        consumer: &str,
        generation: u64,
        offsets: &BTreeMap<String, u64>,
    ) -> Result<(), ErrorBody> {
        let owned = self.owned(group, consumer, generation)?;
        let g = self.groups.get_mut(group).expect("checked by owned()");
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
        for (partition, offset) in parsed {
            let slot = g.committed.entry(partition).or_insert(offset);
            *slot = (*slot).max(offset);
        }
        Ok(())
    }

    /// Panics if a partition has two owners or a member lacks its session timer.
    pub fn check_invariants(&self) {
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
