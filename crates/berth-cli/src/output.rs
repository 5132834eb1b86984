//! How results are shown: tables for people, JSON for scripts.
//!
//! The JSON is built by hand from the proto messages (prost types do not
//! derive `Serialize`). Field names follow the proto's snake_case, times
//! and durations keep their unit in the name (`_ms`), and keyword fields
//! show the effective value (an empty strategy on the wire is shown as
//! `emptiest-node`), so a script never has to know the wire defaults.

use std::fmt::Display;
use std::io::{self, Write};
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use berth_core::{Autodestroy, FailureAction, RestartCondition, Strategy, UpdateOrder};
use berth_proto::v1 as proto;
use clap::ValueEnum;
use comfy_table::{presets, Table};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Writes `text` and a newline to stdout. A closed pipe (`berth service ls
/// | head -1`) ends the output quietly instead of panicking as `println!`
/// would.
pub fn emit(text: impl Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Renders a table without the trailing blanks comfy-table pads the last
/// column with, so output can be pasted and diffed cleanly.
pub fn render(table: &Table) -> String {
    table.lines().map(|line| line.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

pub fn emit_json(value: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    emit(text)
}

/// A borderless table in the style of `docker ps`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.iter().copied());
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    table
}

/// Two columns, a label and a value, for showing one object.
fn details(rows: Vec<(&str, String)>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (label, value) in rows {
        table.add_row(vec![format!("{label}:"), value]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// The keyword the manager will act on: an empty wire value is the
/// keyword's default. A value this CLI does not know (a newer manager) is
/// shown as sent.
fn keyword<T: FromStr + Display>(wire: &str) -> String {
    wire.parse::<T>().map(|k| k.to_string()).unwrap_or_else(|_| wire.to_string())
}

fn protocol(wire: &str) -> &str {
    if wire.is_empty() {
        "tcp"
    } else {
        wire
    }
}

/// `Some(n)` for a replicated service (an unset count means 1 on the wire),
/// `None` for every-node.
fn replicas(spec: &proto::ServiceSpec) -> Option<i64> {
    if spec.every_node {
        None
    } else {
        Some(spec.replicas.unwrap_or(1))
    }
}

fn mode(spec: &proto::ServiceSpec) -> &'static str {
    if spec.every_node {
        "every-node"
    } else {
        "replicated"
    }
}

pub fn service_json(service: &proto::Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    json!({
        "id": service.id,
        "name": service.name,
        "version": service.version,
        "created_at_ms": service.created_at_ms,
        "updated_at_ms": service.updated_at_ms,
        "spec": spec_json(&spec),
        "previous_spec": service.previous_spec.as_ref().map(spec_json),
        "rollout": service.rollout.as_ref().map(|r| json!({
            "kind": r.kind,
            "state": r.state,
            "started_at_ms": r.started_at_ms,
            "finished_at_ms": r.finished_at_ms,
            "message": r.message,
            "slots": r.slots,
            "updated": r.updated,
            "in_flight": r.in_flight,
            "failed": r.failed,
        })),
    })
}

fn update_config_json(u: &proto::UpdateConfig) -> Value {
    let defaults = berth_core::UpdateConfig::default();
    json!({
        "parallelism": u.parallelism.unwrap_or(defaults.parallelism.into()),
        "delay_ms": u.delay_ms.unwrap_or_default(),
        "order": keyword::<UpdateOrder>(&u.order),
        "failure_action": keyword::<FailureAction>(&u.failure_action),
        "monitor_ms": u.monitor_ms.unwrap_or_else(|| i64::try_from(defaults.monitor_ms).unwrap_or(i64::MAX)),
        "max_failure_ratio": u.max_failure_ratio.unwrap_or_default(),
    })
}

fn update_config_text(u: &proto::UpdateConfig) -> String {
    let defaults = berth_core::UpdateConfig::default();
    let parallelism = match u.parallelism.unwrap_or(defaults.parallelism.into()) {
        0 => "all".to_string(),
        n => n.to_string(),
    };
    let monitor = u.monitor_ms.unwrap_or_else(|| i64::try_from(defaults.monitor_ms).unwrap_or(i64::MAX));
    let mut text = format!(
        "{parallelism} at a time, {} apart, {}, on failure {}, monitor {}",
        duration(u.delay_ms.unwrap_or_default()),
        keyword::<UpdateOrder>(&u.order),
        keyword::<FailureAction>(&u.failure_action),
        duration(monitor)
    );
    if let Some(ratio) = u.max_failure_ratio.filter(|r| *r > 0.0) {
        text.push_str(&format!(", tolerating {:.0}% failures", ratio * 100.0));
    }
    text
}

/// `update rolling: 3/6 updated, 1 starting, 0 failed`, and why it stopped.
pub fn rollout_text(rollout: &proto::Rollout) -> String {
    let mut text = format!("{} {}: {}/{} updated", rollout.kind, rollout.state, rollout.updated, rollout.slots);
    if rollout.in_flight > 0 {
        text.push_str(&format!(", {} starting", rollout.in_flight));
    }
    if rollout.failed > 0 {
        text.push_str(&format!(", {} failed", rollout.failed));
    }
    if !rollout.message.is_empty() {
        text.push_str(&format!(" ({})", rollout.message));
    }
    text
}

pub fn spec_json(spec: &proto::ServiceSpec) -> Value {
    let env: serde_json::Map<String, Value> =
        spec.env.iter().map(|v| (v.name.clone(), Value::from(v.value.clone()))).collect();
    let labels: serde_json::Map<String, Value> =
        spec.labels.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
    json!({
        "name": spec.name,
        "image": spec.image,
        "command": spec.command,
        "entrypoint": spec.entrypoint,
        "env": env,
        "ports": spec.ports.iter().map(|p| json!({
            "host_port": p.host_port,
            "container_port": p.container_port,
            "protocol": protocol(&p.protocol),
        })).collect::<Vec<_>>(),
        "mode": mode(spec),
        "replicas": replicas(spec),
        "strategy": keyword::<Strategy>(&spec.strategy),
        "tags": spec.tags,
        "restart": {
            "condition": keyword::<RestartCondition>(&spec.restart),
            "max_attempts": spec.restart_max_attempts,
        },
        "autodestroy": keyword::<Autodestroy>(&spec.autodestroy),
        "health": spec.health.as_ref().map(|h| json!({
            "command": h.command,
            "interval_ms": h.interval_ms,
            "timeout_ms": h.timeout_ms,
            "retries": h.retries,
            "start_period_ms": h.start_period_ms,
        })),
        "resources": {
            "cpus": spec.cpus,
            "memory_bytes": spec.memory_bytes,
        },
        "links": spec.links.iter().map(|l| json!({
            "service": l.service,
            "alias": if l.alias.is_empty() { &l.service } else { &l.alias },
        })).collect::<Vec<_>>(),
        "update": spec.update.as_ref().map(update_config_json),
        "rollback": spec.rollback.as_ref().map(update_config_json),
        "labels": labels,
        "sequential": spec.sequential,
        "autoredeploy": spec.autoredeploy,
        "force_redeploy": spec.force_redeploy,
        "volumes": spec.volumes.iter().map(|v| json!({
            "kind": if v.kind.is_empty() { "volume" } else { v.kind.as_str() },
            "source": v.source,
            "target": v.target,
            "read_only": v.read_only,
        })).collect::<Vec<_>>(),
        "secrets": spec.secrets.iter().map(|s| json!({
            "name": s.name,
            "target": if s.target.is_empty() { &s.name } else { &s.target },
        })).collect::<Vec<_>>(),
        "depends_on": spec.depends_on.iter().map(|d| json!({
            "service": d.service,
            "condition": if d.condition.is_empty() { "service_started" } else { d.condition.as_str() },
        })).collect::<Vec<_>>(),
        "virtual_hosts": spec.virtual_hosts,
        "expose": spec.expose,
        "stack": if spec.stack.is_empty() { Value::Null } else { Value::from(spec.stack.clone()) },
    })
}

pub fn services_json(services: &[proto::Service]) -> Value {
    Value::Array(services.iter().map(service_json).collect())
}

pub fn cluster_status_json(status: &proto::ClusterStatusReply) -> Value {
    json!({
        "cluster_id": status.cluster_id,
        "answered_by": status.answered_by,
        "leader_id": status.leader_id,
        "leader_address": if status.leader_address.is_empty() {
            Value::Null
        } else {
            Value::from(status.leader_address.clone())
        },
        "term": status.term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "members": status.members.iter().map(|m| json!({
            "id": m.id,
            "address": m.address,
            "role": member_role(m),
            "voter": m.voter,
            "reachable": m.reachable,
            "leader": m.leader,
            "matched_index": m.matched_index,
            "version": if m.reachable { Value::from(release_text(true, &m.version)) } else { Value::Null },
        })).collect::<Vec<_>>(),
        "cluster_version": status.cluster_version,
    })
}

fn member_role(member: &proto::ManagerMember) -> &'static str {
    if member.voter {
        "voter"
    } else {
        "learner"
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// UTC, to the second; an unset (zero or negative) time shows as `-`.
fn timestamp(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        _ => "-".to_string(),
    }
}

fn duration(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => humantime::format_duration(Duration::from_millis(ms)).to_string(),
        Err(_) => format!("{ms}ms"),
    }
}

/// Memory in the largest binary unit that divides it, as `--memory` takes it.
fn memory(bytes: i64) -> String {
    const UNITS: [(i64, &str); 3] = [(1 << 30, "g"), (1 << 20, "m"), (1 << 10, "k")];
    if bytes == 0 {
        return "unlimited".to_string();
    }
    UNITS
        .iter()
        .find(|(size, _)| bytes % size == 0)
        .map(|(size, unit)| format!("{}{unit}", bytes / size))
        .unwrap_or_else(|| bytes.to_string())
}

fn ports_text(spec: &proto::ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.host_port, p.container_port, protocol(&p.protocol)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_text(spec: &proto::ServiceSpec) -> String {
    match replicas(spec) {
        Some(n) => format!("replicated ({n})"),
        None => "every-node".to_string(),
    }
}

/// `-` for an empty cell in a list, so columns stay aligned for `awk`.
fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text
    }
}

/// `none` rather than an empty cell, so a column never looks missing.
fn or_none(text: String) -> String {
    if text.is_empty() {
        "none".to_string()
    } else {
        text
    }
}

pub fn services_table(services: &[proto::Service]) -> Table {
    let mut table = table(&["NAME", "ID", "IMAGE", "MODE", "STRATEGY", "PORTS", "ROLLOUT", "VERSION", "UPDATED"]);
    for service in services {
        let spec = service.spec.clone().unwrap_or_default();
        table.add_row(vec![
            service.name.clone(),
            service.id.clone(),
            spec.image.clone(),
            mode_text(&spec),
            keyword::<Strategy>(&spec.strategy),
            or_dash(ports_text(&spec)),
            service.rollout.as_ref().map_or_else(|| "-".to_string(), |r| format!("{} {}", r.kind, r.state)),
            service.version.to_string(),
            timestamp(service.updated_at_ms),
        ]);
    }
    table
}

pub fn service_details(service: &proto::Service) -> Table {
    let spec = service.spec.clone().unwrap_or_default();
    let env = spec.env.iter().map(|v| format!("{}={}", v.name, v.value)).collect::<Vec<_>>().join("\n");
    let links = spec
        .links
        .iter()
        .map(|l| if l.alias.is_empty() { l.service.clone() } else { format!("{} as {}", l.service, l.alias) })
        .collect::<Vec<_>>()
        .join(", ");
    let health = spec.health.as_ref().map_or_else(
        || "none".to_string(),
        |h| {
            format!(
                "{:?} every {}, timeout {}, {} retries, start period {}",
                h.command,
                duration(h.interval_ms),
                duration(h.timeout_ms),
                h.retries,
                duration(h.start_period_ms)
            )
        },
    );
    let update = spec.update.as_ref().map_or_else(|| "default".to_string(), update_config_text);
    let rollback = spec.rollback.as_ref().map_or_else(|| "default".to_string(), update_config_text);
    let restart = match spec.restart_max_attempts {
        0 => keyword::<RestartCondition>(&spec.restart),
        max => format!("{} (at most {max} attempts)", keyword::<RestartCondition>(&spec.restart)),
    };
    let cpus = if spec.cpus == 0.0 { "unlimited".to_string() } else { spec.cpus.to_string() };
    let labels = {
        let mut pairs: Vec<_> = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join(", ")
    };
    details(vec![
        ("Name", service.name.clone()),
        ("ID", service.id.clone()),
        ("Version", service.version.to_string()),
        ("Created", timestamp(service.created_at_ms)),
        ("Updated", timestamp(service.updated_at_ms)),
        ("Image", spec.image.clone()),
        ("Command", or_none(shell_words(&spec.command))),
        ("Entrypoint", or_none(shell_words(&spec.entrypoint))),
        ("Mode", mode_text(&spec)),
        ("Strategy", keyword::<Strategy>(&spec.strategy)),
        ("Tags", or_none(spec.tags.join(", "))),
        ("Env", or_none(env)),
        ("Ports", or_none(ports_text(&spec))),
        ("Exposed", or_none(spec.expose.iter().map(|p| format!("{p}/tcp")).collect::<Vec<_>>().join(", "))),
        ("Restart", restart),
        ("Autodestroy", keyword::<Autodestroy>(&spec.autodestroy)),
        ("Health", health),
        ("CPUs", cpus),
        ("Memory", memory(spec.memory_bytes)),
        ("Links", or_none(links)),
        ("Update", update),
        ("Rollback", rollback),
        (
            "Rollout",
            service.rollout.as_ref().map_or_else(
                || "none".to_string(),
                |r| format!("{}, started {}", rollout_text(r), timestamp(r.started_at_ms)),
            ),
        ),
        ("Previous image", service.previous_spec.as_ref().map_or_else(|| "none".to_string(), |p| p.image.clone())),
        ("Labels", or_none(labels)),
        ("Sequential", yes_no(spec.sequential).to_string()),
        ("Autoredeploy", yes_no(spec.autoredeploy).to_string()),
    ])
}

/// Quotes the words that need it, so the shown command can be pasted back.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cluster summary above the members table.
pub fn cluster_summary(status: &proto::ClusterStatusReply) -> Table {
    let leader = match status.leader_id {
        Some(id) if status.leader_address.is_empty() => id.to_string(),
        Some(id) => format!("{id} ({})", status.leader_address),
        None => "none (no quorum, or an election is under way)".to_string(),
    };
    details(vec![
        ("Cluster", status.cluster_id.clone()),
        ("Leader", leader),
        ("Term", status.term.to_string()),
        ("Commit index", status.commit_index.to_string()),
        ("Applied index", status.applied_index.to_string()),
        ("Last log index", status.last_log_index.to_string()),
        ("Cluster version", or_dash(status.cluster_version.clone())),
        ("Answered by", status.answered_by.to_string()),
    ])
}

pub fn members_table(status: &proto::ClusterStatusReply) -> Table {
    let mut table = table(&["ID", "ADDRESS", "ROLE", "VERSION", "REACHABLE", "LEADER", "MATCHED INDEX"]);
    for m in &status.members {
        table.add_row(vec![
            m.id.to_string(),
            m.address.clone(),
            member_role(m).to_string(),
            release_text(m.reachable, &m.version),
            yes_no(m.reachable).to_string(),
            if m.leader { "*" } else { "" }.to_string(),
            m.matched_index.map_or_else(|| "-".to_string(), |i| i.to_string()),
        ]);
    }
    table
}

/// A release as a manager or agent reported it: release 0.1 reported none.
fn release_text(answered: bool, version: &str) -> String {
    match (answered, version.is_empty()) {
        (false, _) => "-".to_string(),
        (true, true) => "0.1".to_string(),
        (true, false) => version.to_string(),
    }
}

/// Task and container ids are shown to this many characters in tables,
/// as `docker ps` does; JSON has them whole.
pub const SHORT_ID_CHARS: usize = 12;

fn short_id(id: &str) -> String {
    or_dash(id.chars().take(SHORT_ID_CHARS).collect())
}

/// Memory for people, in binary units to one decimal: `7.6GiB`, `512MiB`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    const STEP: f64 = 1024.0;
    if bytes <= 0 {
        return "-".to_string();
    }
    // Precision is not the point here: a table cell shows one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= STEP && unit + 1 < UNITS.len() {
        value /= STEP;
        unit += 1;
    }
    let text = if unit == 0 { format!("{bytes}") } else { format!("{value:.1}") };
    format!("{}{}", text.strip_suffix(".0").unwrap_or(&text), UNITS[unit])
}

/// How long ago `since_ms` was, at `now_ms`, in the largest whole unit:
/// `3s ago`, `5m ago`, `2h ago`, `3d ago`. Unset shows as `-`; a time
/// ahead of this host's clock (skew between hosts) as `just now`.
pub fn ago(since_ms: i64, now_ms: i64) -> String {
    const SECOND_MS: i64 = 1_000;
    const MINUTE_S: i64 = 60;
    const HOUR_S: i64 = 60 * MINUTE_S;
    const DAY_S: i64 = 24 * HOUR_S;
    /// Up to two days, hours say more than "1d".
    const HOURS_SHOWN_UP_TO_S: i64 = 2 * DAY_S;
    if since_ms <= 0 {
        return "-".to_string();
    }
    let seconds = (now_ms - since_ms) / SECOND_MS;
    if seconds <= 0 {
        return "just now".to_string();
    }
    let (count, unit) = if seconds < MINUTE_S {
        (seconds, "s")
    } else if seconds < HOUR_S {
        (seconds / MINUTE_S, "m")
    } else if seconds < HOURS_SHOWN_UP_TO_S {
        (seconds / HOUR_S, "h")
    } else {
        (seconds / DAY_S, "d")
    };
    format!("{count}{unit} ago")
}

/// CPUs as the node reported them, without a needless `.0`.
fn cpus_text(cpus: f64) -> String {
    if cpus <= 0.0 {
        "-".to_string()
    } else {
        let text = format!("{cpus:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn node_json(node: &proto::Node) -> Value {
    json!({
        "id": node.id,
        "name": node.name,
        "role": NODE_ROLE,
        "address": node.address,
        "status": node.status,
        "status_message": node.status_message,
        "availability": node.availability,
        "tags": node.tags,
        "resources": {
            "cpus": node.cpus,
            "memory_bytes": node.memory_bytes,
        },
        "task_count": node.task_count,
        "created_at_ms": node.created_at_ms,
        "updated_at_ms": node.updated_at_ms,
        "agent_version": if node.agent_version.is_empty() { Value::Null } else { Value::from(node.agent_version.clone()) },
    })
}

/// Every node the API lists runs an agent; managers are listed by
/// `berth cluster status`. Shown so a script need not know that.
pub const NODE_ROLE: &str = "worker";

pub fn nodes_json(nodes: &[proto::Node]) -> Value {
    Value::Array(nodes.iter().map(node_json).collect())
}

pub fn secrets_json(secrets: &[proto::SecretInfo]) -> Value {
    Value::Array(
        secrets
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "name": s.name,
                    "size": s.size,
                    "created_at_ms": s.created_at_ms,
                    "services": s.services,
                })
            })
            .collect(),
    )
}

pub fn secrets_table(secrets: &[proto::SecretInfo]) -> Table {
    let mut table = table(&["NAME", "ID", "SIZE", "CREATED", "SERVICES"]);
    for secret in secrets {
        table.add_row(vec![
            secret.name.clone(),
            secret.id.clone(),
            human_bytes(i64::try_from(secret.size).unwrap_or(i64::MAX)),
            timestamp(secret.created_at_ms),
            or_dash(secret.services.join(",")),
        ]);
    }
    table
}

pub fn stacks_json(stacks: &[proto::StackSummary]) -> Value {
    Value::Array(stacks.iter().map(|s| json!({ "name": s.name, "services": s.services })).collect())
}

pub fn stacks_table(stacks: &[proto::StackSummary]) -> Table {
    let mut table = table(&["NAME", "SERVICES"]);
    for stack in stacks {
        table.add_row(vec![stack.name.clone(), stack.services.to_string()]);
    }
    table
}

/// `shop: 1 to create, 1 to update, 2 unchanged`, then one line per service
/// marked + (create), ~ (update), - (remove), = (unchanged), ? (kept).
pub fn stack_plan_text(stack: &str, plan: &proto::StackPlan, dry_run: bool) -> String {
    let verb = |done: &str, todo: &str| if dry_run { todo.to_string() } else { done.to_string() };
    let mut summary = vec![
        format!("{} {}", plan.create.len(), verb("created", "to create")),
        format!("{} {}", plan.update.len(), verb("updated", "to update")),
        format!("{} unchanged", plan.unchanged.len()),
    ];
    if !plan.remove.is_empty() {
        summary.push(format!("{} {}", plan.remove.len(), verb("removed", "to remove")));
    }
    if !plan.keep.is_empty() {
        summary.push(format!("{} not in the file, kept (--prune removes them)", plan.keep.len()));
    }
    let mut lines =
        vec![format!("{stack}: {}{}", summary.join(", "), if dry_run { " (dry run: nothing changed)" } else { "" })];
    let marked =
        [("+", &plan.create), ("~", &plan.update), ("-", &plan.remove), ("=", &plan.unchanged), ("?", &plan.keep)];
    for (mark, names) in marked {
        lines.extend(names.iter().map(|name| format!("  {mark} {name}")));
    }
    lines.join("\n")
}

pub fn triggers_json(triggers: &[proto::Trigger]) -> Value {
    Value::Array(
        triggers
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "service": t.service,
                    "action": t.action,
                    "created_at_ms": t.created_at_ms,
                    "last_fired_at_ms": if t.last_fired_at_ms == 0 { Value::Null } else { Value::from(t.last_fired_at_ms) },
                    "fired_count": t.fired_count,
                })
            })
            .collect(),
    )
}

pub fn triggers_table(triggers: &[proto::Trigger]) -> Table {
    let mut table = table(&["ID", "SERVICE", "ACTION", "CREATED", "LAST FIRED", "FIRED"]);
    for trigger in triggers {
        table.add_row(vec![
            trigger.id.clone(),
            trigger.service.clone(),
            trigger.action.clone(),
            timestamp(trigger.created_at_ms),
            if trigger.last_fired_at_ms == 0 { "never".to_string() } else { timestamp(trigger.last_fired_at_ms) },
            trigger.fired_count.to_string(),
        ]);
    }
    table
}

pub fn nodes_table(nodes: &[proto::Node]) -> Table {
    let mut table =
        table(&["NAME", "ID", "ROLE", "STATUS", "AVAILABILITY", "TAGS", "CPUS", "MEMORY", "TASKS", "AGENT VERSION"]);
    for node in nodes {
        table.add_row(vec![
            node.name.clone(),
            node.id.clone(),
            NODE_ROLE.to_string(),
            node.status.clone(),
            node.availability.clone(),
            or_dash(node.tags.join(",")),
            cpus_text(node.cpus),
            human_bytes(node.memory_bytes),
            node.task_count.to_string(),
            or_dash(node.agent_version.clone()),
        ]);
    }
    table
}

pub fn node_details(node: &proto::Node) -> Table {
    let status = if node.status_message.is_empty() {
        node.status.clone()
    } else {
        format!("{} ({})", node.status, node.status_message)
    };
    details(vec![
        ("Name", node.name.clone()),
        ("ID", node.id.clone()),
        ("Role", NODE_ROLE.to_string()),
        ("Address", or_none(node.address.clone())),
        ("Status", status),
        ("Availability", node.availability.clone()),
        ("Tags", or_none(node.tags.join(", "))),
        ("CPUs", cpus_text(node.cpus)),
        ("Memory", human_bytes(node.memory_bytes)),
        ("Tasks", node.task_count.to_string()),
        ("Agent version", or_dash(node.agent_version.clone())),
        ("Created", timestamp(node.created_at_ms)),
        ("Updated", timestamp(node.updated_at_ms)),
    ])
}

pub fn task_json(task: &proto::Task) -> Value {
    json!({
        "id": task.id,
        "service_id": task.service_id,
        "service_name": task.service_name,
        "service_version": task.service_version,
        "slot": task.slot,
        "node_id": if task.node_id.is_empty() { Value::Null } else { Value::from(task.node_id.clone()) },
        "node_name": if task.node_name.is_empty() { Value::Null } else { Value::from(task.node_name.clone()) },
        "desired_state": task.desired_state,
        "state": task.state,
        "health": if task.health.is_empty() { Value::Null } else { Value::from(task.health.clone()) },
        "container_id": if task.container_id.is_empty() { Value::Null } else { Value::from(task.container_id.clone()) },
        "exit_code": task.exit_code,
        "message": task.message,
        "attempt": task.attempt,
        "created_at_ms": task.created_at_ms,
        "state_since_ms": task.state_since_ms,
    })
}

pub fn tasks_json(tasks: &[proto::Task]) -> Value {
    Value::Array(tasks.iter().map(task_json).collect())
}

/// `service ps`: one row per task, newest first within a slot (as the
/// manager sorts them); the older tasks of a slot are marked `\\_` as in
/// `docker service ps`. A replicated service's rows start with the slot
/// number; an every-node service's tasks have no slot, so its rows start
/// with the node, the slot's name there.
pub fn tasks_table(tasks: &[proto::Task], now_ms: i64) -> Table {
    let every_node = !tasks.is_empty() && tasks.iter().all(|t| t.slot == 0);
    let header: &[&str] = if every_node {
        &["NODE", "TASK ID", "DESIRED", "STATE", "SINCE", "CONTAINER", "EXIT", "MESSAGE"]
    } else {
        &["SLOT", "TASK ID", "NODE", "DESIRED", "STATE", "SINCE", "CONTAINER", "EXIT", "MESSAGE"]
    };
    let mut table = table(header);
    let mut previous_slot: Option<(u32, &str)> = None;
    for task in tasks {
        let slot_key = (task.slot, if task.slot == 0 { task.node_id.as_str() } else { "" });
        let slot_name = if every_node { or_dash(task.node_name.clone()) } else { task.slot.to_string() };
        let slot_cell = if previous_slot == Some(slot_key) { format!("\\_ {slot_name}") } else { slot_name };
        previous_slot = Some(slot_key);
        let state =
            if task.health.is_empty() { task.state.clone() } else { format!("{} ({})", task.state, task.health) };
        let mut row = vec![slot_cell, short_id(&task.id)];
        if !every_node {
            row.push(or_dash(task.node_name.clone()));
        }
        row.extend([
            task.desired_state.clone(),
            state,
            ago(task.state_since_ms, now_ms),
            short_id(&task.container_id),
            task.exit_code.map_or_else(|| "-".to_string(), |code| code.to_string()),
            or_dash(task.message.clone()),
        ]);
        table.add_row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> proto::Service {
        proto::Service {
            id: "svc-1".into(),
            name: "web".into(),
            version: 7,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_060_000,
            spec: Some(proto::ServiceSpec {
                name: "web".into(),
                image: "nginx".into(),
                env: vec![proto::EnvVar { name: "A".into(), value: "1".into() }],
                ports: vec![proto::PortMapping { host_port: 80, container_port: 8080, protocol: String::new() }],
                links: vec![proto::ServiceLink { service: "db".into(), alias: String::new() }],
                memory_bytes: 512 << 20,
                ..Default::default()
            }),
            previous_spec: None,
            rollout: None,
            virtual_ip: 0,
        }
    }

    #[test]
    fn service_json_shows_effective_values() {
        let json = service_json(&service());
        assert_eq!(json["name"], "web");
        assert_eq!(json["version"], 7);
        let spec = &json["spec"];
        assert_eq!(spec["mode"], "replicated");
        assert_eq!(spec["replicas"], 1, "unset replicas means 1");
        assert_eq!(spec["strategy"], "emptiest-node");
        assert_eq!(spec["restart"]["condition"], "always");
        assert_eq!(spec["autodestroy"], "off");
        assert_eq!(spec["env"]["A"], "1");
        assert_eq!(spec["ports"][0]["protocol"], "tcp");
        assert_eq!(spec["links"][0]["alias"], "db", "an empty alias is the service name");
        assert_eq!(spec["resources"]["memory_bytes"], 512 << 20);
        assert_eq!(spec["health"], Value::Null);
    }

    #[test]
    fn every_node_service_has_no_replica_count() {
        let mut svc = service();
        if let Some(spec) = svc.spec.as_mut() {
            spec.every_node = true;
            spec.strategy = "every-node".into();
        }
        let json = service_json(&svc);
        assert_eq!(json["spec"]["mode"], "every-node");
        assert_eq!(json["spec"]["replicas"], Value::Null);
    }

    #[test]
    fn a_keyword_from_a_newer_manager_is_shown_as_sent() {
        assert_eq!(keyword::<Strategy>("spread-by-moon"), "spread-by-moon");
        assert_eq!(keyword::<Strategy>(""), "emptiest-node");
    }

    #[test]
    fn cluster_status_json_is_complete() {
        let status = proto::ClusterStatusReply {
            cluster_id: "c1".into(),
            answered_by: 2,
            leader_id: Some(1),
            leader_address: "10.0.0.1:4700".into(),
            term: 3,
            commit_index: 40,
            applied_index: 39,
            last_log_index: 41,
            members: vec![
                proto::ManagerMember {
                    id: 1,
                    address: "10.0.0.1:4700".into(),
                    voter: true,
                    reachable: true,
                    leader: true,
                    matched_index: Some(41),
                    version: "0.2.0".into(),
                },
                proto::ManagerMember {
                    id: 2,
                    address: "10.0.0.2:4700".into(),
                    voter: false,
                    reachable: false,
                    leader: false,
                    matched_index: None,
                    version: String::new(),
                },
                proto::ManagerMember {
                    id: 3,
                    address: "10.0.0.3:4700".into(),
                    voter: true,
                    reachable: true,
                    leader: false,
                    matched_index: Some(40),
                    version: String::new(),
                },
            ],
            cluster_version: "0.1".into(),
        };
        let json = cluster_status_json(&status);
        assert_eq!(json["leader_id"], 1);
        assert_eq!(json["term"], 3);
        assert_eq!(json["applied_index"], 39);
        assert_eq!(json["members"][0]["role"], "voter");
        assert_eq!(json["members"][1]["role"], "learner");
        assert_eq!(json["members"][1]["matched_index"], Value::Null);
        assert_eq!(json["members"][0]["version"], "0.2.0");
        assert_eq!(json["members"][1]["version"], Value::Null, "an unreachable member's release is unknown");
        assert_eq!(json["members"][2]["version"], "0.1", "a member of 0.1 answers without a release");
        assert_eq!(json["cluster_version"], "0.1");

        let leaderless = proto::ClusterStatusReply { leader_id: None, leader_address: String::new(), ..status };
        let json = cluster_status_json(&leaderless);
        assert_eq!(json["leader_id"], Value::Null);
        assert_eq!(json["leader_address"], Value::Null);
    }

    #[test]
    fn tables_render_the_important_columns() {
        let text = render(&services_table(&[service()]));
        assert!(text.lines().all(|l| l == l.trim_end()), "trailing blanks:\n{text}");
        assert!(text.contains("NAME"), "{text}");
        assert!(text.contains("80:8080/tcp"), "{text}");
        assert!(text.contains("replicated (1)"), "{text}");
        let text = render(&service_details(&service()));
        assert!(text.contains("Memory:"), "{text}");
        assert!(text.contains("512m"), "{text}");
        assert!(text.contains("db"), "{text}");
    }

    #[test]
    fn memory_shows_the_largest_exact_unit() {
        assert_eq!(memory(0), "unlimited");
        assert_eq!(memory(512 << 20), "512m");
        assert_eq!(memory(1 << 30), "1g");
        assert_eq!(memory(3072), "3k");
        assert_eq!(memory(1536), "1536");
        assert_eq!(memory(1000), "1000");
    }

    fn node() -> proto::Node {
        proto::Node {
            id: "4f1c2a9be0d3c4b5a6978812".into(),
            name: "node-1".into(),
            address: "10.0.0.5".into(),
            tags: vec!["ssd".into(), "zone:a".into()],
            cpus: 8.0,
            memory_bytes: 8_160_000_000,
            availability: "active".into(),
            status: "ready".into(),
            status_message: String::new(),
            task_count: 3,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_060_000,
            agent_version: "0.2.0".into(),
        }
    }

    fn task(slot: u32, created: i64, state: &str) -> proto::Task {
        proto::Task {
            id: format!("0123456789abcdef{slot}{created}"),
            service_id: "svc-1".into(),
            service_name: "web".into(),
            slot,
            node_id: "4f1c2a9be0d3c4b5a6978812".into(),
            node_name: "node-1".into(),
            desired_state: "running".into(),
            state: state.into(),
            created_at_ms: created,
            state_since_ms: created,
            ..Default::default()
        }
    }

    #[test]
    fn memory_for_people_uses_binary_units() {
        assert_eq!(human_bytes(8_160_000_000), "7.6GiB");
        assert_eq!(human_bytes(512 << 20), "512MiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(100), "100B");
        assert_eq!(human_bytes(0), "-");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = 1_700_000_000_000;
        assert_eq!(ago(now - 3_400, now), "3s ago");
        assert_eq!(ago(now - 5 * 60_000 - 1, now), "5m ago");
        assert_eq!(ago(now - 25 * 3_600_000, now), "25h ago");
        assert_eq!(ago(now - 3 * 86_400_000, now), "3d ago");
        assert_eq!(ago(now + 5_000, now), "just now");
        assert_eq!(ago(0, now), "-");
    }

    #[test]
    fn node_table_and_json_show_status_resources_and_tasks() {
        let text = render(&nodes_table(&[node()]));
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "ID", "ROLE", "STATUS", "AVAILABILITY", "TAGS", "CPUS", "MEMORY", "TASKS", "AGENT", "VERSION"]
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "node-1",
                "4f1c2a9be0d3c4b5a6978812",
                "worker",
                "ready",
                "active",
                "ssd,zone:a",
                "8",
                "7.6GiB",
                "3",
                "0.2.0"
            ]
        );

        let json = node_json(&node());
        assert_eq!(json["status"], "ready");
        assert_eq!(json["role"], "worker");
        assert_eq!(json["resources"]["memory_bytes"], 8_160_000_000_i64);
        assert_eq!(json["task_count"], 3);
        assert_eq!(json["agent_version"], "0.2.0");
        assert_eq!(json["tags"][1], "zone:a");

        let down = proto::Node { status: "down".into(), status_message: "missed heartbeats".into(), ..node() };
        let text = render(&node_details(&down));
        assert!(text.contains("down (missed heartbeats)"), "{text}");
    }

    #[test]
    fn task_table_marks_history_and_shortens_ids() {
        let now = 10_000;
        let mut running = task(1, 9_000, "running");
        running.container_id = "c0ffee0123456789abcdef".into();
        running.health = "healthy".into();
        let mut failed = task(1, 2_000, "failed");
        failed.exit_code = Some(137);
        failed.message = "exit code 137".into();
        let pending = proto::Task {
            node_id: String::new(),
            node_name: String::new(),
            message: "no node satisfies tag ssd".into(),
            ..task(2, 9_500, "pending")
        };
        let text = render(&tasks_table(&[running, failed, pending], now));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SLOT"), "{text}");
        assert!(lines[1].starts_with("1 "), "{text}");
        assert!(lines[1].contains("running (healthy)"), "{text}");
        assert!(lines[1].contains("c0ffee012345 "), "container id cut to 12: {text}");
        assert!(lines[1].contains("just now") || lines[1].contains("1s ago"), "{text}");
        assert!(lines[2].starts_with("\\_ 1"), "{text}");
        assert!(lines[2].contains("137"), "{text}");
        assert!(lines[2].contains("8s ago"), "{text}");
        assert!(lines[3].starts_with("2 "), "{text}");
        assert!(lines[3].contains("no node satisfies tag ssd"), "{text}");
    }

    #[test]
    fn every_node_tasks_are_listed_by_node() {
        let mut on_a = task(0, 1, "running");
        on_a.node_name = "a".into();
        let text = render(&tasks_table(&[on_a.clone()], 2));
        let header: Vec<&str> = text.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header[..2], ["NODE", "TASK"], "{text}");
        assert_eq!(header.iter().filter(|h| **h == "NODE").count(), 1, "no second node column: {text}");
        assert!(text.lines().nth(1).is_some_and(|row| row.starts_with("a ")), "{text}");
        let json = task_json(&on_a);
        assert_eq!(json["slot"], 0);
        assert_eq!(json["node_name"], "a");
        assert_eq!(json["exit_code"], Value::Null);
        assert_eq!(json["container_id"], Value::Null);
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        let words = ["nginx", "-g", "daemon off;", "it's"].map(String::from);
        assert_eq!(shell_words(&words), r#"nginx -g 'daemon off;' 'it'\''s'"#);
    }
}
