//! Builders shared by the scheduler's tests: ready, active nodes and
//! pending or running tasks with every field the scheduler ignores at its
//! default.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use berth_core::{
    Availability, Node, NodeStatus, PortMapping, Protocol, Resources, ServiceSpec, Strategy, Task, TaskState,
};
use berth_scheduler::Decision;

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// A ready, active node of unknown capacity whose name is its id.
pub fn node(id: &str, tags: &[&str]) -> Node {
    Node {
        id: id.to_string(),
        name: id.to_string(),
        address: String::new(),
        tags: tags.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>(),
        resources: Resources::default(),
        availability: Availability::Active,
        status: NodeStatus::Ready,
        status_message: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
        agent_version: String::new(),
    }
}

pub fn sized(mut node: Node, millicpus: u64, memory_bytes: u64) -> Node {
    node.resources = Resources { millicpus, memory_bytes };
    node
}

/// A pending emptiest-node task of `service` with no reservation.
pub fn task(id: &str, service: &str) -> Task {
    let mut spec = ServiceSpec::new(service, "busybox:latest");
    spec.strategy = Strategy::EmptiestNode;
    Task {
        // The service's name is its id here, whatever the spec says.
        service_name: service.to_string(),
        service_version: 1,
        state: TaskState::Pending,
        ..Task::new(id, service, 0, spec)
    }
}

pub fn with_strategy(mut task: Task, strategy: Strategy) -> Task {
    task.spec.strategy = strategy;
    task
}

pub fn with_tags(mut task: Task, tags: &[&str]) -> Task {
    task.spec.tags = tags.iter().map(|t| t.to_string()).collect();
    task
}

pub fn reserving(mut task: Task, millicpus: u64, memory_bytes: u64) -> Task {
    task.spec.resources = Resources { millicpus, memory_bytes };
    task
}

pub fn publishing(mut task: Task, ports: &[(u16, Protocol)]) -> Task {
    task.spec.ports = ports
        .iter()
        .map(|&(host_port, protocol)| PortMapping { host_port, container_port: host_port, protocol })
        .collect();
    task
}

/// An every-node task that the orchestrator pinned to `node_id`.
pub fn pinned(task: Task, node_id: &str) -> Task {
    let mut task = with_strategy(task, Strategy::EveryNode);
    task.node_id = Some(node_id.to_string());
    task
}

/// The task as it is once running on `node_id`.
pub fn running_on(mut task: Task, node_id: &str) -> Task {
    task.node_id = Some(node_id.to_string());
    task.state = TaskState::Running;
    task
}

/// Task id → node id, or the refusal reason prefixed with "unplaceable: ".
pub fn outcomes(decisions: &[Decision]) -> Vec<(String, String)> {
    decisions
        .iter()
        .map(|d| match d {
            Decision::Assign { task_id, node_id } => (task_id.clone(), node_id.clone()),
            Decision::Unplaceable { task_id, reason } => (task_id.clone(), format!("unplaceable: {reason}")),
        })
        .collect()
}

/// The chosen node per decision, "-" where unplaceable.
pub fn chosen_nodes(decisions: &[Decision]) -> Vec<String> {
    decisions.iter().map(|d| d.node_id().unwrap_or("-").to_string()).collect()
}

pub fn tasks_per_node(decisions: &[Decision]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in decisions.iter().filter_map(Decision::node_id) {
        *counts.entry(node.to_string()).or_default() += 1;
    }
    counts
}

pub fn only_reason(decisions: &[Decision]) -> String {
    match decisions {
        [Decision::Unplaceable { reason, .. }] => reason.clone(),
        other => panic!("expected one unplaceable decision, got {other:?}"),
    }
}
