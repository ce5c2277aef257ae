//! One module per family of Kafka APIs. Each request goes through [`start`] (decode
//! it, answer it or ask the broker) and, once the broker's replies are in, through
//! [`finish`] (make the response). Both return a [`Step`].

mod data;
mod groups;
mod sasl;
mod versions;

use bytes::Bytes;
use herald_core::wire::msg::{ErrorBody, ErrorCode};
use herald_core::Payload;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub(crate) use sasl::{challenge as scram_challenge, Sasl};

use crate::scram;
use crate::session::{Header, SessionConfig};
use crate::SaslEvent;

/// An encoded response body and the version it is encoded at.
pub(crate) struct Body {
    /// Usually the request's; ApiVersions answers an unknown version in v0.
    pub version: i16,
    /// The body's bytes.
    pub bytes: Vec<u8>,
}

/// What to do next with a request.
pub(crate) enum Step {
    /// Answer with this body.
    Respond(Body),
    /// Answer nothing (a produce with `acks=0`).
    Silent,
    /// Send these broker requests; finish with their replies, in this order.
    Ask(Vec<Payload>, Pending),
    /// Hold (a fetch waiting for data) until the deadline, in ms.
    Park(u64, Pending),
    /// Close the connection, for this reason.
    Close(String),
    /// Answer with this body: the connection now acts as this user (SASL).
    Authenticated(Body, String),
    /// Wait for the driver to answer a SCRAM client's first message (its user's
    /// credentials).
    Credentials(scram::ClientFirst),
    /// Take this step, and tell the driver.
    Event(Box<Step>, SaslEvent),
}

/// What a request waiting for the broker remembers, by API.
pub(crate) enum Pending {
    Produce(data::ProducePending),
    Fetch(data::FetchPending),
    ListOffsets,
    Metadata(data::MetadataPending),
    CreateTopics(data::CreateTopicsPending),
    DeleteTopics(data::DeleteTopicsPending),
    InitProducerId,
    Group(groups::GroupPending),
    Sasl,
}

/// Starts a request whose header is read; `body` is the rest of the frame.
pub(crate) fn start(config: &SessionConfig, header: &Header, body: Bytes, now_ms: u64) -> Step {
    let v = header.version;
    match header.key {
        ApiKey::ApiVersions => versions::api_versions(v, body),
        ApiKey::Metadata => decoded(body, v, |r| data::metadata(v, r)),
        ApiKey::Produce => decoded(body, v, |r| data::produce(v, r)),
        ApiKey::Fetch => decoded(body, v, |r| data::fetch(config, r, now_ms)),
        ApiKey::ListOffsets => decoded(body, v, data::list_offsets),
        ApiKey::CreateTopics => decoded(body, v, |r| data::create_topics(config, v, r)),
        ApiKey::DeleteTopics => decoded(body, v, |r| data::delete_topics(v, r)),
        ApiKey::InitProducerId => decoded(body, v, |r| data::init_producer_id(v, r)),
        ApiKey::FindCoordinator => decoded(body, v, |r| groups::find_coordinator(config, v, r)),
        key => groups::start(header, key, body),
    }
}

/// Starts a SaslHandshake or SaslAuthenticate; `sasl` is where the connection's
/// exchange is (the session keeps it).
pub(crate) fn start_sasl(
    config: &SessionConfig,
    header: &Header,
    body: Bytes,
    sasl: &mut Sasl,
) -> Step {
    let v = header.version;
    match header.key {
        ApiKey::SaslHandshake => decoded(body, v, |r| {
            sasl::handshake(v, r, config.plain_allowed, sasl)
        }),
        _ => decoded(body, v, |r| sasl::authenticate(v, r, sasl)),
    }
}

/// Finishes a request with the broker's replies to what it asked.
pub(crate) fn finish(
    config: &SessionConfig,
    header: &Header,
    pending: Pending,
    replies: Vec<Payload>,
    now_ms: u64,
) -> Step {
    let v = header.version;
    match pending {
        Pending::Produce(p) => data::produce_done(v, p, replies),
        Pending::Fetch(p) => data::fetch_done(v, p, replies, now_ms),
        Pending::ListOffsets => data::list_offsets_done(v, replies),
        Pending::Metadata(p) => data::metadata_done(config, v, p, replies),
        Pending::CreateTopics(p) => data::create_topics_done(v, p, replies),
        Pending::DeleteTopics(p) => data::delete_topics_done(v, p, replies),
        Pending::InitProducerId => data::init_producer_id_done(v, replies),
        Pending::Group(p) => groups::finish(v, p, replies),
        Pending::Sasl => sasl::authenticate_done(v, replies),
    }
}

/// A parked request's wait is over (`expired`) or data may have arrived: ask again.
pub(crate) fn wake(pending: Pending, expired: bool) -> Step {
    match pending {
        Pending::Fetch(p) => data::fetch_again(p, expired),
        _ => unreachable!("only fetches park"),
    }
}

/// Decodes a request body at version `v` and hands it to `then`; a body that cannot
/// be read closes the connection (Kafka has no error response for it).
fn decoded<R: Decodable>(mut body: Bytes, v: i16, then: impl FnOnce(R) -> Step) -> Step {
    match R::decode(&mut body, v) {
        Ok(request) => then(request),
        Err(e) => Step::Close(format!(
            "cannot read a {} v{v} request: {e}",
            std::any::type_name::<R>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        )),
    }
}

/// Encodes a response body at version `v`.
fn respond(v: i16, response: &impl Encodable) -> Step {
    let mut bytes = Vec::new();
    match response.encode(&mut bytes, v) {
        Ok(()) => Step::Respond(Body { version: v, bytes }),
        Err(e) => Step::Close(format!("cannot encode a v{v} response: {e}")),
    }
}

/// Kafka's "this user may not use this topic" (Herald's 1010).
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// Kafka's "no leader now, retry" (an election is under way).
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Kafka's code for a Herald error reply (a limit, no leader, an unknown outcome).
fn kafka_code(e: &ErrorBody) -> i16 {
    const REQUEST_TIMED_OUT: i16 = 7;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const UNKNOWN_SERVER_ERROR: i16 = -1;
    use herald_core::wire::msg::kafka_code as k;
    match e.code {
        c if c == ErrorCode::Timeout.code() || c == ErrorCode::Crash.code() => REQUEST_TIMED_OUT,
        c if c == ErrorCode::NotLeader.code() => NOT_LEADER_OR_FOLLOWER,
        c if c == ErrorCode::TemporarilyUnavailable.code() && e.text.contains("leader") => {
            LEADER_NOT_AVAILABLE
        }
        c if c == ErrorCode::TemporarilyUnavailable.code() => k::NOT_ENOUGH_REPLICAS,
        c if c == ErrorCode::KeyDoesNotExist.code() => k::UNKNOWN_TOPIC_OR_PARTITION,
        c if c == ErrorCode::NotAuthorized.code() => TOPIC_AUTHORIZATION_FAILED,
        c if c == ErrorCode::KeyAlreadyExists.code() => k::TOPIC_ALREADY_EXISTS,
        c if c == ErrorCode::MalformedRequest.code() => k::INVALID_REQUEST,
        _ => UNKNOWN_SERVER_ERROR,
    }
}

/// The error a reply carries, if it is a Herald error.
fn error_of(reply: &Payload) -> Option<&ErrorBody> {
    match reply {
        Payload::Error(e) => Some(e),
        _ => None,
    }
}

/// `(topic, item)` pairs, in order, gathered per topic (a run of one topic's pairs
/// becomes one entry), as responses list their partitions under their topics.
fn by_topic<P>(pairs: impl IntoIterator<Item = (String, P)>) -> Vec<(TopicName, Vec<P>)> {
    let mut out: Vec<(TopicName, Vec<P>)> = Vec::new();
    for (topic, item) in pairs {
        match out.last_mut() {
            Some((name, items)) if **name == *topic => items.push(item),
            _ => out.push((TopicName(text(topic)), vec![item])),
        }
    }
    out
}

/// A Kafka string.
fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
