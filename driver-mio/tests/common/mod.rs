//! What the real-process test binaries share.

use std::time::{Duration, Instant};

use herald_core::Payload;
use herald_mio::client::Client;

/// A free loopback port (bound and released: another process could take it first, which
/// fails the test loudly rather than silently).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
