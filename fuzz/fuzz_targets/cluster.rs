//! libFuzzer target: any schedule of requests, crashes, partitions and time on a
//! simulated 3-node Raft cluster; no acknowledged send lost, no offset with two values
//! (see `herald_fuzz::run_cluster_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Some(ops) = herald_fuzz::from_fuzz_bytes::<Vec<herald_fuzz::ClusterOp>>(bytes) {
        herald_fuzz::run_cluster_ops(&ops);
    }
});
