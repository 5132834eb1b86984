//! Agent sessions on the leader: registration with the worker token,
//! heartbeats kept in leader memory, task status batched into Raft, and the
//! node's assignments pushed whenever they change. A follower tells the
//! agent where the leader is and closes the session.
//!
//! Only transitions reach Raft: a node going down (missed heartbeats past
//! the grace period) and what agents report about their tasks.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::discovery::{names_for, Reachable};
use berth_core::token::Role;
use berth_core::{ClusterVersion, Command, NodeStatus, NodeStatusUpdate, Outcome, Resources, TaskStatus};
use berth_proto::v1 as pb;
use berth_proto::v1::dispatcher_server::Dispatcher;
use berth_store::WatchItem;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::node::ManagerNode;
use crate::seal::DataKey;
use berth_api::{health_from_text, reported_state, spec_to_proto};

/// An agent that sends nothing for this long is considered gone.
pub const DEFAULT_NODE_DOWN_GRACE_MS: u64 = 1_500;
pub const DEFAULT_HEARTBEAT_PERIOD_MS: u64 = 250;
/// The first message of a session must arrive within this time.
pub const REGISTER_TIMEOUT_MS: u64 = 5_000;
/// Messages queued towards one agent.
pub const SESSION_BUFFER: usize = 64;
/// Status reports per Raft entry.
pub const MAX_STATUS_BATCH: usize = 1_000;
/// How long a status report waits for others to share its Raft entry.
pub const STATUS_BATCH_WINDOW_MS: u64 = 2;
/// How often the leader looks for nodes past their grace period.
pub const LIVENESS_CHECK_PERIOD_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub heartbeat_period_ms: u64,
    pub node_down_grace_ms: u64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            heartbeat_period_ms: DEFAULT_HEARTBEAT_PERIOD_MS,
            node_down_grace_ms: DEFAULT_NODE_DOWN_GRACE_MS,
        }
    }
}

/// Last time each node was heard from, in leader memory only.
#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    fn saw(&self, node_id: &str) {
        self.last_seen.lock().insert(node_id.to_string(), Instant::now());
    }
}

pub struct DispatcherService {
    pub node: Arc<ManagerNode>,
    pub settings: DispatcherSettings,
    pub liveness: Arc<Liveness>,
    pub statuses: mpsc::Sender<(String, Vec<TaskStatus>)>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ManagerMessage, Status>> + Send>>;

fn not_leader(address: String) -> pb::ManagerMessage {
    pb::ManagerMessage { body: Some(pb::manager_message::Body::NotLeader(pb::NotLeader { leader_address: address })) }
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    type SessionStream = SessionStream;

    async fn session(&self, request: Request<Streaming<pb::AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let remote = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_millis(REGISTER_TIMEOUT_MS), inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("an agent must register first"))?;
        let register = match first {
            Some(Ok(pb::AgentMessage { body: Some(pb::agent_message::Body::Register(r)) })) => r,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("the first message of a session must be `register`")),
        };
        self.node.check_join_token(&register.token, Role::Worker)?;
        if !self.node.is_leader() {
            let leader = self.node.leader().map(|(_, addr)| addr).unwrap_or_default();
            let reply = futures::stream::iter([Ok(not_leader(leader))]);
            return Ok(Response::new(Box::pin(reply)));
        }
        let node_id = self.register(&register, remote).await?;
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let registered = pb::ManagerMessage {
            body: Some(pb::manager_message::Body::Registered(pb::Registered {
                node_id: node_id.clone(),
                heartbeat_period_ms: self.settings.heartbeat_period_ms,
            })),
        };
        tx.send(Ok(registered)).await.map_err(|_| Status::cancelled("agent went away"))?;
        self.liveness.saw(&node_id);
        let span = info_span!("session", node = %node_id, name = %register.name);
        let session = Session {
            node: self.node.clone(),
            node_id,
            liveness: self.liveness.clone(),
            statuses: self.statuses.clone(),
            outbound: tx,
        };
        tokio::spawn(session.run(inbound).instrument(span));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

impl DispatcherService {
    async fn register(&self, register: &pb::Register, remote: String) -> Result<String, Status> {
        let resources = Resources {
            millicpus: u64::try_from(register.millicpus).unwrap_or(0),
            memory_bytes: u64::try_from(register.memory_bytes).unwrap_or(0),
        };
        let address = if register.address.is_empty() { remote } else { register.address.clone() };
        // Managers of 0.1 would drop the agent's release from the entry and
        // hold a different node than the others: it is recorded only once
        // every manager keeps it.
        let agent_version = if self.node.view.read(|state, _| state.cluster_version()) >= ClusterVersion::V0_2 {
            register.agent_version.clone()
        } else {
            String::new()
        };
        let command = Command::RegisterNode {
            id: crate::node::hex_id(),
            name: register.name.clone(),
            address,
            tags: register.tags.clone(),
            resources,
            agent_version,
        };
        match self.node.write(uuid::Uuid::new_v4().to_string(), command).await? {
            Outcome::Node(node) => {
                info!(node = %node.id, name = %node.name, "agent registered");
                Ok(node.id)
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

struct Session {
    node: Arc<ManagerNode>,
    node_id: String,
    liveness: Arc<Liveness>,
    statuses: mpsc::Sender<(String, Vec<TaskStatus>)>,
    outbound: mpsc::Sender<Result<pb::ManagerMessage, Status>>,
}

impl Session {
    async fn run(self, mut inbound: Streaming<pb::AgentMessage>) {
        let done = CancellationToken::new();
        let pusher = tokio::spawn(push_assignments(
            self.node.clone(),
            self.node_id.clone(),
            self.outbound.clone(),
            done.clone(),
        ));
        while let Some(message) = inbound.next().await {
            let Ok(message) = message else { break };
            self.liveness.saw(&self.node_id);
            match message.body {
                Some(pb::agent_message::Body::Heartbeat(_)) => {}
                Some(pb::agent_message::Body::Statuses(batch)) => {
                    let statuses = batch.statuses.into_iter().filter_map(parse_status).collect::<Vec<_>>();
                    if !statuses.is_empty() && self.statuses.send((self.node_id.clone(), statuses)).await.is_err() {
                        break;
                    }
                }
                Some(pb::agent_message::Body::ImageChanged(change)) => self.image_changed(change),
                Some(pb::agent_message::Body::Register(_)) | None => {
                    warn!("unexpected message from agent; ignored");
                }
            }
        }
        debug!("agent session ended");
        done.cancel();
        let _ = pusher.await;
    }
}

impl Session {
    /// Proposes a redeploy only when a service follows this image and has
    /// not rolled out this image id yet: engines report every tag, and
    /// several agents report the same one.
    fn image_changed(&self, change: pb::ImageChanged) {
        let wanted = self.node.view.read(|state, _| {
            state.services().any(|s| {
                s.spec.autoredeploy
                    && berth_core::same_image(&s.spec.image, &change.image)
                    && s.autoredeployed_image_id != change.image_id
            })
        });
        if !wanted {
            return;
        }
        info!(image = %change.image, image_id = %change.image_id, "image changed: autoredeploy");
        let command =
            Command::ImageChanged { node_id: self.node_id.clone(), image: change.image, image_id: change.image_id };
        let node = self.node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.write(crate::node::hex_id(), command).await {
                warn!(error = %e, "could not record an image change");
            }
        });
    }
}

fn parse_status(report: pb::TaskStatusReport) -> Option<TaskStatus> {
    let state = reported_state(&report.state).map_err(|e| warn!(task = %report.task_id, error = %e)).ok()?;
    let health = health_from_text(&report.health).map_err(|e| warn!(task = %report.task_id, error = %e)).ok()?;
    Some(TaskStatus {
        task_id: report.task_id,
        state,
        health,
        container_id: report.container_id,
        exit_code: report.exit_code,
        message: report.message,
        endpoints: report
            .endpoints
            .iter()
            .filter_map(|e| berth_api::endpoint_from_proto(e).map_err(|e| warn!(error = %e, "bad endpoint")).ok())
            .collect(),
    })
}

/// Sends the node's full assignment set now and whenever it changes, and
/// ends the session when this manager stops leading.
async fn push_assignments(
    node: Arc<ManagerNode>,
    node_id: String,
    outbound: mpsc::Sender<Result<pb::ManagerMessage, Status>>,
    done: CancellationToken,
) {
    let mut changes = node.view.watch(0).live;
    let mut metrics = node.raft.metrics();
    let mut last_sent: Option<Vec<pb::Assignment>> = None;
    let key = DataKey::of(&node.identity).ok();
    loop {
        if !node.is_leader() {
            let leader = node.leader().map(|(_, addr)| addr).unwrap_or_default();
            let _ = outbound.send(Ok(not_leader(leader))).await;
            return;
        }
        let (tasks, version) = node.view.read(|state, index| (assignments_of(state, &node_id, key.as_ref()), index));
        if last_sent.as_ref() != Some(&tasks) {
            let message = pb::ManagerMessage {
                body: Some(pb::manager_message::Body::Assignments(pb::Assignments { version, tasks: tasks.clone() })),
            };
            if outbound.send(Ok(message)).await.is_err() {
                return;
            }
            last_sent = Some(tasks);
        }
        // Wait for a change that may concern this node.
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                // Metrics change with every entry; only a lost leadership
                // matters here, not a reason to rebuild the assignments.
                _ = metrics.changed() => if !node.is_leader() { break },
                item = changes.recv() => match item {
                    Ok(WatchItem::Change { change, .. }) if !concerns(&change, &node_id) => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

fn concerns(change: &berth_core::Change, node_id: &str) -> bool {
    match change {
        berth_core::Change::TaskUpserted(task) => task.node_id.as_deref() == Some(node_id),
        berth_core::Change::TaskRemoved { .. } => true,
        _ => false,
    }
}

/// Every task recorded on the node, with what the agent must do with it.
/// A container whose task is not in the set is stale and gets removed.
/// A task that is meant to run gets the secrets it uses, opened here: only
/// the node running it ever receives them.
fn assignments_of(state: &berth_core::ClusterState, node_id: &str, key: Option<&DataKey>) -> Vec<pb::Assignment> {
    // Once per push, not once per task.
    let services: Vec<Reachable<'_>> =
        state.services().map(|s| Reachable { spec: &s.spec, virtual_ip: s.virtual_ip }).collect();
    state
        .tasks_of_node(node_id)
        .map(|t| pb::Assignment {
            task_id: t.id.clone(),
            service_id: t.service_id.clone(),
            service_name: t.service_name.clone(),
            slot: t.slot,
            desired: t.desired.to_string(),
            state: t.state.to_string(),
            spec: Some(spec_to_proto(&t.spec)),
            secrets: if t.is_live() { opened_secrets(state, t, key) } else { Vec::new() },
            registry: if t.is_live() { registry_credentials(state, t, key) } else { None },
            discovery: if t.is_live() { discovery_names(&services, &t.spec) } else { Vec::new() },
        })
        .collect()
}

/// The names a task's container resolves through its node's proxy, given
/// every service of the cluster.
fn discovery_names(services: &[Reachable<'_>], spec: &berth_core::ServiceSpec) -> Vec<pb::DiscoveryName> {
    names_for(spec, services)
        .into_iter()
        .map(|n| pb::DiscoveryName { name: n.name, virtual_ip: n.virtual_ip })
        .collect()
}

fn registry_credentials(
    state: &berth_core::ClusterState,
    task: &berth_core::Task,
    key: Option<&DataKey>,
) -> Option<pb::RegistryCredentials> {
    let auth = state.registry_auth_for(&task.spec.image)?;
    match key?.open(&auth.sealed_password) {
        Ok(password) => Some(pb::RegistryCredentials {
            host: auth.host.clone(),
            username: auth.username.clone(),
            password: String::from_utf8_lossy(&password).into_owned(),
        }),
        Err(e) => {
            warn!(task = %task.id, registry = %auth.host, error = %e, "cannot open registry credentials");
            None
        }
    }
}

fn opened_secrets(
    state: &berth_core::ClusterState,
    task: &berth_core::Task,
    key: Option<&DataKey>,
) -> Vec<pb::SecretData> {
    let mut opened = Vec::new();
    for reference in &task.spec.secrets {
        let data = state.secret(&reference.name).zip(key).map(|(secret, key)| key.open(&secret.sealed));
        match data {
            Some(Ok(data)) => opened.push(pb::SecretData { name: reference.name.clone(), data }),
            Some(Err(e)) => warn!(task = %task.id, secret = %reference.name, error = %e, "cannot open a secret"),
            None => warn!(task = %task.id, secret = %reference.name, "a secret the task uses is missing"),
        }
    }
    opened
}

/// Collects status reports from every session into few Raft entries.
pub async fn run_status_batcher(
    node: Arc<ManagerNode>,
    mut reports: mpsc::Receiver<(String, Vec<TaskStatus>)>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = reports.recv() => match first { Some(first) => first, None => return },
        };
        let mut by_node: HashMap<String, Vec<TaskStatus>> = HashMap::new();
        let mut count = first.1.len();
        by_node.entry(first.0).or_default().extend(first.1);
        let window = tokio::time::sleep(Duration::from_millis(STATUS_BATCH_WINDOW_MS));
        tokio::pin!(window);
        while count < MAX_STATUS_BATCH {
            tokio::select! {
                _ = &mut window => break,
                more = reports.recv() => match more {
                    Some((node_id, statuses)) => {
                        count += statuses.len();
                        by_node.entry(node_id).or_default().extend(statuses);
                    }
                    None => break,
                },
            }
        }
        for (node_id, statuses) in by_node {
            let command = Command::ReportTaskStatus { node_id: node_id.clone(), statuses };
            if let Err(e) = node.write(uuid::Uuid::new_v4().to_string(), command).await {
                // The agent resends its full state when it reconnects to the next leader.
                warn!(node = %node_id, error = %e, "task status not recorded");
            }
        }
    }
}

/// On the leader: marks nodes down once they are silent past the grace
/// period. Every node gets a full grace period from the moment this
/// manager became leader, since heartbeats went to the previous one.
pub async fn run_liveness_checker(
    node: Arc<ManagerNode>,
    liveness: Arc<Liveness>,
    settings: DispatcherSettings,
    leading: CancellationToken,
) {
    let leader_since = Instant::now();
    let grace = Duration::from_millis(settings.node_down_grace_ms);
    let mut ticker = tokio::time::interval(Duration::from_millis(LIVENESS_CHECK_PERIOD_MS));
    loop {
        tokio::select! {
            _ = leading.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // A node (re)registered within the grace period is alive even if its
        // first heartbeat has not been counted yet: registration is proposed
        // by this leader, so its timestamp is on this leader's clock.
        let fresh_since_ms = crate::node::now_ms() - i64::try_from(settings.node_down_grace_ms).unwrap_or(i64::MAX);
        let ready: Vec<String> = node.view.read(|state, _| {
            state
                .nodes()
                .filter(|n| n.status == NodeStatus::Ready && n.updated_at_ms < fresh_since_ms)
                .map(|n| n.id.clone())
                .collect()
        });
        let now = Instant::now();
        let updates: Vec<NodeStatusUpdate> = {
            let seen = liveness.last_seen.lock();
            ready
                .into_iter()
                .filter(|id| {
                    let last = seen.get(id).copied().unwrap_or(leader_since).max(leader_since);
                    now.duration_since(last) > grace
                })
                .map(|node_id| NodeStatusUpdate {
                    node_id,
                    status: NodeStatus::Down,
                    message: format!("no heartbeat for over {} ms", grace.as_millis()),
                })
                .collect()
        };
        if updates.is_empty() {
            continue;
        }
        info!(nodes = ?updates.iter().map(|u| &u.node_id).collect::<Vec<_>>(), "marking silent nodes down");
        if let Err(e) = node.write(uuid::Uuid::new_v4().to_string(), Command::SetNodeStatus { updates }).await {
            warn!(error = %e, "could not mark nodes down");
        }
    }
}
