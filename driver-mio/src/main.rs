//! `herald`: the broker server (`herald serve`) and its command-line client.

use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use herald_core::wire::msg::*;
use herald_core::wire::Json;
use herald_core::{Config, ConfigError, Level, Payload};
use herald_mio::client::{Client, Reply};
use herald_mio::kafka::KafkaConfig;
use herald_mio::peer_auth::ClusterSecret;
use herald_mio::server::{serve, ClusterConfig, ServerConfig};
use herald_mio::tls::TlsConfig;
use herald_mio::wal::FsyncPolicy;

/// Herald: a message broker (Kafka-style logs and topics, SQS-style work queues).
#[derive(Parser)]
#[command(name = "herald", version)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Conn {
    /// The server's address (to listen on, for `serve`).
    #[arg(long, default_value = "127.0.0.1:7878", global = true)]
    addr: String,
    /// Print the server's reply as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Authenticate as this user first (a server with users requires it).
    #[arg(long, global = true, requires = "login_password")]
    login: Option<String>,
    /// The --login user's password.
    #[arg(long, global = true, requires = "login")]
    login_password: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (data in ./herald-data, listening on 127.0.0.1:7878).
    Serve(Box<ServeArgs>),
    /// Append a message to a keyed log; prints its offset.
    Send { key: String, msg: String },
    /// Read a keyed log from an offset; prints `offset<TAB>message` lines.
    Poll {
        key: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        max: Option<usize>,
    },
    /// Follow a keyed log, printing messages as they arrive (Ctrl-C stops).
    Tail {
        key: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Create a work queue.
    CreateQueue {
        queue: String,
        #[arg(long)]
        visibility_ms: Option<u64>,
        #[arg(long)]
        max_deliveries: Option<u32>,
        #[arg(long)]
        dead_letter: Option<String>,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        dedup_window_ms: Option<u64>,
        #[arg(long)]
        max_depth: Option<usize>,
    },
    /// Add a message to a queue.
    Enqueue {
        queue: String,
        msg: String,
        /// Producer id: a repeat within the dedup window is dropped.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        delay_ms: Option<u64>,
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Take messages; prints `receipt<TAB>deliveries<TAB>id<TAB>message` lines.
    Dequeue {
        queue: String,
        #[arg(long, default_value_t = 1)]
        max: usize,
        #[arg(long)]
        wait_ms: Option<u64>,
        #[arg(long)]
        visibility_ms: Option<u64>,
    },
    /// Acknowledge a delivery.
    Ack { queue: String, receipt: String },
    /// Return a delivery to the queue.
    Nack {
        queue: String,
        receipt: String,
        #[arg(long)]
        delay_ms: Option<u64>,
    },
    /// A queue's counts.
    Stats { queue: String },
    /// List queues.
    Queues,
    /// The node's id, the leader it knows of, its Raft term and indexes.
    Status,
    /// Create a topic.
    CreateTopic { topic: String, partitions: u32 },
    /// Publish to a topic.
    Publish {
        topic: String,
        msg: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// List prepared (two-phase) transactions: `txid<TAB>ops<TAB>expires_in_ms` lines.
    Prepared,
    /// Commit a prepared transaction (as its coordinator would).
    CommitTxn { txid: String },
    /// Abort a prepared transaction (as its coordinator would).
    AbortTxn { txid: String },
    /// Manage the users of a data directory (with users, clients must authenticate).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Send any request body (JSON) and print the reply as JSON.
    Request { body: String },
    /// Load-test a server: produce to a queue, then consume + ack it.
    Bench {
        /// herald, herald-idempotent (enqueues with producer id and sequence), herald-log
        /// (sends to a keyed log; no consume phase), redis-list (LPUSH/RPOP) or
        /// redis-stream (XADD/XREADGROUP/XACK).
        #[arg(long, default_value = "herald")]
        target: herald_mio::bench::Target,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        pipeline: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds of producing (consuming drains it, up to as long again).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value = "bench")]
        queue: String,
        /// Herald: the bench queue's depth limit (a full queue ends the produce phase).
        #[arg(long, default_value_t = 1_000_000)]
        max_depth: usize,
    },
}

/// `herald user ...`: the users file of a data directory (a running server re-reads it
/// within a second).
#[derive(Subcommand)]
enum UserAction {
    /// Add a user, or set an existing user's password.
    Add {
        name: String,
        /// The password (prompted for, without echo, when left out).
        #[arg(long)]
        password: Option<String>,
        /// What the user may do, as ACCESS PATTERN (repeatable): `read queue:jobs`,
        /// `write topic:orders.*`, `admin *`. Replaces the user's rules; left out, a
        /// new user may do nothing and an existing one keeps its rules.
        #[arg(long)]
        allow: Vec<String>,
        #[arg(long, default_value = "herald-data")]
        data_dir: std::path::PathBuf,
    },
    /// Remove a user: its connections must authenticate again.
    Remove {
        name: String,
        #[arg(long, default_value = "herald-data")]
        data_dir: std::path::PathBuf,
    },
    /// List the users' names.
    List {
        #[arg(long, default_value = "herald-data")]
        data_dir: std::path::PathBuf,
    },
}

/// Runs `herald user ...`: a bad name or password exits 2, a file error 1.
fn run_user(action: UserAction) -> ExitCode {
    use herald_mio::acl::Rule;
    use herald_mio::auth::Users;
    let result = (|| -> Result<String, (u8, String)> {
        let io = |e: String| (1, e);
        match action {
            UserAction::Add {
                name,
                password,
                allow,
                data_dir,
            } => {
                let rules: Vec<Rule> = (allow.iter().map(|r| Rule::parse(r)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| (2, e))?;
                let password = match password {
                    Some(p) => p,
                    None => read_password().map_err(io)?,
                };
                let mut users = Users::load(&data_dir).map_err(io)?;
                let added = users.set(&name, &password).map_err(|e| (2, e))?;
                if !allow.is_empty() {
                    users.allow(&name, rules).map_err(|e| (2, e))?;
                }
                users.save(&data_dir).map_err(io)?;
                Ok(format!(
                    "{} user {name}",
                    if added {
                        "added"
                    } else {
                        "changed the password of"
                    }
                ))
            }
            UserAction::Remove { name, data_dir } => {
                let mut users = Users::load(&data_dir).map_err(io)?;
                if !users.remove(&name) {
                    return Err((1, format!("no user {name:?} in {}", data_dir.display())));
                }
                users.save(&data_dir).map_err(io)?;
                Ok(format!("removed user {name}"))
            }
            UserAction::List { data_dir } => {
                let users = Users::load(&data_dir).map_err(io)?;
                let line = |name: &str| {
                    let rules: Vec<String> =
                        users.rules_of(name).iter().map(|r| r.to_string()).collect();
                    let rules = if rules.is_empty() {
                        "(no rules: may do nothing)".into()
                    } else {
                        rules.join(", ")
                    };
                    format!("{name}\t{rules}")
                };
                Ok(users.names().map(line).collect::<Vec<_>>().join("\n"))
            }
        }
    })();
    match result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("herald user: {e}");
            ExitCode::from(code)
        }
    }
}

/// A password from the terminal (twice, without echo), or a line of stdin when it is
/// not a terminal.
fn read_password() -> Result<String, String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let ask = |prompt: &str| rpassword::prompt_password(prompt).map_err(|e| e.to_string());
    let password = ask("password: ")?;
    if ask("again: ")? != password {
        return Err("the two passwords differ".into());
    }
    Ok(password)
}

/// `herald serve` flags: the server's own, then one per node [`Config`] field.
#[derive(Args)]
struct ServeArgs {
    /// Where the write-ahead log lives.
    #[arg(long, default_value = "herald-data")]
    data_dir: std::path::PathBuf,
    /// always (sync before replying), never, or a sync interval in ms.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Most connections at once; more are refused.
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Reply bytes buffered per connection before its requests stop being read.
    #[arg(long, default_value_t = ServerConfig::default().max_write_buffer_bytes)]
    max_write_buffer_bytes: usize,
    /// A connection with no traffic for this long is closed.
    #[arg(long, default_value_t = ServerConfig::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
    /// Log segments are rotated past this size.
    #[arg(long, default_value_t = ServerConfig::default().max_segment_bytes)]
    max_segment_bytes: u64,
    /// Snapshot and delete the log once it grows past this many bytes.
    #[arg(long, default_value_t = ServerConfig::default().compact_after_bytes)]
    compact_after_bytes: u64,
    /// Run as this node of a cluster (needs --peers).
    #[arg(long, requires = "peers")]
    node_id: Option<String>,
    /// Every node of the cluster as id=host:port, comma-separated, this one included
    /// (e.g. n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003). Clients may talk
    /// to any node; peers connect to each other's --addr.
    #[arg(long, requires = "node_id")]
    peers: Option<String>,
    /// A file holding the secret every node of the cluster shares (16 bytes or more):
    /// peers sign their hellos with it, and a process without it cannot join, vote or
    /// append.
    #[arg(long, requires = "node_id")]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// Where the Kafka listener listens, or `none` for no Kafka listener. Nodes of a
    /// cluster on one machine need one each.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_addr: String,
    /// The host:port Kafka clients are told to connect to (default: --kafka-addr).
    #[arg(long)]
    kafka_advertised_addr: Option<String>,
    /// The largest Kafka request frame accepted; a bigger one closes its connection.
    #[arg(long, default_value_t = KafkaConfig::default().max_frame_bytes)]
    kafka_max_frame_bytes: usize,
    /// Kafka requests in flight on one connection before it stops being read.
    #[arg(long, default_value_t = KafkaConfig::default().max_in_flight)]
    kafka_max_in_flight: usize,
    /// Serve Prometheus metrics (GET /metrics) on this host:port; off by default.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// TLS on the JSON-lines and Kafka listeners: the certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by these CAs (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// In a cluster with TLS: the CA (PEM) that signed every node's --tls-cert; peer
    /// links are mutual TLS, checked against it.
    #[arg(long, requires = "tls_cert")]
    tls_peer_ca: Option<std::path::PathBuf>,
    /// Listen without TLS on addresses other than loopback (refused otherwise).
    #[arg(long)]
    allow_plaintext: bool,
    /// Connections one user may have open at once (with users defined).
    #[arg(long, default_value_t = ServerConfig::default().max_connections_per_user)]
    max_connections_per_user: usize,
    #[command(flatten)]
    node: NodeFlags,
}

/// The node configuration `herald serve` starts from: herald-core's defaults, except
/// that it logs at `info`.
fn serve_defaults() -> Config {
    Config {
        log_level: Level::Info,
        ..Config::default()
    }
}

/// The flag of the [`Config`] field `name`: `max_line_bytes` is `--max-line-bytes`.
fn flag_name(name: &str) -> String {
    name.replace('_', "-")
}

/// One `herald serve` flag per [`Config`] field, made from [`Config::FIELDS`]: its help
/// is the field's doc, its default the field in [`serve_defaults`], and its value is
/// parsed by [`Config::set`] (in [`NodeFlags::config`], so every error names its flag).
#[derive(Clone, Debug, Default)]
struct NodeFlags {
    /// The fields given on the command line, with their text.
    given: Vec<(&'static str, String)>,
}

impl NodeFlags {
    /// [`serve_defaults`] with the given fields set, once it passes
    /// [`Config::validate`]; an error names the flag at fault.
    fn config(&self) -> Result<Config, String> {
        let flag_error = |e: ConfigError| format!("--{}: {}", flag_name(e.field), e.reason);
        let mut config = serve_defaults();
        for (name, text) in &self.given {
            config.set(name, text).map_err(flag_error)?;
        }
        config.validate().map_err(flag_error)?;
        Ok(config)
    }
}

impl Args for NodeFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        let defaults = serve_defaults();
        for field in Config::FIELDS {
            let default = defaults.get(field.name).expect("every field has a value");
            let doc: Vec<&str> = field.doc.iter().map(|line| line.trim()).collect();
            // Like the derived flags' help: no final period.
            let mut help = doc.join(" ").trim_end_matches('.').to_owned();
            if Level::parse(&default).is_some() {
                help.push_str(": debug, info, warn, error or off");
            }
            cmd = cmd.arg(
                Arg::new(field.name)
                    .long(flag_name(field.name))
                    .value_name(field.name.to_uppercase())
                    .help(help)
                    .default_value(default)
                    .action(ArgAction::Set)
                    .value_parser(clap::value_parser!(String)),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        NodeFlags::augment_args(cmd)
    }
}

impl FromArgMatches for NodeFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<NodeFlags, clap::Error> {
        let mut flags = NodeFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for field in Config::FIELDS {
            if matches.value_source(field.name) != Some(ValueSource::CommandLine) {
                continue;
            }
            if let Some(text) = matches.get_one::<String>(field.name) {
                self.given.retain(|(name, _)| *name != field.name);
                self.given.push((field.name, text.clone()));
            }
        }
        Ok(())
    }
}

/// Parses `--peers` (see its help) and checks `--node-id` is among them.
fn cluster_config(node_id: String, peers: &str) -> Result<ClusterConfig, String> {
    let mut nodes = Vec::new();
    for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or(format!("--peers: {part:?} is not id=host:port"))?;
        let addr = addr
            .parse()
            .map_err(|e| format!("--peers: {addr:?} of {id:?}: {e}"))?;
        if nodes.iter().any(|(n, _)| n == id) {
            return Err(format!("--peers: {id:?} appears twice"));
        }
        nodes.push((id.to_owned(), addr));
    }
    if !nodes.iter().any(|(n, _)| *n == node_id) {
        return Err(format!("--node-id {node_id:?} is not in --peers"));
    }
    if nodes.len() < 2 {
        return Err(
            "--peers: a cluster needs at least two nodes (three to survive a crash)".into(),
        );
    }
    Ok(ClusterConfig {
        node_id,
        nodes,
        secret: None,
    })
}

impl ServeArgs {
    fn into_config(self, addr: &str) -> Result<ServerConfig, String> {
        let addr = addr.parse().map_err(|e| format!("--addr {addr:?}: {e}"))?;
        let node = self.node.config()?;
        let cluster = match (self.node_id, self.peers) {
            (Some(id), Some(peers)) => {
                let mut cluster = cluster_config(id, &peers)?;
                if let Some(path) = &self.cluster_secret_file {
                    let secret = ClusterSecret::load(path)
                        .map_err(|e| format!("--cluster-secret-file {e}"))?;
                    cluster.secret = Some(std::sync::Arc::new(secret));
                }
                Some(cluster)
            }
            _ => None,
        };
        let kafka = match self.kafka_addr.as_str() {
            "none" => None,
            text => Some(KafkaConfig {
                addr: text
                    .parse()
                    .map_err(|e| format!("--kafka-addr {text:?}: {e} (or `none`)"))?,
                advertised_addr: self.kafka_advertised_addr,
                max_frame_bytes: self.kafka_max_frame_bytes,
                max_in_flight: self.kafka_max_in_flight.max(1),
            }),
        };
        let metrics_addr = match &self.metrics_addr {
            None => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|e| format!("--metrics-addr {text:?}: {e}"))?,
            ),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert_path), Some(key_path)) => Some(TlsConfig {
                cert_path,
                key_path,
                client_ca_path: self.tls_client_ca,
                peer_ca_path: self.tls_peer_ca,
            }),
            _ => None,
        };
        let config = ServerConfig {
            kafka,
            metrics_addr,
            tls,
            allow_plaintext: self.allow_plaintext,
            max_connections_per_user: self.max_connections_per_user,
            addr,
            data_dir: self.data_dir,
            fsync: self.fsync,
            max_segment_bytes: self.max_segment_bytes,
            compact_after_bytes: self.compact_after_bytes,
            max_connections: self.max_connections,
            max_write_buffer_bytes: self.max_write_buffer_bytes,
            idle_timeout_ms: self.idle_timeout_ms,
            node,
            cluster,
        };
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conn = cli.conn;
    let command = match cli.command {
        Command::Serve(args) => return run_serve(*args, &conn.addr),
        Command::User { action } => return run_user(action),
        Command::Bench {
            target,
            connections,
            pipeline,
            size,
            seconds,
            queue,
            max_depth,
        } => {
            let config = herald_mio::bench::BenchConfig {
                addr: conn.addr.clone(),
                target,
                connections: connections.max(1),
                pipeline: pipeline.max(1),
                size,
                duration: Duration::from_secs(seconds),
                queue,
                max_depth,
            };
            return run_bench(&config);
        }
        other => other,
    };
    let mut client = match Client::connect(&conn.addr) {
        Ok(client) => client,
        Err(e) => {
            eprintln!(
                "herald: cannot connect to {}: {e} (is `herald serve` running?)",
                conn.addr
            );
            return ExitCode::from(3);
        }
    };
    let login = match (conn.login, conn.login_password) {
        (Some(user), Some(password)) => ok(client.call(Payload::Auth(Auth { user, password }))),
        _ => Ok(Payload::AuthOk(AuthOk::default())),
    };
    match login.and_then(|_| run_client(&mut client, command, conn.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Server(e)) => {
            eprintln!("herald: error {}: {}", e.code, e.text);
            ExitCode::FAILURE
        }
        Err(Failure::Io(e)) => {
            eprintln!("herald: {e}");
            ExitCode::from(3)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("herald: {e}");
            ExitCode::from(2)
        }
    }
}

/// `herald serve`: a bad flag exits 2, a server failure 1.
fn run_serve(args: ServeArgs, addr: &str) -> ExitCode {
    let config = match args.into_config(addr) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald serve: {e}");
            return ExitCode::from(2);
        }
    };
    // The server logs `event=listening addr=... kafka_addr=... data_dir=...` itself.
    match serve(config, |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `herald bench`: a connection failure exits 3.
fn run_bench(config: &herald_mio::bench::BenchConfig) -> ExitCode {
    match herald_mio::bench::run(config) {
        Ok(results) => {
            print!("{}", herald_mio::bench::report(config, &results));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "herald bench: {e} (is the server running at {}?)",
                config.addr
            );
            ExitCode::from(3)
        }
    }
}

enum Failure {
    Server(ErrorBody),
    Io(std::io::Error),
    Usage(String),
}

fn ok(reply: std::io::Result<Reply>) -> Result<Payload, Failure> {
    reply.map_err(Failure::Io)?.map_err(Failure::Server)
}

/// Runs one client command: sends its request and prints the reply (`herald request`
/// always as JSON, the others as JSON with `--json`, else as text).
fn run_client(client: &mut Client, command: Command, json: bool) -> Result<(), Failure> {
    let json = json || matches!(command, Command::Request { .. });
    match command {
        Command::Tail { key, from } => return tail(client, &key, from),
        Command::Dequeue {
            wait_ms: Some(wait),
            ..
        } => client
            .set_timeout(Some(Duration::from_millis(wait + 10_000)))
            .map_err(Failure::Io)?,
        _ => {}
    }
    let reply = ok(client.call(request(command)?))?;
    if json {
        println!("{}", serde_json::to_string(&reply).expect("serializable"));
    } else {
        print_reply(reply);
    }
    Ok(())
}

/// `herald tail`: polls the log `key` from `from` until stopped (or an error).
fn tail(client: &mut Client, key: &str, mut from: u64) -> Result<(), Failure> {
    loop {
        let poll = Poll {
            offsets: [(key.to_owned(), from)].into(),
            max: None,
        };
        if let Payload::PollOk(ok) = ok(client.call(Payload::Poll(poll)))? {
            for (offset, msg) in ok.msgs.get(key).into_iter().flatten() {
                println!("{offset}\t{msg}");
                from = offset + 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The request a client command sends (`herald request`'s body must decode).
fn request(command: Command) -> Result<Payload, Failure> {
    Ok(match command {
        Command::Serve(_) | Command::Bench { .. } | Command::Tail { .. } | Command::User { .. } => {
            unreachable!("not a single request")
        }
        Command::Send { key, msg } => Payload::Send(Send {
            key,
            msg: Json::parse_or_string(&msg),
            ..Default::default()
        }),
        Command::Poll { key, from, max } => Payload::Poll(Poll {
            offsets: [(key, from)].into(),
            max,
        }),
        Command::CreateQueue {
            queue,
            visibility_ms,
            max_deliveries,
            dead_letter,
            retention_ms,
            dedup_window_ms,
            max_depth,
        } => Payload::CreateQueue(CreateQueue {
            queue,
            visibility_ms,
            max_deliveries,
            dead_letter,
            retention_ms,
            dedup_window_ms,
            max_depth,
        }),
        Command::Enqueue {
            queue,
            msg,
            id,
            delay_ms,
            ttl_ms,
        } => Payload::Enqueue(Enqueue {
            queue,
            msg: Json::parse_or_string(&msg),
            id,
            delay_ms,
            ttl_ms,
            ..Default::default()
        }),
        Command::Dequeue {
            queue,
            max,
            wait_ms,
            visibility_ms,
        } => Payload::Dequeue(Dequeue {
            queue,
            max: Some(max),
            visibility_ms,
            wait_ms,
        }),
        Command::Ack { queue, receipt } => Payload::Ack(Receipt {
            queue,
            receipt,
            delay_ms: None,
            visibility_ms: None,
        }),
        Command::Nack {
            queue,
            receipt,
            delay_ms,
        } => Payload::Nack(Receipt {
            queue,
            receipt,
            delay_ms,
            visibility_ms: None,
        }),
        Command::Stats { queue } => Payload::Stats(QueueName { queue }),
        Command::Queues => Payload::ListQueues,
        Command::Status => Payload::Status,
        Command::Prepared => Payload::ListPrepared,
        Command::CommitTxn { txid } => Payload::CommitTxn(TxnId { txid }),
        Command::AbortTxn { txid } => Payload::AbortTxn(TxnId { txid }),
        Command::CreateTopic { topic, partitions } => {
            Payload::CreateTopic(CreateTopic { topic, partitions })
        }
        Command::Publish { topic, msg, key } => Payload::Publish(Publish {
            topic,
            key,
            msg: Json::parse_or_string(&msg),
            ..Default::default()
        }),
        Command::Request { body } => {
            let line = format!(r#"{{"src":"","dest":"","body":{body}}}"#);
            herald_core::wire::decode(line.as_bytes())
                .map_err(|e| Failure::Usage(e.to_string()))?
                .body
                .payload
        }
    })
}

/// Prints a reply as text.
fn print_reply(reply: Payload) {
    match reply {
        Payload::SendOk(r) => println!("offset {}", r.offset),
        Payload::PollOk(r) => {
            for (offset, msg) in r.msgs.into_values().flatten() {
                println!("{offset}\t{msg}");
            }
        }
        Payload::CreateQueueOk(r) => println!("queue {} ready", r.queue),
        Payload::EnqueueOk(r) if r.duplicate => println!("duplicate {} (already enqueued)", r.id),
        Payload::EnqueueOk(r) => println!("enqueued {}", r.id),
        Payload::DequeueOk(r) => {
            for m in r.msgs {
                let dead = m
                    .dead_letter
                    .map(|d| format!("\tdead-lettered from {}: {}", d.queue, d.reason))
                    .unwrap_or_default();
                println!("{}\t{}\t{}\t{}{dead}", m.receipt, m.deliveries, m.id, m.msg);
            }
        }
        Payload::StatsOk(s) => {
            let fields = serde_json::to_value(&s).expect("serializable");
            for (name, value) in fields.as_object().into_iter().flatten() {
                println!("{name}: {value}");
            }
        }
        Payload::ListQueuesOk(r) => r.queues.iter().for_each(|q| println!("{q}")),
        Payload::CreateTopicOk(r) => println!("topic {} with {} partitions", r.topic, r.partitions),
        Payload::PublishOk(r) => println!("partition {} offset {}", r.partition, r.offset),
        Payload::ListPreparedOk(r) => r
            .prepared
            .iter()
            .for_each(|t| println!("{}\t{}\t{}", t.txid, t.ops, t.expires_in_ms)),
        Payload::CommitTxnOk(r) => println!("committed: {} operations applied", r.results.len()),
        Payload::AbortTxnOk => println!("aborted"),
        Payload::StatusOk(s) => println!(
            "node {} leader {} term {} commit {} applied {}",
            s.node,
            s.leader.as_deref().unwrap_or("-"),
            s.term,
            s.commit_index,
            s.applied_index
        ),
        other => println!("{}", other.kind()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["herald", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            _ => panic!("not serve"),
        }
    }

    fn serve_config(flags: &[&str]) -> Result<ServerConfig, String> {
        serve_args(flags).into_config("127.0.0.1:0")
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_config_field_has_a_serve_flag_with_its_doc_and_default() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let defaults = serve_defaults();
        for field in Config::FIELDS {
            let long = flag_name(field.name);
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("no --{long}"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(field.doc[0].trim().trim_end_matches('.')),
                "--{long}: help {help:?} is not its doc"
            );
            let default: Vec<_> = arg.get_default_values().iter().collect();
            assert_eq!(
                default,
                [&defaults.get(field.name).unwrap()],
                "--{long} default"
            );
        }
    }

    #[test]
    fn the_flags_of_before_keep_their_names_and_defaults() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let default_of = |long: &str| -> String {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("--{long} is gone"));
            let values = arg.get_default_values();
            values
                .first()
                .map_or(String::new(), |v| v.to_string_lossy().into_owned())
        };
        let server = ServerConfig::default();
        for (long, default) in [
            ("data-dir", "herald-data".to_owned()),
            ("fsync", "always".to_owned()),
            ("log-level", "info".to_owned()),
            ("max-connections", server.max_connections.to_string()),
            (
                "max-write-buffer-bytes",
                server.max_write_buffer_bytes.to_string(),
            ),
            ("idle-timeout-ms", server.idle_timeout_ms.to_string()),
            ("max-segment-bytes", server.max_segment_bytes.to_string()),
            (
                "compact-after-bytes",
                server.compact_after_bytes.to_string(),
            ),
            ("node-id", String::new()),
            ("peers", String::new()),
        ] {
            assert_eq!(default_of(long), default, "--{long}");
        }
        let node = Config::default();
        for name in [
            "max_line_bytes",
            "dedup_capacity",
            "max_poll_messages",
            "max_log_keys",
            "max_log_records",
            "max_topics",
            "max_partitions",
            "max_groups",
            "max_group_members",
            "group_session_timeout_ms",
            "max_queues",
            "queue_max_depth",
            "queue_visibility_ms",
            "queue_dedup_window_ms",
            "queue_max_dedup_ids",
            "max_dequeue_batch",
            "max_wait_ms",
            "max_waiters",
            "max_processed_ids",
            "max_records_per_log",
            "max_producers",
            "max_producer_streams",
            "producer_expiry_ms",
            "max_txn_ops",
            "max_prepared",
            "prepared_timeout_ms",
            "max_txn_outcomes",
            "election_timeout_ms",
            "heartbeat_interval_ms",
            "max_append_entries",
            "max_uncommitted_entries",
            "max_raft_log_entries",
        ] {
            let long = name.replace('_', "-");
            assert_eq!(default_of(&long), node.get(name).unwrap(), "--{long}");
        }
    }

    #[test]
    fn no_flags_give_the_defaults_and_info_logging() {
        let config = serve_config(&[]).unwrap();
        assert_eq!(config.node.log_level, Level::Info);
        assert_eq!(
            config.node,
            Config {
                log_level: Level::Info,
                ..Config::default()
            }
        );
        assert_eq!(config.compact_after_bytes, 64 << 20);
        assert!(config.cluster.is_none());
    }

    #[test]
    fn given_flags_reach_the_config() {
        let config = serve_config(&[
            "--queue-max-depth",
            "7",
            "--log-level",
            "debug",
            "--election-timeout-ms=900",
            "--heartbeat-interval-ms",
            "600",
            "--rpc-max-attempts",
            "3",
            "--seed",
            "42",
            "--compact-after-bytes",
            "20000",
            "--max-connections",
            "5",
        ])
        .unwrap();
        let node = config.node;
        assert_eq!(node.queue_max_depth, 7);
        assert_eq!(node.log_level, Level::Debug);
        assert_eq!(node.election_timeout_ms, 900);
        assert_eq!(node.heartbeat_interval_ms, 600);
        assert_eq!(node.rpc_max_attempts, 3);
        assert_eq!(node.seed, 42);
        assert_eq!(node.max_line_bytes, Config::default().max_line_bytes);
        assert_eq!(config.compact_after_bytes, 20_000);
        assert_eq!(config.max_connections, 5);
        // Every field's flag reaches its field: set each to its default plus one.
        let defaults = serve_defaults();
        for field in Config::FIELDS {
            let Ok(n) = defaults.get(field.name).unwrap().parse::<u64>() else {
                continue; // log_level, checked above
            };
            let flag = format!("--{}={}", flag_name(field.name), n + 1);
            let config = serve_args(&[&flag]).node.config();
            let got = config.unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_eq!(got.get(field.name).unwrap(), (n + 1).to_string(), "{flag}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let err = serve_config(&["--max-line-bytes", "lots"]).err().unwrap();
        assert!(
            err.starts_with("--max-line-bytes: \"lots\" is not a valid value"),
            "{err}"
        );
        let err = serve_config(&["--log-level", "loud"]).err().unwrap();
        assert!(err.starts_with("--log-level: "), "{err}");
        let err = serve_config(&["--rpc-max-attempts", "0"]).err().unwrap();
        assert_eq!(err, "--rpc-max-attempts: must be at least 1, not 0");
        let err = serve_config(&["--heartbeat-interval-ms", "600"])
            .err()
            .unwrap();
        assert!(
            err.starts_with(
                "--heartbeat-interval-ms: must be less than election_timeout_ms (500), not 600"
            ),
            "{err}"
        );
        // A flag that takes no part in the relation is fine on its own.
        assert!(serve_config(&["--election-timeout-ms", "700"]).is_ok());
        assert!(Cli::try_parse_from(["herald", "serve", "--no-such-limit", "1"]).is_err());
    }
}
