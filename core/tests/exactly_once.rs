//! Exactly-once processing, end to end, on a node that crashes (sometimes between
//! persisting a step and sending its replies) and restarts from its records:
//!
//! - a producer sends values 0..N to queue `in` as an idempotent producer, retrying
//!   each write until it is answered;
//! - a consumer processes `in` into `out` (value × 10) with one `txn` per message:
//!   the ack of the input and the enqueue of the output together; it forgets
//!   deliveries and retries transactions whose answer was lost;
//! - requests and replies are lost on the way (0, 10 or 20 %, by seed);
//! - the checker: once everything is healed and drained, `out` holds each output
//!   exactly once, and `in` is empty.
//!
//! `SIM_SEED=<n>` replays one seed exactly, `SIM_SEEDS=<count>` runs a longer sweep.

use std::collections::BTreeMap;

use herald_core::msg::*;
use herald_core::sim::Cluster;
use herald_core::{Config, Rng};

mod common;
use common::{fail, lossy_clients, seeds};

const VALUES: u64 = 30;

fn queue(name: &str) -> Payload {
    Payload::CreateQueue(CreateQueue {
        queue: name.into(),
        visibility_ms: Some(300),
        ..CreateQueue::default()
    })
}

fn dequeue(queue: &str, max: usize) -> Payload {
    Payload::Dequeue(Dequeue {
        queue: queue.into(),
        max: Some(max),
        visibility_ms: None,
        wait_ms: None,
    })
}

/// The transaction that processes one delivery of `in` into `out`.
fn process(d: &Delivery) -> Payload {
    let value = d.msg.as_u64().expect("values are numbers");
    let ops = vec![
        Payload::Ack(Receipt {
            queue: "in".into(),
            receipt: d.receipt.clone(),
            delay_ms: None,
            visibility_ms: None,
        }),
        Payload::Enqueue(Enqueue {
            queue: "out".into(),
            msg: (value * 10).into(),
            ..Default::default()
        }),
    ];
    Payload::Txn(Txn { ops })
}

#[test]
fn idempotent_producer_and_transactional_consumer_apply_each_message_once() {
    for seed in seeds(300) {
        let mut c = Cluster::new(1, lossy_clients(seed), |_| Config {
            seed,
            ..Config::default()
        });
        let mut rng = Rng::new(seed);
        c.request(0, queue("in"));
        c.request(0, queue("out"));
        let Payload::InitProducerOk(p) = c.request(
            0,
            Payload::InitProducer(InitProducer {
                name: Some("producer".into()),
            }),
        ) else {
            fail(&c, seed, "init_producer refused".into());
        };
        let write = |seq: u64| {
            Payload::Enqueue(Enqueue {
                queue: "in".into(),
                msg: seq.into(),
                producer: Some(p.producer),
                epoch: Some(p.epoch),
                seq: Some(seq),
                ..Default::default()
            })
        };
        let mut next_seq = 0;
        let mut held: Vec<Delivery> = Vec::new();
        for _ in 0..300 {
            if !c.is_alive(0) && rng.chance(1, 2) {
                c.restart(0);
            }
            match rng.below(20) {
                0 => c.crash(0),
                1 => c.crash_during_next_step(0),
                2 => held.clear(), // the consumer crashes and forgets what it held
                3..=8 if next_seq < VALUES => match c.try_request(0, write(next_seq), 500) {
                    Some(Payload::EnqueueOk(_)) => next_seq += 1,
                    None => {} // retry the same seq
                    Some(other) => fail(&c, seed, format!("enqueue {next_seq}: {other:?}")),
                },
                9..=12 => {
                    if let Some(Payload::DequeueOk(ok)) =
                        c.try_request(0, dequeue("in", rng.between(1, 3) as usize), 500)
                    {
                        held.extend(ok.msgs);
                    }
                }
                _ => {
                    if held.is_empty() {
                        continue;
                    }
                    let d = held.swap_remove(rng.below(held.len() as u64) as usize);
                    match c.try_request(0, process(&d), 500) {
                        Some(Payload::TxnOk(_)) => {}
                        // Lost: maybe done. Retrying is safe: if the first one happened,
                        // its ack makes this one fail as a whole.
                        None => held.push(d),
                        // A stale receipt (redelivered since, or already processed).
                        Some(Payload::Error(e)) if e.code == 1003 => {}
                        Some(other) => fail(&c, seed, format!("txn answered {other:?}")),
                    }
                }
            }
            c.run_for_ms(rng.between(0, 80));
        }

        // Healed: finish producing, then process everything left.
        c.restart_all();
        while next_seq < VALUES {
            match c.request(0, write(next_seq)) {
                Payload::EnqueueOk(_) => next_seq += 1,
                other => fail(&c, seed, format!("healed enqueue {next_seq}: {other:?}")),
            }
        }
        for _ in 0..20 {
            c.run_for_ms(400); // past every visibility timeout
            let Payload::DequeueOk(ok) = c.request(0, dequeue("in", 100)) else {
                fail(&c, seed, "healed dequeue refused".into());
            };
            for d in ok.msgs {
                if !matches!(c.request(0, process(&d)), Payload::TxnOk(_)) {
                    fail(&c, seed, format!("healed txn of {} refused", d.msg));
                }
            }
        }
        let Payload::DequeueOk(left) = c.request(0, dequeue("in", 100)) else {
            fail(&c, seed, "final dequeue refused".into());
        };
        if !left.msgs.is_empty() {
            fail(
                &c,
                seed,
                format!("{} inputs never processed", left.msgs.len()),
            );
        }
        let mut outputs: BTreeMap<u64, usize> = BTreeMap::new();
        loop {
            let Payload::DequeueOk(ok) = c.request(0, dequeue("out", 100)) else {
                fail(&c, seed, "output dequeue refused".into());
            };
            if ok.msgs.is_empty() {
                break;
            }
            for d in ok.msgs {
                *outputs
                    .entry(d.msg.as_u64().unwrap_or(u64::MAX))
                    .or_default() += 1;
            }
        }
        let want: BTreeMap<u64, usize> = (0..VALUES).map(|v| (v * 10, 1)).collect();
        if outputs != want {
            let wrong: Vec<_> = (0..VALUES)
                .map(|v| v * 10)
                .filter(|o| outputs.get(o) != Some(&1))
                .map(|o| (o, outputs.get(&o).copied().unwrap_or(0)))
                .collect();
            fail(
                &c,
                seed,
                format!("outputs (value, times) not applied exactly once: {wrong:?}"),
            );
        }
    }
}
