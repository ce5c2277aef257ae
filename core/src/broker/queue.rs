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

// The queue alone is public to benchmarks (feature `sim`, re-exported by `sim`);
// without that feature its `pub` items stay inside the crate.
#![cfg_attr(not(feature = "sim"), allow(unreachable_pub))]

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::Json;

use crate::wire::msg::{DeadLetter, Delivery, QueueStats};
use crate::Time;

/// A queue's settings, after defaults are applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Ready,
    Delayed { until: Time },
    InFlight { until: Time, nonce: u64 },
}

/// One held message, kept small: a broker-made id is not stored but derived from the
/// sequence number, and dead-letter details (rare) are boxed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// The producer's id, or `None` for a broker-made one (`m-<seq>`).
    id: Option<String>,
    msg: Json,
    deliveries: u32,
    enqueued_at: Time,
    expires_at: Option<Time>,
    state: State,
    dead_letter: Option<Box<DeadLetter>>,
}

impl Entry {
    fn id(&self, seq: u64) -> String {
        self.id.clone().unwrap_or_else(|| generated_id(seq))
    }
}

fn generated_id(seq: u64) -> String {
    format!("m-{seq}")
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
pub(crate) struct Exhausted {
    id: String,
    msg: Json,
    dead_letter: DeadLetter,
}

/// One work queue.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
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

/// Room in a queue that others hold (prepared transactions): an enqueue must leave
/// it free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAside {
    /// Messages.
    pub depth: usize,
    /// Producer ids in the dedup window.
    pub ids: usize,
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
    pub(crate) fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Messages held.
    #[cfg(feature = "sim")]
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Room for this many more messages.
    pub(crate) fn room(&self) -> usize {
        self.config.max_depth.saturating_sub(self.entries.len())
    }

    /// True if a message is visible now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Adds a message, leaving the room in `set_aside` free. A producer `id` seen
    /// within the dedup window returns `(id, true)` and adds nothing.
    pub fn enqueue(
        &mut self,
        now: Time,
        id: Option<String>,
        msg: Json,
        delay_ms: u64,
        ttl_ms: Option<u64>,
        set_aside: SetAside,
    ) -> Result<(String, bool), QueueError> {
        if let Some(repeat) = self.repeat(now, id.as_deref()) {
            return Ok(repeat);
        }
        if id.is_some() && self.dedup_room() <= set_aside.ids {
            return Err(QueueError::DedupFull);
        }
        if self.room() <= set_aside.depth {
            return Err(QueueError::Full);
        }
        Ok(self.add(now, id, msg, delay_ms, ttl_ms))
    }

    /// [`Queue::enqueue`] into room set aside earlier (by a prepared transaction):
    /// the depth and dedup-id limits were checked then.
    pub(crate) fn enqueue_reserved(
        &mut self,
        now: Time,
        id: Option<String>,
        msg: Json,
        delay_ms: u64,
        ttl_ms: Option<u64>,
    ) -> (String, bool) {
        match self.repeat(now, id.as_deref()) {
            Some(repeat) => repeat,
            None => self.add(now, id, msg, delay_ms, ttl_ms),
        }
    }

    /// Forgets producer ids past the dedup window; `(id, true)` if `id` is in it.
    fn repeat(&mut self, now: Time, id: Option<&str>) -> Option<(String, bool)> {
        self.forget_old_ids(now);
        let id = id?;
        self.dedup.contains_key(id).then(|| (id.to_owned(), true))
    }

    /// Adds a new message (limits and repeats already checked): `(its id, false)`.
    fn add(
        &mut self,
        now: Time,
        id: Option<String>,
        msg: Json,
        delay_ms: u64,
        ttl_ms: Option<u64>,
    ) -> (String, bool) {
        if let Some(id) = &id {
            self.dedup.insert(id.clone(), now);
            self.dedup_by_age.insert((now, id.clone()));
        }
        let ttl_ms = ttl_ms.or((self.config.retention_ms > 0).then_some(self.config.retention_ms));
        let expires_at = ttl_ms.map(|ms| now.plus_millis(ms));
        let seq = self.insert(now, id.clone(), msg, delay_ms, expires_at, None);
        self.counts.enqueued += 1;
        (id.unwrap_or_else(|| generated_id(seq)), false)
    }

    /// Adds a message without dedup checks (the caller checked room); returns its seq.
    fn insert(
        &mut self,
        now: Time,
        id: Option<String>,
        msg: Json,
        delay_ms: u64,
        expires_at: Option<Time>,
        dead_letter: Option<Box<DeadLetter>>,
    ) -> u64 {
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
        seq
    }

    /// Accepts a message dead-lettered from another queue (the caller checked room).
    pub(crate) fn accept_dead_letter(&mut self, now: Time, exhausted: Exhausted) {
        let Exhausted {
            id,
            msg,
            dead_letter,
        } = exhausted;
        let expires =
            (self.config.retention_ms > 0).then(|| now.plus_millis(self.config.retention_ms));
        self.insert(now, Some(id), msg, 0, expires, Some(Box::new(dead_letter)));
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
                id: entry.id(seq),
                receipt: format!("{seq}.{nonce}"),
                msg: entry.msg.clone(),
                deliveries: entry.deliveries,
                dead_letter: entry.dead_letter.as_deref().cloned(),
            });
        }
        out
    }

    /// Finds the in-flight message a receipt names, if it is the latest delivery.
    /// The (seq, visible-again time, nonce) of the delivery a receipt names.
    fn in_flight_entry(&self, receipt: &str) -> Result<(u64, Time, u64), QueueError> {
        let (seq, nonce) = receipt.split_once('.').ok_or(QueueError::InvalidReceipt)?;
        let seq: u64 = seq.parse().map_err(|_| QueueError::InvalidReceipt)?;
        let nonce: u64 = nonce.parse().map_err(|_| QueueError::InvalidReceipt)?;
        match self.entries.get(&seq).map(|e| e.state) {
            Some(State::InFlight { until, nonce: n }) if n == nonce => Ok((seq, until, nonce)),
            _ => Err(QueueError::InvalidReceipt),
        }
    }

    /// Whether `receipt` names a delivery in flight now (what `ack` needs).
    pub(crate) fn check_receipt(&self, receipt: &str) -> Result<(), QueueError> {
        self.in_flight_entry(receipt).map(|_| ())
    }

    /// Room for this many more producer ids in the dedup window.
    pub(crate) fn dedup_room(&self) -> usize {
        self.config.max_dedup_ids.saturating_sub(self.dedup.len())
    }

    /// The delivery is done: the message is removed for good.
    pub fn ack(&mut self, receipt: &str) -> Result<(), QueueError> {
        let (seq, until, _) = self.in_flight_entry(receipt)?;
        self.wakeups.remove(&(until, seq));
        self.in_flight -= 1;
        self.remove(seq);
        self.counts.acked += 1;
        Ok(())
    }

    /// The delivery failed: visible again after `delay_ms` (it keeps its count, so it
    /// may be dead-lettered when it becomes visible).
    pub(crate) fn nack(
        &mut self,
        now: Time,
        receipt: &str,
        delay_ms: u64,
    ) -> Result<(), QueueError> {
        let (seq, until, _) = self.in_flight_entry(receipt)?;
        self.wakeups.remove(&(until, seq));
        self.in_flight -= 1;
        let until = now.plus_millis(delay_ms);
        self.entries.get_mut(&seq).expect("in flight").state = State::Delayed { until };
        self.delayed += 1;
        self.wakeups.insert((until, seq));
        Ok(())
    }

    /// Keeps a delivery invisible until `visibility_ms` from now.
    pub(crate) fn extend(
        &mut self,
        now: Time,
        receipt: &str,
        visibility_ms: u64,
    ) -> Result<(), QueueError> {
        let (seq, until, nonce) = self.in_flight_entry(receipt)?;
        let entry = self.entries.get_mut(&seq).expect("in flight");
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
    pub(crate) fn run_due(&mut self, now: Time, mut dead_letter_room: usize) -> Vec<Exhausted> {
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
                    id: entry.id(seq),
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
    pub(crate) fn take_ready(&mut self, max: usize) -> Vec<(String, Json)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.ready.pop_first() else {
                break;
            };
            let entry = self.remove(seq).expect("ready messages exist");
            out.push((entry.id(seq), entry.msg));
        }
        out
    }

    /// Adds a redriven message: fresh, with no delivery count and no dead-letter mark.
    pub(crate) fn accept_redriven(&mut self, now: Time, id: String, msg: Json) {
        let expires =
            (self.config.retention_ms > 0).then(|| now.plus_millis(self.config.retention_ms));
        self.insert(now, Some(id), msg, 0, expires, None);
        self.counts.enqueued += 1;
    }

    /// When the queue next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
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
    pub(crate) fn stats(&self, now: Time) -> QueueStats {
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
    pub(crate) fn check_invariants(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bolero::TypeGenerator;

    #[derive(Clone, Copy, Debug, TypeGenerator)]
    enum Op {
        Enqueue {
            id: Option<u8>,
            delay_ms: u8,
            ttl_ms: Option<u8>,
        },
        Dequeue {
            max: u8,
            visibility_ms: u8,
        },
        Ack {
            pick: u8,
        },
        Nack {
            pick: u8,
            delay_ms: u8,
        },
        Extend {
            pick: u8,
            visibility_ms: u8,
        },
        AdvanceMs(u8),
    }

    #[derive(Clone, Debug, PartialEq)]
    enum ModelState {
        Ready,
        Waiting {
            until: Time,
            receipt: Option<String>,
        },
    }

    #[derive(Clone, Debug)]
    struct ModelMsg {
        seq: u64,
        id: String,
        body: u64,
        deliveries: u32,
        expires_at: Option<Time>,
        state: ModelState,
    }

    /// The obvious, slow queue: a list scanned on every operation.
    #[derive(Default)]
    struct Model {
        msgs: Vec<ModelMsg>,
        ids: Vec<(String, Time)>,
        dead: Vec<(String, u32)>,
        next_seq: u64,
        next_nonce: u64,
        acked: Vec<u64>,
        expired: u64,
    }

    fn config() -> QueueConfig {
        QueueConfig {
            visibility_ms: 30,
            max_deliveries: 3,
            dead_letter: Some("dlq".into()),
            retention_ms: 0,
            dedup_window_ms: 100,
            max_depth: 6,
            max_dedup_ids: 4,
        }
    }

    impl Model {
        fn settle(&mut self, now: Time, max_deliveries: u32) {
            let expired = self
                .msgs
                .iter()
                .filter(|m| m.expires_at.is_some_and(|t| t <= now))
                .count();
            self.expired += expired as u64;
            self.msgs.retain(|m| m.expires_at.is_none_or(|t| t > now));
            let mut waking: Vec<(Time, u64)> = self
                .msgs
                .iter()
                .filter_map(|m| match m.state {
                    ModelState::Waiting { until, .. } if until <= now => Some((until, m.seq)),
                    _ => None,
                })
                .collect();
            waking.sort();
            for (_, seq) in waking {
                let i = self.msgs.iter().position(|m| m.seq == seq).unwrap();
                if self.msgs[i].deliveries >= max_deliveries {
                    let m = self.msgs.remove(i);
                    self.dead.push((m.id, m.deliveries));
                } else {
                    self.msgs[i].state = ModelState::Ready;
                }
            }
            self.ids
                .retain(|(_, at)| at.plus_millis(config().dedup_window_ms) > now);
        }

        /// What `Queue::enqueue` should answer, applied to the model.
        fn enqueue(
            &mut self,
            now: Time,
            id: Option<String>,
            body: u64,
            delay: u64,
            ttl_ms: Option<u64>,
        ) -> Result<(String, bool), QueueError> {
            let config = config();
            match &id {
                Some(id) if self.ids.iter().any(|(i, _)| i == id) => Ok((id.clone(), true)),
                Some(_) if self.ids.len() >= config.max_dedup_ids => Err(QueueError::DedupFull),
                _ if self.msgs.len() >= config.max_depth => Err(QueueError::Full),
                _ => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let id = id.clone().unwrap_or(format!("m-{seq}"));
                    if id.starts_with('p') {
                        self.ids.push((id.clone(), now));
                    }
                    let state = if delay > 0 {
                        ModelState::Waiting {
                            until: now.plus_millis(delay),
                            receipt: None,
                        }
                    } else {
                        ModelState::Ready
                    };
                    let expires_at = ttl_ms.map(|t| now.plus_millis(t));
                    self.msgs.push(ModelMsg {
                        seq,
                        id: id.clone(),
                        body,
                        deliveries: 0,
                        expires_at,
                        state,
                    });
                    Ok((id, false))
                }
            }
        }

        /// What `Queue::dequeue` should deliver, applied to the model.
        fn dequeue(&mut self, now: Time, max: usize, vis: u64) -> Vec<(String, u32, Json)> {
            let mut want = Vec::new();
            for m in self
                .msgs
                .iter_mut()
                .filter(|m| m.state == ModelState::Ready)
                .take(max)
            {
                m.deliveries += 1;
                let receipt = format!("{}.{}", m.seq, self.next_nonce);
                self.next_nonce += 1;
                m.state = ModelState::Waiting {
                    until: now.plus_millis(vis),
                    receipt: Some(receipt),
                };
                want.push((m.id.clone(), m.deliveries, m.body.into()));
            }
            want
        }

        /// The queue's counts must be the model's.
        fn check_stats(&self, stats: &QueueStats) {
            let ready = self
                .msgs
                .iter()
                .filter(|m| m.state == ModelState::Ready)
                .count();
            let in_flight = self
                .msgs
                .iter()
                .filter(|m| {
                    matches!(
                        m.state,
                        ModelState::Waiting {
                            receipt: Some(_),
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(
                (stats.depth, stats.ready, stats.in_flight, stats.delayed),
                (
                    self.msgs.len(),
                    ready,
                    in_flight,
                    self.msgs.len() - ready - in_flight
                )
            );
            assert_eq!(stats.acked, self.acked.len() as u64);
            assert_eq!(
                (stats.expired, stats.dead_lettered),
                (self.expired, self.dead.len() as u64)
            );
        }

        fn in_flight(&self, receipt: &str) -> Option<usize> {
            self.msgs.iter().position(|m| {
                matches!(&m.state, ModelState::Waiting { receipt: Some(r), .. } if r == receipt)
            })
        }
    }

    /// Acks, nacks or extends `receipt` on both the queue and the model: (got, want).
    fn settle(
        queue: &mut Queue,
        model: &mut Model,
        now: Time,
        op: Op,
        receipt: &str,
    ) -> (Result<(), QueueError>, Result<(), QueueError>) {
        let found = model.in_flight(receipt);
        let want = found.map(|_| ()).ok_or(QueueError::InvalidReceipt);
        let got = match op {
            Op::Ack { .. } => {
                if let Some(i) = found {
                    model.acked.push(model.msgs.remove(i).seq);
                }
                queue.ack(receipt)
            }
            Op::Nack { delay_ms, .. } => {
                let until = now.plus_millis(u64::from(delay_ms % 50));
                if let Some(i) = found {
                    model.msgs[i].state = ModelState::Waiting {
                        until,
                        receipt: None,
                    };
                }
                queue.nack(now, receipt, u64::from(delay_ms % 50))
            }
            Op::Extend { visibility_ms, .. } => {
                let until = now.plus_millis(u64::from(visibility_ms % 50));
                if let Some(i) = found {
                    model.msgs[i].state = ModelState::Waiting {
                        until,
                        receipt: Some(receipt.to_owned()),
                    };
                }
                queue.extend(now, receipt, u64::from(visibility_ms % 50))
            }
            _ => unreachable!(),
        };
        (got, want)
    }

    #[test]
    fn queue_matches_a_reference_model() {
        bolero::check!().with_type::<Vec<Op>>().for_each(|ops| {
            let config = config();
            let mut queue = Queue::new("q".into(), config.clone());
            let mut model = Model::default();
            let mut now = Time::ZERO;
            let mut receipts: Vec<String> = Vec::new();
            let mut body = 0u64;
            for &op in ops {
                match op {
                    Op::Enqueue {
                        id,
                        delay_ms,
                        ttl_ms,
                    } => {
                        body += 1;
                        let id = id.map(|i| format!("p{}", i % 8));
                        let ttl_ms = ttl_ms.map(|t| u64::from(t) + 1);
                        let delay = u64::from(delay_ms % 50);
                        let got = queue.enqueue(
                            now,
                            id.clone(),
                            body.into(),
                            delay,
                            ttl_ms,
                            SetAside::default(),
                        );
                        let want = model.enqueue(now, id, body, delay, ttl_ms);
                        assert_eq!(got, want, "enqueue");
                    }
                    Op::Dequeue { max, visibility_ms } => {
                        let max = usize::from(max % 4) + 1;
                        let vis = u64::from(visibility_ms % 50) + 1;
                        let got: Vec<(String, u32, Json)> = queue
                            .dequeue(now, max, Some(vis))
                            .into_iter()
                            .map(|d| {
                                receipts.push(d.receipt.clone());
                                (d.id, d.deliveries, d.msg)
                            })
                            .collect();
                        let want = model.dequeue(now, max, vis);
                        assert_eq!(got, want, "dequeue");
                        assert!(
                            got.iter().all(|(_, d, _)| *d <= config.max_deliveries),
                            "delivered past the limit"
                        );
                    }
                    Op::Ack { pick } | Op::Nack { pick, .. } | Op::Extend { pick, .. } => {
                        let receipt = receipts
                            .get(usize::from(pick) % receipts.len().max(1))
                            .cloned()
                            .unwrap_or_else(|| "9.9".into());
                        let (got, want) = settle(&mut queue, &mut model, now, op, &receipt);
                        assert_eq!(got, want, "{op:?} {receipt}");
                    }
                    Op::AdvanceMs(ms) => now = now.plus_millis(u64::from(ms % 60)),
                }
                let dead: Vec<(String, u32)> = queue
                    .run_due(now, usize::MAX)
                    .into_iter()
                    .map(|e| (e.id, e.dead_letter.deliveries))
                    .collect();
                let before = model.dead.len();
                model.settle(now, config.max_deliveries);
                assert_eq!(dead, model.dead[before..], "dead letters");
                assert!(
                    dead.iter().all(|(_, d)| *d == config.max_deliveries),
                    "dead-lettered early or late"
                );
                queue.check_invariants();
                model.check_stats(&queue.stats(now));
            }
        });
    }

    #[test]
    fn a_receipt_is_only_good_for_the_latest_delivery() {
        let mut q = Queue::new("q".into(), config());
        q.enqueue(Time::ZERO, None, 1.into(), 0, None, SetAside::default())
            .unwrap();
        let first = q.dequeue(Time::ZERO, 1, Some(10)).remove(0);
        q.run_due(Time::from_millis(10), 0);
        let second = q.dequeue(Time::from_millis(10), 1, Some(10)).remove(0);
        assert_eq!((first.deliveries, second.deliveries), (1, 2));
        assert_eq!(
            q.ack(&first.receipt),
            Err(QueueError::InvalidReceipt),
            "stale receipt"
        );
        for bad in ["", "x", "1.", ".1", "0.99"] {
            assert_eq!(q.ack(bad), Err(QueueError::InvalidReceipt), "{bad:?}");
        }
        assert_eq!(q.ack(&second.receipt), Ok(()));
        assert_eq!(
            q.ack(&second.receipt),
            Err(QueueError::InvalidReceipt),
            "acked twice"
        );
        assert_eq!(q.depth(), 0);
    }
}
