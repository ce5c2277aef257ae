//! Kafka's data requests on topic partitions: produce a record batch, fetch whole
//! batches from an offset, offsets by time, metadata (with auto-creation), and topic
//! deletion. Kafka topics are Herald topics: a partition holds JSON-lines messages and
//! Kafka batches in one offset space (see [`super::logs::PartitionLog`]).

use super::kafka_records::check_batch;
use super::logs::{PartitionEntry, PartitionLog, StoredBatch};
use super::producers::Idempotence;
use super::Broker;
use crate::runtime::Ctx;
use crate::wire::msg::kafka_code as code;
use crate::wire::msg::*;
use crate::Config;

/// Kafka's code for a batch over the size limit.
const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's code for a sequence number older than the last batches remembered.
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
/// Bytes counted for a JSON-lines message beyond its key and JSON text, when a fetch
/// sums up its size (the record's framing in a Kafka batch).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// True if `name` is a legal Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not
/// `.` or `..`.
pub(super) fn is_kafka_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn produce_error(error_code: i16) -> Payload {
    Payload::KafkaProduceOk(KafkaProduceOk {
        error_code,
        base_offset: -1,
        log_start_offset: -1,
    })
}

/// The Kafka code for a producer error of [`super::producers`], if it is one.
fn producer_code(e: &ErrorBody) -> Option<i16> {
    [
        (ErrorCode::UnknownProducer, code::UNKNOWN_PRODUCER_ID),
        (ErrorCode::ProducerFenced, code::INVALID_PRODUCER_EPOCH),
        (
            ErrorCode::OutOfOrderSequence,
            code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        ),
        (ErrorCode::PreconditionFailed, DUPLICATE_SEQUENCE_NUMBER),
    ]
    .into_iter()
    .find(|(herald, _)| e.is(*herald))
    .map(|(_, kafka)| kafka)
}

impl Broker {
    /// Runs a Kafka data request.
    pub(super) fn handle_kafka(
        &mut self,
        cx: &Ctx<'_>,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        Ok(match payload {
            Payload::KafkaProduce(p) => self.kafka_produce(cx, p)?,
            Payload::KafkaFetch(f) => Payload::KafkaFetchOk(self.kafka_fetch(&f)),
            Payload::KafkaListOffsets(l) => Payload::KafkaListOffsetsOk(self.list_offsets(&l)),
            Payload::KafkaMetadata(m) => Payload::KafkaMetadataOk(self.metadata(cx.config, m)?),
            Payload::DeleteTopic(d) => {
                let dropped = self.topics.delete(&d.topic)?;
                self.records -= dropped;
                self.kafka_groups.forget_topic(&d.topic);
                Payload::DeleteTopicOk
            }
            other => unreachable!("{:?} is not a Kafka data request", other.kind()),
        })
    }

    /// Creates `topic` with the auto-create partition count if it is missing, legal
    /// and auto-creation is on; returns its partition count if it exists now.
    fn ensure_topic(&mut self, config: &Config, topic: &str) -> Result<Option<u32>, ErrorBody> {
        if let Some(count) = self.topics.partition_count(topic) {
            return Ok(Some(count));
        }
        let partitions = config.kafka_auto_create_partitions;
        if partitions == 0 || !is_kafka_topic_name(topic) {
            return Ok(None);
        }
        self.topics.create(config, topic, partitions)?;
        Ok(Some(partitions))
    }

    fn kafka_produce(&mut self, cx: &Ctx<'_>, p: KafkaProduce) -> Result<Payload, ErrorBody> {
        let config = cx.config;
        if p.batch.len() > config.kafka_max_batch_bytes {
            return Ok(produce_error(MESSAGE_TOO_LARGE));
        }
        let Ok(info) = check_batch(&p.batch) else {
            return Ok(produce_error(code::CORRUPT_MESSAGE));
        };
        let exists = self.ensure_topic(config, &p.topic)?;
        if exists.is_none_or(|count| p.partition >= count) {
            return Ok(produce_error(code::UNKNOWN_TOPIC_OR_PARTITION));
        }
        let idempotence = (info.producer_id >= 0).then(|| Idempotence {
            producer: info.producer_id as u64,
            epoch: info.producer_epoch as u64,
            seq: info.base_sequence.max(0) as u64,
            count: u64::from(info.records),
        });
        let stream = format!("kafka/{}/{}", p.topic, p.partition);
        let written = self.idempotent(cx.now, config, idempotence, &stream, |b| {
            b.reserve_records(config, info.records as usize)?;
            let log = b.topics.partition_mut(&p.topic, p.partition);
            let log = log.expect("checked above");
            let batch = StoredBatch {
                bytes: p.batch,
                records: info.records,
                max_timestamp_ms: info.max_timestamp_ms,
            };
            let (base, dropped) = log.append_batch(batch, config.max_records_per_log);
            b.records = b.records + info.records as usize - dropped;
            Ok(Payload::KafkaProduceOk(KafkaProduceOk {
                error_code: code::NONE,
                base_offset: base as i64,
                log_start_offset: log.start_offset() as i64,
            }))
        });
        match written {
            Err(e) => producer_code(&e).map(produce_error).ok_or(e),
            ok => ok,
        }
    }

    fn kafka_fetch(&self, f: &KafkaFetch) -> KafkaFetchOk {
        let mut budget = f.max_bytes as usize;
        let mut partitions = Vec::with_capacity(f.partitions.len());
        for part in &f.partitions {
            let mut data = KafkaPartitionData {
                topic: part.topic.clone(),
                partition: part.partition,
                error_code: code::NONE,
                high_watermark: -1,
                log_start_offset: -1,
                chunks: Vec::new(),
            };
            match self.topics.partition(&part.topic, part.partition) {
                None => data.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(log) => {
                    data.high_watermark = log.end_offset() as i64;
                    data.log_start_offset = log.start_offset() as i64;
                    if part.offset < log.start_offset() || part.offset > log.end_offset() {
                        data.error_code = code::OFFSET_OUT_OF_RANGE;
                    } else {
                        let limit = budget.min(part.max_bytes as usize);
                        let (chunks, used) =
                            chunks(log, part.offset, limit, budget == f.max_bytes as usize);
                        data.chunks = chunks;
                        budget = budget.saturating_sub(used);
                    }
                }
            }
            partitions.push(data);
        }
        KafkaFetchOk { partitions }
    }

    fn list_offsets(&self, l: &KafkaListOffsets) -> KafkaListOffsetsOk {
        let partitions = l
            .partitions
            .iter()
            .map(|q| {
                let mut answer = KafkaOffset {
                    topic: q.topic.clone(),
                    partition: q.partition,
                    error_code: code::NONE,
                    offset: -1,
                    timestamp: -1,
                };
                match self.topics.partition(&q.topic, q.partition) {
                    None => answer.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(log) => match q.timestamp {
                        -1 => answer.offset = log.end_offset() as i64,
                        -2 => answer.offset = log.start_offset() as i64,
                        t if t < 0 => answer.error_code = code::INVALID_REQUEST,
                        t => {
                            if let Some((offset, found)) = log.offset_for_time(t) {
                                answer.offset = offset as i64;
                                answer.timestamp = found;
                            }
                        }
                    },
                }
                answer
            })
            .collect();
        KafkaListOffsetsOk { partitions }
    }

    fn metadata(
        &mut self,
        config: &Config,
        m: KafkaMetadata,
    ) -> Result<KafkaMetadataOk, ErrorBody> {
        let topics = match m.topics {
            None => (self.topics.list().into_iter())
                .map(|(name, count)| (name, Some(count)))
                .collect(),
            Some(names) => {
                let mut topics = Vec::with_capacity(names.len());
                for name in names {
                    let count = if m.auto_create {
                        self.ensure_topic(config, &name)?
                    } else {
                        self.topics.partition_count(&name)
                    };
                    topics.push((name, count));
                }
                topics
            }
        };
        Ok(KafkaMetadataOk { topics })
    }
}

/// Whole entries of `log` from the one holding `from`, while they fit in `limit`
/// bytes; the first always, if `first_in_reply` (so a batch larger than the limit
/// still gets through). Returns them and the bytes they take.
fn chunks(
    log: &PartitionLog,
    from: u64,
    limit: usize,
    first_in_reply: bool,
) -> (Vec<KafkaChunk>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    for (offset, entry) in log.entries_from(from) {
        let (chunk, size) = match entry {
            PartitionEntry::Batch { batch } => (
                KafkaChunk::Batch {
                    base_offset: offset,
                    bytes: batch.bytes.clone(),
                },
                batch.bytes.len(),
            ),
            PartitionEntry::Record { key, msg } => {
                let size = msg.to_string().len()
                    + key.as_ref().map_or(0, String::len)
                    + RECORD_OVERHEAD_BYTES;
                let chunk = KafkaChunk::Record {
                    offset,
                    key: key.clone(),
                    msg: msg.clone(),
                };
                (chunk, size)
            }
        };
        if used + size > limit && !(out.is_empty() && first_in_reply) {
            break;
        }
        used += size;
        out.push(chunk);
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::kafka_records::tests::batch_of;
    use crate::{Rng, Time};

    fn run(broker: &mut Broker, config: &Config, payload: Payload) -> Payload {
        let mut rng = Rng::new(1);
        let cx = Ctx {
            now: Time::from_millis(5),
            config,
            rng: &mut rng,
        };
        match broker.handle(&cx, "c", Some(1), payload) {
            Ok(Some(reply)) => reply,
            Ok(None) => panic!("parked"),
            Err(e) => Payload::Error(e),
        }
    }

    /// A batch of `records` records whose largest timestamp is 100 × `records`.
    fn produce(records: u32, producer: (i64, i16, i32)) -> Payload {
        let values = vec!["v"; records as usize];
        let first_ms = 100 * i64::from(records) - i64::from(records) + 1;
        Payload::KafkaProduce(KafkaProduce {
            topic: "t".into(),
            partition: 0,
            batch: batch_of(&values, producer, first_ms),
        })
    }

    fn produced(reply: &Payload) -> (i16, i64) {
        match reply {
            Payload::KafkaProduceOk(ok) => (ok.error_code, ok.base_offset),
            other => panic!("{other:?}"),
        }
    }

    /// An idempotent producer's batches: sequences count records, a retry of a batch
    /// gets its first offset and is not stored again, a gap and a stale epoch are
    /// refused with Kafka's codes, an unknown producer id too.
    #[test]
    fn idempotent_batches_count_records_and_retries_get_their_offsets() {
        let config = Config::default();
        let mut broker = Broker::new(&config);
        let id = match run(
            &mut broker,
            &config,
            Payload::InitProducer(InitProducer { name: None }),
        ) {
            Payload::InitProducerOk(ok) => ok.producer as i64,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            produced(&run(&mut broker, &config, produce(3, (id, 0, 0)))),
            (0, 0)
        );
        assert_eq!(
            produced(&run(&mut broker, &config, produce(2, (id, 0, 3)))),
            (0, 3)
        );
        // The first batch again (a retry after a lost response): its offset, once.
        assert_eq!(
            produced(&run(&mut broker, &config, produce(3, (id, 0, 0)))),
            (0, 0)
        );
        assert_eq!(broker.records, 5);
        let gap = run(&mut broker, &config, produce(1, (id, 0, 9)));
        assert_eq!(produced(&gap).0, code::OUT_OF_ORDER_SEQUENCE_NUMBER);
        let fenced = run(&mut broker, &config, produce(1, (id, 1, 5)));
        assert_eq!(produced(&fenced).0, code::INVALID_PRODUCER_EPOCH);
        let unknown = run(&mut broker, &config, produce(1, (id + 7, 0, 0)));
        assert_eq!(produced(&unknown).0, code::UNKNOWN_PRODUCER_ID);
        // Plain batches take as many offsets as they have records.
        assert_eq!(
            produced(&run(&mut broker, &config, produce(4, (-1, -1, -1)))),
            (0, 5)
        );
        broker.check_invariants();
    }

    /// Produce creates a topic when auto-creation is on and refuses when it is off, a
    /// partition past the count, a damaged and an oversized batch; fetch returns whole entries
    /// from the one holding the offset and answers out-of-range offsets; list offsets
    /// finds the log's ends and the first batch at or after a time; delete forgets
    /// the topic and its records.
    #[test]
    fn produce_fetch_offsets_and_delete() {
        let off = Config {
            kafka_auto_create_partitions: 0,
            ..Config::default()
        };
        let mut broker = Broker::new(&off);
        let refused = run(&mut broker, &off, produce(1, (-1, -1, -1)));
        assert_eq!(produced(&refused).0, code::UNKNOWN_TOPIC_OR_PARTITION);
        let config = Config {
            kafka_max_batch_bytes: 200,
            ..Config::default()
        };
        for records in [2, 3] {
            run(&mut broker, &config, produce(records, (-1, -1, -1)));
        }
        let damaged = Payload::KafkaProduce(KafkaProduce {
            topic: "t".into(),
            partition: 0,
            batch: bytes::Bytes::from(vec![0; 70]),
        });
        assert_eq!(
            produced(&run(&mut broker, &config, damaged)).0,
            code::CORRUPT_MESSAGE
        );
        let big = produce(30, (-1, -1, -1));
        assert_eq!(
            produced(&run(&mut broker, &config, big)).0,
            MESSAGE_TOO_LARGE
        );
        let fetch = |offset| {
            Payload::KafkaFetch(KafkaFetch {
                partitions: vec![KafkaFetchPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    max_bytes: 1,
                }],
                max_bytes: 1 << 20,
            })
        };
        let Payload::KafkaFetchOk(ok) = run(&mut broker, &config, fetch(3)) else {
            panic!("a fetch reply");
        };
        let part = &ok.partitions[0];
        assert_eq!((part.error_code, part.high_watermark), (0, 5));
        // Offset 3 is inside the second batch (2..5): all of it, though over max_bytes.
        assert!(matches!(
            part.chunks[..],
            [KafkaChunk::Batch { base_offset: 2, .. }]
        ));
        let Payload::KafkaFetchOk(ok) = run(&mut broker, &config, fetch(6)) else {
            panic!("a fetch reply");
        };
        assert_eq!(ok.partitions[0].error_code, code::OFFSET_OUT_OF_RANGE);
        let query = |timestamp| KafkaOffsetQuery {
            topic: "t".into(),
            partition: 0,
            timestamp,
        };
        let list = Payload::KafkaListOffsets(KafkaListOffsets {
            partitions: vec![query(-1), query(-2), query(250), query(999)],
        });
        let Payload::KafkaListOffsetsOk(ok) = run(&mut broker, &config, list) else {
            panic!("a list offsets reply");
        };
        let offsets: Vec<(i64, i64)> = ok
            .partitions
            .iter()
            .map(|o| (o.offset, o.timestamp))
            .collect();
        assert_eq!(offsets, [(5, -1), (0, -1), (2, 300), (-1, -1)]);
        let delete = Payload::DeleteTopic(DeleteTopic { topic: "t".into() });
        assert_eq!(
            run(&mut broker, &config, delete.clone()),
            Payload::DeleteTopicOk
        );
        assert_eq!(broker.records, 0);
        assert!(matches!(
            run(&mut broker, &config, delete),
            Payload::Error(_)
        ));
        broker.check_invariants();
    }

    #[test]
    fn kafka_topic_names() {
        assert!(is_kafka_topic_name("orders.v1_eu-west"));
        assert!(!is_kafka_topic_name(""));
        assert!(!is_kafka_topic_name(".."));
        assert!(!is_kafka_topic_name("a b"));
        assert!(!is_kafka_topic_name(&"x".repeat(250)));
    }
}
