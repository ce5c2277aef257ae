//! The broker's work-queue requests: create, enqueue, dequeue (with long polls that
//! wait for messages), settling a delivery (ack, nack, extend), redrive, stats and
//! listing. The queue itself is `queue.rs`; this module keeps the broker-wide parts:
//! the wake index of queues with timed work, dead-lettering between queues, and the
//! waiting dequeues.

use super::producers::Idempotence;
use super::{err, Broker, Completion, Queue, QueueConfig, QueueError, SetAside};
use crate::runtime::{Ctx, TimerId};
use crate::wire::msg::*;
use crate::{Config, Time};

/// A `dequeue` parked until a message arrives or its `wait_ms` runs out.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) client: String,
    pub(super) msg_id: u64,
    max: usize,
    visibility_ms: Option<u64>,
    pub(super) timer: TimerId,
}

/// How a delivery is settled: the three requests that name a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    /// Done: the message is removed.
    Ack,
    /// Failed: visible again after the receipt's `delay_ms`.
    Nack,
    /// Still working: invisible for the receipt's `visibility_ms` from now.
    Extend,
}

pub(super) fn no_queue(queue: &str) -> ErrorBody {
    err(ErrorCode::KeyDoesNotExist, format!("no queue {queue:?}"))
}

pub(super) fn queue_error(queue: &str, e: QueueError, config: &QueueConfig) -> ErrorBody {
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
    /// Runs a queue request (a `dequeue` may park: see [`Broker::dequeue`]).
    pub(super) fn handle_queues(
        &mut self,
        cx: &Ctx<'_>,
        client: &str,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        let (now, config) = (cx.now, cx.config);
        Ok(match payload {
            Payload::CreateQueue(create) => {
                let name = create.queue.clone();
                self.create_queue(config, create)?;
                Payload::CreateQueueOk(QueueName { queue: name })
            }
            Payload::Enqueue(e) => self.enqueue(now, config, e)?,
            Payload::Ack(r) => self.settle(now, r, Settle::Ack)?,
            Payload::Nack(r) => self.settle(now, r, Settle::Nack)?,
            Payload::Extend(r) => self.settle(now, r, Settle::Extend)?,
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
            Payload::CancelWaits => Payload::CancelWaitsOk(Cancelled {
                cancelled: self.cancel_waits(client),
            }),
            other => unreachable!("{:?} is not a queue request", other.kind()),
        })
    }

    fn enqueue(&mut self, now: Time, config: &Config, e: Enqueue) -> Result<Payload, ErrorBody> {
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
        })
    }

    /// `ack`, `nack` or `extend` of the delivery a receipt names, unless a prepared
    /// transaction holds it.
    fn settle(&mut self, now: Time, r: Receipt, how: Settle) -> Result<Payload, ErrorBody> {
        self.txns.check_receipt(&r.queue, &r.receipt)?;
        let q = self
            .queues
            .get_mut(&r.queue)
            .ok_or_else(|| no_queue(&r.queue))?;
        let settled = match how {
            Settle::Ack => q.ack(&r.receipt),
            Settle::Nack => q.nack(now, &r.receipt, r.delay_ms.unwrap_or(0)),
            Settle::Extend => {
                let visibility = r.visibility_ms.unwrap_or(q.config().visibility_ms);
                q.extend(now, &r.receipt, visibility)
            }
        };
        settled.map_err(|x| queue_error(&r.queue, x, q.config()))?;
        Ok(match how {
            Settle::Ack => {
                self.rewake(&r.queue);
                Payload::AckOk
            }
            Settle::Nack => {
                // A nack without delay is due now: make it visible (or dead-letter it).
                self.process_queue(now, &r.queue);
                Payload::NackOk
            }
            Settle::Extend => {
                self.rewake(&r.queue);
                Payload::ExtendOk
            }
        })
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

    pub(super) fn dequeue(
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
    pub(super) fn process_queue(&mut self, now: Time, name: &str) {
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
            .run_due(now, room);
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

    pub(super) fn serve_waiters(&mut self, now: Time, name: &str) {
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
    /// Most requests leave it where it was (an enqueue behind older messages), and
    /// then this changes nothing and copies no name.
    pub(super) fn rewake(&mut self, name: &str) {
        let at = self.queues.get(name).and_then(Queue::next_deadline);
        if self.queue_wake_at.get(name).copied() == at {
            return;
        }
        if let Some(old) = self.queue_wake_at.remove(name) {
            self.queue_wake.remove(&(old, name.to_owned()));
        }
        if let Some(at) = at {
            self.queue_wake.insert((at, name.to_owned()));
            self.queue_wake_at.insert(name.to_owned(), at);
        }
    }

    /// Answers waiting dequeues whose `wait_ms` ran out, with no messages.
    pub(super) fn expire_waiters(&mut self, now: Time) {
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
    }
}
