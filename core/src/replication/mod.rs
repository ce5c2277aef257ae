//! Replication: Raft ([`raft`]), and the glue ([`cluster`]) that replicates the node's
//! state machine, the broker and its reply cache, over one Raft group on a cluster of
//! more than one node.

mod cluster;
mod raft;

pub use cluster::ClusterStatus;
pub(crate) use cluster::{forward_failed, Replication};
pub(crate) use raft::RaftChange;
