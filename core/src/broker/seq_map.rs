//! [`SeqMap`]: a work queue's messages by sequence number, packed densely.
//!
//! Sequence numbers are handed out in increasing order, and messages mostly leave in
//! about that order, so there is no tree node per message: messages sit in chunks of
//! [`CHUNK`] consecutive numbers. A chunk has a bitmap of the numbers it holds, a
//! bitmap of those ready for delivery, and the values themselves, in order, in one
//! `VecDeque` (a value's place is the count of held numbers before it). The first
//! ready message is found through the ordered set of chunks that have one, then the
//! lowest bit of that chunk's bitmap.
//!
//! Memory: a full chunk costs its values plus a few bytes per chunk, so a message
//! costs `size_of::<T>()` and well under a byte more. A chunk emptied out of order
//! (holes left by acks) gives back its spare capacity once it holds a quarter of it or
//! less, so a chunk never costs more than about four values per value it holds, plus
//! its fixed part; an empty chunk is dropped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Sequence numbers per chunk: one bit each in a `u64`.
pub(crate) const CHUNK: u64 = 64;

/// Values by increasing sequence number, each ready or not.
#[derive(Clone, Debug)]
pub(crate) struct SeqMap<T> {
    /// Chunk key (`seq / CHUNK`) → chunk; a chunk holds at least one value.
    chunks: BTreeMap<u64, Chunk<T>>,
    /// Keys of the chunks that hold a ready value.
    ready_chunks: BTreeSet<u64>,
    len: usize,
    ready_len: usize,
    /// One past the highest number pushed: the next push must be at least this.
    next: u64,
}

#[derive(Clone, Debug)]
struct Chunk<T> {
    /// Bit `i`: number `key * CHUNK + i` is held.
    held: u64,
    /// Bit `i`: that number is ready (a subset of `held`).
    ready: u64,
    /// The held values, by number.
    values: VecDeque<T>,
}

/// (chunk key, bit) of a sequence number.
fn split(seq: u64) -> (u64, u64) {
    (seq / CHUNK, 1 << (seq % CHUNK))
}

/// The bits of `x`, lowest first, as offsets in a chunk.
fn offsets(mut x: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        let offset = u64::from(x.trailing_zeros());
        (x != 0).then(|| {
            x &= x - 1;
            offset
        })
    })
}

impl<T> Chunk<T> {
    /// The place in `values` of the number with bit `bit` (held or not).
    fn place(&self, bit: u64) -> usize {
        (self.held & (bit - 1)).count_ones() as usize
    }
}

impl<T> Default for SeqMap<T> {
    fn default() -> SeqMap<T> {
        SeqMap {
            chunks: BTreeMap::new(),
            ready_chunks: BTreeSet::new(),
            len: 0,
            ready_len: 0,
            next: 0,
        }
    }
}

impl<T> SeqMap<T> {
    /// Values held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Values held that are ready.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready_len
    }

    /// Raises the lowest number the next push may have to `next`, as though every number
    /// below it had been pushed: a queue restored from a snapshot resumes where it was,
    /// also when the messages pushed last are gone.
    ///
    /// # Panics
    /// If `next` is below a number already pushed.
    pub(crate) fn skip_to(&mut self, next: u64) {
        assert!(next >= self.next, "sequence numbers only grow");
        self.next = next;
    }

    /// Adds `value` under `seq`, which must be higher than every number pushed before.
    ///
    /// # Panics
    /// If `seq` is not.
    pub(crate) fn push(&mut self, seq: u64, value: T, ready: bool) {
        assert!(seq >= self.next, "sequence numbers only grow");
        let (key, bit) = split(seq);
        let chunk = self.chunks.entry(key).or_insert_with(|| Chunk {
            held: 0,
            ready: 0,
            values: VecDeque::with_capacity(CHUNK as usize),
        });
        chunk.held |= bit;
        chunk.values.push_back(value);
        self.len += 1;
        self.next = seq + 1;
        if ready {
            self.set_ready(seq, true);
        }
    }

    /// The value under `seq`.
    pub(crate) fn get(&self, seq: u64) -> Option<&T> {
        let (key, bit) = split(seq);
        let chunk = self.chunks.get(&key).filter(|c| c.held & bit != 0)?;
        Some(&chunk.values[chunk.place(bit)])
    }

    /// The value under `seq`, to change it.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let (key, bit) = split(seq);
        let chunk = self.chunks.get_mut(&key).filter(|c| c.held & bit != 0)?;
        let place = chunk.place(bit);
        Some(&mut chunk.values[place])
    }

    /// True if `seq` is held and ready.
    pub(crate) fn is_ready(&self, seq: u64) -> bool {
        let (key, bit) = split(seq);
        self.chunks.get(&key).is_some_and(|c| c.ready & bit != 0)
    }

    /// Marks a held value ready or not.
    ///
    /// # Panics
    /// If `seq` is not held.
    pub(crate) fn set_ready(&mut self, seq: u64, ready: bool) {
        let (key, bit) = split(seq);
        let chunk = self.chunks.get_mut(&key).expect("only held values change");
        assert!(chunk.held & bit != 0, "only held values change");
        if (chunk.ready & bit != 0) == ready {
            return;
        }
        if ready {
            if chunk.ready == 0 {
                self.ready_chunks.insert(key);
            }
            chunk.ready |= bit;
            self.ready_len += 1;
        } else {
            chunk.ready &= !bit;
            if chunk.ready == 0 {
                self.ready_chunks.remove(&key);
            }
            self.ready_len -= 1;
        }
    }

    /// The lowest ready number, now no longer ready (its value stays held).
    pub(crate) fn pop_first_ready(&mut self) -> Option<u64> {
        let key = *self.ready_chunks.first()?;
        let chunk = &self.chunks[&key];
        let seq = key * CHUNK + u64::from(chunk.ready.trailing_zeros());
        self.set_ready(seq, false);
        Some(seq)
    }

    /// Takes the value under `seq` out.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<T> {
        let (key, bit) = split(seq);
        self.chunks.get(&key).filter(|c| c.held & bit != 0)?;
        self.set_ready(seq, false);
        let chunk = self.chunks.get_mut(&key).expect("checked above");
        let value = chunk.values.remove(chunk.place(bit)).expect("held");
        chunk.held &= !bit;
        self.len -= 1;
        if chunk.held == 0 {
            self.chunks.remove(&key);
        } else if key < self.next / CHUNK && chunk.values.len() * 4 <= chunk.values.capacity() {
            // A chunk no push can reach any more, mostly holes.
            chunk.values.shrink_to_fit();
        }
        Some(value)
    }

    /// The lowest number held, and its value.
    pub(crate) fn first(&self) -> Option<(u64, &T)> {
        let (key, chunk) = self.chunks.first_key_value()?;
        let offset = u64::from(chunk.held.trailing_zeros());
        Some((
            key * CHUNK + offset,
            chunk.values.front().expect("chunks are not empty"),
        ))
    }

    /// Every number held with its value, lowest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.chunks.iter().flat_map(|(key, chunk)| {
            offsets(chunk.held)
                .map(move |offset| key * CHUNK + offset)
                .zip(&chunk.values)
        })
    }

    /// Panics if the bitmaps, values and counts disagree (O(n): tests only).
    pub(crate) fn check_invariants(&self) {
        let (mut len, mut ready_len) = (0, 0);
        for (key, chunk) in &self.chunks {
            assert_ne!(chunk.held, 0, "an empty chunk is kept");
            assert_eq!(chunk.ready & !chunk.held, 0, "a ready number is not held");
            assert_eq!(chunk.held.count_ones() as usize, chunk.values.len());
            assert_eq!(chunk.ready != 0, self.ready_chunks.contains(key));
            assert!(key * CHUNK < self.next, "a number past the next one");
            len += chunk.values.len();
            ready_len += chunk.ready.count_ones() as usize;
        }
        assert_eq!(
            (len, ready_len),
            (self.len, self.ready_len),
            "counts drifted"
        );
        assert!(self
            .ready_chunks
            .iter()
            .all(|k| self.chunks.contains_key(k)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bolero::TypeGenerator;

    #[derive(Clone, Copy, Debug, TypeGenerator)]
    enum Op {
        Push { gap: u8, value: u16, ready: bool },
        Remove { pick: u16 },
        SetReady { pick: u16, ready: bool },
        PopFirstReady,
        Change { pick: u16, value: u16 },
    }

    /// A number held by the model, or one that may not be (picks reach past the end).
    fn pick(model: &BTreeMap<u64, (u16, bool)>, pick: u16) -> u64 {
        let held: Vec<u64> = model.keys().copied().collect();
        let pick = usize::from(pick);
        match held.get(pick % (held.len() + 1)) {
            Some(&seq) => seq,
            None => held.last().map_or(0, |last| last + 1 + (pick % 3) as u64),
        }
    }

    #[test]
    fn seq_map_matches_a_tree_of_numbers() {
        bolero::check!().with_type::<Vec<Op>>().for_each(|ops| {
            let mut map = SeqMap::default();
            let mut model: BTreeMap<u64, (u16, bool)> = BTreeMap::new();
            let mut next = 0u64;
            for &op in ops {
                match op {
                    Op::Push { gap, value, ready } => {
                        // Mostly consecutive, sometimes across whole chunks.
                        let seq = next + u64::from(gap % 4) + u64::from(gap / 64) * CHUNK;
                        next = seq + 1;
                        map.push(seq, value, ready);
                        model.insert(seq, (value, ready));
                    }
                    Op::Remove { pick: p } => {
                        let seq = pick(&model, p);
                        assert_eq!(map.remove(seq), model.remove(&seq).map(|v| v.0));
                    }
                    Op::SetReady { pick: p, ready } => {
                        let seq = pick(&model, p);
                        if let Some(held) = model.get_mut(&seq) {
                            held.1 = ready;
                            map.set_ready(seq, ready);
                        }
                    }
                    Op::PopFirstReady => {
                        let want = model.iter().find(|(_, v)| v.1).map(|(&seq, _)| seq);
                        if let Some(seq) = want {
                            model.get_mut(&seq).expect("found").1 = false;
                        }
                        assert_eq!(map.pop_first_ready(), want);
                    }
                    Op::Change { pick: p, value } => {
                        let seq = pick(&model, p);
                        if let Some(v) = map.get_mut(seq) {
                            *v = value;
                        }
                        if let Some(held) = model.get_mut(&seq) {
                            held.0 = value;
                        }
                    }
                }
                map.check_invariants();
                let got: Vec<(u64, u16, bool)> =
                    map.iter().map(|(s, &v)| (s, v, map.is_ready(s))).collect();
                let want: Vec<(u64, u16, bool)> =
                    model.iter().map(|(&s, &(v, r))| (s, v, r)).collect();
                assert_eq!(got, want);
                assert_eq!(map.len(), model.len());
                assert_eq!(map.ready_len(), model.values().filter(|v| v.1).count());
                assert_eq!(
                    map.first().map(|(s, &v)| (s, v)),
                    want.first().map(|w| (w.0, w.1))
                );
                for seq in [0, next.saturating_sub(1), next] {
                    assert_eq!(map.get(seq), model.get(&seq).map(|v| &v.0));
                }
            }
        });
    }

    #[test]
    #[should_panic(expected = "sequence numbers only grow")]
    fn a_push_below_the_last_number_is_refused() {
        let mut map = SeqMap::default();
        map.push(5, (), true);
        map.push(5, (), true);
    }

    #[test]
    fn a_chunk_emptied_out_of_order_gives_its_room_back() {
        let mut map = SeqMap::default();
        for seq in 0..2 * CHUNK {
            map.push(seq, seq, true);
        }
        // Keep one number in eight of the first chunk, which no push can reach now.
        for seq in (0..CHUNK).filter(|s| s % 8 != 0) {
            assert_eq!(map.remove(seq), Some(seq));
        }
        let chunk = &map.chunks[&0];
        assert_eq!(chunk.values.len(), 8);
        assert!(chunk.values.capacity() < CHUNK as usize / 2, "room kept");
        assert_eq!(map.pop_first_ready(), Some(0));
        assert_eq!(map.pop_first_ready(), Some(8));
        map.check_invariants();
    }
}
