//! The data and topic APIs: Metadata, Produce, Fetch, ListOffsets, CreateTopics,
//! DeleteTopics and InitProducerId.

use herald_core::wire::msg::{
    kafka_code, CreateTopic, DeleteTopic, InitProducer, KafkaChunk, KafkaFetch, KafkaFetchOk,
    KafkaFetchPartition, KafkaListOffsets, KafkaMetadata, KafkaOffsetQuery, KafkaPartitionData,
    KafkaProduce,
};
use herald_core::Payload;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;

use super::{
    by_topic, error_of, kafka_code as herald_to_kafka, respond, text, Pending, Step,
    LEADER_NOT_AVAILABLE, TOPIC_AUTHORIZATION_FAILED,
};
use crate::records::write_chunks;
use crate::session::SessionConfig;

const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// A Metadata request's topics, remembered while the broker answers: `None` for
/// all topics.
pub(crate) struct MetadataPending {
    names: Option<Vec<String>>,
}

/// Metadata: this broker is every partition's leader, since any node takes any
/// request (a follower forwards it to the Raft leader; docs/kafka.md).
pub(super) fn metadata(v: i16, r: MetadataRequest) -> Step {
    // v0: an empty list means all topics; v1+: null does.
    let names: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && v == 0 => None,
        Some(t) => Some(
            t.iter()
                .filter_map(|t| t.name.as_ref())
                .map(|n| n.to_string())
                .collect(),
        ),
    };
    let auto_create = v < 4 || r.allow_auto_topic_creation;
    let ask = Payload::KafkaMetadata(KafkaMetadata {
        topics: names.clone(),
        auto_create,
    });
    Step::Ask(vec![ask], Pending::Metadata(MetadataPending { names }))
}

pub(super) fn metadata_done(
    config: &SessionConfig,
    v: i16,
    p: MetadataPending,
    replies: Vec<Payload>,
) -> Step {
    let node = BrokerId(config.node_id);
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(text(config.advertised_host.clone()))
        .with_port(config.advertised_port);
    let mut response = MetadataResponse::default().with_brokers(vec![broker]);
    if v >= 1 {
        response.controller_id = node;
    }
    if v >= 2 {
        response.cluster_id = Some(text("herald"));
    }
    match (replies.into_iter().next(), p.names) {
        (Some(Payload::KafkaMetadataOk(ok)), names) => {
            response.topics = ok
                .topics
                .into_iter()
                .filter(|(_, count)| names.is_some() || count.is_some())
                .map(|(name, count)| topic_metadata(node, name, count))
                .collect();
        }
        // No answer now (an election, a lost forward): each named topic says
        // "retry", which every client does. A topic left out of the list would
        // read as a deleted topic (v13's top-level code is past our v12).
        (Some(Payload::Error(e)), Some(names)) => {
            let code = match herald_to_kafka(&e) {
                TOPIC_AUTHORIZATION_FAILED => TOPIC_AUTHORIZATION_FAILED,
                _ => LEADER_NOT_AVAILABLE,
            };
            response.topics = names
                .into_iter()
                .map(|name| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(text(name))))
                        .with_error_code(code)
                })
                .collect();
        }
        // An all-topics request has no topic to carry the error: an empty list
        // would say every topic is gone. The client reconnects and asks again.
        (other, _) => return Step::Close(format!("metadata: the broker answered {other:?}")),
    }
    respond(v, &response)
}

fn topic_metadata(node: BrokerId, name: String, count: Option<u32>) -> MetadataResponseTopic {
    let topic = MetadataResponseTopic::default().with_name(Some(TopicName(text(name.clone()))));
    let Some(count) = count else {
        let legal = !name.is_empty() && name.len() <= 249;
        let code = if legal {
            kafka_code::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            INVALID_TOPIC_EXCEPTION
        };
        return topic.with_error_code(code);
    };
    let partitions = (0..count as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    topic.with_partitions(partitions)
}

/// Where each partition of a Produce stands: answered already, or waiting for the
/// broker's reply in a slot.
pub(crate) struct ProducePending {
    acks: i16,
    /// (topic, partition index, an early error or the reply slot).
    partitions: Vec<(String, i32, Result<usize, i16>)>,
}

/// Produce: each partition's batch goes to the broker, which checks and appends it.
pub(super) fn produce(v: i16, r: ProduceRequest) -> Step {
    if r.transactional_id.is_some() {
        let p = ProducePending {
            acks: r.acks,
            partitions: every_partition(&r, TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        };
        return produce_done(v, p, Vec::new());
    }
    let mut asks = Vec::new();
    let mut partitions = Vec::new();
    for topic in &r.topic_data {
        let name = topic.name.to_string();
        for data in &topic.partition_data {
            let outcome = produce_one(&name, data.index, data.records.as_ref()).map(|ask| {
                asks.push(ask);
                asks.len() - 1
            });
            partitions.push((name.clone(), data.index, outcome));
        }
    }
    let pending = ProducePending {
        acks: r.acks,
        partitions,
    };
    if asks.is_empty() {
        return produce_done(v, pending, Vec::new());
    }
    Step::Ask(asks, Pending::Produce(pending))
}

fn every_partition(r: &ProduceRequest, code: i16) -> Vec<(String, i32, Result<usize, i16>)> {
    (r.topic_data.iter())
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(|d| (t.name.to_string(), d.index, Err(code)))
        })
        .collect()
}

/// The broker request for one partition's records (which the broker checks).
fn produce_one(topic: &str, index: i32, records: Option<&bytes::Bytes>) -> Result<Payload, i16> {
    let partition = u32::try_from(index).map_err(|_| kafka_code::UNKNOWN_TOPIC_OR_PARTITION)?;
    let batch = records.ok_or(kafka_code::CORRUPT_MESSAGE)?;
    Ok(Payload::KafkaProduce(KafkaProduce {
        topic: topic.to_owned(),
        partition,
        batch: batch.clone(),
    }))
}

pub(super) fn produce_done(v: i16, p: ProducePending, replies: Vec<Payload>) -> Step {
    if p.acks == 0 {
        return Step::Silent;
    }
    let mut parts = Vec::with_capacity(p.partitions.len());
    for (topic, index, outcome) in p.partitions {
        let mut part = PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1);
        match outcome.map(|slot| &replies[slot]) {
            Err(code) => part.error_code = code,
            Ok(Payload::KafkaProduceOk(ok)) => {
                part.error_code = ok.error_code;
                part.base_offset = ok.base_offset;
                if v >= 5 {
                    part.log_start_offset = ok.log_start_offset;
                }
            }
            Ok(other) => part.error_code = error_of(other).map_or(-1, herald_to_kafka),
        }
        parts.push((topic, part));
    }
    let responses = (by_topic(parts).into_iter())
        .map(|(name, parts)| {
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(parts)
        })
        .collect();
    respond(v, &ProduceResponse::default().with_responses(responses))
}

/// A fetch in progress: the broker request to repeat, and how long it may wait.
pub(crate) struct FetchPending {
    ask: KafkaFetch,
    min_bytes: usize,
    deadline_ms: u64,
    /// The wait is over: answer with whatever the next read finds.
    last: bool,
}

/// Fetch: read; if fewer than `min_bytes` came back, hold until data arrives or
/// `max_wait_ms` passes (a long poll), then read once more.
pub(super) fn fetch(config: &SessionConfig, r: FetchRequest, now_ms: u64) -> Step {
    let partitions = (r.topics.iter())
        .flat_map(|t| {
            t.partitions.iter().map(|p| KafkaFetchPartition {
                topic: t.topic.to_string(),
                partition: u32::try_from(p.partition).unwrap_or(u32::MAX),
                offset: u64::try_from(p.fetch_offset).unwrap_or(u64::MAX),
                max_bytes: u32::try_from(p.partition_max_bytes).unwrap_or(0),
            })
        })
        .collect();
    let wait_ms = u64::try_from(r.max_wait_ms)
        .unwrap_or(0)
        .min(config.max_fetch_wait_ms);
    let pending = FetchPending {
        ask: KafkaFetch {
            partitions,
            max_bytes: u32::try_from(r.max_bytes).unwrap_or(u32::MAX),
        },
        min_bytes: usize::try_from(r.min_bytes).unwrap_or(0),
        deadline_ms: now_ms.saturating_add(wait_ms),
        last: wait_ms == 0,
    };
    fetch_again(pending, false)
}

pub(super) fn fetch_again(mut p: FetchPending, expired: bool) -> Step {
    p.last |= expired;
    Step::Ask(vec![Payload::KafkaFetch(p.ask.clone())], Pending::Fetch(p))
}

pub(super) fn fetch_done(v: i16, p: FetchPending, replies: Vec<Payload>, now_ms: u64) -> Step {
    let mut ok = match replies.into_iter().next() {
        Some(Payload::KafkaFetchOk(ok)) => ok,
        Some(Payload::Error(e)) => failed_fetch(&p.ask, herald_to_kafka(&e)),
        other => return Step::Close(format!("fetch: the broker answered {other:?}")),
    };
    let bytes: usize = (ok.partitions.iter())
        .flat_map(|p| &p.chunks)
        .map(|c| match c {
            KafkaChunk::Batch { bytes, .. } => bytes.len(),
            KafkaChunk::Record { .. } => 1,
        })
        .sum();
    let errors = ok.partitions.iter().any(|p| p.error_code != 0);
    if !p.last && !errors && bytes < p.min_bytes.max(1) && now_ms < p.deadline_ms {
        return Step::Park(p.deadline_ms, Pending::Fetch(p));
    }
    let mut parts = Vec::with_capacity(ok.partitions.len());
    for part in ok.partitions.drain(..) {
        let mut records = Vec::new();
        if let Err(e) = write_chunks(part.chunks, &mut records) {
            return Step::Close(e);
        }
        let mut data = PartitionData::default()
            .with_partition_index(part.partition as i32)
            .with_error_code(part.error_code)
            .with_high_watermark(part.high_watermark)
            .with_last_stable_offset(part.high_watermark)
            .with_aborted_transactions(Some(Vec::new()))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(records.into()));
        if v >= 5 {
            data.log_start_offset = part.log_start_offset;
        }
        parts.push((part.topic, data));
    }
    let responses = (by_topic(parts).into_iter())
        .map(|(name, parts)| {
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_partitions(parts)
        })
        .collect();
    respond(v, &FetchResponse::default().with_responses(responses))
}

/// Every partition of a fetch the broker could not serve, with `error_code`.
fn failed_fetch(ask: &KafkaFetch, error_code: i16) -> KafkaFetchOk {
    let partitions = (ask.partitions.iter())
        .map(|p| KafkaPartitionData {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
        })
        .collect();
    KafkaFetchOk { partitions }
}

pub(super) fn list_offsets(r: ListOffsetsRequest) -> Step {
    let partitions = (r.topics.iter())
        .flat_map(|t| {
            t.partitions.iter().map(|p| KafkaOffsetQuery {
                topic: t.name.to_string(),
                partition: u32::try_from(p.partition_index).unwrap_or(u32::MAX),
                timestamp: p.timestamp,
            })
        })
        .collect();
    let ask = Payload::KafkaListOffsets(KafkaListOffsets { partitions });
    Step::Ask(vec![ask], Pending::ListOffsets)
}

pub(super) fn list_offsets_done(v: i16, replies: Vec<Payload>) -> Step {
    let ok = match replies.into_iter().next() {
        Some(Payload::KafkaListOffsetsOk(ok)) => ok,
        other => return Step::Close(format!("list_offsets: the broker answered {other:?}")),
    };
    let parts = ok.partitions.into_iter().map(|answer| {
        let part = ListOffsetsPartitionResponse::default()
            .with_partition_index(answer.partition as i32)
            .with_error_code(answer.error_code)
            .with_timestamp(answer.timestamp)
            .with_offset(answer.offset)
            .with_leader_epoch(-1);
        (answer.topic, part)
    });
    let topics = (by_topic(parts).into_iter())
        .map(|(name, parts)| {
            ListOffsetsTopicResponse::default()
                .with_name(name)
                .with_partitions(parts)
        })
        .collect();
    respond(v, &ListOffsetsResponse::default().with_topics(topics))
}

/// The topics of a CreateTopics, with their partition counts.
pub(crate) struct CreateTopicsPending {
    topics: Vec<(String, u32)>,
    validate_only: bool,
}

pub(super) fn create_topics(config: &SessionConfig, v: i16, r: CreateTopicsRequest) -> Step {
    let topics: Vec<(String, u32)> = (r.topics.iter())
        .map(|t| {
            let count = u32::try_from(t.num_partitions).unwrap_or(config.default_partitions);
            (t.name.to_string(), count)
        })
        .collect();
    let pending = CreateTopicsPending {
        topics,
        validate_only: r.validate_only,
    };
    if pending.validate_only || pending.topics.is_empty() {
        return create_topics_done(v, pending, Vec::new());
    }
    let asks = (pending.topics.iter())
        .map(|(topic, partitions)| {
            Payload::CreateTopic(CreateTopic {
                topic: topic.clone(),
                partitions: *partitions,
            })
        })
        .collect();
    Step::Ask(asks, Pending::CreateTopics(pending))
}

pub(super) fn create_topics_done(v: i16, p: CreateTopicsPending, replies: Vec<Payload>) -> Step {
    let topics = (p.topics.into_iter().enumerate())
        .map(|(i, (name, count))| {
            let (code, message) = match replies.get(i) {
                None | Some(Payload::CreateTopicOk(_)) => (0, None),
                Some(Payload::Error(e)) => {
                    let code = match herald_to_kafka(e) {
                        kafka_code::INVALID_REQUEST => kafka_code::INVALID_PARTITIONS,
                        code => code,
                    };
                    (code, Some(text(e.text.clone())))
                }
                Some(other) => (-1, Some(text(format!("unexpected {}", other.kind())))),
            };
            let result = CreatableTopicResult::default()
                .with_name(TopicName(text(name)))
                .with_error_code(code)
                .with_error_message(message);
            if v >= 5 {
                result
                    .with_num_partitions(count as i32)
                    .with_replication_factor(1)
            } else {
                result
            }
        })
        .collect();
    respond(v, &CreateTopicsResponse::default().with_topics(topics))
}

/// The topics of a DeleteTopics.
pub(crate) struct DeleteTopicsPending {
    topics: Vec<String>,
}

pub(super) fn delete_topics(v: i16, r: DeleteTopicsRequest) -> Step {
    let topics: Vec<String> = r.topic_names.iter().map(|t| t.to_string()).collect();
    if topics.is_empty() {
        return delete_topics_done(v, DeleteTopicsPending { topics }, Vec::new());
    }
    let asks = (topics.iter())
        .map(|topic| {
            Payload::DeleteTopic(DeleteTopic {
                topic: topic.clone(),
            })
        })
        .collect();
    Step::Ask(asks, Pending::DeleteTopics(DeleteTopicsPending { topics }))
}

pub(super) fn delete_topics_done(v: i16, p: DeleteTopicsPending, replies: Vec<Payload>) -> Step {
    let responses = (p.topics.into_iter().zip(&replies))
        .map(|(name, reply)| {
            let (code, message) = match reply {
                Payload::Error(e) => (herald_to_kafka(e), Some(text(e.text.clone()))),
                _ => (0, None),
            };
            DeletableTopicResult::default()
                .with_name(Some(TopicName(text(name))))
                .with_error_code(code)
                .with_error_message(message.filter(|_| v >= 5))
        })
        .collect();
    respond(
        v,
        &DeleteTopicsResponse::default().with_responses(responses),
    )
}

/// InitProducerId without a transactional id: a fresh producer id at epoch 0.
pub(super) fn init_producer_id(v: i16, r: InitProducerIdRequest) -> Step {
    if r.transactional_id.is_some() {
        let response = InitProducerIdResponse::default()
            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        return respond(v, &response);
    }
    let ask = Payload::InitProducer(InitProducer { name: None });
    Step::Ask(vec![ask], Pending::InitProducerId)
}

pub(super) fn init_producer_id_done(v: i16, replies: Vec<Payload>) -> Step {
    let response = match replies.first() {
        Some(Payload::InitProducerOk(ok)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(ok.producer as i64))
            .with_producer_epoch(ok.epoch as i16),
        Some(Payload::Error(e)) => InitProducerIdResponse::default()
            .with_error_code(herald_to_kafka(e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        other => return Step::Close(format!("init_producer_id: the broker answered {other:?}")),
    };
    respond(v, &response)
}
