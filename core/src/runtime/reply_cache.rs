//! The reply cache: a request that would take effect twice if run twice (a
//! [`Access::WriteOnce`] kind) is answered from here when its client retries it with the
//! same `msg_id`, instead of being run again.
//!
//! It runs once per write, so it is built to cost little: the replies sit in one
//! queue in the order they were remembered (the oldest is forgotten first, and a
//! reply is never moved), and each client has an index from msg_id to a place in it
//! ([`ClientIndex`]). A client's name is shared, not copied, by its entries.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::wire::msg::{Access, Payload};

/// Replies to write-once requests, by client and msg_id; past `capacity`, the oldest
/// is forgotten.
#[derive(Debug)]
pub(crate) struct ReplyCache {
    /// Client → its msg_ids' places in `replies`.
    clients: BTreeMap<Arc<str>, ClientIndex>,
    /// (client, msg_id, reply), oldest first; the front has sequence number `first`.
    replies: VecDeque<(Arc<str>, u64, Payload)>,
    first: u64,
    capacity: usize,
}

/// One client's msg_id → sequence number (place in the cache's queue). Clients number
/// their requests upwards, so nearly every msg_id is above the last one: those go in
/// `rising`, in msg_id order and so in age order too, where a lookup is a binary
/// search, a new one a push at the back and the oldest the one at the front. A msg_id
/// below the last one (a client that restarted its numbering, or numbers at random)
/// goes in `stray`, a tree, so no order of msg_ids costs more than a logarithm.
#[derive(Debug, Default)]
struct ClientIndex {
    rising: VecDeque<(u64, u64)>,
    stray: BTreeMap<u64, u64>,
}

impl ClientIndex {
    /// True if `msg_id` is above every msg_id in `rising`.
    fn above_rising(&self, msg_id: u64) -> bool {
        self.rising.back().is_none_or(|&(last, _)| last < msg_id)
    }

    fn get(&self, msg_id: u64) -> Option<u64> {
        if self.above_rising(msg_id) && self.stray.is_empty() {
            return None; // a new request: the usual case, answered without a search
        }
        match self.rising.binary_search_by_key(&msg_id, |&(id, _)| id) {
            Ok(i) => Some(self.rising[i].1),
            Err(_) => self.stray.get(&msg_id).copied(),
        }
    }

    /// Indexes a msg_id not indexed yet.
    fn insert(&mut self, msg_id: u64, seq: u64) {
        if self.above_rising(msg_id) {
            self.rising.push_back((msg_id, seq));
        } else {
            self.stray.insert(msg_id, seq);
        }
    }

    /// Forgets `msg_id`, which is this client's oldest entry: the front of `rising`
    /// (whose ages rise with their msg_ids) unless it is a stray.
    fn remove_oldest(&mut self, msg_id: u64) {
        if self.stray.remove(&msg_id).is_none() {
            let front = self.rising.pop_front();
            assert_eq!(front.map(|f| f.0), Some(msg_id), "the oldest is in front");
        }
    }

    fn len(&self) -> usize {
        self.rising.len() + self.stray.len()
    }
}

impl ReplyCache {
    /// An empty cache of at most `capacity` replies (0 disables it).
    pub(crate) fn new(capacity: usize) -> ReplyCache {
        ReplyCache {
            clients: BTreeMap::new(),
            replies: VecDeque::new(),
            first: 0,
            capacity,
        }
    }

    /// The msg_id a request is remembered by: its own, for a write-once kind.
    pub(crate) fn key(msg_id: Option<u64>, payload: &Payload) -> Option<u64> {
        msg_id.filter(|_| payload.access() == Some(Access::WriteOnce))
    }

    /// The first reply to a retried request, if it is remembered.
    pub(crate) fn get(&self, client: &str, msg_id: u64) -> Option<Payload> {
        let seq = self.clients.get(client)?.get(msg_id)?;
        Some(self.replies[self.place(seq)].2.clone())
    }

    fn place(&self, seq: u64) -> usize {
        usize::try_from(seq - self.first).expect("a place in memory")
    }

    /// Remembers the reply a request got (a reply already remembered for the same
    /// request is replaced, and keeps its place in the order).
    pub(crate) fn insert(&mut self, client: &str, msg_id: u64, reply: Payload) {
        if self.capacity == 0 {
            return;
        }
        let seq = self.first + self.replies.len() as u64;
        let name = match self.clients.get_key_value(client) {
            Some((name, index)) => {
                if let Some(old) = index.get(msg_id) {
                    let place = self.place(old);
                    self.replies[place].2 = reply;
                    return;
                }
                Arc::clone(name)
            }
            None => Arc::from(client),
        };
        let index = match self.clients.get_mut(client) {
            Some(index) => index,
            None => self.clients.entry(Arc::clone(&name)).or_default(),
        };
        index.insert(msg_id, seq);
        self.replies.push_back((name, msg_id, reply));
        if self.replies.len() > self.capacity {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some((client, msg_id, _)) = self.replies.pop_front() else {
            return;
        };
        self.first += 1;
        let index = (self.clients.get_mut(&client)).expect("a reply names a client");
        index.remove_oldest(msg_id);
        if index.len() == 0 {
            self.clients.remove(&client);
        }
    }

    /// Panics if the cache's indexes disagree.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.replies.len() <= self.capacity,
            "reply cache over capacity"
        );
        let indexed: usize = self.clients.values().map(ClientIndex::len).sum();
        assert_eq!(
            indexed,
            self.replies.len(),
            "reply cache indexes differ in size"
        );
        for index in self.clients.values() {
            let mut rising = index.rising.iter().zip(index.rising.iter().skip(1));
            assert!(
                rising.all(|(a, b)| a.0 < b.0 && a.1 < b.1),
                "rising msg_ids out of order"
            );
        }
        for (place, (client, msg_id, _)) in self.replies.iter().enumerate() {
            let seq = self.clients.get(client).and_then(|i| i.get(*msg_id));
            assert_eq!(
                seq,
                Some(self.first + place as u64),
                "reply cache index points elsewhere"
            );
        }
    }
}

/// On disk: the capacity and the replies, oldest first. Snapshots taken before
/// 2026-12 stored the cache as an LRU map (`entries`: ((client, msg_id), (stamp,
/// reply)) pairs, plus `by_age` and `next_stamp`); those load too, oldest stamp first.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    capacity: usize,
    #[serde(default)]
    replies: Vec<(String, u64, Payload)>,
    #[serde(default, skip_serializing)]
    entries: Vec<((String, u64), (u64, Payload))>,
}

impl serde::Serialize for ReplyCache {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let replies = (self.replies.iter())
            .map(|(client, msg_id, reply)| (client.to_string(), *msg_id, reply.clone()))
            .collect();
        Stored {
            capacity: self.capacity,
            replies,
            entries: Vec::new(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ReplyCache {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ReplyCache, D::Error> {
        let mut stored = Stored::deserialize(d)?;
        let mut cache = ReplyCache::new(stored.capacity);
        stored.entries.sort_by_key(|(_, (stamp, _))| *stamp);
        let old =
            (stored.entries.into_iter()).map(|((client, id), (_, reply))| (client, id, reply));
        for (client, msg_id, reply) in old.chain(stored.replies) {
            cache.insert(&client, msg_id, reply);
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msg::SendOk;

    fn reply(offset: u64) -> Payload {
        Payload::SendOk(SendOk { offset })
    }

    #[test]
    fn forgets_the_oldest_first_and_round_trips() {
        let mut cache = ReplyCache::new(2);
        cache.insert("a", 1, reply(1));
        cache.insert("b", 1, reply(2));
        cache.insert("a", 1, reply(9)); // replaced in place: still the oldest
        cache.insert("a", 2, reply(3));
        assert_eq!(cache.get("a", 1), None);
        assert_eq!(cache.get("b", 1), Some(reply(2)));
        assert_eq!(cache.get("a", 2), Some(reply(3)));
        cache.check_invariants();
        let text = serde_json::to_string(&cache).unwrap();
        let back: ReplyCache = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        // The LRU shape of older snapshots loads, oldest stamp first.
        let old = r#"{"entries":[[["a",1],[7,{"type":"send_ok","offset":1}]],
            [["b",2],[3,{"type":"send_ok","offset":2}]]],
            "by_age":{"3":["b",2],"7":["a",1]},"next_stamp":8,"capacity":5}"#;
        let old: ReplyCache = serde_json::from_str(old).unwrap();
        old.check_invariants();
        assert_eq!(
            (old.get("a", 1), old.get("b", 2)),
            (Some(reply(1)), Some(reply(2)))
        );
        assert_eq!(
            old.replies.front().map(|r| r.1),
            Some(2),
            "b's stamp is older"
        );
        let mut off = ReplyCache::new(0);
        off.insert("a", 1, reply(1));
        assert_eq!(off.get("a", 1), None);
    }

    #[test]
    fn matches_a_vec_model() {
        bolero::check!()
            .with_type::<(u8, Vec<(u8, u8, Option<u8>)>)>()
            .for_each(|(cap, ops)| {
                let capacity = usize::from(*cap % 8);
                let mut cache = ReplyCache::new(capacity);
                let mut model: Vec<(String, u64, u64)> = Vec::new(); // oldest first
                for &(client, msg_id, op) in ops {
                    let (client, msg_id) = (format!("c{}", client % 3), u64::from(msg_id % 6));
                    let at = model.iter().position(|e| e.0 == client && e.1 == msg_id);
                    match op {
                        Some(value) => {
                            cache.insert(&client, msg_id, reply(value.into()));
                            match at {
                                _ if capacity == 0 => {}
                                Some(i) => model[i].2 = value.into(),
                                None => {
                                    model.push((client, msg_id, value.into()));
                                    if model.len() > capacity {
                                        model.remove(0);
                                    }
                                }
                            }
                        }
                        None => {
                            let want = at.map(|i| reply(model[i].2));
                            assert_eq!(cache.get(&client, msg_id), want);
                        }
                    }
                    cache.check_invariants();
                }
            });
    }
}
