//! A work queue with at-least-once delivery (SQS-style).
//!
//! Every message has a sequence number. Ordered indexes make every operation
//! O(log n) in the queue's depth, and nothing scans the queue:
//! - `ready`: visible messages, in enqueue order (FIFO);
//! - `wakeups`: (time, seq) for delayed messages and for in-flight messages whose
//!   visibility timeout ends then;
//! - `expiries`: (time, seq) for messages with a TTL;
//! - `dedup`: producer ids seen within the dedup window, aged out in time order.
//!
//! A delivery gets a receipt `<seq>.<nonce>`; a new delivery of the same message gets a
//! new nonce, so only the latest receipt can ack, nack or extend it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::msg::{DeadLetter, Delivery, QueueStats};
use crate::Time;

/// A queue's settings, after defaults are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Invisibility after a delivery, unless the dequeue overrides it.
    pub visibility_ms: u64,
    /// Deliveries before dead-lettering (0: unlimited).
    pub max_deliveries: u32,
    /// Where exhausted messages go.
    pub dead_letter: Option<String>,
    /// Age at which messages are dropped (0: never).
    pub retention_ms: u64,
    /// How long producer ids are remembered.
    pub dedup_window_ms: u64,
    /// Most messages held.
    pub max_depth: usize,
    /// Most producer ids held in the window.
    pub max_dedup_ids: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Delayed { until: Time },
    InFlight { until: Time, nonce: u64 },
}

#[derive(Clone, Debug)]
struct Entry {
    id: String,
    msg: Value,
    deliveries: u32,
    enqueued_at: Time,
    expires_at: Option<Time>,
    state: State,
    dead_letter: Option<DeadLetter>,
}

/// Why a queue refused a request.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue holds `max_depth` messages.
    Full,
    /// The dedup window holds `max_dedup_ids` producer ids.
    DedupFull,
    /// The receipt is malformed, unknown, or not the message's latest delivery.
    InvalidReceipt,
}

/// A message leaving a queue for its dead-letter queue.
#[derive(Clone, Debug)]
pub struct Exhausted {
    id: String,
    msg: Value,
    dead_letter: DeadLetter,
}

/// One work queue.
#[derive(Debug)]
pub struct Queue {
    name: String,
    config: QueueConfig,
    entries: BTreeMap<u64, Entry>,
    ready: BTreeSet<u64>,
    wakeups: BTreeSet<(Time, u64)>,
    expiries: BTreeSet<(Time, u64)>,
    dedup: BTreeMap<String, Time>,
    dedup_by_age: BTreeSet<(Time, String)>,
    next_seq: u64,
    next_nonce: u64,
    in_flight: usize,
    delayed: usize,
    counts: QueueStats,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String, config: QueueConfig) -> Queue {
        Queue {
            name,
            config,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            wakeups: BTreeSet::new(),
            expiries: BTreeSet::new(),
            dedup: BTreeMap::new(),
            dedup_by_age: BTreeSet::new(),
            next_seq: 0,
            next_nonce: 0,
            in_flight: 0,
            delayed: 0,
            counts: QueueStats::default(),
        }
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Messages held.
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Room for this many more messages.
    pub fn room(&self) -> usize {
        self.config.max_depth.saturating_sub(self.entries.len())
    }

    /// True if a message is visible now.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Adds a message. A producer `id` seen within the dedup window returns
    /// `(id, true)` and adds nothing.
    pub fn enqueue(
        &mut self,
        now: Time,
        id: Option<String>,
        msg: Value,
        delay_ms: u64,
        ttl_ms: Option<u64>,
    ) -> Result<(String, bool), QueueError> {
        self.forget_old_ids(now);
        if let Some(id) = &id {
            if self.dedup.contains_key(id) {
                return Ok((id.clone(), true));
            }
            if self.dedup.len() >= self.config.max_dedup_ids {
                return Err(QueueError::DedupFull);
            }
        }
        if self.entries.len() >= self.config.max_depth {
            return Err(QueueError::Full);
        }
        let seq = self.next_seq;
        let id = match id {
            Some(id) => {
                self.dedup.insert(id.clone(), now);
                self.dedup_by_age.insert((now, id.clone()));
                id
            }
            None => format!("m-{seq}"),
        };
        let ttl_ms = ttl_ms.or((self.config.retention_ms > 0).then_some(self.config.retention_ms));
        self.insert(
            now,
            id.clone(),
            msg,
            delay_ms,
            ttl_ms.map(|ms| now.plus_millis(ms)),
            None,
        );
        self.counts.enqueued += 1;
        Ok((id, false))
    }

    /// Adds a message without dedup (dead letters, redrives); the caller checked room.
    fn insert(
        &mut self,
        now: Time,
        id: String,
        msg: Value,
        delay_ms: u64,
        expires_at: Option<Time>,
        dead_letter: Option<DeadLetter>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let state = if delay_ms > 0 {
            let until = now.plus_millis(delay_ms);
            self.wakeups.insert((until, seq));
            self.delayed += 1;
            State::Delayed { until }
        } else {
            self.ready.insert(seq);
            State::Ready
        };
        if let Some(at) = expires_at {
            self.expiries.insert((at, seq));
        }
        let entry = Entry {
            id,
            msg,
            deliveries: 0,
            enqueued_at: now,
            expires_at,
            state,
            dead_letter,
        };
        self.entries.insert(seq, entry);
    }

    /// Accepts a message dead-lettered from another queue (the caller checked room).
    pub fn accept_dead_letter(&mut self, now: Time, exhausted: Exhausted) {
        let Exhausted {
            id,
            msg,
            dead_letter,
        } = exhausted;
        let expires =
            (self.config.retention_ms > 0).then(|| now.plus_millis(self.config.retention_ms));
        self.insert(now, id, msg, 0, expires, Some(dead_letter));
        self.counts.enqueued += 1;
    }

    /// Delivers up to `max` visible messages, invisible for `visibility_ms`.
    pub fn dequeue(&mut self, now: Time, max: usize, visibility_ms: Option<u64>) -> Vec<Delivery> {
        let until = now.plus_millis(visibility_ms.unwrap_or(self.config.visibility_ms));
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.ready.pop_first() else {
                break;
            };
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            let entry = self.entries.get_mut(&seq).expect("ready messages exist");
            entry.deliveries += 1;
            entry.state = State::InFlight { until, nonce };
            self.wakeups.insert((until, seq));
            self.in_flight += 1;
            out.push(Delivery {
                id: entry.id.clone(),
                receipt: format!("{seq}.{nonce}"),
                msg: entry.msg.clone(),
                deliveries: entry.deliveries,
                dead_letter: entry.dead_letter.clone(),
            });
        }
        out
    }

    /// Finds the in-flight message a receipt names, if it is the latest delivery.
    fn in_flight_entry(&self, receipt: &str) -> Result<(u64, Time), QueueError> {
        let (seq, nonce) = receipt.split_once('.').ok_or(QueueError::InvalidReceipt)?;
        let seq: u64 = seq.parse().map_err(|_| QueueError::InvalidReceipt)?;
        let nonce: u64 = nonce.parse().map_err(|_| QueueError::InvalidReceipt)?;
        match self.entries.get(&seq).map(|e| e.state) {
            Some(State::InFlight { until, nonce: n }) if n == nonce => Ok((seq, until)),
            _ => Err(QueueError::InvalidReceipt),
        }
    }

    /// The delivery is done: the message is removed for good.
    pub fn ack(&mut self, receipt: &str) -> Result<(), QueueError> {
        let (seq, until) = self.in_flight_entry(receipt)?;
        self.wakeups.remove(&(until, seq));
        self.in_flight -= 1;
        self.remove(seq);
        self.counts.acked += 1;
        Ok(())
    }

    /// The delivery failed: visible again after `delay_ms` (it keeps its count, so it
    /// may be dead-lettered when it becomes visible).
    pub fn nack(&mut self, now: Time, receipt: &str, delay_ms: u64) -> Result<(), QueueError> {
        let (seq, until) = self.in_flight_entry(receipt)?;
        self.wakeups.remove(&(until, seq));
        self.in_flight -= 1;
        let until = now.plus_millis(delay_ms);
        self.entries.get_mut(&seq).expect("in flight").state = State::Delayed { until };
        self.delayed += 1;
        self.wakeups.insert((until, seq));
        Ok(())
    }

    /// Keeps a delivery invisible until `visibility_ms` from now.
    pub fn extend(
        &mut self,
        now: Time,
        receipt: &str,
        visibility_ms: u64,
    ) -> Result<(), QueueError> {
        let (seq, until) = self.in_flight_entry(receipt)?;
        let entry = self.entries.get_mut(&seq).expect("in flight");
        let State::InFlight { nonce, .. } = entry.state else {
            unreachable!("checked in flight")
        };
        let new_until = now.plus_millis(visibility_ms);
        entry.state = State::InFlight {
            until: new_until,
            nonce,
        };
        self.wakeups.remove(&(until, seq));
        self.wakeups.insert((new_until, seq));
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        if let Some(at) = entry.expires_at {
            self.expiries.remove(&(at, seq));
        }
        Some(entry)
    }

    fn forget_old_ids(&mut self, now: Time) {
        while let Some((at, _)) = self.dedup_by_age.first() {
            if at.plus_millis(self.config.dedup_window_ms) > now {
                break;
            }
            let (_, id) = self.dedup_by_age.pop_first().expect("checked non-empty");
            self.dedup.remove(&id);
        }
    }

    /// Applies everything due by `now`: expiries, delays and visibility timeouts ending.
    /// A message becoming visible after `max_deliveries` is taken out and returned for
    /// the dead-letter queue, up to `dead_letter_room` of them; the rest stay visible.
    pub fn process_due(&mut self, now: Time, mut dead_letter_room: usize) -> Vec<Exhausted> {
        while let Some(&(at, seq)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            let entry = self.entries.remove(&seq).expect("expiring messages exist");
            match entry.state {
                State::Ready => {
                    self.ready.remove(&seq);
                }
                State::Delayed { until } => {
                    self.wakeups.remove(&(until, seq));
                    self.delayed -= 1;
                }
                State::InFlight { until, .. } => {
                    self.wakeups.remove(&(until, seq));
                    self.in_flight -= 1;
                }
            }
            self.counts.expired += 1;
        }
        self.forget_old_ids(now);
        let mut exhausted = Vec::new();
        while let Some(&(at, seq)) = self.wakeups.first() {
            if at > now {
                break;
            }
            self.wakeups.pop_first();
            let entry = self.entries.get_mut(&seq).expect("waking messages exist");
            match entry.state {
                State::Delayed { .. } => self.delayed -= 1,
                State::InFlight { .. } => self.in_flight -= 1,
                State::Ready => unreachable!("ready messages have no wakeup"),
            }
            let max = self.config.max_deliveries;
            if max > 0 && entry.deliveries >= max && dead_letter_room > 0 {
                dead_letter_room -= 1;
                let entry = self.remove(seq).expect("present");
                self.counts.dead_lettered += 1;
                let reason = format!(
                    "delivered {} times (max_deliveries {max})",
                    entry.deliveries
                );
                let dead_letter = DeadLetter {
                    queue: self.name.clone(),
                    reason,
                    deliveries: entry.deliveries,
                };
                exhausted.push(Exhausted {
                    id: entry.id,
                    msg: entry.msg,
                    dead_letter,
                });
            } else {
                entry.state = State::Ready;
                self.ready.insert(seq);
            }
        }
        exhausted
    }

    /// Takes up to `max` visible messages out (for a redrive), oldest first.
    pub fn take_ready(&mut self, max: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.ready.pop_first() else {
                break;
            };
            let entry = self.remove(seq).expect("ready messages exist");
            out.push((entry.id, entry.msg));
        }
        out
    }

    /// Adds a redriven message: fresh, with no delivery count and no dead-letter mark.
    pub fn accept_redriven(&mut self, now: Time, id: String, msg: Value) {
        let expires =
            (self.config.retention_ms > 0).then(|| now.plus_millis(self.config.retention_ms));
        self.insert(now, id, msg, 0, expires, None);
        self.counts.enqueued += 1;
    }

    /// When the queue next has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        let dedup = self
            .dedup_by_age
            .first()
            .map(|(at, _)| at.plus_millis(self.config.dedup_window_ms));
        [
            self.wakeups.first().map(|w| w.0),
            self.expiries.first().map(|e| e.0),
            dedup,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The queue's counts at `now`.
    pub fn stats(&self, now: Time) -> QueueStats {
        let oldest = self
            .entries
            .values()
            .next()
            .map_or(0, |e| now.micros_since(e.enqueued_at) / 1000);
        QueueStats {
            depth: self.entries.len(),
            ready: self.ready.len(),
            in_flight: self.in_flight,
            delayed: self.delayed,
            oldest_age_ms: oldest,
            ..self.counts.clone()
        }
    }

    /// Panics if the indexes disagree with the messages' states (O(n): tests only).
    pub fn check_invariants(&self) {
        let (mut ready, mut delayed, mut in_flight) = (0, 0, 0);
        for (&seq, entry) in &self.entries {
            match entry.state {
                State::Ready => {
                    ready += 1;
                    assert!(
                        self.ready.contains(&seq),
                        "ready message missing from index"
                    );
                }
                State::Delayed { until } => {
                    delayed += 1;
                    assert!(
                        self.wakeups.contains(&(until, seq)),
                        "delayed message without wakeup"
                    );
                }
                State::InFlight { until, .. } => {
                    in_flight += 1;
                    assert!(
                        self.wakeups.contains(&(until, seq)),
                        "in-flight message without wakeup"
                    );
                }
            }
            if let Some(at) = entry.expires_at {
                assert!(
                    self.expiries.contains(&(at, seq)),
                    "expiring message without index"
                );
            }
        }
        assert_eq!(ready, self.ready.len(), "stale entries in the ready index");
        assert_eq!(delayed + in_flight, self.wakeups.len(), "stale wakeups");
        assert_eq!(
            (delayed, in_flight),
            (self.delayed, self.in_flight),
            "state counters drifted"
        );
        assert_eq!(
            self.expiries.len(),
            self.entries
                .values()
                .filter(|e| e.expires_at.is_some())
                .count()
        );
        assert!(
            self.entries.len() <= self.config.max_depth,
            "queue over max_depth"
        );
        assert_eq!(
            self.dedup.len(),
            self.dedup_by_age.len(),
            "dedup indexes differ"
        );
    }
}
