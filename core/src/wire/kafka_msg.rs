//! The bodies of the `kafka_*` requests: what the Kafka listener (crate
//! `herald-kafka`) asks the broker, once it has decoded a Kafka request. They travel
//! like every other request (write-ahead log, Raft, forwarding), so record batches
//! and group metadata are bytes, written as base64 in JSON.
//!
//! These requests implement Kafka's own semantics, so their replies carry Kafka's
//! error codes (`error_code`, 0 = none; see [`kafka_code`]) where Kafka's responses
//! do. A Herald `error` reply still means what it means for any request (a limit, a
//! lost leader, a timeout), and the listener maps it to the nearest Kafka code.

use crate::wire::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Kafka's error codes that the broker answers.
pub mod kafka_code {
    /// No error.
    pub const NONE: i16 = 0;
    /// The offset is outside the partition's log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// A record batch failed its checks.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// The broker could not do it now (a limit, or no leader yet): retry.
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// The member's protocols share none with the group's.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// The member id is not a member of the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// The session timeout is outside what the broker allows.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// The topic exists already.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// The partition count is not allowed.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// The request is not valid.
    pub const INVALID_REQUEST: i16 = 42;
    /// The producer's sequence number is not the next one.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// The producer's epoch is not its current one (a newer instance exists).
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// The producer id is unknown to the broker.
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    /// The group is not empty (so it cannot be deleted).
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// The group does not exist.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// A join without a member id: rejoin with the one given.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// The group has as many members as it may.
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
}

/// Bytes as base64 text in JSON.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// `kafka_produce`: append one record batch to a topic partition. The broker checks
/// it (one RecordBatch v2, whole, its CRC, its counts; else CORRUPT_MESSAGE), reads its
/// record count, timestamps and producer fields from its header, and assigns its base
/// offset; the batch is stored and served as it came.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaProduce {
    /// The topic (created with `Config::kafka_auto_create_partitions` if missing and
    /// that is not 0).
    pub topic: String,
    /// The partition, chosen by the client.
    pub partition: u32,
    /// The RecordBatch (v2).
    #[serde(with = "base64_bytes")]
    pub batch: Bytes,
}

/// `kafka_produce_ok`: where the batch is (on a duplicate, where it was stored first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaProduceOk {
    /// Kafka's error code.
    pub error_code: i16,
    /// The offset of its first record.
    pub base_offset: i64,
    /// The partition's first offset kept.
    pub log_start_offset: i64,
}

/// One partition a `kafka_fetch` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaFetchPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The first offset wanted.
    pub offset: u64,
    /// Most bytes to return for this partition (at least one whole batch is returned).
    pub max_bytes: u32,
}

/// `kafka_fetch`: read partitions from offsets. A read: the listener asks again while
/// it long-polls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaFetch {
    /// The partitions.
    pub partitions: Vec<KafkaFetchPartition>,
    /// Most bytes for the whole reply (at least one whole batch is returned).
    pub max_bytes: u32,
}

/// A stretch of a partition's log, in a `kafka_fetch_ok`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KafkaChunk {
    /// A batch a Kafka producer wrote, as it came; its base offset field is the one
    /// the client sent, so the listener writes `base_offset` over it.
    Batch {
        /// The offset of its first record.
        base_offset: u64,
        /// The batch.
        #[serde(with = "base64_bytes")]
        bytes: Bytes,
    },
    /// A message published through the JSON-lines API: the listener makes a record
    /// of it, its value the message's JSON text.
    Record {
        /// Its offset.
        offset: u64,
        /// Its key, if published with one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// The message.
        msg: Json,
    },
}

/// By hand rather than serde's `tag`, which buffers the value and so cannot hand a
/// message's text to [`Json`] as it is; fields may come in any order.
impl<'de> Deserialize<'de> for KafkaChunk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KafkaChunk, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = KafkaChunk;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a chunk: {kind: batch, base_offset, bytes} or {kind: record, offset, key?, msg}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KafkaChunk, A::Error> {
                #[derive(Deserialize)]
                struct Base64(#[serde(with = "base64_bytes")] Bytes);
                let (mut kind, mut base_offset, mut bytes) = (None::<String>, None, None);
                let (mut offset, mut key, mut msg) = (None, None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "kind" => kind = Some(map.next_value()?),
                        "base_offset" => base_offset = Some(map.next_value()?),
                        "bytes" => bytes = Some(map.next_value::<Base64>()?.0),
                        "offset" => offset = Some(map.next_value()?),
                        "key" => key = map.next_value()?,
                        "msg" => msg = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                use serde::de::Error;
                match kind.as_deref() {
                    Some("batch") => Ok(KafkaChunk::Batch {
                        base_offset: base_offset
                            .ok_or_else(|| A::Error::missing_field("base_offset"))?,
                        bytes: bytes.ok_or_else(|| A::Error::missing_field("bytes"))?,
                    }),
                    Some("record") => Ok(KafkaChunk::Record {
                        offset: offset.ok_or_else(|| A::Error::missing_field("offset"))?,
                        key,
                        msg: msg.ok_or_else(|| A::Error::missing_field("msg"))?,
                    }),
                    Some(other) => Err(A::Error::unknown_variant(other, &["batch", "record"])),
                    None => Err(A::Error::missing_field("kind")),
                }
            }
        }
        d.deserialize_map(Fields)
    }
}

/// What a `kafka_fetch` found in one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaPartitionData {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Kafka's error code.
    pub error_code: i16,
    /// The offset the next record will get.
    pub high_watermark: i64,
    /// The first offset kept.
    pub log_start_offset: i64,
    /// The log from the offset asked for, whole batches.
    pub chunks: Vec<KafkaChunk>,
}

/// `kafka_fetch_ok`: every partition asked for, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaFetchOk {
    /// The partitions.
    pub partitions: Vec<KafkaPartitionData>,
}

/// One partition a `kafka_list_offsets` asks about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffsetQuery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// −1: the high watermark; −2: the log start; otherwise the first offset whose
    /// batch has a timestamp at or after this (ms since the Unix epoch).
    pub timestamp: i64,
}

/// `kafka_list_offsets`: offsets by time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaListOffsets {
    /// The partitions.
    pub partitions: Vec<KafkaOffsetQuery>,
}

/// One answer of a `kafka_list_offsets_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Kafka's error code.
    pub error_code: i16,
    /// The offset (−1 if no record is at or after the timestamp).
    pub offset: i64,
    /// The timestamp found (−1 for the high watermark and log start).
    pub timestamp: i64,
}

/// `kafka_list_offsets_ok`: every partition asked for, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaListOffsetsOk {
    /// The answers.
    pub partitions: Vec<KafkaOffset>,
}

/// `kafka_metadata`: the topics and their partition counts. Named topics that do not
/// exist are created with `Config::kafka_auto_create_partitions` partitions if
/// `auto_create` is set and that is not 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaMetadata {
    /// The topics asked about; `None`: all of them.
    pub topics: Option<Vec<String>>,
    /// Create the named topics that are missing.
    pub auto_create: bool,
}

/// `kafka_metadata_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaMetadataOk {
    /// Each topic asked about (or every topic): its partition count, or `None` if it
    /// does not exist.
    pub topics: Vec<(String, Option<u32>)>,
}

/// `delete_topic`: delete a topic, its records, and the Herald consumer groups that
/// consume it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeleteTopic {
    /// The topic.
    pub topic: String,
}

/// A protocol a member of a Kafka group can use, with its metadata (opaque to the
/// broker: the client's subscription).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaProtocol {
    /// The name (e.g. `range`, `cooperative-sticky`).
    pub name: String,
    /// The member's metadata for it.
    #[serde(with = "base64_bytes")]
    pub metadata: Bytes,
}

/// `kafka_join_group`: join (or rejoin) a Kafka consumer group. Its reply waits until
/// every member has rejoined, or the rebalance timeout has passed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaJoinGroup {
    /// The group.
    pub group: String,
    /// The member's id; empty on its first join.
    pub member_id: String,
    /// Static membership id (KIP-345), if the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_instance_id: Option<String>,
    /// The client's name, for DescribeGroups.
    pub client_id: String,
    /// The kind of group (`consumer` for consumers).
    pub protocol_type: String,
    /// The protocols the member can use, preferred first.
    pub protocols: Vec<KafkaProtocol>,
    /// The member is dropped after this long without a heartbeat.
    pub session_timeout_ms: u64,
    /// How long a rebalance waits for this member to rejoin.
    pub rebalance_timeout_ms: u64,
    /// JoinGroup v4+: a join with an empty member id gets MEMBER_ID_REQUIRED and an id.
    pub require_known_member: bool,
}

/// A member's metadata, in the join reply the leader gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaMemberMetadata {
    /// The member.
    pub member_id: String,
    /// Its static id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    #[serde(with = "base64_bytes")]
    pub metadata: Bytes,
}

/// `kafka_join_group_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaJoinGroupOk {
    /// Kafka's error code.
    pub error_code: i16,
    /// The new generation (−1 on an error).
    pub generation: i32,
    /// The protocol chosen (empty on an error).
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id (on MEMBER_ID_REQUIRED, the one to rejoin with).
    pub member_id: String,
    /// Every member with its metadata, for the leader only (empty for the others).
    pub members: Vec<KafkaMemberMetadata>,
}

/// One member's assignment, in the leader's `kafka_sync_group`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaAssignment {
    /// The member.
    pub member_id: String,
    /// Its assignment (opaque to the broker).
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// `kafka_sync_group`: the leader hands out assignments; every member gets its own.
/// A follower's reply waits for the leader's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaSyncGroup {
    /// The group.
    pub group: String,
    /// The generation joined.
    pub generation: i32,
    /// The member.
    pub member_id: String,
    /// The leader's assignments (empty from the others).
    pub assignments: Vec<KafkaAssignment>,
}

/// `kafka_sync_group_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaSyncGroupOk {
    /// Kafka's error code.
    pub error_code: i16,
    /// The protocol type, as joined.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol_name: String,
    /// This member's assignment (empty on an error).
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// `kafka_heartbeat`: a member is alive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaHeartbeat {
    /// The group.
    pub group: String,
    /// The generation joined.
    pub generation: i32,
    /// The member.
    pub member_id: String,
}

/// `kafka_leave_group`: members leave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaLeaveGroup {
    /// The group.
    pub group: String,
    /// The members leaving.
    pub member_ids: Vec<String>,
}

/// A reply that is only an error code (`kafka_heartbeat_ok`, `kafka_leave_group_ok`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaErrorCode {
    /// Kafka's error code.
    pub error_code: i16,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaCommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to consume (−1: none committed).
    pub offset: i64,
    /// The client's metadata for it.
    #[serde(default)]
    pub metadata: String,
    /// Kafka's error code (replies only).
    #[serde(default)]
    pub error_code: i16,
}

/// `kafka_offset_commit`: commit offsets for a group. Generation −1 with an empty
/// member id commits from outside any group (as Kafka allows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffsetCommit {
    /// The group.
    pub group: String,
    /// The generation, or −1.
    pub generation: i32,
    /// The member, or empty.
    pub member_id: String,
    /// The offsets.
    pub offsets: Vec<KafkaCommittedOffset>,
}

/// `kafka_offset_commit_ok`: each offset with its error code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffsetCommitOk {
    /// The offsets, as asked, with `error_code` set.
    pub offsets: Vec<KafkaCommittedOffset>,
}

/// `kafka_offset_fetch`: a group's committed offsets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffsetFetch {
    /// The group.
    pub group: String,
    /// The (topic, partition)s; `None`: every one committed.
    pub partitions: Option<Vec<(String, u32)>>,
}

/// `kafka_offset_fetch_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaOffsetFetchOk {
    /// Kafka's error code for the group.
    pub error_code: i16,
    /// The offsets (−1 where none is committed).
    pub offsets: Vec<KafkaCommittedOffset>,
}

/// A group, as `kafka_list_groups` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaGroupListing {
    /// The group.
    pub group: String,
    /// Its protocol type (`consumer`).
    pub protocol_type: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
}

/// `kafka_list_groups_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaListGroupsOk {
    /// The groups, by name.
    pub groups: Vec<KafkaGroupListing>,
}

/// `kafka_describe_groups`: groups in detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaDescribeGroups {
    /// The groups.
    pub groups: Vec<String>,
}

/// A member, as `kafka_describe_groups_ok` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaMemberDescription {
    /// The member.
    pub member_id: String,
    /// Its static id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_instance_id: Option<String>,
    /// The client's name.
    pub client_id: String,
    /// Its metadata for the chosen protocol.
    #[serde(with = "base64_bytes")]
    pub metadata: Bytes,
    /// Its assignment.
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// A group in detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaGroupDescription {
    /// Kafka's error code (GROUP_ID_NOT_FOUND for a group that does not exist).
    pub error_code: i16,
    /// The group.
    pub group: String,
    /// Its state, as in [`KafkaGroupListing::state`] (`Dead` if it does not exist).
    pub state: String,
    /// Its protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol_name: String,
    /// Its members.
    pub members: Vec<KafkaMemberDescription>,
}

/// `kafka_describe_groups_ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KafkaDescribeGroupsOk {
    /// The groups, as asked.
    pub groups: Vec<KafkaGroupDescription>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_with_fields_in_any_order() {
        let chunks = [
            KafkaChunk::Batch {
                base_offset: 4,
                bytes: Bytes::from_static(b"\x00\x01"),
            },
            KafkaChunk::Record {
                offset: 5,
                key: Some("k".into()),
                msg: Json::parse(r#"{"a": [1]}"#).unwrap(),
            },
        ];
        for chunk in chunks {
            let text = serde_json::to_string(&chunk).unwrap();
            assert_eq!(serde_json::from_str::<KafkaChunk>(&text).unwrap(), chunk);
        }
        let late: KafkaChunk =
            serde_json::from_str(r#"{"offset":1,"msg":"m","kind":"record"}"#).unwrap();
        assert_eq!(
            late,
            KafkaChunk::Record {
                offset: 1,
                key: None,
                msg: "m".into()
            }
        );
        assert!(serde_json::from_str::<KafkaChunk>(r#"{"kind":"batch","base_offset":1}"#).is_err());
        assert!(serde_json::from_str::<KafkaChunk>(r#"{"kind":"other"}"#).is_err());
    }
}
