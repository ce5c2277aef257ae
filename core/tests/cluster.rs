//! Multi-node behaviour on the simulated network: gossip workloads converge despite
//! message loss and a partition, without flooding, and leave no pending state behind.

use std::collections::BTreeMap;

use herald_core::msg::{Add, Broadcast, Payload, ReadOk, Topology};
use herald_core::sim::{Cluster, NetConfig};
use herald_core::Config;

fn net(seed: u64, loss_percent: u64) -> NetConfig {
    NetConfig {
        seed,
        min_latency_ms: 1,
        max_latency_ms: 30,
        loss_percent,
    }
}

fn read(cluster: &mut Cluster, node: usize) -> ReadOk {
    match cluster.request(node, Payload::Read) {
        Payload::ReadOk(r) => r,
        other => panic!("read on n{node}: {other:?}"),
    }
}

/// A line topology n0 - n1 - ... : the slowest shape for gossip to cross.
fn line(count: usize) -> BTreeMap<String, Vec<String>> {
    (0..count)
        .map(|i| {
            let neighbours = [i.checked_sub(1), Some(i + 1).filter(|&j| j < count)];
            (
                format!("n{i}"),
                neighbours
                    .into_iter()
                    .flatten()
                    .map(|j| format!("n{j}"))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn broadcast_reaches_every_node_after_a_partition_heals() {
    for seed in 0..20 {
        let config = |i: usize| Config {
            seed: seed * 100 + i as u64,
            ..Config::default()
        };
        let mut c = Cluster::new(5, net(seed, 20), config);
        for i in 0..5 {
            let reply = c.request(i, Payload::Topology(Topology { topology: line(5) }));
            assert_eq!(reply, Payload::TopologyOk);
        }
        let mut sent = Vec::new();
        let mut broadcast = |c: &mut Cluster, node: usize| {
            let message = sent.len() as i64;
            sent.push(message);
            let reply = c.request(node, Payload::Broadcast(Broadcast { message }));
            assert_eq!(reply, Payload::BroadcastOk);
        };
        for round in 0..10 {
            broadcast(&mut c, round % 5);
            c.run_for_ms(20);
        }
        c.partition(&[0, 1], &[2, 3, 4]);
        for round in 0..20 {
            broadcast(&mut c, round % 5);
            c.run_for_ms(50);
        }
        let left = read(&mut c, 0).messages.unwrap();
        let right = read(&mut c, 4).messages.unwrap();
        assert_ne!(
            left, right,
            "seed {seed}: a partition should keep values apart"
        );
        c.heal();
        c.run_for_ms(20_000);
        for node in 0..5 {
            let got = read(&mut c, node).messages;
            assert_eq!(got.as_deref(), Some(&sent[..]), "seed {seed} n{node}");
            assert_eq!(
                c.node(node).pending_rpcs(),
                0,
                "seed {seed} n{node}: leaked RPC state"
            );
        }
        // Batched, acknowledged gossip: a few messages per value, not a flood.
        let per_value = (c.stats.delivered + c.stats.dropped) / sent.len() as u64;
        assert!(
            per_value < 10,
            "seed {seed}: {per_value} messages per broadcast value"
        );
    }
}

#[test]
fn counter_converges_after_a_partition_heals() {
    for seed in 0..20 {
        let config = |i: usize| Config {
            seed: seed + i as u64,
            ..Config::default()
        };
        let mut c = Cluster::new(3, net(seed, 25), config);
        let mut total = 0;
        for round in 0..30 {
            if round == 10 {
                c.partition(&[0], &[1, 2]);
            }
            let delta = (round % 7) as i64 - 2; // negatives too: a pn-counter
            total += delta;
            assert_eq!(
                c.request(round % 3, Payload::Add(Add { delta })),
                Payload::AddOk
            );
            c.run_for_ms(40);
        }
        c.heal();
        c.run_for_ms(20_000);
        for node in 0..3 {
            let want = ReadOk {
                messages: None,
                value: Some(total),
            };
            assert_eq!(read(&mut c, node), want, "seed {seed} n{node}");
            assert_eq!(c.node(node).pending_rpcs(), 0);
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut c = Cluster::new(3, net(seed, 30), |i| Config {
            seed: i as u64,
            ..Config::default()
        });
        for v in 0..20 {
            c.request(v % 3, Payload::Broadcast(Broadcast { message: v as i64 }));
            c.run_for_ms(7);
        }
        c.run_for_ms(5_000);
        (c.stats, c.now())
    };
    assert_eq!(run(11), run(11));
    assert_ne!(
        run(11).0,
        run(12).0,
        "different seeds should take different paths"
    );
}
