//! The bench harness itself works: the baseline answers every echo and the harness
//! counts them (no timing is asserted).

use std::path::Path;

use herald_benches::{echo_input, pipe_echo};

#[test]
fn harness_counts_every_echo_of_the_baseline() {
    let input = echo_input(1_000);
    assert_eq!(input.iter().filter(|&&b| b == b'\n').count(), 1_001);
    let baseline = Path::new(env!("CARGO_BIN_EXE_naive-echo"));
    pipe_echo(baseline, &input, 1_000).unwrap();
    // A program that answers nothing is reported, not timed.
    let err = pipe_echo(Path::new("/bin/true"), &input, 1_000).unwrap_err();
    assert!(err.contains("0 echo_ok replies"), "{err}");
}
