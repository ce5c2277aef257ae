//! Every API at every version it advertises: a plausible request is answered with a
//! response that decodes at that version (kafka-protocol refuses to encode a field a
//! version does not have, which would close the client's connection instead).

use bytes::Bytes;
use herald_core::Config;
use herald_kafka::{Loopback, SessionConfig, SUPPORTED_APIS};
use indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

mod common;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from("k")),
        value: Some(Bytes::from("{\"n\":1}")),
        headers: IndexMap::new(),
    };
    let mut out = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, [&record], &options).unwrap();
    Bytes::from(out)
}

/// A request frame (no length prefix): header, then `body` at `version`.
fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(text("every-version")));
    let mut out = Vec::new();
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    (body.encode(&mut out, version)).unwrap_or_else(|e| panic!("encoding {key:?} v{version}: {e}"));
    out
}

/// A plausible request of `key` at version `v`, encoded.
fn request(key: ApiKey, v: i16, id: i32) -> Vec<u8> {
    let topic = || TopicName(text("t"));
    let group = || GroupId(text(&format!("g{v}")));
    match key {
        ApiKey::ApiVersions => frame(key, v, id, &ApiVersionsRequest::default()),
        ApiKey::Metadata => {
            let wanted = metadata_request::MetadataRequestTopic::default().with_name(Some(topic()));
            let r = MetadataRequest::default().with_topics(Some(vec![wanted]));
            frame(key, v, id, &r)
        }
        ApiKey::Produce => {
            let data = produce_request::PartitionProduceData::default().with_records(Some(batch()));
            let t = produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![data]);
            let r = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1_000)
                .with_topic_data(vec![t]);
            frame(key, v, id, &r)
        }
        ApiKey::Fetch => {
            let p = fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20);
            let t = fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![p]);
            let r = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![t]);
            frame(key, v, id, &r)
        }
        ApiKey::ListOffsets => {
            let p = list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2);
            let t = list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![p]);
            let r = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![t]);
            frame(key, v, id, &r)
        }
        ApiKey::OffsetCommit => {
            let p = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_committed_offset(1);
            let t = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![p]);
            let r = OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![t]);
            frame(key, v, id, &r)
        }
        ApiKey::OffsetFetch => {
            let t = offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0]);
            let r = OffsetFetchRequest::default()
                .with_group_id(group())
                .with_topics(Some(vec![t]));
            frame(key, v, id, &r)
        }
        ApiKey::FindCoordinator => {
            let r = if v < 4 {
                FindCoordinatorRequest::default().with_key(text("g"))
            } else {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![text("g")])
            };
            frame(key, v, id, &r)
        }
        ApiKey::JoinGroup => {
            let p = join_group_request::JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from("m"));
            let r = JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![p]);
            frame(key, v, id, &r)
        }
        ApiKey::Heartbeat => {
            let r = HeartbeatRequest::default()
                .with_group_id(group())
                .with_member_id(text("nobody"));
            frame(key, v, id, &r)
        }
        ApiKey::LeaveGroup => {
            let r = if v < 3 {
                LeaveGroupRequest::default().with_member_id(text("nobody"))
            } else {
                let m = leave_group_request::MemberIdentity::default().with_member_id(text("x"));
                LeaveGroupRequest::default().with_members(vec![m])
            };
            frame(key, v, id, &r.with_group_id(group()))
        }
        ApiKey::SyncGroup => {
            let r = SyncGroupRequest::default()
                .with_group_id(group())
                .with_member_id(text("nobody"));
            frame(key, v, id, &r)
        }
        ApiKey::DescribeGroups => {
            let r =
                DescribeGroupsRequest::default().with_groups(vec![group(), GroupId(text("none"))]);
            frame(key, v, id, &r)
        }
        ApiKey::ListGroups => frame(key, v, id, &ListGroupsRequest::default()),
        ApiKey::CreateTopics => {
            let t = create_topics_request::CreatableTopic::default()
                .with_name(TopicName(text(&format!("c{v}"))))
                .with_num_partitions(2)
                .with_replication_factor(1);
            let r = CreateTopicsRequest::default()
                .with_topics(vec![t])
                .with_timeout_ms(1_000);
            frame(key, v, id, &r)
        }
        ApiKey::DeleteTopics => {
            let r = DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(text(&format!("c{}", v + 1)))])
                .with_timeout_ms(1_000);
            frame(key, v, id, &r)
        }
        ApiKey::InitProducerId => {
            let r = InitProducerIdRequest::default()
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            frame(key, v, id, &r)
        }
        // Without TLS no mechanism is offered (error 33), and authenticating before
        // a handshake is out of order (error 34): answered, at every version.
        ApiKey::SaslHandshake => {
            let r = SaslHandshakeRequest::default().with_mechanism(text("PLAIN"));
            frame(key, v, id, &r)
        }
        ApiKey::SaslAuthenticate => {
            let r = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from("\0u\0p"));
            frame(key, v, id, &r)
        }
        other => panic!("{other:?} is advertised: give it a request here"),
    }
}

#[test]
fn every_advertised_version_is_answered_in_that_version() {
    let mut conn = Loopback::new(Config::default(), SessionConfig::default());
    let mut id = 0;
    for range in SUPPORTED_APIS {
        for v in range.min..=range.max {
            id += 1;
            let frame = request(range.key, v, id);
            let response = conn
                .request(&frame)
                .unwrap_or_else(|e| panic!("{:?} v{v}: closed: {e}", range.key));
            let shown = common::read_response(&response, range.key, v, id)
                .unwrap_or_else(|e| panic!("{:?} v{v}: {e}", range.key));
            assert!(
                !shown.contains("error_code: -1,"),
                "{:?} v{v}: {shown}",
                range.key
            );
        }
    }
}

/// Metadata while the broker cannot answer (an election under way, a lost
/// forward): at every version a named topic is listed with LEADER_NOT_AVAILABLE, so
/// the client retries. An empty list, which v12 once sent, reads as "the topic was
/// deleted" to librdkafka, which then fails its queued records with
/// `_UNKNOWN_TOPIC`. An all-topics request, with no topic to carry the error,
/// closes the connection; the client reconnects and asks again.
#[test]
fn metadata_during_an_election_says_retry_at_every_version() {
    use herald_core::wire::msg::ErrorBody;
    use herald_core::{ErrorCode, Payload};
    use herald_kafka::Session;
    use kafka_protocol::protocol::Decodable;

    let no_leader = || {
        let text = "temporarily unavailable: the leader's lease is not confirmed";
        Payload::Error(ErrorBody::new(ErrorCode::TemporarilyUnavailable, text))
    };
    let range = SUPPORTED_APIS
        .iter()
        .find(|r| r.key == ApiKey::Metadata)
        .unwrap();
    for v in range.min..=range.max {
        let mut session = Session::new(SessionConfig::default());
        let named = request(ApiKey::Metadata, v, 1);
        session.handle_frame(0, Bytes::from(named)).unwrap();
        let (msg_id, _) = session.poll_request().expect("a broker request");
        session.handle_reply(0, msg_id, no_leader()).unwrap();
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        let mut body = Bytes::from(out[4..].to_vec());
        ResponseHeader::decode(&mut body, ApiKey::Metadata.response_header_version(v)).unwrap();
        let response = MetadataResponse::decode(&mut body, v).unwrap();
        let topics: Vec<_> = (response.topics.iter())
            .map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code))
            .collect();
        assert_eq!(topics, [("t".to_string(), 5)], "v{v}");
        assert!(response.topics[0].partitions.is_empty(), "v{v}");

        let all_topics = if v == 0 { Some(vec![]) } else { None };
        let all = frame(
            ApiKey::Metadata,
            v,
            2,
            &MetadataRequest::default().with_topics(all_topics),
        );
        session.handle_frame(0, Bytes::from(all)).unwrap();
        let (msg_id, _) = session.poll_request().expect("a broker request");
        let closed = session.handle_reply(0, msg_id, no_leader());
        assert!(closed.is_err(), "v{v}: an all-topics request answered");
    }
}
