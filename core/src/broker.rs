//! The broker API (docs/protocol.md): Maelstrom kafka keyed logs, topics and consumer
//! groups, work queues with dead letters and long polling, and processed-id tracking
//! for idempotent consumers. One place owns them all so time-driven work (visibility
//! timeouts, delays, TTLs, group sessions, long-poll deadlines) has one wake index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::dedup::DedupCache;
use crate::group::Topics;
use crate::log::{KeyedLogs, OffsetPastEnd};
use crate::msg::*;
use crate::producer::{Admit, Idempotence, Producers};
use crate::queue::{Queue, QueueConfig, QueueError, SetAside};
use crate::timer::{TimerId, Timers};
use crate::{Config, Time};

mod txn;
use txn::Txns;

/// A reply to a request that was parked (a long-polling `dequeue`), due now.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    /// Who asked.
    pub client: String,
    /// The request's `msg_id`.
    pub msg_id: u64,
    /// The reply.
    pub reply: Payload,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Waiter {
    id: u64,
    client: String,
    msg_id: u64,
    max: usize,
    visibility_ms: Option<u64>,
    timer: TimerId,
}

/// All broker state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Broker {
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
    processed: DedupCache<(String, String), ()>,
    producers: Producers,
    txns: Txns,
    /// Replies due; always empty between steps, so not part of a snapshot.
    #[serde(skip)]
    completions: Vec<Completion>,
}

fn err(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, text)
}

fn no_queue(queue: &str) -> ErrorBody {
    err(ErrorCode::KeyDoesNotExist, format!("no queue {queue:?}"))
}

fn queue_error(queue: &str, e: QueueError, config: &QueueConfig) -> ErrorBody {
    match e {
        QueueError::Full => err(
            ErrorCode::TemporarilyUnavailable,
            format!("queue {queue:?} is full (max_depth={})", config.max_depth),
        ),
        QueueError::DedupFull => err(
            ErrorCode::TemporarilyUnavailable,
            format!(
                "queue {queue:?} remembers {} producer ids already (dedup window)",
                config.max_dedup_ids
            ),
        ),
        QueueError::InvalidReceipt => err(
            ErrorCode::InvalidReceipt,
            "receipt is unknown or stale (acked, expired, or redelivered since)",
        ),
    }
}

impl Broker {
    /// An empty broker.
    pub fn new(config: &Config) -> Broker {
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
            processed: DedupCache::new(config.max_processed_ids),
            producers: Producers::default(),
            txns: Txns::new(config),
            completions: Vec::new(),
        }
    }

    /// True if `payload` is a broker request.
    pub fn handles(payload: &Payload) -> bool {
        matches!(
            payload,
            Payload::Send(_)
                | Payload::Poll(_)
                | Payload::CommitOffsets(_)
                | Payload::ListCommittedOffsets(_)
                | Payload::CreateTopic(_)
                | Payload::Publish(_)
                | Payload::ListTopics
                | Payload::Join(_)
                | Payload::Heartbeat(_)
                | Payload::Leave(_)
                | Payload::Fetch(_)
                | Payload::Commit(_)
                | Payload::CreateQueue(_)
                | Payload::Enqueue(_)
                | Payload::Dequeue(_)
                | Payload::Ack(_)
                | Payload::Nack(_)
                | Payload::Extend(_)
                | Payload::Redrive(_)
                | Payload::Stats(_)
                | Payload::ListQueues
                | Payload::Processed(_)
                | Payload::InitProducer(_)
                | Payload::Txn(_)
                | Payload::Prepare(_)
                | Payload::CommitTxn(_)
                | Payload::AbortTxn(_)
                | Payload::ListPrepared
                | Payload::CancelWaits
        )
    }

    /// Runs a broker request from `client`. `Ok(None)`: parked (a long poll); its reply
    /// comes later from [`Broker::take_completions`].
    pub fn handle(
        &mut self,
        now: Time,
        config: &Config,
        client: &str,
        msg_id: Option<u64>,
        payload: Payload,
    ) -> Result<Option<Payload>, ErrorBody> {
        let reply = match payload {
            Payload::Send(send) => {
                let idempotence = Idempotence::of(send.producer, send.epoch, send.seq)?;
                let stream = format!("log/{}", send.key);
                self.idempotent(now, config, idempotence, &stream, |b| {
                    b.reserve_record(config)?;
                    let keep = config.max_records_per_log;
                    let (offset, dropped) = b
                        .logs
                        .send(&send.key, send.msg, config.max_log_keys, keep)
                        .map_err(|_| {
                            err(
                                ErrorCode::TemporarilyUnavailable,
                                format!("too many keys (max_log_keys={})", config.max_log_keys),
                            )
                        })?;
                    b.records = b.records + 1 - dropped;
                    Ok(Payload::SendOk(SendOk { offset }))
                })?
            }
            Payload::Poll(poll) => {
                let per_key = poll
                    .max
                    .unwrap_or(config.max_poll_messages)
                    .min(config.max_poll_messages);
                let msgs = self
                    .logs
                    .poll(&poll.offsets, per_key, config.max_poll_messages);
                Payload::PollOk(PollOk { msgs })
            }
            Payload::CommitOffsets(commit) => {
                let group = commit.group.as_deref().unwrap_or("");
                self.txns.check_log_offsets(group, commit.offsets.keys())?;
                self.logs.commit(group, &commit.offsets).map_err(
                    |OffsetPastEnd { key, offset }| {
                        err(
                            ErrorCode::PreconditionFailed,
                            format!("offset {offset} of key {key:?} was never sent"),
                        )
                    },
                )?;
                Payload::CommitOffsetsOk
            }
            Payload::ListCommittedOffsets(list) => {
                let offsets = self
                    .logs
                    .committed(list.group.as_deref().unwrap_or(""), &list.keys);
                Payload::ListCommittedOffsetsOk(Offsets { offsets })
            }
            Payload::CreateTopic(create) => {
                self.topics
                    .create(config, &create.topic, create.partitions)?;
                Payload::CreateTopicOk(create)
            }
            Payload::Publish(publish) => {
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
                })?
            }
            Payload::ListTopics => Payload::ListTopicsOk(crate::msg::Topics {
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
            Payload::Fetch(f) => {
                let max = f
                    .max
                    .unwrap_or(config.max_poll_messages)
                    .min(config.max_poll_messages);
                Payload::FetchOk(FetchOk {
                    msgs: self
                        .topics
                        .fetch(&f.group, &f.consumer, f.generation, max)?,
                })
            }
            Payload::Commit(c) => {
                let parsed =
                    self.topics
                        .check_commit(&c.group, &c.consumer, c.generation, &c.offsets)?;
                self.txns.check_partitions(&c.group, &parsed)?;
                self.topics.apply_commit(&c.group, &parsed);
                Payload::CommitOk
            }
            Payload::CreateQueue(create) => {
                let name = create.queue.clone();
                self.create_queue(config, create)?;
                Payload::CreateQueueOk(QueueName { queue: name })
            }
            Payload::Enqueue(e) => {
                let idempotence = Idempotence::of(e.producer, e.epoch, e.seq)?;
                let stream = format!("queue/{}", e.queue);
                self.idempotent(now, config, idempotence, &stream, |b| {
                    let q = b
                        .queues
                        .get_mut(&e.queue)
                        .ok_or_else(|| no_queue(&e.queue))?;
                    // Room that prepared transactions set aside is not for others.
                    let set_aside = SetAside {
                        depth: b.txns.reserved_depth(&e.queue),
                        ids: b.txns.reserved_ids(&e.queue),
                    };
                    let (id, duplicate) = q
                        .enqueue(
                            now,
                            e.id,
                            e.msg,
                            e.delay_ms.unwrap_or(0),
                            e.ttl_ms,
                            set_aside,
                        )
                        .map_err(|x| queue_error(&e.queue, x, q.config()))?;
                    b.serve_waiters(now, &e.queue);
                    b.rewake(&e.queue);
                    Ok(Payload::EnqueueOk(EnqueueOk { id, duplicate }))
                })?
            }
            Payload::Dequeue(d) => return self.dequeue(now, config, client, msg_id, d),
            Payload::Ack(r) => {
                self.txns.check_receipt(&r.queue, &r.receipt)?;
                let q = self
                    .queues
                    .get_mut(&r.queue)
                    .ok_or_else(|| no_queue(&r.queue))?;
                q.ack(&r.receipt)
                    .map_err(|x| queue_error(&r.queue, x, q.config()))?;
                self.rewake(&r.queue);
                Payload::AckOk
            }
            Payload::Nack(r) => {
                self.txns.check_receipt(&r.queue, &r.receipt)?;
                let q = self
                    .queues
                    .get_mut(&r.queue)
                    .ok_or_else(|| no_queue(&r.queue))?;
                q.nack(now, &r.receipt, r.delay_ms.unwrap_or(0))
                    .map_err(|x| queue_error(&r.queue, x, q.config()))?;
                // A nack without delay is due now: make it visible (or dead-letter it).
                self.process_queue(now, &r.queue);
                Payload::NackOk
            }
            Payload::Extend(r) => {
                self.txns.check_receipt(&r.queue, &r.receipt)?;
                let q = self
                    .queues
                    .get_mut(&r.queue)
                    .ok_or_else(|| no_queue(&r.queue))?;
                let visibility = r.visibility_ms.unwrap_or(q.config().visibility_ms);
                q.extend(now, &r.receipt, visibility)
                    .map_err(|x| queue_error(&r.queue, x, q.config()))?;
                self.rewake(&r.queue);
                Payload::ExtendOk
            }
            Payload::Redrive(r) => Payload::RedriveOk(RedriveOk {
                moved: self.redrive(now, &r)?,
            }),
            Payload::Stats(s) => {
                let q = self
                    .queues
                    .get(&s.queue)
                    .ok_or_else(|| no_queue(&s.queue))?;
                Payload::StatsOk(q.stats(now))
            }
            Payload::ListQueues => Payload::ListQueuesOk(QueueList {
                queues: self.queues.keys().cloned().collect(),
            }),
            Payload::Processed(p) => {
                let key = (p.consumer, p.id);
                let first_time = self.processed.get(&key).is_none();
                if first_time {
                    self.processed.insert(key, ());
                }
                Payload::ProcessedOk(ProcessedOk { first_time })
            }
            Payload::CancelWaits => Payload::CancelWaitsOk(Cancelled {
                cancelled: self.cancel_waits(client),
            }),
            Payload::Txn(t) => self.txn(now, config, t.ops)?,
            Payload::Prepare(p) => self.prepare(now, config, p)?,
            Payload::CommitTxn(t) => self.commit_txn(now, config, t.txid)?,
            Payload::AbortTxn(t) => self.abort_txn(t.txid)?,
            Payload::ListPrepared => self.list_prepared(now),
            Payload::InitProducer(init) => {
                let (producer, epoch) = self.producers.register(now, config, init.name)?;
                Payload::InitProducerOk(ProducerId { producer, epoch })
            }
            other => {
                let text = format!("{:?} is not a broker request", other.kind());
                return Err(err(ErrorCode::NotSupported, text));
            }
        };
        Ok(Some(reply))
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
        if self.records + self.txns.reserved_records() >= config.max_log_records {
            let text = format!("logs are full (max_log_records={})", config.max_log_records);
            return Err(err(ErrorCode::TemporarilyUnavailable, text));
        }
        Ok(())
    }

    fn create_queue(&mut self, config: &Config, create: CreateQueue) -> Result<(), ErrorBody> {
        let malformed = |text: String| Err(err(ErrorCode::MalformedRequest, text));
        if create.queue.is_empty() {
            return malformed("queue name is empty".into());
        }
        let max_deliveries = create.max_deliveries.unwrap_or(0);
        if max_deliveries > 0 && create.dead_letter.is_none() {
            return malformed("max_deliveries needs a dead_letter queue".into());
        }
        if create.dead_letter.as_deref() == Some(create.queue.as_str()) {
            return malformed("a queue cannot be its own dead_letter queue".into());
        }
        let max_depth = create.max_depth.unwrap_or(config.queue_max_depth);
        if max_depth == 0 || max_depth > config.queue_max_depth {
            return malformed(format!("max_depth must be 1..={}", config.queue_max_depth));
        }
        let queue_config = QueueConfig {
            visibility_ms: create.visibility_ms.unwrap_or(config.queue_visibility_ms),
            max_deliveries,
            dead_letter: create.dead_letter.clone(),
            retention_ms: create.retention_ms.unwrap_or(0),
            dedup_window_ms: create
                .dedup_window_ms
                .unwrap_or(config.queue_dedup_window_ms),
            max_depth,
            max_dedup_ids: config.queue_max_dedup_ids,
        };
        if let Some(existing) = self.queues.get(&create.queue) {
            if *existing.config() == queue_config {
                return Ok(());
            }
            let text = format!("queue {:?} exists with other settings", create.queue);
            return Err(err(ErrorCode::KeyAlreadyExists, text));
        }
        let dlq_missing = create
            .dead_letter
            .as_ref()
            .is_some_and(|d| !self.queues.contains_key(d));
        if self.queues.len() + 1 + usize::from(dlq_missing) > config.max_queues {
            let text = format!("too many queues (max_queues={})", config.max_queues);
            return Err(err(ErrorCode::TemporarilyUnavailable, text));
        }
        if let (true, Some(dlq)) = (dlq_missing, create.dead_letter) {
            let dlq_config = QueueConfig {
                max_deliveries: 0,
                dead_letter: None,
                max_depth: config.queue_max_depth,
                ..queue_config.clone()
            };
            self.queues.insert(dlq.clone(), Queue::new(dlq, dlq_config));
        }
        self.queues
            .insert(create.queue.clone(), Queue::new(create.queue, queue_config));
        Ok(())
    }

    fn dequeue(
        &mut self,
        now: Time,
        config: &Config,
        client: &str,
        msg_id: Option<u64>,
        d: Dequeue,
    ) -> Result<Option<Payload>, ErrorBody> {
        let max = d.max.unwrap_or(1);
        if max == 0 || max > config.max_dequeue_batch {
            let text = format!("max must be 1..={}", config.max_dequeue_batch);
            return Err(err(ErrorCode::MalformedRequest, text));
        }
        let wait_ms = d.wait_ms.unwrap_or(0);
        if wait_ms > config.max_wait_ms {
            return Err(err(
                ErrorCode::MalformedRequest,
                format!("wait_ms must be at most {}", config.max_wait_ms),
            ));
        }
        let q = self
            .queues
            .get_mut(&d.queue)
            .ok_or_else(|| no_queue(&d.queue))?;
        let msgs = q.dequeue(now, max, d.visibility_ms);
        self.rewake(&d.queue);
        let (Some(msg_id), true, 1..) = (msg_id, msgs.is_empty(), wait_ms) else {
            return Ok(Some(Payload::DequeueOk(DequeueOk { msgs })));
        };
        if self.waiter_count >= config.max_waiters {
            let text = format!(
                "too many waiting dequeues (max_waiters={})",
                config.max_waiters
            );
            return Err(err(ErrorCode::TemporarilyUnavailable, text));
        }
        let id = self.next_waiter_id;
        self.next_waiter_id += 1;
        let timer = self
            .waiter_deadlines
            .schedule(now.plus_millis(wait_ms), (d.queue.clone(), id));
        let waiter = Waiter {
            id,
            client: client.to_owned(),
            msg_id,
            max,
            visibility_ms: d.visibility_ms,
            timer,
        };
        self.waiters.entry(d.queue).or_default().push_back(waiter);
        self.waiter_count += 1;
        Ok(None)
    }

    fn redrive(&mut self, now: Time, r: &Redrive) -> Result<usize, ErrorBody> {
        if r.queue == r.to {
            return Err(err(
                ErrorCode::MalformedRequest,
                "redrive to the same queue",
            ));
        }
        let room = self
            .queues
            .get(&r.to)
            .ok_or_else(|| no_queue(&r.to))?
            .room();
        let from = self
            .queues
            .get_mut(&r.queue)
            .ok_or_else(|| no_queue(&r.queue))?;
        let moved = from.take_ready(r.max.unwrap_or(usize::MAX).min(room));
        self.rewake(&r.queue);
        let to = self.queues.get_mut(&r.to).expect("checked");
        let count = moved.len();
        for (id, msg) in moved {
            to.accept_redriven(now, id, msg);
        }
        self.serve_waiters(now, &r.to);
        self.rewake(&r.to);
        Ok(count)
    }

    /// Applies a queue's due work, moves its exhausted messages to its dead-letter
    /// queue (as many as fit; the rest stay visible), and serves waiting dequeues.
    fn process_queue(&mut self, now: Time, name: &str) {
        let Some(q) = self.queues.get(name) else {
            return;
        };
        let dlq = q.config().dead_letter.clone();
        let room = dlq
            .as_ref()
            .and_then(|d| self.queues.get(d))
            .map_or(0, Queue::room);
        let exhausted = self
            .queues
            .get_mut(name)
            .expect("checked")
            .process_due(now, room);
        if let (false, Some(dlq)) = (exhausted.is_empty(), dlq) {
            let target = self.queues.get_mut(&dlq).expect("room came from it");
            for message in exhausted {
                target.accept_dead_letter(now, message);
            }
            self.serve_waiters(now, &dlq);
            self.rewake(&dlq);
        }
        self.serve_waiters(now, name);
        self.rewake(name);
    }

    /// Drops every waiting dequeue of `client` (it went away, or gave up); returns how
    /// many. Their messages stay visible for others.
    fn cancel_waits(&mut self, client: &str) -> usize {
        let mut cancelled = 0;
        for waiters in self.waiters.values_mut() {
            waiters.retain(|w| {
                let keep = w.client != client;
                if !keep {
                    self.waiter_deadlines.cancel(w.timer);
                    cancelled += 1;
                }
                keep
            });
        }
        self.waiters.retain(|_, waiters| !waiters.is_empty());
        self.waiter_count -= cancelled;
        cancelled
    }

    fn serve_waiters(&mut self, now: Time, name: &str) {
        let (Some(waiters), Some(q)) = (self.waiters.get_mut(name), self.queues.get_mut(name))
        else {
            return;
        };
        while q.has_ready() {
            let Some(w) = waiters.pop_front() else { break };
            self.waiter_count -= 1;
            self.waiter_deadlines.cancel(w.timer);
            let msgs = q.dequeue(now, w.max, w.visibility_ms);
            let reply = Payload::DequeueOk(DequeueOk { msgs });
            self.completions.push(Completion {
                client: w.client,
                msg_id: w.msg_id,
                reply,
            });
        }
        if waiters.is_empty() {
            self.waiters.remove(name);
        }
    }

    /// Re-registers a queue's next deadline in the wake index.
    fn rewake(&mut self, name: &str) {
        if let Some(old) = self.queue_wake_at.remove(name) {
            self.queue_wake.remove(&(old, name.to_owned()));
        }
        if let Some(at) = self.queues.get(name).and_then(Queue::next_deadline) {
            self.queue_wake.insert((at, name.to_owned()));
            self.queue_wake_at.insert(name.to_owned(), at);
        }
    }

    /// Runs everything due by `now`: queue timers, group sessions, long-poll deadlines.
    /// Returns the (group, consumer) of members whose session ended.
    pub fn on_time(&mut self, now: Time) -> Vec<(String, String)> {
        while let Some((at, name)) = self.queue_wake.first().cloned() {
            if at > now {
                break;
            }
            self.process_queue(now, &name);
        }
        while let Some((_, (queue, id))) = self.waiter_deadlines.pop_due(now) {
            let Some(waiters) = self.waiters.get_mut(&queue) else {
                continue;
            };
            let Some(i) = waiters.iter().position(|w| w.id == id) else {
                continue;
            };
            let w = waiters.remove(i).expect("found");
            if waiters.is_empty() {
                self.waiters.remove(&queue);
            }
            self.waiter_count -= 1;
            let reply = Payload::DequeueOk(DequeueOk { msgs: Vec::new() });
            self.completions.push(Completion {
                client: w.client,
                msg_id: w.msg_id,
                reply,
            });
        }
        self.producers.expire(now);
        self.expire_prepared(now);
        self.topics.expire_sessions(now)
    }

    /// Replies to parked requests that became due.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// When the broker next has timed work.
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.queue_wake.first().map(|w| w.0),
            self.topics.next_deadline(),
            self.waiter_deadlines.next_deadline(),
            self.producers.next_deadline(),
            self.txns.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Panics if any broker invariant is broken (O(total size): tests only).
    pub fn check_invariants(&self) {
        self.topics.check_invariants();
        self.processed.check_invariants();
        self.producers.check_invariants();
        assert_eq!(
            self.records,
            self.logs.record_count() + self.topics.record_count(),
            "log record count"
        );
        self.txns.check_invariants();
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
