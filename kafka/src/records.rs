//! Laying out a fetch's record set: stored batches with the log's base offset written
//! in, and JSON-lines messages made into batches of their own. (A produced batch is
//! checked by the broker, `herald-core`'s `broker/kafka_records.rs`.)

use bytes::Bytes;
use herald_core::wire::msg::KafkaChunk;
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

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
    use kafka_protocol::records::RecordBatchDecoder;

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
    fn fetched_chunks_carry_the_log_offsets() {
        let chunks = vec![
            KafkaChunk::Batch {
                base_offset: 40,
                bytes: batch(&["x", "y"]),
            },
            KafkaChunk::Record {
                offset: 42,
                key: Some("k".into()),
                msg: serde_json::json!({"n": 1}).into(),
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
