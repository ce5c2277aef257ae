//! The consumer-group APIs: FindCoordinator (answered here: this broker coordinates
//! every group), and JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups and DescribeGroups, which the broker's group coordinator
//! runs (`kafka_*` requests).

use bytes::Bytes;
use herald_core::wire::msg::{
    KafkaAssignment, KafkaCommittedOffset, KafkaDescribeGroups, KafkaHeartbeat, KafkaJoinGroup,
    KafkaLeaveGroup, KafkaOffsetCommit, KafkaOffsetFetch, KafkaProtocol, KafkaSyncGroup,
};
use herald_core::Payload;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;

use super::{
    by_topic, decoded, error_of, kafka_code as herald_to_kafka, respond, text, Pending, Step,
};
use crate::session::{Header, SessionConfig};

/// Kafka's "group coordinator not available": the broker could not take the request.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// What a group request remembers while the coordinator answers.
pub(crate) enum GroupPending {
    /// The protocol type joined with.
    Join(String),
    Sync,
    Heartbeat,
    /// The members that asked to leave (v3+ answers each).
    Leave(Vec<String>),
    OffsetCommit,
    OffsetFetch,
    ListGroups,
    DescribeGroups,
}

/// FindCoordinator: this broker, for every key (v4 asks for several at once).
pub(super) fn find_coordinator(config: &SessionConfig, v: i16, r: FindCoordinatorRequest) -> Step {
    let node = BrokerId(config.node_id);
    let host = text(config.advertised_host.clone());
    let mut response = FindCoordinatorResponse::default();
    if v < 4 {
        response.node_id = node;
        response.host = host.clone();
        response.port = config.advertised_port;
    } else {
        response.coordinators = (r.coordinator_keys.iter())
            .map(|key| {
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(config.advertised_port)
            })
            .collect();
    }
    respond(v, &response)
}

/// Decodes a group request and asks the coordinator.
pub(super) fn start(header: &Header, key: ApiKey, body: Bytes) -> Step {
    let v = header.version;
    let ask = |payload, pending| Step::Ask(vec![payload], Pending::Group(pending));
    match key {
        ApiKey::JoinGroup => decoded(body, v, |r: JoinGroupRequest| {
            let protocol_type = r.protocol_type.to_string();
            ask(join(header, v, r), GroupPending::Join(protocol_type))
        }),
        ApiKey::SyncGroup => decoded(body, v, |r: SyncGroupRequest| {
            ask(sync(r), GroupPending::Sync)
        }),
        ApiKey::Heartbeat => decoded(body, v, |r: HeartbeatRequest| {
            let payload = Payload::KafkaHeartbeat(KafkaHeartbeat {
                group: r.group_id.to_string(),
                generation: r.generation_id,
                member_id: r.member_id.to_string(),
            });
            ask(payload, GroupPending::Heartbeat)
        }),
        ApiKey::LeaveGroup => decoded(body, v, |r: LeaveGroupRequest| {
            let member_ids: Vec<String> = if v >= 3 {
                r.members.iter().map(|m| m.member_id.to_string()).collect()
            } else {
                vec![r.member_id.to_string()]
            };
            let payload = Payload::KafkaLeaveGroup(KafkaLeaveGroup {
                group: r.group_id.to_string(),
                member_ids: member_ids.clone(),
            });
            ask(payload, GroupPending::Leave(member_ids))
        }),
        ApiKey::OffsetCommit => decoded(body, v, |r: OffsetCommitRequest| {
            ask(offset_commit(r), GroupPending::OffsetCommit)
        }),
        ApiKey::OffsetFetch => decoded(body, v, |r: OffsetFetchRequest| {
            let partitions = r.topics.map(|topics| {
                (topics.iter())
                    .flat_map(|t| {
                        let name = t.name.to_string();
                        (t.partition_indexes.iter()).map(move |&p| (name.clone(), p.max(0) as u32))
                    })
                    .collect()
            });
            let payload = Payload::KafkaOffsetFetch(KafkaOffsetFetch {
                group: r.group_id.to_string(),
                partitions,
            });
            ask(payload, GroupPending::OffsetFetch)
        }),
        ApiKey::ListGroups => decoded(body, v, |_: ListGroupsRequest| {
            ask(Payload::KafkaListGroups, GroupPending::ListGroups)
        }),
        ApiKey::DescribeGroups => decoded(body, v, |r: DescribeGroupsRequest| {
            let groups = r.groups.iter().map(|g| g.to_string()).collect();
            let payload = Payload::KafkaDescribeGroups(KafkaDescribeGroups { groups });
            ask(payload, GroupPending::DescribeGroups)
        }),
        other => Step::Close(format!("API {other:?} is advertised but not handled")),
    }
}

fn join(header: &Header, v: i16, r: JoinGroupRequest) -> Payload {
    let session_timeout_ms = r.session_timeout_ms.max(0) as u64;
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout_ms = if v == 0 {
        session_timeout_ms
    } else {
        r.rebalance_timeout_ms.max(0) as u64
    };
    Payload::KafkaJoinGroup(KafkaJoinGroup {
        group: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|g| g.to_string()),
        client_id: header.client_id.clone(),
        protocol_type: r.protocol_type.to_string(),
        protocols: (r.protocols.iter())
            .map(|p| KafkaProtocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        session_timeout_ms,
        rebalance_timeout_ms,
        require_known_member: v >= 4,
    })
}

fn sync(r: SyncGroupRequest) -> Payload {
    Payload::KafkaSyncGroup(KafkaSyncGroup {
        group: r.group_id.to_string(),
        generation: r.generation_id,
        member_id: r.member_id.to_string(),
        assignments: (r.assignments.iter())
            .map(|a| KafkaAssignment {
                member_id: a.member_id.to_string(),
                assignment: a.assignment.clone(),
            })
            .collect(),
    })
}

fn offset_commit(r: OffsetCommitRequest) -> Payload {
    let offsets = (r.topics.iter())
        .flat_map(|t| {
            let name = t.name.to_string();
            t.partitions.iter().map(move |p| KafkaCommittedOffset {
                topic: name.clone(),
                partition: p.partition_index.max(0) as u32,
                offset: p.committed_offset,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                error_code: 0,
            })
        })
        .collect();
    Payload::KafkaOffsetCommit(KafkaOffsetCommit {
        group: r.group_id.to_string(),
        generation: r.generation_id_or_member_epoch,
        member_id: r.member_id.to_string(),
        offsets,
    })
}

/// Makes the response from the coordinator's reply. A Herald error (no leader, a
/// limit) becomes the request's error code.
pub(super) fn finish(v: i16, p: GroupPending, replies: Vec<Payload>) -> Step {
    let Some(reply) = replies.into_iter().next() else {
        return Step::Close("a group request got no reply".into());
    };
    let failed = error_of(&reply).map(|e| match herald_to_kafka(e) {
        -1 | 19 | 5 | 6 => COORDINATOR_NOT_AVAILABLE,
        code => code,
    });
    match (p, reply) {
        (GroupPending::Join(protocol_type), Payload::KafkaJoinGroupOk(ok)) => {
            let members = (ok.members.into_iter())
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(text))
                        .with_metadata(m.metadata)
                })
                .collect();
            let response = JoinGroupResponse::default()
                .with_error_code(ok.error_code)
                .with_generation_id(ok.generation)
                .with_protocol_type((v >= 7).then(|| text(protocol_type)))
                .with_protocol_name(Some(text(ok.protocol_name)))
                .with_leader(text(ok.leader))
                .with_member_id(text(ok.member_id))
                .with_members(members);
            respond(v, &response)
        }
        (GroupPending::Join(_), _) => respond(
            v,
            &JoinGroupResponse::default()
                .with_error_code(failed.unwrap_or(-1))
                .with_generation_id(-1),
        ),
        (GroupPending::Sync, Payload::KafkaSyncGroupOk(ok)) => respond(
            v,
            &SyncGroupResponse::default()
                .with_error_code(ok.error_code)
                .with_protocol_type((v >= 5).then(|| text(ok.protocol_type)))
                .with_protocol_name((v >= 5).then(|| text(ok.protocol_name)))
                .with_assignment(ok.assignment),
        ),
        (GroupPending::Sync, _) => respond(
            v,
            &SyncGroupResponse::default().with_error_code(failed.unwrap_or(-1)),
        ),
        (GroupPending::Heartbeat, reply) => {
            let code = match reply {
                Payload::KafkaHeartbeatOk(ok) => ok.error_code,
                _ => failed.unwrap_or(-1),
            };
            respond(v, &HeartbeatResponse::default().with_error_code(code))
        }
        (GroupPending::Leave(members), reply) => {
            let code = match reply {
                Payload::KafkaLeaveGroupOk(ok) => ok.error_code,
                _ => failed.unwrap_or(-1),
            };
            let mut response = LeaveGroupResponse::default().with_error_code(code);
            if v >= 3 {
                response.members = (members.into_iter())
                    .map(|m| {
                        MemberResponse::default()
                            .with_member_id(text(m))
                            .with_error_code(code)
                    })
                    .collect();
            }
            respond(v, &response)
        }
        (GroupPending::OffsetCommit, reply) => offset_commit_done(v, reply, failed),
        (GroupPending::OffsetFetch, reply) => offset_fetch_done(v, reply, failed),
        (GroupPending::ListGroups, reply) => {
            let mut response = ListGroupsResponse::default();
            match reply {
                Payload::KafkaListGroupsOk(ok) => {
                    response.groups = (ok.groups.into_iter())
                        .map(|g| {
                            let listed = ListedGroup::default()
                                .with_group_id(GroupId(text(g.group)))
                                .with_protocol_type(text(g.protocol_type));
                            if v >= 4 {
                                listed.with_group_state(text(g.state))
                            } else {
                                listed
                            }
                        })
                        .collect();
                }
                _ => response.error_code = failed.unwrap_or(-1),
            }
            respond(v, &response)
        }
        (GroupPending::DescribeGroups, reply) => describe_groups_done(v, reply, failed),
    }
}

fn offset_commit_done(v: i16, reply: Payload, failed: Option<i16>) -> Step {
    let offsets = match reply {
        Payload::KafkaOffsetCommitOk(ok) => ok.offsets,
        _ => return Step::Close(format!("offset commit failed with code {failed:?}")),
    };
    let parts = offsets.into_iter().map(|o| {
        let part = OffsetCommitResponsePartition::default()
            .with_partition_index(o.partition as i32)
            .with_error_code(o.error_code);
        (o.topic, part)
    });
    let topics = (by_topic(parts).into_iter())
        .map(|(name, parts)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(parts)
        })
        .collect();
    respond(v, &OffsetCommitResponse::default().with_topics(topics))
}

fn offset_fetch_done(v: i16, reply: Payload, failed: Option<i16>) -> Step {
    let ok = match reply {
        Payload::KafkaOffsetFetchOk(ok) => ok,
        _ => {
            let code = failed.unwrap_or(-1);
            let response = OffsetFetchResponse::default();
            return respond(v, &response.with_error_code(if v >= 2 { code } else { 0 }));
        }
    };
    let parts = ok.offsets.into_iter().map(|o| {
        let part = OffsetFetchResponsePartition::default()
            .with_partition_index(o.partition as i32)
            .with_committed_offset(o.offset)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(text(o.metadata)))
            .with_error_code(o.error_code);
        (o.topic, part)
    });
    let topics = (by_topic(parts).into_iter())
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(parts)
        })
        .collect();
    let response = OffsetFetchResponse::default()
        .with_error_code(if v >= 2 { ok.error_code } else { 0 })
        .with_topics(topics);
    respond(v, &response)
}

fn describe_groups_done(v: i16, reply: Payload, failed: Option<i16>) -> Step {
    let groups = match reply {
        Payload::KafkaDescribeGroupsOk(ok) => ok.groups,
        _ => return Step::Close(format!("describe groups failed with code {failed:?}")),
    };
    let groups = (groups.into_iter())
        .map(|g| {
            let members = (g.members.into_iter())
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(text))
                        .with_client_id(text(m.client_id))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            // Before v6 a group that does not exist is state Dead with no error.
            let error_code = if g.state == "Dead" && v < 6 {
                0
            } else {
                g.error_code
            };
            DescribedGroup::default()
                .with_error_code(error_code)
                .with_group_id(GroupId(text(g.group)))
                .with_group_state(text(g.state))
                .with_protocol_type(text(g.protocol_type))
                .with_protocol_data(text(g.protocol_name))
                .with_members(members)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    respond(v, &DescribeGroupsResponse::default().with_groups(groups))
}
