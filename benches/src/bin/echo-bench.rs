//! `echo-bench`: echo throughput of `herald-node` against the naive serde_json loop,
//! both as child processes fed through pipes, in the same run.
//!
//! usage: echo-bench [--requests N] [--rounds R] [--node PATH] [--baseline PATH]
//! Both programs default to siblings of this executable: build them with
//! `cargo build --release -p herald-stdio -p herald-benches` (or run benches/echo.sh).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use herald_benches::{echo_input, pipe_echo};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = here.parent().ok_or("no directory")?.to_path_buf();
    let (mut requests, mut rounds) = (200_000usize, 5usize);
    let (mut node, mut baseline) = (dir.join("herald-node"), dir.join("naive-echo"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--rounds" => rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--node" => node = PathBuf::from(value()?),
            "--baseline" => baseline = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "usage: echo-bench [--requests N] [--rounds R] [--node PATH] [--baseline PATH]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown flag {other:?} (try --help)")),
        }
    }
    for program in [&node, &baseline] {
        if !program.exists() {
            return Err(format!(
                "{} not found: build with `cargo build --release -p herald-stdio -p herald-benches`",
                program.display()
            ));
        }
    }
    let input = echo_input(requests);
    println!(
        "echo: {requests} requests ({} bytes) per run, {rounds} rounds, best run counts",
        input.len()
    );
    let (mut best_node, mut best_base) = (Duration::MAX, Duration::MAX);
    for round in 1..=rounds {
        // Alternate the order so neither side always runs on a warmer machine.
        let pair = if round % 2 == 1 {
            [&node, &baseline]
        } else {
            [&baseline, &node]
        };
        for program in pair {
            let took = pipe_echo(program, &input, requests)?;
            let best = if program == &node {
                &mut best_node
            } else {
                &mut best_base
            };
            *best = (*best).min(took);
            println!(
                "  round {round}: {:<12} {:>10.0} msg/s",
                name(program),
                rate(requests, took)
            );
        }
    }
    let (node_rate, base_rate) = (rate(requests, best_node), rate(requests, best_base));
    println!("herald-node  {node_rate:>10.0} msg/s");
    println!("naive-echo   {base_rate:>10.0} msg/s");
    println!(
        "ratio        {:>10.2} (herald-node / naive serde_json loop)",
        node_rate / base_rate
    );
    Ok(())
}

fn rate(requests: usize, took: Duration) -> f64 {
    requests as f64 / took.as_secs_f64()
}

fn name(program: &std::path::Path) -> String {
    program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}
