//! Users of `herald serve`: their salted Argon2id password hashes and SCRAM-SHA-256
//! credentials in `<data-dir>/users.json`, managed by `herald user add|remove|list`;
//! passwords checked on a thread of their own (a check costs tens of milliseconds by
//! design, which the event loop must not spend), and a backoff for addresses that
//! keep failing.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use herald_kafka::scram::{self, ScramCredentials};
use password_hash::rand_core::RngCore;

use crate::acl::{Rule, MAX_RULES_PER_USER};
use password_hash::rand_core::OsRng;
use password_hash::SaltString;

/// The users file's name in the data directory.
pub const USERS_FILE: &str = "users.json";
/// The users file's format version.
const FORMAT: u64 = 1;
/// Longest user name, in bytes.
pub const MAX_USER_NAME_BYTES: usize = 64;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Password checks waiting for the checking thread; more are refused with 11.
pub const MAX_PENDING_CHECKS: usize = 64;
/// Client addresses whose failures are remembered; past that the oldest are dropped.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// Failures from one address before it must wait.
const FREE_FAILURES: u32 = 3;
/// Longest wait imposed on an address.
const MAX_BACKOFF_MS: u64 = 60_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    format: u64,
    users: BTreeMap<String, User>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    /// The password's hash, in the PHC string format (`$argon2id$v=19$...`).
    argon2: String,
    /// What the user may do ([`crate::acl`]); nothing without rules.
    #[serde(default)]
    allow: Vec<Rule>,
    /// For Kafka clients' SASL/SCRAM-SHA-256 (`None` for a user added before Herald
    /// had it: setting the password again makes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scram_sha_256: Option<Scram>,
}

/// SCRAM-SHA-256 credentials as the users file holds them (RFC 5802's names).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Scram {
    /// The salt, base64.
    salt: String,
    /// PBKDF2's iterations.
    iterations: u32,
    /// The stored key, base64.
    stored_key: String,
    /// The server key, base64.
    server_key: String,
}

impl Scram {
    fn new(password: &str) -> Scram {
        let salt = random_bytes::<32>();
        let c = ScramCredentials::new(password, &salt, scram::MIN_ITERATIONS);
        Scram {
            salt: BASE64.encode(&c.salt),
            iterations: c.iterations,
            stored_key: BASE64.encode(c.stored_key),
            server_key: BASE64.encode(c.server_key),
        }
    }

    /// The credentials, if the file's text is well formed.
    fn credentials(&self) -> Option<ScramCredentials> {
        let key = |text: &str| <[u8; 32]>::try_from(BASE64.decode(text).ok()?).ok();
        let iterations = scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS;
        Some(ScramCredentials {
            salt: BASE64.decode(&self.salt).ok()?,
            iterations: Some(self.iterations).filter(|i| iterations.contains(i))?,
            stored_key: key(&self.stored_key)?,
            server_key: key(&self.server_key)?,
        })
    }
}

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Made-up SCRAM credentials, for a user who has none: the exchange goes on as for a
/// real user and fails at the proof, so a client cannot tell which names exist.
pub fn decoy_scram() -> ScramCredentials {
    ScramCredentials {
        salt: random_bytes::<32>().to_vec(),
        iterations: scram::MIN_ITERATIONS,
        stored_key: random_bytes(),
        server_key: random_bytes(),
    }
}

/// The users of one data directory, as last read.
#[derive(Clone, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
    /// The file's modification time when it was read.
    read_at: Option<SystemTime>,
}

fn path_in(dir: &Path) -> PathBuf {
    dir.join(USERS_FILE)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Users {
    /// The users of data directory `dir` (none if it has no users file).
    pub fn load(dir: &Path) -> Result<Users, String> {
        let path = path_in(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let file: File =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.format != FORMAT {
            return Err(format!(
                "{}: format {} (this herald reads format {FORMAT})",
                path.display(),
                file.format
            ));
        }
        Ok(Users {
            users: file.users,
            read_at: modified(&path),
        })
    }

    /// The file again, if it changed since it was read (`Ok(None)`: unchanged).
    pub fn reload(&self, dir: &Path) -> Result<Option<Users>, String> {
        if modified(&path_in(dir)) == self.read_at {
            return Ok(None);
        }
        Users::load(dir).map(Some)
    }

    /// True if there are none: every connection is trusted.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The users' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Adds user `name` with `password`, or sets the password of an existing one;
    /// true if the user is new.
    pub fn set(&mut self, name: &str, password: &str) -> Result<bool, String> {
        check_name(name)?;
        check_password(password)?;
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| format!("cannot hash the password: {e}"))?;
        let allow = (self.users.get(name)).map_or(Vec::new(), |u| u.allow.clone());
        let user = User {
            argon2: hash.to_string(),
            allow,
            scram_sha_256: Some(Scram::new(password)),
        };
        Ok(self.users.insert(name.to_owned(), user).is_none())
    }

    /// Replaces the rules of user `name`.
    pub fn allow(&mut self, name: &str, rules: Vec<Rule>) -> Result<(), String> {
        if rules.len() > MAX_RULES_PER_USER {
            return Err(format!("at most {MAX_RULES_PER_USER} rules per user"));
        }
        let user = (self.users.get_mut(name)).ok_or_else(|| format!("no user {name:?}"))?;
        user.allow = rules;
        Ok(())
    }

    /// The rules of user `name` (none for an unknown user).
    pub fn rules_of(&self, name: &str) -> &[Rule] {
        self.users.get(name).map_or(&[], |u| &u.allow)
    }

    /// The SCRAM-SHA-256 credentials of user `name`, if the user has them.
    pub fn scram_of(&self, name: &str) -> Option<ScramCredentials> {
        self.users.get(name)?.scram_sha_256.as_ref()?.credentials()
    }

    /// Users without SCRAM-SHA-256 credentials (added before Herald had them).
    pub fn without_scram(&self) -> impl Iterator<Item = &str> {
        (self.users.iter())
            .filter(|(_, u)| u.scram_sha_256.is_none())
            .map(|(name, _)| name.as_str())
    }

    /// Removes user `name`; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    /// Writes the users to data directory `dir` (a new file, then renamed over the old
    /// one, readable by its owner only).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = path_in(dir);
        let fail = |e: io::Error| format!("{}: {e}", path.display());
        std::fs::create_dir_all(dir).map_err(fail)?;
        let file = File {
            format: FORMAT,
            users: self.users.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("users serialize");
        let temp = dir.join(format!("{USERS_FILE}.tmp"));
        write_private(&temp, text.as_bytes()).map_err(fail)?;
        std::fs::rename(&temp, &path).map_err(fail)
    }

    /// What checking `user`'s `password` needs: the stored hash (`None`: no such user).
    fn hash_of(&self, user: &str) -> Option<String> {
        self.users.get(user).map(|u| u.argon2.clone())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-@".contains(c);
    if name.is_empty() || name.len() > MAX_USER_NAME_BYTES || !name.chars().all(allowed) {
        return Err(format!(
            "user name {name:?}: 1 to {MAX_USER_NAME_BYTES} letters, digits or . _ - @"
        ));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "a password has {MIN_PASSWORD_CHARS} characters or more (and at most \
             {MAX_PASSWORD_BYTES} bytes)"
        ));
    }
    Ok(())
}

/// A password check to run: who asked (a connection's key and id), and for whom.
pub struct Check {
    /// The connection's slab key.
    pub key: usize,
    /// The connection's id (a key is reused once its connection closes).
    pub conn_id: u64,
    /// The request's `msg_id`, to answer.
    pub msg_id: Option<u64>,
    /// The user named.
    pub user: String,
    password: String,
    hash: Option<String>,
}

/// A check's result.
pub struct Checked {
    /// The check it answers.
    pub key: usize,
    /// The connection's id.
    pub conn_id: u64,
    /// The request's `msg_id`.
    pub msg_id: Option<u64>,
    /// The user named.
    pub user: String,
    /// True if the password is the user's.
    pub ok: bool,
}

/// The thread that checks passwords, and its queues.
pub struct Checker {
    requests: SyncSender<Check>,
    results: Receiver<Checked>,
}

impl Checker {
    /// Starts the thread; `wake` is called after each result, to wake the loop.
    pub fn start(wake: impl Fn() + Send + 'static) -> io::Result<Checker> {
        let (requests, inbox) = mpsc::sync_channel::<Check>(MAX_PENDING_CHECKS);
        let (outbox, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("herald-auth".into())
            .spawn(move || {
                for check in inbox {
                    let ok = verify(&check.password, check.hash.as_deref());
                    let checked = Checked {
                        key: check.key,
                        conn_id: check.conn_id,
                        msg_id: check.msg_id,
                        user: check.user,
                        ok,
                    };
                    if outbox.send(checked).is_err() {
                        return; // the server is gone
                    }
                    wake();
                }
            })?;
        Ok(Checker { requests, results })
    }

    /// Queues a check of `password` for `user` against `users`; false if the queue is
    /// full (try again later).
    pub fn submit(
        &self,
        users: &Users,
        (key, conn_id, msg_id): (usize, u64, Option<u64>),
        user: String,
        password: String,
    ) -> bool {
        let hash = users.hash_of(&user);
        let check = Check {
            key,
            conn_id,
            msg_id,
            user,
            password,
            hash,
        };
        match self.requests.try_send(check) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The results ready now.
    pub fn results(&self) -> impl Iterator<Item = Checked> + '_ {
        self.results.try_iter()
    }
}

/// Checks `password` against `hash`; with no such user, against a made-up hash, so a
/// wrong name takes as long as a wrong password.
fn verify(password: &str, hash: Option<&str>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let decoy = DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        (Argon2::default().hash_password(b"not a password of anyone", &salt))
            .map(|h| h.to_string())
            .unwrap_or_default()
    });
    let known = hash.is_some();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(decoy)) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    known && matches
}

/// Failed authentications per client address, and the wait each must keep.
#[derive(Default)]
pub struct Failures {
    by_addr: BTreeMap<IpAddr, (u32, Instant)>,
}

impl Failures {
    /// How long `addr` must still wait before trying again (`None`: it may try now).
    pub fn wait(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let (_, until) = self.by_addr.get(&addr)?;
        (*until > now).then(|| *until - now)
    }

    /// `addr` failed once more: after a few failures, it waits 1 s, then 2 s, 4 s, ...
    /// up to a minute.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        if self.by_addr.len() >= MAX_TRACKED_ADDRESSES && !self.by_addr.contains_key(&addr) {
            let oldest = (self.by_addr.iter())
                .min_by_key(|(_, (_, until))| *until)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.by_addr.remove(&a);
            }
        }
        let entry = self.by_addr.entry(addr).or_insert((0, now));
        entry.0 += 1;
        if entry.0 > FREE_FAILURES {
            let doublings = (entry.0 - FREE_FAILURES - 1).min(16);
            let wait_ms = (1000u64 << doublings).min(MAX_BACKOFF_MS);
            entry.1 = now + Duration::from_millis(wait_ms);
        }
    }

    /// `addr` authenticated: its failures are forgotten.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_saved_hashed_and_checked() {
        let dir = std::env::temp_dir().join(format!("herald-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut users = Users::load(&dir).unwrap();
        assert!(users.is_empty());
        assert!(users.set("alice", "correct horse").unwrap());
        assert!(!users.set("alice", "battery staple").unwrap()); // a new password
        assert!(users.set("bob", "12345678").unwrap());
        assert!(users.set("bad name", "12345678").is_err());
        assert!(users.set("carol", "short").is_err());
        users.save(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(USERS_FILE)).unwrap();
        assert!(!text.contains("battery"), "a password is stored in clear");
        let loaded = Users::load(&dir).unwrap();
        assert_eq!(loaded.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(loaded.reload(&dir).unwrap().is_none(), "unchanged");
        let hash = loaded.hash_of("alice");
        assert!(verify("battery staple", hash.as_deref()));
        assert!(!verify("correct horse", hash.as_deref()));
        assert!(!verify("battery staple", None));
        let scram = loaded.scram_of("alice").unwrap();
        assert_eq!(scram.iterations, scram::MIN_ITERATIONS);
        let again = ScramCredentials::new("battery staple", &scram.salt, scram.iterations);
        assert_eq!(scram, again, "SCRAM credentials of the password last set");
        assert_ne!(
            loaded.scram_of("bob").unwrap().salt,
            scram.salt,
            "a salt per user"
        );
        assert_eq!(loaded.without_scram().count(), 0);
        // A file from before SCRAM: its users load, and are listed as without it.
        let old = text.replace("\"scram_sha_256\"", "\"unknown_field\"");
        std::fs::write(dir.join(USERS_FILE), old).unwrap();
        let old = Users::load(&dir).unwrap();
        assert_eq!(old.without_scram().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(old.scram_of("alice").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_address_that_keeps_failing_waits_longer_each_time_up_to_a_minute() {
        let mut f = Failures::default();
        let (addr, now) = (IpAddr::from([10, 0, 0, 1]), Instant::now());
        for _ in 0..FREE_FAILURES {
            f.failed(addr, now);
            assert_eq!(f.wait(addr, now), None);
        }
        let mut waits = Vec::new();
        for _ in 0..10 {
            f.failed(addr, now);
            waits.push(f.wait(addr, now).unwrap().as_millis());
        }
        assert_eq!(waits[..4], [1000, 2000, 4000, 8000]);
        assert_eq!(*waits.last().unwrap(), 60_000);
        assert_eq!(f.wait(IpAddr::from([10, 0, 0, 2]), now), None);
        f.succeeded(addr);
        assert_eq!(f.wait(addr, now), None);
    }

    #[test]
    fn failures_remember_at_most_the_limit_of_addresses() {
        let mut f = Failures::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 5 {
            f.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(f.by_addr.len(), MAX_TRACKED_ADDRESSES);
    }
}
