//! What crosses a connection: Maelstrom's JSON-lines envelope and its codec, the
//! bounded line framer, and the typed message bodies ([`msg`]), whose `payloads!`
//! table also says where each request kind goes and what running it does.

mod codec;
mod framer;
mod json;
pub(crate) mod kafka_msg;
pub mod msg;

pub use codec::{decode, decode_from, encode, Body, DecodeError, Invalid, Message};
pub use framer::{Frame, LineFramer};
pub use json::Json;
