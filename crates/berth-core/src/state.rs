//! The replicated cluster state and [`ClusterState::apply`], the only
//! function that changes it. Every manager applies the same Raft entries in
//! the same order, so `apply` must be deterministic: it reads no clock and
//! draws no random numbers; both come inside the [`Request`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::spec::validate_name;
use crate::stack::StackPlan;
use crate::{
    Availability, ClusterVersion, CoreError, DesiredState, Node, NodeStatus, Resources, Rollout, RolloutAction,
    RolloutDecision, RolloutKind, RolloutState, Secret, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus, Trigger,
    TriggerAction,
};

/// How many request ids are remembered for deduplication. A client retries
/// within seconds; this covers many minutes of writes at full speed.
pub const MAX_REMEMBERED_REQUESTS: usize = 20_000;

/// One client write as it travels through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client and reused on retry; empty disables deduplication.
    pub request_id: String,
    /// Wall-clock time at the proposing manager, so apply stays pure.
    pub issued_at_ms: i64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Requests that reached the leader together, committed as one entry
    /// and applied one after the other, each as if it had an entry of its
    /// own (its own deduplication, its own response) but sharing the
    /// entry's index: fewer, larger entries when many clients write at once.
    Batch {
        requests: Vec<Request>,
    },
    /// The first entry of a new cluster, proposed by `manager init`.
    InitCluster {
        cluster_id: String,
        manager_token_hash: String,
        worker_token_hash: String,
    },
    /// Hands out the Raft node id of a joining manager.
    AllocateManagerId {
        address: String,
    },
    /// `id` is drawn by the proposing manager.
    CreateService {
        id: String,
        spec: ServiceSpec,
    },
    UpdateService {
        name: String,
        spec: ServiceSpec,
        expected_version: u64,
    },
    ScaleService {
        name: String,
        replicas: u32,
    },
    RemoveService {
        name: String,
    },
    /// Replaces every task with a fresh one running the same spec.
    RedeployService {
        name: String,
    },
    /// Rolls back to the spec before the last update.
    RollbackService {
        name: String,
    },
    /// Creates, updates and (with `prune`) removes a stack's services in one
    /// entry. Each new service's id comes with its spec.
    DeployStack {
        stack: String,
        services: Vec<(String, ServiceSpec)>,
        prune: bool,
    },
    RemoveStack {
        stack: String,
    },
    /// An agent saw an image tag come to point at a new image: services
    /// with autoredeploy that run it redeploy, once per image id.
    ImageChanged {
        node_id: String,
        image: String,
        image_id: String,
    },
    /// `sealed` is the secret encrypted with the cluster's data key.
    CreateSecret {
        id: String,
        name: String,
        sealed: Vec<u8>,
        size: u64,
    },
    RemoveSecret {
        name: String,
    },
    /// Stores (or replaces) the credentials for one registry.
    SetRegistryAuth {
        host: String,
        username: String,
        sealed_password: Vec<u8>,
    },
    RemoveRegistryAuth {
        host: String,
    },
    /// `id` is drawn by the proposing manager; only the token's hash is stored.
    CreateTrigger {
        id: String,
        service: String,
        action: TriggerAction,
        token_hash: String,
    },
    RemoveTrigger {
        id: String,
    },
    /// Someone POSTed a trigger's URL: carry out its action.
    FireTrigger {
        token_hash: String,
    },
    /// An agent registered; a known name keeps its node id.
    RegisterNode {
        id: String,
        name: String,
        address: String,
        tags: Vec<String>,
        resources: Resources,
        /// The agent's release; empty from an agent of 0.1, and written
        /// only once the cluster version is 0.2 (managers of 0.1 drop it).
        #[serde(default)]
        agent_version: String,
    },
    UpdateNode {
        id: String,
        availability: Option<Availability>,
        tags_add: Vec<String>,
        tags_rm: Vec<String>,
    },
    RemoveNode {
        id: String,
    },
    /// Liveness transitions seen by the dispatcher, batched.
    SetNodeStatus {
        updates: Vec<NodeStatusUpdate>,
    },
    /// The orchestrator's decisions, batched.
    ReconcileTasks(TaskPlan),
    /// The scheduler's decisions, batched: (task id, node id) and (task id, reason).
    AssignTasks {
        assignments: Vec<(String, String)>,
        unplaceable: Vec<(String, String)>,
    },
    /// What an agent observed about the tasks on its node, batched.
    ReportTaskStatus {
        node_id: String,
        statuses: Vec<TaskStatus>,
    },
    /// Raises the cluster version once every voting manager runs a release
    /// of that level (the leader checks before proposing). Since 0.2.
    SetClusterVersion {
        version: ClusterVersion,
    },
}

/// The name of every [`Command`] variant, as [`Command::kind`] gives it.
/// A new variant goes here too, and gets a sample in `berth-fixtures`, so
/// the format fixtures cover every kind of entry the log can hold.
pub const COMMAND_KINDS: &[&str] = &[
    "Batch",
    "InitCluster",
    "AllocateManagerId",
    "CreateService",
    "UpdateService",
    "ScaleService",
    "RemoveService",
    "RedeployService",
    "RollbackService",
    "DeployStack",
    "RemoveStack",
    "ImageChanged",
    "CreateSecret",
    "RemoveSecret",
    "SetRegistryAuth",
    "RemoveRegistryAuth",
    "CreateTrigger",
    "RemoveTrigger",
    "FireTrigger",
    "RegisterNode",
    "UpdateNode",
    "RemoveNode",
    "SetNodeStatus",
    "ReconcileTasks",
    "AssignTasks",
    "ReportTaskStatus",
    "SetClusterVersion",
];

impl Command {
    /// The variant's name, e.g. `"CreateService"` (its name in the encoding).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Batch { .. } => "Batch",
            Command::InitCluster { .. } => "InitCluster",
            Command::AllocateManagerId { .. } => "AllocateManagerId",
            Command::CreateService { .. } => "CreateService",
            Command::UpdateService { .. } => "UpdateService",
            Command::ScaleService { .. } => "ScaleService",
            Command::RemoveService { .. } => "RemoveService",
            Command::RedeployService { .. } => "RedeployService",
            Command::RollbackService { .. } => "RollbackService",
            Command::DeployStack { .. } => "DeployStack",
            Command::RemoveStack { .. } => "RemoveStack",
            Command::ImageChanged { .. } => "ImageChanged",
            Command::CreateSecret { .. } => "CreateSecret",
            Command::RemoveSecret { .. } => "RemoveSecret",
            Command::SetRegistryAuth { .. } => "SetRegistryAuth",
            Command::RemoveRegistryAuth { .. } => "RemoveRegistryAuth",
            Command::CreateTrigger { .. } => "CreateTrigger",
            Command::RemoveTrigger { .. } => "RemoveTrigger",
            Command::FireTrigger { .. } => "FireTrigger",
            Command::RegisterNode { .. } => "RegisterNode",
            Command::UpdateNode { .. } => "UpdateNode",
            Command::RemoveNode { .. } => "RemoveNode",
            Command::SetNodeStatus { .. } => "SetNodeStatus",
            Command::ReconcileTasks(_) => "ReconcileTasks",
            Command::AssignTasks { .. } => "AssignTasks",
            Command::ReportTaskStatus { .. } => "ReportTaskStatus",
            Command::SetClusterVersion { .. } => "SetClusterVersion",
        }
    }

    /// The cluster version this command needs: a manager of an older level
    /// could not read it, or would drop part of it.
    pub fn required_version(&self) -> ClusterVersion {
        match self {
            Command::Batch { requests } => {
                requests.iter().map(|r| r.command.required_version()).max().unwrap_or(ClusterVersion::INITIAL)
            }
            Command::SetClusterVersion { .. } => ClusterVersion::V0_2,
            Command::RegisterNode { agent_version, .. } if !agent_version.is_empty() => ClusterVersion::V0_2,
            _ => ClusterVersion::INITIAL,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatusUpdate {
    pub node_id: String,
    pub status: NodeStatus,
    pub message: String,
}

/// Task changes decided by the orchestrator in one pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPlan {
    pub create: Vec<Task>,
    pub set_desired: Vec<(String, DesiredState)>,
    /// Records of finished tasks that are no longer worth keeping.
    pub delete: Vec<String>,
    pub rollouts: Vec<RolloutDecision>,
}

impl TaskPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.set_desired.is_empty() && self.delete.is_empty() && self.rollouts.is_empty()
    }
}

/// What applying a request produced. Refusals are values, not errors:
/// they are part of the replicated history like any other outcome.
pub type Response = Result<Outcome, CoreError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    ManagerId(u64),
    Service(Box<Service>),
    /// `index`: the entry that removed it (0 when a retry finds it gone
    /// without knowing when).
    ServiceRemoved {
        id: String,
        index: u64,
    },
    Node(Box<Node>),
    NodeRemoved {
        id: String,
    },
    Trigger(Box<Trigger>),
    TriggerRemoved {
        id: String,
    },
    StackDeployed(Box<StackPlan>),
    StackRemoved {
        services: Vec<String>,
    },
    Secret(Box<Secret>),
    SecretRemoved {
        id: String,
    },
    /// The responses of a `Command::Batch`, in its order.
    Batch(Vec<Response>),
}

/// A change to the state, as `Watch` streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    ServiceUpserted(Box<Service>),
    ServiceRemoved { id: String, name: String },
    NodeUpserted(Box<Node>),
    NodeRemoved { id: String },
    TaskUpserted(Box<Task>),
    TaskRemoved { id: String, service_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub spec: ServiceSpec,
    /// Raft index of the entry that last changed this service's spec.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The spec before the last update, for `service rollback`.
    pub previous_spec: Option<ServiceSpec>,
    /// The latest rolling replacement of its tasks, if any.
    pub rollout: Option<Rollout>,
    /// The image id the last autoredeploy rolled out.
    pub autoredeployed_image_id: String,
    /// Its virtual IP number for discovery across nodes (`discovery`).
    pub virtual_ip: u32,
}

impl Service {
    /// A new service at version `index`, with no history.
    pub fn new(id: String, spec: ServiceSpec, index: u64, now: i64) -> Service {
        Service {
            id,
            spec,
            version: index,
            created_at_ms: now,
            updated_at_ms: now,
            previous_spec: None,
            rollout: None,
            autoredeployed_image_id: String::new(),
            virtual_ip: 0,
        }
    }
}

/// Whether two image references name the same repository and tag
/// (`busybox` is `busybox:latest`).
pub fn same_image(a: &str, b: &str) -> bool {
    crate::secret::split_tag(a) == crate::secret::split_tag(b)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: String,
    pub manager_token_hash: String,
    pub worker_token_hash: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster: Option<ClusterInfo>,
    /// Raft index of the last entry applied to this state.
    pub applied_index: u64,
    /// The highest manager id handed out; ids are never reused.
    pub last_manager_id: u64,
    /// The last virtual IP number handed to a service (`discovery`).
    pub last_virtual_ip: u32,
    services: BTreeMap<String, Service>,
    /// Index: service name to id.
    service_ids: BTreeMap<String, String>,
    nodes: BTreeMap<String, Node>,
    /// Index: node name to id.
    node_ids: BTreeMap<String, String>,
    tasks: BTreeMap<String, Task>,
    /// Index: service id to its task ids.
    tasks_by_service: BTreeMap<String, BTreeSet<String>>,
    /// Index: node id to the ids of tasks assigned to it.
    tasks_by_node: BTreeMap<String, BTreeSet<String>>,
    triggers: BTreeMap<String, Trigger>,
    /// By name.
    secrets: BTreeMap<String, Secret>,
    /// By registry host.
    registries: BTreeMap<String, crate::secret::RegistryAuth>,
    requests: RequestLog,
    /// The level every manager supports; `None` until recorded (0.1).
    #[serde(default)]
    cluster_version: Option<ClusterVersion>,
}

/// Outcomes of recent requests, keyed by request id, oldest evicted first.
/// Only ids are kept, not copies of the objects: the log is in every
/// snapshot, and a retry is answered with the object as it is now. A hash
/// map: every write looks its id up and inserts it, on every manager, and
/// nothing needs the ids in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RequestLog {
    responses: HashMap<String, Result<RememberedOutcome, CoreError>>,
    order: VecDeque<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum RememberedOutcome {
    Done,
    ManagerId(u64),
    Service { id: String },
    ServiceRemoved { id: String, index: u64 },
    Node { id: String },
    NodeRemoved { id: String },
    Trigger { id: String },
    TriggerRemoved { id: String },
    StackDeployed(Box<StackPlan>),
    StackRemoved { services: Vec<String> },
    Secret { id: String },
    SecretRemoved { id: String },
}

impl RememberedOutcome {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Done => RememberedOutcome::Done,
            Outcome::ManagerId(id) => RememberedOutcome::ManagerId(*id),
            Outcome::Service(service) => RememberedOutcome::Service { id: service.id.clone() },
            Outcome::ServiceRemoved { id, index } => {
                RememberedOutcome::ServiceRemoved { id: id.clone(), index: *index }
            }
            Outcome::Node(node) => RememberedOutcome::Node { id: node.id.clone() },
            Outcome::NodeRemoved { id } => RememberedOutcome::NodeRemoved { id: id.clone() },
            Outcome::Trigger(trigger) => RememberedOutcome::Trigger { id: trigger.id.clone() },
            Outcome::TriggerRemoved { id } => RememberedOutcome::TriggerRemoved { id: id.clone() },
            Outcome::StackDeployed(plan) => RememberedOutcome::StackDeployed(plan.clone()),
            Outcome::StackRemoved { services } => RememberedOutcome::StackRemoved { services: services.clone() },
            Outcome::Secret(secret) => RememberedOutcome::Secret { id: secret.id.clone() },
            Outcome::SecretRemoved { id } => RememberedOutcome::SecretRemoved { id: id.clone() },
            // Not reached: a batch's requests are remembered one by one.
            Outcome::Batch(_) => RememberedOutcome::Done,
        }
    }
}

impl RequestLog {
    fn get(&self, request_id: &str) -> Option<&Result<RememberedOutcome, CoreError>> {
        self.responses.get(request_id)
    }

    fn remember(&mut self, request_id: &str, response: &Response) {
        if request_id.is_empty() {
            return;
        }
        self.responses
            .insert(request_id.to_string(), response.as_ref().map(RememberedOutcome::of).map_err(Clone::clone));
        self.order.push_back(request_id.to_string());
        while self.order.len() > MAX_REMEMBERED_REQUESTS {
            if let Some(old) = self.order.pop_front() {
                self.responses.remove(&old);
            }
        }
    }
}

impl ClusterState {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.service_ids.get(name).and_then(|id| self.services.get(id))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Finds a node by id, or else by name.
    pub fn find_node(&self, id_or_name: &str) -> Option<&Node> {
        self.nodes.get(id_or_name).or_else(|| self.node_ids.get(id_or_name).and_then(|id| self.nodes.get(id)))
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn service_by_id(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_service.get(service_id).into_iter().flatten().filter_map(|id| self.tasks.get(id))
    }

    pub fn tasks_of_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_node.get(node_id).into_iter().flatten().filter_map(|id| self.tasks.get(id))
    }

    /// The response already given to `request_id`, if it was applied.
    /// The response to `request_id` if it was applied before, with the
    /// objects it names as they are now.
    pub fn previous_response(&self, request_id: &str) -> Option<Response> {
        let remembered = self.requests.get(request_id)?;
        Some(match remembered {
            Err(e) => Err(e.clone()),
            Ok(RememberedOutcome::Done) => Ok(Outcome::Done),
            Ok(RememberedOutcome::ManagerId(id)) => Ok(Outcome::ManagerId(*id)),
            Ok(RememberedOutcome::Service { id }) => match self.services.get(id) {
                Some(service) => Ok(Outcome::Service(Box::new(service.clone()))),
                None => Ok(Outcome::ServiceRemoved { id: id.clone(), index: 0 }),
            },
            Ok(RememberedOutcome::ServiceRemoved { id, index }) => {
                Ok(Outcome::ServiceRemoved { id: id.clone(), index: *index })
            }
            Ok(RememberedOutcome::Node { id }) => match self.nodes.get(id) {
                Some(node) => Ok(Outcome::Node(Box::new(node.clone()))),
                None => Ok(Outcome::NodeRemoved { id: id.clone() }),
            },
            Ok(RememberedOutcome::NodeRemoved { id }) => Ok(Outcome::NodeRemoved { id: id.clone() }),
            Ok(RememberedOutcome::Trigger { id }) => match self.triggers.get(id) {
                Some(trigger) => Ok(Outcome::Trigger(Box::new(trigger.clone()))),
                None => Ok(Outcome::TriggerRemoved { id: id.clone() }),
            },
            Ok(RememberedOutcome::TriggerRemoved { id }) => Ok(Outcome::TriggerRemoved { id: id.clone() }),
            Ok(RememberedOutcome::StackDeployed(plan)) => Ok(Outcome::StackDeployed(plan.clone())),
            Ok(RememberedOutcome::StackRemoved { services }) => {
                Ok(Outcome::StackRemoved { services: services.clone() })
            }
            Ok(RememberedOutcome::Secret { id }) => match self.secrets.values().find(|s| s.id == *id) {
                Some(secret) => Ok(Outcome::Secret(Box::new(secret.clone()))),
                None => Ok(Outcome::SecretRemoved { id: id.clone() }),
            },
            Ok(RememberedOutcome::SecretRemoved { id }) => Ok(Outcome::SecretRemoved { id: id.clone() }),
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.values()
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    pub fn registries(&self) -> impl Iterator<Item = &crate::secret::RegistryAuth> {
        self.registries.values()
    }

    /// The credentials for the registry `image` names, if any are stored.
    pub fn registry_auth_for(&self, image: &str) -> Option<&crate::secret::RegistryAuth> {
        crate::secret::registry_of(image).and_then(|host| self.registries.get(host))
    }

    pub fn triggers(&self) -> impl Iterator<Item = &Trigger> {
        self.triggers.values()
    }

    fn trigger_by_hash(&self, token_hash: &str) -> Option<&Trigger> {
        self.triggers.values().find(|t| t.token_hash == token_hash)
    }

    /// The level every manager supports (see [`ClusterVersion`]).
    pub fn cluster_version(&self) -> ClusterVersion {
        self.cluster_version.unwrap_or(ClusterVersion::INITIAL)
    }

    /// Refuses a command that needs a higher cluster version than the
    /// recorded one: a manager of an older release could not read it, or
    /// would drop part of it. Part of [`ClusterState::check`]; a manager
    /// that forwards a write runs it too, since the leader it forwards to
    /// may be of the older release and know nothing of levels.
    pub fn check_cluster_version(&self, command: &Command) -> Result<(), CoreError> {
        let needed = command.required_version();
        // Raising the level is itself the one write above the level: the
        // leader proposes it only after every voter reported that release.
        if needed > self.cluster_version() && !matches!(command, Command::SetClusterVersion { .. }) {
            return Err(CoreError::Conflict(format!(
                "this write needs cluster version {needed}, and the cluster runs {}: every manager \
                 must run berth {needed} or later first (`berth cluster status` shows their versions)",
                self.cluster_version()
            )));
        }
        Ok(())
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Checks a command against the current state without changing it. The
    /// leader runs this before proposing, so a request that would be refused
    /// never becomes a Raft entry; `apply` runs it again because the state
    /// may have moved between the check and the commit.
    pub fn check(&self, command: &Command) -> Result<(), CoreError> {
        self.check_cluster_version(command)?;
        match command {
            // Each request is checked as it is applied.
            Command::Batch { .. } => Ok(()),
            Command::InitCluster { .. } => {
                if self.cluster.is_some() {
                    return Err(CoreError::Conflict("cluster is already initialised".into()));
                }
                Ok(())
            }
            Command::AllocateManagerId { .. } => Ok(()),
            Command::RegisterNode { name, tags, .. } => {
                validate_node_name(name)?;
                for (i, tag) in tags.iter().enumerate() {
                    crate::spec::validate_tag(&format!("tags[{i}]"), tag)?;
                }
                Ok(())
            }
            Command::UpdateNode { id, tags_add, .. } => {
                self.nodes.get(id).ok_or_else(|| CoreError::not_found("node", id))?;
                for (i, tag) in tags_add.iter().enumerate() {
                    crate::spec::validate_tag(&format!("tag_add[{i}]"), tag)?;
                }
                Ok(())
            }
            Command::SetClusterVersion { version } => {
                if *version < self.cluster_version() {
                    return Err(CoreError::Conflict(format!(
                        "the cluster version only goes up: it is {}, not {version}",
                        self.cluster_version()
                    )));
                }
                Ok(())
            }
            Command::RemoveNode { id } => {
                let node = self.nodes.get(id).ok_or_else(|| CoreError::not_found("node", id))?;
                if node.status == NodeStatus::Ready {
                    return Err(CoreError::Conflict(format!(
                        "node '{}' is ready; stop its agent first (or drain it to move its tasks)",
                        node.name
                    )));
                }
                Ok(())
            }
            // Controller and agent batches: each item is re-checked as it
            // applies, since the state may have moved since they were decided.
            Command::SetNodeStatus { .. } | Command::ReconcileTasks(_) | Command::AssignTasks { .. } => Ok(()),
            Command::ReportTaskStatus { node_id, .. } => {
                self.nodes.get(node_id).ok_or_else(|| CoreError::not_found("node", node_id))?;
                Ok(())
            }
            Command::CreateService { spec, .. } => {
                spec.validate()?;
                if self.service_ids.contains_key(&spec.name) {
                    return Err(CoreError::AlreadyExists { kind: "service".into(), name: spec.name.clone() });
                }
                self.check_references(spec, &|_| false, &BTreeSet::new())
            }
            Command::UpdateService { name, spec, expected_version } => {
                spec.validate()?;
                let current = self.service(name).ok_or_else(|| CoreError::not_found("service", name))?;
                if current.version != *expected_version {
                    return Err(CoreError::StaleVersion { expected: *expected_version, found: current.version });
                }
                if spec.name != *name {
                    return Err(CoreError::invalid(
                        "name",
                        format!("a service cannot be renamed ('{name}' to '{}')", spec.name),
                    ));
                }
                let own_id = current.id.clone();
                self.check_references(spec, &|s| s.id == own_id, &BTreeSet::new())
            }
            Command::DeployStack { stack, services, prune } => self.check_stack(stack, services, *prune),
            Command::RemoveStack { stack } => {
                let names: BTreeSet<&str> =
                    crate::stack::stack_services(self, stack).iter().map(|s| s.spec.name.as_str()).collect();
                if names.is_empty() {
                    return Err(CoreError::not_found("stack", stack));
                }
                self.check_no_outside_dependents(stack, &names)
            }
            Command::ScaleService { name, replicas } => {
                let current = self.service(name).ok_or_else(|| CoreError::not_found("service", name))?;
                if current.spec.mode == ServiceMode::EveryNode {
                    return Err(CoreError::invalid(
                        "replicas",
                        format!("service '{name}' runs on every node and cannot be scaled"),
                    ));
                }
                // The rest of the spec was checked when it was stored.
                crate::spec::validate_mode(&ServiceMode::Replicated { replicas: *replicas }, current.spec.strategy)
            }
            Command::RedeployService { name } => {
                self.service(name).ok_or_else(|| CoreError::not_found("service", name))?;
                Ok(())
            }
            Command::RollbackService { name } => {
                let service = self.service(name).ok_or_else(|| CoreError::not_found("service", name))?;
                if service.previous_spec.is_none() {
                    return Err(CoreError::Conflict(format!(
                        "service '{name}' has no previous spec to roll back to (it was never updated)"
                    )));
                }
                Ok(())
            }
            Command::CreateSecret { name, sealed, size, .. } => {
                crate::secret::validate_secret(name, usize::try_from(*size).unwrap_or(usize::MAX))?;
                if sealed.is_empty() {
                    return Err(CoreError::invalid("data", "was not sealed"));
                }
                if self.secrets.contains_key(name) {
                    return Err(CoreError::AlreadyExists { kind: "secret".into(), name: name.clone() });
                }
                if self.secrets.len() >= crate::secret::MAX_SECRETS {
                    return Err(CoreError::Conflict(format!(
                        "the cluster already has {} secrets, the most it keeps",
                        crate::secret::MAX_SECRETS
                    )));
                }
                Ok(())
            }
            Command::SetRegistryAuth { host, username, sealed_password } => {
                crate::secret::validate_registry_host(host)?;
                if username.is_empty() || username.len() > 255 {
                    return Err(CoreError::invalid("username", "must be 1 to 255 characters"));
                }
                if sealed_password.is_empty() {
                    return Err(CoreError::invalid("password", "was not sealed"));
                }
                Ok(())
            }
            Command::RemoveRegistryAuth { host } => {
                self.registries.get(host).ok_or_else(|| CoreError::not_found("registry", host))?;
                Ok(())
            }
            Command::RemoveSecret { name } => {
                self.secrets.get(name).ok_or_else(|| CoreError::not_found("secret", name))?;
                let users: Vec<&str> = self
                    .services
                    .values()
                    .filter(|s| s.spec.secrets.iter().any(|r| r.name == *name))
                    .map(|s| s.spec.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(CoreError::Conflict(format!(
                        "secret '{name}' is used by {}; update those services first",
                        users.join(", ")
                    )));
                }
                Ok(())
            }
            Command::CreateTrigger { service, token_hash, .. } => {
                self.service(service).ok_or_else(|| CoreError::not_found("service", service))?;
                if self.triggers.len() >= crate::trigger::MAX_TRIGGERS {
                    return Err(CoreError::Conflict(format!(
                        "the cluster already has {} triggers, the most it keeps",
                        crate::trigger::MAX_TRIGGERS
                    )));
                }
                if token_hash.len() != 64 || self.trigger_by_hash(token_hash).is_some() {
                    return Err(CoreError::invalid("token", "must be a fresh secret"));
                }
                Ok(())
            }
            Command::RemoveTrigger { id } => {
                self.triggers.get(id).ok_or_else(|| CoreError::not_found("trigger", id))?;
                Ok(())
            }
            Command::FireTrigger { token_hash } => {
                // Says nothing about which part was wrong: the caller may be guessing.
                let trigger = self.trigger_by_hash(token_hash).ok_or_else(|| CoreError::not_found("trigger", "?"))?;
                let service =
                    self.services.get(&trigger.service_id).ok_or_else(|| CoreError::not_found("trigger", "?"))?;
                match (trigger.action, service.spec.mode) {
                    (TriggerAction::ScaleUp | TriggerAction::ScaleDown, ServiceMode::EveryNode) => {
                        Err(CoreError::Conflict(format!(
                            "service '{}' runs on every node and cannot be scaled",
                            service.spec.name
                        )))
                    }
                    (TriggerAction::ScaleUp, ServiceMode::Replicated { replicas })
                        if replicas >= crate::MAX_REPLICAS =>
                    {
                        Err(CoreError::invalid("replicas", format!("{replicas} is already the maximum")))
                    }
                    _ => Ok(()),
                }
            }
            Command::ImageChanged { node_id, .. } => {
                self.nodes.get(node_id).ok_or_else(|| CoreError::not_found("node", node_id))?;
                Ok(())
            }
            Command::RemoveService { name } => {
                self.service(name).ok_or_else(|| CoreError::not_found("service", name))?;
                let dependents = self.dependents(&BTreeSet::from([name.as_str()]), |_| false);
                if !dependents.is_empty() {
                    return Err(CoreError::Conflict(format!(
                        "service '{name}' is linked from or depended on by {}; remove or update those first",
                        dependents.join(", ")
                    )));
                }
                Ok(())
            }
        }
    }

    /// Links must name existing services and host ports must be free: two
    /// services publishing one host port could never share a node.
    /// `freed` tells the services whose ports this write takes over (the
    /// service itself, or its stack); `created` names services the same
    /// write creates, which links may name.
    fn check_references(
        &self,
        spec: &ServiceSpec,
        freed: &dyn Fn(&Service) -> bool,
        created: &BTreeSet<&str>,
    ) -> Result<(), CoreError> {
        let exists = |name: &String| self.service_ids.contains_key(name) || created.contains(name.as_str());
        for (i, link) in spec.links.iter().enumerate() {
            if !exists(&link.service) {
                return Err(CoreError::invalid(
                    format!("links[{i}].service"),
                    format!("service '{}' does not exist", link.service),
                ));
            }
        }
        for (i, dependency) in spec.depends_on.iter().enumerate() {
            if !exists(&dependency.service) {
                return Err(CoreError::invalid(
                    format!("depends_on[{i}].service"),
                    format!("service '{}' does not exist", dependency.service),
                ));
            }
        }
        for (i, secret) in spec.secrets.iter().enumerate() {
            if !self.secrets.contains_key(&secret.name) {
                return Err(CoreError::invalid(
                    format!("secrets[{i}].name"),
                    format!("secret '{}' does not exist (berth secret create)", secret.name),
                ));
            }
        }
        for (i, port) in spec.ports.iter().enumerate() {
            let taken_by =
                self.services.values().filter(|s| !freed(s)).find(|s| {
                    s.spec.ports.iter().any(|p| p.host_port == port.host_port && p.protocol == port.protocol)
                });
            if let Some(other) = taken_by {
                return Err(CoreError::invalid(
                    format!("ports[{i}].host_port"),
                    format!(
                        "host port {}/{} is already published by service '{}'",
                        port.host_port, port.protocol, other.spec.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_stack(&self, stack: &str, services: &[(String, ServiceSpec)], prune: bool) -> Result<(), CoreError> {
        validate_name("stack", stack)?;
        let mut names = BTreeSet::new();
        let mut ports = BTreeMap::new();
        for (_, spec) in services {
            spec.validate().map_err(|e| e.in_service(&spec.name))?;
            if spec.stack != stack {
                return Err(CoreError::invalid("stack", format!("must be '{stack}'")).in_service(&spec.name));
            }
            if !names.insert(spec.name.as_str()) {
                return Err(CoreError::invalid("services", format!("service '{}' appears twice", spec.name)));
            }
            if let Some(other) = self.service(&spec.name).filter(|s| s.spec.stack != stack) {
                return Err(CoreError::Conflict(format!(
                    "service '{}' already exists outside stack '{stack}'{}",
                    spec.name,
                    if other.spec.stack.is_empty() {
                        String::new()
                    } else {
                        format!(" (in stack '{}')", other.spec.stack)
                    }
                )));
            }
            for port in &spec.ports {
                if let Some(first) = ports.insert((port.host_port, port.protocol), spec.name.as_str()) {
                    let why = format!("host port {}/{} is also published by '{first}'", port.host_port, port.protocol);
                    return Err(CoreError::invalid("ports", why).in_service(&spec.name));
                }
            }
        }
        let created: BTreeSet<&str> = names.iter().copied().filter(|n| self.service(n).is_none()).collect();
        for (_, spec) in services {
            self.check_references(spec, &|s| s.spec.stack == stack, &created).map_err(|e| e.in_service(&spec.name))?;
        }
        if prune {
            let removed: BTreeSet<&str> = crate::stack::stack_services(self, stack)
                .iter()
                .map(|s| s.spec.name.as_str())
                .filter(|n| !names.contains(n))
                .collect();
            self.check_no_outside_dependents(stack, &removed)?;
            for (_, spec) in services {
                if let Some(gone) = spec
                    .links
                    .iter()
                    .map(|l| &l.service)
                    .chain(spec.depends_on.iter().map(|d| &d.service))
                    .find(|n| removed.contains(n.as_str()))
                {
                    return Err(CoreError::invalid("links", format!("service '{gone}' is pruned by this deploy"))
                        .in_service(&spec.name));
                }
            }
        }
        Ok(())
    }

    /// Services outside `stack` must not link to or depend on `names`.
    fn check_no_outside_dependents(&self, stack: &str, names: &BTreeSet<&str>) -> Result<(), CoreError> {
        match self.dependents(names, |s| s.spec.stack == stack).first() {
            Some(name) => Err(CoreError::Conflict(format!(
                "service '{name}' outside stack '{stack}' links to or depends on a service this would remove"
            ))),
            None => Ok(()),
        }
    }

    /// The services, besides the `ignored` ones, that link to or depend on
    /// one of `names`: what removing those would break.
    fn dependents(&self, names: &BTreeSet<&str>, ignored: impl Fn(&Service) -> bool) -> Vec<&str> {
        self.services
            .values()
            .filter(|s| !ignored(s))
            .filter(|s| {
                s.spec.links.iter().any(|l| names.contains(l.service.as_str()))
                    || s.spec.depends_on.iter().any(|d| names.contains(d.service.as_str()))
            })
            .map(|s| s.spec.name.as_str())
            .collect()
    }

    /// Applies one committed request at `index`. Returns the response for
    /// the client and the changes for watchers. A request id seen before
    /// returns the first response again and changes nothing.
    pub fn apply(&mut self, index: u64, request: &Request) -> (Response, Vec<Change>) {
        self.apply_nested(index, request, false)
    }

    fn apply_nested(&mut self, index: u64, request: &Request, in_batch: bool) -> (Response, Vec<Change>) {
        self.applied_index = index;
        if let Command::Batch { requests } = &request.command {
            // Only the leader makes batches, of lone requests: one inside
            // another is refused rather than recursed into.
            if in_batch {
                return (Err(CoreError::Conflict("a batch cannot hold another batch".into())), Vec::new());
            }
            let mut changes = Vec::new();
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                let (response, changed) = self.apply_nested(index, request, true);
                responses.push(response);
                changes.extend(changed);
            }
            return (Ok(Outcome::Batch(responses)), changes);
        }
        if let Some(previous) = self.previous_response(&request.request_id) {
            return (previous, Vec::new());
        }
        let mut changes = Vec::new();
        let response = self.check(&request.command).map(|()| self.execute(index, request, &mut changes));
        self.requests.remember(&request.request_id, &response);
        (response, changes)
    }

    /// Carries out a command that `check` accepted.
    fn execute(&mut self, index: u64, request: &Request, changes: &mut Vec<Change>) -> Outcome {
        let now = request.issued_at_ms;
        match &request.command {
            // `apply` takes a batch apart before it gets here.
            Command::Batch { .. } => Outcome::Done,
            Command::InitCluster { cluster_id, manager_token_hash, worker_token_hash } => {
                self.cluster = Some(ClusterInfo {
                    id: cluster_id.clone(),
                    manager_token_hash: manager_token_hash.clone(),
                    worker_token_hash: worker_token_hash.clone(),
                    created_at_ms: now,
                });
                Outcome::Done
            }
            Command::AllocateManagerId { .. } => {
                // The bootstrap manager is 1, whether or not it allocated.
                self.last_manager_id = self.last_manager_id.max(1) + 1;
                Outcome::ManagerId(self.last_manager_id)
            }
            Command::CreateService { id, spec } => {
                self.create_service(Service::new(id.clone(), spec.clone(), index, now), changes)
            }
            Command::UpdateService { name, spec, .. } => {
                self.modify_service(name, index, now, changes, |service| update_spec(service, spec, now))
            }
            Command::RedeployService { name } => {
                self.modify_service(name, index, now, changes, |service| start_redeploy(service, now))
            }
            Command::DeployStack { stack, services, prune } => {
                let specs: Vec<ServiceSpec> = services.iter().map(|(_, spec)| spec.clone()).collect();
                let plan = crate::stack::plan(self, stack, &specs, *prune);
                for (id, spec) in services {
                    if plan.create.contains(&spec.name) {
                        let service = Service::new(id.clone(), spec.clone(), index, now);
                        self.create_service(service, changes);
                    } else if plan.update.contains(&spec.name) {
                        self.modify_service(&spec.name, index, now, changes, |service| update_spec(service, spec, now));
                    }
                }
                for name in &plan.remove {
                    self.remove_service(name, changes);
                }
                Outcome::StackDeployed(Box::new(plan))
            }
            Command::RemoveStack { stack } => {
                let names: Vec<String> =
                    crate::stack::stack_services(self, stack).iter().map(|s| s.spec.name.clone()).collect();
                for name in &names {
                    self.remove_service(name, changes);
                }
                Outcome::StackRemoved { services: names }
            }
            Command::RollbackService { name } => self.modify_service(name, index, now, changes, |service| {
                roll_back(service, RolloutKind::Rollback, String::new(), now);
            }),
            Command::CreateSecret { id, name, sealed, size } => {
                let secret = Secret {
                    id: id.clone(),
                    name: name.clone(),
                    sealed: sealed.clone(),
                    size: *size,
                    created_at_ms: now,
                };
                self.secrets.insert(name.clone(), secret.clone());
                Outcome::Secret(Box::new(secret))
            }
            Command::SetRegistryAuth { host, username, sealed_password } => {
                let auth = crate::secret::RegistryAuth {
                    host: host.clone(),
                    username: username.clone(),
                    sealed_password: sealed_password.clone(),
                    created_at_ms: now,
                };
                self.registries.insert(host.clone(), auth);
                Outcome::Done
            }
            Command::RemoveRegistryAuth { host } => {
                self.registries.remove(host);
                Outcome::Done
            }
            Command::RemoveSecret { name } => match self.secrets.remove(name) {
                Some(secret) => Outcome::SecretRemoved { id: secret.id },
                None => Outcome::Done,
            },
            Command::CreateTrigger { id, service, action, token_hash } => {
                let Some(service_id) = self.service(service).map(|s| s.id.clone()) else { return Outcome::Done };
                let trigger = Trigger {
                    id: id.clone(),
                    service_id,
                    action: *action,
                    token_hash: token_hash.clone(),
                    created_at_ms: now,
                    last_fired_at_ms: 0,
                    fired_count: 0,
                };
                self.triggers.insert(id.clone(), trigger.clone());
                Outcome::Trigger(Box::new(trigger))
            }
            Command::RemoveTrigger { id } => {
                self.triggers.remove(id);
                Outcome::TriggerRemoved { id: id.clone() }
            }
            Command::FireTrigger { token_hash } => self.fire_trigger(token_hash, index, now, changes),
            Command::ImageChanged { image, image_id, .. } => {
                let targets: Vec<String> = self
                    .services
                    .values()
                    .filter(|s| {
                        s.spec.autoredeploy
                            && same_image(&s.spec.image, image)
                            && s.autoredeployed_image_id != *image_id
                    })
                    .map(|s| s.spec.name.clone())
                    .collect();
                for name in targets {
                    self.modify_service(&name, index, now, changes, |service| {
                        start_redeploy(service, now);
                        service.autoredeployed_image_id = image_id.clone();
                        if let Some(rollout) = service.rollout.as_mut() {
                            rollout.message = format!("autoredeploy: {image} is now {}", short_image_id(image_id));
                        }
                    });
                }
                Outcome::Done
            }
            Command::ScaleService { name, replicas } => self.modify_service(name, index, now, changes, |s| {
                s.spec.mode = ServiceMode::Replicated { replicas: *replicas }
            }),
            Command::RemoveService { name } => match self.remove_service(name, changes) {
                Some(id) => Outcome::ServiceRemoved { id, index },
                None => Outcome::Done,
            },
            Command::RegisterNode { id, name, address, tags, resources, agent_version } => {
                let existing = self.node_ids.get(name).and_then(|id| self.nodes.get(id)).cloned();
                let node = match existing {
                    // A known name is the same host coming back: keep its id,
                    // and the tags and availability operators gave it since.
                    Some(mut node) => {
                        node.address = address.clone();
                        node.resources = *resources;
                        node.agent_version = agent_version.clone();
                        node.status = NodeStatus::Ready;
                        node.status_message.clear();
                        node.updated_at_ms = now;
                        node
                    }
                    None => Node {
                        id: id.clone(),
                        name: name.clone(),
                        address: address.clone(),
                        tags: tags.iter().cloned().collect(),
                        resources: *resources,
                        availability: Availability::Active,
                        status: NodeStatus::Ready,
                        status_message: String::new(),
                        created_at_ms: now,
                        updated_at_ms: now,
                        agent_version: agent_version.clone(),
                    },
                };
                self.put_node(node.clone(), changes);
                Outcome::Node(Box::new(node))
            }
            Command::SetClusterVersion { version } => {
                self.cluster_version = Some(*version);
                Outcome::Done
            }
            Command::UpdateNode { id, availability, tags_add, tags_rm } => {
                let Some(mut node) = self.nodes.get(id).cloned() else { return Outcome::Done };
                if let Some(availability) = availability {
                    node.availability = *availability;
                }
                node.tags.extend(tags_add.iter().cloned());
                for tag in tags_rm {
                    node.tags.remove(tag);
                }
                node.updated_at_ms = now;
                self.put_node(node.clone(), changes);
                Outcome::Node(Box::new(node))
            }
            Command::RemoveNode { id } => {
                self.orphan_tasks_of_node(id, now, "its node was removed", changes);
                if let Some(node) = self.nodes.remove(id) {
                    self.node_ids.remove(&node.name);
                    changes.push(Change::NodeRemoved { id: id.clone() });
                }
                Outcome::NodeRemoved { id: id.clone() }
            }
            Command::SetNodeStatus { updates } => {
                for update in updates {
                    let Some(mut node) = self.nodes.get(&update.node_id).cloned() else { continue };
                    if node.status == update.status {
                        continue;
                    }
                    node.status = update.status;
                    node.status_message = update.message.clone();
                    node.updated_at_ms = now;
                    self.put_node(node, changes);
                    if update.status == NodeStatus::Down {
                        self.orphan_tasks_of_node(&update.node_id, now, "its node went down", changes);
                    }
                }
                Outcome::Done
            }
            Command::ReconcileTasks(plan) => {
                self.apply_plan(plan, now, changes);
                Outcome::Done
            }
            Command::AssignTasks { assignments, unplaceable } => {
                for (task_id, node_id) in assignments {
                    let Some(mut task) = self.tasks.get(task_id).cloned() else { continue };
                    let placeable = task.state < TaskState::Assigned
                        && task.desired == DesiredState::Running
                        && self.nodes.get(node_id).is_some_and(Node::accepts_tasks);
                    if !placeable {
                        continue;
                    }
                    // A task is on one node's list at a time, or two agents would run it.
                    if let Some(previous) = task.node_id.take().filter(|n| n != node_id) {
                        self.unindex_task_node(&task.id, &previous);
                    }
                    task.node_id = Some(node_id.clone());
                    task.state = TaskState::Assigned;
                    task.message.clear();
                    task.state_since_ms = now;
                    self.put_task(task, changes);
                }
                for (task_id, reason) in unplaceable {
                    let Some(mut task) = self.tasks.get(task_id).cloned() else { continue };
                    if task.state > TaskState::Pending || (task.state == TaskState::Pending && task.message == *reason)
                    {
                        continue;
                    }
                    if task.state < TaskState::Pending {
                        task.state_since_ms = now;
                    }
                    task.state = TaskState::Pending;
                    task.message = reason.clone();
                    self.put_task(task, changes);
                }
                Outcome::Done
            }
            Command::ReportTaskStatus { node_id, statuses } => {
                for status in statuses {
                    let Some(mut task) = self.tasks.get(&status.task_id).cloned() else { continue };
                    // Only the node running a task speaks for it.
                    if task.node_id.as_deref() != Some(node_id.as_str()) {
                        continue;
                    }
                    let forward = status.state > task.state;
                    let same_state = status.state == task.state;
                    let health_changed = same_state && status.health != task.health;
                    let endpoints_changed =
                        same_state && !status.endpoints.is_empty() && status.endpoints != task.endpoints;
                    if !forward && !health_changed && !endpoints_changed {
                        continue;
                    }
                    if forward {
                        if status.state == TaskState::Running {
                            task.started_at_ms = now;
                        }
                        task.state = status.state;
                        task.state_since_ms = now;
                        if !status.message.is_empty() || status.state.is_terminal() {
                            task.message = status.message.clone();
                        }
                    }
                    task.health = status.health;
                    if task.ready_at_ms == 0 && crate::rollout::is_ready(&task) {
                        task.ready_at_ms = now;
                    }
                    if !status.container_id.is_empty() {
                        task.container_id = status.container_id.clone();
                    }
                    if !status.endpoints.is_empty() {
                        task.endpoints = status.endpoints.clone();
                    }
                    if status.exit_code.is_some() {
                        task.exit_code = status.exit_code;
                    }
                    self.put_task(task, changes);
                }
                Outcome::Done
            }
        }
    }

    /// Forgets a service and its triggers; its tasks go with the next
    /// orchestrator pass.
    fn remove_service(&mut self, name: &str, changes: &mut Vec<Change>) -> Option<String> {
        let id = self.service_ids.remove(name)?;
        self.services.remove(&id);
        self.triggers.retain(|_, t| t.service_id != id);
        changes.push(Change::ServiceRemoved { id: id.clone(), name: name.to_string() });
        Some(id)
    }

    fn fire_trigger(&mut self, token_hash: &str, index: u64, now: i64, changes: &mut Vec<Change>) -> Outcome {
        let Some(trigger) = self.triggers.values_mut().find(|t| t.token_hash == token_hash) else {
            return Outcome::Done;
        };
        trigger.last_fired_at_ms = now;
        trigger.fired_count += 1;
        let (action, service_id) = (trigger.action, trigger.service_id.clone());
        let Some(name) = self.services.get(&service_id).map(|s| s.spec.name.clone()) else { return Outcome::Done };
        self.modify_service(&name, index, now, changes, |service| match action {
            TriggerAction::Redeploy => start_redeploy(service, now),
            TriggerAction::ScaleUp | TriggerAction::ScaleDown => {
                if let ServiceMode::Replicated { replicas } = service.spec.mode {
                    let replicas =
                        if action == TriggerAction::ScaleUp { replicas + 1 } else { replicas.saturating_sub(1) };
                    service.spec.mode = ServiceMode::Replicated { replicas };
                }
            }
        })
    }

    fn put_node(&mut self, node: Node, changes: &mut Vec<Change>) {
        self.node_ids.insert(node.name.clone(), node.id.clone());
        changes.push(Change::NodeUpserted(Box::new(node.clone())));
        self.nodes.insert(node.id.clone(), node);
    }

    fn put_task(&mut self, task: Task, changes: &mut Vec<Change>) {
        self.tasks_by_service.entry(task.service_id.clone()).or_default().insert(task.id.clone());
        if let Some(node_id) = &task.node_id {
            self.tasks_by_node.entry(node_id.clone()).or_default().insert(task.id.clone());
        }
        changes.push(Change::TaskUpserted(Box::new(task.clone())));
        self.tasks.insert(task.id.clone(), task);
    }

    fn unindex_task_node(&mut self, task_id: &str, node_id: &str) {
        if let Some(ids) = self.tasks_by_node.get_mut(node_id) {
            ids.remove(task_id);
            if ids.is_empty() {
                self.tasks_by_node.remove(node_id);
            }
        }
    }

    fn delete_task(&mut self, id: &str, changes: &mut Vec<Change>) {
        let Some(task) = self.tasks.remove(id) else { return };
        if let Some(ids) = self.tasks_by_service.get_mut(&task.service_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.tasks_by_service.remove(&task.service_id);
            }
        }
        if let Some(node_id) = &task.node_id {
            self.unindex_task_node(id, node_id);
        }
        changes.push(Change::TaskRemoved { id: task.id, service_id: task.service_id });
    }

    /// A node that is gone can no longer tell what became of its tasks.
    fn orphan_tasks_of_node(&mut self, node_id: &str, now: i64, why: &str, changes: &mut Vec<Change>) {
        let orphans: Vec<Task> = self.tasks_of_node(node_id).filter(|t| !t.state.is_terminal()).cloned().collect();
        for mut task in orphans {
            task.state = TaskState::Orphaned;
            task.state_since_ms = now;
            task.message = why.to_string();
            self.put_task(task, changes);
        }
    }

    fn apply_plan(&mut self, plan: &TaskPlan, now: i64, changes: &mut Vec<Change>) {
        for task in &plan.create {
            if self.tasks.contains_key(&task.id) || !self.services.contains_key(&task.service_id) {
                continue;
            }
            let mut task = task.clone();
            task.created_at_ms = now;
            task.state_since_ms = now;
            self.put_task(task, changes);
        }
        for (task_id, desired) in &plan.set_desired {
            let Some(mut task) = self.tasks.get(task_id).cloned() else { continue };
            // Desired state only moves forward: running, shutdown, remove.
            if *desired <= task.desired {
                continue;
            }
            task.desired = *desired;
            self.put_task(task, changes);
        }
        for task_id in &plan.delete {
            self.delete_task(task_id, changes);
        }
        for decision in &plan.rollouts {
            self.apply_rollout_decision(decision, now, changes);
        }
    }

    /// Applies a rollout decision if the service is still the one it was
    /// decided for; otherwise a user's change overtook it and it is void.
    fn apply_rollout_decision(&mut self, decision: &RolloutDecision, now: i64, changes: &mut Vec<Change>) {
        let Some(service) = self.services.get(&decision.service_id) else { return };
        let rolling = service.rollout.as_ref().is_some_and(|r| r.state == RolloutState::Rolling);
        if service.version != decision.service_version || !rolling {
            return;
        }
        let mut service = service.clone();
        let Some(rollout) = service.rollout.as_mut() else { return };
        match &decision.action {
            RolloutAction::TaskFailed { task_id } => {
                rollout.failed_tasks.insert(task_id.clone());
            }
            RolloutAction::Pause { reason } => {
                rollout.state = RolloutState::Paused;
                rollout.finished_at_ms = now;
                rollout.message = reason.clone();
            }
            RolloutAction::Complete { message } => {
                rollout.state = RolloutState::Completed;
                rollout.finished_at_ms = now;
                rollout.message = message.clone();
            }
            RolloutAction::Rollback { reason } => {
                // A rollback changes the spec, so it is a new version.
                roll_back(&mut service, RolloutKind::AutoRollback, reason.clone(), now);
                service.version = self.applied_index;
                service.updated_at_ms = now;
            }
        }
        self.upsert_service(service, changes);
    }

    fn modify_service(
        &mut self,
        name: &str,
        index: u64,
        now: i64,
        changes: &mut Vec<Change>,
        edit: impl FnOnce(&mut Service),
    ) -> Outcome {
        let Some(mut service) = self.service(name).cloned() else {
            return Outcome::Done;
        };
        edit(&mut service);
        service.version = index;
        service.updated_at_ms = now;
        self.upsert_service(service, changes)
    }

    /// Records a service that did not exist, with a virtual IP number of
    /// its own.
    fn create_service(&mut self, mut service: Service, changes: &mut Vec<Change>) -> Outcome {
        service.virtual_ip =
            crate::discovery::free_virtual_ip(self.services.values().map(|s| s.virtual_ip), self.last_virtual_ip);
        if service.virtual_ip > 0 {
            self.last_virtual_ip = service.virtual_ip;
        }
        self.upsert_service(service, changes)
    }

    fn upsert_service(&mut self, service: Service, changes: &mut Vec<Change>) -> Outcome {
        self.service_ids.insert(service.spec.name.clone(), service.id.clone());
        self.services.insert(service.id.clone(), service.clone());
        changes.push(Change::ServiceUpserted(Box::new(service.clone())));
        Outcome::Service(Box::new(service))
    }
}

/// A new spec for the service: a change to what its tasks run starts a
/// rollout; updating a paused service (e.g. its failure action) resumes it.
fn update_spec(service: &mut Service, spec: &ServiceSpec, now: i64) {
    let paused = service.rollout.as_ref().is_some_and(|r| r.state == RolloutState::Paused);
    if service.spec.needs_redeploy_for(spec) {
        service.previous_spec = Some(std::mem::replace(&mut service.spec, spec.clone()));
        service.rollout = Some(Rollout::start(RolloutKind::Update, now));
    } else {
        service.spec = spec.clone();
        if paused {
            let kind = service.rollout.as_ref().map_or(RolloutKind::Update, |r| r.kind);
            service.rollout = Some(Rollout::start(kind, now));
        }
    }
}

/// Every task is replaced with a fresh one running the same spec.
fn start_redeploy(service: &mut Service, now: i64) {
    service.spec.force_redeploy += 1;
    service.rollout = Some(Rollout::start(RolloutKind::Redeploy, now));
}

/// Swaps the current and previous specs, keeping the current scale: a
/// rollback is about the version that runs, not how many copies.
fn roll_back(service: &mut Service, kind: RolloutKind, reason: String, now: i64) {
    let Some(mut previous) = service.previous_spec.take() else { return };
    previous.mode = service.spec.mode;
    service.previous_spec = Some(std::mem::replace(&mut service.spec, previous));
    let mut rollout = Rollout::start(kind, now);
    rollout.message = reason;
    service.rollout = Some(rollout);
}

fn short_image_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn validate_node_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoreError::invalid(
            "name",
            format!("node name '{name}' must be 1-253 characters without whitespace"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{PortMapping, Protocol, ServiceLink};

    /// Applies a request the test needs to succeed: a refusal fails the
    /// test here, with the reason, rather than later with a puzzle.
    fn apply_ok(state: &mut ClusterState, index: u64, request: &Request) -> Outcome {
        match state.apply(index, request).0 {
            Ok(outcome) => outcome,
            Err(e) => panic!("request '{}' at index {index} was refused: {e}", request.request_id),
        }
    }

    fn request(id: &str, command: Command) -> Request {
        Request { request_id: id.to_string(), issued_at_ms: 1_000, command }
    }

    fn create(name: &str) -> Command {
        Command::CreateService { id: format!("id-{name}"), spec: ServiceSpec::new(name, "busybox") }
    }

    #[test]
    fn create_then_update_bumps_the_version_to_the_entry_index() {
        let mut state = ClusterState::default();
        let (created, changes) = state.apply(5, &request("a", create("web")));
        let Ok(Outcome::Service(service)) = created else { panic!("create failed: {created:?}") };
        assert_eq!(service.version, 5);
        assert_eq!(changes.len(), 1);

        let mut spec = service.spec.clone();
        spec.image = "busybox:2".into();
        let update = Command::UpdateService { name: "web".into(), spec, expected_version: 5 };
        let (updated, _) = state.apply(9, &request("b", update));
        assert!(matches!(updated, Ok(Outcome::Service(ref s)) if s.version == 9 && s.spec.image == "busybox:2"));
    }

    #[test]
    fn a_scale_past_the_maximum_or_of_an_every_node_service_is_refused_and_changes_nothing() {
        let mut state = ClusterState::default();
        apply_ok(&mut state, 1, &request("a", create("web")));
        let scale = |replicas| Command::ScaleService { name: "web".into(), replicas };
        let (refused, changes) = state.apply(2, &request("b", scale(crate::MAX_REPLICAS + 1)));
        assert!(matches!(refused, Err(CoreError::SpecInvalid { ref field, .. }) if field == "replicas"), "{refused:?}");
        assert!(changes.is_empty());
        assert_eq!(
            state.service("web").map(|s| (s.version, s.spec.mode)),
            Some((1, ServiceMode::Replicated { replicas: 1 }))
        );

        let mut every = ServiceSpec::new("agentd", "busybox");
        every.mode = ServiceMode::EveryNode;
        every.strategy = crate::Strategy::EveryNode;
        apply_ok(&mut state, 3, &request("c", Command::CreateService { id: "id-agentd".into(), spec: every }));
        let (refused, _) = state.apply(4, &request("d", Command::ScaleService { name: "agentd".into(), replicas: 2 }));
        assert!(matches!(refused, Err(CoreError::SpecInvalid { ref field, .. }) if field == "replicas"), "{refused:?}");

        let (scaled, _) = state.apply(5, &request("e", scale(crate::MAX_REPLICAS)));
        assert!(matches!(scaled, Ok(Outcome::Service(ref s)) if s.version == 5), "{scaled:?}");
    }

    #[test]
    fn each_service_gets_the_next_free_virtual_ip_number_and_keeps_it() {
        let mut state = ClusterState::default();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            apply_ok(&mut state, i as u64 + 1, &request(name, create(name)));
        }
        let number = |state: &ClusterState, name: &str| state.service(name).map(|s| s.virtual_ip);
        assert_eq!([number(&state, "a"), number(&state, "b"), number(&state, "c")], [Some(1), Some(2), Some(3)]);
        apply_ok(&mut state, 4, &request("rm", Command::RemoveService { name: "b".into() }));
        let spec = ServiceSpec::new("a", "busybox:2");
        let update = Command::UpdateService { name: "a".into(), spec, expected_version: 1 };
        apply_ok(&mut state, 5, &request("up", update));
        apply_ok(&mut state, 6, &request("d", create("d")));
        assert_eq!(number(&state, "a"), Some(1), "an update keeps the number");
        assert_eq!(number(&state, "d"), Some(4), "a freed number is not handed out at once");
    }

    #[test]
    fn a_batch_applies_each_request_as_its_own_entry_would() {
        let mut state = ClusterState::default();
        apply_ok(&mut state, 1, &request("a", create("web")));
        let update = |id: &str, image: &str| {
            let spec = ServiceSpec::new("web", image);
            request(id, Command::UpdateService { name: "web".into(), spec, expected_version: 1 })
        };
        let batch = Command::Batch {
            requests: vec![update("u1", "busybox:2"), update("u2", "busybox:3"), request("a", create("web"))],
        };
        let (response, changes) = state.apply(7, &request("", batch));
        let Ok(Outcome::Batch(responses)) = response else { panic!("not a batch response: {response:?}") };
        assert!(matches!(&responses[0], Ok(Outcome::Service(s)) if s.version == 7 && s.spec.image == "busybox:2"));
        assert_eq!(responses[1], Err(CoreError::StaleVersion { expected: 1, found: 7 }), "based on the old version");
        assert!(
            matches!(&responses[2], Ok(Outcome::Service(s)) if s.id == "id-web"),
            "a retried create is answered from memory, not refused as a duplicate"
        );
        assert_eq!(changes.len(), 1, "only the first update changed anything");
        let again = state.apply(8, &update("u1", "busybox:2"));
        assert!(matches!(&again.0, Ok(Outcome::Service(s)) if s.spec.image == "busybox:2"));
        assert!(again.1.is_empty(), "a request of a batch is deduplicated like any other");
    }

    #[test]
    fn a_batch_inside_a_batch_is_refused() {
        let mut state = ClusterState::default();
        let batch = |requests: Vec<Request>| request("", Command::Batch { requests });
        let nested = batch(vec![batch(vec![request("a", create("a"))]), request("b", create("b"))]);
        let (response, _) = state.apply(1, &nested);
        let Ok(Outcome::Batch(answers)) = response else { panic!("{response:?}") };
        assert!(answers[0].is_err() && answers[1].is_ok(), "{answers:?}");
        assert!(state.service("a").is_none() && state.service("b").is_some());
    }

    #[test]
    fn a_stale_update_is_refused_and_changes_nothing() {
        let mut state = ClusterState::default();
        apply_ok(&mut state, 5, &request("a", create("web")));
        let before = state.service("web").cloned();
        let update =
            Command::UpdateService { name: "web".into(), spec: ServiceSpec::new("web", "other"), expected_version: 4 };
        let (response, changes) = state.apply(6, &request("b", update));
        assert_eq!(response, Err(CoreError::StaleVersion { expected: 4, found: 5 }));
        assert!(changes.is_empty());
        assert_eq!(state.service("web").cloned(), before);
    }

    #[test]
    fn a_retried_request_is_applied_once() {
        let mut state = ClusterState::default();
        let first = state.apply(1, &request("same", create("web")));
        let again = state.apply(2, &request("same", create("web")));
        assert_eq!(first.0, again.0, "the retry gets the first response");
        assert!(again.1.is_empty(), "the retry changes nothing");
        assert_eq!(state.services().count(), 1);
        let fresh = state.apply(3, &request("other", create("web")));
        assert!(matches!(fresh.0, Err(CoreError::AlreadyExists { .. })));
    }

    #[test]
    fn links_and_ports_are_checked_against_other_services() {
        let mut state = ClusterState::default();
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.links.push(ServiceLink { service: "db".into(), alias: String::new() });
        let err = state.check(&Command::CreateService { id: "x".into(), spec }).expect_err("missing link");
        assert_eq!(err, CoreError::invalid("links[0].service", "service 'db' does not exist"));

        let mut web = ServiceSpec::new("web", "busybox");
        web.ports.push(PortMapping { host_port: 80, container_port: 80, protocol: Protocol::Tcp });
        apply_ok(&mut state, 1, &request("a", Command::CreateService { id: "w".into(), spec: web.clone() }));
        let mut other = web.clone();
        other.name = "other".into();
        let err = state.check(&Command::CreateService { id: "o".into(), spec: other }).expect_err("port taken");
        assert!(matches!(err, CoreError::SpecInvalid { ref field, .. } if field == "ports[0].host_port"));
        // Its own port does not conflict with itself on update.
        let update = Command::UpdateService { name: "web".into(), spec: web, expected_version: 1 };
        assert_eq!(state.check(&update), Ok(()));
    }

    #[test]
    fn manager_ids_start_after_the_bootstrap_manager() {
        let mut state = ClusterState::default();
        let alloc = || request("", Command::AllocateManagerId { address: "x".into() });
        assert_eq!(state.apply(1, &alloc()).0, Ok(Outcome::ManagerId(2)));
        assert_eq!(state.apply(2, &alloc()).0, Ok(Outcome::ManagerId(3)));
    }

    #[test]
    fn removing_a_linked_service_is_refused() {
        let mut state = ClusterState::default();
        apply_ok(&mut state, 1, &request("a", create("db")));
        let mut web = ServiceSpec::new("web", "busybox");
        web.links.push(ServiceLink { service: "db".into(), alias: "store".into() });
        apply_ok(&mut state, 2, &request("b", Command::CreateService { id: "w".into(), spec: web }));
        let (response, _) = state.apply(3, &request("c", Command::RemoveService { name: "db".into() }));
        assert!(matches!(response, Err(CoreError::Conflict(_))));
        assert!(state.service("db").is_some());
    }

    #[test]
    fn a_write_that_needs_a_newer_cluster_version_is_refused_until_it_is_recorded() {
        let mut state = ClusterState::default();
        let register = |agent_version: &str| Command::RegisterNode {
            id: "n1".into(),
            name: "n1".into(),
            address: String::new(),
            tags: vec![],
            resources: Resources::default(),
            agent_version: agent_version.into(),
        };
        assert_eq!(state.cluster_version(), ClusterVersion::INITIAL);
        let refused = state.apply(1, &request("a", register("0.2.0"))).0;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("needs cluster version 0.2") && message.contains("runs 0.1"), "{message}");
        assert!(state.node("n1").is_none(), "a refused write changes nothing");
        assert!(state.apply(2, &request("b", register(""))).0.is_ok(), "without the new field it is a 0.1 write");

        let raise = |version| Command::SetClusterVersion { version };
        assert!(state.apply(3, &request("c", raise(ClusterVersion::V0_2))).0.is_ok());
        assert_eq!(state.cluster_version(), ClusterVersion::V0_2);
        assert!(state.apply(4, &request("d", register("0.2.0"))).0.is_ok());
        assert_eq!(state.node("n1").map(|n| n.agent_version.as_str()), Some("0.2.0"));
        let lowered = state.apply(5, &request("e", raise(ClusterVersion::INITIAL))).0;
        assert!(lowered.is_err(), "the cluster version never goes down");
        assert_eq!(state.cluster_version(), ClusterVersion::V0_2);
    }

    #[test]
    fn a_batch_needs_the_highest_version_of_its_requests() {
        let plain = request("a", Command::RemoveNode { id: "x".into() });
        let raise = request("b", Command::SetClusterVersion { version: ClusterVersion::V0_2 });
        let batch = Command::Batch { requests: vec![plain.clone(), raise] };
        assert_eq!(batch.required_version(), ClusterVersion::V0_2);
        assert_eq!(Command::Batch { requests: vec![plain] }.required_version(), ClusterVersion::INITIAL);
    }

    #[test]
    fn a_task_is_listed_on_one_node_only_after_assignment() {
        let mut state = ClusterState::default();
        for (i, node) in ["a", "b"].iter().enumerate() {
            let register = Command::RegisterNode {
                id: node.to_string(),
                name: node.to_string(),
                address: String::new(),
                tags: vec![],
                resources: Resources::default(),
                agent_version: String::new(),
            };
            apply_ok(&mut state, i as u64 + 1, &request("", register));
        }
        apply_ok(&mut state, 3, &request("", create("web")));
        let mut task = Task::new("t1", "id-web", 1, ServiceSpec::new("web", "busybox"));
        task.node_id = Some("a".into());
        let plan = TaskPlan { create: vec![task], ..TaskPlan::default() };
        apply_ok(&mut state, 4, &request("", Command::ReconcileTasks(plan)));
        let assign = Command::AssignTasks { assignments: vec![("t1".into(), "b".into())], unplaceable: vec![] };
        apply_ok(&mut state, 5, &request("", assign));
        assert_eq!(state.tasks_of_node("a").count(), 0, "no longer on a's list");
        assert_eq!(state.tasks_of_node("b").count(), 1);
    }

    #[test]
    fn a_trigger_fires_by_its_token_hash_and_goes_with_its_service() {
        let mut state = ClusterState::default();
        apply_ok(&mut state, 1, &request("", create("web")));
        let hash = crate::token::hash_token("s3cret");
        let make = |action| Command::CreateTrigger {
            id: format!("t-{action}"),
            service: "web".into(),
            action,
            token_hash: hash.clone(),
        };
        let (created, _) = state.apply(2, &request("", make(TriggerAction::ScaleUp)));
        assert!(matches!(created, Ok(Outcome::Trigger(_))), "{created:?}");
        let (again, _) = state.apply(3, &request("", make(TriggerAction::Redeploy)));
        assert!(again.is_err(), "one token, one trigger");

        let wrong =
            state.apply(4, &request("", Command::FireTrigger { token_hash: crate::token::hash_token("guess") }));
        assert!(matches!(wrong.0, Err(CoreError::NotFound { .. })));
        assert!(wrong.1.is_empty(), "a wrong token changes nothing");
        let (fired, _) = state.apply(5, &request("", Command::FireTrigger { token_hash: hash.clone() }));
        assert!(matches!(fired, Ok(Outcome::Service(ref s)) if s.spec.replicas() == Some(2)), "{fired:?}");
        assert_eq!(state.triggers().next().map(|t| t.fired_count), Some(1));

        apply_ok(&mut state, 6, &request("", Command::RemoveService { name: "web".into() }));
        assert_eq!(state.triggers().count(), 0, "a removed service takes its triggers along");
    }

    #[test]
    fn every_command_kind_is_listed_and_is_its_encoded_name() {
        let (s, spec) = (String::new, || ServiceSpec::new("web", "busybox"));
        let samples = [
            Command::Batch { requests: vec![] },
            Command::InitCluster { cluster_id: s(), manager_token_hash: s(), worker_token_hash: s() },
            Command::AllocateManagerId { address: s() },
            Command::CreateService { id: s(), spec: spec() },
            Command::UpdateService { name: s(), spec: spec(), expected_version: 0 },
            Command::ScaleService { name: s(), replicas: 0 },
            Command::RemoveService { name: s() },
            Command::RedeployService { name: s() },
            Command::RollbackService { name: s() },
            Command::DeployStack { stack: s(), services: vec![], prune: false },
            Command::RemoveStack { stack: s() },
            Command::ImageChanged { node_id: s(), image: s(), image_id: s() },
            Command::CreateSecret { id: s(), name: s(), sealed: vec![], size: 0 },
            Command::RemoveSecret { name: s() },
            Command::SetRegistryAuth { host: s(), username: s(), sealed_password: vec![] },
            Command::RemoveRegistryAuth { host: s() },
            Command::CreateTrigger { id: s(), service: s(), action: TriggerAction::Redeploy, token_hash: s() },
            Command::RemoveTrigger { id: s() },
            Command::FireTrigger { token_hash: s() },
            Command::RegisterNode {
                id: s(),
                name: s(),
                address: s(),
                tags: vec![],
                resources: Resources::default(),
                agent_version: s(),
            },
            Command::UpdateNode { id: s(), availability: None, tags_add: vec![], tags_rm: vec![] },
            Command::RemoveNode { id: s() },
            Command::SetNodeStatus { updates: vec![] },
            Command::ReconcileTasks(TaskPlan::default()),
            Command::AssignTasks { assignments: vec![], unplaceable: vec![] },
            Command::ReportTaskStatus { node_id: s(), statuses: vec![] },
            Command::SetClusterVersion { version: ClusterVersion::V0_2 },
        ];
        assert_eq!(samples.iter().map(Command::kind).collect::<Vec<_>>(), COMMAND_KINDS);
        for command in &samples {
            // An enum is encoded as a one-entry map from its variant's name.
            let bytes = berth_codec::encode(command).expect("encode");
            let tagged: BTreeMap<String, serde::de::IgnoredAny> = berth_codec::decode(&bytes).expect("decode");
            assert_eq!(tagged.keys().collect::<Vec<_>>(), [command.kind()]);
        }
    }

    fn arbitrary_command() -> impl Strategy<Value = Command> {
        let name = prop::sample::select(vec!["a", "b", "c"]);
        prop_oneof![
            name.clone().prop_map(create),
            (name.clone(), 0u32..5).prop_map(|(n, r)| Command::ScaleService { name: n.into(), replicas: r }),
            (name.clone(), 0u64..20).prop_map(|(n, v)| Command::UpdateService {
                name: n.into(),
                spec: ServiceSpec::new(n, "img2"),
                expected_version: v,
            }),
            name.prop_map(|n| Command::RemoveService { name: n.into() }),
        ]
    }

    proptest! {
        /// Replaying the same log gives the same state, and the state
        /// survives a snapshot round trip: what followers and restarted
        /// managers rely on.
        #[test]
        fn apply_is_deterministic_and_snapshots_round_trip(
            commands in prop::collection::vec((arbitrary_command(), 0usize..4), 1..40)
        ) {
            let requests: Vec<Request> = commands
                .into_iter()
                .map(|(c, id)| request(&format!("r{id}"), c))
                .collect();
            let mut first = ClusterState::default();
            let mut second = ClusterState::default();
            for (i, r) in requests.iter().enumerate() {
                let a = first.apply(i as u64 + 1, r);
                let b = second.apply(i as u64 + 1, r);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(&first, &second);
            let bytes = berth_codec::encode(&first).expect("encode");
            let decoded: ClusterState = berth_codec::decode(&bytes).expect("decode");
            prop_assert_eq!(decoded, first);
        }
    }
}
