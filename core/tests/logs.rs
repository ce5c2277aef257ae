//! Seeded simulation of the log APIs on a node that crashes (sometimes between
//! persisting a step and sending its replies) and restarts from its records:
//!
//! - the Maelstrom kafka workload, driven by clients that behave like Maelstrom's
//!   (assign from committed offsets, poll then commit, crash and start over), checked
//!   for what Jepsen's kafka checker reports;
//! - consumer groups on a partitioned topic, checked for at-least-once delivery.
//!
//! `SIM_SEED=<n>` replays one seed exactly, `SIM_SEEDS=<count>` runs a longer sweep.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::msg::*;
use herald_core::sim::{Cluster, NetConfig};
use herald_core::{Config, Rng};

mod common;
use common::{fail, seeds};

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

/// What the kafka clients learned, and the checks applied as they learn it.
#[derive(Default)]
struct KafkaHistory {
    /// (key, offset) → value, from acknowledged sends and from polls.
    value_at: BTreeMap<(String, u64), i64>,
    /// (key, value) → offset.
    offset_of: BTreeMap<(String, i64), u64>,
    /// Sends acknowledged with an offset.
    acked: BTreeSet<(String, i64)>,
    /// Sends without an answer: they may or may not have happened.
    unsure: BTreeSet<(String, i64)>,
    /// Sends refused with an error: they must never be read.
    refused: BTreeSet<(String, i64)>,
    /// Key → highest offset an acknowledged `commit_offsets` committed.
    committed: BTreeMap<String, u64>,
    /// Key → highest committed offset a `list_committed_offsets` returned.
    listed: BTreeMap<String, u64>,
}

impl KafkaHistory {
    /// Records that `key` holds `value` at `offset`, or names the anomaly.
    fn observe(&mut self, key: &str, offset: u64, value: i64) -> Result<(), String> {
        if self.refused.contains(&(key.to_owned(), value)) {
            return Err(format!(
                "G1a: {key}@{offset} = {value}, whose send was refused"
            ));
        }
        let held = *self
            .value_at
            .entry((key.to_owned(), offset))
            .or_insert(value);
        if held != value {
            return Err(format!(
                "inconsistent offsets: {key}@{offset} holds {held} and {value}"
            ));
        }
        let at = *self
            .offset_of
            .entry((key.to_owned(), value))
            .or_insert(offset);
        if at != offset {
            return Err(format!(
                "duplicate: {key} holds {value} at {at} and {offset}"
            ));
        }
        Ok(())
    }

    /// Checks a committed offset some list returned: commits never go backwards.
    fn check_listed(&mut self, key: &str, offset: u64) -> Result<(), String> {
        let floor = self
            .committed
            .get(key)
            .copied()
            .max(self.listed.get(key).copied());
        if floor.is_some_and(|floor| offset < floor) {
            return Err(format!(
                "committed offset of {key} went back from {} to {offset}",
                floor.unwrap_or(0)
            ));
        }
        self.listed.insert(key.to_owned(), offset);
        Ok(())
    }
}

/// Checks one poll's pairs for `key`, asked from offset `from`: offsets are dense in
/// Herald, so a poll must start exactly at `from` and never skip or repeat
/// (Jepsen's int-poll-skip, int-nonmonotonic-poll, and with the client carrying on
/// from the end, poll-skip and nonmonotonic-poll). Returns the values.
fn check_poll(
    key: &str,
    from: u64,
    pairs: &[(u64, serde_json::Value)],
) -> Result<Vec<i64>, String> {
    let offsets: Vec<u64> = pairs.iter().map(|p| p.0).collect();
    let expected: Vec<u64> = (from..from + pairs.len() as u64).collect();
    if offsets != expected {
        return Err(format!(
            "poll of {key} from {from} returned offsets {offsets:?}"
        ));
    }
    pairs
        .iter()
        .map(|(offset, v)| {
            v.as_i64()
                .ok_or_else(|| format!("{key}@{offset} holds {v}, which nobody sent"))
        })
        .collect()
}

fn key(i: u64) -> String {
    i.to_string()
}

#[test]
fn kafka_workload_through_crashes() {
    for seed in seeds(60) {
        let mut c = Cluster::new(
            1,
            NetConfig {
                seed,
                ..NetConfig::default()
            },
            |_| Config {
                seed,
                ..Config::default()
            },
        );
        let mut rng = Rng::new(seed);
        let mut clients: Vec<KafkaClient> =
            (0..PROCESSES).map(|_| KafkaClient::default()).collect();
        let mut h = KafkaHistory::default();
        let mut next_value = 0i64;
        for _ in 0..200 {
            if !c.is_alive(0) && rng.chance(1, 3) {
                c.restart(0);
            }
            let p = rng.below(PROCESSES as u64) as usize;
            match rng.below(40) {
                0 => c.crash(0),
                1 => c.crash_during_next_step(0),
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
                    if let Some(Payload::ListCommittedOffsetsOk(ok)) =
                        c.try_request(0, Payload::ListCommittedOffsets(list), 500)
                    {
                        for (k, &offset) in &ok.offsets {
                            if let Err(e) = h.check_listed(k, offset) {
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
                    };
                    match c.try_request(0, Payload::Send(send), 500) {
                        Some(Payload::SendOk(ok)) => {
                            if let Err(e) = h.observe(&k, ok.offset, value) {
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
                            h.acked.insert((k, value));
                        }
                        Some(Payload::Error(_)) => {
                            h.refused.insert((k, value));
                        }
                        Some(other) => fail(&c, seed, format!("send answered {other:?}")),
                        None => {
                            h.unsure.insert((k, value));
                        }
                    }
                }
                _ => {
                    // poll, then commit what was polled (as Maelstrom's client does).
                    let asked = clients[p].offsets.clone();
                    let poll = Poll {
                        offsets: asked.clone(),
                        max: Some(rng.between(1, 6) as usize),
                    };
                    let Some(Payload::PollOk(ok)) = c.try_request(0, Payload::Poll(poll), 500)
                    else {
                        continue;
                    };
                    let mut commit = BTreeMap::new();
                    for (k, pairs) in &ok.msgs {
                        let Some(&from) = asked.get(k) else {
                            fail(
                                &c,
                                seed,
                                format!("poll returned {k}, which it did not ask for"),
                            );
                        };
                        let values =
                            check_poll(k, from, pairs).unwrap_or_else(|e| fail(&c, seed, e));
                        for (offset, value) in (from..).zip(values) {
                            if let Err(e) = h.observe(k, offset, value) {
                                fail(&c, seed, e);
                            }
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
                    match c.try_request(0, Payload::CommitOffsets(request), 500) {
                        Some(Payload::CommitOffsetsOk) => {
                            for (k, offset) in commit {
                                let slot = h.committed.entry(k).or_insert(offset);
                                *slot = (*slot).max(offset);
                            }
                        }
                        None => {}
                        Some(other) => fail(&c, seed, format!("commit_offsets answered {other:?}")),
                    }
                }
            }
            c.run_for_ms(rng.between(0, 50));
        }

        // Healed: every node up; read every key from the start.
        c.restart_all();
        c.run_for_ms(1_000);
        let mut ends = BTreeMap::new();
        for k in (0..KEYS).map(key) {
            let mut from = 0;
            loop {
                let poll = Poll {
                    offsets: [(k.clone(), from)].into(),
                    max: Some(100),
                };
                let Payload::PollOk(ok) = c.request(0, Payload::Poll(poll)) else {
                    fail(&c, seed, "final poll refused".into());
                };
                let pairs = ok.msgs.get(&k).cloned().unwrap_or_default();
                if pairs.is_empty() {
                    break;
                }
                let values = check_poll(&k, from, &pairs).unwrap_or_else(|e| fail(&c, seed, e));
                for value in values {
                    if let Err(e) = h.observe(&k, from, value) {
                        fail(&c, seed, e);
                    }
                    if !h.acked.contains(&(k.clone(), value))
                        && !h.unsure.contains(&(k.clone(), value))
                    {
                        fail(
                            &c,
                            seed,
                            format!("{k}@{from} = {value}, which was never sent"),
                        );
                    }
                    from += 1;
                }
            }
            ends.insert(k, from);
        }
        // Unseen / lost writes: every acknowledged send is in the final logs (the
        // offsets are dense, so the final read saw every offset below each end).
        for (k, value) in &h.acked {
            let offset = h.offset_of[&(k.clone(), *value)];
            if offset >= ends[k] {
                fail(
                    &c,
                    seed,
                    format!("lost write: {k}@{offset} = {value} was acknowledged"),
                );
            }
        }
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        let list = ListCommittedOffsets { keys, group: None };
        let Payload::ListCommittedOffsetsOk(ok) = c.request(0, Payload::ListCommittedOffsets(list))
        else {
            fail(&c, seed, "final list_committed_offsets refused".into());
        };
        for (k, &offset) in &ok.offsets {
            if let Err(e) = h.check_listed(k, offset) {
                fail(&c, seed, e);
            }
            if offset >= ends[k] {
                fail(
                    &c,
                    seed,
                    format!("{k} committed at {offset}, past its end {}", ends[k]),
                );
            }
        }
        for k in h.committed.keys() {
            if !ok.offsets.contains_key(k) {
                fail(&c, seed, format!("the acknowledged commit of {k} was lost"));
            }
        }
    }
}
