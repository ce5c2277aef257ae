//! The broadcast workload: a grow-only set of values that every node must end up with.
//!
//! Values are kept in the order this node learned them (`log`). For each gossip target
//! the node remembers which values that peer is known to have (it acknowledged them,
//! or sent them to us), so a gossip batch carries only what the peer may lack, and at
//! most one batch per peer is in flight: a partitioned peer costs one retried request
//! with backoff, not a flood.

use std::collections::BTreeSet;

/// The set is full ([`crate::Config::max_broadcast_values`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetFull;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Target {
    node: String,
    /// Whether this peer is gossiped to (a neighbour in the topology).
    enabled: bool,
    known: BTreeSet<i64>,
    /// Every `log` entry before this index is in `known`.
    cursor: usize,
    in_flight: bool,
}

/// The node's broadcast values and per-peer gossip progress.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct BroadcastSet {
    values: BTreeSet<i64>,
    log: Vec<i64>,
    targets: Vec<Target>,
    /// Set once a `topology` or a value arrives: `read` then answers with `messages`.
    active: bool,
}

impl BroadcastSet {
    /// Sets the cluster's other nodes, all gossiped to; called once, at `init`. Their
    /// indexes stay fixed for the node's life.
    pub(crate) fn set_peers(&mut self, nodes: Vec<String>) {
        self.targets = nodes
            .into_iter()
            .map(|node| Target {
                node,
                enabled: true,
                known: BTreeSet::new(),
                cursor: 0,
                in_flight: false,
            })
            .collect();
    }

    /// Gossips only to the peers in `neighbours` from now on. Batches in flight finish
    /// normally; what each peer is known to have is kept.
    pub(crate) fn restrict_to(&mut self, neighbours: &[String]) {
        for target in &mut self.targets {
            target.enabled = neighbours.contains(&target.node);
        }
    }

    /// Marks the workload as broadcast (a `topology` arrived).
    pub(crate) fn activate(&mut self) {
        self.active = true;
    }

    /// True once this node has seen the broadcast workload.
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Adds values learned from a client (`from` = None) or a peer, which then is known
    /// to have them. Refuses the whole batch if it would overflow `limit`.
    pub(crate) fn insert(
        &mut self,
        values: &[i64],
        from: Option<&str>,
        limit: usize,
    ) -> Result<(), SetFull> {
        let new = values.iter().filter(|v| !self.values.contains(v)).count();
        if self.values.len() + new > limit {
            return Err(SetFull);
        }
        self.active = true;
        for &v in values {
            if self.values.insert(v) {
                self.log.push(v);
            }
        }
        if let Some(target) = from.and_then(|p| self.targets.iter_mut().find(|t| t.node == p)) {
            target.known.extend(values.iter().copied());
        }
        Ok(())
    }

    /// Every value, in ascending order.
    pub(crate) fn values(&self) -> Vec<i64> {
        self.values.iter().copied().collect()
    }

    /// How many gossip targets there are.
    pub(crate) fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// If target `i` may lack values and has no batch in flight: its node id and up to
    /// `max` values, and the batch is marked in flight.
    pub(crate) fn next_batch(&mut self, i: usize, max: usize) -> Option<(String, Vec<i64>)> {
        let target = self.targets.get_mut(i)?;
        if target.in_flight || !target.enabled {
            return None;
        }
        while target.cursor < self.log.len() && target.known.contains(&self.log[target.cursor]) {
            target.cursor += 1;
        }
        let batch: Vec<i64> = self.log[target.cursor..]
            .iter()
            .filter(|v| !target.known.contains(v))
            .take(max)
            .copied()
            .collect();
        if batch.is_empty() {
            return None;
        }
        target.in_flight = true;
        Some((target.node.clone(), batch))
    }

    /// Target `i` acknowledged `batch`.
    pub(crate) fn delivered(&mut self, i: usize, batch: &[i64]) {
        if let Some(target) = self.targets.get_mut(i) {
            target.in_flight = false;
            target.known.extend(batch.iter().copied());
        }
    }

    /// The batch to target `i` failed; it will be retried at the next gossip round.
    pub(crate) fn failed(&mut self, i: usize) {
        if let Some(target) = self.targets.get_mut(i) {
            target.in_flight = false;
        }
    }

    /// Targets with a batch in flight, by index.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.in_flight)
            .map(|(i, _)| i)
    }

    /// Panics if the set and its log disagree or a cursor is out of range.
    pub(crate) fn check_invariants(&self, limit: usize) {
        assert!(self.values.len() <= limit, "broadcast set over its limit");
        assert_eq!(
            self.values.len(),
            self.log.len(),
            "broadcast log has duplicates"
        );
        for target in &self.targets {
            assert!(
                target.cursor <= self.log.len(),
                "gossip cursor past the log"
            );
            assert!(
                self.log[..target.cursor]
                    .iter()
                    .all(|v| target.known.contains(v)),
                "gossip cursor skipped a value the peer lacks"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_only_what_the_peer_lacks() {
        let mut set = BroadcastSet::default();
        set.set_peers(vec!["n2".into(), "n3".into(), "n4".into()]);
        set.restrict_to(&["n2".into(), "n3".into()]);
        set.insert(&[1, 2], None, 100).unwrap();
        set.insert(&[3], Some("n2"), 100).unwrap(); // n2 told us 3: it has it
        assert_eq!(set.next_batch(0, 10), Some(("n2".into(), vec![1, 2])));
        assert_eq!(set.next_batch(0, 10), None, "one batch in flight per peer");
        assert_eq!(
            set.next_batch(1, 2),
            Some(("n3".into(), vec![1, 2])),
            "capped at max"
        );
        set.delivered(0, &[1, 2]);
        assert_eq!(set.next_batch(0, 10), None, "n2 has everything");
        set.failed(1);
        assert_eq!(set.next_batch(1, 10), Some(("n3".into(), vec![1, 2, 3])));
        assert_eq!(set.next_batch(2, 10), None, "n4 is not a neighbour");
        set.restrict_to(&["n4".into()]);
        assert_eq!(set.next_batch(2, 10), Some(("n4".into(), vec![1, 2, 3])));
        set.delivered(1, &[1, 2, 3]); // n3's batch, in flight before the change, lands
        set.check_invariants(100);
        assert_eq!(set.values(), [1, 2, 3]);
    }

    #[test]
    fn the_limit_refuses_whole_batches() {
        let mut set = BroadcastSet::default();
        set.insert(&[1, 2], None, 3).unwrap();
        assert_eq!(set.insert(&[2, 3, 4], None, 3), Err(SetFull));
        assert_eq!(set.values(), [1, 2]);
        set.insert(&[2, 3], None, 3).unwrap();
        assert_eq!(set.values(), [1, 2, 3]);
    }

    #[test]
    fn gossip_between_two_sets_converges_under_loss() {
        // Property: whatever is inserted where, and whichever batches are lost,
        // repeating rounds until nothing is in flight leaves both sets equal.
        bolero::check!()
            .with_type::<(Vec<(bool, i8)>, Vec<bool>)>()
            .for_each(|(ins, losses)| {
                let mut sets = [BroadcastSet::default(), BroadcastSet::default()];
                sets[0].set_peers(vec!["b".into()]);
                sets[1].set_peers(vec!["a".into()]);
                for &(at_b, v) in ins {
                    sets[usize::from(at_b)]
                        .insert(&[i64::from(v)], None, 1000)
                        .unwrap();
                }
                let mut loss = losses.iter().copied().chain(std::iter::repeat(false));
                for _round in 0..losses.len() + 2 {
                    for from in 0..2 {
                        let names = ["a", "b"];
                        if let Some((_, batch)) = sets[from].next_batch(0, 4) {
                            if loss.next().unwrap_or(false) {
                                sets[from].failed(0);
                            } else {
                                sets[1 - from]
                                    .insert(&batch, Some(names[from]), 1000)
                                    .unwrap();
                                sets[from].delivered(0, &batch);
                            }
                        }
                    }
                }
                while sets
                    .iter_mut()
                    .any(|s| s.next_batch(0, 1000).map(|_| s.failed(0)).is_some())
                {
                    for from in 0..2 {
                        if let Some((_, batch)) = sets[from].next_batch(0, 1000) {
                            sets[1 - from].insert(&batch, None, 1000).unwrap();
                            sets[from].delivered(0, &batch);
                        }
                    }
                }
                assert_eq!(sets[0].values(), sets[1].values());
                sets[0].check_invariants(1000);
                sets[1].check_invariants(1000);
            });
    }
}
