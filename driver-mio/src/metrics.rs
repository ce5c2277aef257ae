//! Prometheus metrics, served on `--metrics-addr` as `GET /metrics` in the
//! OpenMetrics text format (docs/operations.md lists every metric).
//!
//! The loop updates counters and histograms as it works: requests by type and
//! outcome, their latency from the read of the request to the write of its reply
//! (after the log is synced, so fsync is included; a long poll's wait too), bytes,
//! the write-ahead log's appends and fsyncs, snapshots. Gauges of what the node holds
//! (queues, consumer groups' lag, Raft) are read from the node when scraped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use herald_core::wire::msg::Payload;
use herald_core::NodeMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Requests awaiting their reply whose latency is measured; beyond this many, a
/// request is counted with outcome `unmeasured` when it arrives.
pub const MAX_MEASURED_REQUESTS: usize = 100_000;
/// Series of one state metric (queues, groups' partitions) in one scrape; the rest
/// are left out and counted in `herald_metrics_series_left_out`.
pub const MAX_SERIES_PER_METRIC: usize = 10_000;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    /// The JSON-lines listener, clients.
    Json,
    /// The JSON-lines listener, another node of the cluster.
    Peer,
    /// The Kafka listener.
    Kafka,
    /// The metrics listener.
    Metrics,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Json => "json",
            Listener::Peer => "peer",
            Listener::Kafka => "kafka",
            Listener::Metrics => "metrics",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    mechanism: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    r#type: &'static str,
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    listener: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    protocol: &'static str,
    group: String,
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    metric: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs to 3.3 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// The write-ahead log's timings, kept by [`crate::wal::Wal`].
#[derive(Clone, Debug)]
pub struct WalMetrics {
    /// Seconds per write of a round's records to the log file.
    pub append_seconds: Histogram,
    /// Seconds per `fdatasync` of the log.
    pub fsync_seconds: Histogram,
}

/// A request awaiting its reply.
#[derive(Clone, Copy, Debug)]
struct Started {
    listener: Listener,
    kind: &'static str,
    at: Instant,
}

/// What the loop counts, and the requests whose latency it measures.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<TypeLabels>,
    received_bytes: Family<ListenerLabels, Counter>,
    sent_bytes: Family<ListenerLabels, Counter>,
    accepted: Family<ListenerLabels, Counter>,
    refused: Counter,
    authentications: Family<AuthLabels, Counter>,
    access_denied: Family<ListenerLabels, Counter>,
    wal: WalMetrics,
    snapshot_seconds: Histogram,
    snapshot_bytes: Gauge,
    /// (connection key, msg_id) → when it arrived.
    started: BTreeMap<(usize, u64), Started>,
    /// Answered this round, observed once the replies are written.
    answered: Vec<(Started, Cow<'static, str>)>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
            received_bytes: Family::default(),
            sent_bytes: Family::default(),
            accepted: Family::default(),
            refused: Counter::default(),
            authentications: Family::default(),
            access_denied: Family::default(),
            wal: WalMetrics {
                append_seconds: latency_buckets(),
                fsync_seconds: latency_buckets(),
            },
            // 10 ms to 41 s, doubling.
            snapshot_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 13)),
            snapshot_bytes: Gauge::default(),
            started: BTreeMap::new(),
            answered: Vec::new(),
        }
    }
}

impl Metrics {
    /// The log's histograms, for [`crate::wal::Wal::set_metrics`].
    pub fn wal(&self) -> WalMetrics {
        self.wal.clone()
    }

    /// Request `msg_id` of type `kind` arrived on connection `key`.
    pub fn request(&mut self, key: usize, msg_id: u64, listener: Listener, kind: &'static str) {
        let started = Started {
            listener,
            kind,
            at: Instant::now(),
        };
        if self.started.len() < MAX_MEASURED_REQUESTS {
            self.started.insert((key, msg_id), started);
        } else {
            self.count(started, Cow::Borrowed("unmeasured"));
        }
    }

    /// The reply to request `msg_id` of connection `key` is queued to be written.
    pub fn reply(&mut self, key: usize, msg_id: u64, reply: &Payload) {
        let Some(started) = self.started.remove(&(key, msg_id)) else {
            return; // not a measured request (a peer's, or a repeat of an id)
        };
        let outcome = match reply {
            Payload::Error(e) => Cow::Owned(format!("error_{}", e.code)),
            _ => Cow::Borrowed("ok"),
        };
        self.answered.push((started, outcome));
    }

    /// The round's replies are written (the log synced before): their latency ends.
    pub fn replies_written(&mut self) {
        let now = Instant::now();
        for (started, outcome) in std::mem::take(&mut self.answered) {
            let labels = TypeLabels {
                listener: started.listener.as_str(),
                r#type: started.kind,
            };
            let seconds = now.duration_since(started.at).as_secs_f64();
            self.request_seconds.get_or_create(&labels).observe(seconds);
            self.count(started, outcome);
        }
    }

    fn count(&self, started: Started, outcome: Cow<'static, str>) {
        let labels = RequestLabels {
            listener: started.listener.as_str(),
            r#type: started.kind,
            outcome,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Connection `key` closed: its requests will get no reply.
    pub fn closed(&mut self, key: usize) {
        let gone: Vec<(usize, u64)> = (self.started.range((key, 0)..=(key, u64::MAX)))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.started.remove(&k);
        }
    }

    /// A connection was accepted on `listener`.
    pub fn accepted(&self, listener: Listener) {
        let labels = ListenerLabels {
            listener: listener.as_str(),
        };
        self.accepted.get_or_create(&labels).inc();
    }

    /// A connection was refused: the connection limit was reached.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// An authentication with `mechanism` (`plain`, `scram-sha-256`) ended with
    /// `outcome`: `ok`, `failed` (a wrong user or password) or `backoff` (refused
    /// unchecked: its address must wait after failures).
    pub fn authentication(&self, mechanism: &'static str, outcome: &'static str) {
        let labels = AuthLabels { mechanism, outcome };
        self.authentications.get_or_create(&labels).inc();
    }

    /// A request on `listener` was refused: its user's rules do not allow it.
    pub fn access_denied(&self, listener: Listener) {
        let labels = ListenerLabels {
            listener: listener.as_str(),
        };
        self.access_denied.get_or_create(&labels).inc();
    }

    /// `bytes` read from a connection of `listener`.
    pub fn received(&self, listener: Listener, bytes: usize) {
        let labels = ListenerLabels {
            listener: listener.as_str(),
        };
        self.received_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    /// `bytes` written to a connection of `listener`.
    pub fn sent(&self, listener: Listener, bytes: usize) {
        let labels = ListenerLabels {
            listener: listener.as_str(),
        };
        self.sent_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// A snapshot of `bytes` took `seconds` to build and write.
    pub fn snapshot(&self, seconds: f64, bytes: u64) {
        self.snapshot_seconds.observe(seconds);
        self.snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The exposition: every metric, with the node's state as `node` says and the
    /// open connections per listener.
    pub fn render(&self, node: &NodeMetrics, connections: &BTreeMap<Listener, usize>) -> String {
        let mut r = Registry::default();
        self.register_loop_metrics(&mut r);
        let open: Family<ListenerLabels, Gauge> = Family::default();
        for (listener, &n) in connections {
            let labels = ListenerLabels {
                listener: listener.as_str(),
            };
            open.get_or_create(&labels).set(n as i64);
        }
        r.register("herald_connections", "Open connections", open);
        let left_out = Family::<MetricLabels, Gauge>::default();
        register_queues(&mut r, node, &left_out);
        register_lag(&mut r, node, &left_out);
        r.register(
            "herald_metrics_series_left_out",
            "Series left out of this scrape, over the limit per metric",
            left_out,
        );
        register_raft(&mut r, node);
        let mut text = String::new();
        encode(&mut text, &r).expect("writing to a String cannot fail");
        text
    }

    fn register_loop_metrics(&self, r: &mut Registry) {
        r.register(
            "herald_requests",
            "Requests answered, by listener, type and outcome (ok, error_<code>)",
            self.requests.clone(),
        );
        r.register(
            "herald_request_duration_seconds",
            "From a request's read to its reply's write (fsync and long-poll waits included)",
            self.request_seconds.clone(),
        );
        r.register(
            "herald_received_bytes",
            "Bytes read from connections",
            self.received_bytes.clone(),
        );
        r.register(
            "herald_sent_bytes",
            "Bytes written to connections",
            self.sent_bytes.clone(),
        );
        r.register(
            "herald_connections_accepted",
            "Connections accepted",
            self.accepted.clone(),
        );
        r.register(
            "herald_connections_refused",
            "Connections refused at the connection limit",
            self.refused.clone(),
        );
        r.register(
            "herald_authentications",
            "Authentications, by mechanism and outcome (ok, failed, backoff)",
            self.authentications.clone(),
        );
        r.register(
            "herald_access_denied",
            "Requests refused by their user's access rules",
            self.access_denied.clone(),
        );
        r.register(
            "herald_wal_append_seconds",
            "Write of one round's records to the write-ahead log",
            self.wal.append_seconds.clone(),
        );
        r.register(
            "herald_wal_fsync_seconds",
            "One fdatasync of the write-ahead log",
            self.wal.fsync_seconds.clone(),
        );
        r.register(
            "herald_snapshot_seconds",
            "Building and writing one snapshot (in the background)",
            self.snapshot_seconds.clone(),
        );
        r.register(
            "herald_snapshot_bytes",
            "Size of the last snapshot",
            self.snapshot_bytes.clone(),
        );
    }
}

/// Counts how many of `items` are over the per-metric limit under `metric`, and
/// yields the rest.
fn limited<'a, T>(
    items: &'a [T],
    metric: &'static str,
    left_out: &Family<MetricLabels, Gauge>,
) -> &'a [T] {
    let kept = items.len().min(MAX_SERIES_PER_METRIC);
    if kept < items.len() {
        let labels = MetricLabels { metric };
        left_out
            .get_or_create(&labels)
            .set((items.len() - kept) as i64);
    }
    &items[..kept]
}

fn register_queues(r: &mut Registry, node: &NodeMetrics, left_out: &Family<MetricLabels, Gauge>) {
    let messages = Family::<QueueStateLabels, Gauge>::default();
    let oldest = Family::<QueueLabels, Gauge>::default();
    let dead = Family::<QueueLabels, Counter>::default();
    let enqueued = Family::<QueueLabels, Counter>::default();
    let acked = Family::<QueueLabels, Counter>::default();
    let expired = Family::<QueueLabels, Counter>::default();
    for (name, s) in limited(&node.broker.queues, "herald_queue_messages", left_out) {
        for (state, n) in [
            ("ready", s.ready),
            ("in_flight", s.in_flight),
            ("delayed", s.delayed),
        ] {
            let labels = QueueStateLabels {
                queue: name.clone(),
                state,
            };
            messages.get_or_create(&labels).set(n as i64);
        }
        let q = QueueLabels {
            queue: name.clone(),
        };
        oldest
            .get_or_create(&q)
            .set((s.oldest_age_ms / 1000) as i64);
        dead.get_or_create(&q).inc_by(s.dead_lettered);
        enqueued.get_or_create(&q).inc_by(s.enqueued);
        acked.get_or_create(&q).inc_by(s.acked);
        expired.get_or_create(&q).inc_by(s.expired);
    }
    r.register(
        "herald_queue_messages",
        "Messages a queue holds, by state (ready, in_flight: delivered and not acked, delayed)",
        messages,
    );
    r.register(
        "herald_queue_oldest_age_seconds",
        "Age of the oldest message a queue holds (0 when empty)",
        oldest,
    );
    r.register(
        "herald_queue_dead_lettered",
        "Messages moved to the dead-letter queue",
        dead,
    );
    r.register(
        "herald_queue_enqueued",
        "Messages enqueued (duplicates not counted)",
        enqueued,
    );
    r.register("herald_queue_acked", "Deliveries acknowledged", acked);
    r.register(
        "herald_queue_expired",
        "Messages dropped by TTL or retention",
        expired,
    );
}

fn register_lag(r: &mut Registry, node: &NodeMetrics, left_out: &Family<MetricLabels, Gauge>) {
    let lag = Family::<LagLabels, Gauge>::default();
    for g in limited(&node.broker.group_lag, "herald_group_lag", left_out) {
        let labels = LagLabels {
            protocol: g.protocol,
            group: g.group.clone(),
            topic: g.topic.clone(),
            partition: g.partition,
        };
        lag.get_or_create(&labels)
            .set(i64::try_from(g.lag).unwrap_or(i64::MAX));
    }
    r.register(
        "herald_group_lag",
        "Records between a consumer group's committed offset and a partition's end (protocol: herald or kafka)",
        lag,
    );
}

fn register_raft(r: &mut Registry, node: &NodeMetrics) {
    let Some(c) = &node.cluster else {
        return; // a single node: no Raft
    };
    let gauge = |v: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    r.register("herald_raft_term", "The node's Raft term", gauge(c.term));
    r.register(
        "herald_raft_commit_index",
        "Raft entries known committed",
        gauge(c.commit_index),
    );
    r.register(
        "herald_raft_applied_index",
        "Raft entries applied to this node's broker",
        gauge(c.applied_index),
    );
    r.register(
        "herald_raft_last_index",
        "The last entry of this node's Raft log",
        gauge(c.last_index),
    );
    let role = Family::<RoleLabels, Gauge>::default();
    for name in ["leader", "follower", "pre_candidate", "candidate"] {
        let labels = RoleLabels { role: name };
        role.get_or_create(&labels).set(i64::from(name == c.role));
    }
    r.register(
        "herald_raft_role",
        "1 for the node's Raft role, else 0",
        role,
    );
    let changes: Counter = Counter::default();
    changes.inc_by(c.leader_changes);
    r.register(
        "herald_raft_leader_changes",
        "Times the leader this node knows of changed since it started",
        changes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::wire::msg::{ErrorBody, QueueStats};
    use herald_core::{BrokerMetrics, ClusterStatus, GroupLag};

    fn node() -> NodeMetrics {
        NodeMetrics {
            broker: BrokerMetrics {
                queues: vec![(
                    "jobs".into(),
                    QueueStats {
                        depth: 5,
                        ready: 3,
                        in_flight: 2,
                        dead_lettered: 1,
                        enqueued: 9,
                        acked: 4,
                        ..QueueStats::default()
                    },
                )],
                group_lag: vec![GroupLag {
                    protocol: "kafka",
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 2,
                    lag: 7,
                }],
            },
            cluster: Some(ClusterStatus {
                term: 3,
                leader: Some("n1".into()),
                commit_index: 10,
                applied_index: 9,
                last_index: 11,
                compacted_index: 0,
                role: "leader",
                leader_changes: 2,
            }),
        }
    }

    #[test]
    fn the_exposition_has_the_counts_and_the_state() {
        let mut m = Metrics::default();
        m.request(1, 7, Listener::Json, "enqueue");
        m.request(1, 8, Listener::Json, "enqueue");
        m.reply(1, 7, &Payload::ListQueues);
        let busy = ErrorBody::new(herald_core::ErrorCode::TemporarilyUnavailable, "x");
        m.reply(1, 8, &Payload::Error(busy));
        m.reply(1, 9, &Payload::ListQueues); // never asked: not counted
        m.replies_written();
        m.received(Listener::Json, 100);
        m.authentication("scram-sha-256", "failed");
        m.access_denied(Listener::Kafka);
        let conns = BTreeMap::from([(Listener::Json, 4)]);
        let text = m.render(&node(), &conns);
        for line in [
            r#"herald_requests_total{listener="json",type="enqueue",outcome="ok"} 1"#,
            r#"herald_requests_total{listener="json",type="enqueue",outcome="error_11"} 1"#,
            r#"herald_request_duration_seconds_count{listener="json",type="enqueue"} 2"#,
            r#"herald_received_bytes_total{listener="json"} 100"#,
            r#"herald_authentications_total{mechanism="scram-sha-256",outcome="failed"} 1"#,
            r#"herald_access_denied_total{listener="kafka"} 1"#,
            r#"herald_connections{listener="json"} 4"#,
            r#"herald_queue_messages{queue="jobs",state="in_flight"} 2"#,
            r#"herald_queue_dead_lettered_total{queue="jobs"} 1"#,
            r#"herald_group_lag{protocol="kafka",group="g",topic="t",partition="2"} 7"#,
            r#"herald_raft_term 3"#,
            r#"herald_raft_role{role="leader"} 1"#,
            r#"herald_raft_role{role="follower"} 0"#,
            r#"herald_raft_leader_changes_total 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn past_the_limit_requests_are_counted_unmeasured_and_a_close_forgets_them() {
        let mut m = Metrics::default();
        for id in 0..MAX_MEASURED_REQUESTS as u64 {
            m.request(1, id, Listener::Kafka, "kafka_produce");
        }
        m.request(2, 0, Listener::Kafka, "kafka_produce");
        m.closed(1);
        assert!(m.started.is_empty());
        let text = m.render(&NodeMetrics::default(), &BTreeMap::new());
        let line = r#"herald_requests_total{listener="kafka",type="kafka_produce",outcome="unmeasured"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
    }

    #[test]
    fn queues_past_the_series_limit_are_left_out_and_counted() {
        let mut node = NodeMetrics::default();
        let queue = |i| (format!("q{i:05}"), QueueStats::default());
        node.broker.queues = (0..MAX_SERIES_PER_METRIC + 3).map(queue).collect();
        let text = Metrics::default().render(&node, &BTreeMap::new());
        let line = r#"herald_metrics_series_left_out{metric="herald_queue_messages"} 3"#;
        assert!(text.lines().any(|l| l == line));
        let ready = (text.lines()).filter(|l| l.ends_with(r#"state="ready"} 0"#));
        assert_eq!(ready.count(), MAX_SERIES_PER_METRIC);
    }
}
