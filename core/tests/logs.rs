//! Seeded simulation of the log APIs on a node that crashes (sometimes between
//! persisting a step and sending its replies) and restarts from its records:
//!
//! - the Maelstrom kafka workload, driven by clients that behave like Maelstrom's
//!   (assign from committed offsets, poll then commit, crash and start over), checked
//!   for what Jepsen's kafka checker reports;
//! - consumer groups on a partitioned topic, checked for at-least-once delivery.
//!
//! Client requests and replies are lost on the way too (0, 10 or 20 %, by seed).
//!
//! `SIM_SEED=<n>` replays one seed exactly, `SIM_SEEDS=<count>` runs a longer sweep.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::sim::history::{definite, KafkaHistory};
use herald_core::sim::Cluster;
use herald_core::wire::msg::*;
use herald_core::{Config, Rng};

mod common;
use common::{
    cluster_net, fail, lossy_clients, maelstrom_partition, nemesis, pick_node, seeds, settled,
    workload_net,
};
use herald_core::sim::NetConfig;

/// Keys (or partitions) the workloads use.
const KEYS: u64 = 5;
/// Client processes of the kafka workload.
const PROCESSES: usize = 4;

/// One simulated Maelstrom kafka client. A crash replaces it with a fresh one.
#[derive(Default)]
struct KafkaClient {
    /// Its assignment: key → next offset to read.
    offsets: BTreeMap<String, u64>,
    /// Key → offset of its last acknowledged send.
    last_send: BTreeMap<String, u64>,
}

fn key(i: u64) -> String {
    i.to_string()
}

/// Which faults the kafka workload suffers on a cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Faults {
    /// [`nemesis`] before every operation, lossy links, lost client messages.
    Chaos,
    /// As `maelstrom test --nemesis partition`: every 10 s on average a partition
    /// starts or heals (one node alone, a minority against the rest, or a majorities
    /// ring); no crashes, no loss; clients wait 5 s for a reply.
    Partitions,
}

#[test]
fn kafka_workload_through_crashes() {
    for seed in seeds(500) {
        kafka_workload(seed, 1, Faults::Chaos, 200);
    }
}

/// Availability under Maelstrom's partition nemesis, with the same checks: 3 and 5
/// nodes, runs of 2,000 operations, about a simulated minute each (prints the fraction
/// that succeeded).
#[test]
fn kafka_availability_under_maelstrom_partitions() {
    for nodes in [3, 5] {
        let (ok, all) = kafka_sweep(seeds(2), nodes, Faults::Partitions, 2_000);
        eprintln!(
            "{nodes} nodes under partitions: {ok} of {all} operations succeeded ({:.1} %)",
            100.0 * ok as f64 / all as f64
        );
    }
}

/// The kafka workload on a 3-node Raft cluster whose nodes crash, restart and are
/// partitioned (one node, a minority, a majorities ring, one-way cuts) while the
/// links between them lose and duplicate messages.
#[test]
fn kafka_workload_on_3_nodes_through_partitions_and_crashes() {
    let (ok, all) = kafka_sweep(seeds(150), 3, Faults::Chaos, 200);
    eprintln!("3 nodes: {ok} of {all} client operations succeeded");
}

/// The same on 5 nodes.
#[test]
fn kafka_workload_on_5_nodes_through_partitions_and_crashes() {
    let (ok, all) = kafka_sweep(seeds(80), 5, Faults::Chaos, 200);
    eprintln!("5 nodes: {ok} of {all} client operations succeeded");
}

/// Runs the kafka workload for each seed; returns the operations that succeeded and
/// those tried, summed.
fn kafka_sweep(seeds: Vec<u64>, nodes: usize, faults: Faults, ops: usize) -> (u64, u64) {
    seeds
        .into_iter()
        .map(|seed| kafka_workload(seed, nodes, faults, ops))
        .fold((0, 0), |(ok, all), (o, a)| (ok + o, all + a))
}

/// Runs the kafka workload on `nodes` nodes with one seed; panics on an anomaly.
/// Returns (operations that succeeded, operations tried) before the final reads.
fn kafka_workload(seed: u64, nodes: usize, faults: Faults, ops: usize) -> (u64, u64) {
    {
        let net = match (nodes, faults) {
            (1, _) => lossy_clients(seed),
            (_, Faults::Chaos) => cluster_net(seed),
            (_, Faults::Partitions) => NetConfig {
                seed,
                min_latency_ms: 1,
                max_latency_ms: 5,
                ..NetConfig::default()
            },
        };
        let mut c = Cluster::new(nodes, net, |i| Config {
            seed: seed * 100 + i as u64,
            ..Config::default()
        });
        let timeout_ms = match (nodes, faults) {
            (1, _) => 500,
            (_, Faults::Chaos) => 1_000,
            (_, Faults::Partitions) => 5_000,
        };
        let mut rng = Rng::new(seed);
        let mut next_fault = c.now().plus_millis(rng.below(20_000));
        let mut partitioned = false;
        let mut clients: Vec<KafkaClient> =
            (0..PROCESSES).map(|_| KafkaClient::default()).collect();
        let mut h = KafkaHistory::default();
        let mut next_value = 0i64;
        let (mut ok_ops, mut all_ops) = (0u64, 0u64);
        for _ in 0..ops {
            if nodes > 1 && faults == Faults::Chaos {
                nemesis(&mut c, &mut rng, nodes);
            } else if nodes > 1 && c.now() >= next_fault {
                next_fault = c.now().plus_millis(rng.below(20_000));
                partitioned = !partitioned;
                if partitioned {
                    maelstrom_partition(&mut c, &mut rng, nodes);
                } else {
                    c.heal();
                }
            } else if nodes == 1 && !c.is_alive(0) && rng.chance(1, 3) {
                c.restart(0);
            }
            let n = pick_node(&mut rng, nodes);
            let p = rng.below(PROCESSES as u64) as usize;
            match rng.below(40) {
                0 | 1 if faults == Faults::Partitions => {}
                0 if nodes == 1 => c.crash(0),
                1 if nodes == 1 => c.crash_during_next_step(0),
                0 | 1 => {}
                2 => clients[p] = KafkaClient::default(),
                3..=6 => {
                    // assign: a new key set, each key resuming where this client was,
                    // else at the committed offset, else at 0.
                    let keys: Vec<String> =
                        (0..KEYS).filter(|_| rng.chance(1, 2)).map(key).collect();
                    let list = ListCommittedOffsets {
                        keys: keys.clone(),
                        group: None,
                    };
                    all_ops += 1;
                    let floors = h.commit_floors();
                    if let Some(Payload::ListCommittedOffsetsOk(ok)) =
                        c.try_request(n, Payload::ListCommittedOffsets(list), timeout_ms)
                    {
                        ok_ops += 1;
                        for (k, &offset) in &ok.offsets {
                            if let Err(e) = h.check_listed(k, offset, &floors) {
                                fail(&c, seed, e);
                            }
                        }
                        let client = &mut clients[p];
                        client.offsets = keys
                            .into_iter()
                            .map(|k| {
                                let at = client
                                    .offsets
                                    .get(&k)
                                    .or(ok.offsets.get(&k))
                                    .copied()
                                    .unwrap_or(0);
                                (k, at)
                            })
                            .collect();
                    }
                }
                7..=22 => {
                    let k = key(rng.below(KEYS));
                    let value = next_value;
                    next_value += 1;
                    let send = Send {
                        key: k.clone(),
                        msg: value.into(),
                        ..Default::default()
                    };
                    all_ops += 1;
                    match c.try_request(n, Payload::Send(send), timeout_ms) {
                        Some(Payload::SendOk(ok)) => {
                            ok_ops += 1;
                            if let Err(e) = h.send_ok(&k, ok.offset, value) {
                                fail(&c, seed, e);
                            }
                            let last = clients[p].last_send.insert(k.clone(), ok.offset);
                            if last.is_some_and(|last| last >= ok.offset) {
                                fail(
                                    &c,
                                    seed,
                                    format!(
                                        "nonmonotonic send: {k} got {} after {last:?}",
                                        ok.offset
                                    ),
                                );
                            }
                        }
                        Some(Payload::Error(e)) => h.send_failed(&k, value, Some(e.code)),
                        None => h.send_failed(&k, value, None),
                        Some(other) => fail(&c, seed, format!("send answered {other:?}")),
                    }
                }
                _ => {
                    // poll, then commit what was polled (as Maelstrom's client does).
                    let asked = clients[p].offsets.clone();
                    let poll = Poll {
                        offsets: asked.clone(),
                        max: Some(rng.between(1, 6) as usize),
                    };
                    all_ops += 1;
                    let Some(Payload::PollOk(ok)) =
                        c.try_request(n, Payload::Poll(poll), timeout_ms)
                    else {
                        continue;
                    };
                    ok_ops += 1;
                    let mut commit = BTreeMap::new();
                    for (k, pairs) in &ok.msgs {
                        let Some(&from) = asked.get(k) else {
                            fail(
                                &c,
                                seed,
                                format!("poll returned {k}, which it did not ask for"),
                            );
                        };
                        if let Err(e) = h.polled(k, from, pairs) {
                            fail(&c, seed, e);
                        }
                        if let Some(&(last, _)) = pairs.last() {
                            clients[p].offsets.insert(k.clone(), last + 1);
                            commit.insert(k.clone(), last);
                        }
                    }
                    if commit.is_empty() {
                        continue;
                    }
                    let request = CommitOffsets {
                        offsets: commit.clone(),
                        group: None,
                    };
                    all_ops += 1;
                    let n = pick_node(&mut rng, nodes);
                    match c.try_request(n, Payload::CommitOffsets(request), timeout_ms) {
                        Some(Payload::CommitOffsetsOk) => {
                            ok_ops += 1;
                            h.committed(&commit);
                        }
                        None => {}
                        // A cluster without a reachable leader refuses commits.
                        Some(Payload::Error(_)) if nodes > 1 => {}
                        Some(other) => fail(&c, seed, format!("commit_offsets answered {other:?}")),
                    }
                }
            }
            c.run_for_ms(rng.between(0, 50));
        }

        // Healed: every node up; read every key from the start.
        c.heal();
        c.restart_all();
        c.run_for_ms(if nodes == 1 { 1_000 } else { 3_000 });
        for k in (0..KEYS).map(key) {
            let mut pairs = Vec::new();
            loop {
                let poll = Poll {
                    offsets: [(k.clone(), pairs.len() as u64)].into(),
                    max: Some(100),
                };
                let Payload::PollOk(ok) = settled(&mut c, Payload::Poll(poll)) else {
                    fail(&c, seed, "final poll refused".into());
                };
                let more = ok.msgs.get(&k).cloned().unwrap_or_default();
                if more.is_empty() {
                    break;
                }
                pairs.extend(more);
            }
            // Unseen / lost writes: every acknowledged send is in the final log.
            if let Err(e) = h.check_final(&k, &pairs) {
                fail(&c, seed, e);
            }
        }
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        let list = ListCommittedOffsets { keys, group: None };
        let Payload::ListCommittedOffsetsOk(ok) =
            settled(&mut c, Payload::ListCommittedOffsets(list))
        else {
            fail(&c, seed, "final list_committed_offsets refused".into());
        };
        if let Err(e) = h.check_final_commits(&ok.offsets) {
            fail(&c, seed, e);
        }
        (ok_ops, all_ops)
    }
}

/// What the group's consumers learned, and the checks applied as they learn it.
#[derive(Default)]
struct GroupHistory {
    /// (partition, offset) → value, from acknowledged publishes and fetches.
    value_at: BTreeMap<(u32, u64), i64>,
    /// Publishes acknowledged, with where they landed.
    acked: BTreeMap<i64, (u32, u64)>,
    /// Publishes without an answer.
    unsure: BTreeSet<i64>,
    /// Every (partition, offset) some consumer fetched.
    fetched: BTreeSet<(u32, u64)>,
    /// Partition → one past the highest offset fetched.
    fetched_end: BTreeMap<u32, u64>,
    /// Partition → highest next-offset an acknowledged commit committed.
    committed: BTreeMap<u32, u64>,
    /// (generation, partition) → the consumer an assignment gave it to.
    owner: BTreeMap<(u64, u32), String>,
    /// The highest generation any reply carried.
    generation: u64,
}

impl GroupHistory {
    /// Records an assignment reply: generations never go back, and no partition has two
    /// owners in one generation.
    fn assigned(&mut self, consumer: &str, a: &Assignment) -> Result<(), String> {
        if a.generation < self.generation {
            return Err(format!(
                "{consumer} was given generation {} after {}",
                a.generation, self.generation
            ));
        }
        self.generation = a.generation;
        for &p in &a.partitions {
            let owner = self
                .owner
                .entry((a.generation, p))
                .or_insert_with(|| consumer.to_owned());
            if owner != consumer {
                return Err(format!(
                    "partition {p} owned by {owner} and {consumer} in generation {}",
                    a.generation
                ));
            }
        }
        Ok(())
    }

    /// Records a fetch by `consumer` in `generation`: only owned partitions, each
    /// contiguous, starting no later than anything unfetched (no skip) and no earlier
    /// than the acknowledged commit (no rewind), at offsets that hold what was
    /// published there.
    fn fetched(&mut self, consumer: &str, generation: u64, msgs: &[Fetched]) -> Result<(), String> {
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for m in msgs {
            let p = m.partition;
            if self.owner.get(&(generation, p)).map(String::as_str) != Some(consumer) {
                return Err(format!("{consumer} fetched partition {p}, which it does not own in generation {generation}"));
            }
            match next.get(&p) {
                Some(&want) if m.offset != want => {
                    return Err(format!(
                        "fetch of partition {p} jumped to {} from {want}",
                        m.offset
                    ));
                }
                Some(_) => {}
                None => {
                    let end = self.fetched_end.get(&p).copied().unwrap_or(0);
                    let floor = self.committed.get(&p).copied().unwrap_or(0);
                    if m.offset > end || m.offset < floor {
                        return Err(format!("fetch of partition {p} started at {} (fetched up to {end}, committed {floor})", m.offset));
                    }
                }
            }
            next.insert(p, m.offset + 1);
            let value = m.msg.to_value().as_i64().ok_or_else(|| {
                format!("{p}@{} holds {}, which nobody published", m.offset, m.msg)
            })?;
            if !self.acked.contains_key(&value) && !self.unsure.contains(&value) {
                return Err(format!(
                    "{p}@{} holds {value}, which was never published",
                    m.offset
                ));
            }
            let held = *self.value_at.entry((p, m.offset)).or_insert(value);
            if held != value {
                return Err(format!(
                    "inconsistent offsets: {p}@{} holds {held} and {value}",
                    m.offset
                ));
            }
            self.fetched.insert((p, m.offset));
        }
        for (p, end) in next {
            let slot = self.fetched_end.entry(p).or_insert(end);
            *slot = (*slot).max(end);
        }
        Ok(())
    }
}

/// A group member as its client sees itself.
#[derive(Default)]
struct Member {
    /// The generation it joined in, if it is a member.
    generation: Option<u64>,
    /// Partition → one past what it fetched in this generation.
    fetched: BTreeMap<u32, u64>,
}

/// Consumer groups on a partitioned topic through node crashes, session expiries and
/// rebalances: at-least-once (every acknowledged publish is fetched; a rebalance
/// never skips past unfetched messages nor rewinds past a commit), one owner per
/// partition per generation, generations never go back.
#[test]
fn consumer_groups_through_crashes_and_rebalances() {
    // 19: a fetch whose reply was lost moved the server's cursor past messages nobody
    // received; the consumer then committed past them. A rejoin now rewinds to the
    // committed offsets (and the client rejoins after a lost fetch).
    for seed in seeds(500).into_iter().chain([19]) {
        groups_workload(seed, 1);
    }
}

/// The same on a 3-node Raft cluster with partitions and crashes: group membership,
/// generations, fetch cursors and commits are replicated like the logs.
#[test]
fn consumer_groups_on_3_nodes_through_partitions_and_crashes() {
    // 3287: the network duplicated a forwarded fetch; both copies ran, the first
    // reply was lost and the empty second one reached the consumer, so what the first
    // fetched was skipped. A repeat of a forwarded request is now dropped at apply.
    for seed in seeds(150).into_iter().chain([3287]) {
        groups_workload(seed, 3);
    }
}

fn groups_workload(seed: u64, nodes: usize) {
    const PARTITIONS: u32 = 4;
    let consumers = ["a", "b", "c"];
    {
        let config = Config {
            seed,
            group_session_timeout_ms: 1_000,
            ..Config::default()
        };
        let session_ms = config.group_session_timeout_ms;
        let net = workload_net(seed, nodes);
        let mut c = Cluster::new(nodes, net, |i| Config {
            seed: seed * 100 + i as u64,
            ..config.clone()
        });
        let timeout_ms = if nodes == 1 { 500 } else { 1_000 };
        let mut rng = Rng::new(seed);
        let create = CreateTopic {
            topic: "t".into(),
            partitions: PARTITIONS,
        };
        settled(&mut c, Payload::CreateTopic(create));
        let mut h = GroupHistory::default();
        let mut members: Vec<Member> = consumers.iter().map(|_| Member::default()).collect();
        let membership = |i: usize| Membership {
            topic: Some("t".into()),
            group: "g".into(),
            consumer: consumers[i].into(),
        };
        for value in 0..250i64 {
            if nodes > 1 {
                nemesis(&mut c, &mut rng, nodes);
            } else if !c.is_alive(0) && rng.chance(1, 3) {
                c.restart(0);
            }
            let n = pick_node(&mut rng, nodes);
            let i = rng.below(consumers.len() as u64) as usize;
            match rng.below(40) {
                0 if nodes == 1 => c.crash(0),
                1 if nodes == 1 => c.crash_during_next_step(0),
                0 | 1 => {}
                2..=13 => {
                    let key = rng.chance(1, 2).then(|| format!("k{}", rng.below(8)));
                    let publish = Publish {
                        topic: "t".into(),
                        key,
                        msg: value.into(),
                        ..Default::default()
                    };
                    match c.try_request(n, Payload::Publish(publish), timeout_ms) {
                        Some(Payload::PublishOk(ok)) => {
                            h.acked.insert(value, (ok.partition, ok.offset));
                            let held =
                                *h.value_at.entry((ok.partition, ok.offset)).or_insert(value);
                            if held != value {
                                fail(
                                    &c,
                                    seed,
                                    format!(
                                        "inconsistent offsets: {}@{} holds {held} and {value}",
                                        ok.partition, ok.offset
                                    ),
                                );
                            }
                        }
                        // Refused: never published, so never fetched (the checker
                        // fails a fetch of a value neither acked nor unsure).
                        Some(Payload::Error(e)) if definite(e.code) => {}
                        Some(Payload::Error(_)) | None => {
                            h.unsure.insert(value);
                        }
                        Some(other) => fail(&c, seed, format!("publish answered {other:?}")),
                    }
                }
                14..=17 => {
                    let request = if members[i].generation.is_some() && rng.chance(3, 4) {
                        Payload::Heartbeat(membership(i))
                    } else {
                        Payload::Join(membership(i))
                    };
                    let (assignment, rejoined) = match c.try_request(n, request, timeout_ms) {
                        Some(Payload::JoinOk(a)) => (a, true),
                        Some(Payload::HeartbeatOk(a)) => (a, false),
                        Some(Payload::Error(_)) | None => {
                            members[i] = Member::default();
                            continue;
                        }
                        Some(other) => fail(&c, seed, format!("join answered {other:?}")),
                    };
                    h.assigned(consumers[i], &assignment)
                        .unwrap_or_else(|e| fail(&c, seed, e));
                    // A join (or a new generation) resumes from the committed offsets:
                    // forget what was fetched before.
                    if rejoined || members[i].generation != Some(assignment.generation) {
                        members[i] = Member {
                            generation: Some(assignment.generation),
                            ..Member::default()
                        };
                    }
                }
                18 => {
                    c.try_request(n, Payload::Leave(membership(i)), timeout_ms);
                    members[i] = Member::default();
                }
                19..=31 => {
                    let Some(generation) = members[i].generation else {
                        continue;
                    };
                    let fetch = Fetch {
                        group: "g".into(),
                        consumer: consumers[i].into(),
                        generation,
                        max: Some(rng.between(1, 6) as usize),
                    };
                    match c.try_request(n, Payload::Fetch(fetch), timeout_ms) {
                        Some(Payload::FetchOk(ok)) => {
                            h.fetched(consumers[i], generation, &ok.msgs)
                                .unwrap_or_else(|e| fail(&c, seed, e));
                            for m in ok.msgs {
                                members[i].fetched.insert(m.partition, m.offset + 1);
                            }
                        }
                        Some(Payload::Error(_)) => members[i] = Member::default(),
                        Some(other) => fail(&c, seed, format!("fetch answered {other:?}")),
                        // A lost reply: join again, which resumes from the committed
                        // offsets rather than past what the lost reply carried.
                        None => members[i] = Member::default(),
                    }
                }
                _ => {
                    let Some(generation) = members[i].generation else {
                        continue;
                    };
                    if members[i].fetched.is_empty() {
                        continue;
                    }
                    let offsets: BTreeMap<String, u64> = members[i]
                        .fetched
                        .iter()
                        .map(|(p, &o)| (p.to_string(), o))
                        .collect();
                    let commit = Commit {
                        group: "g".into(),
                        consumer: consumers[i].into(),
                        generation,
                        offsets,
                    };
                    match c.try_request(n, Payload::Commit(commit), timeout_ms) {
                        Some(Payload::CommitOk) => {
                            for (&p, &o) in &members[i].fetched {
                                let slot = h.committed.entry(p).or_insert(o);
                                *slot = (*slot).max(o);
                            }
                        }
                        Some(Payload::Error(_)) => members[i] = Member::default(),
                        Some(other) => fail(&c, seed, format!("commit answered {other:?}")),
                        None => {}
                    }
                }
            }
            c.run_for_ms(rng.between(0, 60));
        }

        // Healed: every session runs out, then one fresh consumer owns every partition
        // and reads to the end; every acknowledged publish must have been fetched.
        c.heal();
        c.restart_all();
        c.run_for_ms(2 * session_ms + if nodes == 1 { 0 } else { 2_000 });
        let z = Membership {
            topic: Some("t".into()),
            group: "g".into(),
            consumer: "z".into(),
        };
        // Like a real consumer: fetch, commit what was fetched, and join again when
        // the membership is gone (a session can run out while fetches are retried).
        let mut generation = None;
        for round in 0.. {
            if round == 2_000 {
                fail(&c, seed, "the final consumer made no progress".into());
            }
            let Some(gen) = generation else {
                let Payload::JoinOk(a) = settled(&mut c, Payload::Join(z.clone())) else {
                    fail(&c, seed, "the final join was refused".into());
                };
                h.assigned("z", &a).unwrap_or_else(|e| fail(&c, seed, e));
                if a.partitions.len() != PARTITIONS as usize {
                    fail(
                        &c,
                        seed,
                        format!("the only consumer left owns {:?}", a.partitions),
                    );
                }
                generation = Some(a.generation);
                continue;
            };
            let fetch = Fetch {
                group: "g".into(),
                consumer: "z".into(),
                generation: gen,
                max: Some(100),
            };
            match c.request(round % nodes, Payload::Fetch(fetch)) {
                Payload::FetchOk(ok) if ok.msgs.is_empty() => break,
                Payload::FetchOk(ok) => {
                    h.fetched("z", gen, &ok.msgs)
                        .unwrap_or_else(|e| fail(&c, seed, e));
                    let offsets: BTreeMap<String, u64> = ok
                        .msgs
                        .iter()
                        .map(|m| (m.partition.to_string(), m.offset + 1))
                        .collect();
                    let commit = Commit {
                        group: "g".into(),
                        consumer: "z".into(),
                        generation: gen,
                        offsets: offsets.clone(),
                    };
                    if c.request(round % nodes, Payload::Commit(commit)) == Payload::CommitOk {
                        for (p, o) in offsets {
                            let slot = h.committed.entry(p.parse().unwrap()).or_insert(o);
                            *slot = (*slot).max(o);
                        }
                    }
                }
                // Not served (no leader, no lease): nothing happened; try again.
                Payload::Error(e) if e.code == 11 => c.run_for_ms(100),
                // Anything else, including an unknown outcome (the cursor may have
                // moved): join again, which resumes from the commits.
                Payload::Error(_) => generation = None,
                other => fail(&c, seed, format!("the final fetch answered {other:?}")),
            }
        }
        for (value, at) in &h.acked {
            if !h.fetched.contains(at) {
                fail(
                    &c,
                    seed,
                    format!(
                        "acknowledged publish {value} at {}@{} was never fetched",
                        at.0, at.1
                    ),
                );
            }
        }
    }
}
