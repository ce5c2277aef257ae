//! ApiVersions against request bytes captured from a real client, and the answers to
//! requests this layer cannot serve. `HERALD_BLESS=1` rewrites the golden response.

use bytes::Bytes;
use herald_core::Config;
use herald_kafka::{Loopback, SessionConfig, SUPPORTED_APIS, UNSUPPORTED_VERSION};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;

/// The response to one request frame, or why the connection closed.
fn handle_frame(frame: &[u8]) -> Result<Vec<u8>, String> {
    Loopback::new(Config::default(), SessionConfig::default()).request(frame)
}

fn captured(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/captured/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The request frame of a captured client stream (its first frame, prefix removed).
fn first_frame(stream: &[u8]) -> &[u8] {
    let len = i32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
    &stream[4..4 + len]
}

/// Splits a response frame into its correlation id and the decoded body.
fn read_response(frame: &[u8], version: i16) -> (i32, ApiVersionsResponse) {
    let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "the length prefix counts the rest");
    let mut buf = Bytes::copy_from_slice(&frame[4..]);
    let header = ResponseHeader::decode(&mut buf, 0).unwrap();
    let body = ApiVersionsResponse::decode(&mut buf, version).unwrap();
    assert!(buf.is_empty(), "{} bytes left after the body", buf.len());
    (header.correlation_id, body)
}

fn ranges(body: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    body.api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

fn supported() -> Vec<(i16, i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .map(|r| (r.key as i16, r.min, r.max))
        .collect()
}

#[test]
fn kcat_2_0_2_api_versions_v3_gets_the_supported_ranges_without_tagged_fields() {
    let stream = captured("kcat-2.0.2-api-versions-v3.bin");
    let frame = handle_frame(first_frame(&stream)).expect("ApiVersions is answered");
    let (correlation_id, body) = read_response(&frame, 3);
    assert_eq!((correlation_id, body.error_code), (1, 0));
    assert_eq!(ranges(&body), supported());
    assert!(
        body.supported_features.is_empty() && body.finalized_features.is_empty(),
        "librdkafka 2.0.2 misreads tagged fields: send none"
    );
    assert_eq!(frame.last(), Some(&0), "an empty tagged-field section");
    let golden = format!(
        "{}/tests/captured/kcat-2.0.2-api-versions-v3.response.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&golden, &frame).unwrap();
    }
    assert_eq!(
        frame,
        std::fs::read(&golden).unwrap(),
        "golden response bytes"
    );
}

#[test]
fn an_unsupported_api_versions_version_is_answered_in_v0_with_every_range() {
    let mut request = first_frame(&captured("kcat-2.0.2-api-versions-v3.bin")).to_vec();
    request[2..4].copy_from_slice(&99i16.to_be_bytes());
    let frame = handle_frame(&request).expect("an unsupported version is answered");
    let (correlation_id, body) = read_response(&frame, 0);
    assert_eq!((correlation_id, body.error_code), (1, UNSUPPORTED_VERSION));
    assert_eq!(ranges(&body), supported());
}

#[test]
fn an_unreadable_api_versions_body_is_an_invalid_request() {
    let stream = captured("kcat-2.0.2-api-versions-v3.bin");
    let request = first_frame(&stream);
    // Cut inside the client software name.
    let frame = handle_frame(&request[..request.len() - 4]).expect("a bad body is answered");
    let (_, body) = read_response(&frame, 3);
    assert_eq!(body.error_code, herald_kafka::INVALID_REQUEST);
}

#[test]
fn requests_kafka_cannot_answer_close_the_connection_with_a_reason() {
    let close = |frame: &[u8]| handle_frame(frame).expect_err("not answered");
    assert!(close(&[0, 18, 0]).contains("no header"));
    let mut unknown = vec![0x7f, 0x00, 0, 0, 0, 0, 0, 7];
    assert!(close(&unknown).contains("unknown API key 32512"));
    unknown[..2].copy_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    assert!(close(&unknown).contains("Produce v0 is not supported"));
    unknown[..2].copy_from_slice(&(ApiKey::AlterConfigs as i16).to_be_bytes());
    assert!(close(&unknown).contains("AlterConfigs is not supported"));
    // Metadata v4 announcing 2^31 - 1 topics in 17 bytes: refused, not reserved.
    let mut huge = vec![0, 3, 0, 4, 0, 0, 0, 7, 0, 3, b'r', b'a', b'w'];
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(close(&huge).contains("cannot read"));
}

#[test]
fn any_bytes_are_answered_or_refused_never_a_panic() {
    bolero::check!().for_each(|frame: &[u8]| {
        if let Ok(out) = handle_frame(frame) {
            let len = i32::from_be_bytes(out[..4].try_into().unwrap());
            assert_eq!(len as usize, out.len() - 4);
        }
    });
}
