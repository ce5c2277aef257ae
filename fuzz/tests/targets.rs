//! Fuzz targets. Under `cargo test` each runs random inputs for `HERALD_FUZZ_SECS`
//! (default 1 s; e.g. `HERALD_FUZZ_SECS=600 cargo test -p herald-fuzz --release`). The
//! same checks run coverage-guided under libFuzzer as the cargo-fuzz targets in
//! `fuzz_targets/` (see the README).

use herald_fuzz::{
    check_codec, check_framer, check_kafka_frames, run_cluster_ops, run_ops, test_time, ClusterOp,
    Op,
};

/// Any bytes: decoding never panics, and whatever decodes re-encodes to a line that
/// decodes to the same message.
#[test]
fn codec_decode_any_bytes() {
    bolero::check!()
        .with_test_time(test_time())
        .for_each(check_codec);
}

/// Any bytes in any chunking: the framer never holds more than its limit and never
/// yields an empty line or one over the limit.
#[test]
fn framer_any_bytes() {
    bolero::check!()
        .with_test_time(test_time())
        .with_type::<(Vec<u8>, u8)>()
        .for_each(|(bytes, chunk)| check_framer(bytes, *chunk));
}

/// Any bytes in any chunking through the Kafka frame decoder and request handler.
#[test]
fn kafka_frames_any_bytes() {
    bolero::check!()
        .with_test_time(test_time())
        .with_type::<(Vec<u8>, u8)>()
        .for_each(|(bytes, chunk)| check_kafka_frames(bytes, *chunk));
}

/// Any sequence of events into a node: no panic, invariants hold after every step,
/// and every message it sends survives the codec.
#[test]
fn node_any_events() {
    bolero::check!()
        .with_test_time(test_time())
        .with_type::<Vec<Op>>()
        .for_each(|ops| run_ops(ops));
}

/// Any schedule on a simulated 3-node cluster: no acknowledged send lost, no offset
/// with two values, node invariants after every step.
#[test]
fn cluster_any_schedule() {
    bolero::check!()
        .with_test_time(test_time())
        .with_type::<Vec<ClusterOp>>()
        .for_each(|ops| run_cluster_ops(ops));
}

/// Regression (found by `node_any_events`): a `topology` arriving while gossip batches
/// were in flight rebuilt the gossip targets, so pending RPCs pointed at the wrong
/// peers and the in-flight bookkeeping no longer matched the RPC table.
#[test]
fn regression_topology_while_gossip_in_flight() {
    use herald_fuzz::Request;
    run_ops(&[
        Op::Init { me: 0, count: 3 },
        Op::Request(Request::Broadcast(1)),
        Op::AdvanceMs(150), // gossip to n1 and n2 now in flight
        Op::Request(Request::Topology(vec![vec![2], vec![0]])),
        Op::Request(Request::Broadcast(2)),
        Op::AdvanceMs(150),
        Op::Reply {
            from: 1,
            in_reply_to: 3,
            kind: 0,
        },
        Op::AdvanceMs(5_000),
    ]);
}
