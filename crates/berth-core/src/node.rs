//! Worker nodes (the hosts agents run on) and tasks (one container of a
//! service on one node), as the replicated state records them.
//!
//! One writer per field, as in swarmkit: a task's spec comes from the
//! user's service, its desired state from the leader's orchestrator, its
//! node from the scheduler, and its observed state from the agent running
//! it. Observed states only move forward.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Resources, ServiceSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move elsewhere; takes no new ones.
    Drain,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        })
    }
}

impl FromStr for Availability {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            other => Err(CoreError::invalid("availability", format!("'{other}' is not one of active, pause, drain"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum NodeStatus {
    #[default]
    Unknown,
    Ready,
    /// Missed heartbeats past the grace period, or disconnected.
    Down,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// Where the agent reported it runs; informational.
    pub address: String,
    pub tags: BTreeSet<String>,
    /// What the host offers in total.
    pub resources: Resources,
    pub availability: Availability,
    pub status: NodeStatus,
    pub status_message: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The release of the agent that last registered it; empty when it is
    /// of 0.1 or registered before the cluster version was 0.2.
    #[serde(default)]
    pub agent_version: String,
}

impl Node {
    /// Whether the scheduler may place new tasks here.
    pub fn accepts_tasks(&self) -> bool {
        self.status == NodeStatus::Ready && self.availability == Availability::Active
    }

    /// The value of a `key:value` tag, as used by high-availability
    /// spreading over e.g. `zone:`.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    }
}

/// Swarmkit's task states, in the order they happen. A task's observed
/// state never moves backwards: an update to an earlier state is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    New,
    /// Waiting for a node; the task's `message` says why.
    Pending,
    Assigned,
    Accepted,
    Starting,
    Running,
    /// Exited with status 0.
    Complete,
    /// Stopped because it was asked to.
    Shutdown,
    /// Exited non-zero, failed to start, or turned unhealthy.
    Failed,
    /// The node refused it (e.g. the image is missing).
    Rejected,
    /// Its node went down; what happened to it is unknown.
    Orphaned,
}

impl TaskState {
    /// A task in a terminal state never runs again; a new task replaces it.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DesiredState {
    Running,
    /// Stop the container, keep the task record.
    Shutdown,
    /// Stop and remove the container; the record goes once it is down.
    Remove,
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DesiredState::Running => "running",
            DesiredState::Shutdown => "shutdown",
            DesiredState::Remove => "remove",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Health {
    /// The service has no health check.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::None => "",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    /// The service version whose spec this task runs.
    pub service_version: u64,
    /// "Replica 3" of a replicated service across its replacements; for
    /// every-node services the node names the slot and this is 0.
    pub slot: u32,
    /// The spec this task runs, copied so a later service update never
    /// changes a running task in place.
    pub spec: ServiceSpec,
    pub node_id: Option<String>,
    pub desired: DesiredState,
    pub state: TaskState,
    pub health: Health,
    pub container_id: String,
    pub exit_code: Option<i64>,
    /// Why the task is pending, or how it failed.
    pub message: String,
    /// How many tasks this slot ran before this one (restart back-off).
    pub attempt: u32,
    pub created_at_ms: i64,
    /// When `state` last changed.
    pub state_since_ms: i64,
    /// When the agent first reported it running; 0 if it never ran.
    pub started_at_ms: i64,
    /// When it was first running and (with a health check) healthy; 0 if never.
    pub ready_at_ms: i64,
    /// Where the task's container ports are reachable on its node, as its
    /// agent reported them: what the proxies on every node route to.
    pub endpoints: Vec<Endpoint>,
}

/// A container port published on a host port of the task's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: crate::Protocol,
}

impl Task {
    /// A new task of `service_id` for `slot` running `spec`: desired running,
    /// not yet placed, no history.
    pub fn new(id: impl Into<String>, service_id: impl Into<String>, slot: u32, spec: ServiceSpec) -> Task {
        Task {
            id: id.into(),
            service_id: service_id.into(),
            service_name: spec.name.clone(),
            service_version: 0,
            slot,
            spec,
            node_id: None,
            desired: DesiredState::Running,
            state: TaskState::New,
            health: Health::None,
            container_id: String::new(),
            exit_code: None,
            message: String::new(),
            attempt: 0,
            created_at_ms: 0,
            state_since_ms: 0,
            started_at_ms: 0,
            ready_at_ms: 0,
            endpoints: Vec::new(),
        }
    }

    /// Counts towards the service's running replicas.
    pub fn is_live(&self) -> bool {
        self.desired == DesiredState::Running && !self.state.is_terminal()
    }
}

/// What an agent reports about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    pub health: Health,
    pub container_id: String,
    pub exit_code: Option<i64>,
    pub message: String,
    /// Published ports, once running; empty leaves the recorded ones.
    pub endpoints: Vec<Endpoint>,
}
