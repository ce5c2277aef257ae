//! Typed message bodies with Maelstrom's exact field names, and the error codes.
//!
//! Every body kind appears once, in the `payloads!` table below: that table makes the
//! [`Payload`] enum, its `type` strings, and the decoder that picks a kind's fields.
//! `*_ok` bodies carry only their schema's fields (Maelstrom rejects extra keys).

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, IgnoredAny};
use serde::Serialize;
use serde_json::Value;

use crate::wire::Json;
use crate::Time;

pub use super::kafka_msg::*;

/// Maelstrom's error codes (0–999 are Maelstrom's; Herald's own start at 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// The operation did not finish in time; it may or may not have happened.
    Timeout = 0,
    /// The request was addressed to a node that does not exist.
    NodeNotFound = 1,
    /// The request type is not implemented.
    NotSupported = 10,
    /// Definitely not done now (not initialised, a limit reached, no quorum): retry later.
    TemporarilyUnavailable = 11,
    /// The request could not be understood (missing or ill-typed fields).
    MalformedRequest = 12,
    /// A failure whose outcome is unknown.
    Crash = 13,
    /// A failure known not to have taken effect.
    Abort = 14,
    /// The key does not exist.
    KeyDoesNotExist = 20,
    /// The key already exists.
    KeyAlreadyExists = 21,
    /// A precondition (such as an expected value) did not hold.
    PreconditionFailed = 22,
    /// A transaction conflicted with another and was aborted.
    TxnConflict = 30,
    /// Herald: a consumer-group request carried an old generation; rejoin.
    StaleGeneration = 1000,
    /// Herald: the consumer is not (or no longer) a member of the group; rejoin.
    UnknownMember = 1001,
    /// Herald: the consumer does not own that partition in this generation.
    NotOwner = 1002,
    /// Herald: the receipt is unknown or stale (acked, expired, or redelivered since).
    InvalidReceipt = 1003,
    /// Herald: the producer id is unknown (never registered, or expired): `init_producer`.
    UnknownProducer = 1004,
    /// Herald: a newer instance of this producer registered; this one is a zombie.
    ProducerFenced = 1005,
    /// Herald: a producer's `seq` skipped ahead of the next expected one.
    OutOfOrderSequence = 1006,
    /// Herald, between nodes: this node is not the leader, so it did not take the
    /// forwarded request (the forwarding node tells its client the outcome is unknown).
    NotLeader = 1007,
    /// Herald: `herald serve` has users and this connection has not authenticated
    /// (`auth` first; the connection stays open for it).
    Unauthenticated = 1008,
    /// Herald: wrong user or password, or too many failures from this address lately
    /// (the text says when to try again).
    AuthenticationFailed = 1009,
    /// Herald: the connection's user has no rule granting what the request needs (the
    /// text names the user, the access and the resource).
    NotAuthorized = 1010,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// True if an error with this code means the operation did not and will not happen.
    pub const fn is_definite(self) -> bool {
        !matches!(self, ErrorCode::Timeout | ErrorCode::Crash)
    }
}

/// `init`: tells a node its id and the ids of every node in the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Init {
    /// This node's id.
    pub node_id: String,
    /// Every node's id, this one included, in the same order on every node.
    pub node_ids: Vec<String>,
}

/// `echo` and `echo_ok`: any JSON value, returned unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Echo {
    /// The value to echo.
    pub echo: Value,
}

/// `auth`: a connection authenticates as a user of `herald serve`.
#[derive(Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Auth {
    /// The user's name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl std::fmt::Debug for Auth {
    /// The password is never shown (logs print requests with `{:?}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `auth_ok`: the user the connection now acts as.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct AuthOk {
    /// The user.
    pub user: String,
}

/// `generate_ok`: a cluster-wide unique id.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerateOk {
    /// The id: `<node>-<counter>`.
    pub id: String,
}

/// `topology`: each node's neighbours, as suggested by Maelstrom.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Topology {
    /// Node id → its neighbours.
    pub topology: BTreeMap<String, Vec<String>>,
}

/// `broadcast`: a value every node must eventually return from `read`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Broadcast {
    /// The value (Maelstrom sends integers).
    pub message: i64,
}

/// `read_ok`: the broadcast workload's `messages` or the counter workload's `value`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ReadOk {
    /// Every broadcast value this node has (broadcast workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<i64>>,
    /// The counter's value (g-counter and pn-counter workloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
}

/// `add`: add `delta` to the counter.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Add {
    /// The amount; negative values make it a pn-counter.
    pub delta: i64,
}

/// `gossip` (node to node): broadcast values the receiver may lack.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Gossip {
    /// The values.
    pub values: Vec<i64>,
}

/// `merge` (node to node): a counter's full state, to merge by pointwise maximum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Merge {
    /// Node id → total of the positive deltas that node has accepted.
    pub inc: BTreeMap<String, u64>,
    /// Node id → total of the negated negative deltas that node has accepted.
    pub dec: BTreeMap<String, u64>,
}

/// `error`: the request failed; `code` says how (see [`ErrorCode`]).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The numeric error code.
    pub code: u32,
    /// A human-readable reason.
    #[serde(default)]
    pub text: String,
}

impl ErrorBody {
    /// True if this error carries `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.code()
    }

    /// An error body with a code and a reason.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.code(),
            text: text.into(),
        }
    }
}

/// `send` (Maelstrom kafka): append `msg` to the log named `key`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Send {
    /// The log's name.
    pub key: String,
    /// The message.
    pub msg: Json,
    /// Idempotent producer: the id from `init_producer` (with `epoch` and `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<u64>,
    /// Idempotent producer: the epoch from `init_producer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Idempotent producer: this write's number in its stream, 0, 1, 2, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `send_ok`: where the message landed.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SendOk {
    /// Its offset in the key's log.
    pub offset: u64,
}

/// `poll`: read each key's log from an offset.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Poll {
    /// Key → first offset wanted.
    pub offsets: BTreeMap<String, u64>,
    /// Herald extension: most messages per key (default and cap in `Config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// `poll_ok`: `[offset, msg]` pairs per key, in offset order.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PollOk {
    /// Key → pairs.
    pub msgs: BTreeMap<String, Vec<(u64, Json)>>,
}

/// `commit_offsets`: the client processed each key up to and including the offset.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CommitOffsets {
    /// Key → last processed offset.
    pub offsets: BTreeMap<String, u64>,
    /// Herald extension: the consumer group (default: the shared group `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `list_committed_offsets`: the committed offsets of some keys.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ListCommittedOffsets {
    /// The keys asked for.
    pub keys: Vec<String>,
    /// Herald extension: the consumer group (default: the shared group `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `list_committed_offsets_ok`: key → committed offset, for keys that have one.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Offsets {
    /// Key → offset.
    pub offsets: BTreeMap<String, u64>,
}

/// `create_topic`: a topic of `partitions` logs (idempotent if it exists alike).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CreateTopic {
    /// The topic's name.
    pub topic: String,
    /// How many partitions (1 ..= `Config::max_partitions`).
    pub partitions: u32,
}

/// `publish`: append to a topic; the key picks the partition by a stable hash.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Publish {
    /// The topic.
    pub topic: String,
    /// Messages with one key go to one partition, in order (no key: round robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The message.
    pub msg: Json,
    /// Idempotent producer: the id from `init_producer` (with `epoch` and `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<u64>,
    /// Idempotent producer: the epoch from `init_producer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Idempotent producer: this write's number in its stream, 0, 1, 2, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `publish_ok`: where the message landed.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PublishOk {
    /// The partition.
    pub partition: u32,
    /// The offset in that partition.
    pub offset: u64,
    /// True if this answers a retry of an earlier publish (same producer and seq).
    pub duplicate: bool,
}

/// `join`, `heartbeat`, `leave`: a consumer's membership of a group on a topic.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Membership {
    /// The topic (required by `join`; a group consumes one topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The group.
    pub group: String,
    /// The consumer's name, unique within the group.
    pub consumer: String,
}

/// `join_ok`, `heartbeat_ok`: the group's generation and this consumer's partitions.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Assignment {
    /// Bumped at every rebalance; fetch and commit must quote the current one.
    pub generation: u64,
    /// Partitions this consumer owns (empty: idle, more consumers than partitions).
    pub partitions: Vec<u32>,
}

/// `fetch`: the next messages of the consumer's partitions for its group.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Fetch {
    /// The group.
    pub group: String,
    /// The consumer.
    pub consumer: String,
    /// The generation the consumer joined in.
    pub generation: u64,
    /// Most messages to return (default and cap in `Config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// One fetched message.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Fetched {
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Its key, if published with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The message.
    pub msg: Json,
}

/// `fetch_ok`: messages in partition order, each partition in offset order.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FetchOk {
    /// The messages.
    pub msgs: Vec<Fetched>,
}

/// `commit`: the group consumed each partition up to (not including) the offset.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Commit {
    /// The group.
    pub group: String,
    /// The committing consumer (must own the partitions).
    pub consumer: String,
    /// Its generation.
    pub generation: u64,
    /// Partition (as a string key) → next offset to consume.
    pub offsets: BTreeMap<String, u64>,
}

/// `list_topics_ok`: topic → partition count.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TopicList {
    /// The topics.
    pub topics: BTreeMap<String, u32>,
}

/// `create_queue`: a work queue; absent fields take the defaults in docs/protocol.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CreateQueue {
    /// The queue's name.
    pub queue: String,
    /// How long a dequeued message stays invisible before it is redelivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_ms: Option<u64>,
    /// Deliveries before a message goes to `dead_letter` (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue (created if missing); required if `max_deliveries > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Messages older than this are dropped (0: kept until acked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// How long a producer's message `id` is remembered to drop duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_ms: Option<u64>,
    /// Most messages the queue holds; beyond it `enqueue` gets error 11.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<usize>,
}

/// A request naming just a queue (`stats`), or a reply naming one (`create_queue_ok`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct QueueName {
    /// The queue.
    pub queue: String,
}

/// `enqueue`: add a message to a queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Enqueue {
    /// The queue.
    pub queue: String,
    /// The message.
    pub msg: Json,
    /// The producer's id for it: a repeat within the dedup window is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Invisible for this long first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Dropped if not acked within this long (default: the queue's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Idempotent producer: the id from `init_producer` (with `epoch` and `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<u64>,
    /// Idempotent producer: the epoch from `init_producer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Idempotent producer: this write's number in its stream, 0, 1, 2, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `enqueue_ok`: the message's id, and whether it repeated an earlier enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct EnqueueOk {
    /// The producer's id, or one the broker made.
    pub id: String,
    /// True if the id was seen within the dedup window (nothing was added).
    pub duplicate: bool,
}

/// `dequeue`: take up to `max` visible messages, invisible to others for a while.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Dequeue {
    /// The queue.
    pub queue: String,
    /// Most messages (default 1, cap in `Config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// Overrides the queue's visibility timeout for these deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_ms: Option<u64>,
    /// If nothing is visible, wait up to this long for a message (long polling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Why and from where a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The queue it came from.
    pub queue: String,
    /// Why it was moved.
    pub reason: String,
    /// Its deliveries there.
    pub deliveries: u32,
}

/// One delivered message.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Delivery {
    /// The message's id.
    pub id: String,
    /// Names this delivery: quote it to ack, nack or extend.
    pub receipt: String,
    /// The message.
    pub msg: Json,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
    /// Set on messages in a dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

/// `dequeue_ok`: the delivered messages (possibly none).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct DequeueOk {
    /// The messages.
    pub msgs: Vec<Delivery>,
}

/// `ack`, `nack`, `extend`: act on one delivery.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Receipt {
    /// The queue.
    pub queue: String,
    /// The delivery's receipt.
    pub receipt: String,
    /// `nack`: visible again after this long (default 0); `extend`: ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `extend`: invisible for this long from now; `ack`, `nack`: ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_ms: Option<u64>,
}

/// `redrive`: move a dead-letter queue's visible messages to another queue.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Redrive {
    /// The dead-letter queue.
    pub queue: String,
    /// Where to move them.
    pub to: String,
    /// Most to move (default: all that fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// `redrive_ok`: how many moved.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RedriveOk {
    /// Messages moved.
    pub moved: usize,
}

/// `stats_ok`: a queue's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct QueueStats {
    /// Messages held (ready + in flight + delayed).
    pub depth: usize,
    /// Visible, waiting for a consumer.
    pub ready: usize,
    /// Delivered, not yet acked.
    pub in_flight: usize,
    /// Waiting out a delay.
    pub delayed: usize,
    /// Moved to the dead-letter queue, ever.
    pub dead_lettered: u64,
    /// Dropped by TTL or retention, ever.
    pub expired: u64,
    /// Enqueued, ever (duplicates not counted).
    pub enqueued: u64,
    /// Acked, ever.
    pub acked: u64,
    /// Age of the oldest message held, in ms (0 if empty).
    pub oldest_age_ms: u64,
}

/// `list_queues_ok`: every queue's name.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct QueueList {
    /// The names, sorted.
    pub queues: Vec<String>,
}

/// `processed`: record that `consumer` processed message `id` (idempotent consumers).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Processed {
    /// The consumer.
    pub consumer: String,
    /// The message id.
    pub id: String,
}

/// `processed_ok`: whether this was the first time (false: a redelivery; skip it).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessedOk {
    /// True the first time `consumer` reports `id`.
    pub first_time: bool,
}

/// `init_producer`: register an idempotent producer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct InitProducer {
    /// A stable name (Kafka's transactional id): registering it again keeps the id and
    /// bumps the epoch, fencing the previous instance. None: a fresh id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `init_producer_ok`: the producer's id and epoch, to quote on every write.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ProducerId {
    /// The id.
    pub producer: u64,
    /// The epoch.
    pub epoch: u64,
}

/// `cancel_waits_ok`: how many waiting dequeues were cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Cancelled {
    /// The count.
    pub cancelled: usize,
}

/// `status_ok`: where a node stands (its cluster fields are zero on a single node).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// This node's id.
    pub node: String,
    /// The leader it knows of (itself on a single node), or `null` during an election.
    pub leader: Option<String>,
    /// Its Raft term.
    pub term: u64,
    /// Raft entries up to here are committed.
    pub commit_index: u64,
    /// Raft entries up to here are applied to this node's broker.
    pub applied_index: u64,
}

/// `raft_vote`: a (pre-)candidate asks for a vote.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftVote {
    /// The term the vote is for (for a pre-vote, the term the candidate would take).
    pub term: u64,
    /// Index of the candidate's last log entry.
    pub last_index: u64,
    /// Term of the candidate's last log entry.
    pub last_term: u64,
    /// A pre-vote: would a vote be granted? Changes no state.
    pub pre: bool,
}

/// `raft_vote_result`: the answer to `raft_vote`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftVoteResult {
    /// The voter's term, or the asked term if granted.
    pub term: u64,
    /// True if the vote is granted.
    pub granted: bool,
    /// Answers a pre-vote.
    pub pre: bool,
}

/// `raft_append`: the leader replicates entries after `prev_index` (or heartbeats).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftAppend {
    /// The leader's term.
    pub term: u64,
    /// Index of the entry before `entries`.
    pub prev_index: u64,
    /// Its term.
    pub prev_term: u64,
    /// Entries to append (empty for a heartbeat).
    pub entries: Vec<RaftEntry>,
    /// The leader's commit index.
    pub commit: u64,
    /// The leader's clock when it sent this (echoed back, for the read lease).
    pub sent_at: Time,
}

/// One log entry: a request to apply at time `at`, or only the passage of time (the
/// leader's first entry of its term, or a tick that runs due broker timers).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftEntry {
    /// The term of the leader that proposed it.
    pub term: u64,
    /// The leader's clock when it proposed the entry: the state machine's time.
    pub at: Time,
    /// The request, or `None` for a time-only entry. Shared: the log, the appends to
    /// each follower and the record persisted hold one copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<std::sync::Arc<crate::wire::Message>>,
}

/// `raft_append_result`: the answer to `raft_append` or `raft_snapshot`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftAppendResult {
    /// The follower's term.
    pub term: u64,
    /// True if the entries (or snapshot) were taken.
    pub success: bool,
    /// On success, the last index now known to match; on failure, where the follower
    /// suggests the leader go back to.
    pub index: u64,
    /// `sent_at` of the request answered.
    pub sent_at: Time,
}

/// `raft_snapshot`: the leader sends its state machine to a follower too far behind.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RaftSnapshot {
    /// The leader's term.
    pub term: u64,
    /// Last index the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
    /// The replicated state machine.
    pub machine: Json,
    /// The leader's clock when it sent this.
    pub sent_at: Time,
}

/// `txn`: writes, acks and offset commits applied atomically (all or none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Txn {
    /// The operations: `send`, `publish`, `enqueue`, `ack`, `commit_offsets` and
    /// `commit` bodies, each with its `type` (no producer fields).
    pub ops: Vec<Payload>,
}

/// `txn_ok`, `commit_txn_ok`: each operation's own reply, in order.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TxnOk {
    /// The replies (`send_ok`, `publish_ok`, `enqueue_ok`, `ack_ok`, …).
    pub results: Vec<Payload>,
}

/// `prepare`: phase one of two-phase commit: check `ops`, make them durable but
/// invisible, and lock what they touch until `commit_txn` or `abort_txn`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Prepare {
    /// The coordinator's transaction id.
    pub txid: String,
    /// The operations, as in `txn`.
    pub ops: Vec<Payload>,
}

/// `commit_txn`, `abort_txn`: phase two of two-phase commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TxnId {
    /// The transaction id given to `prepare`.
    pub txid: String,
}

/// One prepared transaction, as `list_prepared` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PreparedTxn {
    /// Its id.
    pub txid: String,
    /// How many operations it holds.
    pub ops: usize,
    /// Milliseconds until it aborts by itself.
    pub expires_in_ms: u64,
}

/// `list_prepared_ok`: every prepared transaction, in txid order.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PreparedList {
    /// The transactions.
    pub prepared: Vec<PreparedTxn>,
}

/// Where a message kind goes: a column of the `payloads!` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The node runtime runs it: `init`, the Maelstrom workloads, `status`.
    Node,
    /// The broker runs it; on a cluster it is replicated through Raft.
    Broker,
    /// Raft, between nodes; it persists its own changes.
    Raft,
    /// A reply: it answers a request (by `in_reply_to`) and is never run.
    Reply,
}

/// What running a request does: the other column of the `payloads!` table (replies and
/// Raft messages have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Changes nothing: not persisted, not reply-cached. On a cluster, the leader
    /// answers a broker read from its applied state while its lease holds.
    Read,
    /// Changes state, and running it again is harmless (it is idempotent, or only
    /// moves a session or position on): persisted, not reply-cached.
    Write,
    /// Changes state, and running it twice would do it twice: persisted, and its
    /// reply cached by (client, `msg_id`) so that a retry gets the first reply.
    WriteOnce,
}

/// A unit kind's decoder ignores its fields; a body kind's decodes them.
macro_rules! decode_kind {
    ($fields:ident, $var:ident) => {{
        IgnoredAny::deserialize($fields)?;
        Payload::$var
    }};
    ($fields:ident, $var:ident, $ty:ty) => {
        Payload::$var(<$ty>::deserialize($fields)?)
    };
}

/// `Access` of a table row, if it has one.
macro_rules! access {
    () => {
        None
    };
    ($access:ident) => {
        Some(Access::$access)
    };
}

macro_rules! payloads {
    (
        units { $( $(#[$udoc:meta])* $ukind:literal => $uvar:ident : $uroute:ident $($uaccess:ident)?, )* }
        bodies { $( $(#[$bdoc:meta])* $bkind:literal => $bvar:ident($bty:ty) : $broute:ident $($baccess:ident)?, )* }
    ) => {
        /// A message body, tagged on the wire by its `type` field.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum Payload {
            $( $(#[$udoc])* #[serde(rename = $ukind)] $uvar, )*
            $( $(#[$bdoc])* #[serde(rename = $bkind)] $bvar($bty), )*
        }

        impl Payload {
            /// The `type` string of this body.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Payload::$uvar => $ukind, )*
                    $( Payload::$bvar(_) => $bkind, )*
                }
            }

            /// Where this kind goes.
            pub fn route(&self) -> Route {
                match self {
                    $( Payload::$uvar => Route::$uroute, )*
                    $( Payload::$bvar(_) => Route::$broute, )*
                }
            }

            /// What running this kind does; `None` for replies and Raft messages.
            pub fn access(&self) -> Option<Access> {
                match self {
                    $( Payload::$uvar => access!($($uaccess)?), )*
                    $( Payload::$bvar(_) => access!($($baccess)?), )*
                }
            }

            /// True if `kind` is a `type` this node understands.
            pub fn is_known_kind(kind: &str) -> bool {
                matches!(kind, $( $ukind )|* | $( $bkind )|*)
            }

            /// Decodes the fields of a body whose `type` is `kind` (other keys are
            /// ignored). An unknown kind is an error.
            pub fn decode_fields<'de, D: Deserializer<'de>>(
                kind: &str,
                fields: D,
            ) -> Result<Payload, D::Error> {
                Ok(match kind {
                    $( $ukind => decode_kind!(fields, $uvar), )*
                    $( $bkind => decode_kind!(fields, $bvar, $bty), )*
                    other => {
                        return Err(serde::de::Error::custom(format_args!(
                            "unsupported message type {other:?}"
                        )))
                    }
                })
            }
        }
    };
}

// Every message kind, once: its `type`, its variant and body, where it goes (`Route`)
// and, for a request, what running it does (`Access`). The node dispatches, persists
// and reply-caches by these two columns alone.
payloads! {
    units {
        /// Reply to `init`.
        "init_ok" => InitOk : Reply,
        /// Ask for a unique id.
        "generate" => Generate : Node WriteOnce,
        /// Reply to `topology`.
        "topology_ok" => TopologyOk : Reply,
        /// Reply to `broadcast`.
        "broadcast_ok" => BroadcastOk : Reply,
        /// Read the broadcast set or the counter.
        "read" => Read : Node Read,
        /// Reply to `add`.
        "add_ok" => AddOk : Reply,
        /// Reply to `gossip`.
        "gossip_ok" => GossipOk : Reply,
        /// Reply to `merge`.
        "merge_ok" => MergeOk : Reply,
        /// Reply to `commit_offsets`.
        "commit_offsets_ok" => CommitOffsetsOk : Reply,
        /// List topics.
        "list_topics" => ListTopics : Broker Read,
        /// Reply to `leave`.
        "leave_ok" => LeaveOk : Reply,
        /// Reply to `commit`.
        "commit_ok" => CommitOk : Reply,
        /// List queues.
        "list_queues" => ListQueues : Broker Read,
        /// Reply to `ack`.
        "ack_ok" => AckOk : Reply,
        /// Reply to `prepare`.
        "prepare_ok" => PrepareOk : Reply,
        /// Reply to `abort_txn`.
        "abort_txn_ok" => AbortTxnOk : Reply,
        /// List prepared transactions.
        "list_prepared" => ListPrepared : Broker Read,
        /// Where a node stands: its id, the leader, Raft indexes.
        "status" => Status : Node Read,
        /// Cancel the sender's waiting (long-poll) dequeues.
        "cancel_waits" => CancelWaits : Broker Write,
        /// Reply to `nack`.
        "nack_ok" => NackOk : Reply,
        /// Reply to `extend`.
        "extend_ok" => ExtendOk : Reply,
        /// Reply to `delete_topic`.
        "delete_topic_ok" => DeleteTopicOk : Reply,
        /// Kafka: list consumer groups.
        "kafka_list_groups" => KafkaListGroups : Broker Read,
    }
    bodies {
        /// Initialise the node.
        "init" => Init(Init) : Node Write,
        /// Echo a value.
        "echo" => Echo(Echo) : Node Read,
        /// Authenticate this connection (answered by `herald serve`, which has users;
        /// a node on its own has none and answers 10).
        "auth" => Auth(Auth) : Node Read,
        /// Reply to `auth`.
        "auth_ok" => AuthOk(AuthOk) : Reply,
        /// Reply to `echo`.
        "echo_ok" => EchoOk(Echo) : Reply,
        /// Reply to `generate`.
        "generate_ok" => GenerateOk(GenerateOk) : Reply,
        /// Suggest neighbours for gossip.
        "topology" => Topology(Topology) : Node Write,
        /// Add a value to the broadcast set.
        "broadcast" => Broadcast(Broadcast) : Node WriteOnce,
        /// Reply to `read`.
        "read_ok" => ReadOk(ReadOk) : Reply,
        /// Add to the counter.
        "add" => Add(Add) : Node WriteOnce,
        /// Node to node: broadcast values.
        "gossip" => Gossip(Gossip) : Node Write,
        /// Node to node: counter state.
        "merge" => Merge(Merge) : Node Write,
        /// A failed request.
        "error" => Error(ErrorBody) : Reply,
        /// Kafka workload: append to a keyed log.
        "send" => Send(Send) : Broker WriteOnce,
        /// Reply to `send`.
        "send_ok" => SendOk(SendOk) : Reply,
        /// Kafka workload: read keyed logs.
        "poll" => Poll(Poll) : Broker Read,
        /// Reply to `poll`.
        "poll_ok" => PollOk(PollOk) : Reply,
        /// Kafka workload: commit offsets.
        "commit_offsets" => CommitOffsets(CommitOffsets) : Broker Write,
        /// Kafka workload: read committed offsets.
        "list_committed_offsets" => ListCommittedOffsets(ListCommittedOffsets) : Broker Read,
        /// Reply to `list_committed_offsets`.
        "list_committed_offsets_ok" => ListCommittedOffsetsOk(Offsets) : Reply,
        /// Create a topic.
        "create_topic" => CreateTopic(CreateTopic) : Broker Write,
        /// Reply to `create_topic`.
        "create_topic_ok" => CreateTopicOk(CreateTopic) : Reply,
        /// Publish to a topic.
        "publish" => Publish(Publish) : Broker WriteOnce,
        /// Reply to `publish`.
        "publish_ok" => PublishOk(PublishOk) : Reply,
        /// Join a consumer group.
        "join" => Join(Membership) : Broker Write,
        /// Reply to `join`.
        "join_ok" => JoinOk(Assignment) : Reply,
        /// Keep a group membership alive.
        "heartbeat" => Heartbeat(Membership) : Broker Write,
        /// Reply to `heartbeat`.
        "heartbeat_ok" => HeartbeatOk(Assignment) : Reply,
        /// Leave a consumer group.
        "leave" => Leave(Membership) : Broker Write,
        /// Fetch from a group's partitions.
        "fetch" => Fetch(Fetch) : Broker Write,
        /// Reply to `fetch`.
        "fetch_ok" => FetchOk(FetchOk) : Reply,
        /// Commit a group's offsets.
        "commit" => Commit(Commit) : Broker Write,
        /// Reply to `list_topics`.
        "list_topics_ok" => ListTopicsOk(TopicList) : Reply,
        /// Create a work queue.
        "create_queue" => CreateQueue(CreateQueue) : Broker Write,
        /// Reply to `create_queue`.
        "create_queue_ok" => CreateQueueOk(QueueName) : Reply,
        /// Add a message to a queue.
        "enqueue" => Enqueue(Enqueue) : Broker WriteOnce,
        /// Reply to `enqueue`.
        "enqueue_ok" => EnqueueOk(EnqueueOk) : Reply,
        /// Take messages from a queue.
        "dequeue" => Dequeue(Dequeue) : Broker Write,
        /// Reply to `dequeue`.
        "dequeue_ok" => DequeueOk(DequeueOk) : Reply,
        /// Acknowledge a delivery (the message is done).
        "ack" => Ack(Receipt) : Broker WriteOnce,
        /// Return a delivery (visible again, after an optional delay).
        "nack" => Nack(Receipt) : Broker WriteOnce,
        /// Keep a delivery invisible for longer.
        "extend" => Extend(Receipt) : Broker Write,
        /// Move dead letters back to a queue.
        "redrive" => Redrive(Redrive) : Broker WriteOnce,
        /// Reply to `redrive`.
        "redrive_ok" => RedriveOk(RedriveOk) : Reply,
        /// A queue's counts.
        "stats" => Stats(QueueName) : Broker Read,
        /// Reply to `stats`.
        "stats_ok" => StatsOk(QueueStats) : Reply,
        /// Reply to `list_queues`.
        "list_queues_ok" => ListQueuesOk(QueueList) : Reply,
        /// Record a processed message id for a consumer.
        "processed" => Processed(Processed) : Broker WriteOnce,
        /// Reply to `processed`.
        "processed_ok" => ProcessedOk(ProcessedOk) : Reply,
        /// Register an idempotent producer.
        "init_producer" => InitProducer(InitProducer) : Broker WriteOnce,
        /// Reply to `init_producer`.
        "init_producer_ok" => InitProducerOk(ProducerId) : Reply,
        /// Apply operations atomically.
        "txn" => Txn(Txn) : Broker WriteOnce,
        /// Reply to `txn`.
        "txn_ok" => TxnOk(TxnOk) : Reply,
        /// Two-phase commit, phase one.
        "prepare" => Prepare(Prepare) : Broker WriteOnce,
        /// Commit a prepared transaction.
        "commit_txn" => CommitTxn(TxnId) : Broker WriteOnce,
        /// Reply to `commit_txn`.
        "commit_txn_ok" => CommitTxnOk(TxnOk) : Reply,
        /// Abort a prepared transaction.
        "abort_txn" => AbortTxn(TxnId) : Broker WriteOnce,
        /// Reply to `list_prepared`.
        "list_prepared_ok" => ListPreparedOk(PreparedList) : Reply,
        /// Reply to `cancel_waits`.
        "cancel_waits_ok" => CancelWaitsOk(Cancelled) : Reply,
        /// Reply to `status`.
        "status_ok" => StatusOk(NodeStatus) : Reply,
        /// Delete a topic.
        "delete_topic" => DeleteTopic(DeleteTopic) : Broker WriteOnce,
        /// Kafka: append a record batch to a partition.
        "kafka_produce" => KafkaProduce(KafkaProduce) : Broker WriteOnce,
        /// Reply to `kafka_produce`.
        "kafka_produce_ok" => KafkaProduceOk(KafkaProduceOk) : Reply,
        /// Kafka: read partitions from offsets.
        "kafka_fetch" => KafkaFetch(KafkaFetch) : Broker Read,
        /// Reply to `kafka_fetch`.
        "kafka_fetch_ok" => KafkaFetchOk(KafkaFetchOk) : Reply,
        /// Kafka: offsets by time.
        "kafka_list_offsets" => KafkaListOffsets(KafkaListOffsets) : Broker Read,
        /// Reply to `kafka_list_offsets`.
        "kafka_list_offsets_ok" => KafkaListOffsetsOk(KafkaListOffsetsOk) : Reply,
        /// Kafka: topics and partition counts, creating missing ones if asked.
        "kafka_metadata" => KafkaMetadata(KafkaMetadata) : Broker Write,
        /// Reply to `kafka_metadata`.
        "kafka_metadata_ok" => KafkaMetadataOk(KafkaMetadataOk) : Reply,
        /// Kafka: join a consumer group (answered when the rebalance completes).
        "kafka_join_group" => KafkaJoinGroup(KafkaJoinGroup) : Broker Write,
        /// Reply to `kafka_join_group`.
        "kafka_join_group_ok" => KafkaJoinGroupOk(KafkaJoinGroupOk) : Reply,
        /// Kafka: hand out (leader) or receive (member) assignments.
        "kafka_sync_group" => KafkaSyncGroup(KafkaSyncGroup) : Broker Write,
        /// Reply to `kafka_sync_group`.
        "kafka_sync_group_ok" => KafkaSyncGroupOk(KafkaSyncGroupOk) : Reply,
        /// Kafka: a group member is alive.
        "kafka_heartbeat" => KafkaHeartbeat(KafkaHeartbeat) : Broker Write,
        /// Reply to `kafka_heartbeat`.
        "kafka_heartbeat_ok" => KafkaHeartbeatOk(KafkaErrorCode) : Reply,
        /// Kafka: members leave a group.
        "kafka_leave_group" => KafkaLeaveGroup(KafkaLeaveGroup) : Broker Write,
        /// Reply to `kafka_leave_group`.
        "kafka_leave_group_ok" => KafkaLeaveGroupOk(KafkaErrorCode) : Reply,
        /// Kafka: commit a group's offsets.
        "kafka_offset_commit" => KafkaOffsetCommit(KafkaOffsetCommit) : Broker Write,
        /// Reply to `kafka_offset_commit`.
        "kafka_offset_commit_ok" => KafkaOffsetCommitOk(KafkaOffsetCommitOk) : Reply,
        /// Kafka: a group's committed offsets.
        "kafka_offset_fetch" => KafkaOffsetFetch(KafkaOffsetFetch) : Broker Read,
        /// Reply to `kafka_offset_fetch`.
        "kafka_offset_fetch_ok" => KafkaOffsetFetchOk(KafkaOffsetFetchOk) : Reply,
        /// Reply to `kafka_list_groups`.
        "kafka_list_groups_ok" => KafkaListGroupsOk(KafkaListGroupsOk) : Reply,
        /// Kafka: groups in detail.
        "kafka_describe_groups" => KafkaDescribeGroups(KafkaDescribeGroups) : Broker Read,
        /// Reply to `kafka_describe_groups`.
        "kafka_describe_groups_ok" => KafkaDescribeGroupsOk(KafkaDescribeGroupsOk) : Reply,
        /// Raft, between nodes: a vote request.
        "raft_vote" => RaftVote(RaftVote) : Raft,
        /// Raft, between nodes: a vote answer.
        "raft_vote_result" => RaftVoteResult(RaftVoteResult) : Raft,
        /// Raft, between nodes: replicate entries.
        "raft_append" => RaftAppend(RaftAppend) : Raft,
        /// Raft, between nodes: an append or snapshot answer.
        "raft_append_result" => RaftAppendResult(RaftAppendResult) : Raft,
        /// Raft, between nodes: install a state machine snapshot.
        "raft_snapshot" => RaftSnapshot(RaftSnapshot) : Raft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_codes_match_maelstrom() {
        assert!(!ErrorCode::Timeout.is_definite());
        assert!(!ErrorCode::Crash.is_definite());
        assert!(ErrorCode::TemporarilyUnavailable.is_definite());
        assert_eq!(ErrorCode::TxnConflict.code(), 30);
        assert_eq!(ErrorCode::MalformedRequest.code(), 12);
    }

    #[test]
    fn kinds_are_known_and_unknown_ones_are_not() {
        assert!(Payload::is_known_kind("echo"));
        assert!(Payload::is_known_kind("init_ok"));
        assert!(!Payload::is_known_kind("frobnicate"));
        assert_eq!(Payload::Read.kind(), "read");
        assert_eq!(Payload::Add(Add { delta: 1 }).kind(), "add");
    }
}
