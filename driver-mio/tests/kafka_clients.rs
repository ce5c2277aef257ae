//! Real Kafka clients against `herald serve` as a real process: kcat (librdkafka 2.0.2,
//! Debian's), kafka-python and confluent-kafka (a current librdkafka) from a venv in
//! `target/kafka-venv`, and raw bytes on the Kafka port. The Python halves live in
//! `tests/kafka/*.py`: each takes its parameters as arguments and prints a JSON summary.
//!
//! Nothing here is skipped: a missing kcat or python3 (with its venv module) fails the
//! test, saying how to install it (`.ci/run` does). Every wait is bounded, every
//! process is killed on drop, every data directory is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)] // each test binary uses a part of it
mod common;

use common::procs::{as_u64, kcat, python, run, spawn_script, summary_of, tail, Ran};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

// ---------------------------------------------------------------------------------
// Servers

/// A running `herald serve`; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    /// The JSON-lines listener.
    addr: String,
    /// The Kafka listener.
    kafka: String,
    /// Everything the server wrote on stderr so far.
    log: Arc<Mutex<String>>,
}

/// A test's data directory, removed when dropped (after the servers that use it, which
/// are declared after it), whether the test passed or not.
struct DataDir(PathBuf);

impl std::ops::Deref for DataDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn data_dir(name: &str) -> DataDir {
    let dir = std::env::temp_dir().join(format!("herald-kafka-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    DataDir(dir)
}

/// `herald serve` on ephemeral ports for both listeners.
fn start(dir: &Path, extra: &[&str]) -> Server {
    start_at("127.0.0.1:0", "127.0.0.1:0", dir, extra)
}

/// `herald serve` listening on `addr` and `kafka_addr`, once it has said so.
fn start_at(addr: &str, kafka_addr: &str, dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(HERALD)
        .args(["--addr", addr, "serve", "--log-level", "info", "--data-dir"])
        .arg(dir)
        .args(["--kafka-addr", kafka_addr])
        .args(if extra.contains(&"--fsync") {
            &[][..]
        } else {
            &["--fsync", "always"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    // Keeps draining the server's log (so it never blocks on a full pipe) into `log`.
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        while matches!(stderr.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
            bytes.clear();
            if let Some(at) = common::listening(&line) {
                let _ = tx.send((at.addr, at.kafka));
            }
            let mut log = sink.lock().unwrap();
            if log.len() > 4 << 20 {
                let cut = log.len() - (1 << 20);
                let cut = (cut..log.len()).find(|&i| log.is_char_boundary(i)).unwrap();
                log.drain(..cut);
            }
            log.push_str(&line);
            log.push('\n');
        }
    });
    let Ok((addr, kafka)) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "herald serve exited or did not start listening within 30 s; its stderr:\n{}",
            log.lock().unwrap()
        );
    };
    Server {
        child,
        addr,
        kafka,
        log,
    }
}

impl Server {
    /// The last `n` lines the server logged.
    fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The server's log lines that are not `level=info`.
    fn warnings(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        (log.lines())
            .filter(|l| !l.contains(" level=info "))
            .map(str::to_owned)
            .collect()
    }

    /// Its warnings (non-`info` lines) with their counts, connection ids left out, most
    /// frequent first: what to show when a client failed.
    fn warning_counts(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in self.warnings() {
            let words =
                (line.split(" ")).filter(|w| !w.starts_with("conn=") && !w.starts_with("ts="));
            *counts
                .entry(words.collect::<Vec<_>>().join(" "))
                .or_default() += 1;
        }
        let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
        counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let lines: Vec<String> = (counts.iter().take(20))
            .map(|(line, n)| format!("{n:>6} x {line}"))
            .collect();
        if lines.is_empty() {
            "(no warnings)".into()
        } else {
            lines.join("\n")
        }
    }

    /// The log from its first line that is not `level=info` on (at most `n` lines).
    fn log_from_first_warning(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let lines: Vec<&str> = (log.lines())
            .skip_while(|l| l.contains(" level=info "))
            .filter(|l| !l.trim_start().starts_with("at ")) // a backtrace's file lines
            .take(n)
            .collect();
        lines.join("\n")
    }

    /// `None` while the server runs.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (10 s at most) for a clean exit.
    fn sigterm(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            code.success(),
            "exit status {code:?}: {}",
            self.log_tail(20)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `herald` command-line client against the JSON-lines listener at `addr`.
fn cli(addr: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(HERALD);
    cmd.args(["--addr", addr]).args(args);
    run(&mut cmd, None, Duration::from_secs(30)).expect_ok(&format!("herald {args:?}"))
}

// ---------------------------------------------------------------------------------
// The clients

/// `kcat -L -J` through `bootstrap`, parsed.
fn metadata(bootstrap: &str, topic: Option<&str>) -> Value {
    let mut cmd = Command::new(kcat());
    cmd.args(["-b", bootstrap, "-L", "-J", "-m", "10"]);
    if let Some(t) = topic {
        cmd.args(["-t", t]);
    }
    let out = run(&mut cmd, None, Duration::from_secs(30)).expect_ok("kcat -L");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kcat -L -J: {e}: {out}"))
}

/// Produces `key:value` lines with `kcat -P -K:`.
fn kcat_produce(bootstrap: &str, topic: &str, lines: &[String]) -> Ran {
    let input = lines.join("\n") + "\n";
    let mut cmd = Command::new(kcat());
    cmd.args(["-b", bootstrap, "-P", "-K:", "-t", topic]);
    cmd.args(["-X", "linger.ms=5", "-X", "message.timeout.ms=30000"]);
    run(&mut cmd, Some(input.into_bytes()), Duration::from_secs(60))
}

/// One record read back by kcat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    partition: u32,
    offset: u64,
    key: String,
    value: String,
}

/// The whole topic from the beginning of every partition, with `kcat -C -e`.
fn kcat_consume(bootstrap: &str, topic: &str) -> Vec<Record> {
    let mut cmd = Command::new(kcat());
    cmd.args(["-b", bootstrap, "-C", "-e", "-o", "beginning", "-t", topic]);
    cmd.args(["-f", "%p %o %k %s\\n"]);
    let out = run(&mut cmd, None, Duration::from_secs(60)).expect_ok("kcat -C");
    out.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let mut next = || f.next().unwrap_or_else(|| panic!("kcat line {l:?}"));
            Record {
                partition: next().parse().unwrap(),
                offset: next().parse().unwrap(),
                key: next().to_owned(),
                value: next().to_owned(),
            }
        })
        .collect()
}

/// Checks that `records` are exactly the `sent` values (unique), each key in one
/// partition, offsets 0, 1, 2, ... in each partition and each key's values in the order
/// sent (a value is `<key>-<n>`, n increasing per key). Returns messages per partition.
fn check_read_back(sent: &[String], records: &[Record]) -> BTreeMap<u32, usize> {
    let values: BTreeSet<&str> = records.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values.len(), records.len(), "a message came back twice");
    let expected: BTreeSet<&str> = sent.iter().map(|l| l.split_once(':').unwrap().1).collect();
    let missing: Vec<&&str> = expected.difference(&values).take(5).collect();
    let extra: Vec<&&str> = values.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} sent, {} read: missing e.g. {missing:?}, never sent e.g. {extra:?}",
        expected.len(),
        values.len()
    );
    let mut partition_of: BTreeMap<&str, u32> = BTreeMap::new();
    let mut last_n: BTreeMap<&str, u64> = BTreeMap::new();
    let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for r in records {
        let at = next_offset.entry(r.partition).or_insert(0);
        assert_eq!(
            r.offset, *at,
            "offsets of partition {} in order: {r:?}",
            r.partition
        );
        *at += 1;
        let p = *partition_of.entry(&r.key).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {} in two partitions", r.key);
        let (key, n) = r.value.rsplit_once('-').unwrap();
        assert_eq!(key, r.key, "{r:?}");
        let n: u64 = n.parse().unwrap();
        if let Some(before) = last_n.insert(&r.key, n) {
            assert!(before < n, "key {}: {n} read after {before}", r.key);
        }
    }
    next_offset
        .into_iter()
        .map(|(p, n)| (p, n as usize))
        .collect()
}

/// `count` lines `k<i % keys>:k<i % keys>-<i>`.
fn keyed_lines(count: usize, keys: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("k{}:k{}-{i}", i % keys, i % keys))
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. kcat

#[test]
fn kcat_lists_metadata_and_moves_10000_keyed_messages_over_3_partitions() {
    let dir = data_dir("kcat");
    let server = start(&dir, &[]);
    let md = metadata(&server.kafka, None);
    assert_eq!(
        md["brokers"][0]["name"].as_str(),
        Some(server.kafka.as_str()),
        "the broker advertises its Kafka listener: {md}"
    );
    assert_eq!(md["topics"].as_array().map(Vec::len), Some(0), "{md}");

    cli(&server.addr, &["create-topic", "keyed", "3"]);
    let md = metadata(&server.kafka, Some("keyed"));
    let partitions = &md["topics"][0]["partitions"];
    assert_eq!(partitions.as_array().map(Vec::len), Some(3), "{md}");
    assert!(
        (partitions.as_array().unwrap().iter()).all(|p| p["leader"] == md["brokers"][0]["id"]),
        "{md}"
    );

    let started = Instant::now();
    let sent = keyed_lines(10_000, 100);
    let produced = kcat_produce(&server.kafka, "keyed", &sent);
    assert!(
        !produced.stderr.contains("ERROR") && !produced.stderr.contains("failed"),
        "kcat -P reported errors: {}",
        tail(&produced.stderr, 20)
    );
    produced.expect_ok("kcat -P");
    let produce_took = started.elapsed();
    let records = kcat_consume(&server.kafka, "keyed");
    let per_partition = check_read_back(&sent, &records);
    assert_eq!(
        per_partition.len(),
        3,
        "keys spread over all 3 partitions: {per_partition:?}"
    );
    eprintln!(
        "kcat: 10000 produced in {produce_took:?}, read back in {:?}, per partition {per_partition:?}",
        started.elapsed() - produce_took
    );
    assert!(server.warnings().is_empty(), "{:?}", server.warnings());
}

// ---------------------------------------------------------------------------------
// 2. kafka-python: a consumer group under rebalances, its commits over a restart

/// kafka-python as an application runs it: it probes the broker's versions (ApiVersions)
/// and uses the newest requests both support; its producer is idempotent.
#[test]
fn kafka_python_group_reads_everything_through_rebalances_and_keeps_commits_over_a_restart() {
    kafka_python_group("kafka-python", &[]);
}

/// A group of c1 and c2, c3 joining and c1 leaving while 3,000 messages are produced
/// to 3 partitions: every message read at least once, commits at the end, a new member
/// reads nothing old; then SIGTERM, a restart on the same data (new ports): a member
/// reads nothing old, and reads one new message.
fn kafka_python_group(name: &str, client_args: &[&str]) {
    python();
    let dir = data_dir(name);
    let server = start(&dir, &[]);
    cli(&server.addr, &["create-topic", "events", "3"]);
    let script = "group.py";
    let mut args = vec![server.kafka.as_str(), "events", "g1", "rebalance", "3000"];
    args.extend(client_args);
    let ran = spawn_script(script, &args).wait(Duration::from_secs(150));
    let (summary, ok) = summary_of(script, &ran, &server.warning_counts());
    let failures = &summary["failures"];
    assert!(
        ok && failures.as_array().is_some_and(Vec::is_empty),
        "kafka-python group failed: {failures}\nscript stderr:\n{}\nserver warnings:\n{}",
        tail(&ran.stderr, 30),
        server.warning_counts()
    );
    assert_eq!(as_u64(&summary, "acked"), 3000);
    assert_eq!(as_u64(&summary, "consumed_unique"), 3000);
    assert_eq!(as_u64(&summary, "missing"), 0);
    assert_eq!(as_u64(&summary, "new_member_read_old"), 0);
    let per_member = &summary["per_member"];
    assert!(
        ["c1", "c2", "c3"]
            .iter()
            .all(|m| per_member[m].as_u64() > Some(0)),
        "every member read some: {per_member}; assignments (s since start, partitions): {}, \
         events: {}\nscript stderr:\n{}\nserver warnings:\n{}",
        summary["assignments"],
        summary["events"],
        tail(&ran.stderr, 40),
        server.warning_counts()
    );
    eprintln!(
        "{name}: 3000 produced, every one consumed, {} duplicates after rebalances",
        as_u64(&summary, "duplicates")
    );

    // The commits outlive a restart (new ports, same data).
    server.sigterm();
    let server = start(&dir, &[]);
    let mut args = vec![
        server.kafka.as_str(),
        "events",
        "g1",
        "after-restart",
        "3000",
    ];
    args.extend(client_args);
    let ran = spawn_script(script, &args).wait(Duration::from_secs(90));
    let (summary, ok) = summary_of(script, &ran, &server.warning_counts());
    assert!(
        ok && summary["failures"].as_array().is_some_and(Vec::is_empty),
        "after the restart: {}\nscript stderr:\n{}\nserver warnings:\n{}",
        summary["failures"],
        tail(&ran.stderr, 30),
        server.warning_counts()
    );
    assert_eq!(as_u64(&summary, "read_old"), 0);
    assert_eq!(as_u64(&summary, "read_new"), 1);
}

// ---------------------------------------------------------------------------------
// SASL/SCRAM-SHA-256 from the Python clients (kcat's: tests/tls.rs)

#[test]
fn kafka_python_and_confluent_kafka_authenticate_with_scram_sha_256() {
    python();
    let dir = data_dir("scram");
    let added = Command::new(HERALD)
        .args(["user", "add", "dana", "--password", "danas password"])
        .args(["--allow", "admin *", "--data-dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let server = start(&dir, &[]);
    let script = "sasl.py";
    for client in ["kafka-python", "confluent-kafka"] {
        let topic = format!("scram-{client}");
        let args = [
            client,
            &server.kafka,
            "SCRAM-SHA-256",
            "dana",
            "danas password",
            &topic,
            "200",
        ];
        let ran = spawn_script(script, &args).wait(Duration::from_secs(120));
        let (summary, ok) = summary_of(script, &ran, &server.warning_counts());
        assert!(
            ok && summary["failures"].as_array().is_some_and(Vec::is_empty),
            "{client}: {}\nscript stderr:\n{}\nserver warnings:\n{}",
            summary["failures"],
            tail(&ran.stderr, 30),
            server.warning_counts()
        );
        assert_eq!(as_u64(&summary, "read"), 200, "{client}: {summary}");
    }
    let log = server.log.lock().unwrap().clone();
    let authenticated = "user=\"dana\" mechanism=scram-sha-256";
    assert!(log.contains(authenticated), "{log}");
    assert!(log.contains(" event=auth_failed "), "{log}");
}

// ---------------------------------------------------------------------------------
// 3. confluent-kafka: an idempotent producer through kill -9

#[test]
fn confluent_kafka_idempotent_producer_through_3_kill_9_loses_and_doubles_nothing() {
    python();
    let dir = data_dir("idempotent");
    // One Kafka port for every incarnation, so the producer reconnects to it.
    let kafka = format!("127.0.0.1:{}", common::free_port());
    let mut server = start_at("127.0.0.1:0", &kafka, &dir, &[]);
    cli(&server.addr, &["create-topic", "idem", "3"]);
    let script = "idempotent.py";
    // 5,000 messages paced over 6 s; the kills land at about 1.3, 2.6 and 3.9 s.
    let producer = spawn_script(script, &[&kafka, "idem", "5000", "6"]);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1_300));
        server.kill9();
        server = start_at("127.0.0.1:0", &kafka, &dir, &[]);
    }
    let ran = producer.wait(Duration::from_secs(150));
    let (summary, ok) = summary_of(script, &ran, &server.warning_counts());
    assert!(
        ok && summary["failures"].as_array().is_some_and(Vec::is_empty),
        "idempotent producer: {}\nscript stderr:\n{}\nserver warnings:\n{}",
        summary["failures"],
        tail(&ran.stderr, 30),
        server.warning_counts()
    );
    let acked = as_u64(&summary, "acked");
    assert!(acked > 0, "{summary}");
    for field in ["lost", "duplicated", "invented", "misplaced"] {
        assert_eq!(as_u64(&summary, field), 0, "{field}: {summary}");
    }
    eprintln!(
        "confluent-kafka: {acked} of 5000 acked through 3 kill -9, {} failed, {} read back, \
         0 lost, 0 duplicated",
        as_u64(&summary, "failed"),
        as_u64(&summary, "read_back"),
    );
}

// ---------------------------------------------------------------------------------
// 4. A 3-node cluster, the client on a follower

#[test]
fn kcat_through_a_follower_of_a_3_node_cluster_produces_and_consumes_1000() {
    let dir = data_dir("cluster");
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let kafka_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let peers: Vec<String> = (ports.iter().enumerate())
        .map(|(i, p)| format!("n{}=127.0.0.1:{p}", i + 1))
        .collect();
    let peers = peers.join(",");
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let id = format!("n{}", i + 1);
            start_at(
                &format!("127.0.0.1:{}", ports[i]),
                &format!("127.0.0.1:{}", kafka_ports[i]),
                &dir.join(&id),
                &["--node-id", &id, "--peers", &peers],
            )
        })
        .collect();
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let leader = common::agreed_leader(&addrs, Duration::from_secs(20));
    let follower = &nodes[(leader + 1) % 3];
    let md = metadata(&follower.kafka, None);
    assert_eq!(
        md["brokers"][0]["name"].as_str(),
        Some(follower.kafka.as_str()),
        "a follower names itself: {md}"
    );
    cli(&follower.addr, &["create-topic", "replicated", "3"]);
    let md = metadata(&follower.kafka, Some("replicated"));
    assert_eq!(
        md["topics"][0]["partitions"].as_array().map(Vec::len),
        Some(3),
        "{md}"
    );
    let started = Instant::now();
    let sent = keyed_lines(1_000, 30);
    let produced = kcat_produce(&follower.kafka, "replicated", &sent);
    let producer_stderr = produced.stderr.clone();
    produced.expect_ok("kcat -P through a follower");
    let records = kcat_consume(&follower.kafka, "replicated");
    let failed = || {
        format!(
            "kcat -P stderr:\n{}\nfollower stderr:\n{}\nleader stderr:\n{}",
            tail(&producer_stderr, 20),
            follower.log_tail(20),
            nodes[leader].log_tail(20)
        )
    };
    assert_eq!(records.len(), 1_000, "{}", failed());
    let per_partition = check_read_back(&sent, &records);
    // The same log, read through the leader.
    let through_leader = kcat_consume(&nodes[leader].kafka, "replicated");
    let key = |r: &Record| (r.partition, r.offset, r.value.clone());
    assert_eq!(
        (through_leader.iter().map(key)).collect::<BTreeSet<_>>(),
        (records.iter().map(key)).collect::<BTreeSet<_>>(),
        "the leader and a follower serve the same log"
    );
    eprintln!(
        "cluster: leader n{}, kcat through n{}: 1000 produced and read back in {:?}, {per_partition:?}",
        leader + 1,
        (leader + 1) % 3 + 1,
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// 5. Bad bytes on the Kafka port

/// A request frame: length, then the v1 header (api key, version, correlation id,
/// client id "raw"), then `body`.
fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend(api_key.to_be_bytes());
    request.extend(version.to_be_bytes());
    request.extend(7i32.to_be_bytes());
    request.extend(3i16.to_be_bytes());
    request.extend(b"raw");
    request.extend(body);
    let mut framed = (request.len() as u32).to_be_bytes().to_vec();
    framed.extend(request);
    framed
}

/// Sends `bytes` on a new connection; true if the server closed it (EOF or reset)
/// within 10 s without answering.
fn closes(kafka: &str, bytes: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(kafka).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close before it has read everything: a failed write is fine.
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => Err(format!("answered {:?}", &buf[..n])),
        Err(e) => Err(format!("still open after 10 s ({e})")),
    }
}

/// ApiVersions v0 on a raw connection: the server answers with our correlation id.
fn api_versions_answers(s: &mut TcpStream) {
    s.write_all(&frame(18, 0, &[])).unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    assert_eq!(i32::from_be_bytes(head[4..].try_into().unwrap()), 7);
    let mut rest = vec![0u8; len - 4];
    s.read_exact(&mut rest).unwrap();
    assert_eq!(&rest[..2], &[0, 0], "ApiVersions v0: error 0");
}

#[test]
fn bad_frames_close_their_connection_and_the_server_keeps_serving() {
    let dir = data_dir("bad-frames");
    let mut server = start(&dir, &["--kafka-max-frame-bytes", "4096"]);
    // A good connection opened before the bad ones, used after them.
    let mut good = TcpStream::connect(&server.kafka).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    api_versions_answers(&mut good);
    let mut over_limit = 5000u32.to_be_bytes().to_vec();
    over_limit.extend([0u8; 5000]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a frame over --kafka-max-frame-bytes",
            over_limit,
            "over the limit",
        ),
        ("an unknown API key", frame(1000, 0, &[]), "unknown API key"),
        (
            "garbage (an HTTP request)",
            b"GET / HTTP/1.1\r\nHost: herald\r\n\r\n".to_vec(),
            "over the limit",
        ),
        (
            "garbage in a frame",
            [
                &8u32.to_be_bytes()[..],
                &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4],
            ]
            .concat(),
            "unknown API key",
        ),
        (
            "a negative length",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2],
            "length",
        ),
        (
            "a frame shorter than a header",
            vec![0, 0, 0, 2, 0, 3],
            "no header",
        ),
        ("an unsupported version", frame(3, 99, &[]), "not supported"),
    ];
    for (what, bytes, reason) in cases {
        if let Err(why) = closes(&server.kafka, &bytes) {
            panic!("{what}: the connection was not closed: {why}");
        }
        assert_eq!(
            server.exited(),
            None,
            "{what} stopped the server: {}",
            server.log_tail(40)
        );
        let md = metadata(&server.kafka, None);
        assert!(md["brokers"][0]["name"].is_string(), "after {what}: {md}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.log_tail(5).contains(reason) {
            assert!(
                Instant::now() < deadline,
                "{what}: no log line with {reason:?}: {}",
                server.log_tail(5)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    api_versions_answers(&mut good);
    let closed = server.warnings();
    assert_eq!(
        closed.len(),
        7,
        "one warning per bad connection: {closed:#?}"
    );
    assert!(
        closed.iter().all(|l| l.contains("event=kafka_closed")),
        "{closed:#?}"
    );
}

/// A 21-byte Metadata request whose topic array announces 2^31 - 1 entries: the frame
/// is far under --kafka-max-frame-bytes, but decoding it must not try to reserve room
/// for them all. Its connection closes; the server keeps serving.
#[test]
fn a_small_request_announcing_a_huge_array_closes_its_connection_not_the_server() {
    let dir = data_dir("huge-array");
    let mut server = start(&dir, &["--kafka-max-frame-bytes", "4096"]);
    // Metadata v4 (not flexible): topics is an INT32-counted array.
    let request = frame(3, 4, &i32::MAX.to_be_bytes());
    let closed = closes(&server.kafka, &request);
    std::thread::sleep(Duration::from_millis(300));
    let exited = server.exited();
    assert_eq!(
        exited,
        None,
        "Metadata v4 with topics count 2147483647 ({} bytes) killed the server \
         (connection: {closed:?}); its stderr:\n{}",
        request.len(),
        server.log_from_first_warning(20)
    );
    assert!(closed.is_ok(), "{closed:?}");
    // Metadata v12 (flexible): topics is a compact array, count + 1 as a varint.
    let mut body = vec![0u8]; // the header's tagged fields
    body.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    let closed = closes(&server.kafka, &frame(3, 12, &body));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.exited(),
        None,
        "Metadata v12 with a topics count of 2^32 - 2 killed the server ({closed:?}):\n{}",
        server.log_from_first_warning(20)
    );
    let md = metadata(&server.kafka, None);
    assert!(md["brokers"][0]["name"].is_string(), "{md}");
}
