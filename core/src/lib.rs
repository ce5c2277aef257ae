//! # herald-core
//!
//! Herald's messaging logic as one pure, single-threaded, sans-IO state machine.
//! A driver feeds [`Node::step`] events (a decoded message, a tick of time) and carries
//! out the [`Effect`]s it returns (persist this, send that, log a line), in order. The
//! core reads no clock, socket, file or thread: time and randomness are inputs, so a
//! seed and an input sequence always give the same effects.
//!
//! ```
//! use herald_core::{wire, Config, Effect, Effects, Event, Node, Time};
//!
//! let mut node = Node::new(Config::default());
//! let mut out = Effects::new();
//! for line in [
//!     r#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0"]}}"#,
//!     r#"{"src":"c1","dest":"n0","body":{"type":"echo","msg_id":1,"echo":"hi"}}"#,
//! ] {
//!     let msg = wire::decode(line.as_bytes()).unwrap();
//!     node.step(Time::ZERO, Event::Message(msg), &mut out);
//! }
//! // Effects come in order: `Persist` the init, `Send` init_ok, `Send` echo_ok.
//! let Some(Effect::Send(reply)) = out.last() else { panic!() };
//! let mut line = Vec::new();
//! wire::encode(reply, &mut line);
//! assert_eq!(
//!     String::from_utf8(line).unwrap(),
//!     "{\"src\":\"n0\",\"dest\":\"c1\",\"body\":{\"type\":\"echo_ok\",\"echo\":\"hi\",\"in_reply_to\":1,\"msg_id\":1}}\n"
//! );
//! ```
//!
//! ## The layers (see docs/architecture.md)
//!
//! | module | what |
//! |---|---|
//! | `runtime` | [`Node`], [`Event`] in, [`Effect`] out, [`Config`], [`Time`], [`Rng`], timers, the RPC table, the reply cache |
//! | [`wire`] | the JSON-lines codec, the line framer, the message types ([`wire::msg`]) and the table of request kinds |
//! | `workloads` | Maelstrom's broadcast and counter workloads |
//! | `broker` | keyed logs, topics and consumer groups, work queues, idempotent producers, transactions |
//! | `replication` | Raft, and the glue that replicates the broker over it |
//! | `sim` | an in-process cluster on a simulated network (feature `sim`) |
#![warn(unreachable_pub)]

mod broker;
mod replication;
mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;
mod workloads;

pub use broker::{BrokerMetrics, GroupLag};
pub use replication::ClusterStatus;
pub use runtime::{
    Config, ConfigError, ConfigField, Effect, Effects, Event, Level, LogLine, Node, NodeMetrics,
    Rng, Time, WalRecord,
};
pub use wire::msg::{ErrorCode, Payload};
pub use wire::Message;
