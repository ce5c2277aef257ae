//! SaslHandshake (v1) and SaslAuthenticate: SASL/PLAIN, whose password the broker
//! checks (the session asks it with an `auth` request, as a JSON-lines client would),
//! and SASL/SCRAM-SHA-256, whose proof the session checks itself against the user's
//! stored credentials, which the driver looks up ([`crate::SaslEvent`]).

use bytes::Bytes;
use herald_core::wire::msg::Auth;
use herald_core::Payload;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::{respond, text, Pending, Step};
use crate::scram::{self, ScramCredentials};
use crate::SaslEvent;

/// Kafka's code for a mechanism the broker does not enable.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's code for an authentication that failed.
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// Kafka's code for a SASL request out of order.
const ILLEGAL_SASL_STATE: i16 = 34;

/// PLAIN sends the password as it is: it is offered on TLS connections only.
pub(crate) const PLAIN: &str = "PLAIN";

/// Where a connection's SASL exchange is.
#[derive(Default)]
pub(crate) enum Sasl {
    /// No mechanism chosen (or an exchange ended).
    #[default]
    Start,
    /// A handshake chose PLAIN: the credentials are next.
    Plain,
    /// A handshake chose SCRAM-SHA-256: the client's first message is next.
    Scram,
    /// The broker sent its challenge: the client's final message is next.
    ScramChallenged(Box<scram::Challenged>),
}

/// SaslHandshake: SCRAM-SHA-256 is offered always, `PLAIN` where `plain_allowed`.
pub(crate) fn handshake(
    v: i16,
    r: SaslHandshakeRequest,
    plain_allowed: bool,
    sasl: &mut Sasl,
) -> Step {
    let mut offered = vec![scram::MECHANISM];
    if plain_allowed {
        offered.push(PLAIN);
    }
    *sasl = match r.mechanism.as_str() {
        m if m == scram::MECHANISM => Sasl::Scram,
        PLAIN if plain_allowed => Sasl::Plain,
        _ => Sasl::Start,
    };
    let ok = !matches!(sasl, Sasl::Start);
    let response = SaslHandshakeResponse::default()
        .with_error_code(if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM })
        .with_mechanisms(offered.into_iter().map(text).collect());
    respond(v, &response)
}

/// SaslAuthenticate: the next message of the mechanism the handshake chose.
pub(crate) fn authenticate(v: i16, r: SaslAuthenticateRequest, sasl: &mut Sasl) -> Step {
    match std::mem::take(sasl) {
        Sasl::Start => failed(
            v,
            ILLEGAL_SASL_STATE,
            "SaslAuthenticate before SaslHandshake",
        ),
        Sasl::Plain => plain(v, r),
        Sasl::Scram => match scram::client_first(&r.auth_bytes) {
            Ok(first) => Step::Credentials(first),
            Err(why) => failed(v, SASL_AUTHENTICATION_FAILED, why),
        },
        Sasl::ScramChallenged(challenged) => {
            let user = challenged.user.clone();
            match scram::finish(&challenged, &r.auth_bytes) {
                Ok(server_final) => {
                    let response = SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::from(server_final));
                    let step = match respond(v, &response) {
                        Step::Respond(body) => Step::Authenticated(body, user.clone()),
                        other => other,
                    };
                    Step::Event(Box::new(step), SaslEvent::ScramDone { user, ok: true })
                }
                Err(why) => {
                    let step = failed(v, SASL_AUTHENTICATION_FAILED, why);
                    Step::Event(Box::new(step), SaslEvent::ScramDone { user, ok: false })
                }
            }
        }
    }
}

/// The driver's answer to a SCRAM client's first message: the user's credentials
/// (and random bytes for the nonce), or why the client may not authenticate now.
pub(crate) fn challenge(
    v: i16,
    first: scram::ClientFirst,
    answer: Result<ScramCredentials, String>,
    server_random: &[u8],
    sasl: &mut Sasl,
) -> Step {
    match answer {
        Ok(credentials) => {
            let (challenged, server_first) = scram::challenge(first, credentials, server_random);
            *sasl = Sasl::ScramChallenged(Box::new(challenged));
            let response =
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(server_first));
            respond(v, &response)
        }
        Err(why) => failed(v, SASL_AUTHENTICATION_FAILED, &why),
    }
}

/// PLAIN's `[authzid] NUL user NUL password`: the broker is asked to check the
/// password. Malformed, it fails at once.
fn plain(v: i16, r: SaslAuthenticateRequest) -> Step {
    let mut parts = r.auth_bytes.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return failed(
            v,
            SASL_AUTHENTICATION_FAILED,
            "PLAIN: expected [authzid] NUL user NUL password",
        );
    };
    let (Ok(authzid), Ok(user), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(user),
        std::str::from_utf8(password),
    ) else {
        return failed(v, SASL_AUTHENTICATION_FAILED, "PLAIN: not UTF-8");
    };
    if !authzid.is_empty() && authzid != user {
        return failed(
            v,
            SASL_AUTHENTICATION_FAILED,
            "PLAIN: acting for another user is not supported",
        );
    }
    let auth = Auth {
        user: user.to_owned(),
        password: password.to_owned(),
    };
    Step::Ask(vec![Payload::Auth(auth)], Pending::Sasl)
}

/// The broker's answer to the password check: the connection acts as the user, or
/// the client is told why not (and closes).
pub(crate) fn authenticate_done(v: i16, replies: Vec<Payload>) -> Step {
    match replies.into_iter().next() {
        Some(Payload::AuthOk(ok)) => match respond(v, &SaslAuthenticateResponse::default()) {
            Step::Respond(body) => Step::Authenticated(body, ok.user),
            other => other,
        },
        Some(Payload::Error(e)) => failed(v, SASL_AUTHENTICATION_FAILED, &e.text),
        other => Step::Close(format!("sasl: the broker answered {other:?}")),
    }
}

fn failed(v: i16, code: i16, why: &str) -> Step {
    let response = SaslAuthenticateResponse::default()
        .with_error_code(code)
        .with_error_message(Some(text(why)))
        .with_auth_bytes(Bytes::new());
    respond(v, &response)
}
