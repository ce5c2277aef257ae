//! Kafka record batches in the broker: the checks a produced batch passes before it
//! is stored ([`check_batch`]), and its records as JSON-lines readers (`fetch`, `poll`)
//! see them ([`decode`]). A value that is
//! JSON text is that JSON; other UTF-8 is a JSON string; other bytes are
//! `{"base64": "..."}`; a null value is `null`. A key is its UTF-8 text, or `base64:`
//! and its base64 form. Headers and timestamps are not shown (docs/kafka.md).
//! For JSON-lines readers:

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use serde_json::json;

use super::logs::{ReadRecord, StoredBatch};
use crate::wire::Json;

/// The records of a stored batch whose first offset is `base`. A batch that cannot
/// be decoded (it was checked when produced, so this means a codec this build lacks)
/// reads as one record describing it.
pub(super) fn decode(base: u64, batch: &StoredBatch) -> Vec<ReadRecord> {
    let mut bytes = batch.bytes.clone();
    match RecordBatchDecoder::decode(&mut bytes) {
        Ok(set) => (set.records.into_iter().enumerate())
            .map(|(i, r)| ReadRecord {
                offset: base + i as u64,
                key: r.key.map(|k| key_text(&k)),
                msg: r.value.map_or_else(Json::default, |v| value_json(&v)),
            })
            .collect(),
        Err(e) => vec![ReadRecord {
            offset: base,
            key: None,
            msg: json!({ "kafka_batch_unreadable": e.to_string(), "records": batch.records })
                .into(),
        }],
    }
}

fn key_text(key: &Bytes) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(key)),
    }
}

fn value_json(value: &Bytes) -> Json {
    match std::str::from_utf8(value) {
        Ok(text) => Json::parse_or_string(text),
        Err(_) => json!({ "base64": STANDARD.encode(value) }).into(),
    }
}

/// Where the fixed fields of a RecordBatch v2 header start.
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
/// The fewest bytes an uncompressed record takes (seven one-byte varints).
const MIN_RECORD_BYTES: usize = 7;

/// What the broker needs from a produced batch's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BatchInfo {
    /// Records in it.
    pub records: u32,
    /// Its largest timestamp.
    pub max_timestamp_ms: i64,
    /// The idempotent producer's id, or −1.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The first record's sequence number, or −1.
    pub base_sequence: i32,
}

/// Checks a Produce partition's record set: exactly one RecordBatch v2, whole, with a
/// matching CRC, at least one record, neither transactional nor a control batch.
pub(super) fn check_batch(records: &Bytes) -> Result<BatchInfo, String> {
    let infos = RecordBatchDecoder::decode_batch_info(&mut records.clone())
        .map_err(|e| format!("the record batch cannot be read: {e}"))?;
    let [info] = infos.as_slice() else {
        return Err(format!(
            "a partition's records must be one v2 batch, not {}",
            infos.len()
        ));
    };
    let len = records
        .get(8..12)
        .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
    if len.map(|len| len as usize + 12) != Some(records.len()) {
        return Err("bytes follow the record batch".into());
    }
    if info.control || info.transactional {
        return Err("transactional and control batches are not supported".into());
    }
    let records_count = u32::try_from(info.record_count)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("a batch of {} records", info.record_count))?;
    let last_offset_delta = records
        .get(LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4)
        .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
    if last_offset_delta != Some(info.record_count - 1) {
        return Err(format!(
            "a batch of {} records whose last offset delta is {last_offset_delta:?}",
            info.record_count
        ));
    }
    let uncompressed = info.compression == Compression::None;
    if uncompressed && records_count as usize * MIN_RECORD_BYTES > records.len() {
        return Err(format!(
            "{records_count} records cannot fit in {} bytes",
            records.len()
        ));
    }
    let max_timestamp_ms = records
        .get(MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8)
        .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or("the batch header is cut short")?;
    Ok(BatchInfo {
        records: records_count,
        max_timestamp_ms,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        base_sequence: info.base_sequence,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// An uncompressed batch of `values`, from producer 7 epoch 1, sequences from 10.
    fn batch(values: &[&str]) -> Bytes {
        batch_of(values, (7, 1, 10), 1_000)
    }

    /// An uncompressed batch of `values` from (producer id, epoch, first sequence),
    /// timestamps from `timestamp_ms` on.
    pub(in crate::broker) fn batch_of(
        values: &[&str],
        (producer_id, producer_epoch, sequence): (i64, i16, i32),
        timestamp_ms: i64,
    ) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: sequence + i as i32,
                timestamp: timestamp_ms + i as i64,
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: IndexMap::new(),
            })
            .collect();
        let mut out = Vec::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut out, records.iter(), &options).unwrap();
        Bytes::from(out)
    }

    #[test]
    fn a_good_batch_is_read_and_a_damaged_one_is_refused() {
        let good = batch(&["a", "b", "c"]);
        let info = check_batch(&good).unwrap();
        assert_eq!(info.records, 3);
        assert_eq!(info.max_timestamp_ms, 1_002);
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (7, 1, 10)
        );
        let mut bad = good.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert!(check_batch(&Bytes::from(bad))
            .unwrap_err()
            .contains("batch"));
        let mut two = good.to_vec();
        two.extend_from_slice(&good);
        assert!(check_batch(&Bytes::from(two)).is_err());
        assert!(check_batch(&good.slice(..good.len() - 1)).is_err());
        assert!(check_batch(&Bytes::new()).is_err());
    }

    /// `batch` with the i32 at `at` set to `value`, its CRC made right again.
    fn altered(batch: &Bytes, at: usize, value: i32) -> Bytes {
        let mut bytes = batch.to_vec();
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bytes)
    }

    #[test]
    fn a_batch_whose_counts_disagree_or_cannot_fit_is_refused() {
        let good = batch(&["a", "b", "c"]);
        assert!(
            check_batch(&altered(&good, 23, 2)).is_ok(),
            "re-signed unchanged"
        );
        let delta = check_batch(&altered(&good, 23, 5)).unwrap_err();
        assert!(delta.contains("last offset delta"), "{delta}");
        let lie = altered(&altered(&good, 57, 1_000), 23, 999);
        assert!(check_batch(&lie).unwrap_err().contains("cannot fit"));
    }

    #[test]
    fn json_readers_see_json_values_text_and_base64() {
        let stored = StoredBatch {
            bytes: batch(&["{\"n\":1}", "plain", "\u{fffd}"]),
            records: 3,
            max_timestamp_ms: 1_002,
        };
        let read: Vec<(u64, serde_json::Value)> = decode(40, &stored)
            .into_iter()
            .map(|r| (r.offset, r.msg.to_value()))
            .collect();
        assert_eq!(read[0], (40, json!({"n": 1})));
        assert_eq!(read[1], (41, json!("plain")));
        assert_eq!(read[2].0, 42);
        assert_eq!(
            value_json(&Bytes::from_static(&[0xff, 0x00])),
            json!({"base64": "/wA="})
        );
        assert_eq!(key_text(&Bytes::from_static(&[0xff])), "base64:/w==");
    }
}
