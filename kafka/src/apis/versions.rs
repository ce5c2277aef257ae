//! ApiVersions: every supported range, answered by this layer alone.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;

use super::{respond, Step};
use crate::{supported, INVALID_REQUEST, SUPPORTED_APIS, UNSUPPORTED_VERSION};

/// A version this layer does not speak is answered in the v0 format with
/// UNSUPPORTED_VERSION and the full list, so the client retries with one it finds
/// there (KIP-511); a body that cannot be read gets INVALID_REQUEST. No tagged fields:
/// librdkafka 2.0 misreads them in this response.
pub(super) fn api_versions(version: i16, mut body: Bytes) -> Step {
    let range = supported(ApiKey::ApiVersions).expect("ApiVersions is served");
    let mut v = version;
    let error_code = if !(range.min..=range.max).contains(&v) {
        v = 0;
        UNSUPPORTED_VERSION
    } else if ApiVersionsRequest::decode(&mut body, v).is_err() {
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
    respond(v, &response)
}
