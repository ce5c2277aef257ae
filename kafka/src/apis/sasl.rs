//! SaslHandshake (v1) and SaslAuthenticate: SASL/PLAIN, whose password the broker
//! checks (the session asks it with an `auth` request, as a JSON-lines client would).

use bytes::Bytes;
use herald_core::wire::msg::Auth;
use herald_core::Payload;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::{respond, text, Pending, Step};

/// Kafka's code for a mechanism the broker does not enable.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's code for an authentication that failed.
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// Kafka's code for a SASL request out of order.
const ILLEGAL_SASL_STATE: i16 = 34;

/// The only mechanism served; it is offered on TLS connections only, since it sends
/// the password as it is.
pub(crate) const PLAIN: &str = "PLAIN";

/// SaslHandshake: `PLAIN` is accepted where `plain_allowed`; the step, and whether the
/// client may now authenticate.
pub(crate) fn handshake(v: i16, r: SaslHandshakeRequest, plain_allowed: bool) -> (Step, bool) {
    let offered: Vec<&str> = if plain_allowed { vec![PLAIN] } else { vec![] };
    let ok = offered.contains(&r.mechanism.as_str());
    let response = SaslHandshakeResponse::default()
        .with_error_code(if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM })
        .with_mechanisms(offered.into_iter().map(text).collect());
    (respond(v, &response), ok)
}

/// SaslAuthenticate with PLAIN's `[authzid] NUL user NUL password`: the broker is
/// asked to check the password. Before a handshake, or malformed, it fails at once.
pub(crate) fn authenticate(v: i16, r: SaslAuthenticateRequest, handshaken: bool) -> Step {
    if !handshaken {
        return failed(
            v,
            ILLEGAL_SASL_STATE,
            "SaslAuthenticate before SaslHandshake",
        );
    }
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
