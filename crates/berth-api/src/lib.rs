//! Conversions between the wire types (`berth_proto::v1`) and the domain
//! (`berth_core`). Wire input is untrusted: every conversion names the
//! field it rejects, with the accepted values.

use berth_core::{
    non_negative, CoreError, Dependency, DesiredState, Endpoint, EnvVar, Health, HealthCheck, Node, PortMapping,
    Resources, RestartPolicy, RolloutProgress, SecretRef, Service, ServiceLink, ServiceMode, ServiceSpec, Strategy,
    Task, TaskState, UpdateConfig, VolumeMount,
};
use berth_proto::v1 as pb;

/// Millicpus per CPU.
const MILLI: f64 = 1000.0;

pub fn spec_from_proto(spec: pb::ServiceSpec) -> Result<ServiceSpec, CoreError> {
    let mut strategy: Strategy = spec.strategy.parse()?;
    let mode = if spec.every_node || strategy == Strategy::EveryNode {
        if spec.replicas.is_some() {
            return Err(CoreError::invalid(
                "replicas",
                "cannot be combined with every-node (it runs one task per node)",
            ));
        }
        strategy = Strategy::EveryNode;
        ServiceMode::EveryNode
    } else {
        ServiceMode::Replicated { replicas: non_negative("replicas", spec.replicas.unwrap_or(1))? }
    };
    let ports = spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(PortMapping {
                host_port: port_number(&format!("ports[{i}].host_port"), p.host_port)?,
                container_port: port_number(&format!("ports[{i}].container_port"), p.container_port)?,
                protocol: p.protocol.parse().map_err(|_| {
                    CoreError::invalid(
                        format!("ports[{i}].protocol"),
                        format!("'{}' is not one of tcp, udp", p.protocol),
                    )
                })?,
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let health = spec
        .health
        .map(|h| -> Result<HealthCheck, CoreError> {
            let defaults = HealthCheck::new(h.command.clone());
            Ok(HealthCheck {
                command: h.command,
                interval_ms: or_default(non_negative("health.interval", h.interval_ms)?, defaults.interval_ms),
                timeout_ms: or_default(non_negative("health.timeout", h.timeout_ms)?, defaults.timeout_ms),
                retries: or_default(non_negative("health.retries", h.retries)?, defaults.retries),
                start_period_ms: non_negative("health.start_period", h.start_period_ms)?,
            })
        })
        .transpose()?;
    if !spec.cpus.is_finite() || spec.cpus < 0.0 {
        return Err(CoreError::invalid("cpus", format!("{} is not a non-negative number of CPUs", spec.cpus)));
    }
    let update = update_config_from_proto("update", spec.update)?;
    let rollback = update_config_from_proto("rollback", spec.rollback)?;
    let volumes = spec
        .volumes
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Ok(VolumeMount {
                kind: v.kind.parse().map_err(|_| {
                    CoreError::invalid(format!("volumes[{i}].kind"), format!("'{}' is not one of volume, bind", v.kind))
                })?,
                source: v.source,
                target: v.target,
                read_only: v.read_only,
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let depends_on = spec
        .depends_on
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let condition =
                d.condition.parse().map_err(|e: CoreError| e.renamed(&format!("depends_on[{i}].condition")))?;
            Ok(Dependency { service: d.service, condition })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    let expose = spec
        .expose
        .iter()
        .enumerate()
        .map(|(i, p)| port_number(&format!("expose[{i}]"), *p))
        .collect::<Result<Vec<_>, CoreError>>()?;
    let spec = ServiceSpec {
        name: spec.name,
        image: spec.image,
        command: spec.command,
        entrypoint: spec.entrypoint,
        env: spec.env.into_iter().map(|e| EnvVar { name: e.name, value: e.value }).collect(),
        ports,
        mode,
        strategy,
        tags: spec.tags,
        restart: RestartPolicy {
            condition: spec.restart.parse()?,
            max_attempts: non_negative("restart_max_attempts", spec.restart_max_attempts)?,
        },
        autodestroy: spec.autodestroy.parse()?,
        health,
        resources: Resources {
            millicpus: (spec.cpus * MILLI).round() as u64,
            memory_bytes: non_negative("memory", spec.memory_bytes)?,
        },
        links: spec.links.into_iter().map(|l| ServiceLink { service: l.service, alias: l.alias }).collect(),
        update,
        labels: spec.labels.into_iter().collect(),
        sequential: spec.sequential,
        autoredeploy: spec.autoredeploy,
        force_redeploy: spec.force_redeploy,
        rollback,
        volumes,
        secrets: spec.secrets.into_iter().map(|s| SecretRef { name: s.name, target: s.target }).collect(),
        depends_on,
        virtual_hosts: spec.virtual_hosts,
        expose,
        stack: spec.stack,
    };
    spec.validate()?;
    Ok(spec)
}

/// Unset fields on the wire take the defaults.
fn update_config_from_proto(section: &str, config: Option<pb::UpdateConfig>) -> Result<UpdateConfig, CoreError> {
    let defaults = UpdateConfig::default();
    let Some(u) = config else { return Ok(defaults) };
    let field = |name: &str| format!("{section}.{name}");
    let number = |name: &str, value: Option<i64>, default: u64| -> Result<u64, CoreError> {
        value.map_or(Ok(default), |v| non_negative(&field(name), v))
    };
    Ok(UpdateConfig {
        parallelism: u32::try_from(number("parallelism", u.parallelism, defaults.parallelism.into())?)
            .map_err(|_| CoreError::invalid(field("parallelism"), "is too large"))?,
        delay_ms: number("delay", u.delay_ms, defaults.delay_ms)?,
        order: u.order.parse().map_err(|e: CoreError| e.renamed(&field("order")))?,
        failure_action: u.failure_action.parse().map_err(|e: CoreError| e.renamed(&field("failure_action")))?,
        monitor_ms: number("monitor", u.monitor_ms, defaults.monitor_ms)?,
        max_failure_ratio: u.max_failure_ratio.unwrap_or(defaults.max_failure_ratio),
    })
}

fn update_config_to_proto(config: &UpdateConfig) -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: Some(config.parallelism.into()),
        delay_ms: Some(saturating_i64(config.delay_ms)),
        order: config.order.to_string(),
        failure_action: config.failure_action.to_string(),
        monitor_ms: Some(saturating_i64(config.monitor_ms)),
        max_failure_ratio: Some(config.max_failure_ratio),
    }
}

fn or_default<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

fn port_number(field: &str, value: i64) -> Result<u16, CoreError> {
    match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(CoreError::invalid(field, format!("{value} is not a port between 1 and 65535"))),
    }
}

pub fn spec_to_proto(spec: &ServiceSpec) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: spec.name.clone(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: spec.env.iter().map(|e| pb::EnvVar { name: e.name.clone(), value: e.value.clone() }).collect(),
        ports: spec
            .ports
            .iter()
            .map(|p| pb::PortMapping {
                host_port: p.host_port.into(),
                container_port: p.container_port.into(),
                protocol: p.protocol.to_string(),
            })
            .collect(),
        replicas: spec.replicas().map(i64::from),
        every_node: spec.mode == ServiceMode::EveryNode,
        strategy: spec.strategy.to_string(),
        tags: spec.tags.clone(),
        restart: spec.restart.condition.to_string(),
        restart_max_attempts: spec.restart.max_attempts.into(),
        autodestroy: spec.autodestroy.to_string(),
        health: spec.health.as_ref().map(|h| pb::HealthCheck {
            command: h.command.clone(),
            interval_ms: saturating_i64(h.interval_ms),
            timeout_ms: saturating_i64(h.timeout_ms),
            retries: h.retries.into(),
            start_period_ms: saturating_i64(h.start_period_ms),
        }),
        cpus: spec.resources.millicpus as f64 / MILLI,
        memory_bytes: saturating_i64(spec.resources.memory_bytes),
        links: spec
            .links
            .iter()
            .map(|l| pb::ServiceLink { service: l.service.clone(), alias: l.alias.clone() })
            .collect(),
        update: Some(update_config_to_proto(&spec.update)),
        labels: spec.labels.clone().into_iter().collect(),
        sequential: spec.sequential,
        autoredeploy: spec.autoredeploy,
        force_redeploy: spec.force_redeploy,
        rollback: Some(update_config_to_proto(&spec.rollback)),
        volumes: spec
            .volumes
            .iter()
            .map(|v| pb::VolumeMount {
                kind: v.kind.to_string(),
                source: v.source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
            })
            .collect(),
        secrets: spec
            .secrets
            .iter()
            .map(|s| pb::SecretRef { name: s.name.clone(), target: s.target.clone() })
            .collect(),
        depends_on: spec
            .depends_on
            .iter()
            .map(|d| pb::Dependency { service: d.service.clone(), condition: d.condition.to_string() })
            .collect(),
        virtual_hosts: spec.virtual_hosts.clone(),
        expose: spec.expose.iter().map(|p| i64::from(*p)).collect(),
        stack: spec.stack.clone(),
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn node_to_proto(node: &Node, task_count: usize) -> pb::Node {
    pb::Node {
        id: node.id.clone(),
        name: node.name.clone(),
        address: node.address.clone(),
        tags: node.tags.iter().cloned().collect(),
        cpus: node.resources.millicpus as f64 / MILLI,
        memory_bytes: saturating_i64(node.resources.memory_bytes),
        availability: node.availability.to_string(),
        status: node.status.to_string(),
        status_message: node.status_message.clone(),
        task_count: u32::try_from(task_count).unwrap_or(u32::MAX),
        created_at_ms: node.created_at_ms,
        updated_at_ms: node.updated_at_ms,
        agent_version: node.agent_version.clone(),
    }
}

pub fn task_to_proto(task: &Task, node_name: &str) -> pb::Task {
    pb::Task {
        id: task.id.clone(),
        service_id: task.service_id.clone(),
        service_name: task.service_name.clone(),
        service_version: task.service_version,
        slot: task.slot,
        node_id: task.node_id.clone().unwrap_or_default(),
        node_name: node_name.to_string(),
        desired_state: task.desired.to_string(),
        state: task.state.to_string(),
        health: task.health.to_string(),
        container_id: task.container_id.clone(),
        exit_code: task.exit_code,
        message: task.message.clone(),
        attempt: task.attempt,
        created_at_ms: task.created_at_ms,
        state_since_ms: task.state_since_ms,
        endpoints: task.endpoints.iter().map(endpoint_to_proto).collect(),
        ready: berth_core::rollout::is_ready(task),
    }
}

pub fn endpoint_to_proto(endpoint: &Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        container_port: endpoint.container_port.into(),
        host_port: endpoint.host_port.into(),
        protocol: endpoint.protocol.to_string(),
    }
}

/// An endpoint as an agent or a watcher reports it; ports must be 1-65535.
pub fn endpoint_from_proto(endpoint: &pb::Endpoint) -> Result<Endpoint, CoreError> {
    let port = |field: &str, value: u32| match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(CoreError::invalid(field, format!("{value} is not a port between 1 and 65535"))),
    };
    Ok(Endpoint {
        container_port: port("endpoints.container_port", endpoint.container_port)?,
        host_port: port("endpoints.host_port", endpoint.host_port)?,
        protocol: endpoint.protocol.parse()?,
    })
}

/// Parses a task state as agents report it; only states an agent may set.
pub fn reported_state(text: &str) -> Result<TaskState, CoreError> {
    Ok(match text {
        "accepted" => TaskState::Accepted,
        "starting" => TaskState::Starting,
        "running" => TaskState::Running,
        "complete" => TaskState::Complete,
        "shutdown" => TaskState::Shutdown,
        "failed" => TaskState::Failed,
        "rejected" => TaskState::Rejected,
        other => return Err(CoreError::invalid("state", format!("'{other}' is not a state an agent reports"))),
    })
}

/// Any task state, as `TaskState::as_str` spells it.
pub fn task_state_from_text(text: &str) -> Result<TaskState, CoreError> {
    Ok(match text {
        "new" => TaskState::New,
        "pending" => TaskState::Pending,
        "assigned" => TaskState::Assigned,
        "orphaned" => TaskState::Orphaned,
        other => reported_state(other)?,
    })
}

/// How an agent spells a state it reports.
pub fn reported_state_text(state: TaskState) -> &'static str {
    state.as_str()
}

pub fn desired_from_text(text: &str) -> Result<DesiredState, CoreError> {
    Ok(match text {
        "running" => DesiredState::Running,
        "shutdown" => DesiredState::Shutdown,
        "remove" => DesiredState::Remove,
        other => {
            return Err(CoreError::invalid("desired", format!("'{other}' is not one of running, shutdown, remove")))
        }
    })
}

/// The task an agent is asked to run, rebuilt from its assignment.
pub fn task_from_assignment(assignment: pb::Assignment) -> Result<Task, CoreError> {
    let spec = spec_from_proto(assignment.spec.ok_or_else(|| CoreError::invalid("spec", "is required"))?)?;
    Ok(Task {
        service_name: assignment.service_name,
        desired: desired_from_text(&assignment.desired)?,
        state: task_state_from_text(&assignment.state)?,
        ..Task::new(assignment.task_id, assignment.service_id, assignment.slot, spec)
    })
}

pub fn health_from_text(text: &str) -> Result<Health, CoreError> {
    Ok(match text {
        "" | "none" => Health::None,
        "starting" => Health::Starting,
        "healthy" => Health::Healthy,
        "unhealthy" => Health::Unhealthy,
        other => {
            return Err(CoreError::invalid("health", format!("'{other}' is not one of starting, healthy, unhealthy")))
        }
    })
}

/// `progress` is read off the service's tasks by the caller, who has them.
pub fn service_to_proto(service: &Service, progress: RolloutProgress) -> pb::Service {
    pb::Service {
        id: service.id.clone(),
        name: service.spec.name.clone(),
        spec: Some(spec_to_proto(&service.spec)),
        version: service.version,
        created_at_ms: service.created_at_ms,
        updated_at_ms: service.updated_at_ms,
        previous_spec: service.previous_spec.as_ref().map(spec_to_proto),
        rollout: service.rollout.as_ref().map(|r| pb::Rollout {
            kind: r.kind.to_string(),
            state: r.state.to_string(),
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
            message: r.message.clone(),
            slots: progress.slots,
            updated: progress.updated,
            in_flight: progress.in_flight,
            failed: progress.failed,
        }),
        virtual_ip: service.virtual_ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> pb::ServiceSpec {
        pb::ServiceSpec { name: "web".into(), image: "busybox".into(), ..Default::default() }
    }

    #[test]
    fn a_spec_survives_the_round_trip() {
        let mut wire = minimal();
        wire.replicas = Some(3);
        wire.ports.push(pb::PortMapping { host_port: 8080, container_port: 80, protocol: "udp".into() });
        wire.cpus = 0.5;
        let spec = spec_from_proto(wire).expect("valid");
        assert_eq!(spec.resources.millicpus, 500);
        assert_eq!(spec_from_proto(spec_to_proto(&spec)).expect("valid again"), spec);
    }

    #[test]
    fn wire_errors_name_the_field() {
        let field = |wire: pb::ServiceSpec| match spec_from_proto(wire) {
            Err(CoreError::SpecInvalid { field, .. }) => field,
            other => panic!("expected SpecInvalid, got {other:?}"),
        };
        assert_eq!(field(pb::ServiceSpec { replicas: Some(-1), ..minimal() }), "replicas");
        assert_eq!(field(pb::ServiceSpec { replicas: Some(2), every_node: true, ..minimal() }), "replicas");
        assert_eq!(field(pb::ServiceSpec { strategy: "fastest".into(), ..minimal() }), "strategy");
        assert_eq!(field(pb::ServiceSpec { cpus: -1.0, ..minimal() }), "cpus");
        assert_eq!(field(pb::ServiceSpec { memory_bytes: -5, ..minimal() }), "memory");
        assert_eq!(field(pb::ServiceSpec { image: String::new(), ..minimal() }), "image");
        let bad_port = pb::PortMapping { host_port: 70_000, container_port: 80, protocol: String::new() };
        assert_eq!(field(pb::ServiceSpec { ports: vec![bad_port], ..minimal() }), "ports[0].host_port");
        assert_eq!(field(pb::ServiceSpec { restart: "sometimes".into(), ..minimal() }), "restart");
    }

    #[test]
    fn every_node_strategy_implies_every_node_mode() {
        let spec = spec_from_proto(pb::ServiceSpec { strategy: "every-node".into(), ..minimal() }).expect("valid");
        assert_eq!(spec.mode, ServiceMode::EveryNode);
    }
}
