//! The broker API through a whole `Node`, with time under test control: dead letters
//! and redrive, long-poll dequeues, delays, TTLs, backpressure, idempotent enqueues,
//! processed-id tracking, group session expiry, and the kafka workload's rules.

use herald_core::wire::msg::*;
use herald_core::wire::{Body, Json};
use herald_core::{Config, Effect, Effects, Event, Message, Node, Payload, Time, WalRecord};
use serde_json::json;

struct Harness {
    node: Node,
    now: Time,
    next_id: u64,
    out: Effects,
    /// Replies that answered other requests (parked ones) in the same step.
    other: Vec<Message>,
    /// Everything the node asked to persist.
    records: Vec<WalRecord>,
    /// The message of the step running, for its record.
    input: Option<Message>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let mut h = Harness {
            node: Node::new(config),
            now: Time::ZERO,
            next_id: 0,
            out: Effects::new(),
            other: Vec::new(),
            records: Vec::new(),
            input: None,
        };
        let init = Init {
            node_id: "n0".into(),
            node_ids: vec!["n0".into()],
        };
        assert_eq!(h.call(Payload::Init(init)), Some(Payload::InitOk));
        h
    }

    /// Sends a request from `c1`; returns its reply if one came out in the same step
    /// (other replies of that step are kept in `other`).
    fn call(&mut self, payload: Payload) -> Option<Payload> {
        self.next_id += 1;
        self.call_as("c1", self.next_id, payload)
    }

    fn call_as(&mut self, client: &str, msg_id: u64, payload: Payload) -> Option<Payload> {
        let msg = Message {
            src: client.into(),
            dest: "n0".into(),
            body: Body {
                payload,
                msg_id: Some(msg_id),
                in_reply_to: None,
            },
        };
        self.input = Some(msg.clone());
        self.node.step(self.now, Event::Message(msg), &mut self.out);
        self.node.check_invariants();
        let mut mine = None;
        for m in self.sent() {
            if m.dest == client && m.body.in_reply_to == Some(msg_id) {
                mine = Some(m.body.payload);
            } else {
                self.other.push(m);
            }
        }
        mine
    }

    fn ok(&mut self, payload: Payload) -> Payload {
        match self.call(payload) {
            Some(Payload::Error(e)) => panic!("error {}: {}", e.code, e.text),
            Some(reply) => reply,
            None => panic!("no reply"),
        }
    }

    fn error(&mut self, payload: Payload) -> ErrorBody {
        match self.call(payload) {
            Some(Payload::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// A node rebuilt from the records must hold exactly the same broker state.
    fn check_recovery(&self, config: Config) {
        let recovered = Node::recover(config, self.records.clone());
        assert_eq!(
            format!("{:?}", recovered.broker()),
            format!("{:?}", self.node.broker())
        );
    }

    /// Advances time, ticking at every deadline on the way; returns replies sent.
    fn advance_ms(&mut self, ms: u64) -> Vec<Payload> {
        let until = self.now.plus_millis(ms);
        let mut replies = Vec::new();
        while let Some(at) = self.node.next_deadline().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            self.node.step(self.now, Event::Tick, &mut self.out);
            self.node.check_invariants();
            replies.extend(self.sent().into_iter().map(|m| m.body.payload));
        }
        self.now = until;
        replies
    }

    fn sent(&mut self) -> Vec<Message> {
        self.out
            .drain(..)
            .filter_map(|e| match e {
                Effect::Send(m) => Some(m),
                Effect::Persist(record) => {
                    self.records.push(record);
                    None
                }
                Effect::PersistInput { at } => {
                    let msg = self.input.take().expect("a message step");
                    self.records.push(WalRecord::input(at, msg));
                    None
                }
                Effect::Log(_) => None,
            })
            .collect()
    }

    fn dequeue(&mut self, queue: &str, max: usize) -> Vec<Delivery> {
        let d = Dequeue {
            queue: queue.into(),
            max: Some(max),
            visibility_ms: None,
            wait_ms: None,
        };
        match self.ok(Payload::Dequeue(d)) {
            Payload::DequeueOk(ok) => ok.msgs,
            other => panic!("{other:?}"),
        }
    }

    fn enqueue(&mut self, queue: &str, msg: serde_json::Value, id: Option<&str>) -> Payload {
        let e = Enqueue {
            queue: queue.into(),
            msg: msg.into(),
            id: id.map(Into::into),
            delay_ms: None,
            ttl_ms: None,
            ..Default::default()
        };
        self.call(Payload::Enqueue(e))
            .expect("enqueue replies at once")
    }

    fn stats(&mut self, queue: &str) -> QueueStats {
        match self.ok(Payload::Stats(QueueName {
            queue: queue.into(),
        })) {
            Payload::StatsOk(s) => s,
            other => panic!("{other:?}"),
        }
    }
}

fn enqueued(id: &str, duplicate: bool) -> Payload {
    Payload::EnqueueOk(EnqueueOk {
        id: id.into(),
        duplicate,
    })
}

fn receipt(queue: &str, receipt: &str) -> Receipt {
    Receipt {
        queue: queue.into(),
        receipt: receipt.into(),
        delay_ms: None,
        visibility_ms: None,
    }
}

fn create(queue: &str) -> CreateQueue {
    CreateQueue {
        queue: queue.into(),
        ..CreateQueue::default()
    }
}

#[test]
fn unacked_messages_come_back_then_go_to_the_dead_letter_queue_and_redrive() {
    let mut h = Harness::new(Config::default());
    let q = CreateQueue {
        visibility_ms: Some(100),
        max_deliveries: Some(2),
        dead_letter: Some("jobs.dlq".into()),
        ..create("jobs")
    };
    h.ok(Payload::CreateQueue(q));
    h.enqueue("jobs", json!("poison"), None);
    for attempt in 1..=2 {
        let got = h.dequeue("jobs", 10);
        assert_eq!((got.len(), got[0].deliveries), (1, attempt));
        assert!(
            h.dequeue("jobs", 10).is_empty(),
            "invisible while in flight"
        );
        h.advance_ms(100);
    }
    assert!(
        h.dequeue("jobs", 10).is_empty(),
        "exhausted: not delivered a third time"
    );
    let stats = h.stats("jobs");
    assert_eq!((stats.depth, stats.dead_lettered), (0, 1));
    let dead = h.dequeue("jobs.dlq", 10);
    let dl = dead[0].dead_letter.clone().expect("dead-letter details");
    assert_eq!(
        (dl.queue.as_str(), dl.deliveries, dead[0].msg.to_value()),
        ("jobs", 2, json!("poison"))
    );
    assert!(dl.reason.contains("max_deliveries 2"), "{}", dl.reason);
    h.ok(Payload::Nack(receipt("jobs.dlq", &dead[0].receipt)));
    let moved = h.ok(Payload::Redrive(Redrive {
        queue: "jobs.dlq".into(),
        to: "jobs".into(),
        max: None,
    }));
    assert_eq!(moved, Payload::RedriveOk(RedriveOk { moved: 1 }));
    let again = h.dequeue("jobs", 10);
    assert_eq!(
        (again[0].deliveries, again[0].dead_letter.is_none()),
        (1, true),
        "a redrive starts afresh"
    );
    h.ok(Payload::Ack(receipt("jobs", &again[0].receipt)));
    h.advance_ms(1_000);
    assert_eq!(h.stats("jobs").depth, 0, "acked messages never come back");
    h.check_recovery(Config::default());
}

#[test]
fn long_polls_are_answered_by_an_enqueue_or_their_deadline() {
    let mut h = Harness::new(Config::default());
    h.ok(Payload::CreateQueue(create("q")));
    let wait = |ms| {
        Payload::Dequeue(Dequeue {
            queue: "q".into(),
            max: Some(5),
            visibility_ms: None,
            wait_ms: Some(ms),
        })
    };
    assert_eq!(h.call(wait(1_000)), None, "parked: no reply yet");
    let first_waiter = h.next_id;
    assert_eq!(h.call(wait(1_000)), None);
    // An enqueue answers the first waiter at once; the second keeps waiting.
    let ok = enqueued("m-0", false);
    assert_eq!(h.enqueue("q", json!(1), None), ok);
    let answered = h.other.pop().expect("the first waiter is answered");
    assert_eq!(answered.body.in_reply_to, Some(first_waiter));
    let Payload::DequeueOk(first) = answered.body.payload else {
        panic!()
    };
    assert_eq!(first.msgs[0].msg, json!(1));
    let late = h.advance_ms(1_000);
    assert_eq!(
        late,
        vec![Payload::DequeueOk(DequeueOk { msgs: vec![] })],
        "deadline answers empty"
    );
    let mut h = Harness::new(Config {
        max_waiters: 1,
        ..Config::default()
    });
    h.ok(Payload::CreateQueue(create("q")));
    assert_eq!(h.call(wait(50)), None);
    assert_eq!(
        h.error(wait(50)).code,
        ErrorCode::TemporarilyUnavailable.code(),
        "max_waiters"
    );
    assert_eq!(
        h.error(wait(60_000)).code,
        ErrorCode::MalformedRequest.code(),
        "over max_wait_ms"
    );
}

#[test]
fn a_parked_dequeue_gets_the_enqueued_message() {
    let mut h = Harness::new(Config::default());
    h.ok(Payload::CreateQueue(create("q")));
    let d = Dequeue {
        queue: "q".into(),
        max: Some(5),
        visibility_ms: None,
        wait_ms: Some(500),
    };
    assert_eq!(h.call(Payload::Dequeue(d)), None);
    let parked_id = h.next_id;
    let e = Enqueue {
        queue: "q".into(),
        msg: json!("hi").into(),
        id: None,
        delay_ms: None,
        ttl_ms: None,
        ..Default::default()
    };
    let reply = h.call_as("c2", 1, Payload::Enqueue(e));
    assert!(matches!(reply, Some(Payload::EnqueueOk(_))), "{reply:?}");
    let waiter = h.other.pop().expect("reply to the waiting client");
    assert_eq!(
        (waiter.dest.as_str(), waiter.body.in_reply_to),
        ("c1", Some(parked_id))
    );
    let Payload::DequeueOk(ok) = &waiter.body.payload else {
        panic!("{:?}", waiter.body.payload)
    };
    assert_eq!(ok.msgs[0].msg, json!("hi"));
    assert!(
        h.advance_ms(1_000).is_empty(),
        "a served waiter does not time out later"
    );
}

#[test]
fn delays_ttls_dedup_and_backpressure() {
    let mut h = Harness::new(Config::default());
    let q = CreateQueue {
        max_depth: Some(3),
        dedup_window_ms: Some(1_000),
        ..create("q")
    };
    h.ok(Payload::CreateQueue(q.clone()));
    h.ok(Payload::CreateQueue(q)); // the same settings again: fine
    let other = CreateQueue {
        max_depth: Some(4),
        ..create("q")
    };
    assert_eq!(
        h.error(Payload::CreateQueue(other)).code,
        ErrorCode::KeyAlreadyExists.code()
    );
    let delayed = Enqueue {
        queue: "q".into(),
        msg: json!("later").into(),
        id: None,
        delay_ms: Some(200),
        ttl_ms: None,
        ..Default::default()
    };
    h.ok(Payload::Enqueue(delayed));
    let short = Enqueue {
        queue: "q".into(),
        msg: json!("short-lived").into(),
        id: None,
        delay_ms: None,
        ttl_ms: Some(100),
        ..Default::default()
    };
    h.ok(Payload::Enqueue(short));
    assert_eq!(
        h.enqueue("q", json!("a"), Some("order-1")),
        enqueued("order-1", false)
    );
    assert_eq!(
        h.enqueue("q", json!("a"), Some("order-1")),
        enqueued("order-1", true)
    );
    let Payload::Error(full) = h.enqueue("q", json!("b"), None) else {
        panic!("expected 11")
    };
    assert_eq!(
        full.code,
        ErrorCode::TemporarilyUnavailable.code(),
        "max_depth reached: {}",
        full.text
    );
    let stats = h.stats("q");
    assert_eq!((stats.depth, stats.ready, stats.delayed), (3, 2, 1));
    h.advance_ms(150); // the TTL'd message expires unconsumed
    let got: Vec<_> = h.dequeue("q", 10).into_iter().map(|d| d.msg).collect();
    assert_eq!(got, vec![json!("a")]);
    h.advance_ms(100); // the delay ends
    let got: Vec<_> = h.dequeue("q", 10).into_iter().map(|d| d.msg).collect();
    assert_eq!(got, vec![json!("later")]);
    assert_eq!(h.stats("q").expired, 1);
    h.advance_ms(1_000); // the dedup window ends: the id is new again
    assert_eq!(
        h.enqueue("q", json!("a"), Some("order-1")),
        enqueued("order-1", false)
    );
    assert_eq!(
        h.error(Payload::Stats(QueueName {
            queue: "nope".into()
        }))
        .code,
        ErrorCode::KeyDoesNotExist.code()
    );
    let bad = CreateQueue {
        max_deliveries: Some(3),
        ..create("x")
    };
    assert_eq!(
        h.error(Payload::CreateQueue(bad)).code,
        ErrorCode::MalformedRequest.code(),
        "needs a dead_letter"
    );
}

#[test]
fn processed_ids_detect_redeliveries_and_retries_get_the_first_answer() {
    let mut h = Harness::new(Config::default());
    let p = |id: &str| {
        Payload::Processed(Processed {
            consumer: "worker-1".into(),
            id: id.into(),
        })
    };
    assert_eq!(
        h.ok(p("m-1")),
        Payload::ProcessedOk(ProcessedOk { first_time: true })
    );
    assert_eq!(
        h.ok(p("m-1")),
        Payload::ProcessedOk(ProcessedOk { first_time: false })
    );
    let other = Payload::Processed(Processed {
        consumer: "worker-2".into(),
        id: "m-1".into(),
    });
    assert_eq!(
        h.ok(other),
        Payload::ProcessedOk(ProcessedOk { first_time: true })
    );
    // The first request retried (same client, same msg_id 2) gets the first answer.
    let retried = h.call_as("c1", 2, p("m-1"));
    assert_eq!(
        retried,
        Some(Payload::ProcessedOk(ProcessedOk { first_time: true }))
    );
}

#[test]
fn group_members_that_stop_heartbeating_lose_their_partitions() {
    let config = Config {
        group_session_timeout_ms: 1_000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    h.ok(Payload::CreateTopic(CreateTopic {
        topic: "t".into(),
        partitions: 2,
    }));
    let member = |c: &str| Membership {
        topic: Some("t".into()),
        group: "g".into(),
        consumer: c.into(),
    };
    let Payload::JoinOk(a) = h.ok(Payload::Join(member("a"))) else {
        panic!()
    };
    assert_eq!((a.generation, a.partitions), (1, vec![0, 1]));
    let Payload::JoinOk(b) = h.ok(Payload::Join(member("b"))) else {
        panic!()
    };
    assert_eq!((b.generation, b.partitions), (2, vec![1]));
    for i in 0..4 {
        h.ok(Payload::Publish(Publish {
            topic: "t".into(),
            key: None,
            msg: json!(i).into(),
            ..Default::default()
        }));
    }
    let fetch = |c: &str, generation| {
        Payload::Fetch(Fetch {
            group: "g".into(),
            consumer: c.into(),
            generation,
            max: None,
        })
    };
    assert_eq!(
        h.error(fetch("a", 1)).code,
        ErrorCode::StaleGeneration.code()
    );
    let Payload::FetchOk(got) = h.ok(fetch("b", 2)) else {
        panic!()
    };
    assert!(got.msgs.iter().all(|m| m.partition == 1) && !got.msgs.is_empty());
    let commit = Commit {
        group: "g".into(),
        consumer: "b".into(),
        generation: 2,
        offsets: [("1".to_owned(), 1)].into(),
    };
    h.ok(Payload::Commit(commit));
    // a keeps heartbeating, b goes quiet: b is removed and a owns everything again.
    for _ in 0..3 {
        h.advance_ms(400);
        h.ok(Payload::Heartbeat(Membership {
            topic: None,
            ..member("a")
        }));
    }
    let Payload::HeartbeatOk(now) = h.ok(Payload::Heartbeat(Membership {
        topic: None,
        ..member("a")
    })) else {
        panic!()
    };
    assert_eq!((now.generation, now.partitions), (3, vec![0, 1]));
    assert_eq!(h.error(fetch("b", 2)).code, ErrorCode::UnknownMember.code());
    let Payload::FetchOk(got) = h.ok(fetch("a", 3)) else {
        panic!()
    };
    let p1: Vec<u64> = got
        .msgs
        .iter()
        .filter(|m| m.partition == 1)
        .map(|m| m.offset)
        .collect();
    assert_eq!(
        p1,
        vec![1],
        "the new owner resumes from b's committed offset"
    );
}

#[test]
fn kafka_offsets_are_monotonic_and_limits_answer_11() {
    let config = Config {
        max_log_keys: 2,
        max_log_records: 5,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let send = |k: &str, v: i64| {
        Payload::Send(Send {
            key: k.into(),
            msg: json!(v).into(),
            ..Default::default()
        })
    };
    for i in 0..3 {
        assert_eq!(
            h.ok(send("a", i)),
            Payload::SendOk(SendOk { offset: i as u64 })
        );
    }
    assert_eq!(h.ok(send("b", 9)), Payload::SendOk(SendOk { offset: 0 }));
    assert_eq!(
        h.error(send("c", 1)).code,
        ErrorCode::TemporarilyUnavailable.code(),
        "max_log_keys"
    );
    h.ok(send("a", 3));
    assert_eq!(
        h.error(send("a", 4)).code,
        ErrorCode::TemporarilyUnavailable.code(),
        "max_log_records"
    );
    let commit = |o| {
        Payload::CommitOffsets(CommitOffsets {
            offsets: [("a".to_owned(), o)].into(),
            group: None,
        })
    };
    h.ok(commit(2));
    h.ok(commit(1));
    let list = Payload::ListCommittedOffsets(ListCommittedOffsets {
        keys: vec!["a".into(), "b".into()],
        group: None,
    });
    assert_eq!(
        h.ok(list),
        Payload::ListCommittedOffsetsOk(Offsets {
            offsets: [("a".to_owned(), 2)].into()
        })
    );
}

#[test]
fn replaying_the_records_rebuilds_the_same_state_and_receipts_still_work() {
    let config = Config {
        group_session_timeout_ms: 500,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    let q = CreateQueue {
        visibility_ms: Some(100),
        max_deliveries: Some(2),
        dead_letter: Some("dlq".into()),
        ..create("q")
    };
    h.ok(Payload::CreateQueue(q));
    for i in 0..5 {
        h.enqueue("q", json!(i), Some(&format!("id-{i}")));
    }
    let first = h.dequeue("q", 2);
    h.ok(Payload::Ack(receipt("q", &first[0].receipt)));
    h.advance_ms(150); // the other delivery times out: visible again (a timer-only step)
    let second = h.dequeue("q", 3);
    h.ok(Payload::CreateTopic(CreateTopic {
        topic: "t".into(),
        partitions: 3,
    }));
    let member = Membership {
        topic: Some("t".into()),
        group: "g".into(),
        consumer: "w".into(),
    };
    h.ok(Payload::Join(member));
    h.ok(Payload::Publish(Publish {
        topic: "t".into(),
        key: Some("k".into()),
        msg: json!(1).into(),
        ..Default::default()
    }));
    h.ok(Payload::Send(Send {
        key: "1".into(),
        msg: json!("x").into(),
        ..Default::default()
    }));
    h.stats("q"); // reads are not recorded
    assert!(h
        .records
        .iter()
        .all(|r| !matches!(r.msg().map(|m| &m.body.payload), Some(Payload::Stats(_)))));
    h.check_recovery(config.clone());
    // A recovered node honours receipts handed out before the crash.
    let mut recovered = Node::recover(config, h.records.clone());
    let ack = Message {
        src: "c1".into(),
        dest: "n0".into(),
        body: Body {
            payload: Payload::Ack(receipt("q", &second[0].receipt)),
            msg_id: Some(999),
            in_reply_to: None,
        },
    };
    let mut out = Effects::new();
    recovered.step(h.now, Event::Message(ack), &mut out);
    let reply = out.iter().find_map(|e| match e {
        Effect::Send(m) => Some(m.body.payload.clone()),
        _ => None,
    });
    assert_eq!(reply, Some(Payload::AckOk));
    assert!(
        matches!(out[0], Effect::PersistInput { .. }),
        "the persist comes before the reply"
    );
    // After the session timeout, the member is gone in both.
    h.advance_ms(1_000);
    h.check_recovery(Config {
        group_session_timeout_ms: 500,
        ..Config::default()
    });
}

fn init_producer(h: &mut Harness, name: Option<&str>) -> ProducerId {
    let init = InitProducer {
        name: name.map(str::to_owned),
    };
    match h.ok(Payload::InitProducer(init)) {
        Payload::InitProducerOk(id) => id,
        other => panic!("{other:?}"),
    }
}

fn publish_as(p: &ProducerId, seq: u64, msg: &str) -> Payload {
    Payload::Publish(Publish {
        topic: "t".into(),
        msg: json!(msg).into(),
        producer: Some(p.producer),
        epoch: Some(p.epoch),
        seq: Some(seq),
        ..Default::default()
    })
}

#[test]
fn idempotent_producer_retries_gaps_and_zombies() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    h.ok(Payload::CreateTopic(CreateTopic {
        topic: "t".into(),
        partitions: 1,
    }));
    let p = init_producer(&mut h, Some("billing"));
    let first = h.ok(publish_as(&p, 0, "a"));
    let second = h.ok(publish_as(&p, 1, "b"));
    assert_eq!(
        second,
        Payload::PublishOk(PublishOk {
            partition: 0,
            offset: 1,
            duplicate: false
        })
    );
    // A retry (a new msg_id, so the reply cache cannot help) gets the original offset.
    let Payload::PublishOk(retried) = h.ok(publish_as(&p, 0, "a")) else {
        panic!()
    };
    assert_eq!((retried.offset, retried.duplicate), (0, true));
    assert_eq!(
        h.ok(publish_as(&p, 1, "b")),
        Payload::PublishOk(PublishOk {
            partition: 0,
            offset: 1,
            duplicate: true
        })
    );
    // A gap is refused and takes nothing.
    assert_eq!(h.error(publish_as(&p, 5, "x")).code, 1006);
    // The log holds each message once.
    let fetched = |h: &mut Harness| {
        let z = Membership {
            topic: Some("t".into()),
            group: "g".into(),
            consumer: "z".into(),
        };
        let Payload::JoinOk(a) = h.ok(Payload::Join(z)) else {
            panic!()
        };
        let fetch = Fetch {
            group: "g".into(),
            consumer: "z".into(),
            generation: a.generation,
            max: None,
        };
        let Payload::FetchOk(ok) = h.ok(Payload::Fetch(fetch)) else {
            panic!()
        };
        ok.msgs.into_iter().map(|m| m.msg).collect::<Vec<_>>()
    };
    assert_eq!(fetched(&mut h), vec![json!("a"), json!("b")]);
    assert!(matches!(
        first,
        Payload::PublishOk(PublishOk { offset: 0, .. })
    ));

    // The producer restarts under the same name: same id, next epoch, and the old
    // instance is fenced.
    let again = init_producer(&mut h, Some("billing"));
    assert_eq!((again.producer, again.epoch), (p.producer, p.epoch + 1));
    assert_eq!(h.error(publish_as(&p, 2, "zombie")).code, 1005);
    assert!(matches!(
        h.ok(publish_as(&again, 0, "c")),
        Payload::PublishOk(PublishOk { offset: 2, .. })
    ));
    // Unknown producers and half-given fields.
    let ghost = ProducerId {
        producer: 99,
        epoch: 0,
    };
    assert_eq!(h.error(publish_as(&ghost, 0, "x")).code, 1004);
    let half = Publish {
        topic: "t".into(),
        msg: json!(1).into(),
        producer: Some(p.producer),
        ..Default::default()
    };
    assert_eq!(h.error(Payload::Publish(half)).code, 12);
    h.check_recovery(config);
}

#[test]
fn idempotent_producers_cover_sends_and_enqueues_and_expire() {
    let config = Config {
        producer_expiry_ms: 1_000,
        max_producers: 2,
        max_producer_streams: 2,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    h.ok(Payload::CreateQueue(CreateQueue {
        queue: "q".into(),
        ..CreateQueue::default()
    }));
    let p = init_producer(&mut h, None);
    let send = |seq| {
        Payload::Send(Send {
            key: "k".into(),
            msg: json!(seq).into(),
            producer: Some(p.producer),
            epoch: Some(0),
            seq: Some(seq),
        })
    };
    let enqueue = |seq| {
        Payload::Enqueue(Enqueue {
            queue: "q".into(),
            msg: json!(seq).into(),
            producer: Some(p.producer),
            epoch: Some(0),
            seq: Some(seq),
            ..Default::default()
        })
    };
    assert_eq!(h.ok(send(0)), Payload::SendOk(SendOk { offset: 0 }));
    assert_eq!(h.ok(send(0)), Payload::SendOk(SendOk { offset: 0 }));
    assert_eq!(h.ok(send(1)), Payload::SendOk(SendOk { offset: 1 }));
    let Payload::EnqueueOk(first) = h.ok(enqueue(0)) else {
        panic!()
    };
    let Payload::EnqueueOk(retry) = h.ok(enqueue(0)) else {
        panic!()
    };
    assert_eq!((retry.id, retry.duplicate), (first.id, true));
    // Limits: a third stream, a third producer.
    let other_queue = Payload::Publish(Publish {
        topic: "nope".into(),
        producer: Some(p.producer),
        epoch: Some(0),
        seq: Some(0),
        ..Default::default()
    });
    assert_eq!(h.error(other_queue).code, 11);
    init_producer(&mut h, None);
    assert_eq!(
        h.error(Payload::InitProducer(InitProducer::default())).code,
        11
    );
    // Activity keeps a producer alive; idleness past producer_expiry_ms forgets it.
    h.advance_ms(800);
    assert_eq!(h.ok(send(2)), Payload::SendOk(SendOk { offset: 2 }));
    h.advance_ms(800);
    assert_eq!(h.ok(send(3)), Payload::SendOk(SendOk { offset: 3 }));
    h.advance_ms(1_001);
    assert_eq!(h.error(send(4)).code, 1004);
    init_producer(&mut h, None); // room again: both expired
    h.check_recovery(config);
}

fn enqueue(queue: &str, msg: &str) -> Payload {
    Payload::Enqueue(Enqueue {
        queue: queue.into(),
        msg: json!(msg).into(),
        ..Default::default()
    })
}

fn ack(queue: &str, receipt: &str) -> Payload {
    Payload::Ack(Receipt {
        queue: queue.into(),
        receipt: receipt.into(),
        delay_ms: None,
        visibility_ms: None,
    })
}

/// Dequeues one message of `queue`: (msg, receipt).
fn take_one(h: &mut Harness, queue: &str) -> Option<(serde_json::Value, String)> {
    let d = Dequeue {
        queue: queue.into(),
        max: Some(1),
        visibility_ms: None,
        wait_ms: None,
    };
    let Payload::DequeueOk(ok) = h.ok(Payload::Dequeue(d)) else {
        panic!()
    };
    ok.msgs
        .into_iter()
        .next()
        .map(|d| (d.msg.to_value(), d.receipt))
}

fn depth(h: &mut Harness, queue: &str) -> usize {
    let Payload::StatsOk(s) = h.ok(Payload::Stats(QueueName {
        queue: queue.into(),
    })) else {
        panic!()
    };
    s.depth
}

fn queues(h: &mut Harness, names: &[&str], max_depth: Option<usize>) {
    for name in names {
        h.ok(Payload::CreateQueue(CreateQueue {
            queue: (*name).into(),
            max_depth,
            ..CreateQueue::default()
        }));
    }
}

#[test]
fn txn_consume_transform_produce_is_all_or_nothing() {
    let config = Config::default();
    let mut h = Harness::new(config.clone());
    queues(&mut h, &["in", "out"], None);
    h.ok(enqueue("in", "x"));
    let (_, receipt) = take_one(&mut h, "in").unwrap();
    // A failing operation anywhere refuses the whole transaction.
    let bad = Txn {
        ops: vec![
            ack("in", &receipt),
            enqueue("out", "X"),
            enqueue("nope", "X"),
        ],
    };
    assert_eq!(h.error(Payload::Txn(bad)).code, 20);
    assert_eq!(depth(&mut h, "out"), 0);
    // The ack did not happen either: the receipt still works, once.
    let good = Txn {
        ops: vec![ack("in", &receipt), enqueue("out", "X")],
    };
    let Payload::TxnOk(ok) = h.ok(Payload::Txn(good.clone())) else {
        panic!()
    };
    assert_eq!(ok.results[0], Payload::AckOk);
    assert!(matches!(ok.results[1], Payload::EnqueueOk(_)));
    assert_eq!((depth(&mut h, "in"), depth(&mut h, "out")), (0, 1));
    // Run again (a consumer retrying after a lost reply): the ack fails, so the
    // output is not produced twice.
    assert_eq!(h.error(Payload::Txn(good)).code, 1003);
    assert_eq!(depth(&mut h, "out"), 1);
    // Malformed transactions.
    for ops in [
        vec![],
        vec![Payload::Read],
        vec![ack("in", "0.1"), ack("in", "0.1")],
        vec![Payload::Enqueue(Enqueue {
            queue: "out".into(),
            producer: Some(0),
            epoch: Some(0),
            seq: Some(0),
            ..Default::default()
        })],
    ] {
        let code = h.error(Payload::Txn(Txn { ops })).code;
        assert!(code == 12 || code == 1003, "{code}");
    }
    assert_eq!(
        h.error(Payload::Txn(Txn {
            ops: vec![Payload::Read]
        }))
        .code,
        12
    );
    h.check_recovery(config);
}

#[test]
fn two_phase_commit_locks_reserves_commits_once_and_recovers() {
    let config = Config {
        prepared_timeout_ms: 5_000,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    h.ok(Payload::CreateQueue(CreateQueue {
        queue: "in".into(),
        visibility_ms: Some(100),
        ..CreateQueue::default()
    }));
    queues(&mut h, &["out"], Some(2));
    h.ok(enqueue("in", "x"));
    let (_, receipt) = take_one(&mut h, "in").unwrap();
    let prepare = Prepare {
        txid: "t1".into(),
        ops: vec![
            ack("in", &receipt),
            enqueue("out", "a"),
            enqueue("out", "b"),
        ],
    };
    assert_eq!(h.ok(Payload::Prepare(prepare.clone())), Payload::PrepareOk);
    // Prepared is invisible, locked and reserved.
    assert_eq!(depth(&mut h, "out"), 0);
    assert_eq!(h.error(ack("in", &receipt)).code, 30);
    let respelled = format!("0{receipt}");
    assert_eq!(
        h.error(ack("in", &respelled)).code,
        30,
        "one delivery, two spellings"
    );
    let other = Prepare {
        txid: "t2".into(),
        ops: vec![ack("in", &receipt)],
    };
    assert_eq!(h.error(Payload::Prepare(other)).code, 30);
    assert_eq!(h.error(enqueue("out", "c")).code, 11, "room is set aside");
    // The same prepare again is fine; a different one under the same id is not.
    assert_eq!(h.ok(Payload::Prepare(prepare)), Payload::PrepareOk);
    let clash = Prepare {
        txid: "t1".into(),
        ops: vec![enqueue("in", "z")],
    };
    assert_eq!(h.error(Payload::Prepare(clash)).code, 21);
    // It outlives the visibility timeout of the delivery it acks, and a restart.
    h.advance_ms(4_000);
    assert_eq!(
        take_one(&mut h, "in"),
        None,
        "the acked delivery stays invisible"
    );
    let Payload::ListPreparedOk(list) = h.ok(Payload::ListPrepared) else {
        panic!()
    };
    assert_eq!(list.prepared.len(), 1);
    assert_eq!(
        (list.prepared[0].ops, list.prepared[0].expires_in_ms),
        (3, 1_000)
    );
    h.check_recovery(config.clone());
    let commit = Payload::CommitTxn(TxnId { txid: "t1".into() });
    let Payload::CommitTxnOk(done) = h.ok(commit.clone()) else {
        panic!()
    };
    assert_eq!(done.results.len(), 3);
    assert_eq!((depth(&mut h, "in"), depth(&mut h, "out")), (0, 2));
    // A coordinator retrying the commit gets the same answer; nothing is redone.
    assert_eq!(h.ok(commit), Payload::CommitTxnOk(done));
    assert_eq!(depth(&mut h, "out"), 2);
    assert_eq!(
        h.error(Payload::AbortTxn(TxnId { txid: "t1".into() })).code,
        22
    );
    h.check_recovery(config);
}

#[test]
fn two_phase_abort_and_timeout_release_everything() {
    let config = Config {
        prepared_timeout_ms: 1_000,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    queues(&mut h, &["in", "out"], None);
    h.ok(enqueue("in", "x"));
    let (_, receipt) = take_one(&mut h, "in").unwrap();
    let prepare = |txid: &str| {
        Payload::Prepare(Prepare {
            txid: txid.into(),
            ops: vec![ack("in", &receipt), enqueue("out", "y")],
        })
    };
    h.ok(prepare("a"));
    assert_eq!(
        h.ok(Payload::AbortTxn(TxnId { txid: "a".into() })),
        Payload::AbortTxnOk
    );
    assert_eq!(
        h.error(Payload::CommitTxn(TxnId { txid: "a".into() })).code,
        14
    );
    assert_eq!(
        h.error(prepare("a")).code,
        22,
        "an aborted txid stays aborted"
    );
    assert_eq!(depth(&mut h, "out"), 0);
    // Released: the receipt can be prepared again, and then times out.
    h.ok(prepare("b"));
    h.advance_ms(1_000);
    let Payload::ListPreparedOk(list) = h.ok(Payload::ListPrepared) else {
        panic!()
    };
    assert!(list.prepared.is_empty());
    assert_eq!(
        h.error(Payload::CommitTxn(TxnId { txid: "b".into() })).code,
        14
    );
    assert_eq!(
        h.error(Payload::CommitTxn(TxnId {
            txid: "never".into()
        }))
        .code,
        20
    );
    // The timed-out transaction's ack never happened: the message comes back.
    h.advance_ms(1);
    assert_eq!(take_one(&mut h, "in").map(|m| m.0), Some(json!("x")));
    assert_eq!(depth(&mut h, "out"), 0);
    h.check_recovery(config);
}

#[test]
fn retention_drops_the_oldest_records_and_frees_their_room() {
    let config = Config {
        max_records_per_log: 3,
        max_log_records: 4,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    for i in 0..10u64 {
        let send = Payload::Send(Send {
            key: "k".into(),
            msg: json!(i).into(),
            ..Default::default()
        });
        // Retention frees room: the global record limit (4) is never reached.
        assert_eq!(h.ok(send), Payload::SendOk(SendOk { offset: i }));
    }
    let poll = Payload::Poll(Poll {
        offsets: [("k".to_owned(), 0)].into(),
        max: None,
    });
    let Payload::PollOk(ok) = h.ok(poll) else {
        panic!()
    };
    let want: Vec<(u64, Json)> = (7..10).map(|o| (o, json!(o).into())).collect();
    assert_eq!(
        ok.msgs["k"], want,
        "a poll from a dropped offset starts at the oldest kept"
    );
    // Committing a dropped offset is fine; one never written is not.
    let commit = |offset| {
        Payload::CommitOffsets(CommitOffsets {
            offsets: [("k".to_owned(), offset)].into(),
            group: None,
        })
    };
    assert_eq!(h.ok(commit(2)), Payload::CommitOffsetsOk);
    assert_eq!(h.error(commit(10)).code, 22);
    h.check_recovery(config);
}

#[test]
fn a_group_fetching_past_retention_moves_on_without_repeats() {
    let config = Config {
        max_records_per_log: 3,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    h.ok(Payload::CreateTopic(CreateTopic {
        topic: "t".into(),
        partitions: 1,
    }));
    for i in 0..10u64 {
        h.ok(Payload::Publish(Publish {
            topic: "t".into(),
            msg: json!(i).into(),
            ..Default::default()
        }));
    }
    let m = Membership {
        topic: Some("t".into()),
        group: "g".into(),
        consumer: "c".into(),
    };
    let Payload::JoinOk(a) = h.ok(Payload::Join(m)) else {
        panic!()
    };
    let mut fetch = || {
        let f = Fetch {
            group: "g".into(),
            consumer: "c".into(),
            generation: a.generation,
            max: Some(2),
        };
        let Payload::FetchOk(ok) = h.ok(Payload::Fetch(f)) else {
            panic!()
        };
        ok.msgs.into_iter().map(|m| m.offset).collect::<Vec<_>>()
    };
    assert_eq!(fetch(), [7, 8], "from the oldest record kept");
    assert_eq!(fetch(), [9]);
    assert_eq!(fetch(), Vec::<u64>::new());
}

#[test]
fn transaction_limits_are_clear_errors() {
    let config = Config {
        max_txn_ops: 2,
        max_prepared: 1,
        ..Config::default()
    };
    let mut h = Harness::new(config.clone());
    queues(&mut h, &["out"], None);
    let three = Txn {
        ops: vec![
            enqueue("out", "a"),
            enqueue("out", "b"),
            enqueue("out", "c"),
        ],
    };
    assert_eq!(h.error(Payload::Txn(three)).code, 12, "over max_txn_ops");
    assert_eq!(depth(&mut h, "out"), 0);
    let prepare = |txid: &str| {
        Payload::Prepare(Prepare {
            txid: txid.into(),
            ops: vec![enqueue("out", txid)],
        })
    };
    assert_eq!(h.ok(prepare("a")), Payload::PrepareOk);
    assert_eq!(h.error(prepare("b")).code, 11, "over max_prepared");
    h.ok(Payload::AbortTxn(TxnId { txid: "a".into() }));
    assert_eq!(h.ok(prepare("b")), Payload::PrepareOk, "room again");
    h.check_recovery(config);
}
