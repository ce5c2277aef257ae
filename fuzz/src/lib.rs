//! # herald-fuzz
//!
//! Inputs for fuzzing the core: [`Op`] is a structured action on a node (a request, a
//! peer's message, a reply, garbage, time passing) that bolero generates; [`run_ops`]
//! plays a sequence of them into a [`Node`] and checks its invariants after every step.
//! The targets live in `tests/` and run under `cargo test` (random inputs) or under
//! `cargo bolero test` with a coverage-guided engine.

use bolero::TypeGenerator;
use herald_core::msg::*;
use herald_core::wire::{self, Body, DecodeError};
use herald_core::{Config, Effects, Event, Message, Node, Time};

/// One thing that can happen to a node.
#[derive(Clone, Debug, TypeGenerator)]
pub enum Op {
    /// `init` as node `me` of `count` nodes.
    Init {
        /// Index of this node.
        me: u8,
        /// Cluster size.
        count: u8,
    },
    /// A client request.
    Request(Request),
    /// A peer gossips broadcast values.
    Gossip {
        /// Which peer.
        from: u8,
        /// The values.
        values: Vec<i64>,
    },
    /// A peer sends counter state.
    Merge {
        /// Which peer.
        from: u8,
        /// Per-node increments.
        inc: Vec<(u8, u64)>,
    },
    /// A peer replies to one of this node's requests (or to nothing).
    Reply {
        /// Which peer.
        from: u8,
        /// The `in_reply_to`.
        in_reply_to: u16,
        /// 0: gossip_ok, 1: merge_ok, 2: error 11, other: error 13.
        kind: u8,
    },
    /// An arbitrary line.
    Garbage(Vec<u8>),
    /// Time passes and the node is ticked.
    AdvanceMs(u16),
}

/// A client request of each workload.
#[derive(Clone, Debug, TypeGenerator)]
pub enum Request {
    /// `echo`.
    Echo(i64),
    /// `generate`.
    Generate,
    /// `topology` with a neighbour list per node.
    Topology(Vec<Vec<u8>>),
    /// `broadcast`.
    Broadcast(i64),
    /// `read`.
    Read,
    /// `add`.
    Add(i64),
}

fn node_name(i: u8) -> String {
    format!("n{}", i % 8)
}

fn request_payload(request: Request) -> Payload {
    match request {
        Request::Echo(v) => Payload::Echo(Echo { echo: v.into() }),
        Request::Generate => Payload::Generate,
        Request::Topology(lists) => Payload::Topology(Topology {
            topology: lists
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    (
                        node_name(i as u8),
                        l.iter().map(|&n| node_name(n)).collect(),
                    )
                })
                .collect(),
        }),
        Request::Broadcast(v) => Payload::Broadcast(Broadcast { message: v }),
        Request::Read => Payload::Read,
        Request::Add(delta) => Payload::Add(Add { delta }),
    }
}

/// Plays `ops` into a fresh node with a small configuration (so limits are hit),
/// checking invariants after every step. Panics on any violation.
pub fn run_ops(ops: &[Op]) {
    let config = Config {
        max_pending_rpcs: 4,
        dedup_capacity: 8,
        max_broadcast_values: 16,
        gossip_batch_max: 3,
        rpc_max_attempts: 3,
        ..Config::default()
    };
    let mut node = Node::new(config);
    let mut out = Effects::new();
    let mut now = Time::ZERO;
    let mut msg_id = 0u64;
    for op in ops.iter().cloned() {
        msg_id += 1;
        let envelope = |src: String, payload, in_reply_to| {
            Event::Message(Message {
                src,
                dest: "n0".into(),
                body: Body {
                    payload,
                    msg_id: Some(msg_id),
                    in_reply_to,
                },
            })
        };
        let event = match op {
            Op::Init { me, count } => {
                let count = count % 8 + 1;
                let node_ids = (0..count).map(node_name).collect();
                let init = Init {
                    node_id: node_name(me % count),
                    node_ids,
                };
                envelope("c0".into(), Payload::Init(init), None)
            }
            Op::Request(r) => envelope(format!("c{}", msg_id % 3), request_payload(r), None),
            Op::Gossip { from, values } => {
                envelope(node_name(from), Payload::Gossip(Gossip { values }), None)
            }
            Op::Merge { from, inc } => {
                let inc = inc.into_iter().map(|(n, c)| (node_name(n), c)).collect();
                let merge = Merge {
                    inc,
                    dec: Default::default(),
                };
                envelope(node_name(from), Payload::Merge(merge), None)
            }
            Op::Reply {
                from,
                in_reply_to,
                kind,
            } => {
                let payload = match kind % 4 {
                    0 => Payload::GossipOk,
                    1 => Payload::MergeOk,
                    2 => Payload::Error(ErrorBody::new(ErrorCode::TemporarilyUnavailable, "busy")),
                    _ => Payload::Error(ErrorBody::new(ErrorCode::Crash, "?")),
                };
                envelope(node_name(from), payload, Some(u64::from(in_reply_to)))
            }
            Op::Garbage(bytes) => match wire::decode(&bytes) {
                Ok(msg) => Event::Message(msg),
                Err(DecodeError::Invalid(bad)) => Event::Invalid(bad),
                Err(DecodeError::Unreadable(_)) => Event::Tick,
            },
            Op::AdvanceMs(ms) => {
                now = now.plus_millis(u64::from(ms));
                Event::Tick
            }
        };
        node.step(now, event, &mut out);
        node.check_invariants();
        for effect in out.drain(..) {
            if let herald_core::Effect::Send(msg) = effect {
                let mut line = Vec::new();
                wire::encode(&msg, &mut line);
                let back = wire::decode(&line[..line.len() - 1]);
                assert_eq!(
                    back.as_ref(),
                    Ok(&msg),
                    "an effect must round-trip the codec"
                );
            }
        }
    }
}
