//! Golden transcripts: request frames captured from real clients (a proxy recorded
//! every frame each client sent to `herald serve`), replayed in order through one
//! session and node; each response is decoded and written out as text. The text must
//! match `<client>.golden.txt`; `HERALD_BLESS=1` rewrites it after a deliberate change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use herald_core::Config;
use herald_kafka::{Loopback, SessionConfig};
use kafka_protocol::messages::ApiKey;

mod common;

/// One captured request and what the node answered, as text.
fn replay(conn: &mut Loopback, name: &str, frame: &[u8], out: &mut String) {
    let request = &frame[4..];
    let key = ApiKey::try_from(i16::from_be_bytes([request[0], request[1]])).unwrap();
    let version = i16::from_be_bytes([request[2], request[3]]);
    writeln!(out, "==> {name}: {key:?} v{version}").unwrap();
    let mut response = conn.request(request).unwrap();
    // A long-polling fetch: let its wait run out, 100 ms at a time.
    for _ in 0..600 {
        if !response.is_empty() {
            break;
        }
        conn.advance_ms(100).unwrap();
        response = conn.ready();
    }
    assert!(!response.is_empty(), "{name}: no response");
    let request_correlation = i32::from_be_bytes(request[4..8].try_into().unwrap());
    let shown = common::read_response(&response, key, version, request_correlation)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    writeln!(out, "{shown}").unwrap();
}

fn transcript(client: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captured")
        .join(client);
    let mut frames: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    frames.sort();
    assert!(
        !frames.is_empty(),
        "no captured frames in {}",
        dir.display()
    );
    let session = SessionConfig {
        advertised_port: 29092,
        ..SessionConfig::default()
    };
    let mut conn = Loopback::new(Config::default(), session);
    let mut out = String::new();
    for path in &frames {
        let name = path.file_name().unwrap().to_string_lossy();
        replay(&mut conn, &name, &std::fs::read(path).unwrap(), &mut out);
    }
    let golden = dir.with_file_name(format!("{client}.golden.txt"));
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&golden, &out).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (HERALD_BLESS=1 writes it)", golden.display()));
    assert!(
        out == expected,
        "{client}: the responses differ from {} (HERALD_BLESS=1 rewrites it)",
        golden.display()
    );
}

#[test]
fn kcat_2_0_2_lists_produces_and_consumes() {
    transcript("kcat-2.0.2");
}

/// An idempotent producer (acks=all) of three records, then a group consumer that
/// commits and closes.
#[test]
fn confluent_kafka_2_16_idempotent_producer_and_group_consumer() {
    transcript("confluent-kafka-2.16.1");
}

/// A producer (idempotent by default in kafka-python 3) of three records, then a
/// group consumer that commits and closes.
#[test]
fn kafka_python_3_0_producer_and_group_consumer() {
    transcript("kafka-python-3.0.12");
}
