//! Timers owned by the core: one-shot timers in an ordered set, periodic tasks in a
//! fixed table. There is no timer effect; drivers sleep until `next_deadline()`.

use std::collections::BTreeMap;

use crate::Time;

/// Names one scheduled firing. The sequence number makes every id unique, so an owner
/// that keeps the id of its current timer can tell a stale firing from a live one
/// (the id is the timer's generation tag).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct TimerId {
    at: Time,
    seq: u64,
}

impl TimerId {
    /// When this timer fires.
    pub(crate) fn deadline(self) -> Time {
        self.at
    }
}

/// One-shot timers ordered by deadline, each carrying a key `K` saying what to do.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "K: serde::Serialize",
    deserialize = "K: serde::Deserialize<'de>"
))]
pub(crate) struct Timers<K> {
    #[serde(with = "crate::runtime::pairs")]
    queue: BTreeMap<TimerId, K>,
    next_seq: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            queue: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<K> Timers<K> {
    /// Schedules `key` to fire at `at`; O(log n).
    pub(crate) fn schedule(&mut self, at: Time, key: K) -> TimerId {
        let id = TimerId {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.queue.insert(id, key);
        id
    }

    /// Removes a timer that has not fired; returns its key if it was still pending.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<K> {
        self.queue.remove(&id)
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.queue.first_key_value().map(|(id, _)| id.at)
    }

    /// Takes the earliest timer whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<(TimerId, K)> {
        match self.queue.first_key_value() {
            Some((id, _)) if id.at <= now => self.queue.pop_first(),
            _ => None,
        }
    }

    /// True if `id` is still pending.
    pub(crate) fn contains(&self, id: TimerId) -> bool {
        self.queue.contains_key(&id)
    }

    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if no timer is pending.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A task that runs every `period_ms`, starting one period after it is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Periodic {
    period_us: u64,
    next_due: Option<Time>,
}

impl Periodic {
    /// A stopped task with the given period (at least 1 ms: `Config::validate`).
    pub(crate) const fn new(period_ms: u64) -> Periodic {
        assert!(period_ms > 0, "a period of at least 1 ms");
        Periodic {
            period_us: period_ms * 1000,
            next_due: None,
        }
    }

    /// Starts (or restarts) the task: it is next due one period after `now`.
    pub(crate) fn start(&mut self, now: Time) {
        self.next_due = Some(now.plus_micros(self.period_us));
    }

    /// When the task is next due, if started.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.next_due
    }

    /// True (once per period) when the task is due; schedules the next run. Missed
    /// periods are not run twice: a late tick runs the task once.
    pub(crate) fn pop_due(&mut self, now: Time) -> bool {
        match self.next_due {
            Some(due) if due <= now => {
                self.next_due = Some(now.plus_micros(self.period_us));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never_fire() {
        // Property: against a sorted-list model, with random schedules and cancels.
        bolero::check!()
            .with_type::<Vec<(u16, bool)>>()
            .for_each(|ops| {
                let mut timers = Timers::default();
                let mut model: Vec<(Time, u64, usize)> = Vec::new();
                for (i, &(at, cancel)) in ops.iter().enumerate() {
                    let at = Time::from_micros(u64::from(at));
                    let id = timers.schedule(at, i);
                    if cancel {
                        assert_eq!(timers.cancel(id), Some(i));
                        assert_eq!(timers.cancel(id), None, "a timer cancels once");
                    } else {
                        model.push((at, i as u64, i));
                    }
                }
                model.sort();
                assert_eq!(timers.len(), model.len());
                assert_eq!(timers.next_deadline(), model.first().map(|m| m.0));
                let mut fired = Vec::new();
                while let Some((id, key)) = timers.pop_due(Time::from_micros(u64::MAX)) {
                    assert!(!timers.contains(id));
                    fired.push((id.deadline(), key));
                }
                let expected: Vec<(Time, usize)> = model.iter().map(|m| (m.0, m.2)).collect();
                assert_eq!(fired, expected);
                assert!(timers.is_empty());
            });
    }

    #[test]
    fn pop_due_respects_now() {
        let mut timers = Timers::default();
        timers.schedule(Time::from_millis(10), 'a');
        timers.schedule(Time::from_millis(5), 'b');
        assert!(timers.pop_due(Time::from_millis(4)).is_none());
        assert_eq!(timers.pop_due(Time::from_millis(5)).map(|t| t.1), Some('b'));
        assert!(timers.pop_due(Time::from_millis(9)).is_none());
        assert_eq!(
            timers.pop_due(Time::from_millis(10)).map(|t| t.1),
            Some('a')
        );
    }

    #[test]
    fn periodic_runs_once_per_period_and_skips_missed_ones() {
        let mut task = Periodic::new(100);
        assert!(!task.pop_due(Time::from_millis(1000)), "not started");
        task.start(Time::ZERO);
        assert_eq!(task.next_deadline(), Some(Time::from_millis(100)));
        assert!(!task.pop_due(Time::from_millis(99)));
        assert!(task.pop_due(Time::from_millis(100)));
        assert!(!task.pop_due(Time::from_millis(150)));
        // A tick 1 s late runs the task once, then waits a full period again.
        assert!(task.pop_due(Time::from_millis(1200)));
        assert!(!task.pop_due(Time::from_millis(1250)));
        assert_eq!(task.next_deadline(), Some(Time::from_millis(1300)));
    }
}
