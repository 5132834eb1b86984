//! The sample cluster: a realistic history of client, controller and agent
//! requests, with every `Command` kind at least once, applied with
//! `ClusterState::apply` at consecutive Raft indexes as the managers apply
//! committed entries. What comes out (the entries, each request's outcome
//! and the final state) is what the samples are cut from. Ids, clocks and
//! sealed bytes are fixed, so every run builds the same values.

use std::collections::BTreeMap;

use berth_core::token::{hash_token, JoinToken, Role};
use berth_core::{
    Autodestroy, Availability, ClusterState, ClusterVersion, Command, Dependency, DependencyCondition, DesiredState,
    Endpoint, EnvVar, FailureAction, Health, HealthCheck, NodeStatus, NodeStatusUpdate, Outcome, PortMapping, Protocol,
    Request, Resources, RestartCondition, RestartPolicy, RolloutAction, RolloutDecision, SecretRef, Service,
    ServiceLink, ServiceMode, ServiceSpec, Strategy, Task, TaskPlan, TaskState, TaskStatus, TriggerAction,
    UpdateConfig, UpdateOrder, VolumeKind, VolumeMount,
};

/// 2026-01-01T00:00:00Z: when the sample cluster was initialised.
pub const T0_MS: i64 = 1_767_225_600_000;
pub const CLUSTER_ID: &str = "5f2c8e1a9b7d4036";
/// Every sample entry was written in this term, by this leader.
pub const TERM: u64 = 1;
pub const LEADER: u64 = 1;
/// The manager addresses, by Raft node id.
pub const MANAGERS: [(u64, &str); 3] = [(1, "10.0.1.11:4700"), (2, "10.0.1.12:4700"), (3, "10.0.1.13:4700")];
/// The leader's blank entry, after the initial membership (manager 1
/// alone) at index 1; the history follows.
pub const BLANK_INDEX: u64 = 2;

pub const REGISTRY: &str = "registry.example.com:5000";
pub const REGISTRY_PASSWORD: &[u8] = b"r3g1stry-d3pl0y-t0k3n";
pub const DB_PASSWORD: &[u8] = b"correct horse battery staple";
pub const WORKER_1: &str = "worker-1";
pub const WORKER_2: &str = "worker-2";
pub const WEB_IMAGE_ID: &str = "sha256:9c4e1f7a2b3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

const MIB: u64 = 1024 * 1024;

/// A fixed id in the shape `hex_id` draws them (12 bytes as hex).
pub fn hex_id(seed: u64) -> String {
    let a = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = seed.wrapping_add(7).wrapping_mul(0xC2B2_AE3D);
    format!("{a:016x}{:08x}", b & 0xFFFF_FFFF)
}

/// A fixed request id in the shape clients draw them (a UUID v4).
pub fn request_id(seed: u64) -> String {
    let a = seed.wrapping_add(3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = seed.wrapping_add(5).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        (b >> 48) & 0xFFF,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// Bytes in the shape `DataKey::seal` makes them (a 12-byte nonce, the
/// ciphertext and a 16-byte tag), without the key: their content is
/// opaque to the format.
pub fn sealed(clear: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0u8..12).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    bytes.extend(clear.iter().enumerate().map(|(i, b)| b ^ (i as u8).wrapping_mul(151).wrapping_add(89)));
    bytes.extend((0u8..16).map(|i| i.wrapping_mul(53).wrapping_add(7)));
    bytes
}

pub fn node_id(name: &str) -> String {
    match name {
        WORKER_1 => hex_id(101),
        WORKER_2 => hex_id(102),
        _ => hex_id(103),
    }
}

pub fn worker_token() -> String {
    JoinToken::new(Role::Worker, CLUSTER_ID, [0x5A; 20]).to_string()
}

pub fn trigger_token(n: u8) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..40u8).map(|i| alphabet[usize::from(i.wrapping_mul(7).wrapping_add(n.wrapping_mul(13))) % 62] as char).collect()
}

/// The service with every part of a spec set: env, ports of both
/// protocols, a health check, constraints, update and rollback settings,
/// links, dependencies, volumes, secrets, labels and virtual hosts.
pub fn web_spec(version: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new("web", format!("{REGISTRY}/shop/web:{version}"));
    spec.command = vec!["--config".into(), "/etc/web/config.toml".into()];
    spec.entrypoint = vec!["/usr/local/bin/web".into(), "serve".into()];
    spec.env = vec![
        EnvVar { name: "RUST_LOG".into(), value: "info,web=debug".into() },
        EnvVar { name: "DATABASE_URL".into(), value: "postgres://shop@database:5432/shop".into() },
        EnvVar { name: "VIRTUAL_HOST".into(), value: "www.shop.example.com".into() },
        EnvVar { name: "EMPTY".into(), value: String::new() },
    ];
    spec.ports = vec![
        PortMapping { host_port: 80, container_port: 8080, protocol: Protocol::Tcp },
        PortMapping { host_port: 443, container_port: 8443, protocol: Protocol::Tcp },
        PortMapping { host_port: 8125, container_port: 8125, protocol: Protocol::Udp },
    ];
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    spec.strategy = Strategy::HighAvailability;
    spec.tags = vec!["tier:front".into()];
    spec.restart = RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 5 };
    spec.autodestroy = Autodestroy::Off;
    spec.health = Some(HealthCheck {
        command: "curl -fsS http://localhost:8080/healthz".into(),
        interval_ms: 10_000,
        timeout_ms: 2_000,
        retries: 3,
        start_period_ms: 15_000,
    });
    spec.resources = Resources { millicpus: 500, memory_bytes: 256 * MIB };
    spec.links = vec![ServiceLink { service: "db".into(), alias: "database".into() }];
    spec.update = UpdateConfig {
        parallelism: 1,
        delay_ms: 10_000,
        order: UpdateOrder::StartFirst,
        failure_action: FailureAction::Rollback,
        monitor_ms: 30_000,
        max_failure_ratio: 0.25,
    };
    spec.labels = BTreeMap::from([
        ("com.example.team".to_string(), "storefront".to_string()),
        ("com.example.cost-centre".to_string(), "4711".to_string()),
    ]);
    spec.autoredeploy = true;
    spec.rollback = UpdateConfig {
        parallelism: 0,
        delay_ms: 0,
        order: UpdateOrder::StopFirst,
        failure_action: FailureAction::Continue,
        monitor_ms: 5_000,
        max_failure_ratio: 0.0,
    };
    spec.volumes = vec![
        VolumeMount {
            kind: VolumeKind::Bind,
            source: "/srv/web/static".into(),
            target: "/var/www/static".into(),
            read_only: true,
        },
        VolumeMount {
            kind: VolumeKind::Named,
            source: "web-cache".into(),
            target: "/var/cache/web".into(),
            read_only: false,
        },
    ];
    spec.secrets = vec![SecretRef { name: "db-password".into(), target: "db_pass".into() }];
    spec.depends_on = vec![Dependency { service: "db".into(), condition: DependencyCondition::Healthy }];
    spec.virtual_hosts = vec!["shop.example.com".into()];
    spec.expose = vec![8080, 9090];
    spec
}

fn db_spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new("db", "postgres:16.4");
    spec.env = vec![
        EnvVar { name: "POSTGRES_DB".into(), value: "shop".into() },
        EnvVar { name: "POSTGRES_PASSWORD_FILE".into(), value: "/run/secrets/db-password".into() },
    ];
    spec.tags = vec!["ssd".into()];
    spec.health = Some(HealthCheck::new("pg_isready -U shop"));
    spec.resources = Resources { millicpus: 1_000, memory_bytes: 1024 * MIB };
    spec.volumes = vec![VolumeMount {
        kind: VolumeKind::Named,
        source: "pgdata".into(),
        target: "/var/lib/postgresql/data".into(),
        read_only: false,
    }];
    spec.secrets = vec![SecretRef { name: "db-password".into(), target: String::new() }];
    spec.expose = vec![5432];
    spec
}

fn stack_spec(stack: &str, short: &str, image: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(format!("{stack}_{short}"), image);
    spec.stack = stack.into();
    spec
}

fn shop_stack() -> Vec<(String, ServiceSpec)> {
    let mut api = stack_spec("shop", "api", &format!("{REGISTRY}/shop/api:2.0.1"));
    api.mode = ServiceMode::Replicated { replicas: 2 };
    api.links = vec![ServiceLink { service: "db".into(), alias: String::new() }];
    api.env = vec![EnvVar { name: "PORT".into(), value: "3000".into() }];
    api.expose = vec![3000];
    let mut worker = stack_spec("shop", "worker", &format!("{REGISTRY}/shop/worker:2.0.1"));
    worker.command = vec!["work".into(), "--queue".into(), "orders".into()];
    worker.restart = RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 0 };
    worker.depends_on = vec![Dependency { service: "shop_api".into(), condition: DependencyCondition::Started }];
    worker.sequential = true;
    vec![(hex_id(31), api), (hex_id(32), worker)]
}

/// What the history left: its entries and outcomes, and the state.
pub struct History {
    pub state: ClusterState,
    /// Every committed request with its Raft index, in order.
    pub entries: Vec<(u64, Request)>,
    /// The outcome of each entry, in the same order.
    pub outcomes: Vec<Outcome>,
    /// The indexes of the membership entries that made managers 1 to 3
    /// voters: first the joint configuration, then the new one.
    pub joint_membership_index: u64,
    pub membership_index: u64,
    /// What worker-1's agent reported in the history.
    pub worker_1_statuses: Vec<TaskStatus>,
    next_index: u64,
    now_ms: i64,
    next_request: u64,
}

impl History {
    fn new() -> Self {
        History {
            state: ClusterState::default(),
            entries: Vec::new(),
            outcomes: Vec::new(),
            joint_membership_index: 0,
            membership_index: 0,
            worker_1_statuses: Vec::new(),
            next_index: BLANK_INDEX + 1,
            now_ms: T0_MS,
            next_request: 0,
        }
    }

    /// The request id a client would send; controllers and agents send none.
    fn client(&mut self) -> String {
        self.next_request += 1;
        request_id(self.next_request)
    }

    fn request(&mut self, request_id: String, command: Command) -> Request {
        self.now_ms += 1_250;
        Request { request_id, issued_at_ms: self.now_ms, command }
    }

    /// Commits `request` at the next index; the sample must be accepted.
    fn commit(&mut self, request: Request) -> Outcome {
        let index = self.next_index;
        self.next_index += 1;
        let (response, _) = self.state.apply(index, &request);
        let refusal = match &response {
            Ok(Outcome::Batch(responses)) => responses.iter().find_map(|r| r.as_ref().err()),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = refusal {
            panic!("the sample {} entry at index {index} is refused: {e}", request.command.kind());
        }
        let outcome = response.unwrap_or(Outcome::Done);
        self.entries.push((index, request));
        self.outcomes.push(outcome.clone());
        outcome
    }

    fn client_write(&mut self, command: Command) -> Outcome {
        let id = self.client();
        let request = self.request(id, command);
        self.commit(request)
    }

    fn internal_write(&mut self, command: Command) -> Outcome {
        let request = self.request(String::new(), command);
        self.commit(request)
    }

    fn service(&self, name: &str) -> Service {
        self.state.service(name).cloned().unwrap_or_else(|| panic!("the sample service {name} is missing"))
    }
}

/// Runs the sample history: the managers join, nodes register, secrets and
/// registry credentials are stored, services and a stack are deployed,
/// updated, scaled, rolled back and redeployed, triggers fire, and tasks
/// are placed and reported in several states. Every kind of `Command` is
/// committed at least once, and every kind of `Outcome` comes out.
pub fn run() -> History {
    let mut h = History::new();
    let token_hash = |role| JoinToken::new(role, CLUSTER_ID, [0x11; 20]).hash();
    h.client_write(Command::InitCluster {
        cluster_id: CLUSTER_ID.into(),
        manager_token_hash: token_hash(Role::Manager),
        worker_token_hash: JoinToken::new(Role::Worker, CLUSTER_ID, [0x5A; 20]).hash(),
    });
    for (_, address) in &MANAGERS[1..] {
        h.internal_write(Command::AllocateManagerId { address: (*address).into() });
    }
    // Managers 2 and 3 joined: the membership change takes two entries.
    h.joint_membership_index = h.next_index;
    h.membership_index = h.next_index + 1;
    h.next_index += 2;

    let register = |name: &str, address: &str, tags: &[&str], millicpus: u64, memory_gib: u64| Command::RegisterNode {
        id: node_id(name),
        name: name.into(),
        address: address.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        resources: Resources { millicpus, memory_bytes: memory_gib * 1024 * MIB },
        agent_version: String::new(),
    };
    h.internal_write(register(WORKER_1, "10.0.2.21", &["zone:a", "tier:front", "ssd"], 8_000, 32));
    h.internal_write(register(WORKER_2, "10.0.2.22", &["zone:b", "tier:front"], 4_000, 16));
    h.internal_write(register("worker-3", "10.0.2.23", &["zone:c"], 2_000, 4));
    h.client_write(Command::UpdateNode {
        id: node_id("worker-3"),
        availability: Some(Availability::Drain),
        tags_add: vec!["retiring".into()],
        tags_rm: vec!["zone:c".into()],
    });
    h.internal_write(Command::SetNodeStatus {
        updates: vec![NodeStatusUpdate {
            node_id: node_id("worker-3"),
            status: NodeStatus::Down,
            message: "no heartbeat for 1.5s".into(),
        }],
    });
    h.client_write(Command::RemoveNode { id: node_id("worker-3") });

    let secret = |id, name: &str, clear: &[u8]| Command::CreateSecret {
        id,
        name: name.into(),
        sealed: sealed(clear),
        size: clear.len() as u64,
    };
    h.client_write(secret(hex_id(11), "db-password", DB_PASSWORD));
    h.client_write(secret(hex_id(12), "old-api-key", b"sk_live_0123456789"));
    h.client_write(Command::RemoveSecret { name: "old-api-key".into() });
    let registry = |host: &str, password: &[u8]| Command::SetRegistryAuth {
        host: host.into(),
        username: "deploy".into(),
        sealed_password: sealed(password),
    };
    h.client_write(registry(REGISTRY, REGISTRY_PASSWORD));
    h.client_write(registry("old-registry.example.com", b"hunter2"));
    h.client_write(Command::RemoveRegistryAuth { host: "old-registry.example.com".into() });

    h.client_write(Command::CreateService { id: hex_id(21), spec: db_spec() });
    h.client_write(Command::CreateService { id: hex_id(22), spec: web_spec("1.4.2") });
    h.client_write(Command::CreateService { id: hex_id(23), spec: ServiceSpec::new("scratch", "busybox:1.36") });
    h.client_write(Command::RemoveService { name: "scratch".into() });
    let expected_version = h.service("web").version;
    h.client_write(Command::UpdateService { name: "web".into(), spec: web_spec("1.4.3"), expected_version });
    h.client_write(Command::ScaleService { name: "web".into(), replicas: 4 });
    h.client_write(Command::RollbackService { name: "web".into() });
    h.client_write(Command::RedeployService { name: "db".into() });

    h.client_write(Command::DeployStack { stack: "shop".into(), services: shop_stack(), prune: false });
    let mut cron = stack_spec("tmp", "cron", "busybox:1.36");
    cron.command = vec!["sh".into(), "-c".into(), "echo tick".into()];
    cron.restart = RestartPolicy { condition: RestartCondition::Never, max_attempts: 0 };
    cron.autodestroy = Autodestroy::OnSuccess;
    h.client_write(Command::DeployStack { stack: "tmp".into(), services: vec![(hex_id(33), cron)], prune: true });
    h.client_write(Command::RemoveStack { stack: "tmp".into() });

    let trigger = |n: u8, action| Command::CreateTrigger {
        id: hex_id(40 + u64::from(n)),
        service: "web".into(),
        action,
        token_hash: hash_token(&trigger_token(n)),
    };
    h.client_write(trigger(1, TriggerAction::Redeploy));
    h.client_write(trigger(2, TriggerAction::ScaleUp));
    h.internal_write(Command::FireTrigger { token_hash: hash_token(&trigger_token(2)) });
    h.client_write(Command::RemoveTrigger { id: hex_id(42) });
    h.internal_write(Command::ImageChanged {
        node_id: node_id(WORKER_1),
        image: format!("{REGISTRY}/shop/web:1.4.2"),
        image_id: WEB_IMAGE_ID.into(),
    });

    place_tasks(&mut h);

    let batch = vec![
        h.request(request_id(900), Command::ScaleService { name: "shop_api".into(), replicas: 3 }),
        h.request(request_id(901), Command::RedeployService { name: "shop_worker".into() }),
    ];
    h.internal_write(Command::Batch { requests: batch });
    h
}

fn task_id(service: &str, slot: u32) -> String {
    let seed = service.bytes().fold(u64::from(slot), |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
    hex_id(seed)
}

/// The orchestrator creates the tasks, the scheduler places them, and the
/// agents report them in several states.
fn place_tasks(h: &mut History) {
    let mut plan = TaskPlan::default();
    for (name, replicas) in [("web", 5), ("db", 1), ("shop_api", 2), ("shop_worker", 1)] {
        let service = h.service(name);
        for slot in 1..=replicas {
            let mut task = Task::new(task_id(name, slot), service.id.clone(), slot, service.spec.clone());
            task.service_version = service.version;
            plan.create.push(task);
        }
    }
    let db = h.service("db");
    plan.rollouts.push(RolloutDecision {
        service_id: db.id,
        service_version: db.version,
        action: RolloutAction::Complete { message: "every task runs the current spec".into() },
    });
    plan.set_desired.push((task_id("shop_api", 2), DesiredState::Shutdown));
    h.internal_write(Command::ReconcileTasks(plan));

    let on = |name: &str, slot, node: &str| (task_id(name, slot), node_id(node));
    h.internal_write(Command::AssignTasks {
        assignments: vec![
            on("web", 1, WORKER_1),
            on("web", 2, WORKER_2),
            on("web", 3, WORKER_1),
            on("web", 4, WORKER_2),
            on("db", 1, WORKER_1),
            on("shop_api", 1, WORKER_2),
            on("shop_worker", 1, WORKER_2),
        ],
        unplaceable: vec![(
            task_id("web", 5),
            "no node with tags tier:front has 500 millicpus and 256 MiB free".into(),
        )],
    });

    let status = |name: &str, slot, state, health, exit_code, message: &str, endpoints: Vec<Endpoint>| TaskStatus {
        task_id: task_id(name, slot),
        state,
        health,
        container_id: if state >= TaskState::Starting {
            format!("{}{}", hex_id(u64::from(slot) + 500), "c0ffee")
        } else {
            String::new()
        },
        exit_code,
        message: message.into(),
        endpoints,
    };
    let tcp = |container_port, host_port| Endpoint { container_port, host_port, protocol: Protocol::Tcp };
    let worker_1 = vec![
        status("web", 1, TaskState::Running, Health::Healthy, None, "", vec![tcp(8080, 80), tcp(9090, 32_768)]),
        status(
            "web",
            3,
            TaskState::Failed,
            Health::Unhealthy,
            Some(137),
            "container exited with status 137 (out of memory)",
            vec![],
        ),
        status("db", 1, TaskState::Running, Health::Healthy, None, "", vec![tcp(5432, 32_769)]),
    ];
    h.worker_1_statuses = worker_1.clone();
    h.internal_write(Command::ReportTaskStatus { node_id: node_id(WORKER_1), statuses: worker_1 });
    let worker_2 = vec![
        status("web", 2, TaskState::Accepted, Health::None, None, "pulling image", vec![]),
        status("web", 4, TaskState::Running, Health::Starting, None, "", vec![tcp(8080, 80)]),
        status("shop_api", 1, TaskState::Starting, Health::None, None, "", vec![]),
        status("shop_worker", 1, TaskState::Complete, Health::None, Some(0), "", vec![]),
    ];
    h.internal_write(Command::ReportTaskStatus { node_id: node_id(WORKER_2), statuses: worker_2 });

    // Every manager runs 0.2: the cluster version goes up, and an agent
    // that registers again now has its release recorded.
    h.internal_write(Command::SetClusterVersion { version: ClusterVersion::V0_2 });
    h.internal_write(Command::RegisterNode {
        id: node_id(WORKER_2),
        name: WORKER_2.into(),
        address: "10.0.2.22".into(),
        tags: vec!["zone:b".into(), "tier:front".into()],
        resources: Resources { millicpus: 4_000, memory_bytes: 16 * 1024 * MIB },
        agent_version: "0.2.0".into(),
    });
}
