//! Access control: what each request needs (read, write or admin on named queues,
//! topics, keyed logs, groups and prepared transactions), and the rules that grant it.
//!
//! A rule is `ACCESS PATTERN`: `read queue:jobs`, `write topic:orders.*` (a trailing
//! `*` matches any rest), `admin *`. `admin` grants `write` and `read` too; `write`
//! does not grant `read` (a producer need not consume). A user has the rules given
//! to it and nothing else.

use std::fmt;

use herald_core::wire::msg::Payload;

/// What a request does to a resource.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Reads or consumes (poll, dequeue, ack, fetch, stats).
    Read,
    /// Adds (send, publish, enqueue).
    Write,
    /// Creates, deletes, redrives, finishes prepared transactions.
    Admin,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// True if holding `self` grants `wanted`.
    fn grants(self, wanted: Access) -> bool {
        self == wanted || self == Access::Admin
    }
}

/// One grant: an access on the resources a pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    access: Access,
    pattern: String,
}

/// Longest pattern of a rule, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;
/// Most rules one user may have.
pub const MAX_RULES_PER_USER: usize = 256;

impl Rule {
    /// Parses `ACCESS PATTERN`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let usage = || {
            format!(
                "rule {text:?}: expected ACCESS PATTERN, ACCESS one of read, write, admin; \
                 PATTERN `*` or KIND:NAME with KIND one of {} (a trailing * matches any rest)",
                KINDS.join(", ")
            )
        };
        let (access, pattern) = text.trim().split_once(' ').ok_or_else(usage)?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            "admin" => Access::Admin,
            _ => return Err(usage()),
        };
        let pattern = pattern.trim();
        let kind_ok = pattern == "*"
            || pattern
                .split_once(':')
                .is_some_and(|(kind, _)| KINDS.contains(&kind));
        if !kind_ok || pattern.len() > MAX_PATTERN_BYTES {
            return Err(usage());
        }
        Ok(Rule {
            access,
            pattern: pattern.to_owned(),
        })
    }

    fn matches(&self, wanted: Access, resource: &str) -> bool {
        let name_ok = match self.pattern.strip_suffix('*') {
            Some(prefix) => resource.starts_with(prefix),
            None => resource == self.pattern,
        };
        name_ok && self.access.grants(wanted)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.access.as_str(), self.pattern)
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        let text = String::deserialize(d)?;
        Rule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The kinds of resources rules name.
const KINDS: [&str; 5] = ["queue", "topic", "log", "group", "txn"];

/// A refusal: who wanted what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The access wanted.
    pub access: Access,
    /// The resource, `kind:name` (`*` for a request on the node itself).
    pub resource: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.access.as_str(), self.resource)
    }
}

/// Checks every access `payload` needs against `rules`: the first one missing.
pub fn check(rules: &[Rule], payload: &Payload) -> Result<(), Denied> {
    let mut needed = Vec::new();
    needs(payload, &mut needed);
    for (access, resource) in needed {
        if !rules.iter().any(|r| r.matches(access, &resource)) {
            return Err(Denied { access, resource });
        }
    }
    Ok(())
}

/// Appends what `payload` needs. Requests on no named resource (listing, status,
/// the Maelstrom workloads' reads) need none; a kind not listed needs `admin *`.
fn needs(payload: &Payload, out: &mut Vec<(Access, String)>) {
    use Access::{Admin, Read, Write};
    use Payload as P;
    let mut on = |access, kind: &str, name: &str| out.push((access, format!("{kind}:{name}")));
    match payload {
        P::Echo(_) | P::Status | P::Generate | P::Read | P::Broadcast(_) | P::Add(_) => {}
        P::ListQueues | P::ListTopics | P::CancelWaits | P::InitProducer(_) | P::Processed(_) => {}
        P::Send(s) => on(Write, "log", &s.key),
        P::Poll(p) => p.offsets.keys().for_each(|k| on(Read, "log", k)),
        P::CommitOffsets(c) => c.offsets.keys().for_each(|k| on(Read, "log", k)),
        P::ListCommittedOffsets(l) => l.keys.iter().for_each(|k| on(Read, "log", k)),
        P::CreateTopic(t) => on(Admin, "topic", &t.topic),
        P::DeleteTopic(t) => on(Admin, "topic", &t.topic),
        P::Publish(p) => on(Write, "topic", &p.topic),
        P::Join(m) | P::Heartbeat(m) | P::Leave(m) => {
            on(Read, "group", &m.group);
            if let Some(topic) = &m.topic {
                on(Read, "topic", topic);
            }
        }
        P::Fetch(f) => on(Read, "group", &f.group),
        P::Commit(c) => on(Read, "group", &c.group),
        P::CreateQueue(q) => {
            on(Admin, "queue", &q.queue);
            if let Some(dlq) = &q.dead_letter {
                on(Admin, "queue", dlq);
            }
        }
        P::Enqueue(e) => on(Write, "queue", &e.queue),
        P::Dequeue(d) => on(Read, "queue", &d.queue),
        P::Ack(r) | P::Nack(r) | P::Extend(r) => on(Read, "queue", &r.queue),
        P::Stats(q) => on(Read, "queue", &q.queue),
        P::Redrive(r) => {
            on(Admin, "queue", &r.queue);
            on(Admin, "queue", &r.to);
        }
        P::CommitTxn(t) | P::AbortTxn(t) => on(Admin, "txn", &t.txid),
        P::ListPrepared => on(Admin, "txn", "*"),
        P::KafkaProduce(p) => on(Write, "topic", &p.topic),
        P::KafkaFetch(f) => f
            .partitions
            .iter()
            .for_each(|p| on(Read, "topic", &p.topic)),
        P::KafkaListOffsets(l) => l
            .partitions
            .iter()
            .for_each(|p| on(Read, "topic", &p.topic)),
        // Naming a topic that does not exist creates it: as producing would.
        P::KafkaMetadata(m) if m.auto_create => m
            .topics
            .iter()
            .flatten()
            .for_each(|t| on(Write, "topic", t)),
        P::KafkaMetadata(_) | P::KafkaListGroups => {}
        P::KafkaJoinGroup(g) => on(Read, "group", &g.group),
        P::KafkaSyncGroup(g) => on(Read, "group", &g.group),
        P::KafkaHeartbeat(g) => on(Read, "group", &g.group),
        P::KafkaLeaveGroup(g) => on(Read, "group", &g.group),
        P::KafkaOffsetFetch(g) => on(Read, "group", &g.group),
        P::KafkaDescribeGroups(d) => d.groups.iter().for_each(|g| on(Read, "group", g)),
        P::KafkaOffsetCommit(c) => {
            on(Read, "group", &c.group);
            c.offsets.iter().for_each(|o| on(Read, "topic", &o.topic));
        }
        P::Txn(t) => t.ops.iter().for_each(|op| needs(op, out)),
        P::Prepare(p) => p.ops.iter().for_each(|op| needs(op, out)),
        _ => out.push((Admin, "*".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::wire::msg::{Dequeue, Receipt, Txn};

    fn rules(texts: &[&str]) -> Vec<Rule> {
        texts.iter().map(|t| Rule::parse(t).unwrap()).collect()
    }

    fn ack(queue: &str) -> Payload {
        Payload::Ack(Receipt {
            queue: queue.into(),
            receipt: "0.0".into(),
            delay_ms: None,
            visibility_ms: None,
        })
    }

    #[test]
    fn a_reader_of_one_queue_cannot_ack_on_another_nor_write() {
        let r = rules(&["read queue:a", "write topic:orders.*"]);
        assert_eq!(check(&r, &ack("a")), Ok(()));
        let denied = check(&r, &ack("b")).unwrap_err();
        assert_eq!(denied.to_string(), "read queue:b");
        let enqueue = Payload::Enqueue(herald_core::wire::msg::Enqueue {
            queue: "a".into(),
            ..Default::default()
        });
        assert_eq!(
            check(&r, &enqueue).unwrap_err().to_string(),
            "write queue:a"
        );
        assert!(check(&r, &Payload::ListQueues).is_ok());
    }

    #[test]
    fn prefixes_admin_and_transactions() {
        let r = rules(&["write topic:orders.*", "admin queue:jobs"]);
        let publish = |topic: &str| {
            Payload::Publish(herald_core::wire::msg::Publish {
                topic: topic.into(),
                ..Default::default()
            })
        };
        assert!(check(&r, &publish("orders.eu")).is_ok());
        assert!(check(&r, &publish("order")).is_err());
        let dequeue = Payload::Dequeue(Dequeue {
            queue: "jobs".into(),
            max: None,
            visibility_ms: None,
            wait_ms: None,
        });
        assert!(check(&r, &dequeue).is_ok(), "admin grants read");
        let txn = Payload::Txn(Txn {
            ops: vec![dequeue, ack("other")],
        });
        assert_eq!(check(&r, &txn).unwrap_err().to_string(), "read queue:other");
        assert_eq!(
            check(&r, &Payload::ListPrepared).unwrap_err().to_string(),
            "admin txn:*"
        );
        assert!(check(&rules(&["admin *"]), &Payload::ListPrepared).is_ok());
    }

    #[test]
    fn rules_parse_strictly_and_print_back() {
        for bad in ["read", "read stuff", "delete queue:a", "read bucket:a", ""] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
        let r = Rule::parse("  write queue:a*  ").unwrap();
        assert_eq!(r.to_string(), "write queue:a*");
    }
}
