//! What a user asks for: a service spec, and the checks that a spec is
//! sound on its own. Checks that need the rest of the cluster (unique name,
//! links to existing services, host ports in use) live in `state`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// More replicas than this is almost certainly a typo, and would make one
/// Raft entry carry an unbounded amount of work.
pub const MAX_REPLICAS: u32 = 10_000;
/// Docker refuses a memory limit below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
pub const MAX_NAME_LEN: usize = 63;
pub const MAX_ENV_VARS: usize = 1_000;
pub const MAX_PORTS: usize = 256;
pub const MAX_VOLUMES: usize = 64;
pub const MAX_SECRETS_PER_SERVICE: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<EnvVar>,
    pub ports: Vec<PortMapping>,
    pub mode: ServiceMode,
    pub strategy: Strategy,
    pub tags: Vec<String>,
    pub restart: RestartPolicy,
    pub autodestroy: Autodestroy,
    pub health: Option<HealthCheck>,
    pub resources: Resources,
    pub links: Vec<ServiceLink>,
    pub update: UpdateConfig,
    pub labels: BTreeMap<String, String>,
    /// Tutum's sequential deployment: the first deploy starts one task at a time.
    pub sequential: bool,
    /// Redeploy when the image tag comes to point at a new image.
    pub autoredeploy: bool,
    /// Bumped by `service redeploy`: a changed counter makes every task
    /// outdated, so the same spec is rolled out again with fresh containers.
    pub force_redeploy: u64,
    /// How a rollback rolls (compose `deploy.rollback_config`).
    pub rollback: UpdateConfig,
    pub volumes: Vec<VolumeMount>,
    pub secrets: Vec<SecretRef>,
    /// Services whose tasks must run (or be healthy) before this one starts.
    pub depends_on: Vec<Dependency>,
    /// Host names the built-in proxy routes to this service (`VIRTUAL_HOST`).
    pub virtual_hosts: Vec<String>,
    /// Container ports other services and the proxy reach, without publishing.
    pub expose: Vec<u16>,
    /// The stack that owns this service; empty when it stands alone.
    pub stack: String,
}

impl ServiceSpec {
    /// A replicated service of one task with every default, for tests and builders.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            entrypoint: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            strategy: Strategy::EmptiestNode,
            tags: Vec::new(),
            restart: RestartPolicy::default(),
            autodestroy: Autodestroy::Off,
            health: None,
            resources: Resources::default(),
            links: Vec::new(),
            update: UpdateConfig::default(),
            labels: BTreeMap::new(),
            sequential: false,
            autoredeploy: false,
            force_redeploy: 0,
            rollback: UpdateConfig::default(),
            volumes: Vec::new(),
            secrets: Vec::new(),
            depends_on: Vec::new(),
            virtual_hosts: Vec::new(),
            expose: Vec::new(),
            stack: String::new(),
        }
    }

    /// Checks everything that can be checked without the rest of the cluster.
    /// The error names the field (as the API spells it) and what is accepted.
    pub fn validate(&self) -> Result<(), CoreError> {
        validate_name("name", &self.name)?;
        if self.image.trim().is_empty() {
            return Err(CoreError::invalid("image", "must not be empty"));
        }
        if self.image.chars().any(char::is_whitespace) {
            return Err(CoreError::invalid("image", format!("'{}' contains whitespace", self.image)));
        }
        validate_mode(&self.mode, self.strategy)?;
        if self.env.len() > MAX_ENV_VARS {
            return Err(CoreError::invalid(
                "env",
                format!("{} variables, at most {MAX_ENV_VARS} are accepted", self.env.len()),
            ));
        }
        for (i, var) in self.env.iter().enumerate() {
            if var.name.is_empty() {
                return Err(CoreError::invalid(format!("env[{i}]"), "name must not be empty (expected NAME=VALUE)"));
            }
            if var.name.contains('=') || var.name.chars().any(|c| c.is_whitespace() || c == '\0') {
                return Err(CoreError::invalid(
                    format!("env[{i}]"),
                    format!("name '{}' must not contain '=', whitespace or NUL (expected NAME=VALUE)", var.name),
                ));
            }
        }
        self.validate_ports()?;
        for (i, tag) in self.tags.iter().enumerate() {
            validate_tag(&format!("tags[{i}]"), tag)?;
        }
        if let Some(health) = &self.health {
            health.validate()?;
        }
        self.resources.validate()?;
        for (i, link) in self.links.iter().enumerate() {
            validate_name(&format!("links[{i}].service"), &link.service)?;
            if link.service == self.name {
                return Err(CoreError::invalid(format!("links[{i}].service"), "a service cannot link to itself"));
            }
            if !link.alias.is_empty() {
                validate_name(&format!("links[{i}].alias"), &link.alias)?;
            }
        }
        self.update.validate("update")?;
        self.rollback.validate("rollback")?;
        self.validate_mounts()?;
        for (i, dependency) in self.depends_on.iter().enumerate() {
            validate_name(&format!("depends_on[{i}].service"), &dependency.service)?;
            if dependency.service == self.name {
                return Err(CoreError::invalid(
                    format!("depends_on[{i}].service"),
                    "a service cannot depend on itself",
                ));
            }
        }
        for (i, host) in self.virtual_hosts.iter().enumerate() {
            validate_host_name(&format!("virtual_hosts[{i}]"), host)?;
        }
        for (i, port) in self.expose.iter().enumerate() {
            if *port == 0 {
                return Err(CoreError::invalid(format!("expose[{i}]"), "must be between 1 and 65535"));
            }
        }
        if !self.stack.is_empty() {
            validate_name("stack", &self.stack)?;
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(CoreError::invalid("labels", format!("key '{key}' must be non-empty without whitespace")));
            }
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), CoreError> {
        if self.ports.len() > MAX_PORTS {
            return Err(CoreError::invalid("ports", format!("at most {MAX_PORTS} published ports")));
        }
        let mut seen = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            if port.host_port == 0 {
                return Err(CoreError::invalid(format!("ports[{i}].host_port"), "must be between 1 and 65535"));
            }
            if port.container_port == 0 {
                return Err(CoreError::invalid(format!("ports[{i}].container_port"), "must be between 1 and 65535"));
            }
            if !seen.insert((port.host_port, port.protocol)) {
                return Err(CoreError::invalid(
                    format!("ports[{i}].host_port"),
                    format!("host port {}/{} is published twice", port.host_port, port.protocol),
                ));
            }
        }
        Ok(())
    }

    fn validate_mounts(&self) -> Result<(), CoreError> {
        if self.volumes.len() > MAX_VOLUMES {
            return Err(CoreError::invalid("volumes", format!("at most {MAX_VOLUMES} volumes")));
        }
        let mut targets = BTreeSet::new();
        for (i, volume) in self.volumes.iter().enumerate() {
            let field = format!("volumes[{i}]");
            if volume.source.is_empty() {
                return Err(CoreError::invalid(format!("{field}.source"), "must not be empty"));
            }
            match volume.kind {
                VolumeKind::Bind if !volume.source.starts_with('/') => {
                    return Err(CoreError::invalid(
                        format!("{field}.source"),
                        format!("bind mount source '{}' must be an absolute path", volume.source),
                    ));
                }
                VolumeKind::Named => validate_name(&format!("{field}.source"), &volume.source)?,
                VolumeKind::Bind => {}
            }
            if !volume.target.starts_with('/') {
                return Err(CoreError::invalid(
                    format!("{field}.target"),
                    format!("'{}' must be an absolute path in the container", volume.target),
                ));
            }
            if !targets.insert(volume.target.as_str()) {
                return Err(CoreError::invalid(
                    format!("{field}.target"),
                    format!("'{}' is mounted twice", volume.target),
                ));
            }
        }
        if self.secrets.len() > MAX_SECRETS_PER_SERVICE {
            return Err(CoreError::invalid("secrets", format!("at most {MAX_SECRETS_PER_SERVICE} secrets")));
        }
        let mut files = BTreeSet::new();
        for (i, secret) in self.secrets.iter().enumerate() {
            validate_name(&format!("secrets[{i}].name"), &secret.name)?;
            let file = secret.file_name();
            if file.is_empty() || file.contains('/') || file == "." || file == ".." {
                return Err(CoreError::invalid(
                    format!("secrets[{i}].target"),
                    format!("'{file}' must be a plain file name under /run/secrets"),
                ));
            }
            if !files.insert(file) {
                return Err(CoreError::invalid(
                    format!("secrets[{i}].target"),
                    format!("/run/secrets/{file} is used twice"),
                ));
            }
        }
        Ok(())
    }

    /// Copies the fields that never require replacing a running task:
    /// scale, rollout settings and start-order concerns. Comparing two specs
    /// after this tells whether tasks of one are outdated under the other.
    pub fn copy_rollout_neutral_fields(&mut self, from: &ServiceSpec) {
        self.mode = from.mode;
        self.update = from.update.clone();
        self.rollback = from.rollback.clone();
        self.sequential = from.sequential;
        self.autoredeploy = from.autoredeploy;
        self.depends_on = from.depends_on.clone();
    }

    /// Whether tasks running `self` must be replaced to run `other`.
    pub fn needs_redeploy_for(&self, other: &ServiceSpec) -> bool {
        let mut normalized = other.clone();
        normalized.copy_rollout_neutral_fields(self);
        normalized != *self
    }

    /// The value of the environment variable `name`, trimmed.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|v| v.name == name).map(|v| v.value.trim())
    }

    /// The host names node proxies route to this service by: its
    /// `virtual_hosts` and a comma-separated `VIRTUAL_HOST` variable, as
    /// Tutum's haproxy read it.
    pub fn virtual_host_names(&self) -> Vec<&str> {
        let from_env = self.env_value("VIRTUAL_HOST").into_iter().flat_map(|v| v.split(',')).map(str::trim);
        self.virtual_hosts.iter().map(String::as_str).chain(from_env).filter(|h| !h.is_empty()).collect()
    }

    /// The container port HTTP requests for its virtual hosts go to (the
    /// first `expose`d port, else 80); `None` without virtual hosts.
    pub fn http_port(&self) -> Option<u16> {
        (!self.virtual_host_names().is_empty()).then(|| self.expose.first().copied().unwrap_or(80))
    }

    /// The ports node proxies serve over plain TCP: `TCP_PORTS=9000,9001`.
    pub fn tcp_ports(&self) -> Vec<u16> {
        let list = self.env_value("TCP_PORTS").unwrap_or_default();
        let mut ports: Vec<u16> = list.split(',').filter_map(|p| p.trim().parse().ok()).filter(|p| *p > 0).collect();
        ports.dedup();
        ports
    }

    /// The container ports node proxies reach this service's tasks on: the
    /// HTTP port and the TCP ports. Agents publish them on free host ports.
    pub fn balanced_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.http_port().into_iter().collect();
        for port in self.tcp_ports() {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// Whether node proxies route to this service, by virtual host, TCP
    /// port or service name: its tasks are drained before they stop.
    pub fn is_load_balanced(&self) -> bool {
        !self.reachable_ports().is_empty()
    }

    /// Every TCP container port the service declares: the balanced ports,
    /// `expose`, and the container side of `ports`. Node proxies listen on
    /// these for the service's name, and agents publish on free host ports
    /// those that `ports` does not already publish.
    pub fn reachable_ports(&self) -> Vec<u16> {
        let published = self.ports.iter().filter(|p| p.protocol == Protocol::Tcp).map(|p| p.container_port);
        let mut ports: Vec<u16> = self.balanced_ports();
        for port in self.expose.iter().copied().chain(published) {
            if port > 0 && !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// The name within its stack: `web` for `shop_web` of stack `shop`.
    pub fn short_name(&self) -> Option<&str> {
        if self.stack.is_empty() {
            return None;
        }
        self.name.strip_prefix(self.stack.as_str()).and_then(|rest| rest.strip_prefix('_')).filter(|s| !s.is_empty())
    }

    pub fn replicas(&self) -> Option<u32> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::EveryNode => None,
        }
    }
}

/// Service and alias names end up in DNS and container names, so they
/// follow DNS label rules.
pub fn validate_name(field: &str, name: &str) -> Result<(), CoreError> {
    if name.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(CoreError::invalid(field, format!("'{name}' is longer than {MAX_NAME_LEN} characters")));
    }
    let valid_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let starts_well = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid_chars || !starts_well {
        return Err(CoreError::invalid(
            field,
            format!("'{name}' must use lowercase letters, digits, '-' and '_', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// A DNS host name as a proxy matches it against the Host header.
fn validate_host_name(field: &str, host: &str) -> Result<(), CoreError> {
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_NAME_LEN
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
    });
    if host.is_empty() || host.len() > 253 || !labels_ok {
        return Err(CoreError::invalid(field, format!("'{host}' is not a host name")));
    }
    Ok(())
}

pub(crate) fn validate_tag(field: &str, tag: &str) -> Result<(), CoreError> {
    if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(CoreError::invalid(field, format!("tag '{tag}' must be non-empty, without whitespace or ','")));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = CoreError;

    /// Parses `NAME=VALUE` (the value may be empty or contain '=').
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(EnvVar { name: name.to_string(), value: value.to_string() }),
            _ => Err(CoreError::invalid("env", format!("'{s}' is not NAME=VALUE"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "" | "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(CoreError::invalid("protocol", format!("'{other}' is not one of tcp, udp"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl FromStr for PortMapping {
    type Err = CoreError;

    /// Parses `HOST:CONTAINER[/tcp|udp]`.
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let (ports, protocol) = match s.split_once('/') {
            Some((ports, proto)) => (ports, proto.parse()?),
            None => (s, Protocol::Tcp),
        };
        let bad = || CoreError::invalid("publish", format!("'{s}' is not HOST:CONTAINER[/tcp|udp] with ports 1-65535"));
        let (host, container) = ports.split_once(':').ok_or_else(bad)?;
        let host_port: u16 = host.parse().map_err(|_| bad())?;
        let container_port: u16 = container.parse().map_err(|_| bad())?;
        if host_port == 0 || container_port == 0 {
            return Err(bad());
        }
        Ok(PortMapping { host_port, container_port, protocol })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated {
        replicas: u32,
    },
    /// One task on every eligible node.
    EveryNode,
}

macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal,
     default $default:ident => $default_text:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
        pub enum $name {
            #[default]
            $default,
            $($variant),+
        }

        impl $name {
            /// Every accepted spelling, the default first.
            pub const ALL: &'static [&'static str] = &[$default_text, $($text),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $name::$default => $default_text,
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            /// The empty string means the default.
            fn from_str(s: &str) -> Result<Self, CoreError> {
                match s {
                    "" | $default_text => Ok($name::$default),
                    $($text => Ok($name::$variant),)+
                    other => Err(CoreError::invalid(
                        $field,
                        format!("'{other}' is not one of {}", Self::ALL.join(", ")),
                    )),
                }
            }
        }
    };
}

keyword_enum!(
    /// Tutum's deployment strategies.
    Strategy, "strategy", default EmptiestNode => "emptiest-node", {
        HighAvailability => "high-availability",
        EveryNode => "every-node",
    }
);

keyword_enum!(
    /// When a task that stopped is replaced.
    RestartCondition, "restart", default Always => "always", {
        Never => "off",
        OnFailure => "on-failure",
    }
);

keyword_enum!(
    /// Whether a finished task is removed for good instead of replaced.
    Autodestroy, "autodestroy", default Off => "off", {
        OnSuccess => "on-success",
        Always => "always",
    }
);

keyword_enum!(
    UpdateOrder, "update.order", default StopFirst => "stop-first", {
        StartFirst => "start-first",
    }
);

keyword_enum!(
    FailureAction, "update.failure_action", default Pause => "pause", {
        Rollback => "rollback",
        Continue => "continue",
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// 0 means no limit.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub command: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL_MS: u64 = 5_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
    pub const DEFAULT_RETRIES: u32 = 3;

    pub fn new(command: impl Into<String>) -> Self {
        HealthCheck {
            command: command.into(),
            interval_ms: Self::DEFAULT_INTERVAL_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            retries: Self::DEFAULT_RETRIES,
            start_period_ms: 0,
        }
    }

    fn validate(&self) -> Result<(), CoreError> {
        if self.command.trim().is_empty() {
            return Err(CoreError::invalid("health.command", "must not be empty"));
        }
        if self.interval_ms == 0 {
            return Err(CoreError::invalid("health.interval", "must be greater than zero"));
        }
        if self.timeout_ms == 0 {
            return Err(CoreError::invalid("health.timeout", "must be greater than zero"));
        }
        if self.retries == 0 {
            return Err(CoreError::invalid("health.retries", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a task reserves on its node, and is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    pub memory_bytes: u64,
}

impl Resources {
    fn validate(&self) -> Result<(), CoreError> {
        if self.memory_bytes != 0 && self.memory_bytes < MIN_MEMORY_BYTES {
            return Err(CoreError::invalid(
                "memory",
                format!("{} bytes is below Docker's minimum of {MIN_MEMORY_BYTES} bytes (6 MiB)", self.memory_bytes),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLink {
    pub service: String,
    /// Empty means the service name.
    pub alias: String,
}

impl FromStr for ServiceLink {
    type Err = CoreError;
    /// Parses `SERVICE[:ALIAS]`.
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let (service, alias) = s.split_once(':').unwrap_or((s, ""));
        if service.is_empty() {
            return Err(CoreError::invalid("link", format!("'{s}' is not SERVICE[:ALIAS]")));
        }
        Ok(ServiceLink { service: service.to_string(), alias: alias.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 means all at once.
    pub parallelism: u32,
    pub delay_ms: u64,
    pub order: UpdateOrder,
    pub failure_action: FailureAction,
    /// How long a new task is watched after it starts before it counts as updated.
    pub monitor_ms: u64,
    pub max_failure_ratio: f64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_ratio: 0.0,
        }
    }
}

impl UpdateConfig {
    /// `section` is "update" or "rollback", as the field names spell it.
    fn validate(&self, section: &str) -> Result<(), CoreError> {
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            return Err(CoreError::invalid(
                format!("{section}.max_failure_ratio"),
                format!("{} is not between 0 and 1", self.max_failure_ratio),
            ));
        }
        Ok(())
    }
}

keyword_enum!(
    /// A Docker named volume (created on the node on first use), or a host path.
    VolumeKind, "volumes.kind", default Named => "volume", {
        Bind => "bind",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub kind: VolumeKind,
    /// The volume name, or the host path of a bind mount.
    pub source: String,
    /// Where it appears in the container.
    pub target: String,
    pub read_only: bool,
}

/// A secret a service uses, mounted at `/run/secrets/<target or name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    /// File name under /run/secrets; empty means the secret's name.
    pub target: String,
}

impl SecretRef {
    pub fn file_name(&self) -> &str {
        if self.target.is_empty() {
            &self.name
        } else {
            &self.target
        }
    }
}

keyword_enum!(
    /// What a dependency must reach before the dependent service starts.
    DependencyCondition, "depends_on.condition", default Started => "service_started", {
        Healthy => "service_healthy",
        Completed => "service_completed_successfully",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub service: String,
    pub condition: DependencyCondition,
}

/// Converts a signed wire integer to an unsigned domain value, naming the
/// field when it is negative or too large.
pub fn non_negative<T: TryFrom<i64>>(field: &str, value: i64) -> Result<T, CoreError> {
    if value < 0 {
        return Err(CoreError::invalid(field, format!("{value} is negative")));
    }
    T::try_from(value).map_err(|_| CoreError::invalid(field, format!("{value} is too large")))
}

/// The mode and strategy of a spec, checked together: all a scale changes
/// in a spec that was valid already.
pub fn validate_mode(mode: &ServiceMode, strategy: Strategy) -> Result<(), CoreError> {
    match (mode, strategy) {
        (ServiceMode::Replicated { replicas }, strategy) => {
            if *replicas > MAX_REPLICAS {
                return Err(CoreError::invalid(
                    "replicas",
                    format!("{replicas} is more than the maximum of {MAX_REPLICAS}"),
                ));
            }
            if strategy == Strategy::EveryNode {
                return Err(CoreError::invalid(
                    "replicas",
                    "cannot be combined with the every-node strategy (it runs one task per node)",
                ));
            }
        }
        (ServiceMode::EveryNode, Strategy::EveryNode) => {}
        (ServiceMode::EveryNode, other) => {
            return Err(CoreError::invalid("strategy", format!("'{other}' cannot be combined with every-node")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ServiceSpec {
        ServiceSpec::new("web", "busybox:latest")
    }

    fn volume(kind: VolumeKind, source: &str, target: &str) -> VolumeMount {
        VolumeMount { kind, source: source.into(), target: target.into(), read_only: false }
    }

    fn field_of(spec: &ServiceSpec) -> String {
        match spec.validate() {
            Err(CoreError::SpecInvalid { field, .. }) => field,
            other => panic!("expected SpecInvalid, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut ServiceSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("image", Box::new(|s| s.image.clear())),
            ("image", Box::new(|s| s.image = "bad image".into())),
            ("name", Box::new(|s| s.name = "Web".into())),
            ("name", Box::new(|s| s.name = "-web".into())),
            ("name", Box::new(|s| s.name.clear())),
            ("replicas", Box::new(|s| s.strategy = Strategy::EveryNode)),
            ("replicas", Box::new(|s| s.mode = ServiceMode::Replicated { replicas: MAX_REPLICAS + 1 })),
            ("strategy", Box::new(|s| s.mode = ServiceMode::EveryNode)),
            ("env[0]", Box::new(|s| s.env.push(EnvVar { name: "A=B".into(), value: "c".into() }))),
            ("env[0]", Box::new(|s| s.env.push(EnvVar { name: String::new(), value: "c".into() }))),
            (
                "ports[1].host_port",
                Box::new(|s| {
                    let p = PortMapping { host_port: 80, container_port: 80, protocol: Protocol::Tcp };
                    s.ports = vec![p, PortMapping { container_port: 8080, ..p }];
                }),
            ),
            ("tags[0]", Box::new(|s| s.tags.push("a b".into()))),
            ("health.command", Box::new(|s| s.health = Some(HealthCheck::new("")))),
            ("health.retries", Box::new(|s| s.health = Some(HealthCheck { retries: 0, ..HealthCheck::new("true") }))),
            ("memory", Box::new(|s| s.resources.memory_bytes = 1024)),
            (
                "links[0].service",
                Box::new(|s| s.links.push(ServiceLink { service: "web".into(), alias: String::new() })),
            ),
            ("update.max_failure_ratio", Box::new(|s| s.update.max_failure_ratio = 1.5)),
            ("rollback.max_failure_ratio", Box::new(|s| s.rollback.max_failure_ratio = -0.5)),
            ("volumes[0].source", Box::new(|s| s.volumes.push(volume(VolumeKind::Bind, "relative", "/data")))),
            ("volumes[0].source", Box::new(|s| s.volumes.push(volume(VolumeKind::Named, "Bad Name", "/data")))),
            ("volumes[0].target", Box::new(|s| s.volumes.push(volume(VolumeKind::Named, "data", "data")))),
            (
                "volumes[1].target",
                Box::new(|s| {
                    s.volumes = vec![volume(VolumeKind::Named, "a", "/d"), volume(VolumeKind::Bind, "/srv", "/d")]
                }),
            ),
            ("secrets[0].target", Box::new(|s| s.secrets.push(SecretRef { name: "db".into(), target: "../x".into() }))),
            (
                "secrets[1].target",
                Box::new(|s| {
                    s.secrets = vec![
                        SecretRef { name: "a".into(), target: "key".into() },
                        SecretRef { name: "key".into(), target: String::new() },
                    ]
                }),
            ),
            (
                "depends_on[0].service",
                Box::new(|s| {
                    s.depends_on.push(Dependency { service: "web".into(), condition: DependencyCondition::Healthy })
                }),
            ),
            ("virtual_hosts[0]", Box::new(|s| s.virtual_hosts.push("bad host".into()))),
            ("expose[0]", Box::new(|s| s.expose.push(0))),
            ("stack", Box::new(|s| s.stack = "My Stack".into())),
        ];
        for (field, mutate) in cases {
            let mut spec = valid();
            mutate(&mut spec);
            assert_eq!(field_of(&spec), field, "spec: {spec:?}");
        }
    }

    #[test]
    fn same_port_on_two_protocols_is_fine() {
        let mut spec = valid();
        spec.ports = vec!["53:53/udp".parse().expect("valid"), "53:53/tcp".parse().expect("valid")];
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn keyword_parsing_lists_what_is_accepted() {
        assert_eq!("".parse::<Strategy>(), Ok(Strategy::EmptiestNode));
        assert_eq!("high-availability".parse::<Strategy>(), Ok(Strategy::HighAvailability));
        let err = "fastest".parse::<Strategy>().expect_err("unknown strategy");
        assert_eq!(
            err.to_string(),
            "invalid strategy: 'fastest' is not one of emptiest-node, high-availability, every-node"
        );
        assert_eq!("off".parse::<RestartCondition>(), Ok(RestartCondition::Never));
        assert_eq!("".parse::<RestartCondition>(), Ok(RestartCondition::Always));
    }

    #[test]
    fn flag_syntax_parses() {
        assert_eq!(
            "8080:80/udp".parse::<PortMapping>(),
            Ok(PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Udp })
        );
        assert!("8080".parse::<PortMapping>().is_err());
        assert!("0:80".parse::<PortMapping>().is_err());
        assert!("70000:80".parse::<PortMapping>().is_err());
        assert_eq!("A=b=c".parse::<EnvVar>(), Ok(EnvVar { name: "A".into(), value: "b=c".into() }));
        assert!("=x".parse::<EnvVar>().is_err());
        assert!("novalue".parse::<EnvVar>().is_err());
        assert_eq!("db:store".parse::<ServiceLink>(), Ok(ServiceLink { service: "db".into(), alias: "store".into() }));
    }

    #[test]
    fn negative_wire_values_name_the_field() {
        assert_eq!(non_negative::<u32>("replicas", 3), Ok(3));
        let err = non_negative::<u32>("replicas", -1).expect_err("negative");
        assert_eq!(err, CoreError::invalid("replicas", "-1 is negative"));
        assert!(non_negative::<u16>("ports[0].host_port", 70_000).is_err());
    }
}
