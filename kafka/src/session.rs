//! One Kafka connection's state: its requests in flight, in the order they came.
//!
//! A request frame becomes either a response at once (ApiVersions, FindCoordinator,
//! bad input) or broker requests ([`Session::poll_request`]); once every reply is in
//! ([`Session::handle_reply`]) it becomes a response. A fetch that found less than
//! its `min_bytes` is parked until data may have arrived ([`Session::retry_parked`])
//! or its wait ends ([`Session::handle_timeout`]). Responses leave in request order
//! ([`Session::poll_transmit`]), as Kafka clients expect.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use herald_core::Payload;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::apis::{self, Pending, Step};
use crate::scram::{self, ScramCredentials};

/// What a session needs to know about the broker it speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// This broker's id in Metadata and FindCoordinator.
    pub node_id: i32,
    /// The host clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: i32,
    /// Partitions of a topic made by CreateTopics without a count.
    pub default_partitions: u32,
    /// Requests in flight on one connection before the driver stops reading it.
    pub max_in_flight: usize,
    /// The longest a fetch is held waiting for data, whatever it asks.
    pub max_fetch_wait_ms: u64,
    /// Clients must authenticate (SASL) before any request but ApiVersions.
    pub authenticate: bool,
    /// SASL/PLAIN is offered (it sends the password as it is: on TLS only);
    /// SCRAM-SHA-256 is offered always.
    pub plain_allowed: bool,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            default_partitions: 1,
            max_in_flight: 1_024,
            max_fetch_wait_ms: 30_000,
            authenticate: false,
            plain_allowed: false,
        }
    }
}

/// A request's header, as far as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The API.
    pub key: ApiKey,
    /// Its version.
    pub version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's name.
    pub client_id: String,
}

enum State {
    /// The response (`None`: a produce with `acks=0`, which gets none).
    Done(Option<Vec<u8>>),
    /// Waiting for the broker's replies, by slot.
    Asking {
        pending: Pending,
        replies: Vec<Option<Payload>>,
        missing: usize,
    },
    /// A fetch holding for data, until `deadline_ms`.
    Parked { pending: Pending, deadline_ms: u64 },
    /// A SCRAM client's first message, waiting for its user's credentials.
    Credentials(scram::ClientFirst),
}

/// What the driver must act on, from a connection's SASL exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslEvent {
    /// A SCRAM-SHA-256 client named `user`: answer with [`Session::handle_credentials`]
    /// for request `id`.
    CredentialsWanted {
        /// The request waiting.
        id: u64,
        /// The user named.
        user: String,
    },
    /// A SCRAM-SHA-256 exchange ended: the connection now acts as `user` (`ok`), or
    /// the client's proof was wrong.
    ScramDone {
        /// The user named.
        user: String,
        /// True if the proof was right.
        ok: bool,
    },
}

struct InFlight {
    id: u64,
    header: Header,
    state: State,
}

/// One Kafka connection.
pub struct Session {
    config: SessionConfig,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    next_msg_id: u64,
    /// Broker requests to send: (msg_id, body).
    requests: VecDeque<(u64, Payload)>,
    /// msg_id → (request id, reply slot).
    awaiting: BTreeMap<u64, (u64, usize)>,
    /// Where the SASL exchange is.
    sasl: apis::Sasl,
    /// Events for the driver, oldest first.
    events: VecDeque<SaslEvent>,
    /// The user SASL authenticated, if any.
    user: Option<String>,
}

impl Session {
    /// A new connection's session.
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            in_flight: VecDeque::new(),
            next_id: 0,
            next_msg_id: 0,
            requests: VecDeque::new(),
            awaiting: BTreeMap::new(),
            sasl: apis::Sasl::default(),
            events: VecDeque::new(),
            user: None,
        }
    }

    /// The user this connection authenticated as (SASL), if it did.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// True while the connection has as many requests in flight as it may: the driver
    /// stops reading it until some are answered.
    pub fn is_full(&self) -> bool {
        self.in_flight.len() >= self.config.max_in_flight
    }

    /// True if a fetch is parked (the driver retries it when data may have arrived).
    pub fn has_parked(&self) -> bool {
        self.in_flight
            .iter()
            .any(|r| matches!(r.state, State::Parked { .. }))
    }

    /// Takes one request frame (length prefix removed); record batches in it are
    /// kept as slices of it. `Err`: close the connection, logging the reason (Kafka
    /// has no way to answer it).
    pub fn handle_frame(&mut self, now_ms: u64, frame: Bytes) -> Result<(), String> {
        let mut buf = frame;
        let header = read_header(&mut buf)?;
        let step = match header.key {
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
                apis::start_sasl(&self.config, &header, buf, &mut self.sasl)
            }
            key if self.config.authenticate
                && self.user.is_none()
                && key != ApiKey::ApiVersions =>
            {
                return Err(format!("{key:?} before SASL authentication"));
            }
            _ => apis::start(&self.config, &header, buf, now_ms),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.push_back(InFlight {
            id,
            header,
            state: State::Done(None),
        });
        self.apply(id, step)
    }

    /// Takes the broker's reply to the request `msg_id` (one [`Session::poll_request`]
    /// gave). A reply to nothing in flight (a closed request) is ignored.
    pub fn handle_reply(&mut self, now_ms: u64, msg_id: u64, reply: Payload) -> Result<(), String> {
        let Some((id, slot)) = self.awaiting.remove(&msg_id) else {
            return Ok(());
        };
        let Some(request) = self.in_flight.iter_mut().find(|r| r.id == id) else {
            return Ok(());
        };
        let State::Asking {
            replies, missing, ..
        } = &mut request.state
        else {
            return Ok(());
        };
        replies[slot] = Some(reply);
        *missing -= 1;
        if *missing > 0 {
            return Ok(());
        }
        let State::Asking {
            pending, replies, ..
        } = std::mem::replace(&mut request.state, State::Done(None))
        else {
            unreachable!("matched above");
        };
        let replies = replies.into_iter().map(|r| r.expect("all in")).collect();
        let step = apis::finish(&self.config, &request.header, pending, replies, now_ms);
        self.apply(id, step)
    }

    /// The next event the driver must act on.
    pub fn poll_event(&mut self) -> Option<SaslEvent> {
        self.events.pop_front()
    }

    /// Answers [`SaslEvent::CredentialsWanted`] for request `id`: the user's
    /// credentials and at least [`scram::MIN_SERVER_NONCE_BYTES`] random bytes for the
    /// nonce, or why the client may not authenticate (an unknown user should get made-up
    /// credentials instead, so that the client cannot tell). An `id` no longer waiting
    /// is ignored.
    pub fn handle_credentials(
        &mut self,
        id: u64,
        answer: Result<ScramCredentials, String>,
        server_random: &[u8],
    ) -> Result<(), String> {
        let Some(request) = self.in_flight.iter_mut().find(|r| r.id == id) else {
            return Ok(());
        };
        let State::Credentials(first) = std::mem::replace(&mut request.state, State::Done(None))
        else {
            return Ok(());
        };
        let v = request.header.version;
        let step = apis::scram_challenge(v, first, answer, server_random, &mut self.sasl);
        self.apply(id, step)
    }

    /// Ends the waits that are over: their fetches are asked once more and answered
    /// with what they find.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), String> {
        self.wake(|deadline_ms| deadline_ms <= now_ms, now_ms)
    }

    /// Asks parked fetches again: data may have arrived.
    pub fn retry_parked(&mut self, now_ms: u64) -> Result<(), String> {
        self.wake(|_| true, now_ms)
    }

    /// When the next parked fetch's wait ends.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.in_flight.iter())
            .filter_map(|r| match r.state {
                State::Parked { deadline_ms, .. } => Some(deadline_ms),
                _ => None,
            })
            .min()
    }

    /// The next broker request to send, with the `msg_id` its reply must carry.
    pub fn poll_request(&mut self) -> Option<(u64, Payload)> {
        self.requests.pop_front()
    }

    /// Appends the responses that are ready, in request order, to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        while let Some(InFlight {
            state: State::Done(_),
            ..
        }) = self.in_flight.front()
        {
            let Some(InFlight {
                state: State::Done(frame),
                ..
            }) = self.in_flight.pop_front()
            else {
                unreachable!("checked above");
            };
            if let Some(frame) = frame {
                out.extend_from_slice(&frame);
            }
        }
    }

    fn wake(&mut self, due: impl Fn(u64) -> bool, now_ms: u64) -> Result<(), String> {
        let woken: Vec<u64> = (self.in_flight.iter())
            .filter(|r| matches!(r.state, State::Parked { deadline_ms, .. } if due(deadline_ms)))
            .map(|r| r.id)
            .collect();
        for id in woken {
            let request = self.in_flight.iter_mut().find(|r| r.id == id);
            let request = request.expect("listed above");
            let State::Parked {
                pending,
                deadline_ms,
            } = std::mem::replace(&mut request.state, State::Done(None))
            else {
                unreachable!("listed as parked");
            };
            let step = apis::wake(pending, deadline_ms <= now_ms);
            self.apply(id, step)?;
        }
        Ok(())
    }

    fn apply(&mut self, id: u64, step: Step) -> Result<(), String> {
        let request = self.in_flight.iter_mut().find(|r| r.id == id);
        let request = request.expect("in flight");
        request.state = match step {
            Step::Respond(body) => State::Done(Some(frame(&request.header, &body)?)),
            Step::Silent => State::Done(None),
            Step::Authenticated(body, user) => {
                self.user = Some(user);
                State::Done(Some(frame(&request.header, &body)?))
            }
            Step::Close(why) => return Err(why),
            Step::Credentials(first) => {
                let user = first.user.clone();
                self.events
                    .push_back(SaslEvent::CredentialsWanted { id, user });
                State::Credentials(first)
            }
            Step::Event(step, event) => {
                self.events.push_back(event);
                return self.apply(id, *step);
            }
            Step::Park(deadline_ms, pending) => State::Parked {
                pending,
                deadline_ms,
            },
            Step::Ask(payloads, pending) => {
                let missing = payloads.len();
                assert!(missing > 0, "an ask without requests");
                for (slot, payload) in payloads.into_iter().enumerate() {
                    let msg_id = self.next_msg_id;
                    self.next_msg_id += 1;
                    self.awaiting.insert(msg_id, (id, slot));
                    self.requests.push_back((msg_id, payload));
                }
                State::Asking {
                    pending,
                    replies: vec![None; missing],
                    missing,
                }
            }
        };
        Ok(())
    }
}

/// Reads the request header: key, version, correlation id, client id. An unknown
/// key, an unsupported version (except ApiVersions, which answers it), or a header
/// that cannot be read is an error that closes the connection.
fn read_header(buf: &mut Bytes) -> Result<Header, String> {
    let fixed = |b: &Bytes| -> Option<(i16, i16)> {
        let key = i16::from_be_bytes(*b.first_chunk::<2>()?);
        let version = i16::from_be_bytes(*b.get(2..4)?.first_chunk::<2>()?);
        Some((key, version))
    };
    let (api_key, version) =
        fixed(buf).ok_or_else(|| format!("a request of {} bytes has no header", buf.len()))?;
    let key = ApiKey::try_from(api_key).map_err(|()| format!("unknown API key {api_key}"))?;
    let range = crate::supported(key).ok_or_else(|| format!("API {key:?} is not supported"))?;
    if key != ApiKey::ApiVersions && !(range.min..=range.max).contains(&version) {
        return Err(format!(
            "{key:?} v{version} is not supported (v{}..=v{})",
            range.min, range.max
        ));
    }
    // ApiVersions of an unknown (newer) version: read with header v1, which every
    // version starts with, and answer in v0 (KIP-511).
    let header_version = if (range.min..=range.max).contains(&version) {
        key.request_header_version(version)
    } else {
        1
    };
    let header = RequestHeader::decode(buf, header_version)
        .map_err(|e| format!("{key:?} v{version}: cannot read the header: {e}"))?;
    Ok(Header {
        key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
    })
}

/// A response frame: length, the response header at the API's header version, body.
fn frame(header: &Header, body: &apis::Body) -> Result<Vec<u8>, String> {
    let (key, version) = (header.key, body.version);
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let mut out = vec![0; 4];
    response_header
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| format!("cannot encode the {key:?} v{version} header: {e}"))?;
    out.extend_from_slice(&body.bytes);
    let len =
        i32::try_from(out.len() - 4).map_err(|_| format!("the {key:?} response is over 2 GiB"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ApiVersions v0 with correlation id `id`: answered by the session alone.
    fn api_versions(id: i32) -> Bytes {
        let mut frame = vec![0, 18, 0, 0];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&[0, 0]); // no client id
        Bytes::from(frame)
    }

    /// A request frame (no length prefix) for `key` at `version`.
    fn request(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        let mut out = Vec::new();
        header
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        Bytes::from(out)
    }

    /// The SaslAuthenticate v2 responses ready (correlation id 2 is the handshake's,
    /// left out): (error code, auth bytes).
    fn sasl_responses(session: &mut Session) -> Vec<(i16, String)> {
        use kafka_protocol::messages::SaslAuthenticateResponse;
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        let mut buf = Bytes::from(out);
        let mut responses = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            let mut frame = buf.slice(4..4 + len);
            buf = buf.slice(4 + len..);
            let version = ApiKey::SaslAuthenticate.response_header_version(2);
            if ResponseHeader::decode(&mut frame, version)
                .unwrap()
                .correlation_id
                == 2
            {
                continue;
            }
            let r = SaslAuthenticateResponse::decode(&mut frame, 2).unwrap();
            let bytes = String::from_utf8(r.auth_bytes.to_vec()).unwrap();
            responses.push((r.error_code, bytes));
        }
        responses
    }

    /// The client's side of SCRAM-SHA-256 (RFC 5802): the final message for
    /// `password`, given the first messages.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        use base64::Engine;
        use hmac::Mac;
        use sha2::Digest;
        let b64 = base64::engine::general_purpose::STANDARD;
        let attr = |k: &str| {
            let found = server_first.split(',').find_map(|a| a.strip_prefix(k));
            found.unwrap().to_owned()
        };
        let (nonce, salt) = (attr("r="), b64.decode(attr("s=")).unwrap());
        let iterations = attr("i=").parse().unwrap();
        let credentials = ScramCredentials::new(password, &salt, iterations);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let mac = |key: &[u8], data: &[u8]| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes()
        };
        let client_key = mac(&salted, b"Client Key");
        assert_eq!(sha2::Sha256::digest(client_key)[..], credentials.stored_key);
        let without_proof = format!("c=biws,r={nonce}");
        let signed = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mac(&credentials.stored_key, signed.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", b64.encode(proof))
    }

    /// A SCRAM-SHA-256 exchange through the session: the driver is asked for the
    /// user's credentials, a right proof authenticates, a wrong one does not, and
    /// before authentication any other request closes the connection.
    #[test]
    fn a_scram_exchange_authenticates_with_the_right_password_only() {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let stored = ScramCredentials::new("pencil", b"salt of alice", 4096);
        let exchange = |password: &str| {
            let config = SessionConfig {
                authenticate: true,
                ..SessionConfig::default()
            };
            let mut session = Session::new(config);
            let early = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from("x"));
            session
                .handle_frame(0, request(ApiKey::SaslAuthenticate, 2, 1, &early))
                .unwrap();
            assert_eq!(sasl_responses(&mut session)[0].0, 34, "before a handshake");
            let mechanism = text_of("SCRAM-SHA-256");
            let handshake = SaslHandshakeRequest::default().with_mechanism(mechanism);
            session
                .handle_frame(0, request(ApiKey::SaslHandshake, 1, 2, &handshake))
                .unwrap();
            let first_bare = "n=alice,r=client-nonce";
            let first = SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("n,,{first_bare}")));
            session
                .handle_frame(0, request(ApiKey::SaslAuthenticate, 2, 3, &first))
                .unwrap();
            let Some(SaslEvent::CredentialsWanted { id, user }) = session.poll_event() else {
                panic!("no credentials asked");
            };
            assert_eq!(user, "alice");
            session
                .handle_credentials(id, Ok(stored.clone()), &[9; 18])
                .unwrap();
            let server_first = sasl_responses(&mut session).remove(0).1;
            assert!(server_first.starts_with("r=client-nonce"), "{server_first}");
            let last = client_final(password, first_bare, &server_first);
            let last = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(last));
            session
                .handle_frame(0, request(ApiKey::SaslAuthenticate, 2, 4, &last))
                .unwrap();
            let (code, bytes) = sasl_responses(&mut session).remove(0);
            (session, code, bytes)
        };
        let (mut session, code, server_final) = exchange("pencil");
        assert_eq!((code, &server_final[..2]), (0, "v="));
        let done = SaslEvent::ScramDone {
            user: "alice".into(),
            ok: true,
        };
        assert_eq!(session.poll_event(), Some(done));
        assert_eq!(session.user(), Some("alice"));
        let (mut session, code, _) = exchange("not pencil");
        assert_eq!(code, 58, "SASL_AUTHENTICATION_FAILED");
        let done = SaslEvent::ScramDone {
            user: "alice".into(),
            ok: false,
        };
        assert_eq!(session.poll_event(), Some(done));
        assert_eq!(session.user(), None);
        let metadata = kafka_protocol::messages::MetadataRequest::default();
        let closed = session.handle_frame(0, request(ApiKey::Metadata, 4, 5, &metadata));
        assert!(closed.unwrap_err().contains("before SASL authentication"));
    }

    fn text_of(s: &str) -> kafka_protocol::protocol::StrBytes {
        kafka_protocol::protocol::StrBytes::from_string(s.into())
    }

    #[test]
    fn a_full_session_stops_reading_until_its_responses_go_out_in_order() {
        let mut session = Session::new(SessionConfig {
            max_in_flight: 2,
            ..SessionConfig::default()
        });
        session.handle_frame(0, api_versions(7)).unwrap();
        assert!(!session.is_full());
        session.handle_frame(0, api_versions(8)).unwrap();
        assert!(session.is_full(), "two answers not written yet");
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        assert!(!session.is_full());
        let first_len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        let correlation = |at: usize| i32::from_be_bytes(out[at..at + 4].try_into().unwrap());
        assert_eq!((correlation(4), correlation(first_len + 8)), (7, 8));
    }
}
