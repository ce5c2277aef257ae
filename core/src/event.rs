//! What goes into the core (events) and what comes out (effects).

use std::fmt;

use smallvec::SmallVec;

use crate::wire::{Invalid, Message};

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
    /// Write a log record (to stderr, for the stdio driver).
    Log(LogRecord),
}

/// The caller-owned effect buffer, reused between steps.
pub type Effects = SmallVec<[Effect; 4]>;

/// How severe a log record is.
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

/// A structured log record: a level, a fixed event name, and `key=value` details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// A stable, greppable name for what happened (e.g. `rpc_gave_up`).
    pub event: &'static str,
    /// Details as `key=value` pairs separated by spaces.
    pub detail: String,
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level={} event={}", self.level.as_str(), self.event)?;
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}
