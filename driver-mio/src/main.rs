//! `herald`: the broker server and its command-line client.
//!
//! Status: the TCP server (`herald serve`) and the client subcommands are not built
//! yet (issue 5). Until then this binary only explains that, so no one mistakes it for
//! a broker; the Maelstrom node `herald-node` is complete.

use std::process::ExitCode;

const HELP: &str = "\
herald: the Herald message broker

usage: herald <command>

commands:
  serve    run the broker on 127.0.0.1:7878 with data in ./herald-data
           (NOT BUILT YET: the TCP server is issue 5; use herald-node today)
  help     show this text
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("serve") => {
            eprintln!("herald serve: the TCP broker is not built yet (issue 5).");
            eprintln!("The Maelstrom node works today: cargo run --release --bin herald-node");
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("herald: unknown command {other:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
