//! The counter workloads (g-counter and pn-counter): a state-based CRDT. Each node
//! counts its own increments and decrements; states merge by pointwise maximum, so
//! gossip may be lost, duplicated or reordered and every node still converges.

use std::collections::BTreeMap;

use crate::wire::msg::Merge;

/// A counter would overflow `u64`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CounterOverflow;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Peer {
    node: String,
    /// The newest state version this peer acknowledged.
    acked_version: u64,
    in_flight: bool,
}

/// A PN-counter replica plus per-peer gossip progress.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counter {
    state: Merge,
    /// Bumped whenever `state` changes.
    version: u64,
    peers: Vec<Peer>,
}

impl Counter {
    /// Gossips with `peers` from now on.
    pub(crate) fn set_peers(&mut self, peers: Vec<String>) {
        self.peers = peers
            .into_iter()
            .map(|node| Peer {
                node,
                acked_version: 0,
                in_flight: false,
            })
            .collect();
    }

    /// Adds `delta` on behalf of node `me`.
    pub(crate) fn add(&mut self, me: &str, delta: i64) -> Result<(), CounterOverflow> {
        let side = if delta >= 0 {
            &mut self.state.inc
        } else {
            &mut self.state.dec
        };
        let slot = side.entry(me.to_owned()).or_insert(0);
        *slot = slot
            .checked_add(delta.unsigned_abs())
            .ok_or(CounterOverflow)?;
        if delta != 0 {
            self.version += 1;
        }
        Ok(())
    }

    /// Merges a peer's state, keeping only entries for `members`. Returns true if this
    /// replica changed.
    pub(crate) fn merge(&mut self, other: &Merge, members: &[String]) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.state.inc, &other.inc),
            (&mut self.state.dec, &other.dec),
        ] {
            for (node, &count) in theirs {
                if !members.contains(node) {
                    continue;
                }
                let slot = mine.entry(node.clone()).or_insert(0);
                if count > *slot {
                    *slot = count;
                    changed = true;
                }
            }
        }
        if changed {
            self.version += 1;
        }
        changed
    }

    /// The counter's value: increments minus decrements (saturating).
    pub(crate) fn value(&self) -> i64 {
        let sum =
            |side: &BTreeMap<String, u64>| side.values().map(|&c| i128::from(c)).sum::<i128>();
        let total = sum(&self.state.inc) - sum(&self.state.dec);
        total.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// How many peers there are.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// If peer `i` lags and has no merge in flight: its id, the state, and its version,
    /// and the merge is marked in flight.
    pub(crate) fn next_sync(&mut self, i: usize) -> Option<(String, Merge, u64)> {
        let peer = self.peers.get_mut(i)?;
        if peer.in_flight || peer.acked_version >= self.version {
            return None;
        }
        peer.in_flight = true;
        Some((peer.node.clone(), self.state.clone(), self.version))
    }

    /// Peer `i` acknowledged the state of `version` (`None`: the merge failed).
    pub(crate) fn synced(&mut self, i: usize, version: Option<u64>) {
        if let Some(peer) = self.peers.get_mut(i) {
            peer.in_flight = false;
            if let Some(v) = version {
                peer.acked_version = peer.acked_version.max(v);
            }
        }
    }

    /// Peers with a merge in flight, by index.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.in_flight)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn adds_and_merges_are_idempotent_and_commutative() {
        bolero::check!()
            .with_type::<Vec<(bool, i16)>>()
            .for_each(|adds| {
                let (mut a, mut b) = (Counter::default(), Counter::default());
                let mut expected = 0i64;
                for &(at_b, delta) in adds {
                    let (node, name) = if at_b { (&mut b, "b") } else { (&mut a, "a") };
                    node.add(name, i64::from(delta)).unwrap();
                    expected += i64::from(delta);
                }
                let (sa, sb) = (a.state.clone(), b.state.clone());
                a.merge(&sb, &members());
                a.merge(&sb, &members()); // duplicate delivery changes nothing
                b.merge(&sa, &members());
                assert_eq!(a.value(), expected);
                assert_eq!(b.value(), expected);
                assert_eq!(a.state, b.state);
            });
    }

    #[test]
    fn merge_ignores_non_members_and_sync_tracks_versions() {
        let mut c = Counter::default();
        c.set_peers(vec!["b".into()]);
        assert_eq!(c.next_sync(0), None, "nothing to send yet");
        c.add("a", 5).unwrap();
        let mut foreign = Merge::default();
        foreign.inc.insert("mallory".into(), 100);
        assert!(!c.merge(&foreign, &members()));
        assert_eq!(c.value(), 5);
        let (to, state, version) = c.next_sync(0).unwrap();
        assert_eq!(
            (to.as_str(), state.inc.get("a"), version),
            ("b", Some(&5), 1)
        );
        assert_eq!(c.next_sync(0), None, "in flight");
        c.synced(0, Some(version));
        assert_eq!(c.next_sync(0), None, "peer is up to date");
        c.add("a", -2).unwrap();
        assert_eq!(c.value(), 3);
        assert!(c.next_sync(0).is_some());
        assert_eq!(c.add("a", i64::MAX), Ok(()));
        assert_eq!(c.add("a", i64::MAX), Err(CounterOverflow));
    }
}
