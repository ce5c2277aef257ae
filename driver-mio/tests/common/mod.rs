//! What the real-process test binaries share.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herald_core::Payload;
use herald_mio::client::Client;

pub mod procs;

/// A free loopback port below the kernel's ephemeral range (32768 and up on Linux), so
/// that no outgoing connection (a client's, a peer link's) can be handed it between this
/// check and the server binding it. Ports are taken in turn from a window that depends
/// on the process id; each is checked free by binding it.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (std::process::id().wrapping_mul(251).wrapping_add(n)) % COUNT;
        let port = u16::try_from(port).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

/// The addresses a server's `event=listening` log line names (`none` for a listener
/// it does not have).
pub struct Listening {
    /// The JSON-lines listener.
    pub addr: String,
    /// The Kafka listener.
    pub kafka: String,
    /// The metrics listener.
    pub metrics: String,
}

/// The addresses in `line`, if it is a server's `event=listening` line.
pub fn listening(line: &str) -> Option<Listening> {
    let at = line.find(" event=listening ")?;
    let words = || line[at..].split_whitespace();
    let field = |key: &str| words().find_map(|w| w.strip_prefix(key)).map(str::to_owned);
    Some(Listening {
        addr: field("addr=")?,
        kafka: field("kafka_addr=")?,
        metrics: field("metrics_addr=")?,
    })
}

/// The index of the leader of nodes `n1, n2, ...` listening at `addrs`, once every one
/// of them names the same leader; panics after `timeout`.
pub fn agreed_leader(addrs: &[&str], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: Vec<Option<String>> = addrs
            .iter()
            .map(|addr| {
                let mut client = Client::connect(addr).ok()?;
                client.set_timeout(Some(Duration::from_secs(5))).ok()?;
                match client.call(Payload::Status) {
                    Ok(Ok(Payload::StatusOk(s))) => s.leader,
                    _ => None,
                }
            })
            .collect();
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| x.as_ref() == Some(l)) {
                return l[1..].parse::<usize>().unwrap() - 1;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
