//! `herald serve` as a real process on an ephemeral loopback port. Every test bounds
//! its time and stops its servers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::wire::msg::*;
use herald_core::Payload;
use herald_mio::client::Client;
use serde_json::json;

#[allow(dead_code)] // each test binary uses a part of it
mod common;

struct Server {
    child: Child,
    addr: String,
    /// The metrics listener's address (`none` without `--metrics-addr`).
    metrics: String,
    /// Every line it wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    start_at("127.0.0.1:0", dir, extra)
}

/// `herald serve` listening on `addr`, once it accepts connections.
fn start_at(addr: &str, dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--addr", addr, "serve", "--log-level", "info", "--data-dir"])
        .arg(dir)
        .args(extra)
        .args(if extra.contains(&"--kafka-addr") {
            &[][..]
        } else {
            &["--kafka-addr", "none"][..]
        })
        .args(if extra.contains(&"--fsync") {
            &[][..]
        } else {
            &["--fsync", "always"][..]
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut line = String::new();
    let at = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        log.lock().unwrap().push(line.trim_end().to_owned());
        if let Some(at) = common::listening(&line) {
            break at;
        }
    };
    // Keep draining the server's log so it never blocks on a full pipe (the first
    // 10,000 lines are kept).
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut kept = kept.lock().unwrap();
            if kept.len() < 10_000 {
                kept.push(line);
            }
        }
    });
    Server {
        child,
        addr: at.addr,
        metrics: at.metrics,
        log,
    }
}

impl Server {
    fn client(&self) -> Client {
        let c = Client::connect(&self.addr).unwrap();
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(reply: std::io::Result<Result<Payload, ErrorBody>>) -> Payload {
    match reply.unwrap() {
        Ok(p) => p,
        Err(e) => panic!("error {}: {}", e.code, e.text),
    }
}

fn create_queue(c: &mut Client, queue: &str, visibility_ms: u64) {
    let q = CreateQueue {
        queue: queue.into(),
        visibility_ms: Some(visibility_ms),
        ..CreateQueue::default()
    };
    ok(c.call(Payload::CreateQueue(q)));
}

fn enqueue(queue: &str, id: &str) -> Payload {
    Payload::Enqueue(Enqueue {
        queue: queue.into(),
        msg: json!(id).into(),
        id: Some(id.into()),
        delay_ms: None,
        ttl_ms: None,
        ..Default::default()
    })
}

fn dequeue(c: &mut Client, queue: &str, max: usize, wait_ms: u64) -> Vec<Delivery> {
    let d = Dequeue {
        queue: queue.into(),
        max: Some(max),
        visibility_ms: None,
        wait_ms: Some(wait_ms),
    };
    match ok(c.call(Payload::Dequeue(d))) {
        Payload::DequeueOk(r) => r.msgs,
        other => panic!("{other:?}"),
    }
}

fn ack(queue: &str, receipt: &str) -> Payload {
    Payload::Ack(Receipt {
        queue: queue.into(),
        receipt: receipt.into(),
        delay_ms: None,
        visibility_ms: None,
    })
}

/// Takes every message in the queue, acking each; returns their ids.
fn drain(c: &mut Client, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = dequeue(c, queue, 100, 0);
        if got.is_empty() {
            return ids;
        }
        for d in got {
            ok(c.call(ack(queue, &d.receipt)));
            ids.push(d.id);
        }
    }
}

#[test]
fn state_survives_a_restart_and_new_clients_never_get_old_replies() {
    let dir = data_dir("restart");
    let server = start(&dir, &[]);
    let mut c = server.client();
    create_queue(&mut c, "q", 60_000);
    ok(c.call(enqueue("q", "a")));
    ok(c.call(enqueue("q", "b")));
    let held = dequeue(&mut c, "q", 1, 0);
    drop(c);
    drop(server); // SIGKILL
    let server = start(&dir, &[]);
    // A new connection starts its msg_ids at 1 again: it must get its own replies.
    let mut c = server.client();
    assert_eq!(
        ok(c.call(ack("q", &held[0].receipt))),
        Payload::AckOk,
        "receipts outlive restarts"
    );
    assert_eq!(drain(&mut c, "q"), ["b"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn many_clients_publish_and_consume_concurrently() {
    let dir = data_dir("concurrent");
    let server = start(&dir, &[]);
    create_queue(&mut server.client(), "work", 5_000);
    let (producers, per_producer) = (6, 300);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for p in 0..producers {
            let (mut c, acked) = (server.client(), acked.clone());
            s.spawn(move || {
                for i in 0..per_producer {
                    let id = format!("p{p}-{i}");
                    if let Payload::EnqueueOk(r) = ok(c.call(enqueue("work", &id))) {
                        assert!(!r.duplicate);
                        acked.lock().unwrap().insert(id);
                    }
                }
            });
        }
        for _ in 0..3 {
            let (mut c, delivered, done) = (server.client(), delivered.clone(), done.clone());
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    for d in dequeue(&mut c, "work", 20, 100) {
                        ok(c.call(ack("work", &d.receipt)));
                        delivered.lock().unwrap().push(d.id);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while delivered.lock().unwrap().len() < producers * per_producer
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
    });
    let acked = acked.lock().unwrap();
    let delivered: BTreeSet<String> = delivered.lock().unwrap().iter().cloned().collect();
    assert_eq!(acked.len(), producers * per_producer);
    assert!(
        acked.is_subset(&delivered),
        "every acknowledged message is delivered"
    );
    assert!(delivered.is_subset(&acked), "nothing is invented");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn acknowledged_messages_survive_kill_9_under_load() {
    kill_9_rounds("crash", &[]);
}

/// Compactions every few KB: kills land while snapshots are being written.
#[test]
fn acknowledged_messages_survive_kill_9_during_compactions() {
    kill_9_rounds("crash-compacting", &["--compact-after-bytes", "20000"]);
}

/// Four rounds of load (3 producers, a consumer holding deliveries) each ended by
/// `kill -9`; then every acknowledged enqueue must be there.
fn kill_9_rounds(name: &str, flags: &[&str]) {
    let dir = data_dir(name);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut in_flight_before_crash = 0;
    for round in 0..4 {
        let server = start(&dir, flags);
        if round == 0 {
            create_queue(&mut server.client(), "q", 1_000);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let round_acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let (mut c, stop, round_acked) =
                    (server.client(), stop.clone(), round_acked.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let id = format!("r{round}-p{p}-{i}");
                        // A reply means durable; a connection error means the server died.
                        match c.call(enqueue("q", &id)) {
                            Ok(Ok(_)) => round_acked.lock().unwrap().push(id),
                            _ => return,
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Hold some deliveries unacked across the crash: they must come back.
        let mut consumer = server.client();
        std::thread::sleep(Duration::from_millis(150));
        in_flight_before_crash += dequeue(&mut consumer, "q", 5, 0).len();
        std::thread::sleep(Duration::from_millis(150));
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for p in producers {
            p.join().unwrap();
        }
        let got = round_acked.lock().unwrap().clone();
        assert!(!got.is_empty(), "round {round}: the load did run");
        acked.extend(got);
    }
    assert!(in_flight_before_crash > 0);
    let snapshotted = std::fs::read_dir(&dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("snapshot-")
    });
    assert_eq!(
        snapshotted,
        !flags.is_empty(),
        "compactions ran only when asked for"
    );
    let server = start(&dir, flags);
    let mut c = server.client();
    std::thread::sleep(Duration::from_millis(1_100)); // visibility timeouts of held messages end
    let recovered: BTreeSet<String> = drain(&mut c, "q").into_iter().collect();
    let lost: Vec<&String> = acked.difference(&recovered).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "crash test {name}: {} acknowledged enqueues over 4 kill -9 rounds, 0 lost",
        acked.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_record_recovers_to_the_last_whole_one() {
    let dir = data_dir("torn");
    let server = start(&dir, &[]);
    let mut c = server.client();
    create_queue(&mut c, "q", 60_000);
    for id in ["a", "b", "c"] {
        ok(c.call(enqueue("q", id)));
    }
    server.kill9();
    let wal = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let server = start(&dir, &[]);
    let mut c = server.client();
    assert_eq!(
        drain(&mut c, "q"),
        ["a", "b"],
        "the cut record (c) is gone, the rest is intact"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_long_lines_and_abrupt_disconnects_do_not_disturb_others() {
    let dir = data_dir("garbage");
    let server = start(&dir, &["--max-line-bytes", "1024"]);
    let mut good = server.client();
    create_queue(&mut good, "q", 60_000);
    let mut bad = TcpStream::connect(&server.addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"not json\n").unwrap();
    bad.write_all(format!("{{\"body\":\"{}\"}}\n", "x".repeat(4096)).as_bytes())
        .unwrap();
    bad.write_all(b"{\"body\":{\"type\":\"frob\",\"msg_id\":1}}\n")
        .unwrap();
    let mut replies = BufReader::new(bad.try_clone().unwrap());
    let mut errors = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        errors.push(v["body"]["code"].as_u64().unwrap());
    }
    assert_eq!(
        errors,
        [12, 12, 10],
        "bad lines get error replies and the connection lives"
    );
    // Half a line, then gone.
    let mut abrupt = TcpStream::connect(&server.addr).unwrap();
    abrupt.write_all(b"{\"body\":{\"type\":\"enq").unwrap();
    drop(abrupt);
    for i in 0..10 {
        ok(good.call(enqueue("q", &format!("m{i}"))));
    }
    assert_eq!(drain(&mut good, "q").len(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_client_that_does_not_read_is_throttled_and_others_are_served() {
    let dir = data_dir("slow");
    let server = start(&dir, &["--max-write-buffer-bytes", "65536"]);
    let mut good = server.client();
    create_queue(&mut good, "q", 60_000);
    // Pipeline many requests without reading a single reply.
    let mut slow = Client::connect(&server.addr).unwrap();
    let requests = 50_000;
    let writer = std::thread::spawn(move || {
        for _ in 0..requests {
            slow.send(Payload::Stats(QueueName { queue: "q".into() }))
                .unwrap();
        }
        slow.flush().unwrap();
        slow
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    ok(good.call(enqueue("q", "still-served")));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "another client is served meanwhile"
    );
    // Once the slow client reads, every reply arrives, in order.
    let mut slow = writer.join().unwrap();
    slow.set_timeout(Some(Duration::from_secs(20))).unwrap();
    for expected in 1..=requests as u64 {
        let (in_reply_to, reply) = slow.recv().unwrap();
        assert_eq!(in_reply_to, Some(expected));
        assert!(reply.is_ok());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_shuts_down_cleanly_and_every_log_line_has_a_utc_time_and_the_node() {
    let dir = data_dir("sigterm");
    let mut server = start(&dir, &[]);
    ok(server.client().call(Payload::ListQueues));
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code:?}");
    std::thread::sleep(Duration::from_millis(100)); // the log's last lines are read
    let log = server.log.lock().unwrap().clone();
    assert!(log
        .iter()
        .any(|l| l.ends_with(" event=shutdown clean=true")));
    for line in &log {
        // ts=2026-12-03T12:52:38.123Z node=herald level=info event=...
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        let ts = words[0]
            .strip_prefix("ts=")
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(ts.len(), 24, "not RFC 3339 UTC with ms: {line}");
        let bytes = ts.as_bytes();
        let digits = [0..4, 5..7, 8..10, 11..13, 14..16, 17..19, 20..23];
        assert!(digits
            .into_iter()
            .flatten()
            .all(|i| bytes[i].is_ascii_digit()));
        assert_eq!(
            [bytes[4], bytes[7], bytes[10], bytes[13], bytes[16], bytes[19], bytes[23]],
            *b"--T::.Z",
            "{line}"
        );
        assert_eq!(words[1], "node=herald", "{line}");
        assert!(words[2].starts_with("level="), "{line}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idle_connections_are_closed() {
    let dir = data_dir("idle");
    let server = start(&dir, &["--idle-timeout-ms", "300"]);
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the server closes an idle connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_bench_produces_and_consumes_against_a_live_server() {
    use herald_mio::bench::{report, run, BenchConfig, Target};
    let dir = data_dir("bench");
    let server = start(&dir, &["--fsync", "never"]);
    for (target, queue) in [(Target::Herald, "b"), (Target::HeraldIdempotent, "bi")] {
        let config = BenchConfig {
            addr: server.addr.clone(),
            target,
            connections: 2,
            pipeline: 4,
            size: 32,
            duration: Duration::from_millis(300),
            queue: queue.into(),
            max_depth: 1_000_000,
        };
        let results = run(&config).unwrap();
        let (produced, consumed) = (&results[0], &results[1]);
        assert!(
            produced.ops > 0 && consumed.ops > 0,
            "{}",
            report(&config, &results)
        );
        assert!(
            consumed.ops <= produced.ops,
            "cannot consume more than was produced"
        );
        assert_eq!(
            produced.latencies_us.len() as u64,
            produced.ops,
            "one latency per enqueue"
        );
        let mut c = server.client();
        let stats = Payload::Stats(QueueName {
            queue: queue.into(),
        });
        let Payload::StatsOk(stats) = ok(c.call(stats)) else {
            panic!()
        };
        assert_eq!(stats.acked, consumed.ops);
        assert_eq!(
            stats.enqueued, produced.ops,
            "{target:?}: no write refused or doubled"
        );
    }
    // A keyed log: sends only, each landing at the next offset.
    let config = BenchConfig {
        addr: server.addr.clone(),
        target: Target::HeraldLog,
        connections: 2,
        pipeline: 4,
        size: 32,
        duration: Duration::from_millis(300),
        queue: "log".into(),
        max_depth: 1_000,
    };
    let results = run(&config).unwrap();
    assert_eq!(results.len(), 1, "a log has no consume phase");
    let sent = results[0].ops;
    assert!(sent > 0);
    let mut c = server.client();
    let Payload::SendOk(next) = ok(c.call(Payload::Send(Send {
        key: "log".into(),
        msg: json!("last").into(),
        producer: None,
        epoch: None,
        seq: None,
    }))) else {
        panic!()
    };
    assert_eq!(next.offset, sent, "every acknowledged send took one offset");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compaction_keeps_disk_bounded_and_state_intact() {
    let dir = data_dir("compact");
    // Small bounded caches (reply cache, dedup window), so the live state is small and
    // disk use is seen to track it rather than history.
    let flags = [
        "--compact-after-bytes",
        "20000",
        "--dedup-capacity",
        "100",
        "--queue-dedup-window-ms",
        "200",
    ];
    let server = start(&dir, &flags);
    let mut c = server.client();
    create_queue(&mut c, "q", 60_000);
    let disk = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let snapshots = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("snapshot-") && name.ends_with(".bin")
            })
            .count()
    };
    let mut peak = 0;
    for round in 0..40 {
        for i in 0..50 {
            let msg = json!("x".repeat(1_000)).into();
            let e = Enqueue {
                queue: "q".into(),
                msg,
                id: Some(format!("r{round}-{i}")),
                delay_ms: None,
                ttl_ms: None,
                ..Default::default()
            };
            ok(c.call(Payload::Enqueue(e)));
        }
        assert_eq!(drain(&mut c, "q").len(), 50);
        peak = peak.max(disk(&dir));
        // A background compaction puts the new snapshot in place, then deletes the old.
        assert!(snapshots(&dir) <= 2, "old snapshots are deleted");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while snapshots(&dir) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(snapshots(&dir), 1, "one snapshot once compaction is done");
    // 2,000 messages of 1 KB through: over 2 MB of log without compaction. With it,
    // the directory holds one snapshot of the live state (at most 50 messages and the
    // small caches) and at most about twice that in log, whatever the history.
    assert!(peak < 500_000, "peak disk {peak} bytes");
    let newest_segment = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .strip_prefix("wal-")?
                .get(..10)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    assert!(
        newest_segment >= 4,
        "compaction ran several times (segment {newest_segment})"
    );
    ok(c.call(enqueue("q", "kept")));
    let held = dequeue(&mut c, "q", 1, 0);
    drop(c);
    server.kill9();
    let server = start(&dir, &flags);
    let mut c = server.client();
    assert_eq!(
        ok(c.call(ack("q", &held[0].receipt))),
        Payload::AckOk,
        "state restored from the snapshot"
    );
    let Payload::StatsOk(stats) = ok(c.call(Payload::Stats(QueueName { queue: "q".into() })))
    else {
        panic!()
    };
    assert_eq!(
        (stats.depth, stats.enqueued, stats.acked),
        (0, 2_001, 2_001)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_prepared_transaction_survives_kill_9_then_commits_once_or_aborts() {
    let dir = data_dir("two-phase");
    let server = start(&dir, &[]);
    let mut c = server.client();
    create_queue(&mut c, "in", 60_000);
    create_queue(&mut c, "out", 60_000);
    ok(c.call(enqueue("in", "job-1")));
    ok(c.call(enqueue("in", "job-2")));
    let held = dequeue(&mut c, "in", 2, 0);
    let prepare = |txid: &str, receipt: &str, result: &str| {
        Payload::Prepare(Prepare {
            txid: txid.into(),
            ops: vec![ack("in", receipt), enqueue("out", result)],
        })
    };
    let txid = |t: &str| TxnId { txid: t.into() };
    assert_eq!(
        ok(c.call(prepare("t1", &held[0].receipt, "result-1"))),
        Payload::PrepareOk
    );
    assert_eq!(
        ok(c.call(prepare("t2", &held[1].receipt, "result-2"))),
        Payload::PrepareOk
    );
    assert!(
        dequeue(&mut c, "out", 10, 0).is_empty(),
        "prepared is invisible"
    );
    drop(c);
    server.kill9();

    let server = start(&dir, &[]);
    let mut c = server.client();
    let Payload::ListPreparedOk(list) = ok(c.call(Payload::ListPrepared)) else {
        panic!()
    };
    let txids: Vec<&str> = list.prepared.iter().map(|p| p.txid.as_str()).collect();
    assert_eq!(txids, ["t1", "t2"], "prepared transactions survive kill -9");
    let committed = ok(c.call(Payload::CommitTxn(txid("t1"))));
    assert!(matches!(committed, Payload::CommitTxnOk(_)));
    assert_eq!(
        ok(c.call(Payload::AbortTxn(txid("t2")))),
        Payload::AbortTxnOk
    );
    drop(c);
    server.kill9();

    let server = start(&dir, &[]);
    let mut c = server.client();
    // The coordinator retries its commit after the crash: same answer, not redone.
    assert_eq!(ok(c.call(Payload::CommitTxn(txid("t1")))), committed);
    assert_eq!(
        drain(&mut c, "out"),
        ["result-1"],
        "committed once, aborted never"
    );
    let Payload::ListPreparedOk(list) = ok(c.call(Payload::ListPrepared)) else {
        panic!()
    };
    assert!(list.prepared.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_long_poll_from_a_closed_connection_takes_no_message() {
    let dir = data_dir("long-poll-closed");
    let server = start(&dir, &[]);
    let mut c = server.client();
    create_queue(&mut c, "q", 60_000);
    // A consumer parks a 10 s dequeue, then goes away before anything arrives.
    let mut gone = server.client();
    let wait = Dequeue {
        queue: "q".into(),
        max: Some(1),
        visibility_ms: None,
        wait_ms: Some(10_000),
    };
    gone.send(Payload::Dequeue(wait)).unwrap();
    gone.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    ok(c.call(enqueue("q", "m")));
    // Without cancelling the closed connection's wait, the message would be handed
    // to it and stay invisible for 60 s.
    let got = dequeue(&mut c, "q", 1, 0);
    assert_eq!(got.len(), 1, "the message is still visible");
    assert_eq!(
        got[0].deliveries, 1,
        "nobody else was counted as receiving it"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_idempotent_producer_is_recognised_after_kill_9() {
    let dir = data_dir("producer");
    let server = start(&dir, &[]);
    let mut c = server.client();
    ok(c.call(Payload::CreateTopic(CreateTopic {
        topic: "t".into(),
        partitions: 1,
    })));
    let Payload::InitProducerOk(p) = ok(c.call(Payload::InitProducer(InitProducer {
        name: Some("relay".into()),
    }))) else {
        panic!()
    };
    let publish = |seq: u64| {
        Payload::Publish(Publish {
            topic: "t".into(),
            msg: json!(seq).into(),
            producer: Some(p.producer),
            epoch: Some(p.epoch),
            seq: Some(seq),
            ..Default::default()
        })
    };
    let first = ok(c.call(publish(0)));
    drop(c);
    server.kill9();
    let server = start(&dir, &[]);
    let mut c = server.client();
    // The producer retries after the crash: recognised, same offset, not written again.
    let Payload::PublishOk(retried) = ok(c.call(publish(0))) else {
        panic!()
    };
    let Payload::PublishOk(first) = first else {
        panic!()
    };
    assert_eq!((retried.offset, retried.duplicate), (first.offset, true));
    let Payload::PublishOk(next) = ok(c.call(publish(1))) else {
        panic!()
    };
    assert_eq!(
        next.offset,
        first.offset + 1,
        "the log holds the first write once"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the `herald` command-line client against `server`; returns its stdout.
fn cli(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--addr", &server.addr])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herald {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_operator_finishes_prepared_transactions_from_the_cli() {
    let dir = data_dir("cli-2pc");
    let server = start(&dir, &[]);
    cli(&server, &["create-queue", "q"]);
    for txid in ["t1", "t2"] {
        let body = json!({"type": "prepare", "txid": txid,
                          "ops": [{"type": "enqueue", "queue": "q", "msg": txid}]});
        cli(&server, &["request", &body.to_string()]);
    }
    let listed = cli(&server, &["prepared"]);
    let txids: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(txids, ["t1", "t2"], "{listed}");
    assert!(listed.starts_with("t1\t1\t"), "{listed}");
    assert_eq!(
        cli(&server, &["commit-txn", "t1"]),
        "committed: 1 operations applied\n"
    );
    assert_eq!(cli(&server, &["abort-txn", "t2"]), "aborted\n");
    assert_eq!(cli(&server, &["prepared"]), "");
    let mut c = server.client();
    let got: Vec<serde_json::Value> = dequeue(&mut c, "q", 10, 0)
        .into_iter()
        .map(|d| d.msg.to_value())
        .collect();
    assert_eq!(got, [json!("t1")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Node `id` of a cluster whose nodes listen on `ports` (n1, n2, ...).
fn start_node(dir: &Path, id: &str, ports: &[u16]) -> Server {
    start_node_with(dir, id, ports, &[])
}

/// Node `id` as [`start_node`] makes it, with `extra` flags.
fn start_node_with(dir: &Path, id: &str, ports: &[u16], extra: &[&str]) -> Server {
    let i: usize = id[1..].parse().unwrap();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(j, port)| format!("n{}=127.0.0.1:{port}", j + 1))
        .collect();
    let addr = format!("127.0.0.1:{}", ports[i - 1]);
    let peers = peers.join(",");
    let mut flags = vec![
        "--node-id",
        id,
        "--peers",
        &peers,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    flags.extend_from_slice(extra);
    start_at(&addr, &dir.join(id), &flags)
}

/// The leader, once every live node agrees on one.
fn cluster_leader(nodes: &[Option<Server>]) -> usize {
    let live: Vec<&str> = nodes.iter().flatten().map(|n| n.addr.as_str()).collect();
    common::agreed_leader(&live, Duration::from_secs(15))
}

/// (key, message, offset, acknowledged after the leader was killed).
type AckedSend = (String, String, u64, bool);

#[test]
fn killing_the_leader_of_a_3_node_cluster_loses_no_acknowledged_send() {
    let dir = data_dir("cluster");
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut nodes: Vec<Option<Server>> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Some(start_node(&dir, id, &ports)))
        .collect();
    let leader = cluster_leader(&nodes);

    // Producers on every node (a follower forwards to the leader); a producer whose
    // node dies moves on to the next one.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<AckedSend>>> = Arc::default();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let (stop, killed, acked, addrs) =
                (stop.clone(), killed.clone(), acked.clone(), addrs.clone());
            std::thread::spawn(move || {
                let key = format!("k{p}");
                let mut node = p;
                let mut client = None;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let c = match &mut client {
                        Some(c) => c,
                        None => match Client::connect(&addrs[node]) {
                            Ok(c) => {
                                c.set_timeout(Some(Duration::from_secs(5))).unwrap();
                                client.insert(c)
                            }
                            Err(_) => {
                                node = (node + 1) % 3;
                                continue;
                            }
                        },
                    };
                    let msg = format!("p{p}-{i}");
                    i += 1;
                    let send = Send {
                        key: key.clone(),
                        msg: json!(msg).into(),
                        ..Default::default()
                    };
                    let after_kill = killed.load(Ordering::SeqCst);
                    match c.call(Payload::Send(send)) {
                        Ok(Ok(Payload::SendOk(ok))) => {
                            acked
                                .lock()
                                .unwrap()
                                .push((key.clone(), msg, ok.offset, after_kill))
                        }
                        Ok(Ok(other)) => panic!("send answered {other:?}"),
                        // 11 (no leader yet) or 0 (unknown): not acknowledged.
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(20)),
                        Err(_) => {
                            client = None;
                            node = (node + 1) % 3;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    nodes[leader].take().unwrap().kill9();
    killed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3_000));
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before = acked.iter().filter(|a| !a.3).count();
    let after = acked.len() - before;
    assert!(
        before > 0 && after > 0,
        "load ran before ({before}) and after ({after}) the kill"
    );

    // The old leader comes back and catches up; every acknowledged send is at its
    // offset, read through every node.
    nodes[leader] = Some(start_node(&dir, &format!("n{}", leader + 1), &ports));
    let new_leader = cluster_leader(&nodes);
    assert_ne!(new_leader, leader, "a new leader took over");
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        for p in 0..3 {
            let key = format!("k{p}");
            let mut log: Vec<(u64, String)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let from = log.last().map_or(0, |l| l.0 + 1);
                let poll = Poll {
                    offsets: [(key.clone(), from)].into(),
                    max: None,
                };
                match c.call(Payload::Poll(poll)).unwrap() {
                    Ok(Payload::PollOk(ok)) => {
                        let got = ok.msgs.get(&key).cloned().unwrap_or_default();
                        if got.is_empty() {
                            break;
                        }
                        log.extend(
                            got.into_iter()
                                .map(|(o, v)| (o, v.to_value().as_str().unwrap().to_owned())),
                        );
                    }
                    _ => {
                        assert!(Instant::now() < deadline, "polls refused for 10 s");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            let at: BTreeMap<u64, &str> = log.iter().map(|(o, v)| (*o, v.as_str())).collect();
            assert_eq!(at.len(), log.len(), "an offset read twice");
            for (k, msg, offset, _) in acked.iter().filter(|a| a.0 == key) {
                assert_eq!(
                    at.get(offset).copied(),
                    Some(msg.as_str()),
                    "acknowledged {k}@{offset} = {msg} lost (read through {})",
                    node.addr
                );
            }
        }
    }
    eprintln!("acknowledged sends: {before} before the leader was killed, {after} after");

    // The new leader's metrics say what happened: it leads, in a later term than the
    // first leader's, after at least two changes of leader (none to the first, the
    // first to it), with every acknowledged send committed.
    let (_, body) = http(
        &nodes[new_leader].as_ref().unwrap().metrics,
        "GET",
        "/metrics",
    );
    let m = parse_exposition(&body);
    let value = |key: &str| *m.get(key).unwrap_or_else(|| panic!("no {key} in\n{body}"));
    assert_eq!(value(r#"herald_raft_role{role="leader"}"#), 1.0);
    assert_eq!(value(r#"herald_raft_role{role="follower"}"#), 0.0);
    assert!(value("herald_raft_term") >= 2.0);
    assert!(value("herald_raft_leader_changes_total") >= 2.0);
    assert!(value("herald_raft_commit_index") >= acked.len() as f64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_serve_flag_exits_2_naming_it_before_touching_the_data_dir() {
    let dir = data_dir("bad-flags");
    let less = "must be less than election_timeout_ms";
    for (flags, named, reason) in [
        (
            &["--heartbeat-interval-ms", "600"][..],
            "--heartbeat-interval-ms",
            format!("{less} (500), not 600"),
        ),
        (
            &["--election-timeout-ms", "50"][..],
            "--heartbeat-interval-ms",
            format!("{less} (50), not 100"),
        ),
        (
            &["--queue-max-depth", "many"][..],
            "--queue-max-depth",
            "\"many\" is not a valid value".to_owned(),
        ),
        (
            &["--max-poll-messages", "0"][..],
            "--max-poll-messages",
            "must be at least 1".to_owned(),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--addr", "127.0.0.1:0", "serve", "--data-dir"])
            .arg(&dir)
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        let expected = format!("herald serve: {named}: {reason}");
        assert!(stderr.starts_with(&expected), "{flags:?}: {stderr}");
        assert!(!dir.exists(), "{flags:?} created the data dir");
    }
}

/// `method path` to the metrics listener at `addr`: the status line and the body.
fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: herald\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap(); // the server closes after it
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let length = (head.lines())
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length");
    assert_eq!(length.parse::<usize>().unwrap(), body.len());
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Parses the OpenMetrics text format, checking its syntax: every sample's family
/// declared by `# TYPE` first, names and labels well formed, values numbers, `# EOF`
/// last. Returns each series (`name{labels}` as written) and its value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut families = BTreeSet::new();
    let mut series = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = key.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            for pair in inner.unwrap_or_else(|| panic!("{line}")).split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(name_ok(k) && !v.contains('\n'), "{line}");
            }
        }
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "{line}: no # TYPE for {family}");
        assert!(
            series.insert(key.to_owned(), value).is_none(),
            "{line} twice"
        );
    }
    series
}

#[test]
fn metrics_scraped_under_load_show_the_counts_the_test_produced() {
    let dir = data_dir("metrics");
    let server = start(&dir, &["--metrics-addr", "127.0.0.1:0"]);
    create_queue(&mut server.client(), "jobs", 60_000);
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let mut c = server.client();
            std::thread::spawn(move || {
                for i in 0..250 {
                    ok(c.call(enqueue("jobs", &format!("{t}-{i}"))));
                }
            })
        })
        .collect();
    // Scrapes during the load parse too.
    let scraper = {
        let (done, metrics) = (done.clone(), server.metrics.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while !done.load(Ordering::Relaxed) || scrapes == 0 {
                let (status, body) = http(&metrics, "GET", "/metrics");
                assert_eq!(status, "HTTP/1.1 200 OK");
                parse_exposition(&body);
                scrapes += 1;
            }
            scrapes
        })
    };
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(scraper.join().unwrap() > 0);
    let mut c = server.client();
    let got = dequeue(&mut c, "jobs", 100, 0);
    assert_eq!(got.len(), 100);
    for d in &got[..40] {
        ok(c.call(ack("jobs", &d.receipt)));
    }
    let missing = Payload::Stats(QueueName {
        queue: "missing".into(),
    });
    let code = c.call(missing.clone()).unwrap().unwrap_err().code;
    for _ in 0..4 {
        assert_eq!(c.call(missing.clone()).unwrap().unwrap_err().code, code);
    }

    let (status, body) = http(&server.metrics, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let m = parse_exposition(&body);
    let value = |key: &str| *m.get(key).unwrap_or_else(|| panic!("no {key} in\n{body}"));
    let requests = |kind: &str, outcome: &str| {
        value(&format!(
            r#"herald_requests_total{{listener="json",type="{kind}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(requests("create_queue", "ok"), 1.0);
    assert_eq!(requests("enqueue", "ok"), 1000.0);
    assert_eq!(requests("dequeue", "ok"), 1.0);
    assert_eq!(requests("ack", "ok"), 40.0);
    assert_eq!(requests("stats", &format!("error_{code}")), 5.0);
    let enqueues = r#"herald_request_duration_seconds_count{listener="json",type="enqueue"}"#;
    assert_eq!(value(enqueues), 1000.0);
    let queue = |metric: &str| value(&format!(r#"{metric}{{queue="jobs"}}"#));
    let state = |s: &str| {
        value(&format!(
            r#"herald_queue_messages{{queue="jobs",state="{s}"}}"#
        ))
    };
    assert_eq!((state("ready"), state("in_flight")), (900.0, 60.0));
    assert_eq!(queue("herald_queue_enqueued_total"), 1000.0);
    assert_eq!(queue("herald_queue_acked_total"), 40.0);
    assert!(value("herald_wal_fsync_seconds_count") >= 1.0); // --fsync always
    assert!(value(r#"herald_received_bytes_total{listener="json"}"#) > 1000.0 * 40.0);
    assert!(value(r#"herald_sent_bytes_total{listener="json"}"#) > 0.0);
    assert_eq!(value(r#"herald_connections{listener="metrics"}"#), 1.0);
    assert!(
        !body.contains("herald_raft_term"),
        "a single node has no Raft"
    );

    let status = |method, path| http(&server.metrics, method, path).0;
    assert_eq!(status("GET", "/other"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status("POST", "/metrics"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `herald user ...` on `dir`: its exit code and output (stdout, then stderr).
fn herald_user(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn auth(c: &mut Client, user: &str, password: &str) -> Result<Payload, ErrorBody> {
    let auth = Auth {
        user: user.into(),
        password: password.into(),
    };
    c.call(Payload::Auth(auth)).unwrap()
}

#[test]
fn with_users_clients_authenticate_failures_back_off_and_a_removed_user_loses_access() {
    let dir = data_dir("users");
    let alice = [
        "add",
        "alice",
        "--password",
        "correct horse",
        "--allow",
        "admin *",
    ];
    let (code, out) = herald_user(&dir, &alice);
    assert_eq!((code, out.as_str()), (Some(0), "added user alice\n"));
    let eve = [
        "add",
        "eve",
        "--password",
        "12345678",
        "--allow",
        "delete *",
    ];
    let (code, out) = herald_user(&dir, &eve);
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = herald_user(&dir, &["add", "bob", "--password", "short"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("8 characters or more"), "{out}");
    let bob = [
        "add",
        "bob",
        "--password",
        "bobs password",
        "--allow",
        "read queue:a",
    ];
    herald_user(&dir, &bob);
    herald_user(&dir, &["add", "carol", "--password", "carols password"]);
    let listed = herald_user(&dir, &["list"]).1;
    let expected = "alice\tadmin *\nbob\tread queue:a\ncarol\t(no rules: may do nothing)\n";
    assert_eq!(listed, expected);

    let kafka = format!("127.0.0.1:{}", common::free_port());
    let server = start(
        &dir,
        &[
            "--max-connections-per-user",
            "2",
            "--kafka-addr",
            &kafka,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let mut c = server.client();
    let refused = c.call(Payload::ListQueues).unwrap().unwrap_err();
    assert_eq!(
        refused.code,
        ErrorCode::Unauthenticated.code(),
        "{}",
        refused.text
    );
    // Three wrong passwords are answered "wrong"; after the fourth, even the right one
    // must wait, then works.
    for _ in 0..4 {
        let e = auth(&mut c, "alice", "wrong password").unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthenticationFailed.code());
        assert_eq!(e.text, "wrong user or password");
    }
    let waiting = auth(&mut c, "alice", "correct horse").unwrap_err();
    assert_eq!(waiting.code, ErrorCode::AuthenticationFailed.code());
    assert!(
        waiting
            .text
            .starts_with("too many failed authentications from 127.0.0.1: try again in"),
        "{}",
        waiting.text
    );
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(
        auth(&mut c, "alice", "correct horse").unwrap(),
        Payload::AuthOk(AuthOk {
            user: "alice".into()
        })
    );
    ok(c.call(Payload::ListQueues));
    // Access control: bob may read queue a, nothing else.
    create_queue(&mut c, "a", 30_000);
    create_queue(&mut c, "b", 30_000);
    ok(c.call(enqueue("b", "m1")));
    let mut bob = server.client();
    auth(&mut bob, "bob", "bobs password").unwrap();
    assert!(dequeue(&mut bob, "a", 1, 0).is_empty());
    let b_receipt = dequeue(&mut c, "b", 1, 0)[0].receipt.clone();
    let dequeue_b = Dequeue {
        queue: "b".into(),
        max: None,
        visibility_ms: None,
        wait_ms: None,
    };
    let create_c = CreateQueue {
        queue: "c".into(),
        ..CreateQueue::default()
    };
    let refusals = [
        (Payload::Dequeue(dequeue_b), "read queue:b"),
        (ack("b", &b_receipt), "read queue:b"),
        (enqueue("a", "m2"), "write queue:a"),
        (Payload::CreateQueue(create_c), "admin queue:c"),
    ];
    for (request, needs) in refusals {
        let e = bob.call(request).unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAuthorized.code(), "{}", e.text);
        assert_eq!(e.text, format!("user \"bob\" may not {needs}"));
    }
    ok(c.call(ack("b", &b_receipt))); // bob's refused ack did not happen
    drop(bob);
    // The CLI logs in with --login.
    let listed = cli(
        &server,
        &[
            "--login",
            "bob",
            "--login-password",
            "bobs password",
            "queues",
        ],
    );
    assert_eq!(listed, "a\nb\n"); // names are listed to any user
                                  // Two connections per user: a third is refused.
    let mut second = server.client();
    auth(&mut second, "alice", "correct horse").unwrap();
    let mut third = server.client();
    let e = auth(&mut third, "alice", "correct horse").unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::TemporarilyUnavailable.code(),
        "{}",
        e.text
    );
    assert!(e.text.contains("--max-connections-per-user"), "{}", e.text);
    // Removed while connected: its next requests must authenticate again (the server
    // re-reads the file within about a second).
    assert_eq!(
        herald_user(&dir, &["remove", "alice"]).1,
        "removed user alice
"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.call(Payload::ListQueues).unwrap() {
            Err(e) if e.code == ErrorCode::Unauthenticated.code() => break,
            Ok(_) => assert!(Instant::now() < deadline, "alice still served after 10 s"),
            Err(e) => panic!("error {}: {}", e.code, e.text),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = auth(&mut c, "alice", "correct horse").unwrap_err();
    assert_eq!(gone.code, ErrorCode::AuthenticationFailed.code());
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains(" event=auth_failed ")),
        "{log:?}"
    );
    let denied = r#"user="bob" needs="read queue:b""#;
    let denied = |l: &&String| l.contains(" event=access_denied ") && l.contains(denied);
    assert!(log.iter().any(|l| denied(&l)), "{log:?}");
    // The metrics count what the log shows.
    let count = |l: &&String, needle: &str| l.contains(needle) as u32;
    let failed = log
        .iter()
        .map(|l| count(&l, " event=auth_failed "))
        .sum::<u32>();
    let (_, body) = http(&server.metrics, "GET", "/metrics");
    let series = parse_exposition(&body);
    let value = |name: &str| series.get(name).copied().unwrap_or(0.0);
    let plain = |outcome: &str| {
        value(&format!(
            r#"herald_authentications_total{{mechanism="plain",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(plain("failed"), f64::from(failed), "{body}");
    // Logged in: alice twice, bob once; refused unchecked while the address waited: once.
    assert!(plain("ok") >= 3.0 && plain("backoff") >= 1.0, "{body}");
    assert!(
        value(r#"herald_access_denied_total{listener="json"}"#) >= 1.0,
        "{body}"
    );
    assert!(
        !log.iter().any(|l| l.contains("correct horse")),
        "a password was logged"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Connects to `addr` as a peer with `hello`, then sends an append of a far later
/// term, as a leader would; true if the server closed the connection.
fn impostor(addr: &str, hello: &herald_mio::peers::Hello) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut bytes = serde_json::to_vec(hello).unwrap();
    bytes.push(b'\n');
    let append = RaftAppend {
        term: 1_000_000,
        prev_index: 0,
        prev_term: 0,
        entries: vec![],
        commit: 0,
        sent_at: herald_core::Time::ZERO,
    };
    let msg = herald_core::Message {
        src: hello.herald_peer.clone(),
        dest: String::new(),
        body: herald_core::wire::Body {
            payload: Payload::RaftAppend(append),
            msg_id: None,
            in_reply_to: None,
        },
    };
    herald_core::wire::encode(&msg, &mut bytes);
    stream.write_all(&bytes).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok() // Ok: the server closed it
}

fn term_of(node: &Server) -> u64 {
    match ok(node.client().call(Payload::Status)) {
        Payload::StatusOk(s) => s.term,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_process_without_the_cluster_secret_cannot_disturb_the_cluster() {
    use herald_mio::peer_auth::ClusterSecret;
    let dir = data_dir("secret");
    std::fs::create_dir_all(&dir).unwrap();
    let (ours, theirs) = (dir.join("secret"), dir.join("other-secret"));
    std::fs::write(&ours, "the test cluster's shared secret\n").unwrap();
    std::fs::write(&theirs, "a secret of some other cluster\n").unwrap();
    let secret_flag = ["--cluster-secret-file", ours.to_str().unwrap()];
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let start_all = |extra: &[&str]| -> Vec<Option<Server>> {
        (1..=3)
            .map(|i| Some(start_node_with(&dir, &format!("n{i}"), &ports, extra)))
            .collect()
    };
    let nodes = start_all(&secret_flag);
    let leader = cluster_leader(&nodes);
    let target = nodes[(leader + 1) % 3].as_ref().unwrap(); // a follower
    let (target_id, caller) = (
        format!("n{}", (leader + 1) % 3 + 1),
        format!("n{}", leader + 1),
    );
    let now_ms = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.unwrap().as_millis() as u64
    };
    let bare = herald_mio::peers::Hello {
        herald_peer: caller.clone(),
        to: None,
        at_ms: None,
        nonce: None,
        mac: None,
    };
    let forged = ClusterSecret::load(&theirs)
        .unwrap()
        .hello(&caller, &target_id, now_ms());
    for hello in [&bare, &forged] {
        assert!(
            impostor(&target.addr, hello),
            "an impostor's link stayed open"
        );
    }
    assert!(
        term_of(target) < 1_000_000,
        "the impostor's append was taken"
    );
    let log = target.log.lock().unwrap().clone();
    let refused: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(" event=peer_refused "))
        .collect();
    assert_eq!(refused.len(), 2, "{log:?}");
    assert!(refused[0].contains("no signature") && refused[1].contains("wrong signature"));
    // The cluster keeps serving, through every node.
    for node in nodes.iter().flatten() {
        let send = Send {
            key: "k".into(),
            msg: json!("v").into(),
            ..Default::default()
        };
        assert!(matches!(
            ok(node.client().call(Payload::Send(send))),
            Payload::SendOk(_)
        ));
    }
    assert_eq!(cluster_leader(&nodes), leader, "the leader changed");
    drop(nodes);

    // The same attack on the same cluster without a secret: the follower follows the
    // impostor's term. (What the secret prevents is real.)
    let nodes = start_all(&[]);
    let target = nodes[(leader + 1) % 3].as_ref().unwrap();
    impostor(&target.addr, &bare);
    let deadline = Instant::now() + Duration::from_secs(10);
    while term_of(target) < 1_000_000 {
        assert!(
            Instant::now() < deadline,
            "without a secret the impostor was not followed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
