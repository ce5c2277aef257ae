//! Every tunable and every limit of a node, with defaults that suit both Maelstrom and
//! a real broker. Exceeding a limit is an error reply (usually 11), never growth.

use crate::Level;

/// A node's configuration. `Config::default()` is a sensible start; drivers override
/// fields from flags or the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seed for the node's PRNG (retry jitter). Drivers log the seed they pick.
    pub seed: u64,
    /// Least severe log record the node emits as an effect.
    pub log_level: Level,
    /// How long one attempt of a node-to-node request waits for its reply.
    pub rpc_timeout_ms: u64,
    /// Attempts per node-to-node request before it is given up (at least 1).
    pub rpc_max_attempts: u32,
    /// Backoff before retry `k` is drawn from `0..=min(cap, base * 2^k)` (full jitter).
    pub rpc_backoff_base_ms: u64,
    /// Upper bound of the backoff before any retry.
    pub rpc_backoff_cap_ms: u64,
    /// Node-to-node requests awaiting a reply at once.
    pub max_pending_rpcs: usize,
    /// Client requests remembered (LRU) so a retried one is answered, not redone.
    pub dedup_capacity: usize,
    /// How often gossip (broadcast values, counter state) goes to peers that lag.
    pub gossip_interval_ms: u64,
    /// Most broadcast values in one gossip message.
    pub gossip_batch_max: usize,
    /// Most distinct broadcast values a node keeps.
    pub max_broadcast_values: usize,
    /// Longest input line drivers accept, in bytes.
    pub max_line_bytes: usize,
    /// Most messages in one `poll` or `fetch` reply (also the default `max`).
    pub max_poll_messages: usize,
    /// Most keyed logs (Maelstrom kafka `send` keys).
    pub max_log_keys: usize,
    /// Most records held in all logs and topic partitions together.
    pub max_log_records: usize,
    /// Retention: each topic partition and keyed log keeps its newest this many
    /// records; older ones are dropped (offsets are never reused).
    pub max_records_per_log: usize,
    /// Most topics.
    pub max_topics: usize,
    /// Most partitions in one topic.
    pub max_partitions: u32,
    /// Most consumer groups.
    pub max_groups: usize,
    /// Most members in one group.
    pub max_group_members: usize,
    /// A group member that sends no heartbeat for this long is removed.
    pub group_session_timeout_ms: u64,
    /// Most queues (dead-letter queues included).
    pub max_queues: usize,
    /// A queue's `max_depth` when `create_queue` gives none (and the highest allowed).
    pub queue_max_depth: usize,
    /// A queue's visibility timeout when `create_queue` gives none.
    pub queue_visibility_ms: u64,
    /// A queue's dedup window when `create_queue` gives none.
    pub queue_dedup_window_ms: u64,
    /// Most producer ids a queue remembers inside its dedup window (then error 11).
    pub queue_max_dedup_ids: usize,
    /// Most messages one `dequeue` returns.
    pub max_dequeue_batch: usize,
    /// Longest `wait_ms` a `dequeue` may ask for.
    pub max_wait_ms: u64,
    /// Most `dequeue` requests parked waiting for messages, over all queues.
    pub max_waiters: usize,
    /// (consumer, id) pairs remembered by `processed` (LRU).
    pub max_processed_ids: usize,
    /// Most registered idempotent producers (then `init_producer` answers 11).
    pub max_producers: usize,
    /// Most (producer, stream) sequence windows, all producers together.
    pub max_producer_streams: usize,
    /// A producer that writes nothing for this long is forgotten.
    pub producer_expiry_ms: u64,
    /// Most operations in one `txn` or `prepare`.
    pub max_txn_ops: usize,
    /// Most transactions prepared at once (then `prepare` answers 11).
    pub max_prepared: usize,
    /// A prepared transaction neither committed nor aborted by then aborts itself.
    pub prepared_timeout_ms: u64,
    /// Finished two-phase transactions remembered for retried `commit_txn`/`abort_txn`.
    pub max_txn_outcomes: usize,
    /// Raft (clusters of more than one node): a follower that hears from no leader for
    /// this long (plus a random part up to as much again) starts an election; a leader
    /// answers reads only while a majority answered it within this long.
    pub election_timeout_ms: u64,
    /// Raft: how often a leader sends heartbeats (and resends unacknowledged entries).
    pub heartbeat_interval_ms: u64,
    /// Raft: most entries in one append message.
    pub max_append_entries: usize,
    /// Raft: a leader refuses new requests (11) while this many entries are not
    /// committed yet.
    pub max_uncommitted_entries: usize,
    /// Raft: the log keeps at most about this many entries; older applied ones are
    /// dropped, and a follower that still needs them gets a snapshot instead.
    pub max_raft_log_entries: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            log_level: Level::Warn,
            rpc_timeout_ms: 1_000,
            rpc_max_attempts: 6,
            rpc_backoff_base_ms: 50,
            rpc_backoff_cap_ms: 2_000,
            max_pending_rpcs: 4_096,
            dedup_capacity: 65_536,
            gossip_interval_ms: 100,
            gossip_batch_max: 1_024,
            max_broadcast_values: 1_000_000,
            max_line_bytes: 1 << 20,
            max_poll_messages: 10_000,
            max_log_keys: 100_000,
            max_log_records: 10_000_000,
            max_records_per_log: 1_000_000,
            max_topics: 1_024,
            max_partitions: 256,
            max_groups: 1_024,
            max_group_members: 1_024,
            group_session_timeout_ms: 10_000,
            max_queues: 1_024,
            queue_max_depth: 1_000_000,
            queue_visibility_ms: 30_000,
            queue_dedup_window_ms: 300_000,
            queue_max_dedup_ids: 100_000,
            max_dequeue_batch: 1_000,
            max_wait_ms: 20_000,
            max_waiters: 10_000,
            max_processed_ids: 100_000,
            max_producers: 10_000,
            max_producer_streams: 100_000,
            producer_expiry_ms: 24 * 3_600_000,
            max_txn_ops: 1_000,
            max_prepared: 1_000,
            prepared_timeout_ms: 60_000,
            max_txn_outcomes: 1_000,
            election_timeout_ms: 500,
            heartbeat_interval_ms: 100,
            max_append_entries: 256,
            max_uncommitted_entries: 10_000,
            max_raft_log_entries: 100_000,
        }
    }
}
