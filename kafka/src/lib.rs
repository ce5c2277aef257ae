//! # herald-kafka
//!
//! Kafka's wire protocol for Herald, sans-IO: the layer turns request frames into
//! answers and holds no socket; a driver moves the bytes. Messages are encoded and
//! decoded with the `kafka-protocol` crate (generated from Kafka's own schemas).
//!
//! What is here so far: framing ([`FrameDecoder`]), request headers,
//! and `ApiVersions`, answered by this layer alone. The table of supported APIs
//! ([`SUPPORTED_APIS`]) lists exactly what is implemented, because clients choose
//! their behaviour by it. The APIs that reach the broker (Metadata, Produce, Fetch,
//! groups, ...) and the listener in `herald serve` are not built yet.

mod frame;

pub use frame::{FrameDecoder, FrameError};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka's error code for a version the broker does not speak.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// Kafka's error code for a request that could not be read.
pub const INVALID_REQUEST: i16 = 42;

/// One API this layer implements, with the versions it accepts (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiRange {
    /// The API.
    pub key: ApiKey,
    /// Oldest version served.
    pub min: i16,
    /// Newest version served.
    pub max: i16,
}

/// Every API served, as ApiVersions advertises it.
pub const SUPPORTED_APIS: &[ApiRange] = &[ApiRange {
    key: ApiKey::ApiVersions,
    min: 0,
    max: 4,
}];

/// What the connection must do with one request frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write this response frame (length prefix included).
    Respond(Vec<u8>),
    /// Close the connection, logging why: Kafka has no way to answer this request.
    Close(String),
}

/// A request's header, as far as it could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The API key.
    pub api_key: i16,
    /// The API version.
    pub api_version: i16,
    /// Echoed in the response; clients match responses by it.
    pub correlation_id: i32,
}

/// Answers one request frame (without its length prefix).
pub fn handle_frame(frame: &[u8]) -> Outcome {
    let header = match read_header_fields(frame) {
        Some(header) => header,
        None => return Outcome::Close(format!("a request of {} bytes has no header", frame.len())),
    };
    let Ok(key) = ApiKey::try_from(header.api_key) else {
        return Outcome::Close(format!("unknown API key {}", header.api_key));
    };
    let Some(range) = SUPPORTED_APIS.iter().find(|r| r.key == key) else {
        return Outcome::Close(format!("API {key:?} is not supported"));
    };
    match key {
        ApiKey::ApiVersions => api_versions(frame, &header, range),
        other => Outcome::Close(format!("API {other:?} is advertised but not handled")),
    }
}

/// The fixed fields every request header starts with: key, version, correlation id.
fn read_header_fields(frame: &[u8]) -> Option<Header> {
    let api_key = i16::from_be_bytes(*frame.first_chunk::<2>()?);
    let api_version = i16::from_be_bytes(*frame.get(2..4)?.first_chunk::<2>()?);
    let correlation_id = i32::from_be_bytes(*frame.get(4..8)?.first_chunk::<4>()?);
    Some(Header {
        api_key,
        api_version,
        correlation_id,
    })
}

/// The request header and body, decoded at the header's version.
fn decode_request<R: Decodable>(frame: &[u8], key: ApiKey, version: i16) -> Option<R> {
    let mut buf = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut buf, key.request_header_version(version)).ok()?;
    R::decode(&mut buf, version).ok()
}

/// `ApiVersions`: every supported range. A version this layer does not speak is
/// answered in the v0 format with UNSUPPORTED_VERSION and the full list, so the client
/// retries with one it finds there (KIP-511); a body that cannot be read is answered
/// with INVALID_REQUEST.
fn api_versions(frame: &[u8], header: &Header, range: &ApiRange) -> Outcome {
    let mut version = header.api_version;
    let error_code = if !(range.min..=range.max).contains(&version) {
        version = 0;
        UNSUPPORTED_VERSION
    } else if decode_request::<ApiVersionsRequest>(frame, ApiKey::ApiVersions, version).is_none() {
        INVALID_REQUEST
    } else {
        0
    };
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect();
    let response = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys);
    respond(
        ApiKey::ApiVersions,
        version,
        header.correlation_id,
        &response,
    )
}

/// A response frame: length, the response header at the API's header version, body;
/// encoded in place behind a length that is filled in last.
fn respond(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = vec![0; 4];
    let encoded = header
        .encode(&mut out, key.response_header_version(version))
        .and_then(|()| body.encode(&mut out, version));
    if let Err(e) = encoded {
        return Outcome::Close(format!(
            "cannot encode the {key:?} v{version} response: {e}"
        ));
    }
    let Ok(len) = i32::try_from(out.len() - 4) else {
        return Outcome::Close(format!("the {key:?} response is over 2 GiB"));
    };
    out[..4].copy_from_slice(&len.to_be_bytes());
    Outcome::Respond(out)
}
