//! Transactions. `txn` checks a list of operations (writes, acks, offset commits)
//! and then applies all of them in one step, or refuses all of them: the step is one
//! record in the write-ahead log, so a crash replays all or nothing. Two-phase commit
//! splits that for an outside coordinator: `prepare` checks the operations, stores
//! them durably but invisibly, locks what they read (receipts, committed offsets) and
//! sets aside the room their writes need; `commit_txn` applies them (it cannot fail)
//! and `abort_txn` drops them. A prepared transaction nobody finishes aborts after
//! `prepared_timeout_ms`.

use std::collections::{BTreeMap, BTreeSet};

use super::queues::{no_queue, queue_error};
use super::{err, Broker, QueueError};
use crate::broker::logs::OffsetPastEnd;
use crate::runtime::Ctx;
use crate::runtime::Lru;
use crate::runtime::{TimerId, Timers};
use crate::wire::msg::*;
use crate::{Config, Time};

/// Something a prepared transaction holds: nobody else may ack that delivery or
/// commit that offset until it finishes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
enum Lock {
    /// A queue delivery the transaction acks.
    Receipt { queue: String, receipt: String },
    /// A group's committed offset of a keyed log.
    LogOffset { group: String, key: String },
    /// A group's committed offset of a topic partition.
    Partition { group: String, partition: u32 },
}

impl Lock {
    /// The lock on a delivery, whatever way its receipt is spelled (`"01.1"` and
    /// `"1.1"` name one delivery).
    fn receipt(queue: &str, receipt: &str) -> Lock {
        let parsed = receipt
            .split_once('.')
            .and_then(|(seq, nonce)| Some((seq.parse::<u64>().ok()?, nonce.parse::<u64>().ok()?)));
        Lock::Receipt {
            queue: queue.to_owned(),
            receipt: match parsed {
                Some((seq, nonce)) => format!("{seq}.{nonce}"),
                None => receipt.to_owned(),
            },
        }
    }
}

impl std::fmt::Display for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lock::Receipt { queue, receipt } => write!(f, "delivery {receipt} of queue {queue:?}"),
            Lock::LogOffset { group, key } => write!(f, "group {group:?}'s offset of key {key:?}"),
            Lock::Partition { group, partition } => {
                write!(f, "group {group:?}'s offset of partition {partition}")
            }
        }
    }
}

/// What checking a transaction's operations found it needs.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Claims {
    locks: Vec<Lock>,
    /// Log records it appends.
    records: usize,
    /// Queue → messages it enqueues.
    depth: BTreeMap<String, usize>,
    /// Queue → producer ids it adds to the dedup window.
    ids: BTreeMap<String, usize>,
    /// Keyed logs it creates.
    new_keys: BTreeSet<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Prepared {
    ops: Vec<Payload>,
    claims: Claims,
    timer: TimerId,
}

/// How a two-phase transaction ended, for a coordinator that asks again.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Committed(Vec<Payload>),
    Aborted,
}

/// Prepared transactions, their locks and reservations, and recent outcomes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Txns {
    prepared: BTreeMap<String, Prepared>,
    #[serde(with = "crate::runtime::pairs")]
    locks: BTreeMap<Lock, String>,
    /// Log records set aside by prepared transactions.
    reserved_records: usize,
    /// Queue → messages set aside by prepared transactions.
    reserved_depth: BTreeMap<String, usize>,
    /// Queue → dedup ids set aside by prepared transactions.
    reserved_ids: BTreeMap<String, usize>,
    deadlines: Timers<String>,
    outcomes: Lru<String, Outcome>,
}

fn conflict(lock: &Lock, txid: &str) -> ErrorBody {
    err(
        ErrorCode::TxnConflict,
        format!("{lock} is held by prepared transaction {txid:?}"),
    )
}

fn full(what: &str) -> ErrorBody {
    err(ErrorCode::TemporarilyUnavailable, what.to_owned())
}

impl Txns {
    /// No transactions.
    pub(super) fn new(config: &Config) -> Txns {
        Txns {
            prepared: BTreeMap::new(),
            locks: BTreeMap::new(),
            reserved_records: 0,
            reserved_depth: BTreeMap::new(),
            reserved_ids: BTreeMap::new(),
            deadlines: Timers::default(),
            outcomes: Lru::new(config.max_txn_outcomes),
        }
    }

    /// Log records set aside for prepared transactions.
    pub(super) fn reserved_records(&self) -> usize {
        self.reserved_records
    }

    /// Messages of `queue` set aside for prepared transactions.
    pub(super) fn reserved_depth(&self, queue: &str) -> usize {
        self.reserved_depth.get(queue).copied().unwrap_or(0)
    }

    /// Dedup ids of `queue` set aside for prepared transactions.
    pub(super) fn reserved_ids(&self, queue: &str) -> usize {
        self.reserved_ids.get(queue).copied().unwrap_or(0)
    }

    /// Refuses with 30 if a prepared transaction holds this delivery.
    pub(super) fn check_receipt(&self, queue: &str, receipt: &str) -> Result<(), ErrorBody> {
        if self.locks.is_empty() {
            return Ok(()); // the common case: no lock to build and look up
        }
        self.check(&Lock::receipt(queue, receipt))
    }

    /// Refuses with 30 if a prepared transaction holds a group's offset of one of `keys`.
    pub(super) fn check_log_offsets<'a>(
        &self,
        group: &str,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), ErrorBody> {
        keys.into_iter().try_for_each(|key| {
            self.check(&Lock::LogOffset {
                group: group.to_owned(),
                key: key.clone(),
            })
        })
    }

    /// Refuses with 30 if a prepared transaction holds a group's partition offset.
    pub(super) fn check_partitions(
        &self,
        group: &str,
        parsed: &[(u32, u64)],
    ) -> Result<(), ErrorBody> {
        parsed.iter().try_for_each(|&(partition, _)| {
            self.check(&Lock::Partition {
                group: group.to_owned(),
                partition,
            })
        })
    }

    fn check(&self, lock: &Lock) -> Result<(), ErrorBody> {
        match self.locks.get(lock) {
            Some(txid) => Err(conflict(lock, txid)),
            None => Ok(()),
        }
    }

    /// When the next prepared transaction times out.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.deadlines.next_deadline()
    }

    /// Releases what a finished prepared transaction held.
    fn release(&mut self, prepared: &Prepared) {
        for lock in &prepared.claims.locks {
            self.locks.remove(lock);
        }
        self.reserved_records -= prepared.claims.records;
        for (reserved, claimed) in [
            (&mut self.reserved_depth, &prepared.claims.depth),
            (&mut self.reserved_ids, &prepared.claims.ids),
        ] {
            for (queue, n) in claimed {
                let slot = reserved.get_mut(queue).expect("reserved at prepare");
                *slot -= n;
                if *slot == 0 {
                    reserved.remove(queue);
                }
            }
        }
        self.deadlines.cancel(prepared.timer);
    }

    /// Panics if the locks and reservations disagree with the prepared transactions.
    pub(super) fn check_invariants(&self) {
        let mut locks = BTreeMap::new();
        let mut records = 0;
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for (txid, p) in &self.prepared {
            for lock in &p.claims.locks {
                assert!(
                    locks.insert(lock.clone(), txid.clone()).is_none(),
                    "lock held twice"
                );
            }
            records += p.claims.records;
            for (q, n) in &p.claims.depth {
                *depth.entry(q.clone()).or_default() += n;
            }
            for (q, n) in &p.claims.ids {
                *ids.entry(q.clone()).or_default() += n;
            }
            assert!(
                self.deadlines.contains(p.timer),
                "prepared txn without deadline"
            );
        }
        assert_eq!(locks, self.locks, "lock table");
        assert_eq!(records, self.reserved_records, "reserved records");
        assert_eq!(depth, self.reserved_depth, "reserved depth");
        assert_eq!(ids, self.reserved_ids, "reserved dedup ids");
        assert_eq!(self.deadlines.len(), self.prepared.len(), "txn deadlines");
        self.outcomes.check_invariants();
    }
}

impl Broker {
    /// Runs a transaction request: `txn`, `prepare`, `commit_txn`, `abort_txn`,
    /// `list_prepared`.
    pub(super) fn handle_txn(
        &mut self,
        cx: &Ctx<'_>,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        let (now, config) = (cx.now, cx.config);
        match payload {
            Payload::Txn(t) => self.txn(now, config, t.ops),
            Payload::Prepare(p) => self.prepare(now, config, p),
            Payload::CommitTxn(t) => self.commit_txn(now, config, t.txid),
            Payload::AbortTxn(t) => self.abort_txn(t.txid),
            Payload::ListPrepared => Ok(self.list_prepared(now)),
            other => unreachable!("{:?} is not a transaction request", other.kind()),
        }
    }

    /// `txn`: all of `ops` or none of them.
    fn txn(&mut self, now: Time, config: &Config, ops: Vec<Payload>) -> Result<Payload, ErrorBody> {
        self.check_ops(config, &ops)?;
        let results = self.apply_ops(now, config, ops);
        Ok(Payload::TxnOk(TxnOk { results }))
    }

    /// `prepare`: checks `ops`, locks and reserves what they need, stores them.
    fn prepare(&mut self, now: Time, config: &Config, p: Prepare) -> Result<Payload, ErrorBody> {
        if let Some(existing) = self.txns.prepared.get(&p.txid) {
            if existing.ops == p.ops {
                return Ok(Payload::PrepareOk);
            }
            let text = format!("transaction {:?} is prepared with other operations", p.txid);
            return Err(err(ErrorCode::KeyAlreadyExists, text));
        }
        if self.txns.outcomes.get(&p.txid).is_some() {
            let text = format!("transaction {:?} already finished", p.txid);
            return Err(err(ErrorCode::PreconditionFailed, text));
        }
        if self.txns.prepared.len() >= config.max_prepared {
            let text = format!(
                "too many prepared transactions (max_prepared={})",
                config.max_prepared
            );
            return Err(full(&text));
        }
        let claims = self.check_ops(config, &p.ops)?;
        // Keep every delivery it acks invisible past the transaction's own deadline, so
        // the receipt is still good when the coordinator commits.
        let hold_ms = config.prepared_timeout_ms + 1;
        for op in &p.ops {
            if let Payload::Ack(r) = op {
                let q = self.queues.get_mut(&r.queue).expect("checked");
                q.extend(now, &r.receipt, hold_ms).expect("checked receipt");
                self.rewake(&r.queue);
            }
        }
        let t = &mut self.txns;
        for lock in &claims.locks {
            t.locks.insert(lock.clone(), p.txid.clone());
        }
        t.reserved_records += claims.records;
        for (q, n) in &claims.depth {
            *t.reserved_depth.entry(q.clone()).or_default() += n;
        }
        for (q, n) in &claims.ids {
            *t.reserved_ids.entry(q.clone()).or_default() += n;
        }
        let timer = t
            .deadlines
            .schedule(now.plus_millis(config.prepared_timeout_ms), p.txid.clone());
        t.prepared.insert(
            p.txid,
            Prepared {
                ops: p.ops,
                claims,
                timer,
            },
        );
        Ok(Payload::PrepareOk)
    }

    /// `commit_txn`: applies a prepared transaction (or repeats how it ended).
    fn commit_txn(
        &mut self,
        now: Time,
        config: &Config,
        txid: String,
    ) -> Result<Payload, ErrorBody> {
        if let Some(prepared) = self.txns.prepared.remove(&txid) {
            self.txns.release(&prepared);
            let results = self.apply_ops(now, config, prepared.ops);
            self.txns
                .outcomes
                .insert(txid, Outcome::Committed(results.clone()));
            return Ok(Payload::CommitTxnOk(TxnOk { results }));
        }
        match self.txns.outcomes.get(&txid) {
            Some(Outcome::Committed(results)) => Ok(Payload::CommitTxnOk(TxnOk {
                results: results.clone(),
            })),
            Some(Outcome::Aborted) => Err(err(
                ErrorCode::Abort,
                format!("transaction {txid:?} was aborted (abort_txn, or it timed out)"),
            )),
            None => Err(err(
                ErrorCode::KeyDoesNotExist,
                format!("no prepared transaction {txid:?}"),
            )),
        }
    }

    /// `abort_txn`: drops a prepared transaction. Aborting one never prepared is fine
    /// (presumed abort), and a later `prepare` of it is refused.
    fn abort_txn(&mut self, txid: String) -> Result<Payload, ErrorBody> {
        if let Some(prepared) = self.txns.prepared.remove(&txid) {
            self.txns.release(&prepared);
        } else if let Some(Outcome::Committed(_)) = self.txns.outcomes.get(&txid) {
            let text = format!("transaction {txid:?} is already committed");
            return Err(err(ErrorCode::PreconditionFailed, text));
        }
        self.txns.outcomes.insert(txid, Outcome::Aborted);
        Ok(Payload::AbortTxnOk)
    }

    /// `list_prepared`.
    fn list_prepared(&self, now: Time) -> Payload {
        let prepared = self
            .txns
            .prepared
            .iter()
            .map(|(txid, p)| PreparedTxn {
                txid: txid.clone(),
                ops: p.ops.len(),
                expires_in_ms: p.timer.deadline().micros_since(now) / 1_000,
            })
            .collect();
        Payload::ListPreparedOk(PreparedList { prepared })
    }

    /// Aborts prepared transactions whose time ran out.
    pub(super) fn expire_prepared(&mut self, now: Time) {
        while let Some((_, txid)) = self.txns.deadlines.pop_due(now) {
            let prepared = self
                .txns
                .prepared
                .remove(&txid)
                .expect("a deadline per txn");
            // The deadline already fired: release cancels nothing.
            self.txns.release(&prepared);
            self.txns.outcomes.insert(txid, Outcome::Aborted);
        }
    }

    /// Checks every operation against the state now (and against each other): what
    /// would fail, fails here, so applying cannot.
    fn check_ops(&self, config: &Config, ops: &[Payload]) -> Result<Claims, ErrorBody> {
        if ops.is_empty() || ops.len() > config.max_txn_ops {
            let text = format!("a transaction has 1 to {} operations", config.max_txn_ops);
            return Err(err(ErrorCode::MalformedRequest, text));
        }
        let mut claims = Claims::default();
        for op in ops {
            self.check_op(config, op, &mut claims)?;
        }
        Ok(claims)
    }

    fn check_op(
        &self,
        config: &Config,
        op: &Payload,
        claims: &mut Claims,
    ) -> Result<(), ErrorBody> {
        let no_producer = |producer: Option<u64>| match producer {
            Some(_) => Err(err(
                ErrorCode::MalformedRequest,
                "producer fields are not allowed inside a transaction",
            )),
            None => Ok(()),
        };
        let record = |claims: &mut Claims| {
            claims.records += 1;
            if self.records + self.txns.reserved_records + claims.records > config.max_log_records {
                let max = config.max_log_records;
                return Err(full(&format!("logs are full (max_log_records={max})")));
            }
            Ok(())
        };
        match op {
            Payload::Send(s) => {
                no_producer(s.producer)?;
                record(claims)?;
                if !self.logs.has_key(&s.key)
                    && claims.new_keys.insert(s.key.clone())
                    && self.logs.key_count() + claims.new_keys.len() > config.max_log_keys
                {
                    let max = config.max_log_keys;
                    return Err(full(&format!("too many keys (max_log_keys={max})")));
                }
            }
            Payload::Publish(p) => {
                no_producer(p.producer)?;
                if !self.topics.has_topic(&p.topic) {
                    let text = format!("no topic {:?}", p.topic);
                    return Err(err(ErrorCode::KeyDoesNotExist, text));
                }
                record(claims)?;
            }
            Payload::Enqueue(e) => {
                no_producer(e.producer)?;
                self.claim_room(claims, e)?;
            }
            Payload::Ack(r) => {
                let q = self
                    .queues
                    .get(&r.queue)
                    .ok_or_else(|| no_queue(&r.queue))?;
                q.check_receipt(&r.receipt)
                    .map_err(|x| queue_error(&r.queue, x, q.config()))?;
                self.claim(claims, Lock::receipt(&r.queue, &r.receipt))?;
            }
            Payload::CommitOffsets(c) => self.claim_log_offsets(claims, c)?,
            Payload::Commit(c) => {
                let parsed =
                    self.topics
                        .check_commit(&c.group, &c.consumer, c.generation, &c.offsets)?;
                for (partition, _) in parsed {
                    let lock = Lock::Partition {
                        group: c.group.clone(),
                        partition,
                    };
                    self.claim(claims, lock)?;
                }
            }
            other => {
                let text = format!("{:?} cannot be part of a transaction", other.kind());
                return Err(err(ErrorCode::MalformedRequest, text));
            }
        }
        Ok(())
    }

    /// Claims the room an `enqueue` needs in its queue (depth, and a dedup id if it
    /// has one), beside what prepared transactions and earlier operations set aside.
    fn claim_room(&self, claims: &mut Claims, e: &Enqueue) -> Result<(), ErrorBody> {
        let q = self
            .queues
            .get(&e.queue)
            .ok_or_else(|| no_queue(&e.queue))?;
        let depth = claims.depth.entry(e.queue.clone()).or_default();
        *depth += 1;
        if q.room() < self.txns.reserved_depth(&e.queue) + *depth {
            return Err(queue_error(&e.queue, QueueError::Full, q.config()));
        }
        if e.id.is_some() {
            let ids = claims.ids.entry(e.queue.clone()).or_default();
            *ids += 1;
            if q.dedup_room() < self.txns.reserved_ids(&e.queue) + *ids {
                return Err(queue_error(&e.queue, QueueError::DedupFull, q.config()));
            }
        }
        Ok(())
    }

    /// Claims a group's committed offsets of the keys a `commit_offsets` names, once
    /// each offset is known to have been sent.
    fn claim_log_offsets(&self, claims: &mut Claims, c: &CommitOffsets) -> Result<(), ErrorBody> {
        let group = c.group.clone().unwrap_or_default();
        self.logs
            .check_commit(&c.offsets)
            .map_err(|OffsetPastEnd { key, offset }| {
                let text = format!("offset {offset} of key {key:?} was never sent");
                err(ErrorCode::PreconditionFailed, text)
            })?;
        for key in c.offsets.keys() {
            let lock = Lock::LogOffset {
                group: group.clone(),
                key: key.clone(),
            };
            self.claim(claims, lock)?;
        }
        Ok(())
    }

    /// Adds `lock` to `claims`: 30 if a prepared transaction holds it, 12 if this
    /// transaction already touches it.
    fn claim(&self, claims: &mut Claims, lock: Lock) -> Result<(), ErrorBody> {
        self.txns.check(&lock)?;
        if claims.locks.contains(&lock) {
            let text = format!("the transaction touches {lock} twice");
            return Err(err(ErrorCode::MalformedRequest, text));
        }
        claims.locks.push(lock);
        Ok(())
    }

    /// Applies operations that [`Broker::check_ops`] accepted (then, or at prepare).
    fn apply_ops(&mut self, now: Time, config: &Config, ops: Vec<Payload>) -> Vec<Payload> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                Payload::Send(s) => {
                    // The key limit was checked (and reserved for) with the operations.
                    let (offset, dropped) = self
                        .logs
                        .send(&s.key, s.msg, usize::MAX, config.max_records_per_log)
                        .expect("no key limit");
                    self.records = self.records + 1 - dropped;
                    Payload::SendOk(SendOk { offset })
                }
                Payload::Publish(p) => {
                    let (partition, offset, dropped) = self
                        .topics
                        .publish(&p.topic, p.key, p.msg, config.max_records_per_log)
                        .expect("checked: the topic exists, and topics are never deleted");
                    self.records = self.records + 1 - dropped;
                    Payload::PublishOk(PublishOk {
                        partition,
                        offset,
                        duplicate: false,
                    })
                }
                Payload::Enqueue(e) => {
                    let q = self.queues.get_mut(&e.queue).expect("checked: queues stay");
                    let (id, duplicate) =
                        q.enqueue_reserved(now, e.id, e.msg, e.delay_ms.unwrap_or(0), e.ttl_ms);
                    self.serve_waiters(now, &e.queue);
                    self.rewake(&e.queue);
                    Payload::EnqueueOk(EnqueueOk { id, duplicate })
                }
                Payload::Ack(r) => {
                    let q = self.queues.get_mut(&r.queue).expect("checked: queues stay");
                    // The delivery was locked and kept invisible since it was checked;
                    // only its TTL can have removed it since, which is as good as acked.
                    let _ = q.ack(&r.receipt);
                    self.rewake(&r.queue);
                    Payload::AckOk
                }
                Payload::CommitOffsets(c) => {
                    let group = c.group.unwrap_or_default();
                    self.logs
                        .commit(&group, &c.offsets)
                        .expect("checked: a log's end only grows");
                    Payload::CommitOffsetsOk
                }
                Payload::Commit(c) => {
                    let parsed: Vec<(u32, u64)> = c
                        .offsets
                        .iter()
                        .map(|(p, &o)| (p.parse().expect("checked"), o))
                        .collect();
                    self.topics.apply_commit(&c.group, &parsed);
                    Payload::CommitOk
                }
                other => unreachable!("check_op refuses {:?}", other.kind()),
            };
            results.push(result);
        }
        results
    }
}
