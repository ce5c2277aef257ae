//! `herald-node`: a Maelstrom node. Reads JSON lines on stdin, writes replies on
//! stdout, logs on stderr. See the README for how to run it under Maelstrom.

use std::io;
use std::process::ExitCode;

use herald_core::Config;
use herald_stdio::{config_from_env, env_var_name, run, MonotonicClock};

const HELP: &str = "\
herald-node: a Herald node for Maelstrom (JSON lines on stdin, replies on stdout)

usage: herald-node

environment (a bad value or combination exits 2 naming the variable):
  HERALD_LOG=debug|info|warn|error|off   log level on stderr (default warn)
  HERALD_SEED=N                          PRNG seed (default: from the clock)
  HERALD_<FIELD>=N                       any other node setting, named in capitals
                                         (HERALD_MAX_LINE_BYTES=4096); all of them:
";

/// [`HELP`], then every other setting's variable with its default and doc.
fn help() -> String {
    let defaults = Config::default();
    let mut help = HELP.to_owned();
    for field in Config::FIELDS {
        if matches!(field.name, "log_level" | "seed") {
            continue;
        }
        let var = format!(
            "{}={}",
            env_var_name(field.name),
            defaults.get(field.name).unwrap_or_default()
        );
        let doc: Vec<&str> = field.doc.iter().map(|line| line.trim()).collect();
        help.push_str(&format!("  {var:<37}  {}\n", doc.join(" ")));
    }
    help
}

fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            print!("{}", help());
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
