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
//! The same runs on a 3-node Raft cluster with partitions, crashes and lossy links,
//! where a request may also be refused (11) or end unknown (0) and is retried.
//!
//! `SIM_SEED=<n>` replays one seed exactly, `SIM_SEEDS=<count>` runs a longer sweep.

use std::collections::BTreeMap;

use herald_core::sim::Cluster;
use herald_core::wire::msg::*;
use herald_core::{Config, Rng};

mod common;
use common::{fail, leader, nemesis, pick_node, seeds, settled, workload_net};

const VALUES: u64 = 30;

fn queue(name: &str, visibility_ms: u64) -> Payload {
    Payload::CreateQueue(CreateQueue {
        queue: name.into(),
        visibility_ms: Some(visibility_ms),
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
    let value = d.msg.to_value().as_u64().expect("values are numbers");
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
        exactly_once(seed, 1);
    }
}

#[test]
fn exactly_once_on_3_nodes_through_partitions_and_crashes() {
    for seed in seeds(100) {
        exactly_once(seed, 3);
    }
}

/// On a cluster, an error that says "not done" (11) or "unknown" (0) is retried.
fn retryable(nodes: usize, reply: &Payload) -> bool {
    nodes > 1 && matches!(reply, Payload::Error(e) if e.code == 0 || e.code == 11)
}

fn exactly_once(seed: u64, nodes: usize) {
    {
        let net = workload_net(seed, nodes);
        let mut c = Cluster::new(nodes, net, |i| Config {
            seed: seed * 100 + i as u64,
            ..Config::default()
        });
        let timeout_ms = if nodes == 1 { 500 } else { 1_000 };
        // On a cluster, links still lose messages once healed, and a lost forward
        // costs its 1 s timeout: deliveries must stay invisible for longer than that.
        let visibility_ms = if nodes == 1 { 300 } else { 3_000 };
        let mut rng = Rng::new(seed);
        settled(&mut c, queue("in", visibility_ms));
        settled(&mut c, queue("out", visibility_ms));
        let Payload::InitProducerOk(p) = settled(
            &mut c,
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
            if nodes > 1 {
                nemesis(&mut c, &mut rng, nodes);
            } else if !c.is_alive(0) && rng.chance(1, 2) {
                c.restart(0);
            }
            let n = pick_node(&mut rng, nodes);
            match rng.below(20) {
                0 | 1 if nodes > 1 => {}
                0 => c.crash(0),
                1 => c.crash_during_next_step(0),
                2 => held.clear(), // the consumer crashes and forgets what it held
                3..=8 if next_seq < VALUES => {
                    match c.try_request(n, write(next_seq), timeout_ms) {
                        Some(Payload::EnqueueOk(_)) => next_seq += 1,
                        None => {} // retry the same seq
                        Some(reply) if retryable(nodes, &reply) => {}
                        Some(other) => fail(&c, seed, format!("enqueue {next_seq}: {other:?}")),
                    }
                }
                9..=12 => {
                    if let Some(Payload::DequeueOk(ok)) =
                        c.try_request(n, dequeue("in", rng.between(1, 3) as usize), timeout_ms)
                    {
                        held.extend(ok.msgs);
                    }
                }
                _ => {
                    if held.is_empty() {
                        continue;
                    }
                    let d = held.swap_remove(rng.below(held.len() as u64) as usize);
                    match c.try_request(n, process(&d), timeout_ms) {
                        Some(Payload::TxnOk(_)) => {}
                        // Lost: maybe done. Retrying is safe: if the first one happened,
                        // its ack makes this one fail as a whole.
                        None => held.push(d),
                        Some(reply) if retryable(nodes, &reply) => held.push(d),
                        // A stale receipt (redelivered since, or already processed).
                        Some(Payload::Error(e)) if e.code == 1003 => {}
                        Some(other) => fail(&c, seed, format!("txn answered {other:?}")),
                    }
                }
            }
            c.run_for_ms(rng.between(0, 80));
        }

        // Healed: finish producing, then process everything left.
        c.heal();
        c.restart_all();
        while next_seq < VALUES {
            match settled(&mut c, write(next_seq)) {
                Payload::EnqueueOk(_) => next_seq += 1,
                other => fail(&c, seed, format!("healed enqueue {next_seq}: {other:?}")),
            }
        }
        for _ in 0..20 {
            c.run_for_ms(visibility_ms + 100); // past every visibility timeout
            let Payload::DequeueOk(ok) = settled(&mut c, dequeue("in", 100)) else {
                fail(&c, seed, "healed dequeue refused".into());
            };
            for d in ok.msgs {
                for attempt in 0.. {
                    let node = leader(&c).unwrap_or(attempt % nodes);
                    match c.request(node, process(&d)) {
                        Payload::TxnOk(_) => break,
                        // An earlier attempt whose outcome was unknown did it; or (on a
                        // cluster, where each txn takes a replication round) the
                        // receipt timed out and the message comes back next round.
                        Payload::Error(e) if e.code == 1003 && (attempt > 0 || nodes > 1) => break,
                        reply if retryable(nodes, &reply) && attempt < 100 => c.run_for_ms(100),
                        other => fail(
                            &c,
                            seed,
                            format!("healed txn of {} answered {other:?}", d.msg),
                        ),
                    }
                }
            }
        }
        let Payload::DequeueOk(left) = settled(&mut c, dequeue("in", 100)) else {
            fail(&c, seed, "final dequeue refused".into());
        };
        if !left.msgs.is_empty() {
            fail(
                &c,
                seed,
                format!("{} inputs never processed", left.msgs.len()),
            );
        }
        // Messages in `out` by id, each acked once seen: a redelivery (after a lost
        // ack, or a dequeue whose outcome was unknown) is not a second output. Done
        // when nothing comes back after waiting out the visibility timeout.
        let mut by_id: BTreeMap<String, u64> = BTreeMap::new();
        let mut waited = false;
        for round in 0.. {
            if round == 500 {
                fail(&c, seed, "the output drain does not end".into());
            }
            let Payload::DequeueOk(ok) = settled(&mut c, dequeue("out", 100)) else {
                fail(&c, seed, "output dequeue refused".into());
            };
            if ok.msgs.is_empty() {
                if waited {
                    break;
                }
                c.run_for_ms(visibility_ms + 100);
                waited = true;
                continue;
            }
            waited = false;
            for d in ok.msgs {
                let ack = Payload::Ack(Receipt {
                    queue: "out".into(),
                    receipt: d.receipt.clone(),
                    delay_ms: None,
                    visibility_ms: None,
                });
                c.request(leader(&c).unwrap_or(round % nodes), ack);
                by_id.insert(d.id, d.msg.to_value().as_u64().unwrap_or(u64::MAX));
            }
        }
        let mut outputs: BTreeMap<u64, usize> = BTreeMap::new();
        for value in by_id.into_values() {
            *outputs.entry(value).or_default() += 1;
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
