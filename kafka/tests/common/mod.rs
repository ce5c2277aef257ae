//! What the Kafka tests share: reading a response frame as text.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// The response body, decoded as `key` at `version` and shown with `{:#?}`.
fn show(key: ApiKey, version: i16, body: &mut Bytes) -> Result<String, String> {
    fn debug<T: Decodable + std::fmt::Debug>(body: &mut Bytes, v: i16) -> Result<String, String> {
        T::decode(body, v)
            .map(|r| format!("{r:#?}"))
            .map_err(|e| e.to_string())
    }
    match key {
        ApiKey::ApiVersions => debug::<ApiVersionsResponse>(body, version),
        ApiKey::Metadata => debug::<MetadataResponse>(body, version),
        ApiKey::Produce => debug::<ProduceResponse>(body, version),
        ApiKey::Fetch => debug::<FetchResponse>(body, version),
        ApiKey::ListOffsets => debug::<ListOffsetsResponse>(body, version),
        ApiKey::FindCoordinator => debug::<FindCoordinatorResponse>(body, version),
        ApiKey::JoinGroup => debug::<JoinGroupResponse>(body, version),
        ApiKey::SyncGroup => debug::<SyncGroupResponse>(body, version),
        ApiKey::Heartbeat => debug::<HeartbeatResponse>(body, version),
        ApiKey::LeaveGroup => debug::<LeaveGroupResponse>(body, version),
        ApiKey::OffsetCommit => debug::<OffsetCommitResponse>(body, version),
        ApiKey::OffsetFetch => debug::<OffsetFetchResponse>(body, version),
        ApiKey::InitProducerId => debug::<InitProducerIdResponse>(body, version),
        ApiKey::SaslHandshake => debug::<SaslHandshakeResponse>(body, version),
        ApiKey::SaslAuthenticate => debug::<SaslAuthenticateResponse>(body, version),
        ApiKey::CreateTopics => debug::<CreateTopicsResponse>(body, version),
        ApiKey::DeleteTopics => debug::<DeleteTopicsResponse>(body, version),
        ApiKey::ListGroups => debug::<ListGroupsResponse>(body, version),
        ApiKey::DescribeGroups => debug::<DescribeGroupsResponse>(body, version),
        other => Err(format!("no decoder for {other:?} in this test")),
    }
}

/// Reads one whole response frame (length prefix included) to `key` at `version`,
/// checks its correlation id and that nothing follows the body, and shows the body.
pub fn read_response(
    frame: &[u8],
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<String, String> {
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    if len + 4 != frame.len() {
        return Err(format!("a frame of {len} bytes in {} bytes", frame.len()));
    }
    let mut body = Bytes::from(frame[4..].to_vec());
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .map_err(|e| e.to_string())?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "correlation id {} for {correlation_id}",
            header.correlation_id
        ));
    }
    let shown = show(key, version, &mut body)?;
    if !body.is_empty() {
        return Err(format!("{} bytes after the body", body.len()));
    }
    Ok(shown)
}
