//! Every tunable and every limit of a node, with defaults that suit both Maelstrom and
//! a real broker. Exceeding a limit is an error reply (usually 11), never growth.
//!
//! The `config!` table below is the one definition of each field: its doc, type,
//! default and lower bound. It makes [`Config`], its `Default`, [`Config::FIELDS`]
//! (which drivers turn into flags) and [`Config::set`] (which parses one from text).

use std::fmt;

use crate::Level;

/// One tunable of [`Config`], as drivers show it: `herald serve` makes a flag of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigField {
    /// The field's name (`max_line_bytes`; the flag is `--max-line-bytes`).
    pub name: &'static str,
    /// What it means, one line of its doc comment each.
    pub doc: &'static [&'static str],
}

/// Why a [`Config`] cannot run a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

macro_rules! config {
    ( $( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr $(, at least $min:literal)? ; )* ) => {
        /// A node's configuration. `Config::default()` is a sensible start; drivers
        /// override fields from flags or the environment, then call
        /// [`Config::validate`].
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $( $name: $default, )* }
            }
        }

        impl Config {
            /// Every field, in declaration order.
            pub const FIELDS: &'static [ConfigField] = &[
                $( ConfigField { name: stringify!($name), doc: &[$($doc),*] }, )*
            ];

            /// Sets the field `name` from its text form (a number, or a level name).
            pub fn set(&mut self, name: &str, text: &str) -> Result<(), ConfigError> {
                match name {
                    $( stringify!($name) => {
                        self.$name = text.trim().parse().map_err(|e| ConfigError {
                            field: stringify!($name),
                            reason: format!("{text:?} is not a valid value: {e}"),
                        })?;
                    } )*
                    _ => {
                        return Err(ConfigError {
                            field: "config",
                            reason: format!("no field named {name:?}"),
                        })
                    }
                }
                Ok(())
            }

            /// The field `name`'s value as text (what [`Config::set`] reads back).
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $( stringify!($name) => Some(self.$name.to_string()), )*
                    _ => None,
                }
            }

            /// Checks every field's lower bound and the rules between fields.
            pub fn validate(&self) -> Result<(), ConfigError> {
                $( $(
                    if u64::try_from(self.$name).unwrap_or(u64::MAX) < $min {
                        return Err(ConfigError {
                            field: stringify!($name),
                            reason: format!("must be at least {}, not {}", $min, self.$name),
                        });
                    }
                )? )*
                self.validate_relations()
            }
        }
    };
}

config! {
    /// Seed for the node's PRNG (retry jitter). Drivers log the seed they pick.
    seed: u64 = 0;
    /// Least severe log line the node emits as an effect.
    log_level: Level = Level::Warn;
    /// How long one attempt of a node-to-node request waits for its reply.
    rpc_timeout_ms: u64 = 1_000, at least 1;
    /// Attempts per node-to-node request before it is given up.
    rpc_max_attempts: u32 = 6, at least 1;
    /// Backoff before retry `k` is drawn from `0..=min(cap, base * 2^k)` (full jitter).
    rpc_backoff_base_ms: u64 = 50;
    /// Upper bound of the backoff before any retry.
    rpc_backoff_cap_ms: u64 = 2_000;
    /// Node-to-node requests awaiting a reply at once.
    max_pending_rpcs: usize = 4_096, at least 1;
    /// Replies to write-once client requests remembered (the oldest forgotten first),
    /// and forwarded requests seen (LRU), so a retried one is answered, not redone.
    dedup_capacity: usize = 65_536;
    /// How often gossip (broadcast values, counter state) goes to peers that lag.
    gossip_interval_ms: u64 = 100, at least 1;
    /// Most broadcast values in one gossip message.
    gossip_batch_max: usize = 1_024, at least 1;
    /// Most distinct broadcast values a node keeps.
    max_broadcast_values: usize = 1_000_000;
    /// Longest input line drivers accept, in bytes.
    max_line_bytes: usize = 1 << 20, at least 1;
    /// Most messages in one `poll` or `fetch` reply (also the default `max`).
    max_poll_messages: usize = 10_000, at least 1;
    /// Most keyed logs (Maelstrom kafka `send` keys).
    max_log_keys: usize = 100_000;
    /// Most records held in all logs and topic partitions together.
    max_log_records: usize = 10_000_000;
    /// Retention: each topic partition and keyed log keeps its newest this many
    /// records; older ones are dropped (offsets are never reused).
    max_records_per_log: usize = 1_000_000;
    /// Most topics.
    max_topics: usize = 1_024;
    /// Most partitions in one topic.
    max_partitions: u32 = 256, at least 1;
    /// Most consumer groups.
    max_groups: usize = 1_024;
    /// Most members in one group.
    max_group_members: usize = 1_024;
    /// A group member that sends no heartbeat for this long is removed.
    group_session_timeout_ms: u64 = 10_000, at least 1;
    /// Most queues (dead-letter queues included).
    max_queues: usize = 1_024;
    /// A queue's `max_depth` when `create_queue` gives none (and the highest allowed).
    queue_max_depth: usize = 1_000_000, at least 1;
    /// A queue's visibility timeout when `create_queue` gives none.
    queue_visibility_ms: u64 = 30_000, at least 1;
    /// A queue's dedup window when `create_queue` gives none.
    queue_dedup_window_ms: u64 = 300_000;
    /// Most producer ids a queue remembers inside its dedup window (then error 11).
    queue_max_dedup_ids: usize = 100_000;
    /// Most messages one `dequeue` returns.
    max_dequeue_batch: usize = 1_000, at least 1;
    /// Longest `wait_ms` a `dequeue` may ask for.
    max_wait_ms: u64 = 20_000;
    /// Most `dequeue` requests parked waiting for messages, over all queues.
    max_waiters: usize = 10_000;
    /// (consumer, id) pairs remembered by `processed` (LRU).
    max_processed_ids: usize = 100_000;
    /// Most registered idempotent producers (then `init_producer` answers 11).
    max_producers: usize = 10_000;
    /// Most (producer, stream) sequence windows, all producers together.
    max_producer_streams: usize = 100_000;
    /// A producer that writes nothing for this long is forgotten.
    producer_expiry_ms: u64 = 24 * 3_600_000, at least 1;
    /// Most operations in one `txn` or `prepare`.
    max_txn_ops: usize = 1_000, at least 1;
    /// Most transactions prepared at once (then `prepare` answers 11).
    max_prepared: usize = 1_000;
    /// A prepared transaction neither committed nor aborted by then aborts itself.
    prepared_timeout_ms: u64 = 60_000, at least 1;
    /// Finished two-phase transactions remembered for retried `commit_txn`/`abort_txn`.
    max_txn_outcomes: usize = 1_000;
    /// Kafka: partitions of a topic created because a Metadata or Produce request named
    /// it (0: unknown topics are not created).
    kafka_auto_create_partitions: u32 = 1;
    /// Kafka: the largest record batch a Produce may carry (bigger: MESSAGE_TOO_LARGE).
    kafka_max_batch_bytes: usize = 1 << 20, at least 1;
    /// Kafka groups: the shortest session timeout a member may ask for.
    kafka_min_session_timeout_ms: u64 = 1_000, at least 1;
    /// Kafka groups: the longest session (and rebalance) timeout a member may ask for.
    kafka_max_session_timeout_ms: u64 = 1_800_000, at least 1;
    /// Raft (clusters of more than one node): a follower that hears from no leader for
    /// this long (plus a random part up to as much again) starts an election; a leader
    /// answers reads only while a majority answered it within this long.
    election_timeout_ms: u64 = 500, at least 1;
    /// Raft: how often a leader sends heartbeats (and resends unacknowledged entries).
    heartbeat_interval_ms: u64 = 100, at least 1;
    /// Raft: most entries in one append message.
    max_append_entries: usize = 256, at least 1;
    /// Raft: a leader refuses new requests (11) while this many entries are not
    /// committed yet.
    max_uncommitted_entries: usize = 10_000, at least 1;
    /// Raft: the log keeps at most about this many entries; older applied ones are
    /// dropped, and a follower that still needs them gets a snapshot instead.
    max_raft_log_entries: usize = 100_000, at least 1;
}

impl Config {
    fn validate_relations(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms >= self.election_timeout_ms {
            return Err(ConfigError {
                field: "heartbeat_interval_ms",
                reason: format!(
                    "must be less than election_timeout_ms ({}), not {}: followers would \
                     start elections between heartbeats",
                    self.election_timeout_ms, self.heartbeat_interval_ms
                ),
            });
        }
        if self.rpc_backoff_base_ms > self.rpc_backoff_cap_ms {
            return Err(ConfigError {
                field: "rpc_backoff_base_ms",
                reason: format!(
                    "must be at most rpc_backoff_cap_ms ({}), not {}",
                    self.rpc_backoff_cap_ms, self.rpc_backoff_base_ms
                ),
            });
        }
        if self.kafka_min_session_timeout_ms > self.kafka_max_session_timeout_ms {
            return Err(ConfigError {
                field: "kafka_min_session_timeout_ms",
                reason: format!(
                    "must be at most kafka_max_session_timeout_ms ({}), not {}",
                    self.kafka_max_session_timeout_ms, self.kafka_min_session_timeout_ms
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_every_field_reads_back() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        let mut copy = Config {
            seed: 1,
            ..Config::default()
        };
        for field in Config::FIELDS {
            let text = config.get(field.name).expect("every field has a value");
            copy.set(field.name, &text).expect("its own text parses");
            assert!(!field.doc.is_empty(), "{} has a doc", field.name);
        }
        assert_eq!(copy, config);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let mut config = Config::default();
        let err = config.set("max_line_bytes", "lots").unwrap_err();
        assert_eq!(err.field, "max_line_bytes");
        assert_eq!(
            config.set("no_such_field", "1").unwrap_err().field,
            "config"
        );
        config.set("rpc_max_attempts", "0").unwrap();
        assert_eq!(config.validate().unwrap_err().field, "rpc_max_attempts");
        let config = Config {
            heartbeat_interval_ms: 500,
            election_timeout_ms: 500,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, "heartbeat_interval_ms");
        assert!(
            err.to_string().contains("less than election_timeout_ms"),
            "{err}"
        );
        let config = Config {
            rpc_backoff_base_ms: 10,
            rpc_backoff_cap_ms: 5,
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "rpc_backoff_base_ms");
        let mut config = Config::default();
        config.set("log_level", "debug").unwrap();
        assert_eq!(config.log_level, Level::Debug);
    }
}
