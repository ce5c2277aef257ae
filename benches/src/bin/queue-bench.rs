//! `queue-bench`: a work queue in the core, filled to a depth and drained, at depths
//! from 10k to 1M. Prints enqueue and dequeue+ack rates, heap bytes per queued message
//! (counted by a wrapping allocator), and the same figures for a bare `VecDeque` FIFO
//! run in the same process as the baseline (what at-least-once bookkeeping costs).
//! A last row drives the same work through `Node::step` (the full request path).
//!
//! usage: queue-bench [--max-depth N]   (default 1000000)

use std::collections::VecDeque;
use std::time::Instant;

use herald_benches::{live_bytes, Counting};
use herald_core::sim::{Queue, QueueConfig, SetAside};
use herald_core::wire::msg::{Dequeue, DequeueOk, Enqueue, Init, Receipt};
use herald_core::wire::{Body, Json};
use herald_core::{Config, Effect, Effects, Event, Message, Node, Payload, Time};
use serde_json::Value;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The message body every run uses: a 16-byte string, like a small job id.
fn body(i: usize) -> Json {
    Value::String(format!("job-{i:012}")).into()
}

struct Row {
    enqueue_per_s: f64,
    drain_per_s: f64,
    bytes_per_msg: f64,
}

fn herald_queue(depth: usize) -> Row {
    let config = QueueConfig {
        visibility_ms: 30_000,
        max_deliveries: 0,
        dead_letter: None,
        retention_ms: 0,
        dedup_window_ms: 0,
        max_depth: depth,
        max_dedup_ids: 0,
    };
    let mut q = Queue::new("bench".into(), config);
    let before = live_bytes();
    let start = Instant::now();
    for i in 0..depth {
        q.enqueue(Time::ZERO, None, body(i), 0, None, SetAside::default())
            .expect("room");
    }
    let enqueue = start.elapsed();
    let bytes = live_bytes() - before;
    let start = Instant::now();
    let mut drained = 0;
    while drained < depth {
        for delivery in q.dequeue(Time::ZERO, 100, None) {
            q.ack(&delivery.receipt).expect("fresh receipt");
            drained += 1;
        }
    }
    let drain = start.elapsed();
    assert_eq!(q.depth(), 0);
    Row {
        enqueue_per_s: depth as f64 / enqueue.as_secs_f64(),
        drain_per_s: depth as f64 / drain.as_secs_f64(),
        bytes_per_msg: bytes as f64 / depth as f64,
    }
}

fn bare_fifo(depth: usize) -> Row {
    let mut q: VecDeque<(u64, Json)> = VecDeque::new();
    let before = live_bytes();
    let start = Instant::now();
    for i in 0..depth {
        q.push_back((i as u64, body(i)));
    }
    let enqueue = start.elapsed();
    let bytes = live_bytes() - before;
    let start = Instant::now();
    let mut sum = 0u64;
    while let Some((seq, _)) = q.pop_front() {
        sum = sum.wrapping_add(seq);
    }
    let drain = start.elapsed();
    std::hint::black_box(sum);
    Row {
        enqueue_per_s: depth as f64 / enqueue.as_secs_f64(),
        drain_per_s: depth as f64 / drain.as_secs_f64(),
        bytes_per_msg: bytes as f64 / depth as f64,
    }
}

/// The same work as requests through a node: typed messages in, effects out.
fn through_node(depth: usize) -> Row {
    let config = Config {
        queue_max_depth: depth,
        ..Config::default()
    };
    let mut node = Node::new(config);
    let mut out = Effects::new();
    let mut msg_id = 0;
    let mut request = |node: &mut Node, out: &mut Effects, payload| {
        msg_id += 1;
        let body = Body {
            payload,
            msg_id: Some(msg_id),
            in_reply_to: None,
        };
        let msg = Message {
            src: "c1".into(),
            dest: "n0".into(),
            body,
        };
        node.step(Time::ZERO, Event::Message(msg), out);
    };
    let init = Init {
        node_id: "n0".into(),
        node_ids: vec!["n0".into()],
    };
    request(&mut node, &mut out, Payload::Init(init));
    let create = herald_core::wire::msg::CreateQueue {
        queue: "q".into(),
        ..Default::default()
    };
    request(&mut node, &mut out, Payload::CreateQueue(create));
    out.clear();
    let before = live_bytes();
    let start = Instant::now();
    for i in 0..depth {
        let e = Enqueue {
            queue: "q".into(),
            msg: body(i),
            id: None,
            delay_ms: None,
            ttl_ms: None,
            ..Default::default()
        };
        request(&mut node, &mut out, Payload::Enqueue(e));
        out.clear();
    }
    let enqueue = start.elapsed();
    let bytes = live_bytes().saturating_sub(before);
    let start = Instant::now();
    let mut drained = 0;
    while drained < depth {
        let d = Dequeue {
            queue: "q".into(),
            max: Some(100),
            visibility_ms: None,
            wait_ms: None,
        };
        request(&mut node, &mut out, Payload::Dequeue(d));
        let receipts: Vec<String> = out
            .drain(..)
            .filter_map(|e| match e {
                Effect::Send(Message {
                    body:
                        Body {
                            payload: Payload::DequeueOk(DequeueOk { msgs }),
                            ..
                        },
                    ..
                }) => Some(msgs.into_iter().map(|m| m.receipt)),
                _ => None,
            })
            .flatten()
            .collect();
        for receipt in receipts {
            let ack = Receipt {
                queue: "q".into(),
                receipt,
                delay_ms: None,
                visibility_ms: None,
            };
            request(&mut node, &mut out, Payload::Ack(ack));
            out.clear();
            drained += 1;
        }
    }
    let drain = start.elapsed();
    Row {
        enqueue_per_s: depth as f64 / enqueue.as_secs_f64(),
        drain_per_s: depth as f64 / drain.as_secs_f64(),
        // Includes the node's reply cache (retried enqueues are answered from it).
        bytes_per_msg: bytes as f64 / depth as f64,
    }
}

fn main() {
    let mut max_depth = 1_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--max-depth", Some(n)) => max_depth = n,
            _ => {
                eprintln!("usage: queue-bench [--max-depth N]");
                std::process::exit(2);
            }
        }
    }
    println!("work queue: fill to depth, then dequeue (batches of 100) + ack every message");
    println!(
        "{:>9} | {:>14} {:>14} {:>9} | {:>14} {:>14} {:>9} | {:>7} {:>7}",
        "depth",
        "enqueue/s",
        "deq+ack/s",
        "B/msg",
        "fifo push/s",
        "fifo pop/s",
        "B/msg",
        "enq×",
        "drain×"
    );
    let mut depth = 10_000;
    while depth <= max_depth {
        let herald = herald_queue(depth);
        let fifo = bare_fifo(depth);
        println!(
            "{depth:>9} | {:>14.0} {:>14.0} {:>9.0} | {:>14.0} {:>14.0} {:>9.0} | {:>7.2} {:>7.2}",
            herald.enqueue_per_s,
            herald.drain_per_s,
            herald.bytes_per_msg,
            fifo.enqueue_per_s,
            fifo.drain_per_s,
            fifo.bytes_per_msg,
            herald.enqueue_per_s / fifo.enqueue_per_s,
            herald.drain_per_s / fifo.drain_per_s,
        );
        depth *= 10;
    }
    let node = through_node(max_depth);
    println!(
        "through Node::step at depth {max_depth}: {:.0} enqueue/s, {:.0} dequeue+ack/s, {:.0} B/msg (reply cache included)",
        node.enqueue_per_s, node.drain_per_s, node.bytes_per_msg
    );
}
