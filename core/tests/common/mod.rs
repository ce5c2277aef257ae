//! Helpers shared by the simulation tests: which seeds to run and how to fail.

// Each test binary uses a part of these.
#![allow(dead_code)]

use herald_core::sim::{Cluster, NetConfig};
use herald_core::wire::msg::Payload;
use herald_core::Rng;

/// The seeds to run: `SIM_SEED`, else `0..SIM_SEEDS`, else `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var("SIM_SEED"), var("SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(count)) => (0..count).collect(),
        (None, None) => (0..default).collect(),
    }
}

/// Panics with the seed, how to replay it, and the trace tail.
pub fn fail(cluster: &Cluster, seed: u64, what: String) -> ! {
    let tail = cluster.trace_tail();
    let tail = &tail[tail.len().saturating_sub(40)..];
    panic!(
        "seed {seed}: {what}\nreproduce: SIM_SEED={seed} cargo test\nlast events:\n{}",
        tail.join("\n")
    );
}

/// The network of the single-node broker workloads: client requests and replies are
/// lost at 0, 10 or 20 %, by seed.
pub fn lossy_clients(seed: u64) -> NetConfig {
    NetConfig {
        seed,
        client_loss_percent: seed % 3 * 10,
        ..NetConfig::default()
    }
}

/// The network of the cluster workloads: links between nodes lose 0–15 % and
/// duplicate 0–10 % of messages with 1–20 ms latency, and clients lose 0, 10 or 20 %.
pub fn cluster_net(seed: u64) -> NetConfig {
    NetConfig {
        seed,
        min_latency_ms: 1,
        max_latency_ms: 20,
        loss_percent: seed % 4 * 5,
        duplicate_percent: seed % 3 * 5,
        client_loss_percent: seed % 3 * 10,
    }
}

/// The network of a workload: [`lossy_clients`] on one node, [`cluster_net`] on more.
pub fn workload_net(seed: u64, nodes: usize) -> NetConfig {
    if nodes == 1 {
        lossy_clients(seed)
    } else {
        cluster_net(seed)
    }
}

/// The node a client talks to: a random one, or node 0 on a single node without a
/// draw (so single-node seeds replay as they did before clusters existed).
pub fn pick_node(rng: &mut Rng, nodes: usize) -> usize {
    if nodes == 1 {
        0
    } else {
        rng.below(nodes as u64) as usize
    }
}

/// One random fault (or none) on a cluster of `nodes`: a crash (also between a
/// step's records and its messages), a restart, a partition (one node or a minority
/// against the rest, a majorities ring, a one-way cut), a heal, or a node replacing
/// its records with a snapshot (so a later restart restores from it).
pub fn nemesis(c: &mut Cluster, rng: &mut Rng, nodes: usize) {
    let pick = |rng: &mut Rng| rng.below(nodes as u64) as usize;
    match rng.below(40) {
        0 => {
            let n = pick(rng);
            if c.is_alive(n) {
                c.crash(n);
            }
        }
        1 => c.crash_during_next_step(pick(rng)),
        2..=5 => {
            let n = pick(rng);
            if !c.is_alive(n) {
                c.restart(n);
            }
        }
        6 | 7 => c.heal(),
        8 => minority(c, rng, nodes),
        9 => majorities_ring(c, nodes),
        10 => {
            let (a, b) = (pick(rng), pick(rng));
            if a != b {
                c.cut_one_way(a, b);
            }
        }
        11 => c.compact(pick(rng)),
        _ => {}
    }
}

/// Heals, then cuts a random minority (one node up to half) from the rest.
fn minority(c: &mut Cluster, rng: &mut Rng, nodes: usize) {
    let mut order: Vec<usize> = (0..nodes).collect();
    for i in (1..nodes).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let k = rng.between(1, (nodes as u64 - 1) / 2 + 1) as usize;
    c.heal();
    c.partition(&order[..k], &order[k..]);
}

/// Heals, then lets each node hear only its two ring neighbours (Maelstrom's
/// `:majorities-ring` on 5 nodes; on 3 nodes, that is no cut at all).
fn majorities_ring(c: &mut Cluster, nodes: usize) {
    c.heal();
    for a in 0..nodes {
        for b in 0..nodes {
            let d = (a + nodes - b) % nodes;
            if a != b && d != 1 && d != nodes - 1 {
                c.cut_one_way(a, b);
            }
        }
    }
}

/// One of Maelstrom's partition targets: a node alone, a minority (up to half)
/// against the rest, or a majorities ring.
pub fn maelstrom_partition(c: &mut Cluster, rng: &mut Rng, nodes: usize) {
    match rng.below(3) {
        0 => {
            let n = rng.below(nodes as u64) as usize;
            let rest: Vec<usize> = (0..nodes).filter(|&i| i != n).collect();
            c.heal();
            c.partition(&[n], &rest);
        }
        1 => minority(c, rng, nodes),
        _ => majorities_ring(c, nodes),
    }
}

/// The live node that leads the highest term, if any.
pub fn leader(c: &Cluster) -> Option<usize> {
    (0..c.size())
        .filter(|&i| c.is_alive(i))
        .filter_map(|i| {
            let s = c.node(i).cluster_status()?;
            (s.leader == Some(format!("n{i}"))).then_some((s.term, i))
        })
        .max()
        .map(|(_, i)| i)
}

/// Asks the nodes in turn (reliably), the leader first, until one answers without an
/// error: on a healed cluster, some node leads or knows the leader soon. (Asking the
/// leader skips the forwarding hop, whose loss on a lossy link would end a request
/// as "unknown".)
pub fn settled(c: &mut Cluster, payload: Payload) -> Payload {
    for round in 0..50 {
        let (first, size) = (leader(c).unwrap_or(0), c.size());
        for node in (0..size).map(|i| (first + i) % size) {
            match c.request(node, payload.clone()) {
                Payload::Error(_) => {}
                reply => return reply,
            }
        }
        if round == 49 {
            break;
        }
        c.run_for_ms(200);
    }
    panic!(
        "no node answered {payload:?} on a healed cluster\n{}",
        c.trace_tail().join("\n")
    );
}
