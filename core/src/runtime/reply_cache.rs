//! The reply cache: a request that would take effect twice if run twice (a
//! [`Access::WriteOnce`] kind) is answered from here when its client retries it with the
//! same `msg_id`, instead of being run again.

use super::Lru;
use crate::wire::msg::{Access, Payload};

/// Replies to write-once requests, by (client, msg_id), least recently used evicted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct ReplyCache {
    replies: Lru<(String, u64), Payload>,
}

impl ReplyCache {
    /// An empty cache of at most `capacity` replies (0 disables it).
    pub(crate) fn new(capacity: usize) -> ReplyCache {
        ReplyCache {
            replies: Lru::new(capacity),
        }
    }

    /// The cache key of a request: (client, msg_id) for a write-once kind, else none.
    pub(crate) fn key(src: &str, msg_id: Option<u64>, payload: &Payload) -> Option<(String, u64)> {
        msg_id
            .filter(|_| payload.access() == Some(Access::WriteOnce))
            .map(|id| (src.to_owned(), id))
    }

    /// The first reply to a retried request, if it is remembered.
    pub(crate) fn get(&mut self, key: &(String, u64)) -> Option<Payload> {
        self.replies.get(key).cloned()
    }

    /// Remembers the reply a request got.
    pub(crate) fn insert(&mut self, key: (String, u64), reply: Payload) {
        self.replies.insert(key, reply);
    }

    /// Panics if the cache's indexes disagree.
    pub(crate) fn check_invariants(&self) {
        self.replies.check_invariants();
    }
}
