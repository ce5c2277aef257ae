//! # herald-stdio
//!
//! Runs a [`herald_core::Node`] as a Maelstrom node: one JSON message per line on
//! stdin, replies on stdout, logs on stderr. A reader thread frames stdin into lines
//! and hands them over a bounded channel; the main thread owns the node, waits for
//! input with `recv_timeout` until the node's next deadline, and writes replies to a
//! buffered stdout that is flushed whenever no more input is waiting.

use std::io::{self, BufWriter, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use herald_core::wire::{self, DecodeError, Frame, LineFramer};
use herald_core::{Config, ConfigError, Effect, Effects, Event, Level, Node, Time};

/// Where the driver gets the time from.
pub trait Clock {
    /// The current time; must never go backwards.
    fn now(&self) -> Time;
}

/// Real time: microseconds since the clock was made.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> MonotonicClock {
        MonotonicClock(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// A node with its codec: input lines in, output lines and log lines out. This is the
/// whole driver minus threads and real time, which is what transcript tests run.
#[derive(Debug)]
pub struct Session {
    node: Node,
    effects: Effects,
    encoded: Vec<u8>,
}

impl Session {
    /// A session around a new node.
    pub fn new(config: Config) -> Session {
        Session {
            node: Node::new(config),
            effects: Effects::new(),
            encoded: Vec::new(),
        }
    }

    /// The node inside.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Handles one input line at `now`, writing replies to `out` and logs to `log`.
    pub fn handle_line(
        &mut self,
        now: Time,
        line: &[u8],
        out: &mut impl Write,
        log: &mut impl Write,
    ) -> io::Result<()> {
        let event = match wire::decode(line) {
            Ok(msg) => Event::Message(msg),
            Err(DecodeError::Invalid(bad)) => Event::Invalid(bad),
            Err(err @ DecodeError::Unreadable(_)) => {
                self.log_line(
                    now,
                    Level::Warn,
                    "unreadable_line",
                    &format!("error={:?}", err.to_string()),
                    log,
                );
                return Ok(());
            }
        };
        self.step(now, event, out, log)
    }

    /// Notes that a line over the length limit was dropped.
    pub fn handle_too_long(&mut self, now: Time, bytes: usize, log: &mut impl Write) {
        let limit = self.node.config().max_line_bytes;
        self.log_line(
            now,
            Level::Warn,
            "line_too_long",
            &format!("bytes={bytes} limit={limit}"),
            log,
        );
    }

    /// Runs the node's timers if `now` has reached its next deadline.
    pub fn tick_if_due(
        &mut self,
        now: Time,
        out: &mut impl Write,
        log: &mut impl Write,
    ) -> io::Result<()> {
        match self.node.next_deadline() {
            Some(deadline) if deadline <= now => self.step(now, Event::Tick, out, log),
            _ => Ok(()),
        }
    }

    fn step(
        &mut self,
        now: Time,
        event: Event,
        out: &mut impl Write,
        log: &mut impl Write,
    ) -> io::Result<()> {
        self.node.step(now, event, &mut self.effects);
        self.encoded.clear();
        for effect in self.effects.drain(..) {
            match effect {
                Effect::Send(msg) => wire::encode(&msg, &mut self.encoded),
                // Maelstrom nodes keep their state in memory only.
                Effect::Persist(_) | Effect::PersistInput { .. } => {}
                Effect::Log(record) => {
                    let _ = writeln!(
                        log,
                        "t={now} node={} {record}",
                        self.node.id().unwrap_or("-")
                    );
                }
            }
        }
        out.write_all(&self.encoded)
    }

    fn log_line(&self, now: Time, level: Level, event: &str, detail: &str, log: &mut impl Write) {
        if level >= self.node.config().log_level {
            let node = self.node.id().unwrap_or("-");
            let _ = writeln!(
                log,
                "t={now} node={node} level={} event={event} {detail}",
                level.as_str()
            );
        }
    }
}

/// What the reader thread hands to the node's thread.
enum Input {
    /// Whole lines, each ending in `\n`.
    Lines(Vec<u8>),
    /// A line over the limit was dropped.
    TooLong(usize),
}

/// Batches of input in the channel at once: bounds the driver's input memory to about
/// this many reads of [`READ_CHUNK_BYTES`] plus one maximum-length line.
const CHANNEL_BATCHES: usize = 16;
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Runs a node until `input` ends: the driver loop of docs/architecture.md.
pub fn run(
    input: impl Read + Send,
    output: impl Write,
    mut log: impl Write,
    clock: &impl Clock,
    config: Config,
) -> io::Result<()> {
    let max_line_bytes = config.max_line_bytes;
    let mut session = Session::new(config);
    let mut out = BufWriter::with_capacity(READ_CHUNK_BYTES, output);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
        scope.spawn(move || read_lines(input, max_line_bytes, tx));
        loop {
            let first = match session.node().next_deadline() {
                Some(deadline) => {
                    let wait_us = deadline.micros_since(clock.now());
                    rx.recv_timeout(Duration::from_micros(wait_us))
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let ended = match first {
                Ok(input) => {
                    handle_input(&mut session, clock, input, &mut out, &mut log)?;
                    drain_pending(&mut session, clock, &rx, &mut out, &mut log)?
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            session.tick_if_due(clock.now(), &mut out, &mut log)?;
            // Nothing more is waiting: now is the time to hand replies over.
            out.flush()?;
            if ended {
                return Ok(());
            }
        }
    })
}

/// Handles every batch already waiting; returns true if the input has ended.
fn drain_pending(
    session: &mut Session,
    clock: &impl Clock,
    rx: &Receiver<Input>,
    out: &mut impl Write,
    log: &mut impl Write,
) -> io::Result<bool> {
    loop {
        match rx.try_recv() {
            Ok(input) => handle_input(session, clock, input, out, log)?,
            Err(TryRecvError::Empty) => return Ok(false),
            Err(TryRecvError::Disconnected) => return Ok(true),
        }
    }
}

fn handle_input(
    session: &mut Session,
    clock: &impl Clock,
    input: Input,
    out: &mut impl Write,
    log: &mut impl Write,
) -> io::Result<()> {
    match input {
        Input::Lines(lines) => {
            for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                session.handle_line(clock.now(), line, out, log)?;
            }
        }
        Input::TooLong(bytes) => session.handle_too_long(clock.now(), bytes, log),
    }
    Ok(())
}

/// The reader thread: frames `input` into lines and sends them in batches; returns at
/// end of input (or a read error, which ends input too).
fn read_lines(mut input: impl Read, max_line_bytes: usize, tx: SyncSender<Input>) {
    let mut framer = LineFramer::new(max_line_bytes);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("level=error event=stdin_read_failed error={e:?}");
                return;
            }
        };
        let mut lines = Vec::new();
        let mut pending = Vec::new();
        framer.feed(&chunk[..n], |frame| match frame {
            Frame::Line(line) => {
                lines.extend_from_slice(line);
                lines.push(b'\n');
            }
            Frame::TooLong { bytes } => {
                pending.push(Input::Lines(std::mem::take(&mut lines)));
                pending.push(Input::TooLong(bytes));
            }
        });
        pending.push(Input::Lines(lines));
        for input in pending {
            if matches!(&input, Input::Lines(l) if l.is_empty()) {
                continue;
            }
            if tx.send(input).is_err() {
                return; // the node's thread is gone
            }
        }
    }
}

/// The environment variable of the [`Config`] field `name`: `HERALD_LOG` for
/// `log_level`, else `HERALD_` and the name in capitals (`HERALD_MAX_LINE_BYTES`).
pub fn env_var_name(name: &str) -> String {
    match name {
        "log_level" => "HERALD_LOG".to_owned(),
        _ => format!("HERALD_{}", name.to_uppercase()),
    }
}

/// Builds the node's configuration from the environment: `HERALD_LOG` (debug, info,
/// warn, error, off; default warn), `HERALD_SEED` (default: from the clock and pid),
/// and `HERALD_<FIELD>` for every other [`Config`] field (`HERALD_MAX_LINE_BYTES`,
/// `HERALD_ELECTION_TIMEOUT_MS`, ...). See [`config_from_vars`].
pub fn config_from_env() -> Result<Config, String> {
    let mut vars = Vec::new();
    for field in Config::FIELDS {
        let name = env_var_name(field.name);
        match std::env::var(&name) {
            Ok(value) => vars.push((name, value)),
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(v)) => {
                return Err(format!("{name}: {v:?} is not UTF-8"));
            }
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    config_from_vars(vars, nanos ^ u64::from(std::process::id()).rotate_left(32))
}

/// [`Config::default`] with each field whose variable ([`env_var_name`]) is among
/// `vars` (name, value) set from it by [`Config::set`], and `seed` set to `seed` unless
/// `HERALD_SEED` is given; then [`Config::validate`]. Other variables are ignored. An
/// error names the variable at fault and why.
pub fn config_from_vars<N, V>(
    vars: impl IntoIterator<Item = (N, V)>,
    seed: u64,
) -> Result<Config, String>
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let vars: Vec<(N, V)> = vars.into_iter().collect();
    let var = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    };
    let var_error = |e: ConfigError| format!("{}: {}", env_var_name(e.field), e.reason);
    let mut config = Config {
        seed,
        ..Config::default()
    };
    for field in Config::FIELDS {
        if let Some(text) = var(&env_var_name(field.name)) {
            config.set(field.name, text).map_err(var_error)?;
        }
    }
    config.validate().map_err(var_error)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        config_from_vars(vars.iter().copied(), 7)
    }

    #[test]
    fn no_variables_give_the_defaults_and_the_fallback_seed() {
        let expected = Config {
            seed: 7,
            ..Config::default()
        };
        assert_eq!(config(&[]), Ok(expected.clone()));
        assert_eq!(
            config(&[("HERALD_BLESS", "1"), ("PATH", "/bin")]),
            Ok(expected)
        );
    }

    #[test]
    fn every_field_is_read_from_its_variable() {
        let config = config(&[
            ("HERALD_LOG", "debug"),
            ("HERALD_SEED", "42"),
            ("HERALD_MAX_LINE_BYTES", "4096"),
            ("HERALD_ELECTION_TIMEOUT_MS", "900"),
            ("HERALD_HEARTBEAT_INTERVAL_MS", "600"),
            ("HERALD_QUEUE_MAX_DEPTH", " 12 "),
        ])
        .unwrap();
        assert_eq!(config.log_level, Level::Debug);
        assert_eq!(config.seed, 42);
        assert_eq!(config.max_line_bytes, 4096);
        assert_eq!(config.election_timeout_ms, 900);
        assert_eq!(config.heartbeat_interval_ms, 600);
        assert_eq!(config.queue_max_depth, 12);
        assert_eq!(config.max_topics, Config::default().max_topics);
        let defaults = Config::default();
        for field in Config::FIELDS {
            let Ok(n) = defaults.get(field.name).unwrap().parse::<u64>() else {
                continue; // log_level, checked above
            };
            let var = env_var_name(field.name);
            let value = (n + 1).to_string();
            let config = config_from_vars([(var.as_str(), value.as_str())], 0)
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert_eq!(config.get(field.name).unwrap(), value, "{var}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let err = config(&[("HERALD_HEARTBEAT_INTERVAL_MS", "600")]).unwrap_err();
        assert!(
            err.starts_with(
                "HERALD_HEARTBEAT_INTERVAL_MS: must be less than election_timeout_ms (500), not 600"
            ),
            "{err}"
        );
        let err = config(&[("HERALD_SEED", "soon")]).unwrap_err();
        assert!(
            err.starts_with("HERALD_SEED: \"soon\" is not a valid value"),
            "{err}"
        );
        let err = config(&[("HERALD_LOG", "loud")]).unwrap_err();
        assert!(
            err.starts_with("HERALD_LOG: \"loud\" is not a valid value"),
            "{err}"
        );
        let err = config(&[("HERALD_MAX_LINE_BYTES", "0")]).unwrap_err();
        assert_eq!(err, "HERALD_MAX_LINE_BYTES: must be at least 1, not 0");
        let err = config(&[("HERALD_RPC_BACKOFF_BASE_MS", "5000")]).unwrap_err();
        assert!(err.starts_with("HERALD_RPC_BACKOFF_BASE_MS: "), "{err}");
    }
}
