//! The broker API (docs/protocol.md): Maelstrom kafka keyed logs, topics and consumer
//! groups, work queues with dead letters and long polling, and processed-id tracking
//! for idempotent consumers. One place owns them all so time-driven work (visibility
//! timeouts, delays, TTLs, group sessions, long-poll deadlines) has one wake index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::runtime::{Ctx, Lru, Timers};
use crate::wire::msg::*;
use crate::{Config, Time};

mod kafka;
mod kafka_groups;
mod kafka_records;
mod logs;
mod producers;
mod queue;
mod queues;
mod seq_map;
mod topics;
mod txn;

use kafka_groups::KafkaGroups;
use logs::KeyedLogs;
use producers::{Admit, Idempotence, Producers};
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub))]
pub use queue::{Queue, QueueConfig, QueueError, SetAside};
use queues::Waiter;
#[cfg(feature = "sim")]
pub(crate) use topics::fnv1a;
use topics::Topics;
use txn::Txns;

/// A reply to a request that was parked (a long-polling `dequeue`), due now.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Completion {
    /// Who asked.
    pub client: String,
    /// The request's `msg_id`.
    pub msg_id: u64,
    /// The reply.
    pub reply: Payload,
}

/// A consumer group's distance behind the end of one partition it committed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLag {
    /// `herald` for a group of Herald's topic API, `kafka` for a Kafka consumer group.
    pub protocol: &'static str,
    /// The group's name.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Records between the group's committed offset and the partition's end.
    pub lag: u64,
}

/// What the broker holds now, for an operator's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerMetrics {
    /// Every queue's counts, by name.
    pub queues: Vec<(String, QueueStats)>,
    /// Every committed position of every consumer group.
    pub group_lag: Vec<GroupLag>,
}

/// All broker state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Broker {
    logs: KeyedLogs,
    /// Records in keyed logs and topic partitions together.
    records: usize,
    topics: Topics,
    queues: BTreeMap<String, Queue>,
    /// (deadline, queue) for every queue with timed work, and each queue's entry.
    queue_wake: BTreeSet<(Time, String)>,
    queue_wake_at: BTreeMap<String, Time>,
    waiters: BTreeMap<String, VecDeque<Waiter>>,
    waiter_count: usize,
    waiter_deadlines: Timers<(String, u64)>,
    next_waiter_id: u64,
    processed: Lru<(String, String), ()>,
    producers: Producers,
    txns: Txns,
    /// Kafka's consumer groups (classic protocol), apart from Herald's own groups.
    #[serde(default)]
    kafka_groups: KafkaGroups,
    /// Replies due; always empty between steps, so not part of a snapshot.
    #[serde(skip)]
    completions: Vec<Completion>,
}

fn err(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, text)
}

impl Broker {
    /// An empty broker.
    pub(crate) fn new(config: &Config) -> Broker {
        Broker {
            logs: KeyedLogs::default(),
            records: 0,
            topics: Topics::default(),
            queues: BTreeMap::new(),
            queue_wake: BTreeSet::new(),
            queue_wake_at: BTreeMap::new(),
            waiters: BTreeMap::new(),
            waiter_count: 0,
            waiter_deadlines: Timers::default(),
            next_waiter_id: 0,
            processed: Lru::new(config.max_processed_ids),
            producers: Producers::default(),
            txns: Txns::new(config),
            kafka_groups: KafkaGroups::default(),
            completions: Vec::new(),
        }
    }

    /// Every queue's counts and every group's lag at `now`: O(queues + committed
    /// partitions).
    pub(crate) fn metrics(&self, now: Time) -> BrokerMetrics {
        let queues = (self.queues.iter())
            .map(|(name, q)| (name.clone(), q.stats(now)))
            .collect();
        let lag = |protocol, group: &str, topic: &str, partition, lag| GroupLag {
            protocol,
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            lag,
        };
        let herald = (self.topics.lag()).map(|(g, t, p, n)| lag("herald", g, t, p, n));
        let kafka = self
            .kafka_groups
            .committed()
            .filter_map(|(g, t, p, offset)| {
                let end = self.topics.partition(t, p)?.end_offset();
                let behind = end.saturating_sub(u64::try_from(offset).unwrap_or(0));
                Some(lag("kafka", g, t, p, behind))
            });
        BrokerMetrics {
            queues,
            group_lag: herald.chain(kafka).collect(),
        }
    }

    /// Runs a broker request from `client`, by its family. `Ok(None)`: parked (a long
    /// poll); its reply comes later from [`Broker::take_completions`].
    pub(crate) fn handle(
        &mut self,
        cx: &Ctx<'_>,
        client: &str,
        msg_id: Option<u64>,
        payload: Payload,
    ) -> Result<Option<Payload>, ErrorBody> {
        use Payload as P;
        let reply = match payload {
            P::Send(_) | P::Poll(_) | P::CommitOffsets(_) | P::ListCommittedOffsets(_) => {
                self.handle_logs(cx, payload)
            }
            P::CreateTopic(_)
            | P::Publish(_)
            | P::ListTopics
            | P::Join(_)
            | P::Heartbeat(_)
            | P::Leave(_)
            | P::Fetch(_)
            | P::Commit(_) => self.handle_topics(cx, payload),
            P::Dequeue(d) => return self.dequeue(cx.now, cx.config, client, msg_id, d),
            P::CreateQueue(_)
            | P::Enqueue(_)
            | P::Ack(_)
            | P::Nack(_)
            | P::Extend(_)
            | P::Redrive(_)
            | P::Stats(_)
            | P::ListQueues
            | P::CancelWaits => self.handle_queues(cx, client, payload),
            P::InitProducer(_) | P::Processed(_) => self.handle_producers(cx, payload),
            P::Txn(_) | P::Prepare(_) | P::CommitTxn(_) | P::AbortTxn(_) | P::ListPrepared => {
                self.handle_txn(cx, payload)
            }
            P::KafkaProduce(_)
            | P::KafkaFetch(_)
            | P::KafkaListOffsets(_)
            | P::KafkaMetadata(_)
            | P::DeleteTopic(_) => self.handle_kafka(cx, payload),
            P::KafkaJoinGroup(_)
            | P::KafkaSyncGroup(_)
            | P::KafkaHeartbeat(_)
            | P::KafkaLeaveGroup(_)
            | P::KafkaOffsetCommit(_)
            | P::KafkaOffsetFetch(_)
            | P::KafkaListGroups
            | P::KafkaDescribeGroups(_) => {
                return self.handle_kafka_groups(cx, client, msg_id, payload)
            }
            other => {
                let text = format!("{:?} is not a broker request", other.kind());
                Err(err(ErrorCode::NotSupported, text))
            }
        };
        reply.map(Some)
    }

    /// Runs `write` unless it repeats an idempotent producer's earlier write to
    /// `stream` (then answers the original reply); records what a new write answered.
    fn idempotent(
        &mut self,
        now: Time,
        config: &Config,
        idempotence: Option<Idempotence>,
        stream: &str,
        write: impl FnOnce(&mut Broker) -> Result<Payload, ErrorBody>,
    ) -> Result<Payload, ErrorBody> {
        let Some(w) = idempotence else {
            return write(self);
        };
        if let Admit::Duplicate(reply) = self.producers.admit(config, w, stream)? {
            return Ok(reply);
        }
        let reply = write(self)?;
        self.producers.record(now, config, w, stream, &reply);
        Ok(reply)
    }

    fn reserve_record(&self, config: &Config) -> Result<(), ErrorBody> {
        self.reserve_records(config, 1)
    }

    /// Refuses a write of `count` records that would take the logs past
    /// `max_log_records`.
    fn reserve_records(&self, config: &Config, count: usize) -> Result<(), ErrorBody> {
        if self.records + self.txns.reserved_records() + count > config.max_log_records {
            let text = format!("logs are full (max_log_records={})", config.max_log_records);
            return Err(err(ErrorCode::TemporarilyUnavailable, text));
        }
        Ok(())
    }

    /// Runs everything due by `now`: queue timers, group sessions, long-poll deadlines.
    /// Returns the (group, consumer) of members whose session ended.
    pub(crate) fn run_due(&mut self, now: Time) -> Vec<(String, String)> {
        while let Some((at, name)) = self.queue_wake.first().cloned() {
            if at > now {
                break;
            }
            self.process_queue(now, &name);
        }
        self.expire_waiters(now);
        self.producers.run_due(now);
        self.expire_prepared(now);
        self.kafka_groups.run_due(now, &mut self.completions);
        self.topics.run_due(now)
    }

    /// Replies to parked requests that became due.
    pub(crate) fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// When the broker next has timed work.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        [
            self.queue_wake.first().map(|w| w.0),
            self.topics.next_deadline(),
            self.waiter_deadlines.next_deadline(),
            self.producers.next_deadline(),
            self.txns.next_deadline(),
            self.kafka_groups.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Panics if any broker invariant is broken (O(total size): tests only).
    pub(crate) fn check_invariants(&self) {
        self.topics.check_invariants();
        self.processed.check_invariants();
        self.producers.check_invariants();
        assert_eq!(
            self.records,
            self.logs.record_count() + self.topics.record_count(),
            "log record count"
        );
        self.txns.check_invariants();
        self.kafka_groups.check_invariants();
        for (name, q) in &self.queues {
            q.check_invariants();
            assert_eq!(
                self.queue_wake_at.get(name).copied(),
                q.next_deadline(),
                "queue {name} wake index stale"
            );
        }
        assert_eq!(
            self.queue_wake.len(),
            self.queue_wake_at.len(),
            "wake index sizes differ"
        );
        let waiting: usize = self.waiters.values().map(VecDeque::len).sum();
        assert_eq!(waiting, self.waiter_count, "waiter count drifted");
        assert_eq!(waiting, self.waiter_deadlines.len(), "waiter timers leak");
        for (name, waiters) in &self.waiters {
            assert!(!waiters.is_empty(), "empty waiter list kept");
            assert!(
                !self.queues[name].has_ready(),
                "queue {name} has messages and waiting dequeues"
            );
        }
    }
}
