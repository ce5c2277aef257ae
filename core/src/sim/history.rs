//! What clients of the Maelstrom kafka workload (keyed logs: `send`, `poll`,
//! `commit_offsets`, `list_committed_offsets`) learned, checked as they learn it for
//! what Jepsen's kafka checker reports. Shared by the simulator's tests and the
//! real-network harness (`driver-mio/tests/netns.rs`): the workload differs, the
//! verdict does not.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::Json;

/// Maelstrom's rule: an error code is definite (the operation did not and will not
/// happen) unless it is 0 (timeout), 13 (crash) or a custom code (1000 and up).
pub fn definite(code: u32) -> bool {
    !matches!(code, 0 | 13) && code < 1000
}

/// The kafka workload's history so far.
#[derive(Debug, Default)]
pub struct KafkaHistory {
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
    /// Key → its length in the final read.
    ends: BTreeMap<String, u64>,
}

impl KafkaHistory {
    /// A send of `value` to `key` was acknowledged at `offset`.
    pub fn send_ok(&mut self, key: &str, offset: u64, value: i64) -> Result<(), String> {
        self.observe(key, offset, value)?;
        self.acked.insert((key.to_owned(), value));
        Ok(())
    }

    /// A send was refused with `code`: definitely not done, or unknown.
    pub fn send_failed(&mut self, key: &str, value: i64, code: Option<u32>) {
        let set = match code {
            Some(code) if definite(code) => &mut self.refused,
            _ => &mut self.unsure,
        };
        set.insert((key.to_owned(), value));
    }

    /// Acknowledged sends so far.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// A `poll` of `key` from offset `from` returned `pairs`: checks and records them.
    /// Returns the values.
    pub fn polled(
        &mut self,
        key: &str,
        from: u64,
        pairs: &[(u64, Json)],
    ) -> Result<Vec<i64>, String> {
        let values = check_poll(key, from, pairs)?;
        for (offset, &value) in (from..).zip(&values) {
            self.observe(key, offset, value)?;
        }
        Ok(values)
    }

    /// `commit_offsets` of `offsets` was acknowledged.
    pub fn committed(&mut self, offsets: &BTreeMap<String, u64>) {
        for (k, &offset) in offsets {
            let slot = self.committed.entry(k.clone()).or_insert(offset);
            *slot = (*slot).max(offset);
        }
    }

    /// The committed offsets a `list_committed_offsets` invoked now must not go
    /// below: the highest one committed or listed by an operation that has ended.
    /// (Taken at invocation: an operation that ends while the list runs may or may
    /// not be seen by it.)
    pub fn commit_floors(&self) -> BTreeMap<String, u64> {
        let mut floors = self.committed.clone();
        for (k, &offset) in &self.listed {
            let slot = floors.entry(k.clone()).or_insert(offset);
            *slot = (*slot).max(offset);
        }
        floors
    }

    /// Checks a committed offset that a list, invoked when the floors were
    /// `floors` ([`KafkaHistory::commit_floors`]), returned: commits never go back.
    pub fn check_listed(
        &mut self,
        key: &str,
        offset: u64,
        floors: &BTreeMap<String, u64>,
    ) -> Result<(), String> {
        if let Some(&floor) = floors.get(key).filter(|&&floor| offset < floor) {
            return Err(format!(
                "committed offset of {key} went back from {floor} to {offset}"
            ));
        }
        let slot = self.listed.entry(key.to_owned()).or_insert(offset);
        *slot = (*slot).max(offset);
        Ok(())
    }

    /// The final read of `key`, all of it from offset 0 (once healed): every value in
    /// it was sent, and every acknowledged send to `key` is in it (no lost write).
    pub fn check_final(&mut self, key: &str, pairs: &[(u64, Json)]) -> Result<(), String> {
        let values = self.polled(key, 0, pairs)?;
        for (offset, value) in values.into_iter().enumerate() {
            let sent = (key.to_owned(), value);
            if !self.acked.contains(&sent) && !self.unsure.contains(&sent) {
                return Err(format!("{key}@{offset} = {value}, which was never sent"));
            }
        }
        let end = pairs.len() as u64;
        self.ends.insert(key.to_owned(), end);
        for (k, value) in self.acked.iter().filter(|(k, _)| k == key) {
            let offset = self.offset_of[&(k.clone(), *value)];
            if offset >= end {
                return Err(format!(
                    "lost write: {k}@{offset} = {value} was acknowledged"
                ));
            }
        }
        Ok(())
    }

    /// The final `list_committed_offsets` (after [`KafkaHistory::check_final`] of
    /// every key): no commit went back, none is past its log's end, none
    /// acknowledged is missing.
    pub fn check_final_commits(&mut self, listed: &BTreeMap<String, u64>) -> Result<(), String> {
        let floors = self.commit_floors();
        for (k, &offset) in listed {
            self.check_listed(k, offset, &floors)?;
            let end = self.ends.get(k).copied().unwrap_or(0);
            if offset >= end {
                return Err(format!("{k} committed at {offset}, past its end {end}"));
            }
        }
        match self.committed.keys().find(|k| !listed.contains_key(*k)) {
            Some(k) => Err(format!("the acknowledged commit of {k} was lost")),
            None => Ok(()),
        }
    }

    /// Records that `key` holds `value` at `offset`, or names the anomaly.
    pub fn observe(&mut self, key: &str, offset: u64, value: i64) -> Result<(), String> {
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
}

/// Checks one poll's pairs for `key`, asked from offset `from`: offsets are dense in
/// Herald, so a poll must start exactly at `from` and never skip or repeat
/// (Jepsen's int-poll-skip, int-nonmonotonic-poll, and with the client carrying on
/// from the end, poll-skip and nonmonotonic-poll). Returns the values.
pub fn check_poll(key: &str, from: u64, pairs: &[(u64, Json)]) -> Result<Vec<i64>, String> {
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
            v.to_value()
                .as_i64()
                .ok_or_else(|| format!("{key}@{offset} holds {v}, which nobody sent"))
        })
        .collect()
}
