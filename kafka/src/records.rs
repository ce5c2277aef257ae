//! Record batches: checking a produced batch before it is stored, and laying out a
//! fetch's record set (stored batches with the log's base offset written in, and
//! JSON-lines messages made into batches of their own).

use bytes::Bytes;
use herald_core::wire::msg::KafkaChunk;
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Where the fixed fields of a RecordBatch v2 header start.
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
/// The fewest bytes an uncompressed record takes (seven one-byte varints).
const MIN_RECORD_BYTES: usize = 7;

/// What the broker needs from a produced batch's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchInfo {
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
pub(crate) fn check_batch(records: &Bytes) -> Result<BatchInfo, String> {
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

/// Appends a fetch's record set: each stored batch with its base offset set to where
/// it is in the log, and each run of JSON-lines messages as one uncompressed batch
/// (value: the message's JSON text; key: its key).
pub(crate) fn write_chunks(chunks: Vec<KafkaChunk>, out: &mut Vec<u8>) -> Result<(), String> {
    let mut run: Vec<Record> = Vec::new();
    for chunk in chunks {
        match chunk {
            KafkaChunk::Batch { base_offset, bytes } => {
                write_run(&mut run, out)?;
                let at = out.len();
                out.extend_from_slice(&bytes);
                out[at..at + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
            }
            KafkaChunk::Record { offset, key, msg } => run.push(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: offset as i64,
                sequence: -1,
                timestamp: -1,
                key: key.map(Bytes::from),
                value: Some(Bytes::from(msg.to_string())),
                headers: IndexMap::new(),
            }),
        }
    }
    write_run(&mut run, out)
}

fn write_run(run: &mut Vec<Record>, out: &mut Vec<u8>) -> Result<(), String> {
    if run.is_empty() {
        return Ok(());
    }
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(out, run.iter(), &options)
        .map_err(|e| format!("cannot encode records: {e}"))?;
    run.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 10 + i as i32,
                timestamp: 1_000 + i as i64,
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
    fn fetched_chunks_carry_the_log_offsets() {
        let chunks = vec![
            KafkaChunk::Batch {
                base_offset: 40,
                bytes: batch(&["x", "y"]),
            },
            KafkaChunk::Record {
                offset: 42,
                key: Some("k".into()),
                msg: serde_json::json!({"n": 1}),
            },
        ];
        let mut out = Vec::new();
        write_chunks(chunks, &mut out).unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut Bytes::from(out)).unwrap();
        let got: Vec<(i64, Option<Bytes>)> = sets
            .iter()
            .flat_map(|s| &s.records)
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (40, Some(Bytes::from("x"))),
                (41, Some(Bytes::from("y"))),
                (42, Some(Bytes::from(r#"{"n":1}"#))),
            ]
        );
    }
}
