//! Turns `service create`/`update` flags into the `ServiceSpec` the API
//! takes. Pure: no I/O, so every rule here is unit-tested.
//!
//! Both commands go through [`apply_flags`]: `create` applies the flags to
//! an empty spec, `update` to the spec it read, which is why every flag is
//! optional and only a flag that was given changes anything. Validation is
//! left to the manager, the one place that knows all the rules; the CLI
//! only refuses what it cannot express on the wire.

use anyhow::{bail, Result};
use berth_core::{HealthCheck, Strategy};
use berth_proto::v1 as proto;

use crate::cli::{CreateArgs, ServiceFlags, ServiceRemovals, UpdateArgs};

/// The spec `service create` sends.
pub fn create_spec(args: &CreateArgs) -> Result<proto::ServiceSpec> {
    let mut spec = proto::ServiceSpec {
        name: args.name.clone(),
        image: args.image.clone(),
        command: args.command.clone(),
        ..Default::default()
    };
    apply_flags(&mut spec, &args.flags)?;
    Ok(spec)
}

/// The spec `service update` sends, given the spec it read.
pub fn updated_spec(current: &proto::ServiceSpec, args: &UpdateArgs) -> Result<proto::ServiceSpec> {
    ensure_changes(args)?;
    let mut spec = current.clone();
    if let Some(image) = &args.image {
        spec.image.clone_from(image);
    }
    if !args.command.is_empty() {
        spec.command.clone_from(&args.command);
    }
    // Removals first, so `--env-rm A --env A=1` ends with A=1 as written.
    apply_removals(&mut spec, &args.removals);
    apply_flags(&mut spec, &args.flags)?;
    Ok(spec)
}

/// Refuses an update that would change nothing: the API has no
/// "redeploy as is", and sending the same spec would only bump the version.
pub fn ensure_changes(args: &UpdateArgs) -> Result<()> {
    if !changes_anything(args) {
        bail!(
            "nothing to change for service '{}': pass at least one flag (see `berth service update --help`)",
            args.name
        );
    }
    Ok(())
}

/// Whether the update flags ask for any change at all.
fn changes_anything(args: &UpdateArgs) -> bool {
    let f = &args.flags;
    let r = &args.removals;
    let flag_given = f.replicas.is_some()
        || f.every_node
        || f.strategy.is_some()
        || !f.tags.is_empty()
        || !f.env.is_empty()
        || !f.publish.is_empty()
        || !f.expose.is_empty()
        || f.restart.is_some()
        || f.restart_max.is_some()
        || f.autodestroy.is_some()
        || health_flag_given(f)
        || f.cpus.is_some()
        || f.memory.is_some()
        || !f.links.is_empty()
        || !f.secrets.is_empty()
        || update_flag_given(f)
        || !f.labels.is_empty()
        || f.entrypoint.is_some()
        || f.sequential.is_some()
        || f.autoredeploy.is_some();
    let removal_given = !r.env_rm.is_empty()
        || !r.label_rm.is_empty()
        || !r.publish_rm.is_empty()
        || !r.tag_rm.is_empty()
        || !r.expose_rm.is_empty()
        || !r.link_rm.is_empty()
        || !r.secret_rm.is_empty()
        || r.health_rm;
    args.image.is_some() || !args.command.is_empty() || flag_given || removal_given
}

fn health_flag_given(f: &ServiceFlags) -> bool {
    f.health_cmd.is_some()
        || f.health_interval.is_some()
        || f.health_timeout.is_some()
        || f.health_retries.is_some()
        || f.health_start_period.is_some()
}

/// Applies every flag that was given to `spec`, leaving the rest alone.
pub fn apply_flags(spec: &mut proto::ServiceSpec, f: &ServiceFlags) -> Result<()> {
    apply_mode(spec, f);
    merge(&mut spec.tags, f.tags.clone(), |t| t.clone());
    merge(
        &mut spec.env,
        f.env.iter().map(|v| proto::EnvVar { name: v.name.clone(), value: v.value.clone() }).collect(),
        |v| v.name.clone(),
    );
    merge(
        &mut spec.ports,
        f.publish
            .iter()
            .map(|p| proto::PortMapping {
                host_port: i64::from(p.host_port),
                container_port: i64::from(p.container_port),
                protocol: p.protocol.to_string(),
            })
            .collect(),
        |p| (p.host_port, effective_protocol(&p.protocol).to_string()),
    );
    merge(&mut spec.expose, f.expose.iter().map(|&p| i64::from(p)).collect(), |p| *p);
    if let Some(restart) = f.restart {
        spec.restart = restart.to_string();
    }
    if let Some(max) = f.restart_max {
        spec.restart_max_attempts = max;
    }
    if let Some(autodestroy) = f.autodestroy {
        spec.autodestroy = autodestroy.to_string();
    }
    apply_health(spec, f)?;
    if let Some(cpus) = f.cpus {
        spec.cpus = cpus;
    }
    if let Some(memory) = f.memory {
        spec.memory_bytes = memory;
    }
    merge(
        &mut spec.links,
        f.links.iter().map(|l| proto::ServiceLink { service: l.service.clone(), alias: l.alias.clone() }).collect(),
        |l| l.service.clone(),
    );
    merge(
        &mut spec.secrets,
        f.secrets.iter().map(|r| proto::SecretRef { name: r.name.clone(), target: r.target.clone() }).collect(),
        |r| r.name.clone(),
    );
    apply_update_config(spec, f);
    for (key, value) in &f.labels {
        spec.labels.insert(key.clone(), value.clone());
    }
    if let Some(entrypoint) = &f.entrypoint {
        spec.entrypoint = entrypoint.split_whitespace().map(str::to_string).collect();
    }
    if let Some(sequential) = f.sequential {
        spec.sequential = sequential;
    }
    if let Some(autoredeploy) = f.autoredeploy {
        spec.autoredeploy = autoredeploy;
    }
    Ok(())
}

/// Replicas, every-node and the strategy are one decision on the manager
/// (every-node mode requires the every-node strategy and the reverse), so
/// one flag moves the others along instead of producing a spec the manager
/// refuses. An explicit `--strategy` always wins, and a contradictory
/// combination is sent as given so the manager names the conflict.
fn apply_mode(spec: &mut proto::ServiceSpec, f: &ServiceFlags) {
    let every_node_keyword = Strategy::EveryNode.to_string();
    if let Some(strategy) = f.strategy {
        spec.strategy = strategy.to_string();
    }
    let wants_every_node = f.every_node || (f.replicas.is_none() && f.strategy == Some(Strategy::EveryNode));
    if wants_every_node {
        spec.every_node = true;
        spec.replicas = None;
        if f.strategy.is_none() {
            spec.strategy.clone_from(&every_node_keyword);
        }
    } else if let Some(replicas) = f.replicas {
        spec.every_node = false;
        spec.replicas = Some(replicas);
        if f.strategy.is_none() && spec.strategy == every_node_keyword {
            // Back to the default strategy: every-node cannot count replicas.
            spec.strategy.clear();
        }
    }
}

fn apply_health(spec: &mut proto::ServiceSpec, f: &ServiceFlags) -> Result<()> {
    if !health_flag_given(f) {
        return Ok(());
    }
    let mut health = match (spec.health.take(), &f.health_cmd) {
        (Some(existing), _) => existing,
        // A new health check starts from the domain's defaults, so that
        // `--health-cmd` alone is a complete, valid check.
        (None, Some(_)) => proto::HealthCheck {
            command: String::new(),
            interval_ms: to_wire_ms(HealthCheck::DEFAULT_INTERVAL_MS),
            timeout_ms: to_wire_ms(HealthCheck::DEFAULT_TIMEOUT_MS),
            retries: i64::from(HealthCheck::DEFAULT_RETRIES),
            start_period_ms: 0,
        },
        (None, None) => bail!(
            "--health-interval, --health-timeout, --health-retries and --health-start-period \
             change a health check; this service has none, so pass --health-cmd too"
        ),
    };
    if let Some(cmd) = &f.health_cmd {
        health.command.clone_from(cmd);
    }
    if let Some(ms) = f.health_interval {
        health.interval_ms = ms;
    }
    if let Some(ms) = f.health_timeout {
        health.timeout_ms = ms;
    }
    if let Some(retries) = f.health_retries {
        health.retries = retries;
    }
    if let Some(ms) = f.health_start_period {
        health.start_period_ms = ms;
    }
    spec.health = Some(health);
    Ok(())
}

fn update_flag_given(f: &ServiceFlags) -> bool {
    f.update_parallelism.is_some()
        || f.update_delay.is_some()
        || f.update_order.is_some()
        || f.update_failure_action.is_some()
        || f.update_monitor.is_some()
        || f.update_max_failure_ratio.is_some()
}

fn apply_update_config(spec: &mut proto::ServiceSpec, f: &ServiceFlags) {
    if !update_flag_given(f) {
        return;
    }
    // Unset fields on the wire take the manager's defaults.
    let mut update = spec.update.take().unwrap_or_default();
    if let Some(n) = f.update_parallelism {
        update.parallelism = Some(n);
    }
    if let Some(ms) = f.update_delay {
        update.delay_ms = Some(ms);
    }
    if let Some(ratio) = f.update_max_failure_ratio {
        update.max_failure_ratio = Some(ratio);
    }
    if let Some(order) = f.update_order {
        update.order = order.to_string();
    }
    if let Some(action) = f.update_failure_action {
        update.failure_action = action.to_string();
    }
    if let Some(ms) = f.update_monitor {
        update.monitor_ms = Some(ms);
    }
    spec.update = Some(update);
}

/// Removing what is not there is ignored: the result is what was asked
/// for, and running the same update twice does not fail the second time.
pub fn apply_removals(spec: &mut proto::ServiceSpec, r: &ServiceRemovals) {
    spec.env.retain(|v| !r.env_rm.contains(&v.name));
    spec.tags.retain(|t| !r.tag_rm.contains(t));
    spec.expose.retain(|p| !r.expose_rm.iter().any(|&rm| i64::from(rm) == *p));
    spec.links.retain(|l| !r.link_rm.contains(&l.service));
    spec.secrets.retain(|s| !r.secret_rm.contains(&s.name));
    spec.labels.retain(|key, _| !r.label_rm.contains(key));
    spec.ports.retain(|p| {
        !r.publish_rm.iter().any(|rm| {
            i64::from(rm.host_port) == p.host_port
                && rm.protocol.is_none_or(|proto| proto.to_string() == effective_protocol(&p.protocol))
        })
    });
    if r.health_rm {
        spec.health = None;
    }
}

/// The wire leaves the protocol empty for tcp.
fn effective_protocol(protocol: &str) -> &str {
    if protocol.is_empty() {
        "tcp"
    } else {
        protocol
    }
}

/// Domain defaults are `u64` milliseconds; they are small constants, so the
/// saturation never happens in practice.
fn to_wire_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Adds `added` to `list`, dropping the existing entries they replace
/// (same key). Duplicates within `added` are kept, so the manager sees
/// them and refuses with the field name rather than the CLI silently
/// picking one.
fn merge<T, K: PartialEq>(list: &mut Vec<T>, added: Vec<T>, key: impl Fn(&T) -> K) {
    if added.is_empty() {
        return;
    }
    let added_keys: Vec<K> = added.iter().map(&key).collect();
    list.retain(|existing| !added_keys.contains(&key(existing)));
    list.extend(added);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, ServiceCommand};
    use clap::Parser;

    fn parse(args: &[&str]) -> ServiceCommand {
        let argv = std::iter::once("berth").chain(std::iter::once("service")).chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(Cli { command: Command::Service(cmd), .. }) => cmd,
            Ok(other) => panic!("not a service command: {other:?}"),
            Err(e) => panic!("{args:?} did not parse: {e}"),
        }
    }

    fn create(args: &[&str]) -> proto::ServiceSpec {
        match parse(args) {
            ServiceCommand::Create(args) => create_spec(&args).expect("spec builds"),
            other => panic!("not create: {other:?}"),
        }
    }

    fn update(current: &proto::ServiceSpec, args: &[&str]) -> Result<proto::ServiceSpec> {
        match parse(args) {
            ServiceCommand::Update(args) => updated_spec(current, &args),
            other => panic!("not update: {other:?}"),
        }
    }

    #[test]
    fn create_with_every_flag_fills_the_spec() {
        let spec = create(&[
            "create",
            "web",
            "--image",
            "nginx:1.27",
            "--replicas",
            "3",
            "--strategy",
            "high-availability",
            "--tag",
            "ssd",
            "--tag",
            "eu",
            "--env",
            "A=1",
            "-e",
            "B=x=y",
            "--publish",
            "8080:80",
            "-p",
            "53:53/udp",
            "--restart",
            "on-failure",
            "--restart-max",
            "5",
            "--autodestroy",
            "on-success",
            "--health-cmd",
            "curl -f localhost",
            "--health-interval",
            "10s",
            "--health-retries",
            "4",
            "--cpus",
            "0.5",
            "--memory",
            "512m",
            "--link",
            "db:store",
            "--update-parallelism",
            "2",
            "--update-delay",
            "1m",
            "--update-order",
            "start-first",
            "--",
            "nginx",
            "-g",
            "daemon off;",
        ]);
        assert_eq!(spec.name, "web");
        assert_eq!(spec.image, "nginx:1.27");
        assert_eq!(spec.command, ["nginx", "-g", "daemon off;"]);
        assert_eq!(spec.replicas, Some(3));
        assert!(!spec.every_node);
        assert_eq!(spec.strategy, "high-availability");
        assert_eq!(spec.tags, ["ssd", "eu"]);
        assert_eq!(
            spec.env,
            [
                proto::EnvVar { name: "A".into(), value: "1".into() },
                proto::EnvVar { name: "B".into(), value: "x=y".into() }
            ]
        );
        assert_eq!(
            spec.ports,
            [
                proto::PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into() },
                proto::PortMapping { host_port: 53, container_port: 53, protocol: "udp".into() }
            ]
        );
        assert_eq!(spec.restart, "on-failure");
        assert_eq!(spec.restart_max_attempts, 5);
        assert_eq!(spec.autodestroy, "on-success");
        assert_eq!(
            spec.health,
            Some(proto::HealthCheck {
                command: "curl -f localhost".into(),
                interval_ms: 10_000,
                timeout_ms: 3_000,
                retries: 4,
                start_period_ms: 0,
            })
        );
        assert_eq!(spec.cpus, 0.5);
        assert_eq!(spec.memory_bytes, 512 * 1024 * 1024);
        assert_eq!(spec.links, [proto::ServiceLink { service: "db".into(), alias: "store".into() }]);
        let update = spec.update.expect("update config set");
        assert_eq!(update.parallelism, Some(2));
        assert_eq!(update.delay_ms, Some(60_000));
        assert_eq!(update.order, "start-first");
        assert_eq!(update.monitor_ms, None, "unset fields keep the manager's defaults");
    }

    #[test]
    fn create_with_only_an_image_leaves_defaults_to_the_manager() {
        let spec = create(&["create", "web", "--image", "busybox"]);
        assert_eq!(spec, proto::ServiceSpec { name: "web".into(), image: "busybox".into(), ..Default::default() });
    }

    #[test]
    fn negative_counts_reach_the_manager() {
        let spec = create(&[
            "create",
            "web",
            "--image",
            "busybox",
            "--replicas",
            "-1",
            "--restart-max",
            "-2",
            "--health-cmd",
            "true",
            "--health-retries",
            "-3",
            "--update-parallelism",
            "-4",
            "--cpus",
            "-0.5",
        ]);
        assert_eq!(spec.replicas, Some(-1));
        assert_eq!(spec.restart_max_attempts, -2);
        assert_eq!(spec.health.map(|h| h.retries), Some(-3));
        assert_eq!(spec.update.and_then(|u| u.parallelism), Some(-4));
        assert_eq!(spec.cpus, -0.5);
    }

    #[test]
    fn clap_refuses_what_is_not_a_number_or_a_keyword() {
        for args in [
            &["service", "create", "w", "--image", "i", "--replicas", "three"][..],
            &["service", "create", "w", "--image", "i", "--strategy", "fastest"],
            &["service", "create", "w", "--image", "i", "--replicas", "2", "--every-node"],
            &["service", "create", "w", "--image", "i", "--memory", "lots"],
            &["service", "create", "w", "--image", "i", "--health-interval", "10"],
            &["service", "create", "w", "--image", "i", "--env", "NOVALUE"],
            &["service", "create", "w", "--image", "i", "--publish", "80"],
            &["service", "create", "w"],
            &["service", "scale"],
        ] {
            let argv = std::iter::once("berth").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?} should not parse");
        }
    }

    #[test]
    fn every_node_sets_the_matching_strategy() {
        let spec = create(&["create", "agentd", "--image", "i", "--every-node"]);
        assert!(spec.every_node);
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.strategy, "every-node");

        let spec = create(&["create", "agentd", "--image", "i", "--strategy", "every-node"]);
        assert!(spec.every_node, "the every-node strategy implies the mode");
    }

    #[test]
    fn a_contradiction_is_sent_for_the_manager_to_name() {
        let spec = create(&["create", "w", "--image", "i", "--replicas", "2", "--strategy", "every-node"]);
        assert_eq!(spec.replicas, Some(2));
        assert!(!spec.every_node);
        assert_eq!(spec.strategy, "every-node");
    }

    fn existing() -> proto::ServiceSpec {
        proto::ServiceSpec {
            name: "web".into(),
            image: "nginx:1.26".into(),
            command: vec!["serve".into()],
            env: vec![
                proto::EnvVar { name: "A".into(), value: "1".into() },
                proto::EnvVar { name: "B".into(), value: "2".into() },
            ],
            ports: vec![
                proto::PortMapping { host_port: 80, container_port: 80, protocol: String::new() },
                proto::PortMapping { host_port: 53, container_port: 53, protocol: "udp".into() },
            ],
            replicas: Some(2),
            tags: vec!["ssd".into()],
            health: Some(proto::HealthCheck {
                command: "true".into(),
                interval_ms: 1_000,
                timeout_ms: 500,
                retries: 2,
                start_period_ms: 0,
            }),
            memory_bytes: 1 << 30,
            ..Default::default()
        }
    }

    #[test]
    fn update_changes_only_what_was_given() {
        let spec = update(&existing(), &["update", "web", "--image", "nginx:1.27"]).expect("ok");
        assert_eq!(spec, proto::ServiceSpec { image: "nginx:1.27".into(), ..existing() });
    }

    #[test]
    fn update_replaces_entries_with_the_same_key() {
        let spec = update(
            &existing(),
            &["update", "web", "--env", "A=10", "--env", "C=3", "--publish", "80:8080/tcp", "--tag", "ssd"],
        )
        .expect("ok");
        let env: Vec<_> = spec.env.iter().map(|v| format!("{}={}", v.name, v.value)).collect();
        assert_eq!(env, ["B=2", "A=10", "C=3"]);
        let ports: Vec<_> = spec.ports.iter().map(|p| (p.host_port, p.container_port)).collect();
        assert_eq!(ports, [(53, 53), (80, 8080)], "empty protocol means tcp");
        assert_eq!(spec.tags, ["ssd"]);
    }

    #[test]
    fn update_removals_apply_before_additions_and_ignore_the_absent() {
        let spec = update(
            &existing(),
            &[
                "update",
                "web",
                "--env-rm",
                "A",
                "--env-rm",
                "NOT_THERE",
                "--env",
                "B=20",
                "--env-rm",
                "B",
                "--publish-rm",
                "53",
                "--tag-rm",
                "ssd",
                "--health-rm",
            ],
        )
        .expect("ok");
        let env: Vec<_> = spec.env.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(env, ["20"]);
        assert_eq!(spec.ports.len(), 1);
        assert_eq!(spec.ports[0].host_port, 80);
        assert!(spec.tags.is_empty());
        assert_eq!(spec.health, None);
    }

    #[test]
    fn exposed_ports_are_added_once_and_removed_by_port() {
        let spec = update(&existing(), &["update", "web", "--expose", "8080", "--expose", "9000"]).expect("ok");
        assert_eq!(spec.expose, [8080, 9000]);
        let spec = update(&spec, &["update", "web", "--expose", "8080", "--expose-rm", "9000"]).expect("ok");
        assert_eq!(spec.expose, [8080], "a port given again is kept once; a removed one goes");
    }

    #[test]
    fn publish_rm_with_a_protocol_keeps_the_other_protocol() {
        let mut current = existing();
        current.ports.push(proto::PortMapping { host_port: 53, container_port: 53, protocol: "tcp".into() });
        let spec = update(&current, &["update", "web", "--publish-rm", "53/udp"]).expect("ok");
        let ports: Vec<_> =
            spec.ports.iter().map(|p| format!("{}/{}", p.host_port, effective_protocol(&p.protocol))).collect();
        assert_eq!(ports, ["80/tcp", "53/tcp"]);
    }

    #[test]
    fn update_changes_one_health_setting_and_keeps_the_rest() {
        let spec = update(&existing(), &["update", "web", "--health-retries", "9"]).expect("ok");
        let health = spec.health.expect("kept");
        assert_eq!(health.retries, 9);
        assert_eq!(health.command, "true");
        assert_eq!(health.interval_ms, 1_000);
    }

    #[test]
    fn a_health_setting_without_a_health_check_is_refused() {
        let mut current = existing();
        current.health = None;
        let err =
            update(&current, &["update", "web", "--health-interval", "5s"]).expect_err("no health check to change");
        assert!(err.to_string().contains("--health-cmd"), "{err}");
    }

    #[test]
    fn update_switches_between_replicas_and_every_node() {
        let spec = update(&existing(), &["update", "web", "--every-node"]).expect("ok");
        assert!(spec.every_node);
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.strategy, "every-node");

        let back = update(&spec, &["update", "web", "--replicas", "4"]).expect("ok");
        assert!(!back.every_node);
        assert_eq!(back.replicas, Some(4));
        assert_eq!(back.strategy, "", "back to the default strategy");
    }

    #[test]
    fn update_with_no_flag_is_refused() {
        let err = update(&existing(), &["update", "web"]).expect_err("nothing to do");
        assert!(err.to_string().contains("nothing to change"), "{err}");
    }

    #[test]
    fn update_replaces_the_command_only_when_given() {
        let spec = update(&existing(), &["update", "web", "--", "run", "--fast"]).expect("ok");
        assert_eq!(spec.command, ["run", "--fast"]);
        let spec = update(&existing(), &["update", "web", "--cpus", "2"]).expect("ok");
        assert_eq!(spec.command, ["serve"]);
    }

    #[test]
    fn labels_entrypoint_and_switches_reach_the_spec() {
        let spec = create(&[
            "create",
            "web",
            "--image",
            "busybox",
            "--label",
            "team=web",
            "-l",
            "tier=front",
            "--entrypoint",
            "/bin/sh -c",
            "--sequential",
            "--autoredeploy",
        ]);
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(spec.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(spec.entrypoint, ["/bin/sh", "-c"]);
        assert!(spec.sequential);
        assert!(spec.autoredeploy);

        let spec = update(
            &spec,
            &["update", "web", "--label-rm", "tier", "--label", "team=api", "--entrypoint", "", "--sequential=false"],
        )
        .expect("ok");
        assert_eq!(spec.labels.len(), 1);
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("api"));
        assert!(spec.entrypoint.is_empty(), "an empty --entrypoint restores the image's");
        assert!(!spec.sequential);
        assert!(spec.autoredeploy, "not given, so unchanged");
    }

    #[test]
    fn a_switch_does_not_swallow_the_service_name() {
        let spec = create(&["create", "--sequential", "web", "--image", "busybox"]);
        assert_eq!(spec.name, "web");
        assert!(spec.sequential);
    }
}
