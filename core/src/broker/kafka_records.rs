//! Kafka records as JSON-lines readers (`fetch`, `poll`) see them. A value that is
//! JSON text is that JSON; other UTF-8 is a JSON string; other bytes are
//! `{"base64": "..."}`; a null value is `null`. A key is its UTF-8 text, or `base64:`
//! and its base64 form. Headers and timestamps are not shown (docs/kafka.md).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use serde_json::{json, Value};

use super::logs::{ReadRecord, StoredBatch};

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
                msg: r.value.map_or(Value::Null, |v| value_json(&v)),
            })
            .collect(),
        Err(e) => vec![ReadRecord {
            offset: base,
            key: None,
            msg: json!({ "kafka_batch_unreadable": e.to_string(), "records": batch.records }),
        }],
    }
}

fn key_text(key: &Bytes) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(key)),
    }
}

fn value_json(value: &Bytes) -> Value {
    if let Ok(parsed) = serde_json::from_slice(value) {
        return parsed;
    }
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": STANDARD.encode(value) }),
    }
}
