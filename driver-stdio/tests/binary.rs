//! The real `herald-node` process driven interactively: a reply must come out while
//! the next request has not been written yet (stdout is flushed when input is idle),
//! timers fire with no input arriving, and an over-long line is dropped without
//! stopping the node. Every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

fn spawn(env: &[(&str, &str)]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-node"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let forward = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let lines = forward(Box::new(child.stdout.take().unwrap()));
    let stderr = forward(Box::new(child.stderr.take().unwrap()));
    Node {
        stdin: child.stdin.take().unwrap(),
        child,
        lines,
        stderr,
    }
}

impl Node {
    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn recv(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("no output line within 10 s");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replies_are_flushed_before_the_next_request_arrives() {
    let mut node = spawn(&[("HERALD_LOG", "off")]);
    node.send(r#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}"#);
    assert_eq!(node.recv()["body"]["type"], "init_ok");
    for i in 1..=20 {
        node.send(&format!(
            r#"{{"src":"c1","dest":"n0","body":{{"type":"echo","msg_id":{i},"echo":{i}}}}}"#
        ));
        let reply = node.recv();
        assert_eq!(reply["body"]["in_reply_to"], i);
        assert_eq!(reply["body"]["echo"], i);
    }
}

#[test]
fn gossip_goes_out_on_a_timer_and_is_retried_until_acknowledged() {
    let mut node = spawn(&[("HERALD_LOG", "off")]);
    node.send(r#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0","n1"]}}"#);
    assert_eq!(node.recv()["body"]["type"], "init_ok");
    node.send(r#"{"src":"c1","dest":"n0","body":{"type":"broadcast","msg_id":2,"message":42}}"#);
    assert_eq!(node.recv()["body"]["type"], "broadcast_ok");
    // No more input: the gossip timer alone must produce a gossip to n1 ...
    let gossip = node.recv();
    assert_eq!(
        (gossip["dest"].as_str(), gossip["body"]["type"].as_str()),
        (Some("n1"), Some("gossip"))
    );
    assert_eq!(gossip["body"]["values"], serde_json::json!([42]));
    // ... and, unanswered, the same request (same msg_id) again after a timeout.
    let retry = node.recv();
    assert_eq!(
        retry["body"], gossip["body"],
        "a retry resends the same request"
    );
    let msg_id = &retry["body"]["msg_id"];
    node.send(&format!(r#"{{"src":"n1","dest":"n0","body":{{"type":"gossip_ok","msg_id":1,"in_reply_to":{msg_id}}}}}"#));
    // Acknowledged: nothing more is sent (wait past the 1 s RPC timeout).
    assert!(
        node.lines
            .recv_timeout(Duration::from_millis(2_500))
            .is_err(),
        "gossip after ack"
    );
}

#[test]
fn an_over_long_line_is_dropped_and_the_node_keeps_serving() {
    let mut node = spawn(&[("HERALD_LOG", "warn"), ("HERALD_MAX_LINE_BYTES", "4096")]);
    node.send(r#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}"#);
    assert_eq!(node.recv()["body"]["type"], "init_ok");
    let huge = format!(
        r#"{{"src":"c1","dest":"n0","body":{{"type":"echo","msg_id":2,"echo":"{}"}}}}"#,
        "x".repeat(3 << 20)
    );
    node.send(&huge);
    node.send("\u{0}\u{1}garbage\u{7f}");
    node.send(r#"{"src":"c1","dest":"n0","body":{"type":"echo","msg_id":3,"echo":"after"}}"#);
    let reply = node.recv();
    assert_eq!(
        (
            reply["body"]["in_reply_to"].as_u64(),
            reply["body"]["echo"].as_str()
        ),
        (Some(3), Some("after"))
    );
    let logs: Vec<String> = (0..2)
        .map(|_| node.stderr.recv_timeout(WAIT).unwrap())
        .collect();
    assert!(logs[0].contains("event=line_too_long"), "{logs:?}");
    assert!(logs[1].contains("event=unreadable_line"), "{logs:?}");
}

#[test]
fn a_bad_setting_in_the_environment_exits_2_naming_it() {
    for (var, value, reason) in [
        (
            "HERALD_HEARTBEAT_INTERVAL_MS",
            "600",
            "must be less than election_timeout_ms (500), not 600",
        ),
        ("HERALD_MAX_TOPICS", "lots", "\"lots\" is not a valid value"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald-node"))
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        let expected = format!("herald-node: {var}: {reason}");
        assert!(stderr.starts_with(&expected), "{var}={value}: {stderr}");
        assert!(out.stdout.is_empty(), "{var}={value}");
    }
}

#[test]
fn the_help_names_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-node"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(help.contains("HERALD_MAX_LINE_BYTES=1048576"), "{help}");
    for field in herald_core::Config::FIELDS {
        let var = format!(" {}=", herald_stdio::env_var_name(field.name));
        assert!(help.contains(&var), "{var} missing from:\n{help}");
    }
}
