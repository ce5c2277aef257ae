//! # herald-mio
//!
//! The Herald broker as a TCP server ([`server`]) with a write-ahead log ([`wal`]),
//! links to the other nodes of a cluster ([`peers`]), and a blocking client
//! ([`client`]) that the `herald` command line uses.

pub mod acl;
pub mod auth;
pub mod bench;
pub mod client;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod peer_auth;
pub mod peers;
pub mod server;
pub mod tls;
pub mod wal;
