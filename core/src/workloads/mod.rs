//! Maelstrom's gossip workloads, run by the node runtime: a broadcast set and a
//! grow-only (or positive-negative) counter.

mod broadcast;
mod counter;

pub(crate) use broadcast::BroadcastSet;
pub(crate) use counter::Counter;
