//! What the runtime needs to run one task: the task's service spec,
//! flattened, with the name and labels that tie the container back to the
//! task, its service and this node.

use std::collections::BTreeMap;

use berth_core::{EnvVar, HealthCheck, PortMapping, Resources, Task};

use super::{LABEL_NODE, LABEL_SERVICE, LABEL_SLOT, LABEL_TASK};

/// How many characters of the task id go into a container name: enough to
/// tell the tasks of one slot apart, short enough to read in `docker ps`.
pub const NAME_TASK_ID_CHARS: usize = 8;

/// One container to create, independent of any engine's API.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    pub node_id: String,
    pub slot: u32,
    /// `berth-<service>.<slot>.<first 8 characters of the task id>`.
    pub name: String,
    pub image: String,
    /// Empty means the image's default.
    pub command: Vec<String>,
    /// Empty means the image's default.
    pub entrypoint: Vec<String>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<PortMapping>,
    pub health: Option<HealthCheck>,
    /// Zero fields mean no limit.
    pub resources: Resources,
    /// The service's labels plus berth's own (`berth.task`, `berth.service`,
    /// `berth.node`, `berth.slot`), which win over a service label of the
    /// same key.
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// The container that runs `task` on `node_id`.
    pub fn from_task(task: &Task, node_id: &str) -> ContainerSpec {
        let spec = &task.spec;
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_TASK.to_string(), task.id.clone());
        labels.insert(LABEL_SERVICE.to_string(), task.service_id.clone());
        labels.insert(LABEL_NODE.to_string(), node_id.to_string());
        labels.insert(LABEL_SLOT.to_string(), task.slot.to_string());
        ContainerSpec {
            task_id: task.id.clone(),
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            node_id: node_id.to_string(),
            slot: task.slot,
            name: container_name(&task.service_name, task.slot, &task.id),
            image: spec.image.clone(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: spec.env.clone(),
            ports: spec.ports.clone(),
            health: spec.health.clone(),
            resources: spec.resources,
            labels,
        }
    }
}

/// `berth-<service>.<slot>.<task id prefix>`, restricted to the characters
/// Docker accepts in a name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`); anything else
/// becomes `-`.
pub fn container_name(service_name: &str, slot: u32, task_id: &str) -> String {
    let task_prefix: String = task_id.chars().take(NAME_TASK_ID_CHARS).collect();
    format!("berth-{service_name}.{slot}.{task_prefix}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use berth_core::{ServiceSpec, TaskState};

    use super::*;

    fn task(spec: ServiceSpec) -> Task {
        Task {
            service_version: 1,
            node_id: Some("node-from-task".into()),
            state: TaskState::Assigned,
            ..Task::new("0123456789abcdef", "svc-1", 3, spec)
        }
    }

    #[test]
    fn name_is_service_slot_and_task_id_prefix() {
        let spec = ContainerSpec::from_task(&task(ServiceSpec::new("web", "img")), "n1");
        assert_eq!(spec.name, "berth-web.3.01234567");
    }

    #[test]
    fn name_replaces_characters_docker_refuses() {
        assert_eq!(container_name("a b/c", 0, "x:y"), "berth-a-b-c.0.x-y");
    }

    #[test]
    fn short_task_ids_are_used_whole() {
        assert_eq!(container_name("web", 1, "abc"), "berth-web.1.abc");
    }

    #[test]
    fn berth_labels_are_added_and_win_over_service_labels() {
        let mut service = ServiceSpec::new("web", "img");
        service.labels.insert("team".into(), "blue".into());
        service.labels.insert(LABEL_NODE.into(), "spoofed".into());
        let spec = ContainerSpec::from_task(&task(service), "n1");
        let expected: BTreeMap<String, String> = [
            ("team", "blue"),
            (LABEL_TASK, "0123456789abcdef"),
            (LABEL_SERVICE, "svc-1"),
            (LABEL_NODE, "n1"),
            (LABEL_SLOT, "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(spec.labels, expected);
    }

    #[test]
    fn node_id_comes_from_the_caller_not_the_task() {
        let spec = ContainerSpec::from_task(&task(ServiceSpec::new("web", "img")), "n1");
        assert_eq!(spec.node_id, "n1");
    }

    #[test]
    fn the_service_spec_is_carried_over() {
        let mut service = ServiceSpec::new("web", "berth-test/busybox:latest");
        service.command = vec!["sleep".into(), "300".into()];
        service.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        service.env = vec!["A=1".parse().expect("valid env")];
        service.ports = vec!["8080:80".parse().expect("valid port")];
        service.health = Some(HealthCheck::new("true"));
        service.resources = Resources { millicpus: 500, memory_bytes: 64 << 20 };
        let spec = ContainerSpec::from_task(&task(service.clone()), "n1");
        assert_eq!(spec.task_id, "0123456789abcdef");
        assert_eq!(spec.service_id, "svc-1");
        assert_eq!(spec.service_name, "web");
        assert_eq!(spec.slot, 3);
        assert_eq!(spec.image, service.image);
        assert_eq!(spec.command, service.command);
        assert_eq!(spec.entrypoint, service.entrypoint);
        assert_eq!(spec.env, service.env);
        assert_eq!(spec.ports, service.ports);
        assert_eq!(spec.health, service.health);
        assert_eq!(spec.resources, service.resources);
    }
}
