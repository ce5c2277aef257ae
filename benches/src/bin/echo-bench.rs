//! `echo-bench`: echo throughput of `herald-node` against the naive serde_json loop
//! and against a Python reference node, all as child processes fed through pipes, in
//! the same run.
//!
//! usage: echo-bench [--requests N] [--rounds R] [--node PATH] [--baseline PATH]
//!                   [--python PATH]
//! herald-node and naive-echo default to siblings of this executable: build them with
//! `cargo build --release -p herald-stdio -p herald-benches` (or run benches/echo.sh).
//! The third program is `benches/python-echo.py`, a plain Python Maelstrom echo node
//! (needs `python3`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use herald_benches::{echo_input, pipe_echo};

const USAGE: &str =
    "usage: echo-bench [--requests N] [--rounds R] [--node PATH] [--baseline PATH] [--python PATH]";

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
    let mut node = dir.join("herald-node");
    let mut baseline = dir.join("naive-echo");
    let mut python = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/python-echo.py"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--rounds" => rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--node" => node = PathBuf::from(value()?),
            "--baseline" => baseline = PathBuf::from(value()?),
            "--python" => python = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown flag {other:?} (try --help)")),
        }
    }
    let programs = [node, baseline, python];
    for program in &programs {
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
    let mut best = [Duration::MAX; 3];
    for round in 1..=rounds {
        // Rotate the order so no program always runs on a warmer machine.
        for turn in 0..programs.len() {
            let i = (turn + round) % programs.len();
            let took = pipe_echo(&programs[i], &input, requests)?;
            best[i] = best[i].min(took);
            println!(
                "  round {round}: {:<15} {:>10.0} msg/s",
                name(&programs[i]),
                rate(requests, took)
            );
        }
    }
    let rates = best.map(|took| rate(requests, took));
    for (program, rate) in programs.iter().zip(rates) {
        println!("{:<15} {rate:>10.0} msg/s", name(program));
    }
    println!(
        "ratio           {:>10.2} (herald-node / naive serde_json loop)",
        rates[0] / rates[1]
    );
    println!(
        "ratio           {:>10.2} (herald-node / Python reference node)",
        rates[0] / rates[2]
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
