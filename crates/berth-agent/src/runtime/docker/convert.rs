//! Pure translations between berth's runtime types and the Docker Engine
//! API's: a [`ContainerSpec`] into a create request, an inspect answer into
//! a [`ContainerInfo`], an engine event into a [`RuntimeEvent`]. No I/O, so
//! every mapping is unit tested without an engine.

use std::collections::HashMap;
use std::net::IpAddr;

use berth_core::{Health, VolumeKind, VolumeMount};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings, EventMessage,
    EventMessageTypeEnum, HealthConfig, HealthStatusEnum, HostConfig, Ipam, IpamConfig, Mount, MountType,
    NetworkCreateRequest, NetworkInspect, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use ipnet::Ipv4Net;

use crate::runtime::vip::{self, VipRange};
use crate::runtime::{
    ContainerInfo, ContainerSpec, RuntimeError, RuntimeEvent, StackNetwork, LABEL_NODE, LABEL_SERVICE, LABEL_SLOT,
    LABEL_STACK, LABEL_TASK,
};

const NANOS_PER_MILLI: i64 = 1_000_000;
/// Docker's `NanoCpus` is in billionths of a CPU, berth's in thousandths.
const NANO_CPUS_PER_MILLICPU: i64 = 1_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The engine actions the event stream subscribes to.
pub(super) const ACTION_START: &str = "start";
pub(super) const ACTION_DIE: &str = "die";
/// Docker spells this action `health_status: <status>`; the event filter
/// matches on the part before the colon.
pub(super) const ACTION_HEALTH_STATUS: &str = "health_status";
pub(super) const ACTION_DESTROY: &str = "destroy";

/// The driver of a stack network: one node's containers, one bridge.
pub(super) const STACK_NETWORK_DRIVER: &str = "bridge";

/// The create request for `spec`: berth's labels, a restart policy of "no"
/// (berth replaces dead tasks itself), published ports bound on
/// `publish_ip`, exposed ports, mounts, limits, and the health check run by
/// the shell. The container stays on the default network; [`join_network`]
/// puts it on its stack's.
pub(super) fn create_body(spec: &ContainerSpec, publish_ip: IpAddr) -> Result<ContainerCreateBody, RuntimeError> {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let bindings = port_bindings
            .entry(format!("{}/{}", port.container_port, port.protocol))
            .or_insert_with(|| Some(Vec::new()));
        if let Some(bindings) = bindings {
            bindings.push(PortBinding {
                host_ip: Some(publish_ip.to_string()),
                host_port: Some(port.host_port.to_string()),
            });
        }
    }
    // Ports for node proxies go on a free host port (an empty host port),
    // unless the service publishes them itself.
    for port in &spec.proxied_ports {
        port_bindings.entry(format!("{port}/tcp")).or_insert_with(|| {
            Some(vec![PortBinding { host_ip: Some(publish_ip.to_string()), host_port: Some(String::new()) }])
        });
    }
    let mut exposed_ports: Vec<String> = port_bindings.keys().cloned().collect();
    exposed_ports.extend(spec.expose.iter().map(|port| format!("{port}/tcp")));
    exposed_ports.sort();
    exposed_ports.dedup();

    let healthcheck = match &spec.health {
        None => None,
        Some(check) => Some(HealthConfig {
            test: Some(vec!["CMD-SHELL".to_string(), check.command.clone()]),
            interval: Some(millis_to_nanos("health.interval", check.interval_ms)?),
            timeout: Some(millis_to_nanos("health.timeout", check.timeout_ms)?),
            retries: Some(i64::from(check.retries)),
            start_period: Some(millis_to_nanos("health.start_period", check.start_period_ms)?),
            ..Default::default()
        }),
    };

    let nano_cpus = scaled("cpus", spec.resources.millicpus, NANO_CPUS_PER_MILLICPU)?;
    let memory = scaled("memory", spec.resources.memory_bytes, 1)?;

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: non_empty(&spec.command),
        entrypoint: non_empty(&spec.entrypoint),
        env: Some(spec.env.iter().map(|var| format!("{}={}", var.name, var.value)).collect()),
        labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: (!spec.volumes.is_empty()).then(|| spec.volumes.iter().map(mount).collect()),
            nano_cpus: (nano_cpus > 0).then_some(nano_cpus),
            memory: (memory > 0).then_some(memory),
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A named volume or a bind mount. Unlike the legacy `Binds`, a bind mount
/// of a missing host path is refused rather than created empty, so a typo
/// in a path fails the task instead of hiding behind an empty directory.
fn mount(volume: &VolumeMount) -> Mount {
    Mount {
        typ: Some(match volume.kind {
            VolumeKind::Named => MountType::VOLUME,
            VolumeKind::Bind => MountType::BIND,
        }),
        source: Some(volume.source.clone()),
        target: Some(volume.target.clone()),
        read_only: Some(volume.read_only),
        ..Default::default()
    }
}

/// Puts the container on its stack's network, engine id `network_id`, with
/// its aliases and links, and `hosts` (`name:address`) in its `/etc/hosts`.
/// The network is named by id because an engine older than API 1.44 may
/// briefly hold two networks of the same name (see the `network` module),
/// and a name would then be ambiguous.
pub(super) fn join_network(
    body: &mut ContainerCreateBody,
    network: &StackNetwork,
    network_id: &str,
    hosts: Vec<String>,
) {
    let endpoint = EndpointSettings {
        aliases: Some(network.aliases.clone()),
        links: (!network.links.is_empty())
            .then(|| network.links.iter().map(|l| format!("{}:{}", l.service, l.alias)).collect()),
        ..Default::default()
    };
    let host_config = body.host_config.get_or_insert_with(HostConfig::default);
    host_config.network_mode = Some(network_id.to_string());
    host_config.extra_hosts = (!hosts.is_empty()).then_some(hosts);
    body.networking_config =
        Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network_id.to_string(), endpoint)])) });
}

/// The create request for a stack's network; with `subnet`, containers get
/// addresses from its lower half only, leaving the upper half to the
/// node's virtual IPs (`vip`).
pub(super) fn network_create_request(network: &StackNetwork, subnet: Option<Ipv4Net>) -> NetworkCreateRequest {
    let ipam = subnet.and_then(|subnet| {
        let (containers, _) = vip::split(subnet)?;
        let gateway = subnet.hosts().next()?;
        Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                ip_range: Some(containers.to_string()),
                gateway: Some(gateway.to_string()),
                auxiliary_addresses: None,
            }]),
            ..Default::default()
        })
    });
    NetworkCreateRequest {
        name: network.name.clone(),
        driver: Some(STACK_NETWORK_DRIVER.to_string()),
        ipam,
        labels: Some(HashMap::from([
            (LABEL_STACK.to_string(), network.stack.clone()),
            (LABEL_NODE.to_string(), network.node_id.clone()),
        ])),
        ..Default::default()
    }
}

/// The engine's option naming a bridge network's host interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The IPv4 subnet the engine gave a network.
pub(super) fn subnet_of(network: &NetworkInspect) -> Option<Ipv4Net> {
    let configs = network.ipam.as_ref()?.config.as_ref()?;
    configs.iter().find_map(|c| c.subnet.as_deref()?.parse().ok())
}

/// Where a network created by [`network_create_request`] keeps its virtual
/// IPs; `None` for any other network.
pub(super) fn vip_range_of(network: &NetworkInspect) -> Option<VipRange> {
    let configs = network.ipam.as_ref()?.config.as_ref()?;
    let block = configs.iter().find_map(|c| {
        let subnet: Ipv4Net = c.subnet.as_deref()?.parse().ok()?;
        vip::block_of(subnet, c.ip_range.as_deref().and_then(|r| r.parse().ok()))
    })?;
    // The engine names a bridge `br-` and the first 12 characters of the
    // network id, unless told otherwise.
    let bridge = match network.options.as_ref().and_then(|o| o.get(BRIDGE_NAME_OPTION)) {
        Some(name) => name.clone(),
        None => format!("br-{}", network.id.as_deref()?.get(..12)?),
    };
    Some(VipRange { bridge, block })
}

/// What `list` reports about one inspected container; `None` for a
/// container without berth's task and node labels.
pub(super) fn container_info(inspect: &ContainerInspectResponse) -> Option<ContainerInfo> {
    let labels = inspect.config.as_ref()?.labels.as_ref()?;
    let state = inspect.state.as_ref();
    let running = state.and_then(|s| s.running).unwrap_or(false);
    let never_started = state.and_then(|s| s.status) == Some(ContainerStateStatusEnum::CREATED);
    let exit_code = if running || never_started { None } else { state.and_then(|s| s.exit_code) };
    let health = state.and_then(|s| s.health.as_ref()).and_then(|h| h.status).map_or(Health::None, health_from);
    Some(ContainerInfo {
        container_id: inspect.id.clone()?,
        name: inspect.name.as_deref().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
        task_id: labels.get(LABEL_TASK)?.clone(),
        service_id: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        slot: labels.get(LABEL_SLOT).and_then(|s| s.parse().ok()),
        node_id: labels.get(LABEL_NODE)?.clone(),
        running,
        exit_code,
        health,
        image_id: inspect.image.clone().unwrap_or_default(),
    })
}

/// The runtime event for one engine event; `None` for events berth does
/// not act on, or about containers without a task label.
pub(super) fn runtime_event(message: &EventMessage) -> Option<RuntimeEvent> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let attributes = actor.attributes.as_ref()?;
    let task_id = attributes.get(LABEL_TASK)?.clone();
    let container_id = actor.id.clone()?;
    let action = message.action.as_deref()?;
    let (verb, detail) = match action.split_once(':') {
        Some((verb, detail)) => (verb, Some(detail.trim())),
        None => (action, None),
    };
    match verb {
        ACTION_START => Some(RuntimeEvent::Started { task_id, container_id }),
        ACTION_DIE => Some(RuntimeEvent::Died {
            task_id,
            container_id,
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        }),
        ACTION_HEALTH_STATUS => {
            // Newer engines may also carry the status as an attribute.
            let status = detail.or_else(|| attributes.get("health_status").map(String::as_str))?;
            let health = match status {
                "healthy" => Health::Healthy,
                "unhealthy" => Health::Unhealthy,
                "starting" => Health::Starting,
                _ => return None,
            };
            Some(RuntimeEvent::HealthChanged { task_id, container_id, health })
        }
        ACTION_DESTROY => Some(RuntimeEvent::Removed { task_id, container_id }),
        _ => None,
    }
}

/// The nanosecond timestamp of an engine event, if it carries one.
pub(super) fn event_time_nanos(message: &EventMessage) -> Option<i64> {
    message.time_nano.or_else(|| message.time.and_then(|s| s.checked_mul(NANOS_PER_SECOND)))
}

/// Docker's `since` argument for a Unix time in nanoseconds:
/// `<seconds>.<nanoseconds>`.
pub(super) fn since_argument(unix_nanos: i64) -> String {
    format!("{}.{:09}", unix_nanos.div_euclid(NANOS_PER_SECOND), unix_nanos.rem_euclid(NANOS_PER_SECOND))
}

fn health_from(status: HealthStatusEnum) -> Health {
    match status {
        HealthStatusEnum::STARTING => Health::Starting,
        HealthStatusEnum::HEALTHY => Health::Healthy,
        HealthStatusEnum::UNHEALTHY => Health::Unhealthy,
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => Health::None,
    }
}

fn non_empty(args: &[String]) -> Option<Vec<String>> {
    (!args.is_empty()).then(|| args.to_vec())
}

fn millis_to_nanos(field: &'static str, millis: u64) -> Result<i64, RuntimeError> {
    scaled(field, millis, NANOS_PER_MILLI)
}

/// `value * factor` as the engine's signed 64-bit integer.
fn scaled(field: &'static str, value: u64, factor: i64) -> Result<i64, RuntimeError> {
    i64::try_from(value).ok().and_then(|v| v.checked_mul(factor)).ok_or_else(|| RuntimeError::SpecRejected {
        field,
        reason: format!("{value} is too large for the Docker Engine"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use berth_core::{EnvVar, HealthCheck, PortMapping, Protocol, Resources, ServiceLink};
    use bollard::models::{ContainerConfig, ContainerState, EventActor, HealthStatusEnum};

    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            task_id: "task-1".into(),
            service_id: "svc-1".into(),
            service_name: "web".into(),
            node_id: "node-1".into(),
            slot: 2,
            name: "berth-web.2.task-1".into(),
            image: "berth-test/busybox:latest".into(),
            command: vec![],
            entrypoint: vec![],
            env: vec![],
            ports: vec![],
            expose: vec![],
            health: None,
            resources: Resources::default(),
            labels: BTreeMap::from([(LABEL_TASK.to_string(), "task-1".to_string())]),
            volumes: vec![],
            network: None,
            proxied_ports: Vec::new(),
            discovery: Vec::new(),
            secrets: Vec::new(),
            registry: None,
        }
    }

    fn any_ip() -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }

    #[test]
    fn plain_spec_keeps_image_defaults_and_never_restarts() {
        let body = create_body(&spec(), any_ip()).expect("valid");
        assert_eq!(body.image.as_deref(), Some("berth-test/busybox:latest"));
        assert_eq!(body.cmd, None);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.healthcheck, None);
        assert_eq!(body.exposed_ports, None);
        let host = body.host_config.expect("host config");
        assert_eq!(host.restart_policy.and_then(|p| p.name), Some(RestartPolicyNameEnum::NO));
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.nano_cpus, None);
        assert_eq!(host.memory, None);
        assert_eq!(body.labels.and_then(|l| l.get(LABEL_TASK).cloned()), Some("task-1".to_string()));
    }

    #[test]
    fn command_entrypoint_and_env_are_passed_through() {
        let mut s = spec();
        s.command = vec!["sleep".into(), "300".into()];
        s.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        s.env = vec![EnvVar { name: "A".into(), value: "b=c".into() }];
        let body = create_body(&s, any_ip()).expect("valid");
        assert_eq!(body.cmd, Some(s.command.clone()));
        assert_eq!(body.entrypoint, Some(s.entrypoint.clone()));
        assert_eq!(body.env, Some(vec!["A=b=c".to_string()]));
    }

    #[test]
    fn published_ports_bind_on_the_configured_address_grouped_by_container_port() {
        let mut s = spec();
        s.ports = vec![
            PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp },
            PortMapping { host_port: 8081, container_port: 80, protocol: Protocol::Tcp },
            PortMapping { host_port: 5353, container_port: 53, protocol: Protocol::Udp },
        ];
        let ip: IpAddr = "127.0.0.1".parse().expect("valid address");
        let body = create_body(&s, ip).expect("valid");
        assert_eq!(body.exposed_ports, Some(vec!["53/udp".to_string(), "80/tcp".to_string()]));
        let bindings = body.host_config.and_then(|h| h.port_bindings).expect("bindings");
        let bound = |key: &str| -> Vec<(String, String)> {
            bindings[key]
                .iter()
                .flatten()
                .map(|b| (b.host_ip.clone().unwrap_or_default(), b.host_port.clone().unwrap_or_default()))
                .collect()
        };
        assert_eq!(
            bound("80/tcp"),
            vec![("127.0.0.1".to_string(), "8080".to_string()), ("127.0.0.1".to_string(), "8081".to_string())]
        );
        assert_eq!(bound("53/udp"), vec![("127.0.0.1".to_string(), "5353".to_string())]);
    }

    #[test]
    fn resources_become_nano_cpus_and_memory() {
        let mut s = spec();
        s.resources = Resources { millicpus: 1_500, memory_bytes: 64 << 20 };
        let host = create_body(&s, any_ip()).expect("valid").host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
    }

    #[test]
    fn resources_too_large_for_docker_name_the_field() {
        let mut s = spec();
        s.resources.memory_bytes = u64::MAX;
        assert!(matches!(create_body(&s, any_ip()), Err(RuntimeError::SpecRejected { field: "memory", .. })));
        let mut s = spec();
        s.resources.millicpus = u64::MAX / 2;
        assert!(matches!(create_body(&s, any_ip()), Err(RuntimeError::SpecRejected { field: "cpus", .. })));
    }

    #[test]
    fn health_check_runs_in_the_shell_with_nanosecond_durations() {
        let mut s = spec();
        s.health = Some(HealthCheck {
            command: "wget -q -O- localhost:80 || exit 1".into(),
            interval_ms: 200,
            timeout_ms: 1_000,
            retries: 2,
            start_period_ms: 50,
        });
        let health = create_body(&s, any_ip()).expect("valid").healthcheck.expect("health config");
        assert_eq!(health.test, Some(vec!["CMD-SHELL".to_string(), "wget -q -O- localhost:80 || exit 1".to_string()]));
        assert_eq!(health.interval, Some(200_000_000));
        assert_eq!(health.timeout, Some(1_000_000_000));
        assert_eq!(health.retries, Some(2));
        assert_eq!(health.start_period, Some(50_000_000));
    }

    #[test]
    fn named_volumes_and_bind_mounts_become_mounts_with_their_access() {
        let mut s = spec();
        s.volumes = vec![
            VolumeMount {
                kind: VolumeKind::Named,
                source: "shop_data".into(),
                target: "/data".into(),
                read_only: false,
            },
            VolumeMount { kind: VolumeKind::Bind, source: "/srv/conf".into(), target: "/conf".into(), read_only: true },
        ];
        let host = create_body(&s, any_ip()).expect("valid").host_config.expect("host config");
        let mounts = host.mounts.expect("mounts");
        let described: Vec<_> =
            mounts.iter().map(|m| (m.typ, m.source.as_deref(), m.target.as_deref(), m.read_only)).collect();
        assert_eq!(
            described,
            vec![
                (Some(MountType::VOLUME), Some("shop_data"), Some("/data"), Some(false)),
                (Some(MountType::BIND), Some("/srv/conf"), Some("/conf"), Some(true)),
            ]
        );
        assert_eq!(host.binds, None, "legacy binds would create a missing host path");
    }

    #[test]
    fn no_volumes_no_mounts() {
        let host = create_body(&spec(), any_ip()).expect("valid").host_config.expect("host config");
        assert_eq!(host.mounts, None);
    }

    #[test]
    fn exposed_ports_are_tcp_and_merge_with_published_ones() {
        let mut s = spec();
        s.expose = vec![9000, 80];
        s.ports = vec![PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp }];
        let body = create_body(&s, any_ip()).expect("valid");
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string(), "9000/tcp".to_string()]));
        let bindings = body.host_config.and_then(|h| h.port_bindings).expect("bindings");
        assert_eq!(bindings.len(), 1, "exposing publishes nothing: {bindings:?}");
    }

    fn stack_network() -> StackNetwork {
        StackNetwork {
            stack: "shop".into(),
            node_id: "node-1".into(),
            name: "berth-stack-shop-node-1".into(),
            aliases: vec!["web".into(), "shop_web".into()],
            links: vec![ServiceLink { service: "shop_db".into(), alias: "database".into() }],
        }
    }

    #[test]
    fn a_container_without_a_stack_network_keeps_the_default_network() {
        let body = create_body(&spec(), any_ip()).expect("valid");
        assert_eq!(body.networking_config, None);
        assert_eq!(body.host_config.and_then(|h| h.network_mode), None);
    }

    #[test]
    fn joining_a_stack_network_names_it_by_id_with_aliases_and_links() {
        let mut body = create_body(&spec(), any_ip()).expect("valid");
        join_network(&mut body, &stack_network(), "net-id-1", vec!["db:172.20.128.2".into()]);
        assert_eq!(body.host_config.as_ref().and_then(|h| h.network_mode.as_deref()), Some("net-id-1"));
        let hosts = body.host_config.as_ref().and_then(|h| h.extra_hosts.clone());
        assert_eq!(hosts, Some(vec!["db:172.20.128.2".to_string()]));
        let endpoints = body.networking_config.and_then(|n| n.endpoints_config).expect("endpoints");
        assert_eq!(endpoints.keys().collect::<Vec<_>>(), vec!["net-id-1"]);
        let endpoint = &endpoints["net-id-1"];
        assert_eq!(endpoint.aliases, Some(vec!["web".to_string(), "shop_web".to_string()]));
        assert_eq!(endpoint.links, Some(vec!["shop_db:database".to_string()]));
    }

    #[test]
    fn joining_without_links_sets_no_links() {
        let mut network = stack_network();
        network.links.clear();
        let mut body = create_body(&spec(), any_ip()).expect("valid");
        join_network(&mut body, &network, "net-id-1", Vec::new());
        assert_eq!(body.host_config.as_ref().and_then(|h| h.extra_hosts.clone()), None);
        let endpoints = body.networking_config.and_then(|n| n.endpoints_config).expect("endpoints");
        assert_eq!(endpoints["net-id-1"].links, None);
    }

    #[test]
    fn a_stack_network_is_a_bridge_labelled_with_its_stack_and_node() {
        let request = network_create_request(&stack_network(), None);
        assert_eq!(request.name, "berth-stack-shop-node-1");
        assert_eq!(request.driver.as_deref(), Some("bridge"));
        assert_eq!(request.ipam, None, "the engine picks the subnet");
        let labels = HashMap::from([
            (LABEL_STACK.to_string(), "shop".to_string()),
            (LABEL_NODE.to_string(), "node-1".to_string()),
        ]);
        assert_eq!(request.labels, Some(labels));
    }

    #[test]
    fn a_split_subnet_leaves_its_upper_half_to_virtual_ips() {
        let subnet: Ipv4Net = "172.20.0.0/16".parse().expect("subnet");
        let request = network_create_request(&stack_network(), Some(subnet));
        let config = request.ipam.and_then(|i| i.config).expect("IPAM config");
        assert_eq!(config[0].subnet.as_deref(), Some("172.20.0.0/16"));
        assert_eq!(config[0].ip_range.as_deref(), Some("172.20.0.0/17"));
        assert_eq!(config[0].gateway.as_deref(), Some("172.20.0.1"));
        let network = NetworkInspect {
            id: Some("0123456789abcdef".into()),
            ipam: Some(Ipam { config: Some(config), ..Default::default() }),
            ..Default::default()
        };
        let range = vip_range_of(&network).expect("a range");
        assert_eq!(range.bridge, "br-0123456789ab");
        assert_eq!(range.block.to_string(), "172.20.128.0/17");
        let unsplit = NetworkInspect { ipam: None, ..network };
        assert_eq!(vip_range_of(&unsplit), None);
    }

    fn event(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: Some("c1".into()),
                attributes: Some(attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_123_456_789),
            ..Default::default()
        }
    }

    #[test]
    fn engine_events_translate_to_runtime_events() {
        let task = (LABEL_TASK, "t1");
        let cases = [
            (event("start", &[task]), Some(RuntimeEvent::Started { task_id: "t1".into(), container_id: "c1".into() })),
            (
                event("die", &[task, ("exitCode", "137")]),
                Some(RuntimeEvent::Died { task_id: "t1".into(), container_id: "c1".into(), exit_code: Some(137) }),
            ),
            (
                event("die", &[task]),
                Some(RuntimeEvent::Died { task_id: "t1".into(), container_id: "c1".into(), exit_code: None }),
            ),
            (
                event("health_status: unhealthy", &[task]),
                Some(RuntimeEvent::HealthChanged {
                    task_id: "t1".into(),
                    container_id: "c1".into(),
                    health: Health::Unhealthy,
                }),
            ),
            (
                event("health_status: healthy", &[task]),
                Some(RuntimeEvent::HealthChanged {
                    task_id: "t1".into(),
                    container_id: "c1".into(),
                    health: Health::Healthy,
                }),
            ),
            (
                event("health_status", &[task, ("health_status", "healthy")]),
                Some(RuntimeEvent::HealthChanged {
                    task_id: "t1".into(),
                    container_id: "c1".into(),
                    health: Health::Healthy,
                }),
            ),
            (
                event("destroy", &[task]),
                Some(RuntimeEvent::Removed { task_id: "t1".into(), container_id: "c1".into() }),
            ),
            (event("exec_start: /bin/sh -c true", &[task]), None),
            (event("kill", &[task, ("signal", "9")]), None),
            (event("die", &[("exitCode", "0")]), None),
        ];
        for (message, expected) in cases {
            assert_eq!(runtime_event(&message), expected, "{message:?}");
        }
    }

    #[test]
    fn events_of_other_object_types_are_ignored() {
        let mut message = event("start", &[(LABEL_TASK, "t1")]);
        message.typ = Some(EventMessageTypeEnum::NETWORK);
        assert_eq!(runtime_event(&message), None);
    }

    #[test]
    fn event_time_prefers_nanoseconds() {
        let mut message = event("start", &[]);
        assert_eq!(event_time_nanos(&message), Some(1_700_000_000_123_456_789));
        message.time_nano = None;
        assert_eq!(event_time_nanos(&message), Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn since_argument_is_seconds_dot_nanoseconds() {
        assert_eq!(since_argument(1_700_000_000_000_000_042), "1700000000.000000042");
    }

    fn inspected(running: bool, status: ContainerStateStatusEnum) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("c1".into()),
            name: Some("/berth-web.2.task-1".into()),
            image: Some("sha256:abc".into()),
            state: Some(ContainerState {
                status: Some(status),
                running: Some(running),
                exit_code: Some(if running { 0 } else { 137 }),
                health: Some(bollard::models::Health { status: Some(HealthStatusEnum::HEALTHY), ..Default::default() }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([
                    (LABEL_TASK.to_string(), "t1".to_string()),
                    (LABEL_SERVICE.to_string(), "s1".to_string()),
                    (LABEL_NODE.to_string(), "n1".to_string()),
                    (LABEL_SLOT.to_string(), "2".to_string()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inspected_running_container_has_no_exit_code() {
        let info = container_info(&inspected(true, ContainerStateStatusEnum::RUNNING)).expect("berth container");
        assert_eq!(
            info,
            ContainerInfo {
                container_id: "c1".into(),
                name: "berth-web.2.task-1".into(),
                task_id: "t1".into(),
                service_id: "s1".into(),
                slot: Some(2),
                node_id: "n1".into(),
                running: true,
                exit_code: None,
                health: Health::Healthy,
                image_id: "sha256:abc".into(),
            }
        );
    }

    #[test]
    fn inspected_exited_container_reports_its_exit_code() {
        let info = container_info(&inspected(false, ContainerStateStatusEnum::EXITED)).expect("berth container");
        assert!(!info.running);
        assert_eq!(info.exit_code, Some(137));
    }

    #[test]
    fn inspected_container_that_never_started_has_no_exit_code() {
        let info = container_info(&inspected(false, ContainerStateStatusEnum::CREATED)).expect("berth container");
        assert_eq!(info.exit_code, None);
    }

    #[test]
    fn inspected_container_without_task_label_is_not_berths() {
        let mut inspect = inspected(true, ContainerStateStatusEnum::RUNNING);
        if let Some(labels) = inspect.config.as_mut().and_then(|c| c.labels.as_mut()) {
            labels.remove(LABEL_TASK);
        }
        assert_eq!(container_info(&inspect), None);
    }
}
