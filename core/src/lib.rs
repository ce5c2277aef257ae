//! # herald-core
//!
//! Herald's messaging logic as one pure, single-threaded, sans-IO state machine.
//! A driver feeds [`Node::step`] events (a decoded message, a tick of time) and carries
//! out the [`Effect`]s it returns (send this, log that), in order. The core reads no
//! clock, socket, file or thread: time and randomness are inputs, so a seed and an
//! input sequence always give the same effects.
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
//!     "{\"src\":\"n0\",\"dest\":\"c1\",\"body\":{\"type\":\"echo_ok\",\"echo\":\"hi\",\"msg_id\":2,\"in_reply_to\":1}}\n"
//! );
//! ```

mod broadcast;
pub mod broker;
mod config;
mod counter;
pub mod dedup;
mod event;
pub mod group;
pub mod log;
pub mod msg;
mod node;
pub mod producer;
pub mod queue;
pub mod raft;
mod rng;

/// Serde for maps whose keys are not strings (tuples, structs): as a list of pairs,
/// since JSON object keys must be strings.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}
pub mod rpc;
#[cfg(feature = "sim")]
pub mod sim;
mod time;
pub mod timer;
pub mod wire;

pub use config::Config;
pub use event::{Effect, Effects, Event, Level, LogRecord, Record};
pub use msg::{ErrorCode, Payload};
pub use node::{ClusterStatus, Node};
pub use rng::Rng;
pub use time::Time;
pub use wire::Message;
