//! Links to the other nodes of a cluster (`herald serve --node-id --peers`).
//!
//! Each node opens one outbound TCP connection to every peer and sends it all its
//! node-to-node messages (Raft, forwarded requests and their replies) as lines; it
//! receives theirs on the connections they open to it, which start with a hello line
//! naming the sender. A link that is down drops what is sent on it: Raft resends, and a
//! forwarded request's client gets "unknown" when no reply comes. A broken link is
//! reconnected after an exponential backoff (100 ms doubling to 2 s, with jitter), and
//! a link's unsent bytes are bounded.
//!
//! A link that stops delivering is given up within the link timeout (twice
//! `election_timeout_ms`, 1 s by default): the kernel aborts a connection whose sent
//! data stays unacknowledged that long (`TCP_USER_TIMEOUT`), and a connect that has
//! not completed half a second after that is abandoned (the grace lets the kernel's
//! first SYN retransmission, one second after the SYN, complete it: on a lossy network
//! a lost SYN or SYN-ACK would otherwise fail every connect it struck). Otherwise a
//! connection that lost packets during a partition sits in TCP's retransmission
//! backoff after the heal (seconds, doubling with the length of the cut) while its
//! stale heartbeats and appends wait in it; a fresh connection starts clean.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::{wire, Message, Rng};

use crate::peer_auth::ClusterSecret;
use crate::tls::Stream;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::SockRef;

/// Tokens of peer links count down from here (clients use small slab keys).
const FIRST_TOKEN: usize = usize::MAX - 16;
const BACKOFF_MIN_MS: u64 = 100;
/// How much longer than the link timeout a connect may take.
const CONNECT_GRACE_MS: u64 = 500;
const BACKOFF_MAX_MS: u64 = 2_000;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn wall_clock_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// The first line on a connection to a peer: who is calling, signed when the cluster
/// has a secret ([`crate::peer_auth`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The calling node's id.
    pub herald_peer: String,
    /// The called node's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The caller's wall clock, in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// Random, once per hello (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// HMAC-SHA256 of the above under the cluster secret (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

struct Link {
    name: String,
    addr: SocketAddr,
    stream: Option<Stream>,
    connected: bool,
    out: Vec<u8>,
    written: usize,
    retry_at: Instant,
    backoff_ms: u64,
    /// While connecting: when to give up on this attempt.
    connect_deadline: Instant,
}

/// Outbound links to every peer.
pub struct Peers {
    me: String,
    links: Vec<Link>,
    max_buffer_bytes: usize,
    link_timeout: Duration,
    /// Messages dropped because a link was down or full (for logs).
    pub dropped: u64,
    rng: Rng,
    /// Signs each link's hello, when the cluster has a secret.
    secret: Option<Arc<ClusterSecret>>,
    /// TLS on every link, when the cluster has a peer CA.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peers {
    /// Links from `me` to `peers` (name, address), not connected yet; a link that
    /// delivers nothing for `link_timeout` is dropped and connected again.
    pub fn new(
        me: &str,
        peers: Vec<(String, SocketAddr)>,
        max_buffer_bytes: usize,
        link_timeout: Duration,
        secret: Option<Arc<ClusterSecret>>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Peers {
        let now = Instant::now();
        Peers {
            me: me.to_owned(),
            links: peers
                .into_iter()
                .map(|(name, addr)| Link {
                    name,
                    addr,
                    stream: None,
                    connected: false,
                    out: Vec::new(),
                    written: 0,
                    retry_at: now,
                    backoff_ms: BACKOFF_MIN_MS,
                    connect_deadline: now,
                })
                .collect(),
            max_buffer_bytes,
            link_timeout,
            dropped: 0,
            rng: Rng::new(u64::from(std::process::id())),
            secret,
            tls,
        }
    }

    /// True if `name` is a peer.
    pub fn is_peer(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }

    /// The link a poll token belongs to.
    pub fn link_of(&self, token: Token) -> Option<usize> {
        let i = FIRST_TOKEN.checked_sub(token.0)?;
        (i < self.links.len()).then_some(i)
    }

    /// Queues a message for its destination peer; false if `msg.dest` is no peer.
    /// Dropped (and counted) while the link is down or its buffer is full.
    pub fn send(&mut self, msg: &Message) -> bool {
        let Some(i) = self.index_of(&msg.dest) else {
            return false;
        };
        let link = &mut self.links[i];
        if !link.connected || link.out.len() - link.written >= self.max_buffer_bytes {
            self.dropped += 1;
            return true;
        }
        wire::encode(msg, &mut link.out);
        true
    }

    /// Gives up connects that took longer than the link timeout and its grace, and
    /// connects links that are down and due for another try.
    pub fn reconnect(&mut self, registry: &Registry, log: &mut impl FnMut(String)) {
        let now = Instant::now();
        for (i, link) in self.links.iter_mut().enumerate() {
            if link.stream.is_some() && !link.connected && now >= link.connect_deadline {
                log(format!("event=peer_connect_timeout peer={}", link.name));
                Self::disconnect(link, registry, &mut self.rng);
            }
            if link.stream.is_some() || now < link.retry_at {
                continue;
            }
            let connected = TcpStream::connect(link.addr)
                .and_then(|tcp| Stream::client(tcp, self.tls.as_ref(), link.addr.ip()));
            match connected {
                Ok(mut stream) => {
                    let tcp = stream.tcp();
                    // Small messages that wait for each other's answers: no Nagle delay.
                    let _ = tcp.set_nodelay(true);
                    let _ = SockRef::from(&*tcp).set_tcp_user_timeout(Some(self.link_timeout));
                    let token = Token(FIRST_TOKEN - i);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if registry.register(tcp, token, interest).is_ok() {
                        link.stream = Some(stream);
                        link.connect_deadline =
                            now + self.link_timeout + Duration::from_millis(CONNECT_GRACE_MS);
                    }
                }
                Err(e) => {
                    log(format!(
                        "event=peer_connect_failed peer={} error={e:?}",
                        link.name
                    ));
                    Self::backoff(link, &mut self.rng);
                }
            }
        }
    }

    /// A readiness event on link `i`: finish connecting, notice a close.
    pub fn on_event(&mut self, i: usize, registry: &Registry, log: &mut impl FnMut(String)) {
        let link = &mut self.links[i];
        let Some(stream) = link.stream.as_mut() else {
            return;
        };
        if !link.connected {
            match (stream.tcp().take_error(), stream.tcp().peer_addr()) {
                (Ok(None), Ok(_)) => {
                    // Nothing was queued while connecting (`send` drops until then).
                    link.connected = true;
                    link.backoff_ms = BACKOFF_MIN_MS;
                    let hello = match &self.secret {
                        Some(secret) => secret.hello(&self.me, &link.name, wall_clock_ms()),
                        None => Hello {
                            herald_peer: self.me.clone(),
                            to: None,
                            at_ms: None,
                            nonce: None,
                            mac: None,
                        },
                    };
                    serde_json::to_writer(&mut link.out, &hello).expect("hello serializes");
                    link.out.push(b'\n');
                    log(format!("event=peer_connected peer={}", link.name));
                }
                (Ok(None), Err(e)) if e.kind() == ErrorKind::NotConnected => return,
                (Err(e), _) | (Ok(Some(e)), _) | (Ok(None), Err(e)) => {
                    log(format!(
                        "event=peer_connect_failed peer={} error={e:?}",
                        link.name
                    ));
                    Self::disconnect(link, registry, &mut self.rng);
                    return;
                }
            }
        }
        // The peer never writes on this link: reading only tells whether it closed.
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    log(format!("event=peer_closed peer={}", link.name));
                    Self::disconnect(link, registry, &mut self.rng);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // A link timeout shows here: ETIMEDOUT from TCP_USER_TIMEOUT.
                    log(format!("event=peer_failed peer={} error={e:?}", link.name));
                    Self::disconnect(link, registry, &mut self.rng);
                    return;
                }
            }
        }
    }

    /// Writes what is queued on every connected link.
    pub fn flush(&mut self, registry: &Registry) {
        for link in &mut self.links {
            let Some(stream) = link.stream.as_mut().filter(|_| link.connected) else {
                continue;
            };
            // TLS records waiting (a handshake's among them), then what is queued.
            let mut broken = stream.flush().is_err();
            while link.written < link.out.len() && !broken {
                match stream.write(&link.out[link.written..]) {
                    Ok(0) => broken = true,
                    Ok(n) => link.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => broken = true,
                }
                if broken {
                    break;
                }
            }
            if broken {
                Self::disconnect(link, registry, &mut self.rng);
            } else if link.written == link.out.len() {
                link.out.clear();
                link.written = 0;
            } else if link.written > link.out.len() / 2 {
                link.out.drain(..link.written);
                link.written = 0;
            }
        }
    }

    /// When a link that is down should be tried again, or a connect given up.
    pub fn next_retry(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| match (&l.stream, l.connected) {
                (None, _) => Some(l.retry_at),
                (Some(_), false) => Some(l.connect_deadline),
                (Some(_), true) => None,
            })
            .min()
    }

    /// Closes every link.
    pub fn close_all(&mut self, registry: &Registry) -> io::Result<()> {
        for link in &mut self.links {
            if let Some(mut stream) = link.stream.take() {
                registry.deregister(stream.tcp())?;
            }
        }
        Ok(())
    }

    fn disconnect(link: &mut Link, registry: &Registry, rng: &mut Rng) {
        if let Some(mut stream) = link.stream.take() {
            let _ = registry.deregister(stream.tcp());
        }
        link.connected = false;
        link.out.clear();
        link.written = 0;
        Self::backoff(link, rng);
    }

    /// Waits a random part (half to all) of the current backoff, then doubles it.
    fn backoff(link: &mut Link, rng: &mut Rng) {
        let half = link.backoff_ms / 2;
        let wait = half + rng.below(half + 1);
        link.retry_at = Instant::now() + Duration::from_millis(wait);
        link.backoff_ms = (link.backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
}
