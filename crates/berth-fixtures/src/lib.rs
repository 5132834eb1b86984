//! Encoded samples of every record format berth reads back, so that a
//! change that can no longer read an older format fails CI: Raft log
//! entries (one per `Command` kind, a blank and membership entries), the
//! vote and the log's bookkeeping, the state machine snapshot, the
//! manager-to-manager messages (openraft's RPCs and their replies, a
//! forwarded write and its replies), all in the versioned `berth_codec`
//! format, and the protobuf messages of the agent's Dispatcher session.
//!
//! `make-fixtures` writes [`samples`] once per format version to
//! `fixtures/v<format>/` at the workspace root, and `tests/fixtures.rs`
//! reads every such folder with the current code through [`decode_sample`].
//! A folder is never regenerated once committed: it stands for the data
//! that clusters of that version hold. A sample's name says what it holds
//! (`<record>[-<variant>].bin`), and decoding checks the variant too.

use std::collections::BTreeSet;

use berth_core::{Command, CoreError, Outcome, Request, COMMAND_KINDS};
use berth_manager::node::ForwardReply;
use berth_proto::v1 as pb;
use berth_store::{NodeId, TypeConfig};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod history;

use history::History;

/// One encoded record and the file name it is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// How a sample is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `berth_codec`: the format envelope, then MessagePack.
    Versioned,
    /// Protobuf (prost), with no envelope: the agent protocol.
    Protobuf,
}

/// The encoding of the sample called `name`.
pub fn encoding_of(name: &str) -> Encoding {
    if name.starts_with("agent-") {
        Encoding::Protobuf
    } else {
        Encoding::Versioned
    }
}

/// The snapshot record as `berth_store::state_machine` keeps it under its
/// `snapshot` key. That type is private to berth-store, so this is one of
/// the same shape: the same field names and types. The encoding is by
/// field name, so this reads and writes exactly the bytes the store does,
/// as a reader of an older format would. `data` is the `ClusterState`,
/// itself encoded with `berth_codec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

type Entry = openraft::Entry<TypeConfig>;
type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotReply = Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Every `Outcome` kind, as [`outcome_kind`] names them: the forwarded
/// reply samples hold one of each.
const OUTCOME_KINDS: &[&str] = &[
    "Done",
    "ManagerId",
    "Service",
    "ServiceRemoved",
    "Node",
    "NodeRemoved",
    "Trigger",
    "TriggerRemoved",
    "StackDeployed",
    "StackRemoved",
    "Secret",
    "SecretRemoved",
    "Batch",
];

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "Done",
        Outcome::ManagerId(_) => "ManagerId",
        Outcome::Service(_) => "Service",
        Outcome::ServiceRemoved { .. } => "ServiceRemoved",
        Outcome::Node(_) => "Node",
        Outcome::NodeRemoved { .. } => "NodeRemoved",
        Outcome::Trigger(_) => "Trigger",
        Outcome::TriggerRemoved { .. } => "TriggerRemoved",
        Outcome::StackDeployed(_) => "StackDeployed",
        Outcome::StackRemoved { .. } => "StackRemoved",
        Outcome::Secret(_) => "Secret",
        Outcome::SecretRemoved { .. } => "SecretRemoved",
        Outcome::Batch(_) => "Batch",
    }
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(history::TERM, history::LEADER), index)
}

fn nodes() -> impl Iterator<Item = (NodeId, BasicNode)> {
    history::MANAGERS.iter().map(|(id, addr)| (*id, BasicNode::new(*addr)))
}

/// Managers 1 to 3 as voters.
fn membership() -> Membership<NodeId, BasicNode> {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes().collect::<std::collections::BTreeMap<_, _>>())
}

/// Samples named by their file name; a name is used once.
#[derive(Default)]
struct Samples(Vec<Sample>);

impl Samples {
    fn versioned<T: Serialize>(&mut self, stem: impl Into<String>, value: &T) {
        let stem = stem.into();
        let bytes = berth_codec::encode(value).unwrap_or_else(|e| panic!("cannot encode the {stem} sample: {e}"));
        self.push(stem, bytes);
    }

    fn protobuf<M: prost::Message>(&mut self, stem: impl Into<String>, message: &M) {
        self.push(stem.into(), message.encode_to_vec());
    }

    fn push(&mut self, stem: String, bytes: Vec<u8>) {
        let name = format!("{stem}.bin");
        assert!(self.0.iter().all(|s| s.name != name), "two samples are named {name}");
        self.0.push(Sample { name, bytes });
    }
}

/// Every sample, built with the current code from the sample cluster's
/// history (see `history.rs`).
pub fn samples() -> Vec<Sample> {
    let h = history::run();
    let mut out = Samples::default();
    entries(&h, &mut out);
    let (meta, data) = log_and_snapshot(&h, &mut out);
    raft_messages(&h, meta, data, &mut out);
    forwarded(&h, &mut out);
    agent_session(&h, &mut out);
    out.0
}

fn entries(h: &History, out: &mut Samples) {
    let mut kinds = BTreeSet::new();
    for (index, request) in &h.entries {
        let kind = request.command.kind();
        if kinds.insert(kind) {
            let entry = Entry { log_id: log_id(*index), payload: EntryPayload::Normal(request.clone()) };
            out.versioned(format!("entry-command-{kind}"), &entry);
        }
    }
    let missing: Vec<&&str> = COMMAND_KINDS.iter().filter(|k| !kinds.contains(**k)).collect();
    assert!(missing.is_empty(), "the sample history commits no {missing:?} entry: add one to history::run");
    out.versioned("entry-blank", &Entry { log_id: log_id(history::BLANK_INDEX), payload: EntryPayload::Blank });
    let joint = Membership::new(
        vec![BTreeSet::from([1]), BTreeSet::from([1, 2, 3])],
        nodes().collect::<std::collections::BTreeMap<_, _>>(),
    );
    let joint = Entry { log_id: log_id(h.joint_membership_index), payload: EntryPayload::Membership(joint) };
    out.versioned("entry-membership-joint", &joint);
    let entry = Entry { log_id: log_id(h.membership_index), payload: EntryPayload::Membership(membership()) };
    out.versioned("entry-membership", &entry);
}

fn last_log_id(h: &History) -> LogId<NodeId> {
    log_id(h.entries.last().map_or(history::BLANK_INDEX, |(index, _)| *index))
}

/// The vote, the log's bookkeeping and the snapshot; returns the
/// snapshot's meta and data for the install-snapshot message.
fn log_and_snapshot(h: &History, out: &mut Samples) -> (SnapshotMeta<NodeId, BasicNode>, Vec<u8>) {
    let last = last_log_id(h);
    out.versioned("vote", &Vote::new_committed(history::TERM, history::LEADER));
    out.versioned("log-committed", &Some(last));
    out.versioned("log-last-purged", &log_id(h.membership_index));

    let data = berth_codec::encode(&h.state).unwrap_or_else(|e| panic!("cannot encode the sample state: {e}"));
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(log_id(h.membership_index)), membership()),
        // As `build_snapshot` names them.
        snapshot_id: format!("{}-{}-{}", last.leader_id, last.index, data.len()),
    };
    out.versioned("snapshot", &StoredSnapshot { meta: meta.clone(), data: data.clone() });
    (meta, data)
}

fn raft_messages(h: &History, meta: SnapshotMeta<NodeId, BasicNode>, data: Vec<u8>, out: &mut Samples) {
    let leader = Vote::new_committed(history::TERM, history::LEADER);
    let last = last_log_id(h);
    let tail: Vec<Entry> = h.entries[h.entries.len().saturating_sub(3)..]
        .iter()
        .map(|(index, request)| Entry { log_id: log_id(*index), payload: EntryPayload::Normal(request.clone()) })
        .collect();
    let prev = log_id(tail.first().map_or(1, |e| e.log_id.index) - 1);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: leader,
        prev_log_id: Some(prev),
        entries: tail,
        leader_commit: Some(prev),
    };
    out.versioned("raft-append-entries-request", &append);
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: leader,
        prev_log_id: Some(last),
        entries: vec![],
        leader_commit: Some(last),
    };
    out.versioned("raft-append-entries-request-heartbeat", &heartbeat);
    let disk_full = std::io::Error::other("No space left on device (os error 28)");
    let replies: [AppendReply; 7] = [
        Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(Some(prev))),
        Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(Vote::new(history::TERM + 1, 3))),
        Err(RaftError::Fatal(Fatal::Stopped)),
        Err(RaftError::Fatal(Fatal::Panicked)),
        Err(RaftError::Fatal(Fatal::StorageError(StorageError::from(StorageIOError::write_logs(&disk_full))))),
    ];
    for reply in &replies {
        out.versioned(format!("raft-append-entries-reply-{}", append_reply_label(reply)), reply);
    }

    let candidate = Vote::new(history::TERM + 1, 2);
    out.versioned("raft-vote-request", &VoteRequest::new(candidate, Some(last)));
    let granted: VoteReply = Ok(VoteResponse::new(candidate, Some(last), true));
    out.versioned("raft-vote-reply", &granted);

    let segment = |offset| SnapshotSegmentId { id: meta.snapshot_id.clone(), offset };
    let mismatch = SnapshotMismatch { expect: segment(0), got: segment(1_048_576) };
    let install = InstallSnapshotRequest::<TypeConfig> { vote: leader, meta, offset: 0, data, done: true };
    out.versioned("raft-install-snapshot-request", &install);
    let replies: [SnapshotReply; 2] = [
        Ok(InstallSnapshotResponse { vote: leader }),
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch))),
    ];
    for reply in &replies {
        out.versioned(suffixed("raft-install-snapshot-reply", &snapshot_reply_label(reply)), reply);
    }
}

fn forwarded(h: &History, out: &mut Samples) {
    let update = h.entries.iter().find(|(_, r)| matches!(r.command, Command::UpdateService { .. }));
    let Some((_, request)) = update else { panic!("the sample history has no UpdateService to forward") };
    out.versioned("forward-request", request);
    let mut kinds = BTreeSet::new();
    for outcome in &h.outcomes {
        if kinds.insert(outcome_kind(outcome)) {
            let reply = ForwardReply::Applied(Ok(outcome.clone()));
            out.versioned(format!("forward-reply-{}", forward_label(&reply)), &reply);
        }
    }
    let missing: Vec<&&str> = OUTCOME_KINDS.iter().filter(|k| !kinds.contains(**k)).collect();
    assert!(missing.is_empty(), "the sample history has no {missing:?} outcome: add a request that gives one");
    let no_quorum = "manager 2 has no leader to commit through (term 2, 3 voting managers): fewer than a majority \
                     of managers are reachable; retry once they are back";
    let others = [
        ForwardReply::Applied(Err(CoreError::StaleVersion { expected: 24, found: 26 })),
        ForwardReply::NotLeader,
        ForwardReply::NoQuorum(no_quorum.into()),
        ForwardReply::Failed("cannot propose: raft stopped".into()),
    ];
    for reply in &others {
        out.versioned(format!("forward-reply-{}", forward_label(reply)), reply);
    }
}

fn agent_session(h: &History, out: &mut Samples) {
    use pb::agent_message::Body as Up;
    use pb::manager_message::Body as Down;

    let node_id = history::node_id(history::WORKER_1);
    let Some(node) = h.state.node(&node_id) else { panic!("the sample node {} is missing", history::WORKER_1) };
    let statuses = h.worker_1_statuses.iter().map(status_to_proto).collect();
    let up = [
        Up::Register(pb::Register {
            token: history::worker_token(),
            name: node.name.clone(),
            address: node.address.clone(),
            tags: node.tags.iter().cloned().collect(),
            millicpus: i64::try_from(node.resources.millicpus).unwrap_or(0),
            memory_bytes: i64::try_from(node.resources.memory_bytes).unwrap_or(0),
            agent_version: berth_core::THIS_RELEASE.into(),
        }),
        Up::Heartbeat(pb::Heartbeat {}),
        Up::Statuses(pb::TaskStatuses { statuses }),
        Up::ImageChanged(pb::ImageChanged {
            image: format!("{}/shop/web:1.4.2", history::REGISTRY),
            image_id: history::WEB_IMAGE_ID.into(),
        }),
    ];
    for body in up {
        let message = pb::AgentMessage { body: Some(body) };
        out.protobuf(suffixed("agent-AgentMessage", &agent_label(&message)), &message);
    }
    let down = [
        Down::Registered(pb::Registered { node_id: node_id.clone(), heartbeat_period_ms: 250 }),
        Down::Assignments(pb::Assignments { version: h.state.applied_index, tasks: assignments(h, &node_id) }),
        Down::NotLeader(pb::NotLeader { leader_address: history::MANAGERS[1].1.into() }),
    ];
    for body in down {
        let message = pb::ManagerMessage { body: Some(body) };
        out.protobuf(suffixed("agent-ManagerMessage", &manager_label(&message)), &message);
    }
}

fn status_to_proto(status: &berth_core::TaskStatus) -> pb::TaskStatusReport {
    pb::TaskStatusReport {
        task_id: status.task_id.clone(),
        state: berth_api::reported_state_text(status.state).to_string(),
        health: status.health.to_string(),
        container_id: status.container_id.clone(),
        exit_code: status.exit_code,
        message: status.message.clone(),
        endpoints: status.endpoints.iter().map(berth_api::endpoint_to_proto).collect(),
    }
}

/// The node's assignments as the dispatcher pushes them: secrets opened,
/// registry credentials and discovery names for the tasks meant to run.
fn assignments(h: &History, node_id: &str) -> Vec<pb::Assignment> {
    use berth_core::discovery::{names_for, Reachable};
    let state = &h.state;
    let services: Vec<Reachable<'_>> =
        state.services().map(|s| Reachable { spec: &s.spec, virtual_ip: s.virtual_ip }).collect();
    let open = |name: &str| match name {
        "db-password" => history::DB_PASSWORD.to_vec(),
        _ => Vec::new(),
    };
    state
        .tasks_of_node(node_id)
        .map(|t| {
            let live = t.is_live();
            pb::Assignment {
                task_id: t.id.clone(),
                service_id: t.service_id.clone(),
                service_name: t.service_name.clone(),
                slot: t.slot,
                desired: t.desired.to_string(),
                state: t.state.to_string(),
                spec: Some(berth_api::spec_to_proto(&t.spec)),
                secrets: if live {
                    t.spec
                        .secrets
                        .iter()
                        .map(|r| pb::SecretData { name: r.name.clone(), data: open(&r.name) })
                        .collect()
                } else {
                    Vec::new()
                },
                registry: state.registry_auth_for(&t.spec.image).filter(|_| live).map(|auth| pb::RegistryCredentials {
                    host: auth.host.clone(),
                    username: auth.username.clone(),
                    password: String::from_utf8_lossy(history::REGISTRY_PASSWORD).into_owned(),
                }),
                discovery: if live {
                    names_for(&t.spec, &services)
                        .into_iter()
                        .map(|n| pb::DiscoveryName { name: n.name, virtual_ip: n.virtual_ip })
                        .collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

fn suffixed(prefix: &str, label: &str) -> String {
    if label.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}-{label}")
    }
}

fn fatal_label(fatal: &Fatal<NodeId>) -> &'static str {
    match fatal {
        Fatal::StorageError(_) => "Fatal-StorageError",
        Fatal::Panicked => "Fatal-Panicked",
        Fatal::Stopped => "Fatal-Stopped",
    }
}

fn append_reply_label(reply: &AppendReply) -> String {
    match reply {
        Ok(AppendEntriesResponse::Success) => "Success",
        Ok(AppendEntriesResponse::PartialSuccess(_)) => "PartialSuccess",
        Ok(AppendEntriesResponse::Conflict) => "Conflict",
        Ok(AppendEntriesResponse::HigherVote(_)) => "HigherVote",
        Err(RaftError::Fatal(fatal)) => fatal_label(fatal),
        Err(RaftError::APIError(never)) => match *never {},
    }
    .to_string()
}

fn vote_reply_label(reply: &VoteReply) -> String {
    match reply {
        Ok(_) => "",
        Err(RaftError::Fatal(fatal)) => fatal_label(fatal),
        Err(RaftError::APIError(never)) => match *never {},
    }
    .to_string()
}

fn snapshot_reply_label(reply: &SnapshotReply) -> String {
    match reply {
        Ok(_) => "",
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_))) => "SnapshotMismatch",
        Err(RaftError::Fatal(fatal)) => fatal_label(fatal),
    }
    .to_string()
}

fn forward_label(reply: &ForwardReply) -> String {
    match reply {
        ForwardReply::Applied(Ok(outcome)) => format!("Applied-{}", outcome_kind(outcome)),
        ForwardReply::Applied(Err(_)) => "Applied-Refused".into(),
        ForwardReply::NotLeader => "NotLeader".into(),
        ForwardReply::NoQuorum(_) => "NoQuorum".into(),
        ForwardReply::Failed(_) => "Failed".into(),
    }
}

fn agent_label(message: &pb::AgentMessage) -> String {
    use pb::agent_message::Body;
    match &message.body {
        Some(Body::Register(_)) => "Register",
        Some(Body::Heartbeat(_)) => "Heartbeat",
        Some(Body::Statuses(_)) => "Statuses",
        Some(Body::ImageChanged(_)) => "ImageChanged",
        None => "Empty",
    }
    .to_string()
}

fn manager_label(message: &pb::ManagerMessage) -> String {
    use pb::manager_message::Body;
    match &message.body {
        Some(Body::Registered(_)) => "Registered",
        Some(Body::Assignments(_)) => "Assignments",
        Some(Body::NotLeader(_)) => "NotLeader",
        None => "Empty",
    }
    .to_string()
}

fn entry_label(entry: &Entry) -> Result<String, String> {
    Ok(match &entry.payload {
        EntryPayload::Blank => "blank".to_string(),
        EntryPayload::Membership(m) if m.get_joint_config().len() > 1 => "membership-joint".to_string(),
        EntryPayload::Membership(_) => "membership".to_string(),
        EntryPayload::Normal(request) => {
            let kind = request.command.kind();
            if !COMMAND_KINDS.contains(&kind) {
                return Err(format!("holds a {kind} command, which berth_core::COMMAND_KINDS does not list"));
            }
            format!("command-{kind}")
        }
    })
}

/// Reads a sample's bytes as what its name says, with the current code,
/// and checks what it holds: that a command entry holds the command kind
/// its name gives (`entry-command-CreateService.bin`), a reply the variant
/// its name gives, and that what was read encodes again into something
/// that reads back the same. (Not into the same bytes: the encoding of
/// maps and of values an older build wrote may differ.)
pub fn decode_sample(name: &str, bytes: &[u8]) -> Result<(), String> {
    let stem = name.strip_suffix(".bin").ok_or("not a sample: its name does not end in .bin")?;
    let mut decoders = DECODERS.to_vec();
    decoders.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    let (prefix, decode) = decoders
        .into_iter()
        .find(|(prefix, _)| stem == *prefix || stem.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('-')))
        .ok_or("no decoder for this name (add one to berth_fixtures::decode_sample)")?;
    let label = decode(bytes)?;
    let holds = suffixed(prefix, &label);
    if holds != stem {
        return Err(format!("its name says {stem}, but it holds {holds}"));
    }
    Ok(())
}

/// Decodes a sample and names what it holds, as the part of the file
/// name after the decoder's prefix ("" when there is nothing to tell).
type Decoder = fn(&[u8]) -> Result<String, String>;

const DECODERS: &[(&str, Decoder)] = &[
    ("entry", |bytes| {
        let entry: Entry = read(bytes)?;
        reread(&entry, PartialEq::eq)?;
        entry_label(&entry)
    }),
    ("vote", |bytes| {
        let vote: Vote<NodeId> = read(bytes)?;
        reread(&vote, PartialEq::eq)?;
        Ok(String::new())
    }),
    ("log-committed", |bytes| {
        let committed: Option<LogId<NodeId>> = read(bytes)?;
        reread(&committed, PartialEq::eq)?;
        Ok(String::new())
    }),
    ("log-last-purged", |bytes| {
        let purged: LogId<NodeId> = read(bytes)?;
        reread(&purged, PartialEq::eq)?;
        Ok(String::new())
    }),
    ("snapshot", |bytes| {
        let snapshot: StoredSnapshot = read(bytes)?;
        reread(&snapshot.meta, PartialEq::eq)?;
        read_state(&snapshot.data)?;
        Ok(String::new())
    }),
    ("raft-append-entries-request", |bytes| {
        let request: AppendEntriesRequest<TypeConfig> = read(bytes)?;
        reread(&request, |a, b| {
            (a.vote, a.prev_log_id, a.leader_commit) == (b.vote, b.prev_log_id, b.leader_commit)
                && a.entries == b.entries
        })?;
        for entry in &request.entries {
            entry_label(entry)?;
        }
        Ok(if request.entries.is_empty() { "heartbeat".into() } else { String::new() })
    }),
    ("raft-append-entries-reply", |bytes| {
        let reply: AppendReply = read(bytes)?;
        reread(&reply, PartialEq::eq)?;
        Ok(append_reply_label(&reply))
    }),
    ("raft-vote-request", |bytes| {
        let request: VoteRequest<NodeId> = read(bytes)?;
        reread(&request, PartialEq::eq)?;
        Ok(String::new())
    }),
    ("raft-vote-reply", |bytes| {
        let reply: VoteReply = read(bytes)?;
        reread(&reply, PartialEq::eq)?;
        Ok(vote_reply_label(&reply))
    }),
    ("raft-install-snapshot-request", |bytes| {
        let request: InstallSnapshotRequest<TypeConfig> = read(bytes)?;
        reread(&request, PartialEq::eq)?;
        if request.offset == 0 && request.done {
            read_state(&request.data)?;
        }
        Ok(String::new())
    }),
    ("raft-install-snapshot-reply", |bytes| {
        let reply: SnapshotReply = read(bytes)?;
        reread(&reply, PartialEq::eq)?;
        Ok(snapshot_reply_label(&reply))
    }),
    ("forward-request", |bytes| {
        let request: Request = read(bytes)?;
        reread(&request, PartialEq::eq)?;
        Ok(String::new())
    }),
    ("forward-reply", |bytes| {
        let reply: ForwardReply = read(bytes)?;
        // No PartialEq; nothing in it is a hash map, so Debug is stable.
        reread(&reply, |a, b| format!("{a:?}") == format!("{b:?}"))?;
        Ok(forward_label(&reply))
    }),
    ("agent-AgentMessage", |bytes| {
        let message = read_protobuf::<pb::AgentMessage>(bytes)?;
        Ok(agent_label(&message))
    }),
    ("agent-ManagerMessage", |bytes| {
        let message = read_protobuf::<pb::ManagerMessage>(bytes)?;
        Ok(manager_label(&message))
    }),
];

fn read<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    berth_codec::decode(bytes).map_err(|e| e.to_string())
}

/// The state a snapshot holds, read and checked as a manager loads it.
fn read_state(data: &[u8]) -> Result<(), String> {
    let state: berth_core::ClusterState = read(data).map_err(|e| format!("its cluster state: {e}"))?;
    if state.cluster.is_none() {
        return Err("its cluster state has no cluster".into());
    }
    // PartialEq, not Debug: the request log is a hash map, in no order.
    reread(&state, PartialEq::eq).map_err(|e| format!("its cluster state {e}"))
}

/// Encodes what was read with the current code and reads it again: it
/// must come back the same (a field lost on the way would show here).
fn reread<T: Serialize + DeserializeOwned>(value: &T, same: impl Fn(&T, &T) -> bool) -> Result<(), String> {
    let bytes = berth_codec::encode(value).map_err(|e| format!("does not encode again: {e}"))?;
    let again: T = berth_codec::decode(&bytes).map_err(|e| format!("does not read back once encoded again: {e}"))?;
    if same(value, &again) {
        Ok(())
    } else {
        Err("reads back different once encoded again".into())
    }
}

fn read_protobuf<M: prost::Message + Default + PartialEq>(bytes: &[u8]) -> Result<M, String> {
    let message = M::decode(bytes).map_err(|e| e.to_string())?;
    let again = M::decode(message.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
    if again != message {
        return Err("reads back different once encoded again".into());
    }
    Ok(message)
}
