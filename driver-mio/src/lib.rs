//! # herald-mio
//!
//! The Herald broker as a TCP server ([`server`]) with a write-ahead log ([`wal`]),
//! and a blocking client ([`client`]) that the `herald` command line uses.

pub mod bench;
pub mod client;
pub mod server;
pub mod wal;
