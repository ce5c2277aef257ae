//! `request-bench`: the per-request work of `herald serve` on one work queue, in one
//! process and without sockets, so it can be counted exactly (run it under
//! `valgrind --tool=callgrind` for instructions). 50 clients each send batches of 16
//! request lines, as over TCP; every line is framed, decoded, stepped through a node,
//! its write-ahead record and its reply are encoded into reused buffers. First
//! `--messages` enqueues of 64-byte payloads, then a dequeue + ack of each.
//!
//! Prints, per phase, nanoseconds and allocation calls per request, and the heap
//! bytes each queued message holds beyond its payload; then what recovery (and a
//! compaction's rebuild) costs per record: every write-ahead record of both phases
//! decoded and replayed through a fresh node; then the same for a naive loop
//! (serde_json `Value` in, a `VecDeque` of values, serde_json replies out) as the
//! baseline.
//!
//! usage: request-bench [--messages N]   (default 200000)

use std::collections::VecDeque;
use std::time::Instant;

use herald_benches::{allocations, live_bytes, Counting};
use herald_core::wire::msg::DequeueOk;
use herald_core::wire::{self, Frame, LineFramer};
use herald_core::{Config, Effect, Effects, Event, Node, Payload, Time, WalRecord};
use serde_json::Value;

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENTS: usize = 50;
const PIPELINE: usize = 16;
const PAYLOAD_BYTES: usize = 64;

/// What one phase cost.
struct Phase {
    requests: u64,
    nanos: u128,
    allocations: u64,
}

impl Phase {
    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>9} requests {:>8.0} ns/request {:>6.2} allocations/request",
            self.requests,
            self.nanos as f64 / self.requests as f64,
            self.allocations as f64 / self.requests as f64,
        );
    }
}

/// Times `run` and counts the allocation calls it makes.
fn measure(requests: u64, run: impl FnOnce()) -> Phase {
    let allocations_before = allocations();
    let started = Instant::now();
    run();
    Phase {
        requests,
        nanos: started.elapsed().as_nanos(),
        allocations: allocations() - allocations_before,
    }
}

fn payload() -> String {
    (0..PAYLOAD_BYTES)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// One connection's state on the server side: its framer, its name and its reply
/// buffer (written out and cleared after each batch, as a socket write would).
struct Conn {
    name: String,
    framer: LineFramer,
    out: Vec<u8>,
    next_msg_id: u64,
}

/// A node and its connections, handling lines the way driver-mio does.
struct Server {
    node: Node,
    conns: Vec<Conn>,
    effects: Effects,
    /// Every write-ahead record so far, each after its length (u32 LE), as a segment
    /// holds them; it grows by doubling, so appending costs no allocation per record.
    wal: Vec<u8>,
    /// Receipts of the last batch's deliveries, to acknowledge.
    receipts: Vec<String>,
}

impl Server {
    fn new(messages: usize) -> Server {
        let config = Config {
            queue_max_depth: messages.max(1),
            ..Config::default()
        };
        let mut server = Server {
            node: Node::new(config),
            conns: (0..CLIENTS)
                .map(|i| Conn {
                    name: format!("conn-{i}"),
                    framer: LineFramer::new(1 << 20),
                    out: Vec::new(),
                    next_msg_id: 1,
                })
                .collect(),
            effects: Effects::new(),
            wal: Vec::new(),
            receipts: Vec::new(),
        };
        server.feed(0, br#"{"src":"c","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}
{"body":{"type":"create_queue","msg_id":2,"queue":"bench"}}
"#);
        server
    }

    /// Handles a batch of bytes from connection `i`, then "writes" its replies.
    fn feed(&mut self, i: usize, bytes: &[u8]) {
        let Server {
            node,
            conns,
            effects,
            wal,
            receipts,
        } = self;
        let conn = &mut conns[i];
        let name = conn.name.as_str();
        conn.framer.feed(bytes, |frame| {
            let Frame::Line(line) = frame else {
                panic!("no line is too long here")
            };
            let msg = wire::decode_from(line, name, "n0").expect("valid requests");
            node.step(Time::ZERO, Event::Message(msg), effects);
            for effect in effects.drain(..) {
                match effect {
                    Effect::Persist(record) => append_framed(wal, |out| record.encode(out)),
                    Effect::PersistInput { at } => {
                        append_framed(wal, |out| WalRecord::encode_line(at, name, "n0", line, out))
                    }
                    Effect::Send(msg) => {
                        match &msg.body.payload {
                            Payload::DequeueOk(DequeueOk { msgs }) => {
                                receipts.extend(msgs.iter().map(|m| m.receipt.clone()))
                            }
                            Payload::Error(e) => panic!("error reply: {e:?}"),
                            _ => {}
                        }
                        wire::encode(&msg, &mut conn.out);
                    }
                    Effect::Log(_) => {}
                }
            }
        });
        std::hint::black_box(&conn.out);
        conn.out.clear();
    }

    /// A batch of request lines from connection `i`, one per body.
    fn batch(&mut self, i: usize, bodies: impl Iterator<Item = String>) -> Vec<u8> {
        let conn = &mut self.conns[i];
        let mut bytes = Vec::new();
        for body in bodies {
            let msg_id = conn.next_msg_id;
            conn.next_msg_id += 1;
            bytes.extend_from_slice(
                format!(r#"{{"body":{{"type":{body},"msg_id":{msg_id}}}}}"#).as_bytes(),
            );
            bytes.push(b'\n');
        }
        bytes
    }
}

fn herald(messages: usize) {
    let mut server = Server::new(messages);
    let payload = payload();
    // Request lines are made before each phase, so their cost is not the server's.
    let enqueues: Vec<(usize, Vec<u8>)> = (0..messages.div_ceil(PIPELINE))
        .map(|b| {
            let i = b % CLIENTS;
            let n = PIPELINE.min(messages - b * PIPELINE);
            let body = format!(r#""enqueue","queue":"bench","msg":"{payload}""#);
            (i, server.batch(i, std::iter::repeat_n(body, n)))
        })
        .collect();
    let heap_before = live_bytes() - server.wal.capacity();
    let enqueue = measure(messages as u64, || {
        for (i, bytes) in &enqueues {
            server.feed(*i, bytes);
        }
    });
    // The records kept for the replay are not the queue's.
    let held =
        (live_bytes() - server.wal.capacity()).saturating_sub(heap_before) as f64 / messages as f64;
    enqueue.print("herald enqueue");
    drop(enqueues);
    let dequeue = r#""dequeue","queue":"bench","max":1"#;
    let mut drained = 0;
    let mut requests = 0;
    let mut phase = Phase {
        requests: 0,
        nanos: 0,
        allocations: 0,
    };
    let mut b = 0;
    while drained < messages {
        let i = b % CLIENTS;
        b += 1;
        let dequeues = server.batch(i, std::iter::repeat_n(dequeue.to_owned(), PIPELINE));
        let part = measure(0, || server.feed(i, &dequeues));
        let acks: Vec<String> = (server.receipts.drain(..))
            .map(|r| format!(r#""ack","queue":"bench","receipt":"{r}""#))
            .collect();
        assert!(
            !acks.is_empty(),
            "{} messages left, none delivered",
            messages - drained
        );
        drained += acks.len();
        requests += (PIPELINE + acks.len()) as u64;
        let acks = server.batch(i, acks.into_iter());
        let part2 = measure(0, || server.feed(i, &acks));
        phase.nanos += part.nanos + part2.nanos;
        phase.allocations += part.allocations + part2.allocations;
    }
    phase.requests = requests;
    phase.print("herald dequeue, ack");
    replay(&server.wal, server.node.config().clone());
    println!(
        "herald: {:.0} heap bytes per queued {PAYLOAD_BYTES}-byte message, {:.0} beyond the payload",
        held,
        held - PAYLOAD_BYTES as f64
    );
}

/// Appends one record, after its length, to `wal`.
fn append_framed(wal: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let start = wal.len();
    wal.extend_from_slice(&[0; 4]);
    encode(wal);
    let len = u32::try_from(wal.len() - start - 4).expect("a record is under 4 GiB");
    wal[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes every record in `wal` and replays them through a fresh node, as recovery
/// and a compaction's rebuild do.
fn replay(wal: &[u8], config: Config) {
    let mut records = Vec::new();
    let mut rest = wal;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        records.push(&tail[..len]);
        rest = &tail[len..];
    }
    let count = records.len() as u64;
    let phase = measure(count, || {
        let decoded = records
            .iter()
            .map(|bytes| WalRecord::decode(bytes).expect("records read back"));
        std::hint::black_box(Node::recover(config, decoded));
    });
    phase.print("herald replay (per record)");
}

/// The baseline: parse each line into a `Value`, keep messages in a `VecDeque`, write
/// each reply with serde_json.
fn naive(messages: usize) {
    let payload = payload();
    let mut queue: VecDeque<Value> = VecDeque::new();
    let mut out = Vec::new();
    let lines: Vec<Vec<u8>> = (0..messages)
        .map(|i| {
            format!(
                r#"{{"body":{{"type":"enqueue","queue":"bench","msg":"{payload}","msg_id":{i}}}}}"#
            )
            .into_bytes()
        })
        .collect();
    let heap_before = live_bytes();
    let enqueue = measure(messages as u64, || {
        for line in &lines {
            let mut request: Value = serde_json::from_slice(line).expect("valid");
            let msg_id = request["body"]["msg_id"].take();
            queue.push_back(request["body"]["msg"].take());
            let reply = serde_json::json!({"body": {"type": "enqueue_ok", "in_reply_to": msg_id}});
            serde_json::to_writer(&mut out, &reply).expect("serializes");
            out.push(b'\n');
            out.clear();
        }
    });
    let held = live_bytes().saturating_sub(heap_before) as f64 / messages as f64;
    enqueue.print("naive enqueue");
    let dequeue = measure(messages as u64, || {
        while let Some(msg) = queue.pop_front() {
            let reply = serde_json::json!({"body": {"type": "dequeue_ok", "msgs": [msg]}});
            serde_json::to_writer(&mut out, &reply).expect("serializes");
            out.push(b'\n');
            out.clear();
        }
    });
    dequeue.print("naive dequeue");
    println!(
        "naive: {:.0} heap bytes per queued {PAYLOAD_BYTES}-byte message, {:.0} beyond the payload",
        held,
        held - PAYLOAD_BYTES as f64
    );
}

fn main() {
    let mut messages = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--messages", Some(n)) if n > 0 => messages = n,
            _ => {
                eprintln!("usage: request-bench [--messages N]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "{messages} messages of {PAYLOAD_BYTES} bytes from {CLIENTS} clients in batches of {PIPELINE}"
    );
    herald(messages);
    naive(messages);
}
