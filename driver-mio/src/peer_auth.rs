//! Peers prove they hold the cluster secret (`--cluster-secret-file`): a link's hello
//! carries who calls whom, the caller's clock and a fresh nonce, signed with
//! HMAC-SHA256 under the secret. The called node checks the signature, that the hello
//! is addressed to it, that the clock is within [`MAX_CLOCK_SKEW_MS`] of its own, and
//! that the nonce was not seen before (a replayed hello is refused). Every message a
//! node takes from a peer arrives on a link the peer opened, so a process without the
//! secret can neither vote nor append. The secret authenticates; it does not encrypt
//! (docs/security.md).

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use password_hash::rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::peers::Hello;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// How far a hello's clock may be from the called node's.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Nonces remembered to refuse replays; past that the oldest are forgotten first
/// (they are older than the skew allows anyway, unless hellos come faster than this).
pub const MAX_REMEMBERED_NONCES: usize = 10_000;

/// The secret the nodes of a cluster share.
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<hidden>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ClusterSecret {
    /// The secret in file `path` (a trailing newline is not part of it).
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{}: a cluster secret has {MIN_SECRET_BYTES} bytes or more (e.g. `head -c 32 \
                 /dev/urandom | base64 > {}`)",
                path.display(),
                path.display()
            ));
        }
        Ok(ClusterSecret { key })
    }

    fn mac(&self, from: &str, to: &str, at_ms: u64, nonce: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("herald-peer-hello\n{from}\n{to}\n{at_ms}\n{nonce}").as_bytes());
        mac
    }

    /// The signed hello of node `from` calling `to` at wall-clock `at_ms`.
    pub fn hello(&self, from: &str, to: &str, at_ms: u64) -> Hello {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let nonce = hex(&nonce);
        let mac = hex(&self.mac(from, to, at_ms, &nonce).finalize().into_bytes());
        Hello {
            herald_peer: from.to_owned(),
            to: Some(to.to_owned()),
            at_ms: Some(at_ms),
            nonce: Some(nonce),
            mac: Some(mac),
        }
    }
}

/// The checks of hellos a node received: the nonces it has seen.
#[derive(Default)]
pub struct HelloCheck {
    seen: BTreeMap<String, u64>,
}

impl HelloCheck {
    /// Checks `hello`, sent to node `me`, at wall-clock `now_ms`: why not, if refused.
    pub fn verify(
        &mut self,
        secret: &ClusterSecret,
        hello: &Hello,
        me: &str,
        now_ms: u64,
    ) -> Result<(), String> {
        let (Some(to), Some(at_ms), Some(nonce), Some(mac)) =
            (&hello.to, hello.at_ms, &hello.nonce, &hello.mac)
        else {
            return Err("no signature (this cluster needs its secret)".into());
        };
        let signed = unhex(mac).ok_or("a signature that is not hex")?;
        (secret
            .mac(&hello.herald_peer, to, at_ms, nonce)
            .verify_slice(&signed))
        .map_err(|_| "a wrong signature (another secret?)")?;
        if to != me {
            return Err(format!("addressed to {to:?}, not to this node"));
        }
        if now_ms.abs_diff(at_ms) > MAX_CLOCK_SKEW_MS {
            return Err(format!(
                "its clock is {} ms from this node's (at most {MAX_CLOCK_SKEW_MS})",
                now_ms.abs_diff(at_ms)
            ));
        }
        if self.seen.contains_key(nonce) {
            return Err("a replayed hello".into());
        }
        self.seen
            .retain(|_, at| now_ms.abs_diff(*at) <= MAX_CLOCK_SKEW_MS);
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| n.clone());
            self.seen.remove(&oldest.expect("not empty"));
        }
        self.seen.insert(nonce.clone(), at_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret {
            key: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_signed_hello_passes_once_and_forgeries_replays_and_stale_ones_do_not() {
        let (ours, theirs) = (secret("sixteen bytes ok"), secret("another secret!!"));
        let mut check = HelloCheck::default();
        let now = 1_000_000;
        let hello = ours.hello("n2", "n1", now);
        assert_eq!(check.verify(&ours, &hello, "n1", now + 5), Ok(()));
        let replayed = check.verify(&ours, &hello, "n1", now + 10).unwrap_err();
        assert_eq!(replayed, "a replayed hello");
        let forged = theirs.hello("n2", "n1", now);
        let err = check.verify(&ours, &forged, "n1", now).unwrap_err();
        assert!(err.contains("wrong signature"), "{err}");
        let elsewhere = ours.hello("n2", "n3", now);
        let err = check.verify(&ours, &elsewhere, "n1", now).unwrap_err();
        assert!(err.contains("not to this node"), "{err}");
        let old = ours.hello("n2", "n1", now - MAX_CLOCK_SKEW_MS - 1);
        assert!(check
            .verify(&ours, &old, "n1", now)
            .unwrap_err()
            .contains("clock"));
        let mut renamed = ours.hello("n2", "n1", now);
        renamed.herald_peer = "n3".into(); // the signature covers the name
        assert!(check.verify(&ours, &renamed, "n1", now).is_err());
        let bare = Hello {
            herald_peer: "n2".into(),
            to: None,
            at_ms: None,
            nonce: None,
            mac: None,
        };
        assert!(check
            .verify(&ours, &bare, "n1", now)
            .unwrap_err()
            .contains("no signature"));
    }

    #[test]
    fn the_nonces_remembered_are_bounded() {
        let s = secret("sixteen bytes ok");
        let mut check = HelloCheck::default();
        for i in 0..MAX_REMEMBERED_NONCES as u64 + 10 {
            check
                .verify(&s, &s.hello("n2", "n1", 5_000 + i), "n1", 5_000)
                .unwrap();
        }
        assert_eq!(check.seen.len(), MAX_REMEMBERED_NONCES);
    }
}
