//! Append-only logs: a topic partition, or one of the Maelstrom kafka workload's keyed
//! logs, plus the keyed logs' committed offsets per consumer group. A topic
//! partition holds JSON-lines messages and Kafka record batches in one offset space.

use std::collections::{BTreeMap, VecDeque};

use super::producers::Idempotence;
use super::{err, Broker};
use crate::runtime::Ctx;
use crate::wire::msg::{ErrorBody, ErrorCode, Offsets, Payload, PollOk, SendOk};
use crate::wire::Json;
use bytes::Bytes;

/// One entry of a partition's log: a message published through the JSON-lines API
/// (one offset), or a Kafka record batch (as many offsets as it has records).
/// Stored untagged: `{"batch": ...}` or `{"key": ..., "msg": ...}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub(super) enum PartitionEntry {
    /// A Kafka producer's record batch, stored as it came.
    Batch {
        /// The batch.
        batch: StoredBatch,
    },
    /// A JSON-lines message.
    Record {
        /// The key it was published with, if any.
        #[serde(default)]
        key: Option<String>,
        /// The message.
        msg: Json,
    },
}

/// A Kafka record batch (RecordBatch v2) in a partition's log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct StoredBatch {
    /// The batch's bytes; its base offset field is the producer's, not the log's.
    #[serde(with = "crate::wire::kafka_msg::base64_bytes")]
    pub bytes: Bytes,
    /// Records in it: the offsets it takes.
    pub records: u32,
    /// Its largest record timestamp (ms since the Unix epoch).
    pub max_timestamp_ms: i64,
}

/// By hand rather than `untagged`, which buffers a value and so cannot hand a
/// message's text to [`Json`] as it is.
impl<'de> serde::Deserialize<'de> for PartitionEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PartitionEntry, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = PartitionEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a log entry: {batch} or {key, msg}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PartitionEntry, A::Error> {
                let (mut batch, mut key, mut msg) = (None, None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "batch" => batch = Some(map.next_value()?),
                        "key" => key = map.next_value()?,
                        "msg" => msg = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                match (batch, msg) {
                    (Some(batch), None) => Ok(PartitionEntry::Batch { batch }),
                    (None, Some(msg)) => Ok(PartitionEntry::Record { key, msg }),
                    _ => Err(serde::de::Error::custom(
                        "a log entry has either a batch or a msg",
                    )),
                }
            }
        }
        d.deserialize_map(Fields)
    }
}

impl PartitionEntry {
    /// Offsets the entry takes.
    fn offsets(&self) -> u64 {
        match self {
            PartitionEntry::Batch { batch } => u64::from(batch.records),
            PartitionEntry::Record { .. } => 1,
        }
    }
}

/// One message as a JSON-lines reader sees it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ReadRecord {
    /// Its offset.
    pub offset: u64,
    /// Its key, if it has one.
    pub key: Option<String>,
    /// The message.
    pub msg: Json,
}

/// An append-only log of a topic partition or keyed log. Offsets are dense, start at
/// 0 and are never reused; retention drops the oldest entries, so the log holds
/// offsets `start..end`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "StoredLog")]
pub(super) struct PartitionLog {
    /// The offset of the oldest record kept.
    start: u64,
    /// The entries (the name is kept from when every entry was one record).
    records: VecDeque<PartitionEntry>,
    /// The first offset of each entry (derived, so not stored).
    #[serde(skip)]
    bases: VecDeque<u64>,
    /// The offset the next record gets (derived).
    #[serde(skip)]
    end: u64,
}

/// A partition log as stored: the derived indexes are rebuilt on load.
#[derive(serde::Deserialize)]
struct StoredLog {
    #[serde(default)]
    start: u64,
    records: VecDeque<PartitionEntry>,
}

impl From<StoredLog> for PartitionLog {
    fn from(stored: StoredLog) -> PartitionLog {
        let mut log = PartitionLog {
            start: stored.start,
            end: stored.start,
            ..PartitionLog::default()
        };
        for entry in stored.records {
            log.push(entry);
        }
        log
    }
}

impl PartitionLog {
    fn push(&mut self, entry: PartitionEntry) -> u64 {
        let base = self.end;
        self.end += entry.offsets();
        self.bases.push_back(base);
        self.records.push_back(entry);
        base
    }

    /// Appends an entry, then drops the oldest entries while more than `keep`
    /// records would remain without them (retention). Returns its first offset and
    /// how many records were dropped.
    fn append_entry(&mut self, entry: PartitionEntry, keep: usize) -> (u64, usize) {
        let base = self.push(entry);
        let keep = keep.max(1) as u64;
        let mut dropped = 0;
        while self.records.len() > 1 && self.end - self.bases[1] >= keep {
            self.records.pop_front();
            self.bases.pop_front();
            let start = self.bases[0];
            dropped += (start - self.start) as usize;
            self.start = start;
        }
        (base, dropped)
    }

    /// Appends a JSON-lines message (see [`PartitionLog::append_entry`]).
    pub(super) fn append(&mut self, key: Option<String>, msg: Json, keep: usize) -> (u64, usize) {
        self.append_entry(PartitionEntry::Record { key, msg }, keep)
    }

    /// Appends a Kafka record batch (see [`PartitionLog::append_entry`]).
    pub(super) fn append_batch(&mut self, batch: StoredBatch, keep: usize) -> (u64, usize) {
        self.append_entry(PartitionEntry::Batch { batch }, keep)
    }

    /// The index of the entry holding `offset` (the oldest, if `offset` was dropped).
    fn entry_of(&self, offset: u64) -> usize {
        self.bases
            .partition_point(|&b| b <= offset)
            .saturating_sub(1)
    }

    /// The entries from the one holding `from` on (from the oldest kept, if `from`
    /// was dropped), with their first offsets.
    pub(super) fn entries_from(&self, from: u64) -> impl Iterator<Item = (u64, &PartitionEntry)> {
        let first = if from >= self.end {
            self.records.len()
        } else {
            self.entry_of(from)
        };
        self.bases
            .iter()
            .copied()
            .zip(self.records.iter())
            .skip(first)
    }

    /// Up to `max` messages from offset `from` on (from the oldest kept, if `from`
    /// was dropped), for JSON-lines readers: the records of Kafka batches are decoded
    /// (see [`super::kafka_records`]).
    pub(super) fn read(&self, from: u64, max: usize) -> Vec<ReadRecord> {
        let mut out = Vec::new();
        for (offset, entry) in self.entries_from(from) {
            if out.len() >= max {
                break;
            }
            match entry {
                PartitionEntry::Record { key, msg } => out.push(ReadRecord {
                    offset,
                    key: key.clone(),
                    msg: msg.clone(),
                }),
                PartitionEntry::Batch { batch } => {
                    let records = super::kafka_records::decode(offset, batch);
                    let wanted = records.into_iter().filter(|r| r.offset >= from);
                    out.extend(wanted.take(max - out.len()));
                }
            }
        }
        out
    }

    /// The offset of the oldest record kept.
    pub(super) fn start_offset(&self) -> u64 {
        self.start
    }

    /// The offset the next record will get.
    pub(super) fn end_offset(&self) -> u64 {
        self.end
    }

    /// The first offset of the first Kafka batch with a record at or after
    /// `timestamp_ms`, and that batch's largest timestamp.
    pub(super) fn offset_for_time(&self, timestamp_ms: i64) -> Option<(u64, i64)> {
        self.bases
            .iter()
            .zip(&self.records)
            .find_map(|(&base, entry)| match entry {
                PartitionEntry::Batch { batch } if batch.max_timestamp_ms >= timestamp_ms => {
                    Some((base.max(self.start), batch.max_timestamp_ms))
                }
                _ => None,
            })
    }

    /// Records kept.
    pub(super) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// The Maelstrom kafka workload: a log per key, and committed offsets per group.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct KeyedLogs {
    logs: BTreeMap<String, PartitionLog>,
    /// (group, key) → the last offset the group processed.
    #[serde(with = "crate::runtime::pairs")]
    committed: BTreeMap<(String, String), u64>,
}

/// A `send` to a new key was refused: there are `Config::max_log_keys` keys already.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooManyKeys;

/// A commit named an offset past the end of a key's log (nothing was committed).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct OffsetPastEnd {
    /// The key.
    pub key: String,
    /// The offset asked for.
    pub offset: u64,
}

impl KeyedLogs {
    /// Appends `msg` to `key`'s log (creating it, up to `max_keys` logs), keeping its
    /// last `keep` records. Returns the offset and how many old records were dropped.
    pub(super) fn send(
        &mut self,
        key: &str,
        msg: Json,
        max_keys: usize,
        keep: usize,
    ) -> Result<(u64, usize), TooManyKeys> {
        if !self.logs.contains_key(key) && self.logs.len() >= max_keys {
            return Err(TooManyKeys);
        }
        Ok(self
            .logs
            .entry(key.to_owned())
            .or_default()
            .append(None, msg, keep))
    }

    /// Records kept in all logs.
    pub(super) fn record_count(&self) -> usize {
        self.logs.values().map(PartitionLog::len).sum()
    }

    /// For each key: up to `max_per_key` `(offset, msg)` pairs from its offset on, and at
    /// most `max_total` pairs overall; keys with nothing to return are left out.
    pub(super) fn poll(
        &self,
        offsets: &BTreeMap<String, u64>,
        max_per_key: usize,
        max_total: usize,
    ) -> BTreeMap<String, Vec<(u64, Json)>> {
        let mut budget = max_total;
        let mut msgs = BTreeMap::new();
        for (key, &from) in offsets {
            let Some(log) = self.logs.get(key) else {
                continue;
            };
            let pairs: Vec<(u64, Json)> = log
                .read(from, max_per_key.min(budget))
                .into_iter()
                .map(|r| (r.offset, r.msg))
                .collect();
            budget -= pairs.len();
            if !pairs.is_empty() {
                msgs.insert(key.clone(), pairs);
            }
        }
        msgs
    }

    /// Records that `group` processed each key up to and including its offset; an
    /// offset never goes backwards. All-or-nothing: an offset past a key's end (or on a
    /// key with no log) refuses the whole commit.
    pub(super) fn commit(
        &mut self,
        group: &str,
        offsets: &BTreeMap<String, u64>,
    ) -> Result<(), OffsetPastEnd> {
        self.check_commit(offsets)?;
        for (key, &offset) in offsets {
            let slot = self
                .committed
                .entry((group.to_owned(), key.clone()))
                .or_insert(offset);
            *slot = (*slot).max(offset);
        }
        Ok(())
    }

    /// Whether [`KeyedLogs::commit`] would accept `offsets`; changes nothing.
    pub(super) fn check_commit(
        &self,
        offsets: &BTreeMap<String, u64>,
    ) -> Result<(), OffsetPastEnd> {
        for (key, &offset) in offsets {
            let end = self.logs.get(key).map_or(0, PartitionLog::end_offset);
            if offset >= end {
                return Err(OffsetPastEnd {
                    key: key.clone(),
                    offset,
                });
            }
        }
        Ok(())
    }

    /// True if `key` has a log.
    pub(super) fn has_key(&self, key: &str) -> bool {
        self.logs.contains_key(key)
    }

    /// How many keys have a log.
    pub(super) fn key_count(&self) -> usize {
        self.logs.len()
    }

    /// The committed offsets of `keys` for `group` (keys without one are left out).
    pub(super) fn committed(&self, group: &str, keys: &[String]) -> BTreeMap<String, u64> {
        keys.iter()
            .filter_map(|k| {
                let offset = self.committed.get(&(group.to_owned(), k.clone()))?;
                Some((k.clone(), *offset))
            })
            .collect()
    }
}

impl Broker {
    /// Runs a keyed-log request (Maelstrom kafka): `send`, `poll`, `commit_offsets`,
    /// `list_committed_offsets`.
    pub(super) fn handle_logs(
        &mut self,
        cx: &Ctx<'_>,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        let (now, config) = (cx.now, cx.config);
        Ok(match payload {
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
            other => unreachable!("{:?} is not a keyed-log request", other.kind()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `records` offsets whose bytes say which batch it is.
    fn batch(n: u8, records: u32) -> StoredBatch {
        StoredBatch {
            bytes: Bytes::from(vec![n; 4]),
            records,
            max_timestamp_ms: i64::from(n),
        }
    }

    /// JSON messages and Kafka batches in one offset space, against a model of
    /// (first offset, offsets taken) per entry: offsets are dense, retention drops
    /// whole entries oldest first while at least `keep` records remain, a read from
    /// any offset starts at the entry holding it, and the log reads back the same
    /// after a snapshot round trip (its derived indexes are rebuilt).
    #[test]
    fn batches_and_messages_share_offsets_against_a_model() {
        bolero::check!()
            .with_type::<(u8, Vec<(u8, u8)>)>()
            .for_each(|(keep, ops)| {
                let keep = usize::from(*keep % 8) + 1;
                let mut log = PartitionLog::default();
                let mut model: VecDeque<(u64, u64)> = VecDeque::new();
                let mut end = 0;
                for (i, &(records, from)) in ops.iter().enumerate() {
                    let taken = u64::from(records % 4);
                    let (base, _) = if taken == 0 {
                        log.append(None, serde_json::json!(i).into(), keep)
                    } else {
                        log.append_batch(batch(i as u8, taken as u32), keep)
                    };
                    let taken = taken.max(1);
                    assert_eq!(base, end, "the next offset");
                    model.push_back((end, taken));
                    end += taken;
                    while model.len() > 1 && end - model[1].0 >= keep as u64 {
                        model.pop_front();
                    }
                    assert_eq!(log.start_offset(), model[0].0);
                    assert_eq!(log.end_offset(), end);
                    assert_eq!(log.len() as u64, end - model[0].0);
                    let from = u64::from(from) % (end + 2);
                    let first = log.entries_from(from).next().map(|(b, _)| b);
                    let want = model
                        .iter()
                        .rev()
                        .find(|(b, _)| *b <= from)
                        .map_or(model[0].0, |(b, _)| *b);
                    assert_eq!(first, (from < end).then_some(want), "read from {from}");
                }
                let json = serde_json::to_string(&log).unwrap();
                let back: PartitionLog = serde_json::from_str(&json).unwrap();
                assert_eq!(back, log, "a snapshot round trip");
            });
    }

    /// Retention against a model that keeps everything: a log holds exactly the newest
    /// `keep` records, at their original offsets, and reads start at the oldest kept.
    #[test]
    fn retention_keeps_the_newest_records_at_their_offsets() {
        bolero::check!()
            .with_type::<(u8, Vec<(bool, u8, u8)>)>()
            .for_each(|(keep, ops)| {
                let keep = usize::from(*keep % 6) + 1;
                let mut log = PartitionLog::default();
                let mut all: Vec<u64> = Vec::new();
                for &(append, from, max) in ops {
                    if append {
                        let value = all.len() as u64;
                        let (offset, dropped) = log.append(None, value.into(), keep);
                        assert_eq!(offset, value);
                        all.push(value);
                        assert_eq!(dropped, usize::from(all.len() > keep));
                    } else {
                        let first = all.len().saturating_sub(keep) as u64;
                        let from = u64::from(from % 12);
                        let want: Vec<u64> = all
                            .iter()
                            .copied()
                            .filter(|&o| o >= from.max(first))
                            .take(usize::from(max % 4))
                            .collect();
                        let got: Vec<u64> = log
                            .read(from, usize::from(max % 4))
                            .into_iter()
                            .map(|r| {
                                assert_eq!(
                                    r.msg,
                                    serde_json::json!(r.offset),
                                    "record at its offset"
                                );
                                r.offset
                            })
                            .collect();
                        assert_eq!(got, want);
                    }
                    assert_eq!(log.end_offset(), all.len() as u64);
                    assert_eq!(log.len(), all.len().min(keep));
                }
            });
    }

    #[test]
    fn offsets_are_dense_and_polls_are_ordered_and_bounded() {
        let mut logs = KeyedLogs::default();
        for i in 0..5 {
            assert_eq!(logs.send("a", i.into(), 10, 100), Ok((i, 0)));
        }
        assert_eq!(logs.send("b", "x".into(), 10, 100), Ok((0, 0)));
        assert_eq!(logs.send("c", 1.into(), 2, 100), Err(TooManyKeys));
        let ask = BTreeMap::from([
            ("a".to_owned(), 2),
            ("b".to_owned(), 5),
            ("zz".to_owned(), 0),
        ]);
        let got = logs.poll(&ask, 2, 100);
        assert_eq!(
            got,
            BTreeMap::from([("a".to_owned(), vec![(2, 2.into()), (3, 3.into())])])
        );
        let ask = BTreeMap::from([("a".to_owned(), 0), ("b".to_owned(), 0)]);
        let got = logs.poll(&ask, 10, 4);
        assert_eq!(got.values().map(Vec::len).sum::<usize>(), 4, "total cap");
    }

    #[test]
    fn keyed_logs_match_a_reference_model() {
        // Ops: (key, Some(msg)) sends; (key, None) with `n` polls from `n` and commits `n`.
        bolero::check!()
            .with_type::<Vec<(u8, Option<i16>, u8)>>()
            .for_each(|ops| {
                let mut logs = KeyedLogs::default();
                let mut model: BTreeMap<String, Vec<Json>> = BTreeMap::new();
                let mut committed: BTreeMap<String, u64> = BTreeMap::new();
                for &(key, msg, n) in ops {
                    let key = format!("k{}", key % 3);
                    let n = u64::from(n % 8);
                    match msg {
                        Some(msg) => {
                            let log = model.entry(key.clone()).or_default();
                            assert_eq!(
                                logs.send(&key, msg.into(), 100, usize::MAX).map(|(o, _)| o),
                                Ok(log.len() as u64),
                                "dense offsets"
                            );
                            log.push(msg.into());
                        }
                        None => {
                            let got = logs.poll(&BTreeMap::from([(key.clone(), n)]), 3, 100);
                            let want: Vec<(u64, Json)> = model
                                .get(&key)
                                .map(|log| {
                                    log.iter()
                                        .cloned()
                                        .enumerate()
                                        .map(|(o, v)| (o as u64, v))
                                        .collect::<Vec<_>>()
                                })
                                .unwrap_or_default()
                                .into_iter()
                                .skip(n as usize)
                                .take(3)
                                .collect();
                            assert_eq!(
                                got.get(&key).cloned().unwrap_or_default(),
                                want,
                                "poll from {n}"
                            );
                            let sent = model.get(&key).map_or(0, Vec::len) as u64;
                            let result = logs.commit("g", &BTreeMap::from([(key.clone(), n)]));
                            assert_eq!(result.is_ok(), n < sent, "commit {n} of {sent}");
                            if n < sent {
                                let c = committed.entry(key.clone()).or_insert(n);
                                *c = (*c).max(n);
                            }
                        }
                    }
                    let keys: Vec<String> = (0..3).map(|k| format!("k{k}")).collect();
                    assert_eq!(
                        logs.committed("g", &keys),
                        committed,
                        "commits never go backwards"
                    );
                }
            });
    }

    #[test]
    fn commits_never_go_backwards_and_refuse_past_the_end() {
        let mut logs = KeyedLogs::default();
        for i in 0..3 {
            logs.send("k", i.into(), 10, usize::MAX).unwrap();
        }
        let one = |o| BTreeMap::from([("k".to_owned(), o)]);
        logs.commit("", &one(2)).unwrap();
        logs.commit("", &one(1)).unwrap();
        assert_eq!(logs.committed("", &["k".into(), "none".into()]), one(2));
        assert_eq!(logs.committed("other", &["k".into()]), BTreeMap::new());
        assert!(matches!(
            logs.commit("", &one(3)),
            Err(OffsetPastEnd { .. })
        ));
    }
}
