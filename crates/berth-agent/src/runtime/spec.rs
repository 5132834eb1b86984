//! What the runtime needs to run one task: the task's service spec,
//! flattened, with the name and labels that tie the container back to the
//! task, its service and this node, its mounts, the stack network it
//! joins with the names it is known by there, and the names it resolves
//! through the node proxy.

use std::collections::BTreeMap;

use berth_core::{EnvVar, HealthCheck, PortMapping, Resources, ServiceLink, ServiceSpec, Task, VolumeMount};

use super::{LABEL_NETWORK, LABEL_NODE, LABEL_SERVICE, LABEL_SLOT, LABEL_STACK, LABEL_TASK, STACK_NETWORK_PREFIX};

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
    /// Container ports other containers reach without publishing them;
    /// recorded as exposed (TCP), since a bridge network does not filter.
    pub expose: Vec<u16>,
    pub health: Option<HealthCheck>,
    /// Zero fields mean no limit.
    pub resources: Resources,
    /// The service's labels plus berth's own (`berth.task`, `berth.service`,
    /// `berth.node`, `berth.slot`, and `berth.stack` for a stack's service),
    /// which win over a service label of the same key.
    pub labels: BTreeMap<String, String>,
    /// Named volumes and bind mounts, as the service spec gives them: a
    /// named volume is used under exactly its name (the compose reader has
    /// already prefixed a stack's volumes with the stack name).
    pub volumes: Vec<VolumeMount>,
    /// The stack network the container joins; `None` for a standalone
    /// service, which stays on the engine's default network.
    pub network: Option<StackNetwork>,
    /// The service's declared TCP container ports (`reachable_ports`), which
    /// node proxies forward to: published on free host ports unless `ports`
    /// publishes them, and reported as the task's endpoints.
    pub proxied_ports: Vec<u16>,
    /// Names the container resolves, through its `/etc/hosts`, to virtual
    /// IPs of this node's proxy on its stack network (`vip`).
    pub discovery: Vec<DiscoveryHost>,
    /// Secrets to mount read-only under /run/secrets; the runtime keeps
    /// their content in memory-backed storage only.
    pub secrets: Vec<SecretFile>,
    /// Credentials for pulling the image when it is not on the node.
    pub registry: Option<RegistryLogin>,
}

/// A name a container resolves to the virtual IP number of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryHost {
    pub name: String,
    pub virtual_ip: u32,
}

/// One secret as the container sees it: `/run/secrets/<file_name>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub file_name: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for SecretFile {
    /// Never the content: specs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({}, {} bytes)", self.file_name, self.data.len())
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({}@{})", self.username, self.host)
    }
}

/// The network one stack's containers share on a node (or the node's
/// standalone services that have links), and how one container is known on
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    /// The stack, or [`LINKS_NETWORK_KEY`].
    pub stack: String,
    /// The node the network belongs to: each agent has networks of its own,
    /// even when agents share an engine.
    pub node_id: String,
    /// `berth-stack-<stack>-<node id prefix>`, or `berth-links-<node id
    /// prefix>`.
    pub name: String,
    /// Names that resolve to this container (and to the other tasks of its
    /// service) for every container on the network: the short service name
    /// (`web` for `shop_web` in stack `shop`) and the full one.
    pub aliases: Vec<String>,
    /// Links with an alias of their own: in this container only, the alias
    /// resolves to whatever the linked service's name resolves to on the
    /// network.
    pub links: Vec<ServiceLink>,
}

impl StackNetwork {
    /// The network `spec`'s containers join on node `node_id`: their
    /// stack's, or for a standalone service with links the node's links
    /// network (its names resolve there through the node proxy); `None` for
    /// any other standalone service.
    pub fn for_service(spec: &ServiceSpec, node_id: &str) -> Option<StackNetwork> {
        let key = match (spec.stack.as_str(), spec.links.is_empty()) {
            ("", true) => return None,
            ("", false) => LINKS_NETWORK_KEY,
            (stack, _) => stack,
        };
        let mut aliases = Vec::with_capacity(2);
        if let Some(short) = spec.short_name() {
            aliases.push(short.to_string());
        }
        aliases.push(spec.name.clone());
        // Without an alias of its own, a link to a service of the same
        // stack needs nothing: the service's names resolve already.
        let links = spec.links.iter().filter(|l| !l.alias.is_empty() && l.alias != l.service).cloned().collect();
        Some(StackNetwork {
            stack: key.to_string(),
            node_id: node_id.to_string(),
            name: stack_network_name(key, node_id),
            aliases,
            links,
        })
    }
}

/// The network key of standalone services with links; not a valid stack
/// name, so never a stack's.
pub const LINKS_NETWORK_KEY: &str = "_links";

/// Characters of the node id in a stack network's name.
pub const NETWORK_NODE_ID_CHARS: usize = 12;

/// The engine network of `stack` on node `node_id`:
/// `berth-stack-<stack>-<first 12 characters of the node id>`, and
/// `berth-links-<...>` for [`LINKS_NETWORK_KEY`].
pub fn stack_network_name(stack: &str, node_id: &str) -> String {
    let node: String = node_id.chars().take(NETWORK_NODE_ID_CHARS).collect();
    if stack == LINKS_NETWORK_KEY {
        return format!("berth-links-{node}");
    }
    format!("{STACK_NETWORK_PREFIX}{stack}-{node}")
}

/// The stack whose services a network's containers name: none (`""`) on
/// the links network.
pub fn stack_of_network(key: &str) -> &str {
    if key == LINKS_NETWORK_KEY {
        ""
    } else {
        key
    }
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
        if spec.stack.is_empty() {
            // Only berth may say which stack a container belongs to.
            labels.remove(LABEL_STACK);
        } else {
            labels.insert(LABEL_STACK.to_string(), spec.stack.clone());
        }
        let network = StackNetwork::for_service(spec, node_id);
        match &network {
            Some(network) => labels.insert(LABEL_NETWORK.to_string(), network.stack.clone()),
            None => labels.remove(LABEL_NETWORK),
        };
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
            expose: spec.expose.clone(),
            health: spec.health.clone(),
            resources: spec.resources,
            labels,
            volumes: spec.volumes.clone(),
            network,
            proxied_ports: spec.reachable_ports(),
            discovery: Vec::new(),
            secrets: Vec::new(),
            registry: None,
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
    use berth_core::{TaskState, VolumeKind};

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
        service.expose = vec![8080, 9090];
        service.volumes = vec![
            VolumeMount {
                kind: VolumeKind::Named,
                source: "shop_data".into(),
                target: "/data".into(),
                read_only: false,
            },
            VolumeMount { kind: VolumeKind::Bind, source: "/srv/conf".into(), target: "/conf".into(), read_only: true },
        ];
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
        assert_eq!(spec.expose, service.expose);
        assert_eq!(spec.volumes, service.volumes);
    }

    fn in_stack(stack: &str, name: &str) -> ServiceSpec {
        let mut service = ServiceSpec::new(name, "img");
        service.stack = stack.into();
        service
    }

    #[test]
    fn a_standalone_service_joins_no_stack_network() {
        let mut service = ServiceSpec::new("web", "img");
        service.labels.insert(LABEL_STACK.into(), "spoofed".into());
        let spec = ContainerSpec::from_task(&task(service), "n1");
        assert_eq!(spec.network, None);
        assert_eq!(spec.labels.get(LABEL_STACK), None, "only berth says which stack a container is in");
    }

    #[test]
    fn a_standalone_service_with_links_joins_its_nodes_links_network() {
        let mut service = ServiceSpec::new("app", "img");
        service.links = vec![ServiceLink { service: "pg".into(), alias: "db".into() }];
        let spec = ContainerSpec::from_task(&task(service), "0123456789abcdef");
        let network = spec.network.expect("a network");
        assert_eq!(network.name, "berth-links-0123456789ab");
        assert_eq!(network.stack, LINKS_NETWORK_KEY);
        assert_eq!(network.aliases, vec!["app".to_string()]);
        assert_eq!(spec.labels.get(LABEL_NETWORK).map(String::as_str), Some(LINKS_NETWORK_KEY));
        assert_eq!(spec.labels.get(LABEL_STACK), None);
        assert_eq!(stack_of_network(LINKS_NETWORK_KEY), "");
        assert_eq!(stack_of_network("shop"), "shop");
    }

    #[test]
    fn a_stack_service_joins_its_stack_network_by_short_and_full_name() {
        let spec = ContainerSpec::from_task(&task(in_stack("shop", "shop_web")), "n1");
        assert_eq!(
            spec.network,
            Some(StackNetwork {
                stack: "shop".into(),
                node_id: "n1".into(),
                name: "berth-stack-shop-n1".into(),
                aliases: vec!["web".into(), "shop_web".into()],
                links: vec![],
            })
        );
        assert_eq!(spec.labels.get(LABEL_STACK).map(String::as_str), Some("shop"));
    }

    #[test]
    fn a_stack_service_named_without_the_stack_prefix_is_known_by_its_full_name() {
        for name in ["web", "shopweb", "shop_"] {
            let network = StackNetwork::for_service(&in_stack("shop", name), "n1").expect("in a stack");
            assert_eq!(network.aliases, vec![name.to_string()], "{name}");
        }
    }

    #[test]
    fn only_links_with_an_alias_of_their_own_become_network_links() {
        let mut service = in_stack("shop", "shop_web");
        service.links = vec![
            ServiceLink { service: "shop_db".into(), alias: "database".into() },
            ServiceLink { service: "shop_cache".into(), alias: String::new() },
            ServiceLink { service: "shop_queue".into(), alias: "shop_queue".into() },
        ];
        let network = StackNetwork::for_service(&service, "n1").expect("in a stack");
        assert_eq!(network.links, vec![ServiceLink { service: "shop_db".into(), alias: "database".into() }]);
    }
}
