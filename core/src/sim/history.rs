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

/// What clients of a work queue (`enqueue`, `dequeue`, `ack`, with a dead-letter
/// queue) learned, checked as they learn it and once drained. Operations may run
/// concurrently: a client takes [`QueueHistory::invoked`] before each dequeue, so a
/// delivery is judged only against acks that had ended before that dequeue began.
#[derive(Debug, Default)]
pub struct QueueHistory {
    /// Acknowledged enqueues.
    enqueued: BTreeSet<String>,
    /// Enqueues with no answer: they may or may not have happened.
    maybe: BTreeSet<String>,
    /// Id → when (in ended operations) its ack was acknowledged.
    acked: BTreeMap<String, u64>,
    /// Acks with no answer.
    maybe_acked: BTreeSet<String>,
    /// Id → delivery count seen → when the dequeue that saw it ended.
    counts: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Dequeues with no answer: each may have delivered messages unseen.
    unanswered_dequeues: u32,
    /// Operations ended so far (the history's clock).
    ended: u64,
}

impl QueueHistory {
    /// Acknowledged enqueues so far.
    pub fn enqueued(&self) -> usize {
        self.enqueued.len()
    }

    /// The history's clock, to pass to [`QueueHistory::delivered`] for a dequeue
    /// invoked now.
    pub fn invoked(&self) -> u64 {
        self.ended
    }

    /// An enqueue of `id` was acknowledged (`Some(true)`), refused (`Some(false)`) or
    /// not answered (`None`).
    pub fn enqueue(&mut self, id: &str, outcome: Option<bool>) {
        self.ended += 1;
        match outcome {
            Some(true) => self.enqueued.insert(id.to_owned()),
            Some(false) => false,
            None => self.maybe.insert(id.to_owned()),
        };
    }

    /// A dequeue got no answer.
    pub fn dequeue_unanswered(&mut self) {
        self.ended += 1;
        self.unanswered_dequeues += 1;
    }

    /// A dequeue invoked at `invoked` delivered `id` for the `deliveries`th time:
    /// never after an acknowledged ack; its count above every count seen by a
    /// dequeue that ended before, and never the same twice. (That a count is never
    /// above the deliveries seen plus the dequeues that got no answer is checked
    /// once drained: meanwhile a dequeue still in flight may have delivered it.)
    pub fn delivered(&mut self, invoked: u64, id: &str, deliveries: u32) -> Result<(), String> {
        if self.acked.get(id).is_some_and(|&at| at <= invoked) {
            return Err(format!(
                "{id} delivered again after its ack was acknowledged"
            ));
        }
        let counts = self.counts.entry(id.to_owned()).or_default();
        let before = counts.range(deliveries..).find(|(_, &at)| at <= invoked);
        if let Some((&last, _)) = before {
            return Err(format!(
                "{id} delivery count went from {last} to {deliveries}"
            ));
        }
        if counts.insert(deliveries, self.ended + 1).is_some() {
            return Err(format!("{id} delivered twice as delivery {deliveries}"));
        }
        Ok(())
    }

    /// A dequeue's deliveries have all been recorded.
    pub fn dequeue_ended(&mut self) {
        self.ended += 1;
    }

    /// An ack of `id` was acknowledged (`Some(true)`), refused (`Some(false)`: a
    /// stale receipt) or not answered (`None`).
    pub fn ack(&mut self, id: &str, outcome: Option<bool>) {
        self.ended += 1;
        match outcome {
            Some(true) => {
                self.acked.entry(id.to_owned()).or_insert(self.ended);
            }
            Some(false) => {}
            None => {
                self.maybe_acked.insert(id.to_owned());
            }
        }
    }

    /// Once drained: no count is above the deliveries seen plus the dequeues that
    /// got no answer; `dead` (id → deliveries, from the dead-letter queue) holds
    /// exactly `max_deliveries` each; every acknowledged enqueue was acked or
    /// dead-lettered (or had an ack with no answer, or `expired` says its TTL
    /// passed); nothing acked or dead-lettered was never enqueued.
    pub fn check_drained(
        &self,
        dead: &BTreeMap<String, u32>,
        max_deliveries: u32,
        expired: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let unanswered = self.unanswered_dequeues;
        for (id, counts) in &self.counts {
            let (seen, most) = (counts.len() as u32, counts.keys().max().copied());
            if let Some(most) = most.filter(|&most| most > seen + unanswered) {
                return Err(format!(
                    "{id} counted {most} deliveries: {seen} seen, {unanswered} dequeues unanswered"
                ));
            }
        }
        if let Some((id, n)) = dead.iter().find(|(_, &n)| n != max_deliveries) {
            return Err(format!("{id} dead-lettered after {n} deliveries"));
        }
        for id in &self.enqueued {
            let done = self.acked.contains_key(id)
                || dead.contains_key(id)
                || self.maybe_acked.contains(id)
                || expired(id);
            if !done {
                return Err(format!("acknowledged enqueue {id} was lost"));
            }
        }
        let seen = self.acked.keys().chain(dead.keys());
        match seen
            .into_iter()
            .find(|id| !self.enqueued.contains(*id) && !self.maybe.contains(*id))
        {
            Some(id) => Err(format!("{id} was delivered but never enqueued")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_judged_against_the_acks_that_ended_before_its_dequeue_began() {
        let mut h = QueueHistory::default();
        h.enqueue("a", Some(true));
        let early = h.invoked();
        assert_eq!(h.delivered(early, "a", 1), Ok(()));
        h.dequeue_ended();
        let overlapping = h.invoked(); // a dequeue that began before the ack ended
        h.ack("a", Some(true));
        assert_eq!(h.delivered(overlapping, "a", 2), Ok(()));
        h.dequeue_ended();
        let late = h.invoked();
        let again = h.delivered(late, "a", 3).unwrap_err();
        assert!(again.contains("after its ack"), "{again}");
        assert_eq!(h.check_drained(&BTreeMap::new(), 3, |_| false), Ok(()));
    }

    #[test]
    fn delivery_counts_only_rise_and_lost_enqueues_are_found() {
        let mut h = QueueHistory::default();
        h.enqueue("a", Some(true));
        assert_eq!(
            h.delivered(h.invoked(), "a", 2),
            Ok(()),
            "maybe one in flight"
        );
        h.dequeue_ended();
        h.ack("a", Some(true));
        assert_eq!(
            h.check_drained(&BTreeMap::new(), 3, |_| false),
            Err("a counted 2 deliveries: 1 seen, 0 dequeues unanswered".into())
        );
        let mut h = QueueHistory::default();
        h.enqueue("a", Some(true));
        h.dequeue_unanswered();
        assert_eq!(h.delivered(h.invoked(), "a", 2), Ok(()));
        h.dequeue_ended();
        let back = h.delivered(h.invoked(), "a", 1).unwrap_err();
        assert!(back.contains("went from 2 to 1"), "{back}");
        let lost = h.check_drained(&BTreeMap::new(), 3, |_| false).unwrap_err();
        assert_eq!(lost, "acknowledged enqueue a was lost");
        let dead = [("a".to_owned(), 3)].into();
        assert_eq!(h.check_drained(&dead, 3, |_| false), Ok(()));
    }

    #[test]
    fn a_list_may_miss_a_commit_that_ended_while_it_ran_but_not_one_before() {
        let mut h = KafkaHistory::default();
        let before = h.commit_floors();
        h.committed(&[("k".to_owned(), 5)].into());
        assert_eq!(h.check_listed("k", 3, &before), Ok(()));
        let after = h.commit_floors();
        let back = h.check_listed("k", 3, &after).unwrap_err();
        assert!(back.contains("went back from 5 to 3"), "{back}");
    }
}
