//! `herald`: the broker server (`herald serve`) and its command-line client.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herald_core::wire::msg::*;
use herald_core::{Config, Level, Payload};
use herald_mio::client::{Client, Reply};
use herald_mio::server::{serve, ClusterConfig, ServerConfig};
use herald_mio::wal::FsyncPolicy;
use serde_json::Value;

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
    /// Send any request body (JSON) and print the reply as JSON.
    Request { body: String },
    /// Load-test a server: produce to a queue, then consume + ack it.
    Bench {
        /// herald, herald-idempotent (enqueues with producer id and sequence), redis-list
        /// (LPUSH/RPOP) or redis-stream (XADD/XREADGROUP/XACK).
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
    },
}

/// `herald serve` flags; each node limit has one (defaults from herald-core).
#[derive(Args)]
struct ServeArgs {
    /// Where the write-ahead log lives.
    #[arg(long, default_value = "herald-data")]
    data_dir: std::path::PathBuf,
    /// always (sync before replying), never, or a sync interval in ms.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// debug, info, warn, error or off.
    #[arg(long, default_value = "info")]
    log_level: String,
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    #[arg(long, default_value_t = ServerConfig::default().max_write_buffer_bytes)]
    max_write_buffer_bytes: usize,
    #[arg(long, default_value_t = ServerConfig::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
    #[arg(long, default_value_t = ServerConfig::default().max_segment_bytes)]
    max_segment_bytes: u64,
    /// Snapshot and delete the log once it grows past this many bytes.
    #[arg(long, default_value_t = ServerConfig::default().compact_after_bytes)]
    compact_after_bytes: u64,
    #[arg(long, default_value_t = Config::default().max_line_bytes)]
    max_line_bytes: usize,
    #[arg(long, default_value_t = Config::default().dedup_capacity)]
    dedup_capacity: usize,
    #[arg(long, default_value_t = Config::default().max_poll_messages)]
    max_poll_messages: usize,
    #[arg(long, default_value_t = Config::default().max_log_keys)]
    max_log_keys: usize,
    #[arg(long, default_value_t = Config::default().max_log_records)]
    max_log_records: usize,
    #[arg(long, default_value_t = Config::default().max_topics)]
    max_topics: usize,
    #[arg(long, default_value_t = Config::default().max_partitions)]
    max_partitions: u32,
    #[arg(long, default_value_t = Config::default().max_groups)]
    max_groups: usize,
    #[arg(long, default_value_t = Config::default().max_group_members)]
    max_group_members: usize,
    #[arg(long, default_value_t = Config::default().group_session_timeout_ms)]
    group_session_timeout_ms: u64,
    #[arg(long, default_value_t = Config::default().max_queues)]
    max_queues: usize,
    #[arg(long, default_value_t = Config::default().queue_max_depth)]
    queue_max_depth: usize,
    #[arg(long, default_value_t = Config::default().queue_visibility_ms)]
    queue_visibility_ms: u64,
    #[arg(long, default_value_t = Config::default().queue_dedup_window_ms)]
    queue_dedup_window_ms: u64,
    #[arg(long, default_value_t = Config::default().queue_max_dedup_ids)]
    queue_max_dedup_ids: usize,
    #[arg(long, default_value_t = Config::default().max_dequeue_batch)]
    max_dequeue_batch: usize,
    #[arg(long, default_value_t = Config::default().max_wait_ms)]
    max_wait_ms: u64,
    #[arg(long, default_value_t = Config::default().max_waiters)]
    max_waiters: usize,
    #[arg(long, default_value_t = Config::default().max_processed_ids)]
    max_processed_ids: usize,
    #[arg(long, default_value_t = Config::default().max_records_per_log)]
    max_records_per_log: usize,
    #[arg(long, default_value_t = Config::default().max_producers)]
    max_producers: usize,
    #[arg(long, default_value_t = Config::default().max_producer_streams)]
    max_producer_streams: usize,
    #[arg(long, default_value_t = Config::default().producer_expiry_ms)]
    producer_expiry_ms: u64,
    #[arg(long, default_value_t = Config::default().max_txn_ops)]
    max_txn_ops: usize,
    #[arg(long, default_value_t = Config::default().max_prepared)]
    max_prepared: usize,
    #[arg(long, default_value_t = Config::default().prepared_timeout_ms)]
    prepared_timeout_ms: u64,
    #[arg(long, default_value_t = Config::default().max_txn_outcomes)]
    max_txn_outcomes: usize,
    /// Run as this node of a cluster (needs --peers).
    #[arg(long, requires = "peers")]
    node_id: Option<String>,
    /// Every node of the cluster as id=host:port, comma-separated, this one included
    /// (e.g. n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003). Clients may talk
    /// to any node; peers connect to each other's --addr.
    #[arg(long, requires = "node_id")]
    peers: Option<String>,
    #[arg(long, default_value_t = Config::default().election_timeout_ms)]
    election_timeout_ms: u64,
    #[arg(long, default_value_t = Config::default().heartbeat_interval_ms)]
    heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = Config::default().max_append_entries)]
    max_append_entries: usize,
    #[arg(long, default_value_t = Config::default().max_uncommitted_entries)]
    max_uncommitted_entries: usize,
    #[arg(long, default_value_t = Config::default().max_raft_log_entries)]
    max_raft_log_entries: usize,
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
    Ok(ClusterConfig { node_id, nodes })
}

impl ServeArgs {
    fn into_config(self, addr: &str) -> Result<ServerConfig, String> {
        let addr = addr.parse().map_err(|e| format!("--addr {addr:?}: {e}"))?;
        let log_level = Level::parse(&self.log_level)
            .ok_or(format!("unknown --log-level {:?}", self.log_level))?;
        let node = Config {
            log_level,
            max_line_bytes: self.max_line_bytes,
            dedup_capacity: self.dedup_capacity,
            max_poll_messages: self.max_poll_messages,
            max_log_keys: self.max_log_keys,
            max_log_records: self.max_log_records,
            max_topics: self.max_topics,
            max_partitions: self.max_partitions,
            max_groups: self.max_groups,
            max_group_members: self.max_group_members,
            group_session_timeout_ms: self.group_session_timeout_ms,
            max_queues: self.max_queues,
            queue_max_depth: self.queue_max_depth,
            queue_visibility_ms: self.queue_visibility_ms,
            queue_dedup_window_ms: self.queue_dedup_window_ms,
            queue_max_dedup_ids: self.queue_max_dedup_ids,
            max_dequeue_batch: self.max_dequeue_batch,
            max_wait_ms: self.max_wait_ms,
            max_waiters: self.max_waiters,
            max_processed_ids: self.max_processed_ids,
            max_records_per_log: self.max_records_per_log,
            max_producers: self.max_producers,
            max_producer_streams: self.max_producer_streams,
            producer_expiry_ms: self.producer_expiry_ms,
            max_txn_ops: self.max_txn_ops,
            max_prepared: self.max_prepared,
            prepared_timeout_ms: self.prepared_timeout_ms,
            max_txn_outcomes: self.max_txn_outcomes,
            election_timeout_ms: self.election_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_append_entries: self.max_append_entries,
            max_uncommitted_entries: self.max_uncommitted_entries,
            max_raft_log_entries: self.max_raft_log_entries,
            ..Config::default()
        };
        let cluster = match (self.node_id, self.peers) {
            (Some(id), Some(peers)) => Some(cluster_config(id, &peers)?),
            _ => None,
        };
        Ok(ServerConfig {
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
        })
    }
}

/// A message argument: JSON if it parses as JSON, else the text as a string.
fn message(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conn = cli.conn;
    let command = match cli.command {
        Command::Serve(args) => {
            let config = match args.into_config(&conn.addr) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("herald serve: {e}");
                    return ExitCode::from(2);
                }
            };
            let data_dir = config.data_dir.clone();
            let result = serve(config, |addr| {
                eprintln!(
                    "herald: listening on {addr}, data in {}",
                    data_dir.display()
                );
            });
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald serve: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench {
            target,
            connections,
            pipeline,
            size,
            seconds,
            queue,
        } => {
            let config = herald_mio::bench::BenchConfig {
                addr: conn.addr.clone(),
                target,
                connections: connections.max(1),
                pipeline: pipeline.max(1),
                size,
                duration: Duration::from_secs(seconds),
                queue,
            };
            return match herald_mio::bench::run(&config) {
                Ok(results) => {
                    print!("{}", herald_mio::bench::report(&config, &results));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "herald bench: {e} (is the server running at {}?)",
                        conn.addr
                    );
                    ExitCode::from(3)
                }
            };
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
    match run_client(&mut client, command, conn.json) {
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

enum Failure {
    Server(ErrorBody),
    Io(std::io::Error),
    Usage(String),
}

fn ok(reply: std::io::Result<Reply>) -> Result<Payload, Failure> {
    reply.map_err(Failure::Io)?.map_err(Failure::Server)
}

fn run_client(client: &mut Client, command: Command, json: bool) -> Result<(), Failure> {
    let request = match command {
        Command::Serve(_) | Command::Bench { .. } => unreachable!("handled in main"),
        Command::Tail { key, mut from } => loop {
            let poll = Poll {
                offsets: [(key.clone(), from)].into(),
                max: None,
            };
            if let Payload::PollOk(ok) = ok(client.call(Payload::Poll(poll)))? {
                for (offset, msg) in ok.msgs.get(&key).into_iter().flatten() {
                    println!("{offset}\t{msg}");
                    from = offset + 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        },
        Command::Send { key, msg } => Payload::Send(Send {
            key,
            msg: message(&msg),
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
            msg: message(&msg),
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
        } => {
            if let Some(wait) = wait_ms {
                client
                    .set_timeout(Some(Duration::from_millis(wait + 10_000)))
                    .map_err(Failure::Io)?;
            }
            Payload::Dequeue(Dequeue {
                queue,
                max: Some(max),
                visibility_ms,
                wait_ms,
            })
        }
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
            msg: message(&msg),
            ..Default::default()
        }),
        Command::Request { body } => {
            let line = format!(r#"{{"src":"","dest":"","body":{body}}}"#);
            let msg = herald_core::wire::decode(line.as_bytes())
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let reply = ok(client.call(msg.body.payload))?;
            println!("{}", serde_json::to_string(&reply).expect("serializable"));
            return Ok(());
        }
    };
    let reply = ok(client.call(request))?;
    if json {
        println!("{}", serde_json::to_string(&reply).expect("serializable"));
        return Ok(());
    }
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
    Ok(())
}
