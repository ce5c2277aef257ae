//! SASL/SCRAM-SHA-256 (RFC 5802, RFC 7677), the broker's side. The broker keeps, per
//! user, a salt, an iteration count and two keys derived from the password
//! ([`ScramCredentials`]), never the password. A client proves it knows the password
//! without sending it: the client's first message names the user and a nonce; the
//! broker answers with the salt, the iterations and the nonce extended by its own
//! random part; the client's final message carries a proof the broker checks against
//! the stored key, and the broker's final message proves it knew the credentials too.
//!
//! As Kafka does, passwords are used as their UTF-8 bytes (no SASLprep), channel
//! binding is not offered, and extensions (such as Kafka's `tokenauth`) are refused.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The mechanism's name in SaslHandshake.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Fewest iterations a credential may have (RFC 7677's minimum, Kafka's too).
pub const MIN_ITERATIONS: u32 = 4_096;
/// Most iterations a credential may have (Kafka's maximum: each costs the client).
pub const MAX_ITERATIONS: u32 = 16_384;
/// Fewest random bytes in the broker's part of the nonce.
pub const MIN_SERVER_NONCE_BYTES: usize = 16;
/// Longest client message taken, in bytes.
const MAX_MESSAGE_BYTES: usize = 4_096;

/// What the broker stores of a user's password for SCRAM-SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The salt, random per user.
    pub salt: Vec<u8>,
    /// PBKDF2's iteration count.
    pub iterations: u32,
    /// SHA-256 of the client key: checks a client's proof.
    pub stored_key: [u8; 32],
    /// Signs the broker's final message.
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// The credentials of `password` with `salt` and `iterations` (PBKDF2-HMAC-SHA-256;
    /// this is the slow part, done when a user is added).
    pub fn new(password: &str, salt: &[u8], iterations: u32) -> ScramCredentials {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The client's first message, read.
#[derive(Debug)]
pub(crate) struct ClientFirst {
    /// The user named (`=2C` and `=3D` unescaped).
    pub user: String,
    /// The GS2 header (`n,,` or `y,,`), which the final message must echo.
    gs2_header: String,
    /// The message without its GS2 header: part of what the proof signs.
    bare: String,
    client_nonce: String,
}

/// An exchange waiting for the client's final message.
pub(crate) struct Challenged {
    /// The user the exchange is for.
    pub user: String,
    gs2_header: String,
    /// `client-first-bare "," server-first`: the start of what the proof signs.
    signed_so_far: String,
    client_nonce: String,
    /// The client's nonce and the broker's.
    nonce: String,
    credentials: ScramCredentials,
}

/// Reads the client's first message: `gs2-header client-first-bare`, where the
/// header is `n,,` (or `y,,`, or with `a=` naming the user itself) and the bare part
/// `n=user,r=nonce`.
pub(crate) fn client_first(bytes: &[u8]) -> Result<ClientFirst, &'static str> {
    let text = message_text(bytes)?;
    let mut header = text.splitn(3, ',');
    let (Some(binding), Some(authzid), Some(bare)) = (header.next(), header.next(), header.next())
    else {
        return Err("expected gs2-header n=user,r=nonce");
    };
    match binding {
        "n" | "y" => {}
        b if b.starts_with("p=") => return Err("channel binding is not supported"),
        _ => return Err("the GS2 header starts with n, y or p="),
    }
    let mut attributes = bare.split(',');
    let user = attributes.next().and_then(|a| a.strip_prefix("n="));
    let nonce = attributes.next().and_then(|a| a.strip_prefix("r="));
    let (Some(user), Some(client_nonce)) = (user, nonce) else {
        return Err("expected n=user,r=nonce");
    };
    if attributes.next().is_some() {
        return Err("SCRAM extensions (such as delegation tokens) are not supported");
    }
    let user = unescape(user)?;
    if !authzid.is_empty() && authzid.strip_prefix("a=").map(unescape) != Some(Ok(user.clone())) {
        return Err("acting for another user is not supported");
    }
    if client_nonce.is_empty() || !client_nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the client nonce is empty or not printable");
    }
    Ok(ClientFirst {
        user,
        gs2_header: format!("{binding},{authzid},"),
        bare: bare.to_owned(),
        client_nonce: client_nonce.to_owned(),
    })
}

/// The broker's first message for `first` with the user's `credentials` and
/// `server_random` (at least [`MIN_SERVER_NONCE_BYTES`] random bytes), and the
/// exchange that waits for the client's answer.
pub(crate) fn challenge(
    first: ClientFirst,
    credentials: ScramCredentials,
    server_random: &[u8],
) -> (Challenged, String) {
    assert!(
        server_random.len() >= MIN_SERVER_NONCE_BYTES,
        "a SCRAM server nonce needs {MIN_SERVER_NONCE_BYTES} random bytes"
    );
    let nonce = format!("{}{}", first.client_nonce, BASE64.encode(server_random));
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&credentials.salt),
        credentials.iterations
    );
    let challenged = Challenged {
        user: first.user,
        gs2_header: first.gs2_header,
        signed_so_far: format!("{},{server_first}", first.bare),
        client_nonce: first.client_nonce,
        nonce,
        credentials,
    };
    (challenged, server_first)
}

/// Checks the client's final message, `c=header,r=nonce,p=proof`: the broker's final
/// message (`v=signature`) if the proof is right.
pub(crate) fn finish(challenged: &Challenged, bytes: &[u8]) -> Result<String, &'static str> {
    let text = message_text(bytes)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or("expected ...,p=proof")?;
    let mut attributes = without_proof.split(',');
    let binding = attributes.next().and_then(|a| a.strip_prefix("c="));
    let nonce = attributes.next().and_then(|a| a.strip_prefix("r="));
    let (Some(binding), Some(nonce), None) = (binding, nonce, attributes.next()) else {
        return Err("expected c=header,r=nonce,p=proof");
    };
    if BASE64.decode(binding).ok().as_deref() != Some(challenged.gs2_header.as_bytes()) {
        return Err("the channel binding does not repeat the GS2 header");
    }
    // librdkafka 2.0 (Debian 12's) sends its own nonce again in front of the combined
    // one, which Kafka's brokers then took (any nonce that ended with theirs): so does
    // Herald, that exact form only. The proof signs the nonce as sent, either way.
    let repeated = nonce.strip_prefix(challenged.client_nonce.as_str());
    if nonce != challenged.nonce && repeated != Some(challenged.nonce.as_str()) {
        return Err("the nonce is not the broker's");
    }
    let proof = BASE64
        .decode(proof)
        .map_err(|_| "the proof is not base64")?;
    let credentials = &challenged.credentials;
    let signed = [
        challenged.signed_so_far.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let client_signature = hmac(&credentials.stored_key, &signed);
    let Ok(proof) = <[u8; 32]>::try_from(proof.as_slice()) else {
        return Err("wrong user or password");
    };
    let mut client_key = [0u8; 32];
    for (k, (p, s)) in client_key
        .iter_mut()
        .zip(proof.iter().zip(client_signature))
    {
        *k = p ^ s;
    }
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    if !constant_time_eq(&stored_key, &credentials.stored_key) {
        return Err("wrong user or password");
    }
    let server_signature = hmac(&credentials.server_key, &signed);
    Ok(format!("v={}", BASE64.encode(server_signature)))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn message_text(bytes: &[u8]) -> Result<&str, &'static str> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err("a SCRAM message over 4096 bytes");
    }
    std::str::from_utf8(bytes).map_err(|_| "a SCRAM message that is not UTF-8")
}

/// A SCRAM name: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn unescape(name: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escaped = rest.get(at..at + 3);
        out.push(match escaped {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err("a user name with an = that is not =2C or =3D"),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user `user`, password `pencil`, its salt, nonces and
    /// messages, byte for byte.
    #[test]
    fn the_rfc_7677_example_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credentials = ScramCredentials::new("pencil", &salt, 4096);
        let first = client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let (mut challenged, server_first) = challenge(first, credentials, &[7; 16]);
        let ours = "r=rOprNGfwEbeRWgbNEkqOBwcHBwcHBwcHBwcHBwcHBw==,s=W22ZaJ0SNY7soEsUEjb6gQ==";
        assert_eq!(server_first, format!("{ours},i=4096"));
        // The RFC's server nonce is not base64 of any bytes: put it in, to check the
        // proof and the signature of its example.
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        challenged.nonce = nonce.into();
        challenged.signed_so_far =
            format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let server_final = finish(&challenged, client_final.as_bytes()).unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // librdkafka 2.0's form (the client nonce again, in front) signs another
        // message, so the RFC's proof does not hold for it; the nonce itself is taken.
        let repeated = client_final.replace("r=", "r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            finish(&challenged, repeated.as_bytes()),
            Err("wrong user or password")
        );
        let other = client_final.replace("r=", "r=x");
        assert_eq!(
            finish(&challenged, other.as_bytes()),
            Err("the nonce is not the broker's")
        );
        let wrong = client_final.replace("dHzb", "dHzc");
        assert_eq!(
            finish(&challenged, wrong.as_bytes()),
            Err("wrong user or password")
        );
    }

    #[test]
    fn names_are_unescaped_and_bad_first_messages_are_refused() {
        let first = client_first(b"n,,n=a=2Cb=3Dc,r=xyz").unwrap();
        assert_eq!(first.user, "a,b=c");
        assert!(client_first(b"n,a=bob,n=bob,r=x").is_ok());
        for bad in [
            &b"n,a=eve,n=bob,r=x"[..],
            b"p=tls-unique,,n=bob,r=x",
            b"n,,n=bob,r=x,tokenauth=true",
            b"n,,n=b=ob,r=x",
            b"n,,r=x",
            b"n,,n=bob,r=",
            b"n,,n=bob",
            b"\xff",
        ] {
            assert!(
                client_first(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
