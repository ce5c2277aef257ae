//! `herald-node`: a Maelstrom node. Reads JSON lines on stdin, writes replies on
//! stdout, logs on stderr. See the README for how to run it under Maelstrom.

use std::io;
use std::process::ExitCode;

use herald_stdio::{config_from_env, run, MonotonicClock};

const HELP: &str = "\
herald-node: a Herald node for Maelstrom (JSON lines on stdin, replies on stdout)

usage: herald-node

environment:
  HERALD_LOG=debug|info|warn|error|off   log level on stderr (default warn)
  HERALD_SEED=N                          PRNG seed (default: from the clock)
  HERALD_MAX_LINE_BYTES=N                longest accepted input line (default 1048576)
";

fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        if arg == "--version" {
            println!("herald-node {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
    }
    let config = match config_from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald-node: {e}");
            return ExitCode::from(2);
        }
    };
    if config.log_level <= herald_core::Level::Info {
        eprintln!("level=info event=start seed={}", config.seed);
    }
    match run(
        io::stdin(),
        io::stdout().lock(),
        io::stderr(),
        &MonotonicClock::new(),
        config,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("level=error event=output_failed error={e:?}");
            ExitCode::FAILURE
        }
    }
}
