//! libFuzzer target: any sequence of events into a node, invariants checked after
//! every step, replay and snapshot equality at the end (see `herald_fuzz::run_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Some(ops) = herald_fuzz::from_fuzz_bytes::<Vec<herald_fuzz::Op>>(bytes) {
        herald_fuzz::run_ops(&ops);
    }
});
