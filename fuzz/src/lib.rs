//! # herald-fuzz
//!
//! Inputs for fuzzing the core: [`Op`] is a structured action on a node (a request, a
//! peer's message, a reply, garbage, time passing) that bolero generates; [`run_ops`]
//! plays a sequence of them into a [`Node`] and checks its invariants after every step.
//! [`ClusterOp`] is a step of a schedule on a simulated 3-node Raft cluster, which
//! [`run_cluster_ops`] plays and checks like the kafka workload.
//! [`check_codec`] and [`check_framer`] are the codec targets. They run under
//! `cargo test` (`tests/targets.rs`, random inputs from bolero) and coverage-guided
//! under libFuzzer (`fuzz_targets/`, built by `cargo fuzz` with the `libfuzzer`
//! feature).

use bolero_generator::driver::{ByteSliceDriver, Options};
use bolero_generator::TypeGenerator;
use herald_core::wire::msg::*;
use herald_core::wire::{self, Body, DecodeError, Frame, LineFramer};
use herald_core::{Config, Effects, Event, Message, Node, Time};

/// One thing that can happen to a node.
#[derive(Clone, Debug, TypeGenerator)]
pub enum Op {
    /// `init` as node `me` of `count` nodes.
    Init {
        /// Index of this node.
        me: u8,
        /// Cluster size.
        count: u8,
    },
    /// A client request.
    Request(Request),
    /// A peer gossips broadcast values.
    Gossip {
        /// Which peer.
        from: u8,
        /// The values.
        values: Vec<i64>,
    },
    /// A peer sends counter state.
    Merge {
        /// Which peer.
        from: u8,
        /// Per-node increments.
        inc: Vec<(u8, u64)>,
    },
    /// A peer replies to one of this node's requests (or to nothing).
    Reply {
        /// Which peer.
        from: u8,
        /// The `in_reply_to`.
        in_reply_to: u16,
        /// 0: gossip_ok, 1: merge_ok, 2: error 11, other: error 13.
        kind: u8,
    },
    /// An arbitrary line.
    Garbage(Vec<u8>),
    /// Time passes and the node is ticked.
    AdvanceMs(u16),
}

/// One operation inside a transaction.
#[derive(Clone, Debug, TypeGenerator)]
pub enum TxnOp {
    /// `send` to key `k<key % 4>`.
    Send(u8),
    /// `publish` to `t`.
    Publish(Option<u8>),
    /// `enqueue` to queue `q<queue % 3>`, with producer id `p<id % 4>` or none.
    Enqueue(u8, Option<u8>),
    /// `ack` of receipt `<seq>.<nonce>` in queue `q<queue % 3>`.
    Ack {
        /// Queue index.
        queue: u8,
        /// Receipt's message sequence number.
        seq: u8,
        /// Receipt's delivery nonce.
        nonce: u8,
    },
    /// `commit_offsets` of key `k<key % 4>`.
    CommitOffsets(u8, u8),
    /// group `commit` as `c<consumer % 3>` at `generation` of partition to offset.
    Commit(u8, u8, u8, u8),
}

impl TxnOp {
    /// The operation as the request it stands for.
    fn request(self) -> Request {
        match self {
            TxnOp::Send(key) => Request::Send { key, msg: 7 },
            TxnOp::Publish(key) => Request::Publish(key),
            TxnOp::Enqueue(queue, id) => Request::Enqueue {
                queue,
                id,
                delay_ms: None,
                ttl_ms: None,
            },
            TxnOp::Ack { queue, seq, nonce } => Request::Settle {
                queue,
                how: 2,
                seq,
                nonce,
            },
            TxnOp::CommitOffsets(key, offset) => Request::CommitOffsets { key, offset },
            TxnOp::Commit(consumer, generation, partition, offset) => Request::Consume {
                consumer,
                generation,
                commit: Some((partition, offset)),
            },
        }
    }
}

/// A client request of each workload.
#[derive(Clone, Debug, TypeGenerator)]
pub enum Request {
    /// `echo`.
    Echo(i64),
    /// `generate`.
    Generate,
    /// `topology` with a neighbour list per node.
    Topology(Vec<Vec<u8>>),
    /// `broadcast`.
    Broadcast(i64),
    /// `read`.
    Read,
    /// `add`.
    Add(i64),
    /// kafka `send` to key `k<key % 4>`.
    Send {
        /// Key index.
        key: u8,
        /// Message.
        msg: i64,
    },
    /// kafka `poll` of key `k<key % 4>` from `from`.
    Poll {
        /// Key index.
        key: u8,
        /// First offset.
        from: u8,
    },
    /// kafka `commit_offsets` of key `k<key % 4>`.
    CommitOffsets {
        /// Key index.
        key: u8,
        /// Offset.
        offset: u8,
    },
    /// `create_queue q<queue % 3>`, with a dead-letter queue or not.
    CreateQueue {
        /// Queue index.
        queue: u8,
        /// Use `max_deliveries 2` and a dead-letter queue.
        dead_letter: bool,
    },
    /// `enqueue`.
    Enqueue {
        /// Queue index.
        queue: u8,
        /// Producer id index.
        id: Option<u8>,
        /// Delay.
        delay_ms: Option<u8>,
        /// TTL.
        ttl_ms: Option<u8>,
    },
    /// `dequeue`.
    Dequeue {
        /// Queue index.
        queue: u8,
        /// Batch size.
        max: u8,
        /// Long-poll wait.
        wait_ms: Option<u8>,
    },
    /// `ack`, `nack` (0) or `extend` (1) of receipt `<seq>.<nonce>`.
    Settle {
        /// Queue index.
        queue: u8,
        /// 0: nack, 1: extend, else ack.
        how: u8,
        /// Receipt's message sequence number.
        seq: u8,
        /// Receipt's delivery nonce.
        nonce: u8,
    },
    /// `redrive` from a dead-letter queue.
    Redrive {
        /// Queue index.
        queue: u8,
    },
    /// `stats`.
    Stats {
        /// Queue index.
        queue: u8,
    },
    /// `create_topic t` (partitions 0..4).
    CreateTopic(u8),
    /// `publish` to `t`.
    Publish(Option<u8>),
    /// `cancel_waits`.
    CancelWaits,
    /// `init_producer`, named `p<name % 2>` or unnamed.
    InitProducer(Option<u8>),
    /// `txn` (0), `prepare` (1), `commit_txn` (2), `abort_txn` (3) or `list_prepared`
    /// (else) of transaction `x<txid % 3>`.
    Txn {
        /// Which request.
        phase: u8,
        /// Transaction id index.
        txid: u8,
        /// The operations of `txn` and `prepare`.
        ops: Vec<TxnOp>,
    },
    /// An idempotent `send` (0), `publish` (1) or `enqueue` (else).
    IdempotentWrite {
        /// 0 send, 1 publish, else enqueue.
        how: u8,
        /// Producer id (mod 4).
        producer: u8,
        /// Epoch (mod 3).
        epoch: u8,
        /// Sequence number (mod 8).
        seq: u8,
    },
    /// `join` (0), `heartbeat` (1) or `leave` (2) group `g` as `c<consumer % 3>`.
    Member {
        /// 0 join, 1 heartbeat, else leave.
        how: u8,
        /// Consumer index.
        consumer: u8,
    },
    /// `fetch` (or `commit` of `offset` to `partition`) as `c<consumer % 3>`.
    Consume {
        /// Consumer index.
        consumer: u8,
        /// The generation quoted.
        generation: u8,
        /// Commit this partition instead of fetching.
        commit: Option<(u8, u8)>,
    },
    /// A Kafka data request on topic `k<topic % 2>`: produce, fetch, list offsets,
    /// metadata or delete, by `how`.
    KafkaData {
        /// Which request.
        how: u8,
        /// Topic index.
        topic: u8,
        /// Partition (produce, fetch), offset or timestamp (fetch, list offsets).
        at: (u8, u8),
        /// Produce: (producer id, epoch, base sequence), or none.
        producer: Option<(u8, u8, u8)>,
        /// Produce: records in the batch.
        records: u8,
    },
    /// A Kafka group request on group `kg` as member `<client>-<member % 4>` (or
    /// with no member id): join, sync, heartbeat, leave, commit, offset fetch, list or
    /// describe, by `how`.
    KafkaGroup {
        /// Which request.
        how: u8,
        /// Member index; `None`: an empty member id.
        member: Option<u8>,
        /// The generation quoted.
        generation: u8,
        /// Join: the rebalance timeout, in 10 ms.
        timeout: u8,
    },
}

fn kafka_data(
    how: u8,
    topic: u8,
    at: (u8, u8),
    producer: Option<(u8, u8, u8)>,
    records: u8,
) -> Payload {
    let topic = format!("k{}", topic % 2);
    let (partition, offset) = (u32::from(at.0 % 3), u64::from(at.1 % 8));
    match how % 5 {
        0 => {
            let producer = producer.map_or((-1, -1, -1), |(p, e, s)| {
                (i64::from(p % 3), i16::from(e % 2), i32::from(s % 8))
            });
            Payload::KafkaProduce(KafkaProduce {
                topic,
                partition,
                batch: record_batch(records % 4, producer, i64::from(at.1)),
            })
        }
        1 => Payload::KafkaFetch(KafkaFetch {
            partitions: vec![KafkaFetchPartition {
                topic,
                partition,
                offset,
                max_bytes: u32::from(records) * 8,
            }],
            max_bytes: 64,
        }),
        2 => Payload::KafkaListOffsets(KafkaListOffsets {
            partitions: vec![KafkaOffsetQuery {
                topic,
                partition,
                timestamp: i64::from(at.1 % 4) - 2,
            }],
        }),
        3 => Payload::KafkaMetadata(KafkaMetadata {
            topics: records.is_multiple_of(2).then(|| vec![topic]),
            auto_create: at.0.is_multiple_of(2),
        }),
        _ => Payload::DeleteTopic(DeleteTopic { topic }),
    }
}

/// A RecordBatch v2 of `count` records from (producer id, epoch, first sequence);
/// 0 records: bytes that are not a batch (the broker must refuse them).
fn record_batch(count: u8, (id, epoch, seq): (i64, i16, i32), timestamp_ms: i64) -> bytes::Bytes {
    use kafka_protocol::records::*;
    if count == 0 {
        return bytes::Bytes::from(vec![0; 61]);
    }
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: seq + i32::from(i),
            timestamp: timestamp_ms,
            key: None,
            value: Some(bytes::Bytes::from(format!("{{\"n\":{i}}}"))),
            headers: Default::default(),
        })
        .collect();
    let mut out = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).expect("a batch encodes");
    bytes::Bytes::from(out)
}

fn kafka_group(how: u8, member: Option<u8>, generation: u8, timeout: u8) -> Payload {
    let group = "kg".to_owned();
    let member_id = member.map_or(String::new(), |m| format!("fuzz-{}", m % 4));
    let generation = i32::from(generation % 4);
    let metadata = bytes::Bytes::from_static(b"m");
    match how % 8 {
        0 => Payload::KafkaJoinGroup(KafkaJoinGroup {
            group,
            member_id,
            group_instance_id: None,
            client_id: "fuzz".into(),
            protocol_type: "consumer".into(),
            protocols: vec![KafkaProtocol {
                name: if timeout.is_multiple_of(2) {
                    "range"
                } else {
                    "sticky"
                }
                .into(),
                metadata,
            }],
            session_timeout_ms: 1_000 + u64::from(timeout) * 10,
            rebalance_timeout_ms: u64::from(timeout) * 10,
            require_known_member: timeout.is_multiple_of(3),
        }),
        1 => Payload::KafkaSyncGroup(KafkaSyncGroup {
            group,
            generation,
            assignments: vec![KafkaAssignment {
                member_id: member_id.clone(),
                assignment: metadata,
            }],
            member_id,
        }),
        2 => Payload::KafkaHeartbeat(KafkaHeartbeat {
            group,
            generation,
            member_id,
        }),
        3 => Payload::KafkaLeaveGroup(KafkaLeaveGroup {
            group,
            member_ids: vec![member_id],
        }),
        4 => Payload::KafkaOffsetCommit(KafkaOffsetCommit {
            group,
            generation: if member.is_none() { -1 } else { generation },
            member_id,
            offsets: vec![KafkaCommittedOffset {
                topic: "k0".into(),
                partition: u32::from(timeout % 2),
                offset: i64::from(timeout % 8),
                metadata: String::new(),
                error_code: 0,
            }],
        }),
        5 => Payload::KafkaOffsetFetch(KafkaOffsetFetch {
            group,
            partitions: None,
        }),
        6 => Payload::KafkaListGroups,
        _ => Payload::KafkaDescribeGroups(KafkaDescribeGroups {
            groups: vec![group],
        }),
    }
}

/// Any bytes, as a request line and as a write-ahead record: decoding never panics,
/// and whatever decodes re-encodes to bytes that decode to the same message or record.
pub fn check_codec(bytes: &[u8]) {
    if let Ok(msg) = wire::decode(bytes) {
        let mut line = Vec::new();
        wire::encode(&msg, &mut line);
        assert_eq!(wire::decode(&line[..line.len() - 1]), Ok(msg));
    }
    // The same bytes as a write-ahead record (what a damaged segment could hold whose
    // checksum still matched): an error or a record that reads back as itself.
    if let Ok(record) = herald_core::WalRecord::decode(bytes) {
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(herald_core::WalRecord::decode(&again), Ok(record));
    }
}

/// Any bytes fed in chunks of `chunk` bytes: the framer never holds more than its
/// limit and never yields an empty line or one over the limit.
pub fn check_framer(bytes: &[u8], chunk: u8) {
    let max = 32;
    let mut framer = LineFramer::new(max);
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        framer.feed(piece, |frame| {
            if let Frame::Line(line) = frame {
                assert!(!line.is_empty() && line.len() <= max && !line.contains(&b'\n'));
            }
        });
        assert!(framer.buffered() <= max);
    }
}

/// Any bytes fed in chunks of `chunk` bytes through the Kafka frame decoder, each frame
/// answered: the decoder never holds more than one frame, nothing panics, and every
/// answer is a well-formed frame.
pub fn check_kafka_frames(bytes: &[u8], chunk: u8) {
    let max = 64;
    let mut decoder = herald_kafka::FrameDecoder::new(max);
    let mut conn = herald_kafka::Loopback::new(Config::default(), Default::default());
    let mut closed = false;
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        let fed = decoder.feed(piece, |frame| {
            assert!(frame.len() <= max);
            if closed {
                return;
            }
            match conn.request(frame) {
                Err(_) => closed = true,
                Ok(out) if out.is_empty() => {}
                Ok(out) => {
                    let mut answers = herald_kafka::FrameDecoder::new(out.len());
                    let mut whole = 0;
                    answers
                        .feed(&out, |_| whole += 1)
                        .expect("a well-formed frame");
                    assert_eq!(answers.buffered(), 0, "whole frames only");
                    assert!(whole >= 1);
                }
            }
        });
        assert!(decoder.buffered() <= max + 4);
        if fed.is_err() {
            return;
        }
    }
}

/// Builds a typed input from a fuzzer's raw bytes (for the libFuzzer targets), the way
/// bolero does; `None` if the bytes run out.
pub fn from_fuzz_bytes<T: TypeGenerator>(bytes: &[u8]) -> Option<T> {
    let mut driver = ByteSliceDriver::new(bytes, &Options::default());
    T::generate(&mut driver)
}

/// How long each target runs under `cargo test`: `HERALD_FUZZ_SECS` (default 1 s).
pub fn test_time() -> std::time::Duration {
    let secs = std::env::var("HERALD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    std::time::Duration::from_secs(secs)
}

fn node_name(i: u8) -> String {
    format!("n{}", i % 8)
}

fn request_payload(request: Request) -> Payload {
    match request {
        Request::Echo(v) => Payload::Echo(Echo { echo: v.into() }),
        Request::Generate => Payload::Generate,
        Request::Topology(lists) => Payload::Topology(Topology {
            topology: lists
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    (
                        node_name(i as u8),
                        l.iter().map(|&n| node_name(n)).collect(),
                    )
                })
                .collect(),
        }),
        Request::Broadcast(v) => Payload::Broadcast(Broadcast { message: v }),
        Request::Read => Payload::Read,
        Request::Add(delta) => Payload::Add(Add { delta }),
        Request::Send { key, msg } => Payload::Send(Send {
            key: format!("k{}", key % 4),
            msg: serde_json::json!(msg).into(),
            ..Default::default()
        }),
        Request::Poll { key, from } => Payload::Poll(Poll {
            offsets: [(format!("k{}", key % 4), u64::from(from % 8))].into(),
            max: None,
        }),
        Request::CommitOffsets { key, offset } => Payload::CommitOffsets(CommitOffsets {
            offsets: [(format!("k{}", key % 4), u64::from(offset % 8))].into(),
            group: None,
        }),
        Request::CreateQueue { queue, dead_letter } => Payload::CreateQueue(CreateQueue {
            queue: queue_name(queue),
            visibility_ms: Some(50),
            max_deliveries: dead_letter.then_some(2),
            dead_letter: dead_letter.then(|| format!("{}.dlq", queue_name(queue))),
            max_depth: Some(5),
            ..CreateQueue::default()
        }),
        Request::Enqueue {
            queue,
            id,
            delay_ms,
            ttl_ms,
        } => Payload::Enqueue(Enqueue {
            queue: queue_name(queue),
            msg: serde_json::json!(1).into(),
            id: id.map(|i| format!("p{}", i % 4)),
            delay_ms: delay_ms.map(u64::from),
            ttl_ms: ttl_ms.map(u64::from),
            ..Default::default()
        }),
        Request::Dequeue {
            queue,
            max,
            wait_ms,
        } => Payload::Dequeue(Dequeue {
            queue: queue_name(queue),
            max: Some(usize::from(max % 4)),
            visibility_ms: None,
            wait_ms: wait_ms.map(u64::from),
        }),
        Request::Settle {
            queue,
            how,
            seq,
            nonce,
        } => {
            let receipt = Receipt {
                queue: queue_name(queue),
                receipt: format!("{}.{}", seq % 8, nonce % 16),
                delay_ms: Some(u64::from(nonce % 3) * 10),
                visibility_ms: Some(20),
            };
            match how % 3 {
                0 => Payload::Nack(receipt),
                1 => Payload::Extend(receipt),
                _ => Payload::Ack(receipt),
            }
        }
        Request::Redrive { queue } => Payload::Redrive(Redrive {
            queue: format!("{}.dlq", queue_name(queue)),
            to: queue_name(queue),
            max: None,
        }),
        Request::Stats { queue } => Payload::Stats(QueueName {
            queue: queue_name(queue),
        }),
        Request::CreateTopic(partitions) => Payload::CreateTopic(CreateTopic {
            topic: "t".into(),
            partitions: u32::from(partitions % 4),
        }),
        Request::Publish(key) => Payload::Publish(Publish {
            topic: "t".into(),
            key: key.map(|k| format!("k{k}")),
            msg: serde_json::json!(1).into(),
            ..Default::default()
        }),
        Request::CancelWaits => Payload::CancelWaits,
        Request::InitProducer(name) => Payload::InitProducer(InitProducer {
            name: name.map(|n| format!("p{}", n % 2)),
        }),
        Request::KafkaData {
            how,
            topic,
            at,
            producer,
            records,
        } => kafka_data(how, topic, at, producer, records),
        Request::KafkaGroup {
            how,
            member,
            generation,
            timeout,
        } => kafka_group(how, member, generation, timeout),
        Request::Txn { phase, txid, ops } => {
            let txid = format!("x{}", txid % 3);
            let ops = ops
                .into_iter()
                .map(|op| request_payload(op.request()))
                .collect();
            match phase % 5 {
                0 => Payload::Txn(Txn { ops }),
                1 => Payload::Prepare(Prepare { txid, ops }),
                2 => Payload::CommitTxn(TxnId { txid }),
                3 => Payload::AbortTxn(TxnId { txid }),
                _ => Payload::ListPrepared,
            }
        }
        Request::IdempotentWrite {
            how,
            producer,
            epoch,
            seq,
        } => {
            let (producer, epoch, seq) = (
                Some(u64::from(producer % 4)),
                Some(u64::from(epoch % 3)),
                Some(u64::from(seq % 8)),
            );
            match how % 3 {
                0 => Payload::Send(Send {
                    key: "k0".into(),
                    msg: serde_json::json!(1).into(),
                    producer,
                    epoch,
                    seq,
                }),
                1 => Payload::Publish(Publish {
                    topic: "t".into(),
                    msg: serde_json::json!(1).into(),
                    producer,
                    epoch,
                    seq,
                    ..Default::default()
                }),
                _ => Payload::Enqueue(Enqueue {
                    queue: queue_name(0),
                    msg: serde_json::json!(1).into(),
                    producer,
                    epoch,
                    seq,
                    ..Default::default()
                }),
            }
        }
        Request::Member { how, consumer } => {
            let m = Membership {
                topic: Some("t".into()),
                group: "g".into(),
                consumer: format!("c{}", consumer % 3),
            };
            match how % 3 {
                0 => Payload::Join(m),
                1 => Payload::Heartbeat(m),
                _ => Payload::Leave(m),
            }
        }
        Request::Consume {
            consumer,
            generation,
            commit,
        } => {
            let (group, consumer, generation) = (
                "g".to_owned(),
                format!("c{}", consumer % 3),
                u64::from(generation % 8),
            );
            match commit {
                Some((p, offset)) => Payload::Commit(Commit {
                    group,
                    consumer,
                    generation,
                    offsets: [((p % 4).to_string(), u64::from(offset % 8))].into(),
                }),
                None => Payload::Fetch(Fetch {
                    group,
                    consumer,
                    generation,
                    max: Some(3),
                }),
            }
        }
    }
}

fn queue_name(i: u8) -> String {
    format!("q{}", i % 3)
}

/// Plays `ops` into a fresh node with a small configuration (so limits are hit),
/// checking invariants after every step. Panics on any violation.
pub fn run_ops(ops: &[Op]) {
    let config = Config {
        max_pending_rpcs: 4,
        dedup_capacity: 8,
        max_broadcast_values: 16,
        max_log_records: 20,
        max_records_per_log: 4,
        max_waiters: 2,
        group_session_timeout_ms: 300,
        gossip_batch_max: 3,
        rpc_max_attempts: 3,
        max_producers: 3,
        max_producer_streams: 4,
        producer_expiry_ms: 400,
        max_txn_ops: 4,
        max_prepared: 2,
        prepared_timeout_ms: 300,
        max_txn_outcomes: 4,
        ..Config::default()
    };
    let mut node = Node::new(config.clone());
    let mut records = Vec::new();
    let mut out = Effects::new();
    let mut now = Time::ZERO;
    let mut msg_id = 0u64;
    let mut snapshot = None;
    for (i, op) in ops.iter().cloned().enumerate() {
        if i == ops.len() / 2 {
            snapshot = Some((node.snapshot(), records.len()));
        }
        msg_id += 1;
        let envelope = |src: String, payload, in_reply_to| {
            Event::Message(Message {
                src,
                dest: "n0".into(),
                body: Body {
                    payload,
                    msg_id: Some(msg_id),
                    in_reply_to,
                },
            })
        };
        let event = match op {
            Op::Init { me, count } => {
                let count = count % 8 + 1;
                let node_ids = (0..count).map(node_name).collect();
                let init = Init {
                    node_id: node_name(me % count),
                    node_ids,
                };
                envelope("c0".into(), Payload::Init(init), None)
            }
            Op::Request(r) => envelope(format!("c{}", msg_id % 3), request_payload(r), None),
            Op::Gossip { from, values } => {
                envelope(node_name(from), Payload::Gossip(Gossip { values }), None)
            }
            Op::Merge { from, inc } => {
                let inc = inc.into_iter().map(|(n, c)| (node_name(n), c)).collect();
                let merge = Merge {
                    inc,
                    dec: Default::default(),
                };
                envelope(node_name(from), Payload::Merge(merge), None)
            }
            Op::Reply {
                from,
                in_reply_to,
                kind,
            } => {
                let payload = match kind % 4 {
                    0 => Payload::GossipOk,
                    1 => Payload::MergeOk,
                    2 => Payload::Error(ErrorBody::new(ErrorCode::TemporarilyUnavailable, "busy")),
                    _ => Payload::Error(ErrorBody::new(ErrorCode::Crash, "?")),
                };
                envelope(node_name(from), payload, Some(u64::from(in_reply_to)))
            }
            Op::Garbage(bytes) => match wire::decode(&bytes) {
                Ok(msg) => Event::Message(msg),
                Err(DecodeError::Invalid(bad)) => Event::Invalid(bad),
                Err(DecodeError::Unreadable(_)) => Event::Tick,
            },
            Op::AdvanceMs(ms) => {
                now = now.plus_millis(u64::from(ms));
                Event::Tick
            }
        };
        let mut input = match &event {
            Event::Message(msg) => Some(msg.clone()),
            _ => None,
        };
        node.step(now, event, &mut out);
        node.check_invariants();
        for effect in out.drain(..) {
            match effect {
                herald_core::Effect::Send(msg) => {
                    let mut line = Vec::new();
                    wire::encode(&msg, &mut line);
                    let back = wire::decode(&line[..line.len() - 1]);
                    assert_eq!(
                        back.as_ref(),
                        Ok(&msg),
                        "an effect must round-trip the codec"
                    );
                }
                herald_core::Effect::Persist(record) => {
                    let mut bytes = Vec::new();
                    record.encode(&mut bytes);
                    assert_eq!(herald_core::WalRecord::decode(&bytes).as_ref(), Ok(&record));
                    records.push(record);
                }
                herald_core::Effect::PersistInput { at } => {
                    // Written as the line the message came as, read back as the message.
                    let msg = input
                        .take()
                        .expect("only a message step persists its input");
                    let mut line = Vec::new();
                    wire::encode(&msg, &mut line);
                    line.pop();
                    let mut bytes = Vec::new();
                    herald_core::WalRecord::encode_line(at, &msg.src, &msg.dest, &line, &mut bytes);
                    let record = herald_core::WalRecord::input(at, msg);
                    assert_eq!(herald_core::WalRecord::decode(&bytes).as_ref(), Ok(&record));
                    records.push(record);
                }
                herald_core::Effect::Log(_) => {}
            }
        }
    }
    // A snapshot taken midway plus the records after it rebuilds the same state ...
    if let Some((bytes, after)) = snapshot {
        let restored = Node::restore(config.clone(), &bytes, records[after..].to_vec()).unwrap();
        let (got, want) = (
            format!("{:?}", restored.broker()),
            format!("{:?}", node.broker()),
        );
        assert_eq!(got, want, "snapshot + replay diverged");
        // The server's compaction builds its snapshot by replaying the records instead.
        let replayed = Node::recover(config.clone(), records[..after].to_vec()).snapshot();
        let restored = Node::restore(config.clone(), &replayed, records[after..].to_vec()).unwrap();
        let got = format!("{:?}", restored.broker());
        assert_eq!(got, want, "replayed snapshot + replay diverged");
    }
    // ... and so does replaying every record from the start.
    let recovered = Node::recover(config, records);
    let (got, want) = (
        format!("{:?}", recovered.broker()),
        format!("{:?}", node.broker()),
    );
    assert_eq!(got, want, "replay diverged");
}

/// One step of a schedule on a simulated 3-node cluster (node numbers wrap).
#[derive(Clone, Debug, TypeGenerator)]
pub enum ClusterOp {
    /// A client sends the next value to key `key % 3` through `node`.
    Send {
        /// Through which node.
        node: u8,
        /// Which key.
        key: u8,
    },
    /// A client polls key `key % 3` from offset 0 through `node`.
    Poll {
        /// Through which node.
        node: u8,
        /// Which key.
        key: u8,
    },
    /// The node crashes (if up).
    Crash(u8),
    /// The node crashes during its next step, after persisting, before sending.
    CrashMidStep(u8),
    /// The node restarts from its records (if down).
    Restart(u8),
    /// The nodes whose bit is set are cut from the others, both ways.
    Partition(u8),
    /// Messages from one node to another are dropped.
    CutOneWay(u8, u8),
    /// Every link is restored.
    Heal,
    /// Time passes (up to about 4 s).
    RunMs(u16),
}

/// Plays `ops` (at most 100) on a simulated 3-node cluster with lossy links, then heals
/// it and reads every key: an acknowledged send is at the offset it was given, and no
/// offset ever holds two values. Nodes check their invariants after every step.
/// Panics on any violation.
pub fn run_cluster_ops(ops: &[ClusterOp]) {
    use herald_core::sim::{Cluster, NetConfig};
    use std::collections::BTreeMap;

    let net = NetConfig {
        seed: ops.len() as u64,
        loss_percent: 5,
        duplicate_percent: 5,
        ..NetConfig::default()
    };
    let mut c = Cluster::new(3, net, |i| Config {
        seed: i as u64,
        max_raft_log_entries: 8,
        ..Config::default()
    });
    let key = |k: u8| format!("k{}", k % 3);
    let mut value_at: BTreeMap<(String, u64), i64> = BTreeMap::new();
    let mut acked: Vec<(String, u64, i64)> = Vec::new();
    let mut observe = |k: &str, offset: u64, value: i64| {
        let held = *value_at.entry((k.to_owned(), offset)).or_insert(value);
        assert_eq!(held, value, "{k}@{offset} holds {held} and {value}");
    };
    let mut next_value = 0i64;
    for op in ops.iter().take(100) {
        match *op {
            ClusterOp::Send { node, key: k } => {
                next_value += 1;
                let send = Send {
                    key: key(k),
                    msg: serde_json::json!(next_value).into(),
                    ..Default::default()
                };
                let reply = c.try_request(usize::from(node % 3), Payload::Send(send), 1_000);
                if let Some(Payload::SendOk(ok)) = reply {
                    observe(&key(k), ok.offset, next_value);
                    acked.push((key(k), ok.offset, next_value));
                }
            }
            ClusterOp::Poll { node, key: k } => {
                let poll = Poll {
                    offsets: [(key(k), 0)].into(),
                    max: None,
                };
                let reply = c.try_request(usize::from(node % 3), Payload::Poll(poll), 1_000);
                if let Some(Payload::PollOk(ok)) = reply {
                    for (offset, value) in ok.msgs.get(&key(k)).into_iter().flatten() {
                        observe(
                            &key(k),
                            *offset,
                            value.to_value().as_i64().expect("sent an integer"),
                        );
                    }
                }
            }
            ClusterOp::Crash(n) if c.is_alive(usize::from(n % 3)) => c.crash(usize::from(n % 3)),
            ClusterOp::CrashMidStep(n) => c.crash_during_next_step(usize::from(n % 3)),
            ClusterOp::Restart(n) if !c.is_alive(usize::from(n % 3)) => {
                c.restart(usize::from(n % 3))
            }
            ClusterOp::Crash(_) | ClusterOp::Restart(_) => {}
            ClusterOp::Partition(mask) => {
                let (a, b): (Vec<usize>, Vec<usize>) = (0..3).partition(|i| mask >> i & 1 == 1);
                c.heal();
                c.partition(&a, &b);
            }
            ClusterOp::CutOneWay(from, to) if from % 3 != to % 3 => {
                c.cut_one_way(usize::from(from % 3), usize::from(to % 3))
            }
            ClusterOp::CutOneWay(..) => {}
            ClusterOp::Heal => c.heal(),
            ClusterOp::RunMs(ms) => c.run_for_ms(u64::from(ms) % 4_000),
        }
    }
    c.heal();
    c.restart_all();
    c.run_for_ms(3_000);
    for k in 0..3u8 {
        let poll = Poll {
            offsets: [(key(k), 0)].into(),
            max: None,
        };
        let log = (0..60)
            .find_map(
                |attempt| match c.request(attempt % 3, Payload::Poll(poll.clone())) {
                    Payload::PollOk(ok) => Some(ok.msgs.get(&key(k)).cloned().unwrap_or_default()),
                    _ => {
                        c.run_for_ms(100);
                        None
                    }
                },
            )
            .expect("a healed cluster answers polls");
        for (i, (offset, value)) in log.iter().enumerate() {
            assert_eq!(*offset, i as u64, "offsets of {} are dense", key(k));
            observe(
                &key(k),
                *offset,
                value.to_value().as_i64().expect("sent an integer"),
            );
        }
        for (_, offset, value) in acked.iter().filter(|a| a.0 == key(k)) {
            let got = log
                .get(*offset as usize)
                .and_then(|(_, v)| v.to_value().as_i64());
            assert_eq!(got, Some(*value), "acknowledged {}@{offset} lost", key(k));
        }
    }
}
