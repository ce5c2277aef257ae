//! # herald-kafka
//!
//! Kafka's wire protocol for Herald, sans-IO: a [`Session`] per connection turns
//! request frames into broker requests (`kafka_*` bodies of `herald_core::wire::msg`)
//! and the broker's replies into response frames, in request order. It holds no
//! socket and reads no clock: the driver feeds it frames, replies and the time, and
//! writes out what it returns. Messages are encoded and decoded with the
//! `kafka-protocol` crate (generated from Kafka's own schemas).
//!
//! [`SUPPORTED_APIS`] lists exactly what is implemented, because clients choose their
//! behaviour by it (docs/kafka.md says why each range is what it is).

mod apis;
mod frame;
mod loopback;
mod records;
pub mod scram;
mod session;

pub use frame::{FrameDecoder, FrameError};
pub use loopback::Loopback;
pub use scram::ScramCredentials;
pub use session::{SaslEvent, Session, SessionConfig};

use kafka_protocol::messages::ApiKey;

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

const fn range(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// Every API served, as ApiVersions advertises it. Produce from v3 and Fetch from v4
/// (record batch v2 only); the group APIs from v0 (librdkafka 2.0 turns consumer
/// groups off otherwise); no version that needs topic ids or batched groups.
pub const SUPPORTED_APIS: &[ApiRange] = &[
    range(ApiKey::Produce, 3, 11),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 7),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::OffsetCommit, 2, 8),
    range(ApiKey::OffsetFetch, 1, 7),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 7),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 4),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 5),
    range(ApiKey::ListGroups, 0, 4),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 5),
    range(ApiKey::DeleteTopics, 1, 5),
    range(ApiKey::InitProducerId, 0, 4),
    // v0 is advertised because librdkafka turns SASL off without it; a client that
    // then sends v0's unframed tokens is closed (they are not a request).
    range(ApiKey::SaslHandshake, 0, 1),
    range(ApiKey::SaslAuthenticate, 0, 2),
];

/// The range served for `key`, if any.
pub fn supported(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED_APIS.iter().copied().find(|r| r.key == key)
}
