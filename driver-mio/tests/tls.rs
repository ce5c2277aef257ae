//! TLS on the listeners, with real clients: a rustls client on the JSON-lines
//! listener (with and without a client certificate, and a plaintext client that is
//! refused), kcat over `security.protocol=ssl` on the Kafka listener, and the refusal
//! to listen off loopback in plaintext.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

#[allow(dead_code)] // each test binary uses a part of it
mod common;

use common::procs::{kcat, run};

/// A certificate authority and what it signed, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
}

/// A CA: its certificate and key.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes `<name>.pem` and `<name>.key` in `dir`: a certificate for `names` signed by
/// `ca`.
fn issue(dir: &Path, ca: &Ca, name: &str, names: &[&str]) {
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

impl Pki {
    /// A CA (`ca.pem`), the server's certificate for 127.0.0.1 (`server`), a client's
    /// (`client`), one for 127.0.0.2 (`elsewhere`), and a client's from another CA
    /// (`stranger`).
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("herald-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ours = ca("herald test CA");
        std::fs::write(dir.join("ca.pem"), ours.cert.pem()).unwrap();
        issue(&dir, &ours, "server", &["127.0.0.1", "localhost"]);
        issue(&dir, &ours, "client", &["client"]);
        issue(&dir, &ours, "elsewhere", &["127.0.0.2"]);
        issue(&dir, &ca("another CA"), "stranger", &["stranger"]);
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A rustls client trusting our CA, presenting `identity`'s certificate if given.
    fn client_config(&self, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain =
                    vec![CertificateDer::from_pem_file(self.path(&format!("{name}.pem"))).unwrap()];
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `herald serve` with `flags`, once it listens.
struct Server {
    child: Child,
    addr: String,
    kafka: String,
    log: Arc<Mutex<Vec<String>>>,
    data: PathBuf,
}

/// An empty data directory for test `name`.
fn data_dir(name: &str) -> PathBuf {
    let data = std::env::temp_dir().join(format!("herald-tls-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    data
}

fn serve(name: &str, addr: &str, flags: &[&str]) -> Server {
    serve_in(data_dir(name), addr, flags)
}

/// `herald user add` on `data`.
fn add_user(data: &Path, name: &str, password: &str, allow: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "user",
            "add",
            name,
            "--password",
            password,
            "--allow",
            allow,
        ])
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve_in(data: PathBuf, addr: &str, flags: &[&str]) -> Server {
    let kafka = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--addr", addr, "serve", "--log-level", "info"])
        .args(["--kafka-addr", &kafka, "--data-dir"])
        .arg(&data)
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut line = String::new();
    let at = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "herald serve exited: {}",
            log.lock().unwrap().join("\n")
        );
        log.lock().unwrap().push(line.trim_end().to_owned());
        if let Some(at) = common::listening(&line) {
            break at;
        }
    };
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        addr: at.addr,
        kafka: at.kafka,
        log,
        data,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` with `config` (the handshake happens on first use).
fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends request `body` (a msg_id added) and reads its reply's body.
fn call(stream: &mut TlsStream, msg_id: u64, mut body: Value) -> std::io::Result<Value> {
    body["msg_id"] = json!(msg_id);
    let line = json!({ "body": body }).to_string() + "\n";
    stream.write_all(line.as_bytes())?;
    stream.flush()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    Ok(reply["body"].clone())
}

/// Creates queue `q`, enqueues and dequeues one message over `stream`.
fn use_a_queue(stream: &mut TlsStream, q: &str) {
    let created = call(stream, 1, json!({"type": "create_queue", "queue": q})).unwrap();
    assert_eq!(created["type"], "create_queue_ok", "{created}");
    let sent = call(
        stream,
        2,
        json!({"type": "enqueue", "queue": q, "msg": "hi"}),
    )
    .unwrap();
    assert_eq!(sent["type"], "enqueue_ok", "{sent}");
    let got = call(stream, 3, json!({"type": "dequeue", "queue": q})).unwrap();
    assert_eq!(got["msgs"][0]["msg"], "hi", "{got}");
}

#[test]
fn tls_clients_work_plaintext_ones_are_refused_and_kcat_speaks_ssl() {
    let pki = Pki::new("listeners");
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = serve(
        "listeners",
        "127.0.0.1:0",
        &["--tls-cert", &cert, "--tls-key", &key],
    );

    // A plaintext client gets no reply, and its connection is closed with a log line.
    let mut plain = TcpStream::connect(&server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"{\"body\":{\"type\":\"list_queues\",\"msg_id\":1}}\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer); // ends when the server closes
    assert!(!answer.contains(&b'{'), "a plaintext client was answered");

    let mut tls = connect(&server.addr, pki.client_config(None));
    use_a_queue(&mut tls, "a");
    let refused = server.log.lock().unwrap().clone();
    assert!(
        refused.iter().any(|l| l.contains(" event=tls_failed ")),
        "no tls_failed in {refused:?}"
    );

    // kcat over TLS, verifying the broker's certificate against our CA.
    let ssl = ["-X", "security.protocol=ssl", "-X"];
    let ca = format!("ssl.ca.location={}", pki.path("ca.pem"));
    let lines: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let mut produce = Command::new(kcat());
    produce.args(["-b", &server.kafka, "-P", "-t", "secure"]);
    produce.args(ssl).arg(&ca);
    let input = lines.join("\n") + "\n";
    run(
        &mut produce,
        Some(input.into_bytes()),
        Duration::from_secs(60),
    )
    .expect_ok("kcat -P");
    let mut consume = Command::new(kcat());
    consume.args([
        "-b",
        &server.kafka,
        "-C",
        "-e",
        "-o",
        "beginning",
        "-t",
        "secure",
    ]);
    consume.args(ssl).arg(&ca);
    let out = run(&mut consume, None, Duration::from_secs(60)).expect_ok("kcat -C");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(got, lines);

    // kcat in plaintext on the TLS Kafka listener fails, and the server keeps serving.
    let mut plain = Command::new(kcat());
    plain.args(["-b", &server.kafka, "-L", "-m", "3"]);
    let ran = run(&mut plain, None, Duration::from_secs(30));
    assert!(
        !ran.succeeded(),
        "plaintext kcat listed metadata: {}",
        ran.stdout
    );
    use_a_queue(&mut connect(&server.addr, pki.client_config(None)), "b");
}

#[test]
fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new("mtls");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ];
    let server = serve("mtls", "127.0.0.1:0", &flags);
    for identity in [None, Some("stranger")] {
        let mut stream = connect(&server.addr, pki.client_config(identity));
        let list = json!({"type": "list_queues"});
        // TLS 1.3: the server checks the certificate after the client's handshake
        // ends, so the refusal shows on the first read.
        let answered = call(&mut stream, 1, list);
        assert!(answered.is_err(), "{identity:?} was served: {answered:?}");
    }
    use_a_queue(
        &mut connect(&server.addr, pki.client_config(Some("client"))),
        "c",
    );
}

#[test]
fn a_plaintext_listener_off_loopback_is_refused_unless_allowed() {
    let data = std::env::temp_dir().join(format!("herald-tls-refused-{}", std::process::id()));
    let refused = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["--addr", "0.0.0.0:0", "serve", "--kafka-addr", "none"]);
    assert!(
        err.contains("--addr 0.0.0.0:0 is not a loopback address"),
        "{err}"
    );
    assert!(err.contains("--allow-plaintext"), "{err}");
    let err = refused(&[
        "--addr",
        "127.0.0.1:0",
        "serve",
        "--kafka-addr",
        "0.0.0.0:0",
    ]);
    assert!(
        err.contains("--kafka-addr 0.0.0.0:0 is not a loopback"),
        "{err}"
    );
    let err = refused(&[
        "serve",
        "--kafka-addr",
        "none",
        "--metrics-addr",
        "0.0.0.0:0",
    ]);
    assert!(
        err.contains("--metrics-addr 0.0.0.0:0 is not a loopback"),
        "{err}"
    );
    let peers = "n1=127.0.0.1:1,n2=127.0.0.1:2";
    let (cert, key) = ("cert.pem", "key.pem");
    let tls = ["--tls-cert", cert, "--tls-key", key];
    let cluster = [
        "serve",
        "--kafka-addr",
        "none",
        "--node-id",
        "n1",
        "--peers",
        peers,
    ];
    let err = refused(&[&cluster[..], &tls].concat());
    assert!(
        err.contains("TLS on a cluster needs --tls-peer-ca"),
        "{err}"
    );
    let single = ["serve", "--kafka-addr", "none", "--tls-peer-ca", "ca.pem"];
    let err = refused(&[&single[..], &tls].concat());
    assert!(err.contains("--tls-peer-ca is for a cluster"), "{err}");
    assert!(!data.exists(), "the data directory was made");
    let server = serve("allowed", "0.0.0.0:0", &["--allow-plaintext"]);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
}

/// How kcat authenticates: over TLS (with this CA) or not, with a SASL mechanism.
struct Sasl<'a> {
    /// The CA to trust, for SASL_SSL; `None`: SASL_PLAINTEXT.
    pki: Option<&'a Pki>,
    /// `PLAIN` or `SCRAM-SHA-256`.
    mechanism: &'a str,
}

/// kcat with `sasl` as `user`, with `args`.
fn kcat_sasl(
    sasl: &Sasl,
    kafka: &str,
    user: &str,
    password: &str,
    args: &[&str],
    input: Option<String>,
) -> common::procs::Ran {
    let mut cmd = Command::new(kcat());
    cmd.args(["-b", kafka]).args(args);
    match sasl.pki {
        Some(pki) => cmd
            .args(["-X", "security.protocol=SASL_SSL"])
            .args(["-X", &format!("ssl.ca.location={}", pki.path("ca.pem"))]),
        None => cmd.args(["-X", "security.protocol=SASL_PLAINTEXT"]),
    };
    let mechanism = format!("sasl.mechanisms={}", sasl.mechanism);
    let name = format!("sasl.username={user}");
    let secret = format!("sasl.password={password}");
    for setting in [&mechanism, &name, &secret] {
        cmd.args(["-X", setting]);
    }
    cmd.args(["-X", "message.timeout.ms=10000"]);
    run(
        &mut cmd,
        input.map(String::into_bytes),
        Duration::from_secs(60),
    )
}

#[test]
fn kcat_authenticates_with_sasl_plain_over_tls_and_its_rules_hold() {
    sasl_over_tls("PLAIN");
}

#[test]
fn kcat_authenticates_with_sasl_scram_sha_256_over_tls_and_its_rules_hold() {
    sasl_over_tls("SCRAM-SHA-256");
}

/// Two users produce and consume with kcat over SASL_SSL with `mechanism`; the
/// reader cannot produce, a wrong password and a client without SASL get nothing.
fn sasl_over_tls(mechanism: &str) {
    let name = format!("sasl-{}", mechanism.to_lowercase());
    let pki = Pki::new(&name);
    let data = data_dir(&name);
    add_user(&data, "alice", "alices password", "admin *");
    add_user(&data, "bob", "bobs password", "read topic:secure");
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = serve_in(
        data,
        "127.0.0.1:0",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let sasl = Sasl {
        pki: Some(&pki),
        mechanism,
    };
    let lines: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let input = lines.join("\n") + "\n";
    let produce = ["-P", "-t", "secure"];
    kcat_sasl(
        &sasl,
        &server.kafka,
        "alice",
        "alices password",
        &produce,
        Some(input.clone()),
    )
    .expect_ok("alice produces");
    let consume = ["-C", "-e", "-o", "beginning", "-t", "secure"];
    let out = kcat_sasl(&sasl, &server.kafka, "bob", "bobs password", &consume, None)
        .expect_ok("bob consumes");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(got, lines);
    // bob may read, not write; a wrong password gets nothing.
    let ran = kcat_sasl(
        &sasl,
        &server.kafka,
        "bob",
        "bobs password",
        &produce,
        Some(input.clone()),
    );
    assert!(!ran.succeeded(), "bob produced: {}", ran.stderr);
    assert!(ran.stderr.contains("uthorization"), "{}", ran.stderr);
    let ran = kcat_sasl(
        &sasl,
        &server.kafka,
        "alice",
        "wrong password",
        &["-L", "-m", "5"],
        None,
    );
    assert!(
        !ran.succeeded(),
        "a wrong password listed metadata: {}",
        ran.stdout
    );
    // Without SASL, the first request after ApiVersions closes the connection.
    let mut plain_tls = Command::new(kcat());
    plain_tls.args([
        "-b",
        &server.kafka,
        "-L",
        "-m",
        "5",
        "-X",
        "security.protocol=ssl",
    ]);
    plain_tls.args(["-X", &format!("ssl.ca.location={}", pki.path("ca.pem"))]);
    let ran = run(&mut plain_tls, None, Duration::from_secs(30));
    assert!(
        !ran.succeeded(),
        "an unauthenticated client listed metadata: {}",
        ran.stdout
    );
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("before SASL authentication")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains(" event=access_denied ") && l.contains("user=\"bob\"")),
        "{log:?}"
    );
}

/// A data directory with users `carol` and `old`, who has no SCRAM credentials, as
/// a users file from before SCRAM would have it.
fn carol_and_old(name: &str) -> PathBuf {
    let data = data_dir(name);
    add_user(&data, "carol", "carols password", "admin *");
    add_user(&data, "old", "olds password", "admin *");
    let file = data.join("users.json");
    let mut users: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let old = users["users"]["old"].as_object_mut().unwrap();
    assert!(old.remove("scram_sha_256").is_some(), "{users}");
    std::fs::write(&file, users.to_string()).unwrap();
    data
}

/// Without TLS, SCRAM-SHA-256 still authenticates (it never sends the password);
/// PLAIN, which would, is not offered. A user from before SCRAM is named at start.
#[test]
fn kcat_authenticates_with_scram_on_a_plaintext_listener_and_plain_is_refused_there() {
    let server = serve_in(carol_and_old("scram-plaintext"), "127.0.0.1:0", &[]);
    let scram = Sasl {
        pki: None,
        mechanism: "SCRAM-SHA-256",
    };
    let produce = ["-P", "-t", "open"];
    let input = Some("one\ntwo\n".to_string());
    kcat_sasl(
        &scram,
        &server.kafka,
        "carol",
        "carols password",
        &produce,
        input,
    )
    .expect_ok("carol produces with SCRAM");
    let consume = ["-C", "-e", "-o", "beginning", "-t", "open"];
    let out = kcat_sasl(
        &scram,
        &server.kafka,
        "carol",
        "carols password",
        &consume,
        None,
    )
    .expect_ok("carol consumes with SCRAM");
    assert_eq!(out, "one\ntwo\n");
    let log = server.log.lock().unwrap().clone();
    let has = |parts: &[&str]| log.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[" event=users_without_scram ", "users=\"old\""]),
        "{log:?}"
    );
    let authenticated = [
        " event=authenticated ",
        "user=\"carol\"",
        "mechanism=scram-sha-256",
    ];
    assert!(has(&authenticated), "{log:?}");
    assert!(!has(&["carols password"]), "a password was logged");
}

/// A wrong password, an unknown user and a user without SCRAM credentials fail alike,
/// at the proof; PLAIN is refused on plaintext. Each case has a server of its own,
/// since failures from one address make it wait.
#[test]
fn scram_fails_alike_for_a_wrong_password_an_unknown_user_and_a_user_without_credentials() {
    let plain = Sasl {
        pki: None,
        mechanism: "PLAIN",
    };
    let scram = Sasl {
        pki: None,
        mechanism: "SCRAM-SHA-256",
    };
    for (case, sasl, user, password) in [
        ("wrong", &scram, "carol", "not carols password"),
        ("unknown", &scram, "nobody", "carols password"),
        ("old", &scram, "old", "olds password"),
        ("plain", &plain, "carol", "carols password"),
    ] {
        let server = serve_in(carol_and_old(&format!("scram-{case}")), "127.0.0.1:0", &[]);
        let ran = kcat_sasl(
            sasl,
            &server.kafka,
            user,
            password,
            &["-L", "-m", "5"],
            None,
        );
        assert!(!ran.succeeded(), "{case}: listed metadata: {}", ran.stdout);
        let log = server.log.lock().unwrap().clone();
        let user = format!("user={user:?}");
        let failed = |l: &String| l.contains(" event=auth_failed ") && l.contains(&user);
        match sasl.mechanism {
            "PLAIN" => assert!(ran.stderr.contains("PLAIN"), "{case}: {}", ran.stderr),
            _ => assert!(log.iter().any(failed), "{case}: {log:?}"),
        }
    }
}

/// Calls `body` on `addr` over TLS until it is answered with `ok_type` (an election
/// may be under way), for up to 20 s; the answer.
fn call_until(pki: &Pki, addr: &str, body: &Value, ok_type: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut stream = connect(addr, pki.client_config(None));
        match call(&mut stream, 1, body.clone()) {
            Ok(reply) if reply["type"] == ok_type => return reply,
            other => assert!(
                std::time::Instant::now() < deadline,
                "{addr}: {body} never answered {ok_type}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three nodes with TLS everywhere: their links to each other are mutual TLS checked
/// against --tls-peer-ca, so the cluster elects and replicates; a process that claims
/// to be a peer over TLS without a node's certificate is refused, one with another
/// CA's certificate fails its handshake, and the cluster keeps serving.
#[test]
fn a_cluster_with_tls_replicates_over_mutual_tls_and_refuses_peers_without_a_node_certificate() {
    let pki = Pki::new("cluster");
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let peers: Vec<String> = (ports.iter().enumerate())
        .map(|(i, port)| format!("n{}=127.0.0.1:{port}", i + 1))
        .collect();
    let peers = peers.join(",");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let nodes: Vec<Server> = (1..=3)
        .map(|i| {
            let id = format!("n{i}");
            let addr = format!("127.0.0.1:{}", ports[i - 1]);
            let flags = ["--node-id", &id, "--peers", &peers, "--tls-cert", &cert];
            let flags = [&flags[..], &["--tls-key", &key, "--tls-peer-ca", &ca]].concat();
            serve_in(data_dir(&format!("cluster-{id}")), &addr, &flags)
        })
        .collect();
    // A write through every node: a follower forwards to the leader over a peer link.
    let send_through_every_node = |msg: u32| {
        for node in &nodes {
            let send = json!({"type": "send", "key": "k", "msg": msg});
            call_until(&pki, &node.addr, &send, "send_ok");
        }
    };
    send_through_every_node(1);
    let poll = json!({"type": "poll", "offsets": {"k": 0}});
    let polled = call_until(&pki, &nodes[2].addr, &poll, "poll_ok");
    assert_eq!(
        polled["msgs"]["k"].as_array().map(Vec::len),
        Some(3),
        "{polled}"
    );
    // A peer's hello over TLS without a client certificate, or with one of the peer CA
    // for another address than that of the node it claims to be: refused, closed.
    let target = &nodes[1];
    for identity in [None, Some("elsewhere")] {
        let mut impostor = connect(&target.addr, pki.client_config(identity));
        let hello = json!({"herald_peer": "n1"}).to_string() + "\n";
        impostor.write_all(hello.as_bytes()).unwrap();
        impostor.flush().unwrap();
        let mut rest = Vec::new();
        let closed = impostor.read_to_end(&mut rest);
        assert!(closed.is_ok() || rest.is_empty(), "{closed:?}");
    }
    // Another CA's certificate does not get through the handshake.
    let mut stranger = connect(&target.addr, pki.client_config(Some("stranger")));
    let refused = call(&mut stranger, 1, json!({"type": "status"}));
    assert!(refused.is_err(), "{refused:?}");
    std::thread::sleep(Duration::from_millis(300));
    let log = target.log.lock().unwrap().clone();
    let has = |parts: &[&str]| log.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[" event=peer_refused ", "no client certificate"]),
        "{log:?}"
    );
    assert!(
        has(&[" event=peer_refused ", "is not for 127.0.0.1"]),
        "{log:?}"
    );
    assert!(has(&[" event=tls_failed "]), "{log:?}");
    assert!(has(&[" event=peer_accepted "]), "{log:?}");
    send_through_every_node(2);
}
