//! Idempotent producers, as Kafka defines them: a producer registers and gets an id
//! and an epoch, then numbers its writes to each stream (a topic, a keyed log, a
//! queue) 0, 1, 2, …. A write repeated with a sequence the broker already took gets
//! the original reply, marked duplicate; a gap is refused; an older epoch (a zombie
//! that a restarted producer of the same name replaced) is fenced. Producers idle for
//! `producer_expiry_ms` are forgotten. Every table here is bounded.

use std::collections::{BTreeMap, VecDeque};

use super::Broker;
use crate::runtime::Ctx;
use crate::runtime::{TimerId, Timers};
use crate::wire::msg::{ErrorBody, ErrorCode, Payload};
use crate::wire::msg::{ProcessedOk, ProducerId};
use crate::{Config, Time};

/// How many recent replies each (producer, stream) keeps for answering retries.
pub(super) const REMEMBERED_WRITES: usize = 8;

/// The producer fields of one write, all three present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Idempotence {
    /// The id `init_producer` gave.
    pub producer: u64,
    /// The epoch `init_producer` gave.
    pub epoch: u64,
    /// This write's number in its stream: 0, 1, 2, ….
    pub seq: u64,
    /// Sequence numbers the write takes: 1, or a Kafka batch's record count.
    pub count: u64,
}

impl Idempotence {
    /// The producer fields of a request: all three or none.
    pub(super) fn of(
        producer: Option<u64>,
        epoch: Option<u64>,
        seq: Option<u64>,
    ) -> Result<Option<Idempotence>, ErrorBody> {
        match (producer, epoch, seq) {
            (None, None, None) => Ok(None),
            (Some(producer), Some(epoch), Some(seq)) => Ok(Some(Idempotence {
                producer,
                epoch,
                seq,
                count: 1,
            })),
            _ => Err(ErrorBody::new(
                ErrorCode::MalformedRequest,
                "`producer`, `epoch` and `seq` go together: give all three or none",
            )),
        }
    }
}

/// What to do with a write.
#[derive(Debug, PartialEq)]
pub(super) enum Admit {
    /// A new write: do it, then [`Producers::record`] its reply.
    New,
    /// A retry of a write already done: answer this (its original reply).
    Duplicate(Payload),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Producer {
    name: Option<String>,
    epoch: u64,
    expiry: TimerId,
    /// Stream → its window of sequences.
    streams: BTreeMap<String, Window>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Window {
    /// The sequence the next new write must carry.
    next_seq: u64,
    /// (seq, reply marked duplicate) of the last writes, oldest first.
    recent: VecDeque<(u64, Payload)>,
}

/// Every registered producer.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Producers {
    #[serde(with = "crate::runtime::pairs")]
    producers: BTreeMap<u64, Producer>,
    /// Name → id, for producers that registered with a name.
    names: BTreeMap<String, u64>,
    next_id: u64,
    expiries: Timers<u64>,
    /// (producer, stream) windows, all producers together.
    windows: usize,
}

fn error(code: ErrorCode, text: String) -> ErrorBody {
    ErrorBody::new(code, text)
}

impl Producers {
    /// Registers a producer. A `name` seen before keeps its id and gets the next epoch,
    /// fencing the previous incarnation; no name: a fresh id at epoch 0.
    /// Returns (id, epoch).
    pub(super) fn register(
        &mut self,
        now: Time,
        config: &Config,
        name: Option<String>,
    ) -> Result<(u64, u64), ErrorBody> {
        let deadline = now.plus_millis(config.producer_expiry_ms);
        if let Some(&id) = name.as_ref().and_then(|n| self.names.get(n)) {
            let p = self.producers.get_mut(&id).expect("named producers exist");
            p.epoch += 1;
            self.windows -= p.streams.len();
            p.streams.clear();
            self.expiries.cancel(p.expiry);
            p.expiry = self.expiries.schedule(deadline, id);
            return Ok((id, p.epoch));
        }
        if self.producers.len() >= config.max_producers {
            return Err(error(
                ErrorCode::TemporarilyUnavailable,
                format!(
                    "too many producers (max_producers={})",
                    config.max_producers
                ),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        if let Some(name) = &name {
            self.names.insert(name.clone(), id);
        }
        let expiry = self.expiries.schedule(deadline, id);
        self.producers.insert(
            id,
            Producer {
                name,
                epoch: 0,
                expiry,
                streams: BTreeMap::new(),
            },
        );
        Ok((id, 0))
    }

    /// Decides what to do with write `w` to `stream`.
    pub(super) fn admit(
        &self,
        config: &Config,
        w: Idempotence,
        stream: &str,
    ) -> Result<Admit, ErrorBody> {
        let Some(p) = self.producers.get(&w.producer) else {
            let text = format!(
                "unknown producer {} (never registered, or idle past producer_expiry_ms): init_producer",
                w.producer
            );
            return Err(error(ErrorCode::UnknownProducer, text));
        };
        if w.epoch != p.epoch {
            let text = format!(
                "producer {} is at epoch {}, not {}: a newer instance registered",
                w.producer, p.epoch, w.epoch
            );
            return Err(error(ErrorCode::ProducerFenced, text));
        }
        let Some(window) = p.streams.get(stream) else {
            if w.seq != 0 {
                let text = format!("the first write to {stream} must have seq 0, not {}", w.seq);
                return Err(error(ErrorCode::OutOfOrderSequence, text));
            }
            if self.windows >= config.max_producer_streams {
                let text = format!(
                    "too many producer streams (max_producer_streams={})",
                    config.max_producer_streams
                );
                return Err(error(ErrorCode::TemporarilyUnavailable, text));
            }
            return Ok(Admit::New);
        };
        if w.seq == window.next_seq {
            return Ok(Admit::New);
        }
        if w.seq > window.next_seq {
            let text = format!(
                "seq {} to {stream} skips ahead: expected {}",
                w.seq, window.next_seq
            );
            return Err(error(ErrorCode::OutOfOrderSequence, text));
        }
        match window.recent.iter().find(|(seq, _)| *seq == w.seq) {
            Some((_, reply)) => Ok(Admit::Duplicate(reply.clone())),
            None => Err(error(
                ErrorCode::PreconditionFailed,
                format!(
                    "seq {} to {stream} is a duplicate older than the last {REMEMBERED_WRITES} writes",
                    w.seq
                ),
            )),
        }
    }

    /// Records that the write `w`, admitted as new, was done and answered `reply`.
    pub(super) fn record(
        &mut self,
        now: Time,
        config: &Config,
        w: Idempotence,
        stream: &str,
        reply: &Payload,
    ) {
        let p = self
            .producers
            .get_mut(&w.producer)
            .expect("record follows admit");
        let window = p.streams.entry(stream.to_owned()).or_insert_with(|| {
            self.windows += 1;
            Window::default()
        });
        window.next_seq = w.seq + w.count;
        if window.recent.len() == REMEMBERED_WRITES {
            window.recent.pop_front();
        }
        window
            .recent
            .push_back((w.seq, mark_duplicate(reply.clone())));
        self.expiries.cancel(p.expiry);
        p.expiry = self
            .expiries
            .schedule(now.plus_millis(config.producer_expiry_ms), w.producer);
    }

    /// Forgets producers idle past their expiry.
    pub(super) fn run_due(&mut self, now: Time) {
        while let Some((timer, id)) = self.expiries.pop_due(now) {
            if self.producers.get(&id).is_some_and(|p| p.expiry == timer) {
                let p = self.producers.remove(&id).expect("checked");
                self.windows -= p.streams.len();
                if let Some(name) = p.name {
                    self.names.remove(&name);
                }
            }
        }
    }

    /// When the next producer may expire.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.expiries.next_deadline()
    }

    /// Panics if the counts disagree with the tables.
    pub(super) fn check_invariants(&self) {
        let windows: usize = self.producers.values().map(|p| p.streams.len()).sum();
        assert_eq!(windows, self.windows, "producer window count");
        for (name, id) in &self.names {
            assert_eq!(
                self.producers[id].name.as_ref(),
                Some(name),
                "producer name index"
            );
        }
        for p in self.producers.values() {
            assert!(p
                .streams
                .values()
                .all(|w| w.recent.len() <= REMEMBERED_WRITES));
        }
    }
}

/// The reply a retry gets: the original, with `duplicate` set where the reply has one.
fn mark_duplicate(reply: Payload) -> Payload {
    match reply {
        Payload::PublishOk(mut ok) => {
            ok.duplicate = true;
            Payload::PublishOk(ok)
        }
        Payload::EnqueueOk(mut ok) => {
            ok.duplicate = true;
            Payload::EnqueueOk(ok)
        }
        other => other,
    }
}

impl Broker {
    /// Runs `init_producer` or `processed` (idempotent producers and consumers).
    pub(super) fn handle_producers(
        &mut self,
        cx: &Ctx<'_>,
        payload: Payload,
    ) -> Result<Payload, ErrorBody> {
        Ok(match payload {
            Payload::InitProducer(init) => {
                let (producer, epoch) = self.producers.register(cx.now, cx.config, init.name)?;
                Payload::InitProducerOk(ProducerId { producer, epoch })
            }
            Payload::Processed(p) => {
                let key = (p.consumer, p.id);
                let first_time = self.processed.get(&key).is_none();
                if first_time {
                    self.processed.insert(key, ());
                }
                Payload::ProcessedOk(ProcessedOk { first_time })
            }
            other => unreachable!("{:?} is not a producer request", other.kind()),
        })
    }
}
