//! The outbox pattern with Herald.
//!
//! An application must change its database *and* publish a message, and a crash must
//! never leave one done without the other. It cannot do both atomically (the broker
//! is not in its database), so it writes the business row and an **outbox** row in
//! one SQLite transaction. A separate **relay** publishes outbox rows to a Herald
//! queue, with the row id as the message's dedup `id`, and deletes a row only after
//! the broker acknowledged it (with `--fsync always`: it is on disk). A relay killed
//! between the acknowledgement and the delete publishes the row again on restart;
//! the broker's dedup window drops the repeat. The **consumer** is idempotent: it
//! records each message id in its own database in the same transaction as the
//! message's effect, and skips ids it has seen, then acks.
//!
//! `outbox demo` runs all of it: a broker and a relay as child processes, which it
//! kills with SIGKILL at random moments and restarts, the application and the
//! consumer as threads. At the end it checks that every order's effect was applied
//! exactly once and that the outbox is empty.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use herald_core::wire::msg::*;
use herald_core::Payload;
use herald_mio::client::Client;
use herald_mio::server::{serve, ServerConfig};
use rusqlite::{params, Connection};
use serde_json::json;

/// The queue the relay publishes to.
const QUEUE: &str = "orders";

#[derive(Parser)]
#[command(about = "The outbox pattern with Herald and SQLite")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the application, relay, broker and consumer, killing the relay and the
    /// broker at random; check every order was applied exactly once.
    Demo {
        /// Orders the application writes.
        #[arg(long, default_value_t = 500)]
        orders: u64,
        /// SIGKILLs to deal out (relay and broker, at random).
        #[arg(long, default_value_t = 10)]
        kills: u32,
        /// Seed for when and what to kill (default: the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Working directory (default: a fresh one under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A Herald broker in this process (fsync always).
    Broker {
        /// Where its write-ahead log lives.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where it listens.
        #[arg(long)]
        addr: String,
    },
    /// The relay: publish outbox rows, delete each once acknowledged.
    Relay {
        /// The application's database.
        #[arg(long)]
        db: PathBuf,
        /// The broker.
        #[arg(long)]
        addr: String,
        /// Stop when the outbox is empty (default: run until killed).
        #[arg(long)]
        until_empty: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Demo {
            orders,
            kills,
            seed,
            dir,
        } => demo(orders, kills, seed, dir),
        Cmd::Broker { data_dir, addr } => broker(data_dir, &addr),
        Cmd::Relay {
            db,
            addr,
            until_empty,
        } => relay(&db, &addr, until_empty),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn broker(data_dir: PathBuf, addr: &str) -> Result<(), String> {
    let config = ServerConfig {
        addr: addr.parse().map_err(|e| format!("--addr {addr}: {e}"))?,
        data_dir,
        kafka: None,
        ..ServerConfig::default()
    };
    serve(config, |_| {})
}

/// Opens a SQLite database shared between processes (WAL mode, waits on locks).
fn open(db: &Path) -> Result<Connection, String> {
    let conn = Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))
        .and_then(|_| conn.pragma_update(None, "journal_mode", "wal"))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// A connection to the broker that reconnects (with backoff) whenever it breaks, so
/// its users simply retry their request.
struct Broker {
    addr: String,
    client: Option<Client>,
}

impl Broker {
    fn new(addr: &str) -> Broker {
        Broker {
            addr: addr.to_owned(),
            client: None,
        }
    }

    /// Sends `payload` until some answer comes back (an error reply is an answer).
    fn call(&mut self, payload: &Payload) -> Result<Payload, ErrorBody> {
        let mut backoff_ms = 10;
        loop {
            if self.client.is_none() {
                self.client = Client::connect(&self.addr).ok();
                if let Some(c) = &self.client {
                    let _ = c.set_timeout(Some(Duration::from_secs(5)));
                }
            }
            if let Some(client) = &mut self.client {
                match client.call(payload.clone()) {
                    Ok(reply) => return reply,
                    Err(_) => self.client = None,
                }
            }
            thread::sleep(Duration::from_millis(backoff_ms));
            backoff_ms = (backoff_ms * 2).min(500);
        }
    }
}

fn relay(db: &Path, addr: &str, until_empty: bool) -> Result<(), String> {
    let conn = open(db)?;
    let mut broker = Broker::new(addr);
    loop {
        let rows: Vec<(i64, String)> = {
            let mut select = conn
                .prepare("SELECT id, payload FROM outbox ORDER BY id LIMIT 100")
                .map_err(|e| e.to_string())?;
            let rows = select
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
        };
        if rows.is_empty() {
            if until_empty {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        for (id, payload) in rows {
            let enqueue = Payload::Enqueue(Enqueue {
                queue: QUEUE.into(),
                msg: serde_json::from_str(&payload).map_err(|e| e.to_string())?,
                id: Some(format!("outbox-{id}")),
                ..Default::default()
            });
            match broker.call(&enqueue) {
                // Acknowledged (or a repeat the broker recognised): now, and only now,
                // the row may go.
                Ok(Payload::EnqueueOk(_)) => {
                    conn.execute("DELETE FROM outbox WHERE id = ?1", params![id])
                        .map_err(|e| e.to_string())?;
                }
                Ok(other) => return Err(format!("enqueue answered {other:?}")),
                Err(e) if e.is(ErrorCode::TemporarilyUnavailable) => {
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
                Err(e) => return Err(format!("enqueue refused: {} {}", e.code, e.text)),
            }
        }
    }
}

/// The application: each order is a business row and an outbox row, in one
/// transaction.
fn application(db: &Path, orders: u64, pace: Duration) -> Result<(), String> {
    let mut conn = open(db)?;
    for order in 0..orders as i64 {
        let amount = (order * 7919) % 1000;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO orders (id, amount) VALUES (?1, ?2)",
            params![order, amount],
        )
        .map_err(|e| e.to_string())?;
        let payload = json!({"order": order, "amount": amount}).to_string();
        tx.execute("INSERT INTO outbox (payload) VALUES (?1)", params![payload])
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        thread::sleep(pace);
    }
    Ok(())
}

/// What the consumer did.
#[derive(Default)]
struct Consumed {
    /// Deliveries whose effect was applied.
    applied: AtomicU64,
    /// Deliveries skipped because their id was processed before.
    skipped: AtomicU64,
}

/// The idempotent consumer: the message id goes into `processed` in the same
/// transaction as the effect; a delivery whose id is there is only acked.
fn consumer(db: &Path, addr: &str, stats: &Consumed, stop: &AtomicBool) -> Result<(), String> {
    let mut conn = open(db)?;
    let mut broker = Broker::new(addr);
    while !stop.load(Ordering::Relaxed) {
        let dequeue = Payload::Dequeue(Dequeue {
            queue: QUEUE.into(),
            max: Some(50),
            visibility_ms: Some(1_000),
            wait_ms: Some(200),
        });
        let msgs = match broker.call(&dequeue) {
            Ok(Payload::DequeueOk(ok)) => ok.msgs,
            other => return Err(format!("dequeue answered {other:?}")),
        };
        for d in msgs {
            let msg = d.msg.to_value();
            let order = msg["order"].as_i64().ok_or("message without an order")?;
            let amount = msg["amount"].as_i64().ok_or("message without an amount")?;
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let first_time = tx
                .execute(
                    "INSERT OR IGNORE INTO processed (id) VALUES (?1)",
                    params![d.id],
                )
                .map_err(|e| e.to_string())?
                == 1;
            if first_time {
                tx.execute(
                    "INSERT INTO applied (order_id, amount, times) VALUES (?1, ?2, 1)
                     ON CONFLICT (order_id) DO UPDATE SET times = times + 1",
                    params![order, amount],
                )
                .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())?;
            let counter = if first_time {
                &stats.applied
            } else {
                &stats.skipped
            };
            let seen = counter.fetch_add(1, Ordering::Relaxed);
            if first_time && seen % 20 == 19 {
                // Play a consumer that crashed after its commit, before its ack: the
                // message comes again after the visibility timeout.
                continue;
            }
            let ack = Payload::Ack(Receipt {
                queue: QUEUE.into(),
                receipt: d.receipt,
                delay_ms: None,
                visibility_ms: None,
            });
            // A stale receipt (the broker restarted, or the delivery timed out) is
            // fine: the message comes again and is skipped then.
            let _ = broker.call(&ack);
        }
    }
    Ok(())
}

/// A child process of this program, restartable, killed with SIGKILL.
struct Worker {
    args: Vec<String>,
    child: Child,
}

impl Worker {
    fn spawn(args: Vec<String>) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Worker { args, child })
    }

    fn kill9_and_restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Worker::spawn(std::mem::take(&mut self.args))?;
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody is using now (the broker binds it at every restart).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn demo(orders: u64, kills: u32, seed: Option<u64>, dir: Option<PathBuf>) -> Result<(), String> {
    let started = Instant::now();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("herald-outbox-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (app_db, consumer_db) = (dir.join("app.db"), dir.join("consumer.db"));
    open(&app_db)?
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
             CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL);",
        )
        .map_err(|e| e.to_string())?;
    open(&consumer_db)?
        .execute_batch(
            "CREATE TABLE processed (id TEXT PRIMARY KEY);
             CREATE TABLE applied (order_id INTEGER PRIMARY KEY, amount INTEGER NOT NULL,
                                   times INTEGER NOT NULL);",
        )
        .map_err(|e| e.to_string())?;

    let addr = format!("127.0.0.1:{}", free_port()?);
    let data_dir = dir.join("herald-data").display().to_string();
    let mut broker_process = Worker::spawn(vec![
        "broker".into(),
        "--data-dir".into(),
        data_dir,
        "--addr".into(),
        addr.clone(),
    ])?;
    // The relay's retries after a crash must fall inside the dedup window.
    let create = Payload::CreateQueue(CreateQueue {
        queue: QUEUE.into(),
        dedup_window_ms: Some(3_600_000),
        ..CreateQueue::default()
    });
    Broker::new(&addr)
        .call(&create)
        .map_err(|e| format!("create_queue: {}", e.text))?;
    let relay_args = |until_empty: bool| {
        let mut args = vec![
            "relay".to_owned(),
            "--db".into(),
            app_db.display().to_string(),
            "--addr".into(),
            addr.clone(),
        ];
        if until_empty {
            args.push("--until-empty".into());
        }
        args
    };
    let mut relay_process = Worker::spawn(relay_args(false))?;

    let stats = Arc::new(Consumed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let (db, addr, stats, stop) = (
            consumer_db.clone(),
            addr.clone(),
            stats.clone(),
            stop.clone(),
        );
        thread::spawn(move || consumer(&db, &addr, &stats, &stop))
    };
    let app_thread = {
        let db = app_db.clone();
        thread::spawn(move || application(&db, orders, Duration::from_millis(2)))
    };

    // Chaos: SIGKILL the relay or the broker at random moments while orders flow.
    let mut rng = seed.unwrap_or_else(|| started.elapsed().as_nanos() as u64 | 1);
    eprintln!(
        "outbox demo: {orders} orders, {kills} kills, seed {rng}, in {}",
        dir.display()
    );
    let mut next = || {
        // xorshift64: enough to pick moments and victims.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut relay_kills, mut broker_kills) = (0, 0);
    for _ in 0..kills {
        thread::sleep(Duration::from_millis(50 + next() % 250));
        if next() % 2 == 0 {
            relay_process.kill9_and_restart()?;
            relay_kills += 1;
        } else {
            broker_process.kill9_and_restart()?;
            broker_kills += 1;
        }
    }
    app_thread.join().map_err(|_| "application panicked")??;
    // Let the relay finish the outbox, then wait for the consumer to catch up.
    drop(relay_process);
    let status = Worker::spawn(relay_args(true))?
        .child
        .wait()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the final relay failed: {status}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.applied.load(Ordering::Relaxed) < orders && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    consumer_thread.join().map_err(|_| "consumer panicked")??;
    drop(broker_process);

    // Check: every order applied exactly once, nothing left in the outbox.
    let db = open(&consumer_db)?;
    let count = |sql: &str, conn: &Connection| -> Result<u64, String> {
        let n: i64 = conn
            .query_row(sql, [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        Ok(n as u64)
    };
    let applied = count("SELECT COUNT(*) FROM applied", &db)?;
    let twice = count("SELECT COUNT(*) FROM applied WHERE times != 1", &db)?;
    let wrong = count(
        "SELECT COUNT(*) FROM applied WHERE amount != (order_id * 7919) % 1000",
        &db,
    )?;
    let left = count("SELECT COUNT(*) FROM outbox", &open(&app_db)?)?;
    println!(
        "orders {orders}; applied exactly once {}; applied more than once {twice}; \
         redeliveries skipped by the consumer {}; left in outbox {left}; \
         relay kills {relay_kills}; broker kills {broker_kills}; {:.1} s",
        applied - twice,
        stats.skipped.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    if applied != orders || twice != 0 || wrong != 0 || left != 0 {
        return Err(format!(
            "FAILED: {applied} of {orders} orders applied, {twice} more than once, \
             {wrong} with a wrong amount, {left} left in the outbox"
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
