//! Typed message bodies with Maelstrom's exact field names, and the error codes.
//!
//! Every body kind appears once, in the `payloads!` table below: that table makes the
//! [`Payload`] enum, its `type` strings, and the decoder that picks a kind's fields.
//! `*_ok` bodies carry only their schema's fields (Maelstrom rejects extra keys).

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, IgnoredAny};
use serde::Serialize;
use serde_json::Value;

/// Maelstrom's error codes (0–999 are Maelstrom's; Herald's own start at 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The operation did not finish in time; it may or may not have happened.
    Timeout = 0,
    /// The request was addressed to a node that does not exist.
    NodeNotFound = 1,
    /// The request type is not implemented.
    NotSupported = 10,
    /// Definitely not done now (not initialised, a limit reached, no quorum): retry later.
    TemporarilyUnavailable = 11,
    /// The request could not be understood (missing or ill-typed fields).
    MalformedRequest = 12,
    /// A failure whose outcome is unknown.
    Crash = 13,
    /// A failure known not to have taken effect.
    Abort = 14,
    /// The key does not exist.
    KeyDoesNotExist = 20,
    /// The key already exists.
    KeyAlreadyExists = 21,
    /// A precondition (such as an expected value) did not hold.
    PreconditionFailed = 22,
    /// A transaction conflicted with another and was aborted.
    TxnConflict = 30,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// True if an error with this code means the operation did not and will not happen.
    pub const fn is_definite(self) -> bool {
        !matches!(self, ErrorCode::Timeout | ErrorCode::Crash)
    }
}

/// `init`: tells a node its id and the ids of every node in the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Init {
    /// This node's id.
    pub node_id: String,
    /// Every node's id, this one included, in the same order on every node.
    pub node_ids: Vec<String>,
}

/// `echo` and `echo_ok`: any JSON value, returned unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Echo {
    /// The value to echo.
    pub echo: Value,
}

/// `generate_ok`: a cluster-wide unique id.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerateOk {
    /// The id: `<node>-<counter>`.
    pub id: String,
}

/// `topology`: each node's neighbours, as suggested by Maelstrom.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Topology {
    /// Node id → its neighbours.
    pub topology: BTreeMap<String, Vec<String>>,
}

/// `broadcast`: a value every node must eventually return from `read`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Broadcast {
    /// The value (Maelstrom sends integers).
    pub message: i64,
}

/// `read_ok`: the broadcast workload's `messages` or the counter workload's `value`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ReadOk {
    /// Every broadcast value this node has (broadcast workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<i64>>,
    /// The counter's value (g-counter and pn-counter workloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
}

/// `add`: add `delta` to the counter.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Add {
    /// The amount; negative values make it a pn-counter.
    pub delta: i64,
}

/// `gossip` (node to node): broadcast values the receiver may lack.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Gossip {
    /// The values.
    pub values: Vec<i64>,
}

/// `merge` (node to node): a counter's full state, to merge by pointwise maximum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Merge {
    /// Node id → total of the positive deltas that node has accepted.
    pub inc: BTreeMap<String, u64>,
    /// Node id → total of the negated negative deltas that node has accepted.
    pub dec: BTreeMap<String, u64>,
}

/// `error`: the request failed; `code` says how (see [`ErrorCode`]).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The numeric error code.
    pub code: u32,
    /// A human-readable reason.
    #[serde(default)]
    pub text: String,
}

impl ErrorBody {
    /// An error body with a code and a reason.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.code(),
            text: text.into(),
        }
    }
}

macro_rules! payloads {
    (
        units { $( $(#[$udoc:meta])* $ukind:literal => $uvar:ident, )* }
        bodies { $( $(#[$bdoc:meta])* $bkind:literal => $bvar:ident($bty:ty), )* }
    ) => {
        /// A message body, tagged on the wire by its `type` field.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum Payload {
            $( $(#[$udoc])* #[serde(rename = $ukind)] $uvar, )*
            $( $(#[$bdoc])* #[serde(rename = $bkind)] $bvar($bty), )*
        }

        impl Payload {
            /// The `type` string of this body.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Payload::$uvar => $ukind, )*
                    $( Payload::$bvar(_) => $bkind, )*
                }
            }

            /// True if `kind` is a `type` this node understands.
            pub fn is_known_kind(kind: &str) -> bool {
                matches!(kind, $( $ukind )|* | $( $bkind )|*)
            }

            /// Decodes the fields of a body whose `type` is `kind` (other keys are
            /// ignored). An unknown kind is an error.
            pub fn decode_fields<'de, D: Deserializer<'de>>(
                kind: &str,
                fields: D,
            ) -> Result<Payload, D::Error> {
                Ok(match kind {
                    $( $ukind => { IgnoredAny::deserialize(fields)?; Payload::$uvar } )*
                    $( $bkind => Payload::$bvar(<$bty>::deserialize(fields)?), )*
                    other => {
                        return Err(serde::de::Error::custom(format_args!(
                            "unsupported message type {other:?}"
                        )))
                    }
                })
            }
        }
    };
}

payloads! {
    units {
        /// Reply to `init`.
        "init_ok" => InitOk,
        /// Ask for a unique id.
        "generate" => Generate,
        /// Reply to `topology`.
        "topology_ok" => TopologyOk,
        /// Reply to `broadcast`.
        "broadcast_ok" => BroadcastOk,
        /// Read the broadcast set or the counter.
        "read" => Read,
        /// Reply to `add`.
        "add_ok" => AddOk,
        /// Reply to `gossip`.
        "gossip_ok" => GossipOk,
        /// Reply to `merge`.
        "merge_ok" => MergeOk,
    }
    bodies {
        /// Initialise the node.
        "init" => Init(Init),
        /// Echo a value.
        "echo" => Echo(Echo),
        /// Reply to `echo`.
        "echo_ok" => EchoOk(Echo),
        /// Reply to `generate`.
        "generate_ok" => GenerateOk(GenerateOk),
        /// Suggest neighbours for gossip.
        "topology" => Topology(Topology),
        /// Add a value to the broadcast set.
        "broadcast" => Broadcast(Broadcast),
        /// Reply to `read`.
        "read_ok" => ReadOk(ReadOk),
        /// Add to the counter.
        "add" => Add(Add),
        /// Node to node: broadcast values.
        "gossip" => Gossip(Gossip),
        /// Node to node: counter state.
        "merge" => Merge(Merge),
        /// A failed request.
        "error" => Error(ErrorBody),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_codes_match_maelstrom() {
        assert!(!ErrorCode::Timeout.is_definite());
        assert!(!ErrorCode::Crash.is_definite());
        assert!(ErrorCode::TemporarilyUnavailable.is_definite());
        assert_eq!(ErrorCode::TxnConflict.code(), 30);
        assert_eq!(ErrorCode::MalformedRequest.code(), 12);
    }

    #[test]
    fn kinds_are_known_and_unknown_ones_are_not() {
        assert!(Payload::is_known_kind("echo"));
        assert!(Payload::is_known_kind("init_ok"));
        assert!(!Payload::is_known_kind("frobnicate"));
        assert_eq!(Payload::Read.kind(), "read");
        assert_eq!(Payload::Add(Add { delta: 1 }).kind(), "add");
    }
}
