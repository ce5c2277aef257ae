//! Requests this node sends to peers and awaits replies for: per-attempt timeouts,
//! retries after an exponential backoff with full jitter, a cap on attempts, and
//! removal of every entry when it ends, so pending state never leaks.
//!
//! A retry resends the same message with the same `msg_id`, so a late reply to an
//! earlier attempt still completes the request, and a receiver can deduplicate.

use std::collections::BTreeMap;

use crate::runtime::{Ctx, TimerId, Timers};
use crate::{Config, Message, Rng, Time};

/// The backoff before retry number `retry` (0 for the first retry), in microseconds:
/// uniform in `0..=min(cap, base * 2^retry)` ("full jitter"), so retries from many
/// nodes spread out instead of arriving together.
pub(super) fn backoff_us(config: &Config, retry: u32, rng: &mut Rng) -> u64 {
    let ceiling_ms = config
        .rpc_backoff_base_ms
        .saturating_mul(1u64.checked_shl(retry).unwrap_or(u64::MAX))
        .min(config.rpc_backoff_cap_ms);
    rng.below(ceiling_ms.saturating_mul(1000).saturating_add(1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Phase {
    AwaitingReply,
    BackingOff,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pending<P> {
    request: Message,
    purpose: P,
    /// Attempts sent so far.
    attempts: u32,
    /// Attempts allowed.
    max_attempts: u32,
    phase: Phase,
    timer: TimerId,
}

/// What a due timer means for a pending request.
#[derive(Debug)]
pub(crate) enum RpcTimeout<P> {
    /// Send this request again (same `msg_id`).
    Resend(Message),
    /// Out of attempts: the request is removed and its purpose handed back.
    GaveUp {
        /// The request that was given up.
        request: Message,
        /// What it was for.
        purpose: P,
    },
}

/// The table is full: the request was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RpcTableFull;

/// Outstanding requests keyed by `msg_id`, each with its own timer; `P` says what the
/// node does with the reply (its callback, as data).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RpcTable<P> {
    entries: BTreeMap<u64, Pending<P>>,
    timers: Timers<u64>,
    capacity: usize,
}

impl<P> RpcTable<P> {
    /// An empty table holding at most `capacity` requests.
    pub(crate) fn new(capacity: usize) -> Self {
        RpcTable {
            entries: BTreeMap::new(),
            timers: Timers::default(),
            capacity,
        }
    }

    /// Registers `request` (already given its `msg_id`) as sent now; the caller sends it.
    /// It is sent at most `max_attempts` times (at least once).
    pub(crate) fn start(
        &mut self,
        cx: &Ctx<'_>,
        request: Message,
        purpose: P,
        max_attempts: u32,
        first_timeout_ms: u64,
    ) -> Result<(), RpcTableFull> {
        let msg_id = request
            .body
            .msg_id
            .expect("an RPC request carries a msg_id");
        if self.entries.len() >= self.capacity || self.entries.contains_key(&msg_id) {
            return Err(RpcTableFull);
        }
        let timer = self
            .timers
            .schedule(cx.now.plus_millis(first_timeout_ms), msg_id);
        assert!(max_attempts >= 1, "an RPC is sent at least once");
        let pending = Pending {
            request,
            purpose,
            attempts: 1,
            max_attempts,
            phase: Phase::AwaitingReply,
            timer,
        };
        self.entries.insert(msg_id, pending);
        Ok(())
    }

    /// A reply to `msg_id` arrived. If `retry` (a transient error) and attempts remain,
    /// the request backs off and will be resent; otherwise it is removed and returned.
    /// A reply to an unknown or finished request returns `None`.
    pub(crate) fn on_reply(
        &mut self,
        cx: &mut Ctx<'_>,
        msg_id: u64,
        retry: bool,
    ) -> Option<(Message, P)> {
        let pending = self.entries.get_mut(&msg_id)?;
        if retry && pending.attempts < pending.max_attempts {
            if pending.phase == Phase::AwaitingReply {
                self.timers.cancel(pending.timer);
                let wait = backoff_us(cx.config, pending.attempts - 1, cx.rng);
                pending.phase = Phase::BackingOff;
                pending.timer = self.timers.schedule(cx.now.plus_micros(wait), msg_id);
            }
            return None;
        }
        let pending = self.entries.remove(&msg_id)?;
        self.timers.cancel(pending.timer);
        Some((pending.request, pending.purpose))
    }

    /// Handles the next due timer, if any: a timed-out attempt starts a backoff (or
    /// gives up after the last attempt), and a finished backoff resends.
    pub(crate) fn pop_due(&mut self, cx: &mut Ctx<'_>) -> Option<RpcTimeout<P>> {
        let (now, config) = (cx.now, cx.config);
        while let Some((timer, msg_id)) = self.timers.pop_due(now) {
            let Some(pending) = self.entries.get_mut(&msg_id) else {
                continue;
            };
            if pending.timer != timer {
                continue; // stale generation
            }
            match pending.phase {
                Phase::AwaitingReply if pending.attempts >= pending.max_attempts => {
                    let pending = self.entries.remove(&msg_id)?;
                    return Some(RpcTimeout::GaveUp {
                        request: pending.request,
                        purpose: pending.purpose,
                    });
                }
                Phase::AwaitingReply => {
                    let wait = backoff_us(config, pending.attempts - 1, cx.rng);
                    pending.phase = Phase::BackingOff;
                    pending.timer = self.timers.schedule(now.plus_micros(wait), msg_id);
                }
                Phase::BackingOff => {
                    pending.attempts += 1;
                    pending.phase = Phase::AwaitingReply;
                    let deadline = now.plus_millis(config.rpc_timeout_ms);
                    pending.timer = self.timers.schedule(deadline, msg_id);
                    return Some(RpcTimeout::Resend(pending.request.clone()));
                }
            }
        }
        None
    }

    /// What the pending request `msg_id` is for, if it is pending.
    pub(crate) fn purpose(&self, msg_id: u64) -> Option<&P> {
        self.entries.get(&msg_id).map(|p| &p.purpose)
    }

    /// When the next timer is due.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// Purposes of every pending request, in `msg_id` order.
    pub(crate) fn purposes(&self) -> impl Iterator<Item = &P> {
        self.entries.values().map(|p| &p.purpose)
    }

    /// How many requests are pending.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no request is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Panics unless every entry has exactly one live timer and vice versa.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.entries.len() <= self.capacity,
            "rpc table over capacity"
        );
        assert_eq!(
            self.entries.len(),
            self.timers.len(),
            "rpc timers leak or are missing"
        );
        for pending in self.entries.values() {
            assert!(
                self.timers.contains(pending.timer),
                "rpc entry without its timer"
            );
            assert!(pending.attempts >= 1 && pending.attempts <= pending.max_attempts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msg::Payload;
    use crate::wire::Body;

    fn request(msg_id: u64) -> Message {
        Message {
            src: "n1".into(),
            dest: "n2".into(),
            body: Body {
                payload: Payload::Read,
                msg_id: Some(msg_id),
                in_reply_to: None,
            },
        }
    }

    fn cx<'a>(now: Time, config: &'a Config, rng: &'a mut Rng) -> Ctx<'a> {
        Ctx { now, config, rng }
    }

    fn config() -> Config {
        Config {
            rpc_timeout_ms: 100,
            rpc_max_attempts: 3,
            rpc_backoff_base_ms: 10,
            rpc_backoff_cap_ms: 25,
            max_pending_rpcs: 2,
            ..Config::default()
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let config = config();
        let mut rng = Rng::new(1);
        for retry in 0..40 {
            let ceiling = (10u64 << retry.min(20)).min(25) * 1000;
            let max = (0..200)
                .map(|_| backoff_us(&config, retry, &mut rng))
                .max()
                .unwrap();
            assert!(max <= ceiling, "retry {retry}: {max} > {ceiling}");
            assert!(
                max > ceiling / 2,
                "retry {retry}: jitter should reach near the ceiling"
            );
        }
    }

    #[test]
    fn retries_then_gives_up_and_leaves_nothing_behind() {
        let config = config();
        let mut rng = Rng::new(9);
        let mut table = RpcTable::new(config.max_pending_rpcs);
        table
            .start(
                &cx(Time::ZERO, &config, &mut rng),
                request(1),
                "p",
                3,
                config.rpc_timeout_ms,
            )
            .unwrap();
        let mut now;
        let mut resends = 0;
        let gave_up = loop {
            now = table
                .next_deadline()
                .expect("pending requests have a timer");
            match table.pop_due(&mut cx(now, &config, &mut rng)) {
                Some(RpcTimeout::Resend(m)) => {
                    assert_eq!(m.body.msg_id, Some(1), "a retry keeps its msg_id");
                    resends += 1;
                }
                Some(RpcTimeout::GaveUp { purpose, .. }) => break purpose,
                None => {}
            }
            table.check_invariants();
        };
        assert_eq!(
            (gave_up, resends),
            ("p", 2),
            "3 attempts = 1 send + 2 resends"
        );
        assert!(table.is_empty() && table.next_deadline().is_none());
        // Three 100 ms waits plus two backoffs of at most 10 and 20 ms.
        assert!(
            now >= Time::from_millis(300) && now <= Time::from_millis(330),
            "{now}"
        );
    }

    #[test]
    fn replies_complete_once_and_transient_errors_back_off() {
        let config = config();
        let mut rng = Rng::new(3);
        let mut table = RpcTable::new(config.max_pending_rpcs);
        table
            .start(
                &cx(Time::ZERO, &config, &mut rng),
                request(1),
                'a',
                3,
                config.rpc_timeout_ms,
            )
            .unwrap();
        table
            .start(
                &cx(Time::ZERO, &config, &mut rng),
                request(2),
                'b',
                3,
                config.rpc_timeout_ms,
            )
            .unwrap();
        assert_eq!(
            table.start(
                &cx(Time::ZERO, &config, &mut rng),
                request(3),
                'c',
                3,
                config.rpc_timeout_ms
            ),
            Err(RpcTableFull)
        );
        // A transient error keeps the request and schedules a resend.
        assert!(table
            .on_reply(&mut cx(Time::ZERO, &config, &mut rng), 1, true)
            .is_none());
        let at = table.next_deadline().unwrap();
        assert!(at <= Time::from_millis(10));
        assert!(matches!(
            table.pop_due(&mut cx(at, &config, &mut rng)),
            Some(RpcTimeout::Resend(_))
        ));
        let done = table
            .on_reply(&mut cx(at, &config, &mut rng), 1, false)
            .map(|(_, p)| p);
        assert_eq!(done, Some('a'));
        assert!(
            table
                .on_reply(&mut cx(at, &config, &mut rng), 1, false)
                .is_none(),
            "late duplicate"
        );
        assert!(
            table
                .on_reply(&mut cx(at, &config, &mut rng), 99, false)
                .is_none(),
            "unknown id"
        );
        assert_eq!(table.purposes().copied().collect::<Vec<_>>(), ['b']);
        table.check_invariants();
    }
}
