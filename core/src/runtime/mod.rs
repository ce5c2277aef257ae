//! The node runtime: [`Node`] takes [`Event`]s and returns [`Effect`]s; it owns
//! `init` and message ids, dispatches each request by its kind, keeps the RPC table
//! for requests to peers and the reply cache for retried client requests, and runs
//! what is due. Time, randomness and configuration reach every component through one
//! step context ([`Ctx`]).

mod config;
mod event;
mod lru;
mod node;
pub(crate) mod pairs;
mod reply_cache;
mod rng;
mod rpc;
mod time;
mod timer;

pub use config::{Config, ConfigError, ConfigField};
pub use event::{Effect, Effects, Event, Level, LogLine, WalRecord};
pub use node::{Node, NodeMetrics};
pub use rng::Rng;
pub use time::Time;

pub(crate) use lru::Lru;
pub(crate) use node::{Machine, Purpose, Reply};
pub(crate) use reply_cache::ReplyCache;
pub(crate) use rpc::{RpcTable, RpcTimeout};
pub(crate) use timer::{Periodic, TimerId, Timers};

/// The step context of a node: borrows only its `now`, `config` and `rng` fields, so
/// its other fields stay free to borrow alongside.
macro_rules! cx {
    ($node:expr) => {
        $crate::runtime::Ctx {
            now: $node.now,
            config: &$node.config,
            rng: &mut $node.rng,
        }
    };
}
pub(crate) use cx;

/// What a step hands every component: the time, the configuration and the node's
/// randomness, instead of three arguments each.
pub(crate) struct Ctx<'a> {
    /// The step's time (never earlier than any before it).
    pub(crate) now: Time,
    /// The node's configuration.
    pub(crate) config: &'a Config,
    /// The node's one source of randomness.
    pub(crate) rng: &'a mut Rng,
}
