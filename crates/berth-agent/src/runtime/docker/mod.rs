//! [`Runtime`] over the Docker Engine API (bollard), speaking whatever API
//! version the engine offers (negotiated at connect; Debian's Docker 20.10
//! offers 1.41).
//!
//! Pulls only an image that names its registry (`registry.example.com/app`),
//! with the cluster's credentials for it: berth nodes may have no registry,
//! and a silent pull from Docker Hub would hide which image runs. An image
//! without a tag is pulled as `:latest`, as the docker CLI does (the API
//! would pull every tag of the repository). Containers are created with
//! Docker's restart policy "no", because restarting is the orchestrator's
//! decision, made with the cluster's restart policy and back-off.
//!
//! A stack's task joins the stack's network (the `network` module says how
//! the network is created, shared with other agents on the same engine,
//! and removed when the stack's last container is).

mod convert;
mod events;
mod network;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{Endpoint, Resources};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::{watch, RwLock};

use self::network::{Joined, StackNetworks};
use super::{
    ContainerInfo, ContainerSpec, ImageEventStream, Runtime, RuntimeError, RuntimeEventStream, StackNetwork, VipRanges,
    LABEL_NETWORK, LABEL_NODE, LABEL_STACK, LABEL_TASK,
};

/// Containers inspected at once while listing.
pub const LIST_INSPECT_CONCURRENCY: usize = 8;
/// Extra time a stop request may take beyond the grace period before the
/// client gives up on the engine.
pub const STOP_REQUEST_MARGIN_MS: u64 = 10_000;
/// Attempts at creating and starting a stack's container while its network
/// changes under it (removed, or briefly duplicated, by another agent).
pub const MAX_NETWORK_ATTEMPTS: usize = 5;
/// How long `wait_down` waits for the engine to finish with a dead
/// container (its teardown takes tens of milliseconds).
pub const WAIT_DOWN_TIMEOUT_MS: u64 = 2_000;
const MILLICPUS_PER_CPU: u64 = 1_000;

const HTTP_FORBIDDEN: u16 = 403;
const HTTP_NOT_FOUND: u16 = 404;
const HTTP_CONFLICT: u16 = 409;

/// How the Docker runtime publishes and connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRuntimeConfig {
    /// The host address published ports are bound on; all addresses by
    /// default.
    pub publish_ip: IpAddr,
    /// Where secrets are written for their read-only bind mounts: a
    /// memory-backed filesystem, so a secret never reaches a disk in clear.
    pub secrets_dir: std::path::PathBuf,
}

/// `/dev/shm` is a tmpfs on Linux.
pub const DEFAULT_SECRETS_DIR: &str = "/dev/shm/berth-secrets";
/// Where a task's secrets appear in its container.
pub const SECRETS_MOUNT_DIR: &str = "/run/secrets";

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        DockerRuntimeConfig {
            publish_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secrets_dir: std::path::PathBuf::from(DEFAULT_SECRETS_DIR),
        }
    }
}

/// The Docker Engine as berth's container runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerRuntimeConfig,
    networks: StackNetworks,
    /// Held shared by every `wait_down` in progress: a container start
    /// waits until the engine has finished tearing dead containers down,
    /// as a start that overlaps a teardown took ~100 ms longer. Shared by
    /// clones, which drive the same engine.
    teardowns: Arc<RwLock<()>>,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST`, else the default
    /// socket) and negotiates the API version with it.
    pub async fn connect(config: DockerRuntimeConfig) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::EngineUnreachable { reason: e.to_string() })?
            .negotiate_version()
            .await
            .map_err(|e| engine_error("negotiate the API version", e))?;
        Ok(DockerRuntime::with_client(docker, config))
    }

    /// Wraps a client the caller has already connected and negotiated.
    pub fn with_client(docker: Docker, config: DockerRuntimeConfig) -> Self {
        DockerRuntime {
            networks: StackNetworks::new(docker.clone()),
            docker,
            config,
            teardowns: Arc::new(RwLock::new(())),
        }
    }

    /// The underlying client, for what the trait does not cover (tests use
    /// it to kill containers behind the runtime's back).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The `/etc/hosts` lines (`name:address`) that make `spec`'s discovery
    /// names resolve to virtual IPs on `network`, each assigned to the
    /// network's bridge first. A name whose address cannot be had is left
    /// to the stack network's own DNS, which reaches this node's tasks only.
    async fn discovery_hosts(&self, spec: &ContainerSpec, network: &Joined) -> Vec<String> {
        if spec.discovery.is_empty() {
            return Vec::new();
        }
        let Some(range) = &network.vips else {
            tracing::warn!(network = %network.id, "the stack network has no virtual IPs; names reach this node only");
            return Vec::new();
        };
        let mut hosts = Vec::with_capacity(spec.discovery.len());
        for host in &spec.discovery {
            let Some(address) = range.address(host.virtual_ip) else {
                tracing::warn!(name = %host.name, number = host.virtual_ip, block = %range.block,
                    "no room for the virtual IP on the stack network");
                continue;
            };
            match self.networks.assign(range, address).await {
                Ok(()) => hosts.push(format!("{}:{address}", host.name)),
                Err(error) => tracing::warn!(name = %host.name, %error, "a virtual IP is not available"),
            }
        }
        hosts
    }

    async fn force_remove(&self, container_id: &str) -> Result<(), bollard::errors::Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        self.docker.remove_container(container_id, Some(options)).await
    }

    /// Creates the container `body` describes and starts it; a container
    /// that fails to start is removed again.
    async fn create_and_start_body(
        &self,
        spec: &ContainerSpec,
        body: bollard::models::ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            // The network went away since it was looked up.
            Err(e)
                if status_of(&e) == Some(HTTP_NOT_FOUND) && spec.network.is_some() && refusal_mentions_network(&e) =>
            {
                return Err(engine_error("create a container", e))
            }
            // The image went away since it was checked.
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => {
                return Err(RuntimeError::ImageNotFound { image: spec.image.clone() })
            }
            Err(e) if status_of(&e) == Some(HTTP_CONFLICT) => {
                return Err(RuntimeError::NameInUse { name: spec.name.clone() })
            }
            Err(e) => return Err(engine_error("create a container", e)),
        };
        // Created while a dead container was being torn down, started after.
        drop(self.teardowns.write().await);
        if let Err(start_error) = self.docker.start_container(&created.id, None).await {
            if let Err(cleanup_error) = self.force_remove(&created.id).await {
                tracing::warn!(
                    container_id = %created.id,
                    error = %cleanup_error,
                    "could not remove a container that failed to start"
                );
            }
            return Err(match engine_error("start a container", start_error) {
                RuntimeError::Engine { message, .. } => {
                    RuntimeError::StartFailed { name: spec.name.clone(), reason: message }
                }
                other => other,
            });
        }
        Ok(created.id)
    }

    /// Pulls the image from the registry it names, with the task's
    /// credentials if the cluster has some. An image that names no registry
    /// cannot be pulled (no registry is assumed reachable): it must be on
    /// the node already.
    async fn pull(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if berth_core::secret::registry_of(&spec.image).is_none() {
            return Err(RuntimeError::ImageNotFound { image: spec.image.clone() });
        }
        let credentials = spec.registry.as_ref().map(|r| bollard::auth::DockerCredentials {
            username: Some(r.username.clone()),
            password: Some(r.password.clone()),
            serveraddress: Some(r.host.clone()),
            ..Default::default()
        });
        let (name, tag) = berth_core::secret::split_tag(&spec.image);
        let options = bollard::query_parameters::CreateImageOptionsBuilder::new().from_image(name).tag(tag).build();
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            let failure = match step {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(e) => Some(match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                    other => other.to_string(),
                }),
            };
            if let Some(reason) = failure {
                return Err(RuntimeError::PullFailed { image: spec.image.clone(), reason });
            }
        }
        tracing::info!(image = %spec.image, "pulled");
        Ok(())
    }

    /// The folder of one task's secrets.
    fn secrets_dir_of(&self, task_id: &str) -> std::path::PathBuf {
        self.config.secrets_dir.join(task_id)
    }

    /// Writes the task's secrets (owner-only, in memory-backed storage) and
    /// returns the spec with their read-only mounts; `None` without secrets.
    fn write_secrets(&self, spec: &ContainerSpec) -> Result<Option<ContainerSpec>, RuntimeError> {
        if spec.secrets.is_empty() {
            return Ok(None);
        }
        let failed = |e: std::io::Error| RuntimeError::Engine { operation: "write a secret", message: e.to_string() };
        let dir = self.secrets_dir_of(&spec.task_id);
        create_private_dir(&dir).map_err(failed)?;
        let mut spec = spec.clone();
        for secret in &spec.secrets {
            let path = dir.join(&secret.file_name);
            write_private_file(&path, &secret.data).map_err(failed)?;
            spec.volumes.push(berth_core::VolumeMount {
                kind: berth_core::VolumeKind::Bind,
                source: path.display().to_string(),
                target: format!("{SECRETS_MOUNT_DIR}/{}", secret.file_name),
                read_only: true,
            });
        }
        Ok(Some(spec))
    }

    /// Deletes the secrets of the task with id `task_id`.
    fn forget_secrets(&self, task_id: &str) {
        if task_id.is_empty() || task_id.contains(['/', '.']) {
            return;
        }
        let dir = self.secrets_dir_of(task_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete a task's secrets");
            }
        }
    }

    /// A container's labels; empty for one that cannot be inspected.
    async fn labels_of(&self, container_id: &str) -> HashMap<String, String> {
        let inspect = self.docker.inspect_container(container_id, None).await.ok();
        inspect.and_then(|i| i.config).and_then(|c| c.labels).unwrap_or_default()
    }

    async fn inspect_info(&self, container_id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        match self.docker.inspect_container(container_id, None).await {
            Ok(inspect) => Ok(convert::container_info(&inspect)),
            // Removed between the list and the inspect.
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => Ok(None),
            Err(e) => Err(engine_error("inspect a container", e)),
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        // Checked first so a missing image never leaves anything behind.
        match self.docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => self.pull(spec).await?,
            Err(e) => return Err(engine_error("inspect an image", e)),
        }
        let with_secrets = self.write_secrets(spec)?;
        let spec = with_secrets.as_ref().unwrap_or(spec);
        let body = convert::create_body(spec, self.config.publish_ip)?;
        let Some(network) = &spec.network else {
            return self.create_and_start_body(spec, body).await;
        };
        let _starting = self.networks.starting().await;
        let mut attempt = 1;
        loop {
            let joined = self.networks.ensure(network).await?;
            let network_id = joined.id.clone();
            let hosts = self.discovery_hosts(spec, &joined).await;
            let mut body = body.clone();
            convert::join_network(&mut body, network, &network_id, hosts);
            match self.create_and_start_body(spec, body).await {
                Err(error)
                    if attempt < MAX_NETWORK_ATTEMPTS
                        && !matches!(
                            error,
                            RuntimeError::NameInUse { .. } | RuntimeError::EngineUnreachable { .. }
                        )
                        && (mentions_network(&error, network, &network_id)
                            || matches!(self.networks.is_settled_on(network, &network_id).await, Ok(false))) =>
                {
                    tracing::info!(
                        network = %network.name,
                        %error,
                        "the stack network changed while the container was starting; starting over"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // The API takes whole seconds; round up so the container gets at
        // least the grace it was promised.
        let grace_secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::new().t(i32::try_from(grace_secs).unwrap_or(i32::MAX)).build();
        // The engine answers only once the container is down, which may
        // take the whole grace period: the request must outlive it.
        let request_timeout = self.docker.timeout().max(grace + Duration::from_millis(STOP_REQUEST_MARGIN_MS));
        let docker = self.docker.clone().with_timeout(request_timeout);
        match docker.stop_container(container_id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => {
                Err(RuntimeError::ContainerNotFound { container_id: container_id.to_string() })
            }
            Err(e) => Err(engine_error("stop a container", e)),
        }
    }

    async fn wait_down(&self, container_id: &str) {
        let _teardown = self.teardowns.read().await;
        // The engine answers a wait for `not-running` only after its
        // teardown; a container that exited non-zero is answered as an
        // error by bollard, which is just as good here.
        let options = WaitContainerOptionsBuilder::new().condition("not-running").build();
        let mut answer = self.docker.wait_container(container_id, Some(options));
        let _ = tokio::time::timeout(Duration::from_millis(WAIT_DOWN_TIMEOUT_MS), answer.next()).await;
    }

    async fn endpoints(&self, container_id: &str, ports: &[u16]) -> Result<Vec<Endpoint>, RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(container_id, None)
            .await
            .map_err(|e| engine_error("inspect a container", e))?;
        let published = inspect.network_settings.and_then(|n| n.ports).unwrap_or_default();
        let mut endpoints = Vec::new();
        for port in ports {
            let bindings = published.get(&format!("{port}/tcp")).cloned().flatten().unwrap_or_default();
            let host_port = bindings.iter().find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()));
            if let Some(host_port) = host_port.filter(|p| *p > 0) {
                endpoints.push(Endpoint { container_port: *port, host_port, protocol: berth_core::Protocol::Tcp });
            }
        }
        Ok(endpoints)
    }

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        // Read while the container still exists, in one inspect: its task's
        // secrets go with it, and its stack's network may be unused after.
        let mut labels = self.labels_of(container_id).await;
        if let Some(task_id) = labels.get(LABEL_TASK) {
            self.forget_secrets(task_id);
        }
        // Containers from before the network label name their stack only.
        let stack = labels.remove(LABEL_NETWORK).or_else(|| labels.remove(LABEL_STACK)).filter(|s| !s.is_empty());
        let node = labels.remove(LABEL_NODE).unwrap_or_default();
        match self.force_remove(container_id).await {
            Ok(()) => {
                if let Some(stack) = stack {
                    self.networks.remove_if_unused(&stack, &node).await;
                }
                Ok(())
            }
            // Already gone, or already being removed by an earlier call.
            Err(e) if matches!(status_of(&e), Some(HTTP_NOT_FOUND | HTTP_CONFLICT)) => Ok(()),
            Err(e) => Err(engine_error("remove a container", e)),
        }
    }

    async fn list(&self, node_id: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.networks.seed(node_id).await;
        // Label filters are ANDed: this node's containers that have a task.
        let filters = HashMap::from([("label", vec![format!("{LABEL_NODE}={node_id}"), LABEL_TASK.to_string()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let summaries =
            self.docker.list_containers(Some(options)).await.map_err(|e| engine_error("list containers", e))?;
        // The summary lacks exit codes and, on older engines, health.
        let inspected: Vec<Result<Option<ContainerInfo>, RuntimeError>> =
            futures::stream::iter(summaries.into_iter().filter_map(|s| s.id))
                .map(|id| async move { self.inspect_info(&id).await })
                .buffer_unordered(LIST_INSPECT_CONCURRENCY)
                .collect()
                .await;
        let mut infos = Vec::with_capacity(inspected.len());
        for info in inspected {
            if let Some(info) = info? {
                // Guards against a label filter the engine ignored.
                if info.node_id == node_id {
                    infos.push(info);
                }
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    fn events(&self, node_id: &str) -> RuntimeEventStream {
        events::subscribe(self.docker.clone(), node_id)
    }

    fn image_events(&self) -> ImageEventStream {
        events::subscribe_images(self.docker.clone())
    }

    fn virtual_ip_ranges(&self) -> watch::Receiver<VipRanges> {
        self.networks.ranges()
    }

    async fn resources(&self) -> Result<Resources, RuntimeError> {
        let info = self.docker.info().await.map_err(|e| engine_error("report system info", e))?;
        let missing = |what: &str| RuntimeError::Engine {
            operation: "report system info",
            message: format!("the answer has no valid {what}"),
        };
        let cpus = info.ncpu.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| missing("NCPU"))?;
        let memory_bytes = info.mem_total.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| missing("MemTotal"))?;
        Ok(Resources { millicpus: cpus.saturating_mul(MILLICPUS_PER_CPU), memory_bytes })
    }
}

/// The HTTP status of an engine error answer, if the engine answered.
fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether a failure names the stack network: it was ambiguous (a
/// duplicate existed for a moment) or gone when the container started,
/// even if it is settled again by now.
fn mentions_network(error: &RuntimeError, network: &StackNetwork, network_id: &str) -> bool {
    let text = error.to_string();
    text.contains(&network.name) || text.contains(network_id)
}

/// Whether an engine refusal is about a network rather than an image.
fn refusal_mentions_network(error: &bollard::errors::Error) -> bool {
    matches!(error, bollard::errors::Error::DockerResponseServerError { message, .. } if message.contains("network"))
}

/// A refusal by the engine, or the engine not being there at all.
fn engine_error(operation: &'static str, error: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match error {
        E::DockerResponseServerError { message, .. } => RuntimeError::Engine { operation, message },
        E::SocketNotFoundError(_)
        | E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::RequestTimeoutError => RuntimeError::EngineUnreachable { reason: error.to_string() },
        other => RuntimeError::Engine { operation, message: other.to_string() },
    }
}

/// A folder only the agent's user may enter.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A file only its owner may read. Root in the container reads it through
/// the bind mount; the mount is read-only.
fn write_private_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o400).open(path)?;
    file.write_all(data)
}
