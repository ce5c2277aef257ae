//! The outbox demo as a test: the relay and the broker are killed with SIGKILL at
//! random moments (two seeds), and every order must still be applied exactly once.

use std::process::Command;

#[test]
fn every_order_is_applied_exactly_once_through_relay_and_broker_kills() {
    for seed in ["1", "2"] {
        let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
            .args(["demo", "--orders", "1000", "--kills", "20", "--seed", seed])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "seed {seed}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("applied exactly once 1000; applied more than once 0;"),
            "seed {seed}: {stdout}"
        );
    }
}
