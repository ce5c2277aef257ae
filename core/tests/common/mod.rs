//! Helpers shared by the simulation tests: which seeds to run and how to fail.

use herald_core::sim::{Cluster, NetConfig};

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
