//! Golden transcripts: each `transcripts/NAME.in` (input lines; `#` lines are
//! comments) must produce exactly `transcripts/NAME.out`, both through a `Session`
//! (the core plus codec, no threads) and through the real `herald-node` binary.
//! `HERALD_BLESS=1 cargo test -p herald-stdio --test transcripts` rewrites the
//! `.out` files from what the session produced: review the diff before committing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use herald_core::{Config, Time};
use herald_stdio::Session;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

/// Every transcript: (name, input without comment lines, expected output).
fn transcripts() -> Vec<(String, String, PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .map(|path| {
            let input: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, input, path.with_extension("out"))
        })
        .collect();
    found.sort();
    assert!(found.len() >= 5, "transcripts missing from {:?}", dir());
    found
}

fn config() -> Config {
    Config {
        seed: 1,
        ..Config::default()
    }
}

fn check(name: &str, how: &str, got: &str, expected_path: &Path) {
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    assert!(
        got == expected,
        "transcript {name} through {how} differs.\n--- expected\n{expected}--- got\n{got}"
    );
}

#[test]
fn transcripts_through_the_session() {
    for (name, input, expected) in transcripts() {
        let mut session = Session::new(config());
        let mut out = Vec::new();
        for line in input.lines() {
            session
                .handle_line(Time::ZERO, line.as_bytes(), &mut out, &mut std::io::sink())
                .unwrap();
            session.node().check_invariants();
        }
        let got = String::from_utf8(out).unwrap();
        if std::env::var_os("HERALD_BLESS").is_some() {
            std::fs::write(&expected, &got).unwrap();
        }
        check(&name, "the session", &got, &expected);
    }
}

#[test]
fn transcripts_through_the_binary() {
    for (name, input, expected) in transcripts() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald-node"))
            .env("HERALD_SEED", "1")
            .env("HERALD_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let mut got = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "{name}: herald-node failed"
        );
        check(&name, "herald-node", &got, &expected);
    }
}
