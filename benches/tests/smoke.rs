//! The bench harness itself works: the baselines (naive-echo, python-echo.py) answer
//! every echo and the harness counts them (no timing is asserted).

use std::path::Path;

use herald_benches::{echo_input, pipe_echo};

#[test]
fn harness_counts_every_echo_of_the_baseline() {
    let input = echo_input(1_000);
    assert_eq!(input.iter().filter(|&&b| b == b'\n').count(), 1_001);
    let baseline = Path::new(env!("CARGO_BIN_EXE_naive-echo"));
    pipe_echo(baseline, &input, 1_000).unwrap();
    let python = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/python-echo.py"));
    pipe_echo(python, &input, 1_000).unwrap();
    // A program that answers nothing is reported, not timed.
    let err = pipe_echo(Path::new("/bin/true"), &input, 1_000).unwrap_err();
    assert!(err.contains("0 echo_ok replies"), "{err}");
}

/// Runs a bench binary with `args`; fails the test unless it exits 0. Its stdout.
fn run_bench(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exactly_once_bench_runs_every_mode_without_errors() {
    // The bench panics on any error reply, so a run is a check that every mode's
    // requests are accepted; its figures are not looked at.
    let stdout = run_bench(
        env!("CARGO_BIN_EXE_exactly-once-bench"),
        &["--messages", "500"],
    );
    assert!(
        stdout.contains("idempotent") && stdout.contains("prepare+commit"),
        "{stdout}"
    );
}

#[test]
fn request_bench_runs_every_request_without_errors() {
    // The bench panics on any error reply or a message left undrained; its figures
    // are not looked at.
    let stdout = run_bench(env!("CARGO_BIN_EXE_request-bench"), &["--messages", "2000"]);
    assert!(
        stdout.contains("herald dequeue, ack") && stdout.contains("naive dequeue"),
        "{stdout}"
    );
}
