//! `herald serve`: the broker on a mio event loop.
//!
//! One thread owns the node. Each round of the loop reads what every ready
//! connection sent, steps the node for each line, appends the records it asks to
//! persist to the write-ahead log, commits the log (one `fdatasync` for the whole
//! round under `--fsync always`), and only then writes the replies: nothing is
//! acknowledged before it is durable.
//!
//! Per connection: a line framer with a maximum line length, and a write buffer.
//! A client that does not read its replies is throttled (its requests are not read)
//! while its buffer is over the limit, instead of growing memory. A connection is
//! closed after its peer closes and its replies are written, on a socket error, or
//! after `idle_timeout_ms` with nothing sent either way.
//!
//! With `cluster` set, the node is one of a Raft cluster ([`crate::peers`] carries
//! node-to-node messages). Raft's records go through the same log and group commit, so
//! a node acknowledges an append to the leader only once it is durable.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::wire::msg::{Access, Auth, AuthOk, ErrorBody, ErrorCode, Init, Payload, Route};
use herald_core::wire::{self, Body, DecodeError, Frame, LineFramer};
use herald_core::{Config, Effect, Effects, Event, Level, Message, Node, Time, WalRecord};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::acl;
use crate::auth::{self, Checked, Checker, Failures, Users};
use crate::kafka::{KafkaConfig, KafkaConn};
use crate::log::Logger;
use crate::metrics::{Listener, Metrics};
use crate::peer_auth::{ClusterSecret, HelloCheck};
use crate::peers::{wall_clock_ms, Hello, Peers};
use crate::tls::{PeerVerifier, Stream, TlsConfig};
use crate::wal::{FsyncPolicy, Recovery, Wal};
use herald_kafka::{SaslEvent, ScramCredentials};

/// The server's own name: `src` of its replies, `dest` of requests.
pub const SERVER_NAME: &str = "herald";

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const KAFKA_LISTENER: Token = Token(usize::MAX - 3);
const METRICS_LISTENER: Token = Token(usize::MAX - 4);
/// The password-checking thread has results.
const AUTH_WAKER: Token = Token(usize::MAX - 5);
/// The longest scrape request (request line and headers) read.
const MAX_HTTP_REQUEST_BYTES: usize = 8 * 1024;
/// Bytes read from one connection per round, so one busy client cannot starve others.
const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Longest line from a peer: an append batch or a state snapshot can be large.
const PEER_MAX_LINE_BYTES: usize = 1 << 30;

/// This server's place in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's id (one of `nodes`).
    pub node_id: String,
    /// Every node of the cluster, this one included: id and address.
    pub nodes: Vec<(String, SocketAddr)>,
    /// The secret peers prove they hold (`None`: any process that reaches the
    /// listener may act as a peer).
    pub secret: Option<Arc<ClusterSecret>>,
}

/// Everything `herald serve` can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Where the write-ahead log lives.
    pub data_dir: PathBuf,
    /// When the log is synced.
    pub fsync: FsyncPolicy,
    /// Log segments are rotated past this size.
    pub max_segment_bytes: u64,
    /// A snapshot replaces the log once the log since the last one is larger than
    /// this (and than twice the last snapshot).
    pub compact_after_bytes: u64,
    /// Most connections at once; more are refused.
    pub max_connections: usize,
    /// Reply bytes buffered per connection before its requests stop being read.
    pub max_write_buffer_bytes: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// The node's configuration (limits, log level).
    pub node: Config,
    /// Run as one node of a cluster (`None`: a single node).
    pub cluster: Option<ClusterConfig>,
    /// The Kafka listener (`None`: none).
    pub kafka: Option<KafkaConfig>,
    /// Where Prometheus scrapes `GET /metrics` (`None`: no metrics, none kept).
    pub metrics_addr: Option<SocketAddr>,
    /// TLS on the JSON-lines and Kafka listeners (`None`: plaintext).
    pub tls: Option<TlsConfig>,
    /// Listen without TLS on addresses other than loopback.
    pub allow_plaintext: bool,
    /// Connections one user may have open at once (with users defined).
    pub max_connections_per_user: usize,
}

/// Where a started server listens, for [`serve`]'s `on_ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The JSON-lines listener.
    pub addr: SocketAddr,
    /// The Kafka listener, if there is one.
    pub kafka_addr: Option<SocketAddr>,
    /// The metrics listener, if there is one.
    pub metrics_addr: Option<SocketAddr>,
}

impl ServerConfig {
    /// Checks what can be checked before anything is opened: the node's
    /// configuration, and that no listener off loopback is plaintext unless
    /// `allow_plaintext` says so.
    pub fn validate(&self) -> Result<(), String> {
        (self.node.validate()).map_err(|e| format!("invalid configuration: {e}"))?;
        let peer_ca = self.tls.as_ref().and_then(|t| t.peer_ca_path.as_ref());
        match (&self.cluster, &self.tls, peer_ca) {
            (Some(_), Some(_), None) => {
                return Err(
                    "TLS on a cluster needs --tls-peer-ca: the CA that signed every \
                            node's certificate, so that peer links are TLS too"
                        .into(),
                );
            }
            (None, _, Some(_)) => return Err("--tls-peer-ca is for a cluster (--peers)".into()),
            _ => {}
        }
        if self.allow_plaintext {
            return Ok(());
        }
        let tls = self.tls.is_some();
        let listeners = [
            ("--addr", Some(self.addr), tls),
            ("--kafka-addr", self.kafka.as_ref().map(|k| k.addr), tls),
            ("--metrics-addr", self.metrics_addr, false),
        ];
        for (flag, addr, encrypted) in listeners {
            match addr {
                Some(addr) if !addr.ip().is_loopback() && !encrypted => {
                    return Err(format!(
                        "{flag} {addr} is not a loopback address, and that listener would \
                         be plaintext: give --tls-cert and --tls-key (the metrics \
                         listener has no TLS), or --allow-plaintext on a network you trust"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("herald-data"),
            fsync: FsyncPolicy::Always,
            max_segment_bytes: 64 << 20,
            compact_after_bytes: 64 << 20,
            max_connections: 1024,
            max_write_buffer_bytes: 4 << 20,
            idle_timeout_ms: 300_000,
            node: Config::default(),
            cluster: None,
            kafka: Some(KafkaConfig::default()),
            metrics_addr: None,
            tls: None,
            allow_plaintext: false,
            max_connections_per_user: 64,
        }
    }
}

struct Conn {
    stream: Stream,
    id: u64,
    name: String,
    framer: LineFramer,
    out: Vec<u8>,
    written: usize,
    peer_closed: bool,
    broken: bool,
    /// Data may be left in the socket (the read budget ran out, or reading resumes).
    more_to_read: bool,
    /// Reading stopped because too many replies are unread. Readiness is
    /// edge-triggered, so no new event will say the waiting data is there: reading
    /// resumes explicitly once the buffer drains.
    throttled: bool,
    /// It sent a long-polling dequeue: when it closes, its waits are cancelled so no
    /// message is handed to a connection that is gone.
    long_polls: bool,
    /// The peer node on the other end, once its hello line said so.
    peer: Option<String>,
    /// A connection to the Kafka listener: its frames and requests in flight.
    kafka: Option<KafkaConn>,
    /// The listener it came in on (a peer's, once its hello said so).
    listener: Listener,
    /// A scrape's request so far (connections to the metrics listener).
    http: Vec<u8>,
    /// The client's address (failed authentications are counted per address).
    client_ip: IpAddr,
    /// The user it authenticated as, with users defined.
    user: Option<String>,
    /// Lines read so far (a hello is only taken as the first).
    lines: u64,
    last_active: Instant,
    interest: Interest,
}

impl Conn {
    fn pending_out(&self) -> usize {
        self.out.len() - self.written
    }

    fn wanted_interest(&self, max_write_buffer: usize) -> Option<Interest> {
        let read = !self.peer_closed && self.pending_out() < max_write_buffer;
        let write = self.pending_out() > 0 || self.stream.wants_write();
        match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

/// Wall-clock microseconds, never going backwards (persisted deadlines outlive the
/// process, so time must continue across restarts).
struct Clock {
    last: Time,
}

impl Clock {
    fn now(&mut self) -> Time {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last = self.last.max(Time::from_micros(us));
        self.last
    }
}

struct Server {
    config: ServerConfig,
    /// The node's id: `src` of its replies.
    name: String,
    /// Links to the other nodes, on a cluster.
    peers: Option<Peers>,
    node: Node,
    wal: Wal,
    clock: Clock,
    conns: Slab<Conn>,
    /// Connection name → slab key, to route replies.
    by_name: BTreeMap<String, usize>,
    next_conn_id: u64,
    /// The start time in µs: connection names (`conn-<boot>-<n>`) never repeat, not
    /// even across restarts, so the recovered reply cache cannot answer a new client
    /// with an old client's reply.
    boot_us: u64,
    effects: Effects,
    logger: Logger,
    /// What Kafka connections are told about this broker (`None`: no Kafka listener).
    kafka_session: Option<herald_kafka::SessionConfig>,
    /// Kafka connections with broker requests to send.
    kafka_ready: std::collections::BTreeSet<usize>,
    /// A write or a Raft message was stepped this round: parked fetches look again.
    written: bool,
    /// What the loop counts, with `--metrics-addr`.
    metrics: Option<Metrics>,
    /// When the snapshot being built was started.
    compaction_started: Option<Instant>,
    /// The listeners' TLS configuration, if they use TLS.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The users (none: every client is trusted), re-read when the file changes.
    users: Users,
    /// Checks passwords on its own thread.
    checker: Checker,
    /// Recent failed authentications, per client address.
    failures: Failures,
    /// Peers' hellos seen (replays are refused), with a cluster secret.
    hellos: HelloCheck,
    /// With TLS on a cluster: a peer's hello needs a node's client certificate.
    peer_verifier: Option<PeerVerifier>,
}

/// Runs the server until SIGINT or SIGTERM. `on_ready` is called with the bound
/// addresses once the server accepts connections (after recovery).
pub fn serve(config: ServerConfig, on_ready: impl FnOnce(Listening)) -> Result<(), String> {
    config.validate()?;
    let tls = match &config.tls {
        Some(t) => Some(t.server_config()?),
        None => None,
    };
    let peer_tls = match &config.tls {
        Some(t) => t.peer_client_config()?,
        None => None,
    };
    let peer_verifier = match &config.tls {
        Some(t) => t.peer_verifier()?,
        None => None,
    };
    let name = config
        .cluster
        .as_ref()
        .map_or(SERVER_NAME.to_owned(), |c| c.node_id.clone());
    let logger = Logger::new(&name, config.node.log_level);
    let started = Instant::now();
    let (wal, recovery) = Wal::open(&config.data_dir, config.fsync, config.max_segment_bytes)
        .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    let Recovery {
        snapshot,
        records,
        report,
    } = recovery;
    let node = Node::rebuild(config.node.clone(), snapshot.as_deref(), records)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let last = node.now();
    logger.log(Level::Info, || {
        format!(
            "event=recovered snapshot_bytes={} records={} segments={} truncated_bytes={} ms={}",
            report.snapshot_bytes,
            report.records,
            report.segments,
            report.truncated_bytes,
            started.elapsed().as_millis()
        )
    });
    if report.truncated_bytes > 0 {
        logger.log(Level::Warn, || {
            format!(
                "event=torn_tail_truncated bytes={} (a write cut off by a crash)",
                report.truncated_bytes
            )
        });
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut listener = TcpListener::bind(config.addr)
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let mut kafka_listener = match &config.kafka {
        None => None,
        Some(k) => {
            let mut l = TcpListener::bind(k.addr)
                .map_err(|e| format!("cannot listen for Kafka on {}: {e}", k.addr))?;
            poll.registry()
                .register(&mut l, KAFKA_LISTENER, Interest::READABLE)
                .map_err(|e| e.to_string())?;
            Some(l)
        }
    };
    let kafka_addr = match &kafka_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let mut metrics_listener = match config.metrics_addr {
        None => None,
        Some(at) => {
            let mut l = TcpListener::bind(at)
                .map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?;
            poll.registry()
                .register(&mut l, METRICS_LISTENER, Interest::READABLE)
                .map_err(|e| e.to_string())?;
            Some(l)
        }
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let metrics = metrics_addr.map(|_| Metrics::default());
    let users = Users::load(&config.data_dir)?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), AUTH_WAKER).map_err(|e| e.to_string())?);
    let checker = Checker::start(move || {
        let _ = waker.wake();
    })
    .map_err(|e| format!("cannot start the password checker: {e}"))?;
    let mut wal = wal;
    if let Some(m) = &metrics {
        wal.set_metrics(m.wal());
    }
    let kafka_session = match (&config.kafka, kafka_addr) {
        (Some(k), Some(bound)) => {
            let node_index = config.cluster.as_ref().map_or(0, |c| {
                c.nodes
                    .iter()
                    .position(|(n, _)| *n == c.node_id)
                    .unwrap_or(0)
            });
            let partitions = config.node.kafka_auto_create_partitions;
            Some(k.session(bound, node_index as i32, partitions)?)
        }
        _ => None,
    };
    let mut signals = signal_hook_mio::v1_0::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let mut clock = Clock { last };
    let boot_us = clock.now().as_micros();
    let peers = config.cluster.as_ref().map(|c| {
        let others = c
            .nodes
            .iter()
            .filter(|(n, _)| *n != c.node_id)
            .cloned()
            .collect();
        Peers::new(
            &c.node_id,
            others,
            config.max_write_buffer_bytes.max(64 << 20),
            // Twice the election timeout: a link that lost a leader's heartbeats for
            // that long is given up (an election is under way meanwhile).
            Duration::from_millis(2 * config.node.election_timeout_ms),
            c.secret.clone(),
            peer_tls,
        )
    });
    let mut server = Server {
        name,
        peers,
        node,
        wal,
        clock,
        conns: Slab::new(),
        by_name: BTreeMap::new(),
        next_conn_id: 1,
        boot_us,
        effects: Effects::new(),
        logger: logger.clone(),
        kafka_session,
        kafka_ready: Default::default(),
        written: false,
        metrics,
        compaction_started: None,
        tls,
        users,
        checker,
        failures: Failures::default(),
        hellos: HelloCheck::default(),
        peer_verifier,
        config,
    };
    server.warn_users_without_scram();
    server.init_node()?;
    server.logger.log(Level::Info, || {
        let or_none = |a: Option<SocketAddr>| a.map_or("none".into(), |a| a.to_string());
        let (kafka, metrics) = (or_none(kafka_addr), or_none(metrics_addr));
        let data_dir = server.config.data_dir.display();
        format!(
            "event=listening addr={addr} kafka_addr={kafka} metrics_addr={metrics} \
             data_dir={data_dir}"
        )
    });
    on_ready(Listening {
        addr,
        kafka_addr,
        metrics_addr,
    });
    let listeners = Listeners {
        json: &mut listener,
        kafka: kafka_listener.as_mut(),
        metrics: metrics_listener.as_mut(),
    };
    server
        .run(&mut poll, listeners)
        .map_err(|e| format!("server failed: {e}"))
}

impl Server {
    /// A fresh data directory: initialise the node (recorded like any request). A data
    /// directory of another node, or of a single server, is refused.
    fn init_node(&mut self) -> Result<(), String> {
        let node_ids: Vec<String> = match &self.config.cluster {
            Some(c) => c.nodes.iter().map(|(n, _)| n.clone()).collect(),
            None => vec![SERVER_NAME.into()],
        };
        if let Some(id) = self.node.id() {
            if id != self.name {
                return Err(format!(
                    "{} holds the data of node {id:?}, not {:?}",
                    self.config.data_dir.display(),
                    self.name
                ));
            }
        } else {
            let init = Init {
                node_id: self.name.clone(),
                node_ids,
            };
            let msg = Message {
                src: self.name.clone(),
                dest: self.name.clone(),
                body: Body {
                    payload: Payload::Init(init),
                    msg_id: Some(0),
                    in_reply_to: None,
                },
            };
            let now = self.clock.now();
            self.step(now, Event::Message(msg), None);
        }
        self.node.start_replication();
        self.wal
            .commit()
            .map_err(|e| format!("cannot write the log: {e}"))
    }

    fn run(&mut self, poll: &mut Poll, mut listeners: Listeners<'_>) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut stop = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(poll, listeners.json, Listener::Json),
                    KAFKA_LISTENER => {
                        if let Some(l) = listeners.kafka.as_deref() {
                            self.accept(poll, l, Listener::Kafka);
                        }
                    }
                    METRICS_LISTENER => {
                        if let Some(l) = listeners.metrics.as_deref() {
                            self.accept(poll, l, Listener::Metrics);
                        }
                    }
                    SIGNALS => stop = true,
                    AUTH_WAKER => {} // results are taken below, every round
                    token if self.peers.as_ref().and_then(|p| p.link_of(token)).is_some() => {
                        let peers = self.peers.as_mut().expect("a peer token");
                        let i = peers.link_of(token).expect("a peer token");
                        let logger = &self.logger;
                        peers.on_event(i, poll.registry(), &mut |line| {
                            logger.log(Level::Info, || line)
                        });
                    }
                    Token(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() {
                                conn.more_to_read = true;
                            }
                        }
                    }
                }
            }
            if let Some(peers) = &mut self.peers {
                let logger = &self.logger;
                peers.reconnect(poll.registry(), &mut |line| {
                    logger.log(Level::Debug, || line)
                });
            }
            self.read_all();
            self.finish_auths();
            let now = self.clock.now();
            if self.node.next_deadline().is_some_and(|t| t <= now) {
                self.step(now, Event::Tick, None);
            }
            self.run_kafka(now);
            // Durable first, then replies (group commit for the whole round).
            self.wal.commit()?;
            if self.wal.wants_compaction(self.config.compact_after_bytes) {
                self.compact()?;
            }
            if let Some(bytes) = self.wal.finish_compaction(false)? {
                self.compacted(bytes);
            }
            if self
                .wal
                .sync_deadline()
                .is_some_and(|t| t <= Instant::now())
            {
                self.wal.sync()?;
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                self.close_idle();
                self.reload_users();
                last_sweep = Instant::now();
            }
            self.write_all(poll);
            if stop {
                return self.shutdown(poll, &mut listeners);
            }
        }
    }

    /// Starts replacing the log so far with a snapshot. The loop only starts a new
    /// segment: a background thread rebuilds the node's state from the last snapshot
    /// and the log (as recovery does), then writes it.
    fn compact(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.compaction_started = Some(started);
        let config = self.config.node.clone();
        self.wal
            .start_compaction(Box::new(move |snapshot, records| {
                Node::rebuild(config, snapshot.as_deref(), records).map(|node| node.snapshot())
            }))?;
        self.logger.log(Level::Info, || {
            format!(
                "event=compacting loop_paused_us={}",
                started.elapsed().as_micros()
            )
        });
        Ok(())
    }

    /// A snapshot of `bytes` replaced the log.
    fn compacted(&mut self, bytes: u64) {
        let seconds = (self.compaction_started.take()).map_or(0.0, |t| t.elapsed().as_secs_f64());
        if let Some(m) = &self.metrics {
            m.snapshot(seconds, bytes);
        }
        self.logger.log(Level::Info, || {
            format!("event=compacted snapshot_bytes={bytes} seconds={seconds:.3}")
        });
    }

    fn poll_timeout(&mut self) -> Duration {
        if self.conns.iter().any(|(_, c)| c.more_to_read) {
            return Duration::ZERO;
        }
        let now = self.clock.now();
        let mut timeout = Duration::from_secs(1); // idle sweep
        if let Some(at) = self.node.next_deadline() {
            timeout = timeout.min(Duration::from_micros(at.micros_since(now)));
        }
        if let Some(at) = self.wal.sync_deadline() {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(at) = self.peers.as_ref().and_then(Peers::next_retry) {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        let kafka_wake_ms = (self.conns.iter())
            .filter_map(|(_, c)| c.kafka.as_ref()?.session.poll_timeout())
            .min();
        if let Some(at_ms) = kafka_wake_ms {
            let wait_ms = at_ms.saturating_sub(now.as_millis());
            timeout = timeout.min(Duration::from_millis(wait_ms));
        }
        timeout
    }

    fn accept(&mut self, poll: &Poll, listener: &TcpListener, kind: Listener) {
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.logger
                        .log(Level::Warn, || format!("event=accept_failed error={e:?}"));
                    return;
                }
            };
            if self.conns.len() >= self.config.max_connections {
                if let Some(m) = &self.metrics {
                    m.refused();
                }
                self.logger.log(Level::Warn, || {
                    format!(
                        "event=connection_refused peer={peer} limit={}",
                        self.config.max_connections
                    )
                });
                continue; // dropping the stream closes it
            }
            let _ = stream.set_nodelay(true);
            let tls = self.tls.as_ref().filter(|_| kind != Listener::Metrics);
            let mut stream = match Stream::new(stream, tls) {
                Ok(stream) => stream,
                Err(e) => {
                    self.logger.log(Level::Warn, || {
                        format!("event=tls_setup_failed peer={peer} error={e:?}")
                    });
                    continue;
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = poll
                .registry()
                .register(stream.tcp(), Token(key), Interest::READABLE)
            {
                self.logger
                    .log(Level::Warn, || format!("event=register_failed error={e:?}"));
                continue;
            }
            let id = self.next_conn_id;
            self.next_conn_id += 1;
            entry.insert(Conn {
                stream,
                id,
                name: format!("conn-{}-{id}", self.boot_us),
                framer: LineFramer::new(self.config.node.max_line_bytes),
                out: Vec::new(),
                written: 0,
                peer_closed: false,
                broken: false,
                more_to_read: true,
                throttled: false,
                long_polls: false,
                peer: None,
                kafka: self
                    .kafka_session
                    .clone()
                    .filter(|_| kind == Listener::Kafka)
                    .zip(self.config.kafka.as_ref())
                    .map(|(mut session, k)| {
                        // With users, Kafka clients authenticate with SASL/PLAIN,
                        // which sends the password as it is: offered on TLS only.
                        session.authenticate = !self.users.is_empty();
                        session.plain_allowed = self.tls.is_some();
                        KafkaConn::new(k, session)
                    }),
                listener: kind,
                http: Vec::new(),
                client_ip: peer.ip(),
                user: None,
                lines: 0,
                last_active: Instant::now(),
                interest: Interest::READABLE,
            });
            self.by_name.insert(self.conns[key].name.clone(), key);
            if let Some(m) = &self.metrics {
                m.accepted(kind);
            }
            self.logger.log(Level::Debug, || {
                format!("event=connected conn={id} peer={peer}")
            });
        }
    }

    /// Reads from every connection that may have data, within its budget and as long
    /// as its replies are not backed up, and handles each complete line.
    fn read_all(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.more_to_read)
            .map(|(k, _)| k)
            .collect();
        let mut buf = [0u8; 64 * 1024];
        for key in keys {
            let mut budget = READ_BUDGET_BYTES;
            loop {
                let conn = &mut self.conns[key];
                if conn.peer_closed || conn.broken {
                    conn.more_to_read = false;
                    break;
                }
                let kafka_full = conn.kafka.as_ref().is_some_and(|k| k.session.is_full());
                if conn.pending_out() >= self.config.max_write_buffer_bytes || kafka_full {
                    conn.more_to_read = false;
                    conn.throttled = true;
                    break;
                }
                if budget == 0 {
                    break; // more_to_read stays set: next round, without blocking
                }
                let n = match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        conn.peer_closed = true;
                        conn.more_to_read = false;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        conn.more_to_read = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() == ErrorKind::InvalidData && conn.stream.is_tls() {
                            let id = conn.id;
                            self.logger.log(Level::Warn, || {
                                format!("event=tls_failed conn={id} error={:?}", e.to_string())
                            });
                        }
                        self.conns[key].broken = true;
                        break;
                    }
                };
                budget = budget.saturating_sub(n);
                conn.last_active = Instant::now();
                if let Some(m) = &self.metrics {
                    m.received(conn.listener, n);
                }
                if conn.listener == Listener::Metrics {
                    self.read_http(key, &buf[..n]);
                    continue;
                }
                if conn.kafka.is_some() {
                    self.read_kafka(key, &buf[..n]);
                    continue;
                }
                // Lines are handled in place, from the read buffer (or the framer's
                // partial line); the framer is lent out of the connection meanwhile.
                let mut framer = std::mem::replace(&mut conn.framer, LineFramer::new(0));
                let was_peer = conn.peer.is_some();
                // The lines of one read arrived together: one clock read for all.
                let now = self.clock.now();
                framer.feed(&buf[..n], |frame| self.handle_line(key, now, frame));
                let conn = &mut self.conns[key];
                if conn.peer.is_some() && !was_peer {
                    framer.set_max_line_bytes(PEER_MAX_LINE_BYTES);
                }
                conn.framer = framer;
                if n < buf.len() && !conn.stream.is_tls() {
                    // A short read took all there was; new data wakes the poll again
                    // (edge-triggered), so no read is spent to see WouldBlock.
                    conn.more_to_read = false;
                    break;
                }
            }
        }
    }

    fn handle_line(&mut self, key: usize, now: Time, frame: Frame<'_>) {
        let conn = &mut self.conns[key];
        conn.lines += 1;
        if let (Frame::Line(line), true, Some(peers)) = (&frame, conn.lines == 1, &self.peers) {
            if let Ok(hello) = serde_json::from_slice::<Hello>(line) {
                if peers.is_peer(&hello.herald_peer) {
                    let secret = self
                        .config
                        .cluster
                        .as_ref()
                        .and_then(|c| c.secret.as_deref());
                    let signed = secret
                        .map(|s| (self.hellos).verify(s, &hello, &self.name, wall_clock_ms()));
                    let claimed = (self.config.cluster.as_ref())
                        .and_then(|c| c.nodes.iter().find(|(n, _)| *n == hello.herald_peer))
                        .map(|(_, addr)| addr.ip());
                    let certified = (self.peer_verifier.as_ref())
                        .zip(claimed)
                        .map(|(v, ip)| v.check(&conn.stream, ip));
                    let refused = [certified, signed]
                        .into_iter()
                        .flatten()
                        .find_map(Result::err);
                    if let Some(why) = refused {
                        let (id, peer) = (conn.id, &hello.herald_peer);
                        self.logger.log(Level::Warn, || {
                            format!("event=peer_refused conn={id} peer={peer} reason={why:?}")
                        });
                        self.conns[key].broken = true;
                        return;
                    }
                    self.logger.log(Level::Info, || {
                        format!("event=peer_accepted peer={}", hello.herald_peer)
                    });
                    // The peer gave up its older link to this node (a timeout, a
                    // restart): close that one, whatever is still stuck in it.
                    for (other, old) in self.conns.iter_mut() {
                        if other != key && old.peer.as_ref() == Some(&hello.herald_peer) {
                            old.broken = true; // closed by the next write_all
                        }
                    }
                    self.conns[key].peer = Some(hello.herald_peer);
                    self.conns[key].listener = Listener::Peer;
                    return;
                }
            }
        }
        // A peer's lines come from the peer; a client's from its connection.
        let name = conn.peer.as_deref().unwrap_or(&conn.name);
        let line = match frame {
            Frame::TooLong { bytes } => {
                let limit = self.config.node.max_line_bytes;
                self.logger.log(Level::Warn, || {
                    format!("event=line_too_long conn={name} bytes={bytes}")
                });
                let text = format!("line of {bytes} bytes is over the limit of {limit}");
                return self.reply_unanswerable(key, ErrorCode::MalformedRequest, text);
            }
            Frame::Line(line) => line,
        };
        let msg = match wire::decode_from(line, name, &self.name) {
            Ok(msg) => msg,
            Err(DecodeError::Invalid(bad)) if bad.msg_id.is_some() => {
                return self.step(now, Event::Invalid(bad), Some(Input { key, line }));
            }
            Err(err) => {
                self.logger.log(Level::Warn, || {
                    format!("event=bad_line conn={name} error={:?}", err.to_string())
                });
                let text =
                    format!("{err}; expected {{\"body\":{{\"type\":...,\"msg_id\":N,...}}}}");
                return self.reply_unanswerable(key, ErrorCode::MalformedRequest, text);
            }
        };
        if self.answered_by_auth(key, msg.body.msg_id, &msg.body.payload) {
            return;
        }
        if matches!(&msg.body.payload, Payload::Dequeue(d) if d.wait_ms.unwrap_or(0) > 0) {
            self.conns[key].long_polls = true;
        }
        let client = self.conns[key].listener == Listener::Json;
        if let (Some(m), Some(id), true) = (&mut self.metrics, msg.body.msg_id, client) {
            m.request(key, id, Listener::Json, msg.body.payload.kind());
        }
        self.step(now, Event::Message(msg), Some(Input { key, line }));
    }

    /// With users defined, a client's `auth` starts a password check, and any other
    /// request before one succeeded is refused (1008): true if `msg` was answered so.
    fn answered_by_auth(&mut self, key: usize, msg_id: Option<u64>, payload: &Payload) -> bool {
        let conn = &self.conns[key];
        if self.users.is_empty() || conn.peer.is_some() {
            return false;
        }
        match payload {
            Payload::Auth(auth) => self.start_auth(key, msg_id, auth.clone()),
            payload => {
                let Some(user) = &conn.user else {
                    let text = r#"authenticate first: {"type":"auth","user":...,"password":...}"#;
                    let error = ErrorBody::new(ErrorCode::Unauthenticated, text);
                    self.reply(key, msg_id, Payload::Error(error));
                    return true;
                };
                let Err(denied) = acl::check(self.users.rules_of(user), payload) else {
                    return false;
                };
                let (id, user) = (conn.id, user.clone());
                if let Some(m) = &self.metrics {
                    m.access_denied(conn.listener);
                }
                self.logger.log(Level::Warn, || {
                    format!(
                        "event=access_denied conn={id} user={user:?} needs={:?}",
                        denied.to_string()
                    )
                });
                let text = format!("user {user:?} may not {denied}");
                let error = ErrorBody::new(ErrorCode::NotAuthorized, text);
                self.reply(key, msg_id, Payload::Error(error));
            }
        }
        true
    }

    /// Why address `ip` may not try to authenticate with `mechanism` now, if it must
    /// wait after failures.
    fn backoff(&self, ip: IpAddr, mechanism: &'static str) -> Option<String> {
        let wait = self.failures.wait(ip, Instant::now())?;
        if let Some(m) = &self.metrics {
            m.authentication(mechanism, "backoff");
        }
        Some(format!(
            "too many failed authentications from {ip}: try again in {} ms",
            wait.as_millis()
        ))
    }

    /// Why `user` may not open one more connection, if it has as many as it may.
    fn over_user_limit(&self, user: &str) -> Option<String> {
        let limit = self.config.max_connections_per_user;
        (self.connections_of(user) >= limit).then(|| {
            format!("user {user:?} has {limit} connections open (--max-connections-per-user)")
        })
    }

    /// Records an authentication's outcome on connection `key`: a failure counts
    /// against the client's address; a success makes the connection act as `user`.
    fn authenticated(&mut self, key: usize, user: &str, ok: bool, mechanism: &'static str) {
        let conn = &mut self.conns[key];
        let (ip, id) = (conn.client_ip, conn.id);
        if ok {
            conn.user = Some(user.to_owned());
            self.failures.succeeded(ip);
        } else {
            self.failures.failed(ip, Instant::now());
        }
        let (level, event, outcome) = if ok {
            (Level::Info, "authenticated", "ok")
        } else {
            (Level::Warn, "auth_failed", "failed")
        };
        if let Some(m) = &self.metrics {
            m.authentication(mechanism, outcome);
        }
        self.logger.log(level, || {
            format!("event={event} conn={id} addr={ip} user={user:?} mechanism={mechanism}")
        });
    }

    /// Queues `auth`'s password check, unless its address must wait after failures or
    /// too many checks are queued.
    fn start_auth(&mut self, key: usize, msg_id: Option<u64>, auth: Auth) {
        let conn = &self.conns[key];
        let (ip, conn_id) = (conn.client_ip, conn.id);
        if let Some(text) = self.backoff(ip, "plain") {
            let error = ErrorBody::new(ErrorCode::AuthenticationFailed, text);
            return self.reply(key, msg_id, Payload::Error(error));
        }
        let who = (key, conn_id, msg_id);
        if !self
            .checker
            .submit(&self.users, who, auth.user, auth.password)
        {
            let text = "too many authentications in progress: retry";
            let error = ErrorBody::new(ErrorCode::TemporarilyUnavailable, text);
            self.reply(key, msg_id, Payload::Error(error));
        }
    }

    /// Answers the password checks that are done.
    fn finish_auths(&mut self) {
        let done: Vec<Checked> = self.checker.results().collect();
        for checked in done {
            let open = self.conns.get(checked.key);
            if open.is_none_or(|c| c.id != checked.conn_id) {
                continue; // the connection closed meanwhile
            }
            let user = checked.user;
            let reply = match checked.ok.then(|| self.over_user_limit(&user)).flatten() {
                Some(text) => {
                    Payload::Error(ErrorBody::new(ErrorCode::TemporarilyUnavailable, text))
                }
                None => {
                    self.authenticated(checked.key, &user, checked.ok, "plain");
                    if checked.ok {
                        Payload::AuthOk(AuthOk { user })
                    } else {
                        let text = "wrong user or password";
                        Payload::Error(ErrorBody::new(ErrorCode::AuthenticationFailed, text))
                    }
                }
            };
            self.reply(checked.key, checked.msg_id, reply);
        }
    }

    /// Open connections authenticated as `user`.
    fn connections_of(&self, user: &str) -> usize {
        let of_user = |c: &&Conn| c.user.as_deref() == Some(user);
        self.conns.iter().map(|(_, c)| c).filter(of_user).count()
    }

    /// Reads the users file again if it changed. A connection whose user is gone must
    /// authenticate again; with users now defined, Kafka connections are closed.
    fn reload_users(&mut self) {
        let users = match self.users.reload(&self.config.data_dir) {
            Ok(Some(users)) => users,
            Ok(None) => return,
            Err(e) => {
                return self.logger.log(Level::Warn, || {
                    format!("event=users_not_reloaded error={e:?} (the old users stay)")
                });
            }
        };
        self.users = users;
        let count = self.users.names().count();
        self.logger.log(Level::Info, || {
            format!("event=users_reloaded users={count}")
        });
        let known: std::collections::BTreeSet<&str> = self.users.names().collect();
        for (_, conn) in self.conns.iter_mut() {
            if conn.user.as_deref().is_some_and(|u| !known.contains(u)) {
                conn.user = None;
            }
            // Its session was made trusting every client: it must start again.
            if conn.listener == Listener::Kafka && count > 0 && conn.user.is_none() {
                conn.broken = true;
            }
        }
        self.warn_users_without_scram();
    }

    /// Names the users Kafka clients cannot authenticate as with SCRAM-SHA-256: those
    /// added before Herald had it.
    fn warn_users_without_scram(&self) {
        let names: Vec<&str> = self.users.without_scram().collect();
        if self.config.kafka.is_some() && !names.is_empty() {
            self.logger.log(Level::Warn, || {
                format!(
                    "event=users_without_scram users={:?} reason=\"added before Herald had \
                     SCRAM-SHA-256: Kafka clients can authenticate as them with PLAIN over \
                     TLS only until their passwords are set again (herald user add)\"",
                    names.join(",")
                )
            });
        }
    }

    /// Acts on what Kafka connection `key`'s SASL exchange needs: the credentials of
    /// the user a SCRAM client names, the outcome of an exchange.
    fn sasl_events(&mut self, key: usize) {
        let poll = |conns: &mut Slab<Conn>| conns[key].kafka.as_mut()?.session.poll_event();
        while let Some(event) = poll(&mut self.conns) {
            match event {
                SaslEvent::CredentialsWanted { id, user } => {
                    let answer = self.scram_credentials(key, &user);
                    let random = auth::random_bytes::<24>();
                    let kafka = self.conns[key].kafka.as_mut().expect("a Kafka connection");
                    if let Err(why) = kafka.session.handle_credentials(id, answer, &random) {
                        return self.close_kafka(key, &why);
                    }
                }
                SaslEvent::ScramDone { user, ok } => {
                    self.authenticated(key, &user, ok, "scram-sha-256");
                }
            }
        }
    }

    /// The SCRAM-SHA-256 credentials a client on connection `key` is challenged with
    /// for `user`: made-up ones if the user has none, so that the exchange fails at the
    /// proof like a wrong password; an error if its address must wait, or the user has
    /// as many connections as it may.
    fn scram_credentials(&self, key: usize, user: &str) -> Result<ScramCredentials, String> {
        if let Some(text) = self.backoff(self.conns[key].client_ip, "scram-sha-256") {
            return Err(text);
        }
        if let Some(text) = self.over_user_limit(user) {
            return Err(text);
        }
        Ok(self.users.scram_of(user).unwrap_or_else(auth::decoy_scram))
    }

    /// A reply from this server to request `msg_id` (if it had one) on connection
    /// `key`: a JSON line, or a reply for its Kafka session.
    fn reply(&mut self, key: usize, msg_id: Option<u64>, payload: Payload) {
        let msg = Message {
            src: self.name.clone(),
            dest: self.conns[key].name.clone(),
            body: Body {
                payload,
                msg_id: None,
                in_reply_to: msg_id,
            },
        };
        let now = self.clock.now();
        self.deliver(now, key, msg);
    }

    /// An error line for input that had no `msg_id` to answer (no `in_reply_to`).
    fn reply_unanswerable(&mut self, key: usize, code: ErrorCode, text: String) {
        self.reply(key, None, Payload::Error(ErrorBody::new(code, text)));
    }

    /// Runs one step; `line` is the line its message was decoded from, if it was.
    fn step(&mut self, now: Time, event: Event, mut line: Option<Input<'_>>) {
        let mut kept = None;
        let from = line.as_ref().map(|input| input.key);
        if let Event::Message(m) = &event {
            let payload = &m.body.payload;
            let writes = payload.access().is_some_and(|a| a != Access::Read);
            self.written |= payload.route() == Route::Raft || writes;
            // A step that may persist its input records the line it came as, if it
            // came as one, else a copy of the message.
            line = line.filter(|_| writes);
            if writes && line.is_none() {
                kept = Some(m.clone());
            }
        }
        self.node.step(now, event, &mut self.effects);
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Persist(record) => self.wal.append(&record),
                Effect::PersistInput { at } => match (&line, kept.take()) {
                    (Some(Input { key, line }), _) => {
                        let conn = &self.conns[*key];
                        let src = conn.peer.as_deref().unwrap_or(&conn.name);
                        self.wal.append_line(at, src, &self.name, line);
                    }
                    (None, Some(msg)) => self.wal.append(&WalRecord::input(at, msg)),
                    (None, None) => unreachable!("only a message step persists its input"),
                },
                Effect::Send(msg) => {
                    if self.peers.as_mut().is_some_and(|p| p.send(&msg)) {
                        continue;
                    }
                    // Replies go to live connections; a reply to one that closed is dropped.
                    // Most go to the connection the request came from: no search.
                    let to = match from {
                        Some(key) if self.conns.get(key).is_some_and(|c| c.name == msg.dest) => {
                            Some(key)
                        }
                        _ => self.by_name.get(&msg.dest).copied(),
                    };
                    if let Some(key) = to {
                        self.deliver(now, key, msg);
                    }
                }
                Effect::Log(record) => self.logger.core(&record),
            }
        }
        self.effects = effects;
    }

    /// Hands a reply to its connection: a JSON line, or a reply for the Kafka session.
    fn deliver(&mut self, now: Time, key: usize, msg: Message) {
        if let (Some(m), Some(id)) = (&mut self.metrics, msg.body.in_reply_to) {
            m.reply(key, id, &msg.body.payload);
        }
        let conn = &mut self.conns[key];
        let Some(kafka) = &mut conn.kafka else {
            wire::encode(&msg, &mut conn.out);
            return;
        };
        let Some(msg_id) = msg.body.in_reply_to else {
            return; // an error about no request in particular: nothing waits for it
        };
        if let Err(why) = kafka
            .session
            .handle_reply(now.as_millis(), msg_id, msg.body.payload)
        {
            self.close_kafka(key, &why);
        }
        self.kafka_ready.insert(key);
    }

    /// Splits what a Kafka connection sent into frames and starts each request.
    fn read_kafka(&mut self, key: usize, bytes: &[u8]) {
        let now = self.clock.now();
        let conn = &mut self.conns[key];
        let kafka = conn.kafka.as_mut().expect("a Kafka connection");
        let mut frames = Vec::new();
        let copy = |frame: &[u8]| frames.push(bytes::Bytes::copy_from_slice(frame));
        if let Err(e) = kafka.decoder.feed(bytes, copy) {
            return self.close_kafka(key, &e.to_string());
        }
        for frame in frames {
            let kafka = self.conns[key].kafka.as_mut().expect("a Kafka connection");
            if let Err(why) = kafka.session.handle_frame(now.as_millis(), frame) {
                return self.close_kafka(key, &why);
            }
            self.kafka_ready.insert(key);
            self.send_kafka_requests();
        }
    }

    /// A Kafka connection broke the protocol: log why and close it.
    fn close_kafka(&mut self, key: usize, why: &str) {
        let conn = &mut self.conns[key];
        self.logger.log(Level::Warn, || {
            format!("event=kafka_closed conn={} reason={why:?}", conn.id)
        });
        conn.broken = true;
    }

    /// Reads a scrape's request; once it is whole, writes the response (the metrics,
    /// or an HTTP error) and closes the connection after it.
    fn read_http(&mut self, key: usize, bytes: &[u8]) {
        let conn = &mut self.conns[key];
        conn.http.extend_from_slice(bytes);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let status = match request.parse(&conn.http) {
            Ok(httparse::Status::Partial) if conn.http.len() <= MAX_HTTP_REQUEST_BYTES => return,
            Ok(httparse::Status::Partial) => "431 Request Header Fields Too Large",
            Err(_) => "400 Bad Request",
            Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
                (Some("GET"), Some("/metrics")) => "200 OK",
                (Some("GET"), _) => "404 Not Found",
                _ => "405 Method Not Allowed",
            },
        };
        let body = match status {
            "200 OK" => self.render_metrics(),
            _ => format!("{status}: only GET /metrics is served here\n"),
        };
        let kind = match status {
            "200 OK" => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            _ => "text/plain; charset=utf-8",
        };
        let conn = &mut self.conns[key];
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        conn.out.extend_from_slice(head.as_bytes());
        conn.out.extend_from_slice(body.as_bytes());
        conn.http = Vec::new();
        conn.peer_closed = true; // nothing more is read; closed once written
    }

    /// The metrics exposition, with the node's state as it is now.
    fn render_metrics(&self) -> String {
        let mut open: BTreeMap<Listener, usize> = BTreeMap::new();
        for (_, conn) in self.conns.iter() {
            *open.entry(conn.listener).or_default() += 1;
        }
        let metrics = self.metrics.as_ref().expect("a metrics connection");
        metrics.render(&self.node.metrics(), &open)
    }

    /// Steps the node with the broker requests of every Kafka session that has some,
    /// until none has (a reply can make a session ask again).
    fn send_kafka_requests(&mut self) {
        while let Some(key) = self.kafka_ready.pop_first() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.broken {
                continue;
            }
            let name = conn.name.clone();
            self.sasl_events(key);
            let conn = &mut self.conns[key];
            let Some(kafka) = conn.kafka.as_mut() else {
                continue;
            };
            if conn.broken {
                continue;
            }
            let Some((msg_id, payload)) = kafka.session.poll_request() else {
                continue;
            };
            self.kafka_ready.insert(key);
            if let Some(m) = &mut self.metrics {
                m.request(key, msg_id, Listener::Kafka, payload.kind());
            }
            if self.answered_by_auth(key, Some(msg_id), &payload) {
                continue;
            }
            let msg = Message {
                src: name,
                dest: self.name.clone(),
                body: Body {
                    payload,
                    msg_id: Some(msg_id),
                    in_reply_to: None,
                },
            };
            let now = self.clock.now();
            self.step(now, Event::Message(msg), None);
        }
    }

    /// Once a round: parked fetches whose wait ended are answered, and after a write
    /// every parked fetch looks again.
    fn run_kafka(&mut self, now: Time) {
        let written = std::mem::take(&mut self.written);
        let keys: Vec<usize> = (self.conns.iter())
            .filter(|(_, c)| c.kafka.as_ref().is_some_and(|k| k.session.has_parked()))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let session = &mut self.conns[key].kafka.as_mut().expect("listed").session;
            let woken = if written {
                session.retry_parked(now.as_millis())
            } else {
                session.handle_timeout(now.as_millis())
            };
            if let Err(why) = woken {
                self.close_kafka(key, &why);
            }
            self.kafka_ready.insert(key);
        }
        self.send_kafka_requests();
    }

    /// Writes pending replies (the log is committed by now), closes finished or broken
    /// connections, and sets each connection's interest from its state.
    fn write_all(&mut self, poll: &Poll) {
        if let Some(peers) = &mut self.peers {
            peers.flush(poll.registry());
        }
        let mut closing = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let kafka_full = conn.kafka.as_mut().is_some_and(|kafka| {
                kafka.session.poll_transmit(&mut conn.out);
                kafka.session.is_full()
            });
            if conn.stream.flush().is_err() {
                conn.broken = true; // a TLS record the socket refused
            }
            while conn.pending_out() > 0 && !conn.broken {
                match conn.stream.write(&conn.out[conn.written..]) {
                    Ok(0) => conn.broken = true,
                    Ok(n) => {
                        conn.written += n;
                        conn.last_active = Instant::now();
                        if let Some(m) = &self.metrics {
                            m.sent(conn.listener, n);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => conn.broken = true,
                }
            }
            if conn.pending_out() == 0 {
                conn.out.clear();
                conn.written = 0;
            } else if conn.written > conn.out.len() / 2 {
                conn.out.drain(..conn.written);
                conn.written = 0;
            }
            let backed_up = conn.pending_out() >= self.config.max_write_buffer_bytes;
            if conn.throttled && !backed_up && !kafka_full {
                conn.throttled = false;
                conn.more_to_read = true;
            }
            let wanted = conn.wanted_interest(self.config.max_write_buffer_bytes);
            match wanted {
                _ if conn.broken => closing.push(key),
                None => closing.push(key),
                Some(interest) if interest != conn.interest => {
                    if poll
                        .registry()
                        .reregister(conn.stream.tcp(), Token(key), interest)
                        .is_err()
                    {
                        closing.push(key);
                    }
                    conn.interest = interest;
                }
                Some(_) => {}
            }
        }
        if let Some(m) = &mut self.metrics {
            m.replies_written();
        }
        for key in closing {
            self.close(poll, key);
        }
    }

    fn close(&mut self, poll: &Poll, key: usize) {
        let mut conn = self.conns.remove(key);
        self.by_name.remove(&conn.name);
        if let Some(m) = &mut self.metrics {
            m.closed(key);
        }
        let _ = poll.registry().deregister(conn.stream.tcp());
        if conn.long_polls {
            // Through the node like any request, so the log replays it too.
            let cancel = Message {
                src: conn.name.clone(),
                dest: self.name.clone(),
                body: Body {
                    payload: Payload::CancelWaits,
                    msg_id: None,
                    in_reply_to: None,
                },
            };
            let now = self.clock.now();
            self.step(now, Event::Message(cancel), None);
        }
        self.logger
            .log(Level::Debug, || format!("event=closed conn={}", conn.id));
    }

    fn close_idle(&mut self) {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        for (_, conn) in self.conns.iter_mut() {
            if conn.last_active.elapsed() >= idle {
                self.logger.log(Level::Info, || {
                    format!("event=idle_closed conn={}", conn.id)
                });
                conn.broken = true; // closed by the next write_all
            }
        }
    }

    /// Stop accepting, sync the log, give replies a moment to go out, and return.
    fn shutdown(&mut self, poll: &mut Poll, listeners: &mut Listeners<'_>) -> io::Result<()> {
        let _ = poll.registry().deregister(listeners.json);
        for l in [&mut listeners.kafka, &mut listeners.metrics]
            .into_iter()
            .flatten()
        {
            let _ = poll.registry().deregister(*l);
        }
        if let Some(peers) = &mut self.peers {
            peers.close_all(poll.registry())?;
        }
        self.wal.commit()?;
        self.wal.sync()?;
        self.wal.finish_compaction(true)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline
            && self
                .conns
                .iter()
                .any(|(_, c)| c.pending_out() > 0 && !c.broken)
        {
            self.write_all(poll);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.logger
            .log(Level::Info, || "event=shutdown clean=true".into());
        Ok(())
    }
}

/// The sockets the server accepts connections on.
struct Listeners<'a> {
    json: &'a mut TcpListener,
    kafka: Option<&'a mut TcpListener>,
    metrics: Option<&'a mut TcpListener>,
}

/// The line a step's message was decoded from, on connection `key`.
struct Input<'a> {
    key: usize,
    line: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_node_config_is_an_error_before_the_data_dir_is_touched() {
        let dir = std::env::temp_dir().join(format!("herald-invalid-{}", std::process::id()));
        let config = ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.clone(),
            node: Config {
                rpc_max_attempts: 0,
                ..Config::default()
            },
            ..ServerConfig::default()
        };
        let err = serve(config, |_| panic!("must not listen")).unwrap_err();
        assert!(err.contains("rpc_max_attempts"), "{err}");
        assert!(!dir.exists(), "the data dir was created");
    }
}
