//! The server's log: one line per event on stderr,
//! `ts=2026-12-03T12:05:58.123Z node=n1 level=info event=listening addr=...`.
//!
//! Every line starts with the wall-clock time (UTC, RFC 3339, milliseconds) and the
//! node's id, so the logs of several nodes merge into one timeline with `sort`.

use std::fmt::Display;
use std::io::Write;
use std::time::SystemTime;

use herald_core::{Level, LogLine};

/// Writes a node's log lines at or above a level.
#[derive(Clone, Debug)]
pub struct Logger {
    node: String,
    min: Level,
}

impl Logger {
    /// A logger for node `node` that writes lines of level `min` and above.
    pub fn new(node: &str, min: Level) -> Logger {
        Logger {
            node: node.to_owned(),
            min,
        }
    }

    /// Logs `event=... key=value ...`, made only if `level` is logged.
    pub fn log(&self, level: Level, line: impl FnOnce() -> String) {
        if level >= self.min {
            self.emit(format_args!("level={} {}", level.as_str(), line()));
        }
    }

    /// Logs a line the core asked for.
    pub fn core(&self, line: &LogLine) {
        if line.level >= self.min {
            self.emit(line);
        }
    }

    fn emit(&self, line: impl Display) {
        let text = self.format(SystemTime::now(), line);
        // One write per line: lines of one process never interleave. A log that
        // cannot be written (a closed pipe) must not stop the broker.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn format(&self, at: SystemTime, line: impl Display) -> String {
        let ts = humantime::format_rfc3339_millis(at);
        format!("ts={ts} node={} {line}\n", self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_line_starts_with_its_utc_time_in_milliseconds_and_the_node() {
        let logger = Logger::new("n2", Level::Info);
        let at = UNIX_EPOCH + Duration::from_millis(1_796_302_358_123);
        let line = logger.format(at, "level=warn event=x a=1");
        assert_eq!(
            line,
            "ts=2026-12-03T12:52:38.123Z node=n2 level=warn event=x a=1\n"
        );
    }

    #[test]
    fn a_core_line_keeps_its_level_and_event() {
        let logger = Logger::new("herald", Level::Debug);
        let core = LogLine {
            level: Level::Info,
            event: "rpc_gave_up",
            detail: "dest=n3".into(),
        };
        let line = logger.format(UNIX_EPOCH, &core);
        assert_eq!(
            line,
            "ts=1970-01-01T00:00:00.000Z node=herald level=info event=rpc_gave_up dest=n3\n"
        );
    }
}
