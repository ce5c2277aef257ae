//! Scenarios of the Raft-replicated broker on a simulated 3-node cluster that random
//! sweeps reach only rarely: a deposed leader's reads, a one-way cut that must not
//! depose a healthy leader, a follower too far behind for the log, a whole-cluster
//! restart.

use herald_core::sim::{Cluster, NetConfig};
use herald_core::wire::msg::*;
use herald_core::{Config, Time};

fn cluster(seed: u64, config: Config) -> Cluster {
    let net = NetConfig {
        seed,
        ..NetConfig::default()
    };
    Cluster::new(3, net, |i| Config {
        seed: seed * 10 + i as u64,
        ..config.clone()
    })
}

/// The node that believes it leads, among `among`.
fn leader_among(c: &Cluster, among: &[usize]) -> Option<usize> {
    among.iter().copied().find(|&i| {
        c.is_alive(i)
            && c.node(i)
                .cluster_status()
                .is_some_and(|s| s.leader == Some(format!("n{i}")))
    })
}

/// Runs the cluster until one of `among` leads; panics after 20 simulated seconds.
fn await_leader(c: &mut Cluster, among: &[usize], seed: u64) -> usize {
    loop {
        c.run_for_ms(5);
        if let Some(l) = leader_among(c, among) {
            return l;
        }
        assert!(
            c.now() < Time::from_millis(20_000),
            "seed {seed}: no new leader"
        );
    }
}

/// Uses the broker once (which starts Raft) and waits for a leader.
fn elect(c: &mut Cluster) -> usize {
    for _ in 0..100 {
        if let Payload::ListTopicsOk(_) = c.request(0, Payload::ListTopics) {
            if let Some(l) = leader_among(c, &[0, 1, 2]) {
                return l;
            }
        }
        c.run_for_ms(50);
    }
    panic!("no leader after 5 s");
}

fn send(key: &str, msg: i64) -> Payload {
    Payload::Send(Send {
        key: key.into(),
        msg: serde_json::json!(msg).into(),
        ..Default::default()
    })
}

fn commit(key: &str, offset: u64) -> Payload {
    Payload::CommitOffsets(CommitOffsets {
        offsets: [(key.to_owned(), offset)].into(),
        group: None,
    })
}

#[test]
fn a_deposed_leader_answers_no_stale_read_and_acknowledges_no_write() {
    for seed in 0..20 {
        let mut c = cluster(seed, Config::default());
        let old = elect(&mut c);
        assert!(matches!(c.request(old, send("k", 1)), Payload::SendOk(_)));
        assert_eq!(c.request(old, commit("k", 0)), Payload::CommitOffsetsOk);
        let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        c.partition(&[old], &others);
        // The majority elects a new leader and commits a newer offset through it...
        let new = await_leader(&mut c, &others, seed);
        assert!(matches!(c.request(new, send("k", 2)), Payload::SendOk(_)));
        assert_eq!(c.request(new, commit("k", 1)), Payload::CommitOffsetsOk);
        // ...so the old leader, which may still think it leads, must not answer a read
        // from its stale state, nor acknowledge a write.
        let list = ListCommittedOffsets {
            keys: vec!["k".into()],
            group: None,
        };
        match c.request(old, Payload::ListCommittedOffsets(list)) {
            Payload::Error(e) => assert_eq!(e.code, 11, "seed {seed}: {e:?}"),
            other => panic!("seed {seed}: the cut-off old leader answered {other:?}"),
        }
        match c.try_request(old, send("k", 3), 5_000) {
            None => {}
            Some(Payload::Error(e)) => assert!(e.code == 0 || e.code == 11, "{e:?}"),
            Some(other) => panic!("seed {seed}: the cut-off old leader answered {other:?}"),
        }
    }
}

#[test]
fn a_leader_deposed_by_its_successors_appends_answers_every_write_it_had_proposed() {
    // The old leader stays sure it leads (it disregards the vote requests it hears) and
    // learns of its successor from an append that overwrites its uncommitted entries:
    // their clients must still hear back (0: unknown), not wait forever.
    let mut overwritten = 0;
    for seed in 0..20 {
        let mut c = cluster(seed, Config::default());
        let old = elect(&mut c);
        let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        for &o in &others {
            c.cut_one_way(old, o);
        }
        let pending: Vec<u64> = (0..3).map(|i| c.submit(old, send("k", i))).collect();
        let new = await_leader(&mut c, &others, seed);
        assert!(matches!(c.request(new, send("k", 9)), Payload::SendOk(_)));
        c.heal();
        for msg_id in pending {
            match c.await_reply(old, msg_id, 10_000) {
                Some(Payload::Error(e)) if e.code == 0 => overwritten += 1,
                Some(Payload::SendOk(_)) => {}
                other => panic!("seed {seed}: write {msg_id} to the old leader got {other:?}"),
            }
        }
    }
    assert!(overwritten > 0, "no schedule overwrote a proposal");
}

#[test]
fn a_follower_whose_acknowledgements_arrive_after_compaction_gets_a_snapshot() {
    // Slow, lossy links and a short log: an append's success can arrive after the log
    // was compacted past what the follower has, so filling the follower's window must
    // stop at the snapshot it now needs (it once spun there forever).
    let config = Config {
        max_raft_log_entries: 8,
        max_append_entries: 2,
        ..Config::default()
    };
    let mut snapshots = 0;
    for seed in 0..30 {
        let net = NetConfig {
            seed,
            min_latency_ms: 1,
            max_latency_ms: 150,
            loss_percent: 10,
            ..NetConfig::default()
        };
        let mut c = Cluster::new(3, net, |i| Config {
            seed: seed * 10 + i as u64,
            ..config.clone()
        });
        let leader = elect(&mut c);
        let pending: Vec<u64> = (0..60).map(|i| c.submit(leader, send("k", i))).collect();
        for msg_id in pending {
            assert!(
                c.await_reply(leader, msg_id, 20_000).is_some(),
                "seed {seed}"
            );
        }
        snapshots += c.stats.snapshots;
    }
    assert!(snapshots > 0, "no schedule needed a snapshot");
}

#[test]
fn a_restarted_node_applies_what_its_own_log_committed_and_its_log_stays_short() {
    // The commit index is logged (with the records of later steps), so recovery
    // applies the committed entries and compacts the log as the running node did. Before, a restarted node applied
    // nothing until a leader spoke, and its log, and every snapshot of it, held every
    // entry ever written.
    let limit = 20;
    let config = Config {
        max_raft_log_entries: limit,
        ..Config::default()
    };
    for seed in 0..10 {
        let mut c = cluster(seed, config.clone());
        let leader = elect(&mut c);
        for i in 0..200 {
            assert!(matches!(
                c.request(leader, send("k", i)),
                Payload::SendOk(_)
            ));
        }
        c.run_for_ms(500); // the followers hear the last commit index
        for i in 0..3 {
            let before = c.node(i).cluster_status().unwrap();
            assert!(before.applied_index > 200, "seed {seed}: n{i} {before:?}");
            c.crash(i);
            c.restart(i);
            let after = c.node(i).cluster_status().unwrap();
            // The index is logged with the next entries: the last one's commit is not.
            assert!(
                after.applied_index + 1 >= before.applied_index,
                "seed {seed}: n{i} {after:?} {before:?}"
            );
            let held = after.last_index - after.compacted_index;
            assert!(
                held <= limit as u64,
                "seed {seed}: n{i} holds {held} entries"
            );
        }
    }
}

#[test]
fn a_node_that_stops_hearing_the_leader_cannot_depose_it() {
    for seed in 0..20 {
        let mut c = cluster(seed, Config::default());
        let leader = elect(&mut c);
        let term = c.node(leader).cluster_status().unwrap().term;
        let deaf = (leader + 1) % 3;
        c.cut_one_way(leader, deaf);
        c.run_for_ms(5_000);
        // The third node still hears the leader, so it disregards the deaf node's
        // (pre-)votes: no election, and the leader's read lease stays sound.
        let status = c.node(leader).cluster_status().unwrap();
        assert_eq!(
            (status.leader, status.term),
            (Some(format!("n{leader}")), term),
            "seed {seed}: the leader was deposed"
        );
        assert!(matches!(
            c.request(deaf, send("k", 1)),
            Payload::Error(_) | Payload::SendOk(_)
        ));
    }
}

#[test]
fn a_follower_too_far_behind_gets_a_snapshot_and_keeps_it_through_a_restart() {
    let config = Config {
        max_raft_log_entries: 16,
        ..Config::default()
    };
    for seed in 0..10 {
        let mut c = cluster(seed, config.clone());
        let leader = elect(&mut c);
        let behind = (leader + 1) % 3;
        let third = (leader + 2) % 3;
        c.partition(&[behind], &[leader, third]);
        for i in 0..100 {
            assert!(matches!(
                c.request(leader, send(&format!("k{}", i % 7), i)),
                Payload::SendOk(_)
            ));
        }
        c.heal();
        c.run_for_ms(2_000);
        let state = |c: &Cluster, i: usize| serde_json::to_value(c.node(i).broker()).unwrap();
        let want = state(&c, leader);
        assert_eq!(
            state(&c, behind),
            want,
            "seed {seed}: the follower did not catch up"
        );
        let status = c.node(behind).cluster_status().unwrap();
        assert!(
            status.last_index - status.commit_index < 16,
            "seed {seed}: {status:?}"
        );
        // The installed snapshot was persisted: a restart comes back to the same state
        // once it hears the leader again.
        c.crash(behind);
        c.restart(behind);
        c.run_for_ms(2_000);
        assert_eq!(state(&c, behind), want, "seed {seed}: lost after a restart");
    }
}

#[test]
fn a_whole_cluster_restart_keeps_every_acknowledged_write() {
    for seed in 0..20 {
        let mut c = cluster(seed, Config::default());
        let leader = elect(&mut c);
        let mut acked = Vec::new();
        for i in 0..20 {
            if let Payload::SendOk(ok) = c.request((leader + i as usize) % 3, send("k", i)) {
                acked.push((ok.offset, i));
            }
        }
        assert_eq!(
            acked.len(),
            20,
            "seed {seed}: a calm cluster refused a send"
        );
        for i in 0..3 {
            c.crash(i);
        }
        c.restart_all();
        let poll = Poll {
            offsets: [("k".to_owned(), 0)].into(),
            max: None,
        };
        let got = loop {
            c.run_for_ms(100);
            let reply = (0..3)
                .map(|i| c.request(i, Payload::Poll(poll.clone())))
                .find(|r| matches!(r, Payload::PollOk(_)));
            if let Some(Payload::PollOk(ok)) = reply {
                break ok.msgs["k"].clone();
            }
            assert!(
                c.now() < Time::from_millis(30_000),
                "seed {seed}: no leader"
            );
        };
        let got: Vec<(u64, i64)> = got
            .into_iter()
            .map(|(o, v)| (o, v.to_value().as_i64().unwrap()))
            .collect();
        assert_eq!(got, acked, "seed {seed}");
    }
}
