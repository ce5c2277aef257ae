//! What goes into the core (events) and what comes out (effects).

use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::replication::RaftChange;
use crate::wire::{Invalid, Message};
use crate::Time;

/// Something that happened, handed to [`crate::Node::step`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A decoded message arrived.
    Message(Message),
    /// A line arrived that decoded to an answerable but invalid request.
    Invalid(Invalid),
    /// Only time passed (the driver woke at `next_deadline()`).
    Tick,
}

/// Something the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a message (to a client or a peer).
    Send(Message),
    /// Write a diagnostic line (to stderr, for the stdio driver).
    Log(LogLine),
    /// Make this record durable before carrying out any later effect of the same step
    /// (a driver without storage ignores it).
    Persist(WalRecord),
}

/// A write-ahead record: a durable input. The core is deterministic, so replaying every record, in order,
/// through a fresh node ([`crate::Node::recover`]) rebuilds its state exactly: the
/// queues, in-flight deliveries and their receipts, groups, offsets, dedup windows.
/// A step is recorded when its request can change state, or when broker timers
/// (visibility timeouts, delays, TTLs, sessions, long-poll deadlines) ran in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    /// When the step ran.
    pub(crate) at: Time,
    /// The request, or `None` for a step in which only timers ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) msg: Option<Message>,
    /// In a cluster: a change to the Raft state (term and vote, log, snapshot), which
    /// is restored as is rather than replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) raft: Option<RaftChange>,
}

impl WalRecord {
    /// When the step ran.
    pub fn at(&self) -> Time {
        self.at
    }

    /// The step's request, or `None` for a step in which only timers ran (or a
    /// change to the Raft state).
    pub fn msg(&self) -> Option<&Message> {
        self.msg.as_ref()
    }

    /// Appends the record's bytes (compact JSON, no newline) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("records always serialize");
    }

    /// Reads a record written by [`WalRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<WalRecord, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The caller-owned effect buffer, reused between steps.
pub type Effects = SmallVec<[Effect; 4]>;

/// How severe a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine-grained tracing of every decision.
    Debug,
    /// Notable but normal events.
    Info,
    /// Something went wrong and was handled (bad input, a limit reached).
    Warn,
    /// Something went wrong that an operator should look at.
    Error,
    /// Logging switched off.
    Off,
}

impl Level {
    /// The level's name in logs and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Off => "off",
        }
    }

    /// Parses a level name (case-insensitive).
    pub fn parse(name: &str) -> Option<Level> {
        [
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
            Level::Off,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(name: &str) -> Result<Level, String> {
        Level::parse(name)
            .ok_or_else(|| format!("{name:?} is not a level (debug, info, warn, error or off)"))
    }
}

/// A structured diagnostic line: a level, a fixed event name, and `key=value` details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// A stable, greppable name for what happened (e.g. `rpc_gave_up`).
    pub event: &'static str,
    /// Details as `key=value` pairs separated by spaces.
    pub detail: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level={} event={}", self.level.as_str(), self.event)?;
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}
