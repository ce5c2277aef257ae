//! A work queue with at-least-once delivery (SQS-style).
//!
//! Every message has a sequence number, and nothing scans the queue:
//! - `entries` ([`SeqMap`]): the messages by sequence number, packed in chunks, each
//!   marked ready (visible) or not; the first ready one is the next delivery (FIFO);
//! - `waiting`: the messages that are not ready, with when they will be (a delay, or
//!   a visibility timeout) and, for a delivery in flight, its receipt's nonce;
//! - `wakeups`: (time, seq) for every waiting message;
//! - `expiries` and `expires_at`: (time, seq) and seq → time for messages with a TTL;
//! - `dedup`: producer ids seen within the dedup window, aged out in time order.
//!
//! So a ready message with no TTL and no producer id costs one [`Entry`] (40 bytes)
//! and its body: what a queue holds at depth is its ready backlog, and the maps above
//! cost only for messages that use what they index.
//!
//! A delivery gets a receipt `<seq>.<nonce>`; a new delivery of the same message gets a
//! new nonce, so only the latest receipt can ack, nack or extend it.

// The queue alone is public to benchmarks (feature `sim`, re-exported by `sim`);
// without that feature its `pub` items stay inside the crate.
#![cfg_attr(not(feature = "sim"), allow(unreachable_pub))]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::seq_map::SeqMap;
use crate::wire::msg::{DeadLetter, Delivery, QueueStats};
use crate::wire::Json;
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

/// One held message, kept small: a broker-made id is not stored but derived from the
/// sequence number, and what few messages have (a producer id, dead-letter details)
/// is boxed apart.
#[derive(Clone, Debug)]
struct Entry {
    msg: Json,
    enqueued_at: Time,
    deliveries: u32,
    extras: Option<Box<Extras>>,
}

#[derive(Clone, Debug)]
struct Extras {
    /// The producer's id (`None`: the broker's, `m-<seq>`).
    id: Option<String>,
    dead_letter: Option<DeadLetter>,
}

impl Entry {
    fn id(&self, seq: u64) -> String {
        match self.extras.as_ref().and_then(|x| x.id.clone()) {
            Some(id) => id,
            None => generated_id(seq),
        }
    }

    fn dead_letter(&self) -> Option<&DeadLetter> {
        self.extras.as_ref()?.dead_letter.as_ref()
    }
}

/// A message that is not ready: until when, and the nonce of its delivery in flight
/// (`None`: delayed, or returned by a nack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wait {
    until: Time,
    nonce: Option<u64>,
}

fn generated_id(seq: u64) -> String {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(seq);
    let mut id = String::with_capacity(2 + digits.len());
    id.push_str("m-");
    id.push_str(digits);
    id
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
#[derive(Debug)]
pub struct Queue {
    name: String,
    config: QueueConfig,
    entries: SeqMap<Entry>,
    waiting: BTreeMap<u64, Wait>,
    wakeups: BTreeSet<(Time, u64)>,
    expires_at: BTreeMap<u64, Time>,
    expiries: BTreeSet<(Time, u64)>,
    dedup: BTreeMap<String, Time>,
    dedup_by_age: BTreeSet<(Time, String)>,
    next_seq: u64,
    next_nonce: u64,
    in_flight: usize,
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
            entries: SeqMap::default(),
            waiting: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            expires_at: BTreeMap::new(),
            expiries: BTreeSet::new(),
            dedup: BTreeMap::new(),
            dedup_by_age: BTreeSet::new(),
            next_seq: 0,
            next_nonce: 0,
            in_flight: 0,
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
        self.entries.ready_len() > 0
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
        dead_letter: Option<DeadLetter>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let extras =
            (id.is_some() || dead_letter.is_some()).then(|| Box::new(Extras { id, dead_letter }));
        let entry = Entry {
            msg,
            enqueued_at: now,
            deliveries: 0,
            extras,
        };
        self.entries.push(seq, entry, delay_ms == 0);
        if delay_ms > 0 {
            self.wait(seq, now.plus_millis(delay_ms), None);
        }
        if let Some(at) = expires_at {
            self.expires_at.insert(seq, at);
            self.expiries.insert((at, seq));
        }
        seq
    }

    /// Makes a held message wait until `until` (it is not ready, nor waiting already).
    fn wait(&mut self, seq: u64, until: Time, nonce: Option<u64>) {
        self.wakeups.insert((until, seq));
        self.in_flight += usize::from(nonce.is_some());
        let before = self.waiting.insert(seq, Wait { until, nonce });
        assert!(before.is_none(), "a message waits once");
    }

    /// Ends a message's wait (it is about to become ready, or leave).
    fn end_wait(&mut self, seq: u64) -> Option<Wait> {
        let wait = self.waiting.remove(&seq)?;
        self.wakeups.remove(&(wait.until, seq));
        self.in_flight -= usize::from(wait.nonce.is_some());
        Some(wait)
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
        self.insert(now, Some(id), msg, 0, expires, Some(dead_letter));
        self.counts.enqueued += 1;
    }

    /// Delivers up to `max` visible messages, invisible for `visibility_ms`.
    pub fn dequeue(&mut self, now: Time, max: usize, visibility_ms: Option<u64>) -> Vec<Delivery> {
        let until = now.plus_millis(visibility_ms.unwrap_or(self.config.visibility_ms));
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.entries.pop_first_ready() else {
                break;
            };
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            self.wait(seq, until, Some(nonce));
            let entry = self.entries.get_mut(seq).expect("ready messages exist");
            entry.deliveries += 1;
            out.push(Delivery {
                id: entry.id(seq),
                receipt: format!("{seq}.{nonce}"),
                msg: entry.msg.clone(),
                deliveries: entry.deliveries,
                dead_letter: entry.dead_letter().cloned(),
            });
        }
        out
    }

    /// The seq of the delivery a receipt names, if it is the latest delivery and still
    /// in flight.
    fn in_flight_seq(&self, receipt: &str) -> Result<u64, QueueError> {
        let (seq, nonce) = receipt.split_once('.').ok_or(QueueError::InvalidReceipt)?;
        let seq: u64 = seq.parse().map_err(|_| QueueError::InvalidReceipt)?;
        let nonce: u64 = nonce.parse().map_err(|_| QueueError::InvalidReceipt)?;
        match self.waiting.get(&seq) {
            Some(wait) if wait.nonce == Some(nonce) => Ok(seq),
            _ => Err(QueueError::InvalidReceipt),
        }
    }

    /// Whether `receipt` names a delivery in flight now (what `ack` needs).
    pub(crate) fn check_receipt(&self, receipt: &str) -> Result<(), QueueError> {
        self.in_flight_seq(receipt).map(|_| ())
    }

    /// Room for this many more producer ids in the dedup window.
    pub(crate) fn dedup_room(&self) -> usize {
        self.config.max_dedup_ids.saturating_sub(self.dedup.len())
    }

    /// The delivery is done: the message is removed for good.
    pub fn ack(&mut self, receipt: &str) -> Result<(), QueueError> {
        let seq = self.in_flight_seq(receipt)?;
        self.end_wait(seq);
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
        let seq = self.in_flight_seq(receipt)?;
        self.end_wait(seq);
        self.wait(seq, now.plus_millis(delay_ms), None);
        Ok(())
    }

    /// Keeps a delivery invisible until `visibility_ms` from now.
    pub(crate) fn extend(
        &mut self,
        now: Time,
        receipt: &str,
        visibility_ms: u64,
    ) -> Result<(), QueueError> {
        let seq = self.in_flight_seq(receipt)?;
        let nonce = self.end_wait(seq).and_then(|w| w.nonce);
        self.wait(seq, now.plus_millis(visibility_ms), nonce);
        Ok(())
    }

    /// Takes a message out of `entries` and its TTL index (not out of `waiting`).
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(seq)?;
        if let Some(at) = self.expires_at.remove(&seq) {
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
            self.end_wait(seq);
            self.remove(seq).expect("expiring messages exist");
            self.counts.expired += 1;
        }
        self.forget_old_ids(now);
        let mut exhausted = Vec::new();
        while let Some(&(at, seq)) = self.wakeups.first() {
            if at > now {
                break;
            }
            self.end_wait(seq);
            let deliveries = self
                .entries
                .get(seq)
                .expect("waking messages exist")
                .deliveries;
            let max = self.config.max_deliveries;
            if max > 0 && deliveries >= max && dead_letter_room > 0 {
                dead_letter_room -= 1;
                let entry = self.remove(seq).expect("present");
                self.counts.dead_lettered += 1;
                let dead_letter = DeadLetter {
                    queue: self.name.clone(),
                    reason: format!("delivered {deliveries} times (max_deliveries {max})"),
                    deliveries,
                };
                exhausted.push(Exhausted {
                    id: entry.id(seq),
                    msg: entry.msg,
                    dead_letter,
                });
            } else {
                self.entries.set_ready(seq, true);
            }
        }
        exhausted
    }

    /// Takes up to `max` visible messages out (for a redrive), oldest first.
    pub(crate) fn take_ready(&mut self, max: usize) -> Vec<(String, Json)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.entries.pop_first_ready() else {
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
        let oldest =
            (self.entries.first()).map_or(0, |(_, e)| now.micros_since(e.enqueued_at) / 1000);
        QueueStats {
            depth: self.entries.len(),
            ready: self.entries.ready_len(),
            in_flight: self.in_flight,
            delayed: self.waiting.len() - self.in_flight,
            oldest_age_ms: oldest,
            ..self.counts.clone()
        }
    }

    /// Panics if the indexes disagree with the messages' states (O(n): tests only).
    pub(crate) fn check_invariants(&self) {
        self.entries.check_invariants();
        for (seq, _) in self.entries.iter() {
            assert_ne!(
                self.entries.is_ready(seq),
                self.waiting.contains_key(&seq),
                "a message is either ready or waiting"
            );
        }
        for (&seq, wait) in &self.waiting {
            assert!(self.entries.get(seq).is_some(), "a waiting message is gone");
            assert!(
                self.wakeups.contains(&(wait.until, seq)),
                "wait without wakeup"
            );
        }
        assert_eq!(self.wakeups.len(), self.waiting.len(), "stale wakeups");
        let in_flight = self.waiting.values().filter(|w| w.nonce.is_some()).count();
        assert_eq!(in_flight, self.in_flight, "in-flight count drifted");
        for (&seq, &at) in &self.expires_at {
            assert!(
                self.entries.get(seq).is_some(),
                "an expiring message is gone"
            );
            assert!(self.expiries.contains(&(at, seq)), "expiry without index");
        }
        assert_eq!(self.expiries.len(), self.expires_at.len(), "stale expiries");
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

/// How a message's state is written in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredState {
    Ready,
    Delayed { until: Time },
    InFlight { until: Time, nonce: u64 },
}

/// A message as a snapshot holds it: each one with its whole state, the layout
/// snapshots had when every message was a tree entry (so those load unchanged).
#[derive(Serialize, Deserialize)]
struct StoredEntry<'a> {
    id: Option<Cow<'a, str>>,
    msg: Cow<'a, Json>,
    deliveries: u32,
    enqueued_at: Time,
    expires_at: Option<Time>,
    state: StoredState,
    dead_letter: Option<Cow<'a, DeadLetter>>,
}

/// A queue as a snapshot holds it. The indexes (ready set, wakeups, expiries and
/// their counts) follow from the messages' states and are rebuilt on load; snapshots
/// that still carry them load too (the extra fields are ignored).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    name: Cow<'a, str>,
    config: Cow<'a, QueueConfig>,
    entries: StoredEntries<'a>,
    dedup: Cow<'a, BTreeMap<String, Time>>,
    dedup_by_age: Cow<'a, BTreeSet<(Time, String)>>,
    next_seq: u64,
    next_nonce: u64,
    counts: Cow<'a, QueueStats>,
}

/// The messages: written straight from a queue, read into a map.
enum StoredEntries<'a> {
    Of(&'a Queue),
    Read(BTreeMap<u64, StoredEntry<'static>>),
}

impl Queue {
    fn stored_entry<'a>(&'a self, seq: u64, entry: &'a Entry) -> StoredEntry<'a> {
        let state = match self.waiting.get(&seq) {
            None => StoredState::Ready,
            Some(&Wait { until, nonce: None }) => StoredState::Delayed { until },
            Some(&Wait {
                until,
                nonce: Some(nonce),
            }) => StoredState::InFlight { until, nonce },
        };
        let extras = entry.extras.as_deref();
        StoredEntry {
            id: extras.and_then(|x| x.id.as_deref()).map(Cow::Borrowed),
            msg: Cow::Borrowed(&entry.msg),
            deliveries: entry.deliveries,
            enqueued_at: entry.enqueued_at,
            expires_at: self.expires_at.get(&seq).copied(),
            state,
            dead_letter: entry.dead_letter().map(Cow::Borrowed),
        }
    }
}

impl Serialize for StoredEntries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoredEntries::Of(queue) => s.collect_map(
                (queue.entries.iter()).map(|(seq, entry)| (seq, queue.stored_entry(seq, entry))),
            ),
            StoredEntries::Read(entries) => entries.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredEntries<'_> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(StoredEntries::Read)
    }
}

impl Serialize for Queue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            name: Cow::Borrowed(&self.name),
            config: Cow::Borrowed(&self.config),
            entries: StoredEntries::Of(self),
            dedup: Cow::Borrowed(&self.dedup),
            dedup_by_age: Cow::Borrowed(&self.dedup_by_age),
            next_seq: self.next_seq,
            next_nonce: self.next_nonce,
            counts: Cow::Borrowed(&self.counts),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Queue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Queue, D::Error> {
        let stored = Stored::deserialize(d)?;
        let StoredEntries::Read(entries) = stored.entries else {
            unreachable!("entries are read into a map")
        };
        let mut queue = Queue::new(stored.name.into_owned(), stored.config.into_owned());
        queue.dedup = stored.dedup.into_owned();
        queue.dedup_by_age = stored.dedup_by_age.into_owned();
        queue.counts = stored.counts.into_owned();
        for (seq, e) in entries {
            if seq >= stored.next_seq {
                return Err(serde::de::Error::custom(format!(
                    "queue {}: message {seq} is past next_seq {}",
                    queue.name, stored.next_seq
                )));
            }
            let extras = (e.id.is_some() || e.dead_letter.is_some()).then(|| {
                Box::new(Extras {
                    id: e.id.map(Cow::into_owned),
                    dead_letter: e.dead_letter.map(Cow::into_owned),
                })
            });
            let entry = Entry {
                msg: e.msg.into_owned(),
                enqueued_at: e.enqueued_at,
                deliveries: e.deliveries,
                extras,
            };
            queue
                .entries
                .push(seq, entry, e.state == StoredState::Ready);
            match e.state {
                StoredState::Ready => {}
                StoredState::Delayed { until } => queue.wait(seq, until, None),
                StoredState::InFlight { until, nonce } => queue.wait(seq, until, Some(nonce)),
            }
            if let Some(at) = e.expires_at {
                queue.expires_at.insert(seq, at);
                queue.expiries.insert((at, seq));
            }
        }
        queue.entries.skip_to(stored.next_seq);
        queue.next_seq = stored.next_seq;
        queue.next_nonce = stored.next_nonce;
        Ok(queue)
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
                // A snapshot of the queue is the same queue.
                let text = serde_json::to_string(&queue).unwrap();
                let restored: Queue = serde_json::from_str(&text).unwrap();
                restored.check_invariants();
                assert_eq!(format!("{restored:?}"), format!("{queue:?}"), "snapshot");
                queue = restored;
            }
        });
    }

    #[test]
    fn a_snapshot_in_the_layout_of_tree_entries_loads() {
        // Written by the queue that kept a tree entry per message and its indexes.
        let text = r#"{"name":"q","config":{"visibility_ms":30,"max_deliveries":3,
            "dead_letter":"dlq","retention_ms":0,"dedup_window_ms":100,"max_depth":6,
            "max_dedup_ids":4},
            "entries":{
              "0":{"id":"p1","msg":{"a":1},"deliveries":0,"enqueued_at":5,
                   "expires_at":null,"state":"Ready","dead_letter":null},
              "2":{"id":null,"msg":2,"deliveries":1,"enqueued_at":6,"expires_at":900000,
                   "state":{"InFlight":{"until":40000,"nonce":7}},"dead_letter":null},
              "3":{"id":"x","msg":3,"deliveries":3,"enqueued_at":7,"expires_at":null,
                   "state":{"Delayed":{"until":50000}},
                   "dead_letter":{"queue":"src","reason":"r","deliveries":3}}},
            "ready":[0],"wakeups":[[40000,2],[50000,3]],"expiries":[[900000,2]],
            "dedup":{"p1":5},"dedup_by_age":[[5,"p1"]],"next_seq":4,"next_nonce":8,
            "in_flight":1,"delayed":1,
            "counts":{"depth":0,"ready":0,"in_flight":0,"delayed":0,"enqueued":4,
                      "acked":1,"expired":0,"dead_lettered":0,"oldest_age_ms":0}}"#;
        let mut q: Queue = serde_json::from_str(text).unwrap();
        q.check_invariants();
        let stats = q.stats(Time::from_millis(1));
        assert_eq!(
            (stats.depth, stats.ready, stats.in_flight, stats.delayed),
            (3, 1, 1, 1)
        );
        assert_eq!((stats.enqueued, stats.acked), (4, 1));
        assert_eq!(
            q.enqueue(
                Time::ZERO,
                Some("p1".into()),
                9.into(),
                0,
                None,
                SetAside::default()
            ),
            Ok(("p1".into(), true)),
            "the dedup window came along"
        );
        assert_eq!(q.ack("2.7"), Ok(()));
        let first = q.dequeue(Time::ZERO, 5, None);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].id.as_str(), first[0].receipt.as_str()),
            ("p1", "0.8")
        );
        assert_eq!(first[0].msg, serde_json::json!({"a": 1}));
        assert_eq!(q.ack("0.8"), Ok(()));
        q.run_due(Time::from_millis(50), 0);
        let late = q.dequeue(Time::from_millis(50), 5, None);
        assert_eq!(late.len(), 1, "the delayed message woke");
        assert_eq!((late[0].id.as_str(), late[0].deliveries), ("x", 4));
        assert_eq!(
            late[0].dead_letter.as_ref().map(|d| d.queue.as_str()),
            Some("src")
        );
        assert_eq!(q.stats(Time::ZERO).expired, 0);
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
