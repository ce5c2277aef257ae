//! What goes into the core (events) and what comes out (effects).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::replication::RaftChange;
use crate::wire::{decode_from, Invalid, Message};
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
    /// Make this step's input message durable, as a record of time `at`, before
    /// carrying out any later effect of the same step. The driver holds the input, so
    /// the core does not copy it: a driver that decoded it from a line writes that
    /// line as it came ([`WalRecord::encode_line`]); one that built it keeps a copy
    /// ([`WalRecord::input`]). Only an [`Event::Message`] step asks for this.
    PersistInput {
        /// When the step ran.
        at: Time,
    },
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

    /// The record of a step whose input was `msg` (what [`Effect::PersistInput`] asks
    /// for, for a driver that kept the message).
    pub fn input(at: Time, msg: Message) -> WalRecord {
        WalRecord {
            at,
            msg: Some(msg),
            raft: None,
        }
    }

    /// Appends the record's bytes (compact JSON, no newline) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("records always serialize");
    }

    /// Appends the bytes of the record [`Effect::PersistInput`] asks for, made from the
    /// line the step's input was decoded from, `decode_from(line, src, dest)`, which
    /// is copied as it came: `{"at":..,"src":..,"dest":..,"line":<line>}`. The line
    /// must be UTF-8 (JSON text is); a driver keeps the message of any other line.
    pub fn encode_line(at: Time, src: &str, dest: &str, line: &[u8], out: &mut Vec<u8>) {
        debug_assert!(
            std::str::from_utf8(line).is_ok(),
            "lines in records are UTF-8"
        );
        fn json(out: &mut Vec<u8>, value: &impl Serialize) {
            serde_json::to_writer(&mut *out, value).expect("a time or a string serializes");
        }
        out.extend_from_slice(b"{\"at\":");
        json(out, &at);
        out.extend_from_slice(b",\"src\":");
        json(out, &src);
        out.extend_from_slice(b",\"dest\":");
        json(out, &dest);
        out.extend_from_slice(b",\"line\":");
        out.extend_from_slice(line);
        out.push(b'}');
    }

    /// Reads a record written by [`WalRecord::encode`] or [`WalRecord::encode_line`].
    pub fn decode(bytes: &[u8]) -> Result<WalRecord, String> {
        #[derive(Deserialize)]
        struct Stored<'a> {
            at: Time,
            #[serde(default)]
            msg: Option<Message>,
            #[serde(default)]
            raft: Option<RaftChange>,
            #[serde(default)]
            src: String,
            #[serde(default)]
            dest: String,
            #[serde(default, borrow)]
            line: Option<&'a RawValue>,
        }
        let stored: Stored<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let msg = match stored.line {
            Some(line) => Some(
                decode_from(line.get().as_bytes(), &stored.src, &stored.dest)
                    .map_err(|e| format!("the record's line: {e}"))?,
            ),
            None => stored.msg,
        };
        Ok(WalRecord {
            at: stored.at,
            msg,
            raft: stored.raft,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msg::Payload;

    #[test]
    fn a_line_record_reads_back_as_the_record_of_its_message() {
        let line =
            br#"{"body":{"type":"enqueue","queue":"q","msg":{"a": [1, "\u00e9"]},"msg_id":7}}"#;
        let msg = decode_from(line, "c\"1", "n0").unwrap();
        let mut bytes = Vec::new();
        WalRecord::encode_line(Time::from_micros(42), "c\"1", "n0", line, &mut bytes);
        let record = WalRecord::decode(&bytes).unwrap();
        assert_eq!(record, WalRecord::input(Time::from_micros(42), msg.clone()));
        // The line is kept as it came, whitespace and escapes included.
        assert!(bytes.ends_with(&[&b",\"line\":"[..], line, b"}"].concat()));
        // Records written from the message (before lines were kept) read the same.
        let mut old = Vec::new();
        WalRecord::input(Time::from_micros(42), msg).encode(&mut old);
        assert_eq!(WalRecord::decode(&old), Ok(record));
        // A line that does not decode is an error, not a record without its request.
        let bad = br#"{"at":1,"src":"c","dest":"n0","line":{"body":{"type":"enqueue"}}}"#;
        assert!(WalRecord::decode(bad)
            .unwrap_err()
            .contains("the record's line"));
        let timers = br#"{"at":5}"#;
        assert_eq!(WalRecord::decode(timers).map(|r| r.msg), Ok(None));
        assert!(matches!(
            WalRecord::decode(&bytes)
                .unwrap()
                .msg()
                .map(|m| &m.body.payload),
            Some(Payload::Enqueue(_))
        ));
    }
}
