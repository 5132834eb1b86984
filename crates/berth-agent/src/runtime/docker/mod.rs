//! [`Runtime`] over the Docker Engine API (bollard), speaking whatever API
//! version the engine offers (negotiated at connect; Debian's Docker 20.10
//! offers 1.41).
//!
//! Never pulls an image: berth nodes may have no registry, and a silent
//! pull would hide which image actually runs. Containers are created with
//! Docker's restart policy "no", because restarting is the orchestrator's
//! decision, made with the cluster's restart policy and back-off.

mod convert;
mod events;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::Resources;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::{
    ContainerInfo, ContainerSpec, ImageEventStream, Runtime, RuntimeError, RuntimeEventStream, LABEL_NODE, LABEL_TASK,
};

/// Containers inspected at once while listing.
pub const LIST_INSPECT_CONCURRENCY: usize = 8;
/// Extra time a stop request may take beyond the grace period before the
/// client gives up on the engine.
pub const STOP_REQUEST_MARGIN_MS: u64 = 10_000;
const MILLICPUS_PER_CPU: u64 = 1_000;

const HTTP_NOT_FOUND: u16 = 404;
const HTTP_CONFLICT: u16 = 409;

/// How the Docker runtime publishes and connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRuntimeConfig {
    /// The host address published ports are bound on; all addresses by
    /// default.
    pub publish_ip: IpAddr,
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        DockerRuntimeConfig { publish_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
    }
}

/// The Docker Engine as berth's container runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerRuntimeConfig,
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
        Ok(DockerRuntime { docker, config })
    }

    /// Wraps a client the caller has already connected and negotiated.
    pub fn with_client(docker: Docker, config: DockerRuntimeConfig) -> Self {
        DockerRuntime { docker, config }
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

    async fn force_remove(&self, container_id: &str) -> Result<(), bollard::errors::Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        self.docker.remove_container(container_id, Some(options)).await
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
        let image_missing = || RuntimeError::ImageNotFound { image: spec.image.clone() };
        // Checked first so a missing image never leaves anything behind.
        match self.docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => return Err(image_missing()),
            Err(e) => return Err(engine_error("inspect an image", e)),
        }
        let body = convert::create_body(spec, self.config.publish_ip)?;
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            // The image went away since the check above.
            Err(e) if status_of(&e) == Some(HTTP_NOT_FOUND) => return Err(image_missing()),
            Err(e) if status_of(&e) == Some(HTTP_CONFLICT) => {
                return Err(RuntimeError::NameInUse { name: spec.name.clone() })
            }
            Err(e) => return Err(engine_error("create a container", e)),
        };
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

    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError> {
        match self.force_remove(container_id).await {
            Ok(()) => Ok(()),
            // Already gone, or already being removed by an earlier call.
            Err(e) if matches!(status_of(&e), Some(HTTP_NOT_FOUND | HTTP_CONFLICT)) => Ok(()),
            Err(e) => Err(engine_error("remove a container", e)),
        }
    }

    async fn list(&self, node_id: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
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
