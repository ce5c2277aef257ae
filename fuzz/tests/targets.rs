//! Fuzz targets. Under `cargo test` each runs random inputs for `HERALD_FUZZ_SECS`
//! (default 1 s; e.g. `HERALD_FUZZ_SECS=600 cargo test -p herald-fuzz --release`); under
//! `cargo bolero test -p herald-fuzz <name>` a coverage-guided engine drives it.

use herald_core::wire::{self, Frame, LineFramer};
use herald_fuzz::{run_ops, test_time, Op};

/// Any bytes: decoding never panics, and whatever decodes re-encodes to a line that
/// decodes to the same message.
#[test]
fn codec_decode_any_bytes() {
    bolero::check!()
        .with_test_time(test_time())
        .for_each(|bytes: &[u8]| {
            if let Ok(msg) = wire::decode(bytes) {
                let mut line = Vec::new();
                wire::encode(&msg, &mut line);
                assert_eq!(wire::decode(&line[..line.len() - 1]), Ok(msg));
            }
        });
}

/// Any bytes in any chunking: the framer never holds more than its limit and never
/// yields an empty line or one over the limit.
#[test]
fn framer_any_bytes() {
    bolero::check!()
        .with_test_time(test_time())
        .with_type::<(Vec<u8>, u8)>()
        .for_each(|(bytes, chunk)| {
            let max = 32;
            let mut framer = LineFramer::new(max);
            for piece in bytes.chunks(usize::from(*chunk).max(1)) {
                framer.feed(piece, |frame| {
                    if let Frame::Line(line) = frame {
                        assert!(!line.is_empty() && line.len() <= max && !line.contains(&b'\n'));
                    }
                });
                assert!(framer.buffered() <= max);
            }
        });
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
