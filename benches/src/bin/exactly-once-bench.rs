//! `exactly-once-bench`: what exactly-once costs in the core, through `Node::step`
//! (the full request path, minus sockets and disk), each against its plain baseline
//! run in the same process:
//!
//! - publish: plain vs idempotent (producer id, epoch, sequence number);
//! - consume-transform-produce: per message `ack` + `enqueue` as two requests vs one
//!   `txn` holding both vs two-phase (`prepare` then `commit_txn`).
//!
//! usage: exactly-once-bench [--messages N]   (default 200000)

use std::time::Instant;

use herald_core::wire::msg::*;
use herald_core::wire::Body;
use herald_core::{Config, Effect, Effects, Event, Message, Node, Payload, Time};

/// A node driven directly, one request per step.
struct Driver {
    node: Node,
    out: Effects,
    next_id: u64,
}

impl Driver {
    fn new() -> Driver {
        let mut d = Driver {
            node: Node::new(Config {
                queue_max_depth: 10_000_000,
                max_log_records: 100_000_000,
                ..Config::default()
            }),
            out: Effects::new(),
            next_id: 0,
        };
        d.call(Payload::Init(Init {
            node_id: "n0".into(),
            node_ids: vec!["n0".into()],
        }));
        d.call(Payload::CreateTopic(CreateTopic {
            topic: "t".into(),
            partitions: 1,
        }));
        for queue in ["in", "out"] {
            d.call(Payload::CreateQueue(CreateQueue {
                queue: queue.into(),
                ..CreateQueue::default()
            }));
        }
        d
    }

    /// One request; its reply (panics on an error reply: a bench must not measure
    /// refusals).
    fn call(&mut self, payload: Payload) -> Payload {
        self.next_id += 1;
        let msg = Message {
            src: "c1".into(),
            dest: "n0".into(),
            body: Body {
                payload,
                msg_id: Some(self.next_id),
                in_reply_to: None,
            },
        };
        self.node
            .step(Time::ZERO, Event::Message(msg), &mut self.out);
        let reply = self
            .out
            .drain(..)
            .find_map(|e| match e {
                Effect::Send(m) => Some(m.body.payload),
                _ => None,
            })
            .expect("a reply");
        if let Payload::Error(e) = &reply {
            panic!("error {}: {}", e.code, e.text);
        }
        reply
    }

    /// Fills `in` with `n` messages and takes them all: their receipts.
    fn deliveries(&mut self, n: usize) -> Vec<Delivery> {
        for i in 0..n {
            self.call(Payload::Enqueue(Enqueue {
                queue: "in".into(),
                msg: serde_json::json!(i as u64).into(),
                ..Default::default()
            }));
        }
        let mut all = Vec::with_capacity(n);
        while all.len() < n {
            let Payload::DequeueOk(ok) = self.call(Payload::Dequeue(Dequeue {
                queue: "in".into(),
                max: Some(1_000),
                visibility_ms: None,
                wait_ms: None,
            })) else {
                unreachable!("dequeue answers dequeue_ok")
            };
            all.extend(ok.msgs);
        }
        all
    }
}

fn ack(d: &Delivery) -> Payload {
    Payload::Ack(Receipt {
        queue: "in".into(),
        receipt: d.receipt.clone(),
        delay_ms: None,
        visibility_ms: None,
    })
}

fn output(d: &Delivery) -> Payload {
    Payload::Enqueue(Enqueue {
        queue: "out".into(),
        msg: d.msg.clone(),
        ..Default::default()
    })
}

/// Messages (or transactions) per second of `run` over `n` items.
fn rate(n: usize, run: impl FnOnce()) -> f64 {
    let started = Instant::now();
    run();
    n as f64 / started.elapsed().as_secs_f64()
}

fn publish(n: usize, idempotent: bool) -> f64 {
    let mut d = Driver::new();
    let producer =
        idempotent.then(
            || match d.call(Payload::InitProducer(InitProducer::default())) {
                Payload::InitProducerOk(p) => p,
                other => panic!("{other:?}"),
            },
        );
    rate(n, || {
        for seq in 0..n as u64 {
            d.call(Payload::Publish(Publish {
                topic: "t".into(),
                msg: serde_json::json!(seq).into(),
                producer: producer.as_ref().map(|p| p.producer),
                epoch: producer.as_ref().map(|p| p.epoch),
                seq: producer.as_ref().map(|_| seq),
                ..Default::default()
            }));
        }
    })
}

#[derive(Clone, Copy)]
enum Process {
    /// `ack` and `enqueue`, two requests.
    Plain,
    /// One `txn` with both.
    Txn,
    /// `prepare` with both, then `commit_txn`.
    TwoPhase,
}

fn consume_transform_produce(n: usize, how: Process) -> f64 {
    let mut d = Driver::new();
    let deliveries = d.deliveries(n);
    rate(n, || {
        for (i, m) in deliveries.iter().enumerate() {
            match how {
                Process::Plain => {
                    d.call(ack(m));
                    d.call(output(m));
                }
                Process::Txn => {
                    d.call(Payload::Txn(Txn {
                        ops: vec![ack(m), output(m)],
                    }));
                }
                Process::TwoPhase => {
                    let txid = format!("tx-{i}");
                    d.call(Payload::Prepare(Prepare {
                        txid: txid.clone(),
                        ops: vec![ack(m), output(m)],
                    }));
                    d.call(Payload::CommitTxn(TxnId { txid }));
                }
            }
        }
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut n = 200_000;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--messages", Some(v)) => n = v,
            _ => {
                eprintln!("usage: exactly-once-bench [--messages N]");
                std::process::exit(2);
            }
        }
    }
    println!("exactly-once in the core (Node::step), {n} messages, best of 3");
    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(0.0, f64::max);
    let plain = best(&|| publish(n, false));
    let idempotent = best(&|| publish(n, true));
    println!(
        "publish      plain {plain:>12.0}/s   idempotent {idempotent:>12.0}/s   ratio {:.2}",
        idempotent / plain
    );
    let plain = best(&|| consume_transform_produce(n, Process::Plain));
    let txn = best(&|| consume_transform_produce(n, Process::Txn));
    let two_phase = best(&|| consume_transform_produce(n, Process::TwoPhase));
    println!(
        "ack+enqueue  plain {plain:>12.0}/s   txn {txn:>12.0}/s (ratio {:.2})   prepare+commit {two_phase:>12.0}/s (ratio {:.2})",
        txn / plain,
        two_phase / plain
    );
}
