//! Golden transcripts: request frames captured from real clients (a proxy recorded
//! every frame each client sent to `herald serve`), replayed in order through one
//! session and node; each response is decoded and written out as text. The text must
//! match `<client>.golden.txt`; `HERALD_BLESS=1` rewrites it after a deliberate change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use herald_core::Config;
use herald_kafka::{Loopback, SessionConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// The response body, decoded as `key` at `version` and shown with `{:#?}`.
fn show(key: ApiKey, version: i16, body: &mut Bytes) -> Result<String, String> {
    fn debug<T: Decodable + std::fmt::Debug>(body: &mut Bytes, v: i16) -> Result<String, String> {
        T::decode(body, v)
            .map(|r| format!("{r:#?}"))
            .map_err(|e| e.to_string())
    }
    match key {
        ApiKey::ApiVersions => debug::<ApiVersionsResponse>(body, version),
        ApiKey::Metadata => debug::<MetadataResponse>(body, version),
        ApiKey::Produce => debug::<ProduceResponse>(body, version),
        ApiKey::Fetch => debug::<FetchResponse>(body, version),
        ApiKey::ListOffsets => debug::<ListOffsetsResponse>(body, version),
        ApiKey::FindCoordinator => debug::<FindCoordinatorResponse>(body, version),
        ApiKey::JoinGroup => debug::<JoinGroupResponse>(body, version),
        ApiKey::SyncGroup => debug::<SyncGroupResponse>(body, version),
        ApiKey::Heartbeat => debug::<HeartbeatResponse>(body, version),
        ApiKey::LeaveGroup => debug::<LeaveGroupResponse>(body, version),
        ApiKey::OffsetCommit => debug::<OffsetCommitResponse>(body, version),
        ApiKey::OffsetFetch => debug::<OffsetFetchResponse>(body, version),
        ApiKey::InitProducerId => debug::<InitProducerIdResponse>(body, version),
        ApiKey::CreateTopics => debug::<CreateTopicsResponse>(body, version),
        other => Err(format!("no decoder for {other:?} in this test")),
    }
}

/// One captured request and what the node answered, as text.
fn replay(conn: &mut Loopback, name: &str, frame: &[u8], out: &mut String) {
    let request = &frame[4..];
    let key = ApiKey::try_from(i16::from_be_bytes([request[0], request[1]])).unwrap();
    let version = i16::from_be_bytes([request[2], request[3]]);
    writeln!(out, "==> {name}: {key:?} v{version}").unwrap();
    let mut response = conn.request(request).unwrap();
    if response.is_empty() {
        // A long-polling fetch: let its wait run out.
        conn.advance_ms(60_000).unwrap();
        response = conn.ready();
    }
    assert!(!response.is_empty(), "{name}: no response");
    let len = u32::from_be_bytes(response[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, response.len(), "{name}: one whole frame");
    let mut body = Bytes::from(response[4..].to_vec());
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
    let request_correlation = i32::from_be_bytes(request[4..8].try_into().unwrap());
    assert_eq!(
        header.correlation_id, request_correlation,
        "{name}: correlation id"
    );
    let shown = show(key, version, &mut body).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        body.is_empty(),
        "{name}: {} bytes after the body",
        body.len()
    );
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
