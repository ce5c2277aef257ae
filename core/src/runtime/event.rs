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

    /// Appends the record's bytes (format [`RECORD_FORMAT`]) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let kind = match (&self.msg, &self.raft) {
            (None, None) => RecordKind::Timers,
            (Some(_), _) => RecordKind::Message,
            (None, Some(_)) => RecordKind::Raft,
        };
        record_header(out, kind, self.at);
        // Writing to a Vec cannot fail, and every message and Raft change serializes.
        match (&self.msg, &self.raft) {
            (None, None) => {}
            (Some(msg), _) => serde_json::to_writer(out, msg).expect("messages serialize"),
            (None, Some(raft)) => serde_json::to_writer(out, raft).expect("changes serialize"),
        }
    }

    /// Appends the bytes of the record [`Effect::PersistInput`] asks for, made from the
    /// line the step's input was decoded from, `decode_from(line, src, dest)`. The line
    /// is copied as it came, and decoded again on replay.
    pub fn encode_line(at: Time, src: &str, dest: &str, line: &[u8], out: &mut Vec<u8>) {
        record_header(out, RecordKind::Line, at);
        for name in [src, dest] {
            let len = u32::try_from(name.len()).expect("a node or client name is under 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(line);
    }

    /// Reads a record written by [`WalRecord::encode`] or [`WalRecord::encode_line`],
    /// or by a build that wrote JSON records (format 1).
    pub fn decode(bytes: &[u8]) -> Result<WalRecord, String> {
        match bytes.first() {
            Some(b'{') => WalRecord::decode_json(bytes),
            Some(&RECORD_FORMAT) => WalRecord::decode_binary(&bytes[1..]),
            Some(other) => Err(format!(
                "record format {other} is not one this build reads (1: JSON, {RECORD_FORMAT}: \
                 binary); was it written by a newer Herald?"
            )),
            None => Err("an empty record".into()),
        }
    }

    /// Format [`RECORD_FORMAT`]: the bytes after the format byte.
    fn decode_binary(bytes: &[u8]) -> Result<WalRecord, String> {
        let (&[kind], rest) = bytes.split_first_chunk().ok_or("a record without a kind")?;
        let (at, mut rest) = rest
            .split_first_chunk::<8>()
            .ok_or("a record cut short in its time")?;
        let at = Time::from_micros(u64::from_le_bytes(*at));
        let json = |e: serde_json::Error| e.to_string();
        let (msg, raft) = match kind {
            k if k == RecordKind::Timers as u8 => match rest.is_empty() {
                true => (None, None),
                false => return Err("a timers record with bytes after its time".into()),
            },
            k if k == RecordKind::Line as u8 => {
                let mut name = || -> Result<&str, String> {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or("a line record cut short")?;
                    let len = u32::from_le_bytes(*len) as usize;
                    let (name, tail) = tail
                        .split_at_checked(len)
                        .ok_or("a line record cut short in a name")?;
                    rest = tail;
                    std::str::from_utf8(name).map_err(|_| "a name that is not UTF-8".to_owned())
                };
                let (src, dest) = (name()?, name()?);
                let msg =
                    decode_from(rest, src, dest).map_err(|e| format!("the record's line: {e}"))?;
                (Some(msg), None)
            }
            k if k == RecordKind::Message as u8 => {
                (Some(serde_json::from_slice(rest).map_err(json)?), None)
            }
            k if k == RecordKind::Raft as u8 => {
                (None, Some(serde_json::from_slice(rest).map_err(json)?))
            }
            k => return Err(format!("unknown record kind {k}")),
        };
        Ok(WalRecord { at, msg, raft })
    }

    /// Format 1, JSON: `{"at":..,"msg":..}`, `{"at":..,"raft":..}` or
    /// `{"at":..,"src":..,"dest":..,"line":<line>}`.
    fn decode_json(bytes: &[u8]) -> Result<WalRecord, String> {
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

/// The format of the write-ahead records this build writes, their first byte: binary,
/// `[format][kind][at: u64 LE, µs]` and then by kind (see [`RecordKind`]). Format 1,
/// JSON, began with `{`; records of both formats are read.
pub(crate) const RECORD_FORMAT: u8 = 2;

/// What a record of format [`RECORD_FORMAT`] holds after its time.
#[derive(Clone, Copy)]
enum RecordKind {
    /// Nothing: only timers ran in the step.
    Timers = 0,
    /// `[len: u32 LE][src][len: u32 LE][dest]` and then the request line as it came.
    Line = 1,
    /// The request as JSON (a driver that built the message, not read it from a line).
    Message = 2,
    /// A change to the Raft state, as JSON.
    Raft = 3,
}

/// Appends the format byte, `kind` and `at`.
fn record_header(out: &mut Vec<u8>, kind: RecordKind, at: Time) {
    out.extend_from_slice(&[RECORD_FORMAT, kind as u8]);
    out.extend_from_slice(&at.as_micros().to_le_bytes());
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
        // The line is kept as it came, whitespace and escapes included, after the
        // format, the kind, the time and the two names.
        let names = [&3u32.to_le_bytes()[..], b"c\"1", &2u32.to_le_bytes(), b"n0"].concat();
        let head = [&[RECORD_FORMAT, 1][..], &42u64.to_le_bytes(), &names].concat();
        assert_eq!(bytes, [&head[..], line].concat());
        // A record made from the message reads the same.
        let mut built = Vec::new();
        WalRecord::input(Time::from_micros(42), msg).encode(&mut built);
        assert_eq!(WalRecord::decode(&built), Ok(record.clone()));
        // A line that does not decode is an error, not a record without its request.
        let mut bad = Vec::new();
        WalRecord::encode_line(
            Time::ZERO,
            "c",
            "n0",
            br#"{"body":{"type":"enqueue"}}"#,
            &mut bad,
        );
        assert!(WalRecord::decode(&bad)
            .unwrap_err()
            .contains("the record's line"));
        let mut timers = Vec::new();
        WalRecord::decode(br#"{"at":5}"#)
            .unwrap()
            .encode(&mut timers);
        assert_eq!(
            timers,
            [&[RECORD_FORMAT, 0][..], &5u64.to_le_bytes()].concat()
        );
        assert_eq!(WalRecord::decode(&timers).map(|r| r.msg), Ok(None));
        assert!(matches!(
            WalRecord::decode(&bytes)
                .unwrap()
                .msg()
                .map(|m| &m.body.payload),
            Some(Payload::Enqueue(_))
        ));
    }

    #[test]
    fn records_of_format_1_json_still_read() {
        let line = br#"{"body":{"type":"enqueue","queue":"q","msg":[1],"msg_id":7}}"#;
        let msg = decode_from(line, "c\"1", "n0").unwrap();
        let expected = WalRecord::input(Time::from_micros(42), msg.clone());
        let as_line = [
            &br#"{"at":42,"src":"c\"1","dest":"n0","line":"#[..],
            line,
            b"}",
        ]
        .concat();
        assert_eq!(WalRecord::decode(&as_line), Ok(expected.clone()));
        let as_message = serde_json::to_vec(&expected).unwrap();
        assert!(as_message.starts_with(br#"{"at":42,"msg":{"#));
        assert_eq!(WalRecord::decode(&as_message), Ok(expected));
        let bad = br#"{"at":1,"src":"c","dest":"n0","line":{"body":{"type":"enqueue"}}}"#;
        assert!(WalRecord::decode(bad)
            .unwrap_err()
            .contains("the record's line"));
        let timers = WalRecord::decode(br#"{"at":5}"#).unwrap();
        assert_eq!((timers.at, timers.msg), (Time::from_micros(5), None));
    }

    #[test]
    fn a_record_of_an_unknown_format_or_cut_short_is_an_error_that_names_it() {
        let err = WalRecord::decode(&[3, 0, 0]).unwrap_err();
        assert!(
            err.contains("record format 3") && err.contains("newer"),
            "{err}"
        );
        let mut line = Vec::new();
        WalRecord::encode_line(Time::ZERO, "c1", "n0", br#"{"body":{}}"#, &mut line);
        for cut in [0, 1, 5, 10, 13, 16] {
            assert!(WalRecord::decode(&line[..cut]).is_err(), "cut at {cut}");
        }
        let mut kind = line.clone();
        kind[1] = 9;
        assert!(WalRecord::decode(&kind).unwrap_err().contains("kind 9"));
        let mut timers_with_more = Vec::new();
        WalRecord::decode(br#"{"at":5}"#)
            .unwrap()
            .encode(&mut timers_with_more);
        timers_with_more.push(0);
        assert!(WalRecord::decode(&timers_with_more).is_err());
    }
}
