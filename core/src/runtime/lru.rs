//! A bounded least-recently-used map: remembers replies to client requests so a
//! retried request (same sender, same `msg_id`) is answered again, not done twice.

use std::collections::BTreeMap;

/// An LRU map with a fixed capacity; inserting into a full cache evicts the entry used
/// least recently. Every operation is O(log n).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "K: serde::Serialize, V: serde::Serialize",
    deserialize = "K: serde::Deserialize<'de> + Ord, V: serde::Deserialize<'de>"
))]
pub(crate) struct Lru<K, V> {
    #[serde(with = "crate::runtime::pairs")]
    entries: BTreeMap<K, (u64, V)>,
    /// Recency stamp → key; the first entry is the least recently used.
    by_age: BTreeMap<u64, K>,
    next_stamp: u64,
    capacity: usize,
}

impl<K: Ord + Clone, V> Lru<K, V> {
    /// An empty cache holding at most `capacity` entries (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_stamp: 0,
            capacity,
        }
    }

    /// The value stored for `key`, marking it most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        let stamp = self.next_stamp;
        let (old, value) = self.entries.get_mut(key)?;
        self.next_stamp += 1;
        if let Some(k) = self.by_age.remove(old) {
            self.by_age.insert(stamp, k);
        }
        *old = stamp;
        Some(value)
    }

    /// Stores `value` under `key` as most recently used, evicting the least recently
    /// used entry if the cache is full. Returns the evicted key, if any.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<K> {
        if self.capacity == 0 {
            return None;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some((old, _)) = self.entries.insert(key.clone(), (stamp, value)) {
            self.by_age.remove(&old);
            self.by_age.insert(stamp, key);
            return None;
        }
        self.by_age.insert(stamp, key);
        if self.entries.len() <= self.capacity {
            return None;
        }
        let (_, oldest) = self.by_age.pop_first()?;
        self.entries.remove(&oldest);
        Some(oldest)
    }

    /// How many entries are stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is stored.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Panics if the two indexes disagree or the cache is over capacity.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.entries.len() <= self.capacity,
            "dedup cache over capacity"
        );
        assert_eq!(
            self.entries.len(),
            self.by_age.len(),
            "dedup indexes differ in size"
        );
        for (stamp, key) in &self.by_age {
            assert_eq!(
                self.entries.get(key).map(|e| e.0),
                Some(*stamp),
                "dedup index mismatch"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut cache = Lru::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(&1)); // a is now newer than b
        assert_eq!(cache.insert("c", 3), Some("b"));
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"a"), Some(&1));
        assert_eq!(cache.get(&"c"), Some(&3));
        assert_eq!(cache.len(), 2);
        let mut off = Lru::new(0);
        assert_eq!(off.insert("a", 1), None);
        assert!(off.is_empty());
    }

    #[test]
    fn matches_a_vec_model() {
        // Ops: (key, Some(value)) inserts, (key, None) gets.
        bolero::check!()
            .with_type::<(u8, Vec<(u8, Option<u16>)>)>()
            .for_each(|(cap, ops)| {
                let capacity = usize::from(*cap % 8);
                let mut cache = Lru::new(capacity);
                let mut model: Vec<(u8, u16)> = Vec::new(); // most recent last
                for &(key, op) in ops {
                    let key = key % 16;
                    match op {
                        Some(value) => {
                            cache.insert(key, value);
                            if capacity > 0 {
                                model.retain(|e| e.0 != key);
                                model.push((key, value));
                                if model.len() > capacity {
                                    model.remove(0);
                                }
                            }
                        }
                        None => {
                            let want = model.iter().position(|e| e.0 == key).map(|i| {
                                let e = model.remove(i);
                                model.push(e);
                                e.1
                            });
                            assert_eq!(cache.get(&key).copied(), want);
                        }
                    }
                    cache.check_invariants();
                    assert_eq!(cache.len(), model.len());
                }
            });
    }
}
