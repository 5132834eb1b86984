//! The container runtime: what the agent needs from a container engine,
//! behind one trait, with a Docker implementation and an in-memory one.
//!
//! Every container berth starts carries the labels below, and the runtime
//! finds its containers by them alone: after an agent restart, `list`
//! shows exactly what this node was running, and the agent adopts it
//! instead of starting duplicates. The runtime never restarts a container
//! itself (Docker's restart policy is "no"); replacing dead tasks is the
//! orchestrator's decision.
//!
//! # Volumes and stack networks
//!
//! A task's named volumes are Docker volumes under exactly the name the
//! spec gives (created by the engine on first use and kept after the
//! container goes); its bind mounts mount a host path, which must exist.
//! Either may be read-only.
//!
//! A task of a service in a stack joins its node's network of the stack,
//! `berth-stack-<stack>-<node id prefix>` (a user-defined bridge labelled
//! `berth.stack` and `berth.node`), created when missing. On it, the task
//! is known by its service's short name (`web` for `shop_web`) and full
//! name, so the containers of one stack on one node reach each other by
//! service name through Docker's DNS. A link with an alias of its own
//! (`shop_db:database`) makes the alias resolve the same way.
//!
//! Across nodes, names go through the node proxy: the names a task's
//! container should resolve that way (its stack's services that declare
//! ports, and its links' targets, see `berth_core::discovery`) are written
//! to its `/etc/hosts`, each naming a virtual IP of the service on the
//! stack network (`vip`), where the node proxy listens and forwards to the
//! service's ready tasks on any node. `/etc/hosts` wins over the network's
//! DNS, so such a name answers the same whether or not a task of the
//! service runs on this node. Tasks of standalone services with links join
//! their node's links network, `berth-links-<node id prefix>`, to resolve
//! their links the same way; other standalone tasks stay on the engine's
//! default network. A network is removed with the last container (running
//! or not) that names it, never while one does.

mod docker;
mod error;
mod memory;
mod spec;
mod vip;

use std::time::Duration;

use async_trait::async_trait;
use berth_core::{Endpoint, Health, Resources};
use futures::stream::BoxStream;

pub use docker::{DockerRuntime, DockerRuntimeConfig};
pub use error::RuntimeError;
pub use memory::MemoryRuntime;
pub use spec::{
    stack_network_name, stack_of_network, ContainerSpec, DiscoveryHost, RegistryLogin, SecretFile, StackNetwork,
    LINKS_NETWORK_KEY,
};
pub use vip::{VipRange, VipRanges};

/// Label holding the id of the task a container runs.
pub const LABEL_TASK: &str = "berth.task";
/// Label holding the id of the task's service.
pub const LABEL_SERVICE: &str = "berth.service";
/// Label holding the id of the node whose agent owns the container.
pub const LABEL_NODE: &str = "berth.node";
/// Label holding the task's slot number ("replica 3").
pub const LABEL_SLOT: &str = "berth.slot";
/// Label holding the stack of a stack's containers and networks.
pub const LABEL_STACK: &str = "berth.stack";
/// On a container that joins a berth network: the network's key (its
/// stack, or the links network's), so its removal can remove the network
/// once unused.
pub const LABEL_NETWORK: &str = "berth.network";
/// What a stack's network is named after: `berth-stack-<stack>`.
pub const STACK_NETWORK_PREFIX: &str = "berth-stack-";

/// One container of this node, as the engine reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub container_id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub task_id: String,
    pub service_id: String,
    /// `None` when the slot label is missing or not a number.
    pub slot: Option<u32>,
    pub node_id: String,
    pub running: bool,
    /// Set once the container has exited; `None` while it runs or before it
    /// ever started.
    pub exit_code: Option<i64>,
    pub health: Health,
    /// The id (digest) of the image the container was created from.
    pub image_id: String,
}

/// Something that happened to one of this node's containers, as the engine
/// announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    Started {
        task_id: String,
        container_id: String,
    },
    /// The container's main process exited, for whatever reason (it ended,
    /// crashed, was killed, or was stopped).
    Died {
        task_id: String,
        container_id: String,
        /// `None` when the engine did not say.
        exit_code: Option<i64>,
    },
    /// The container's health check result changed. Docker announces only
    /// changes; the initial `Starting` is not announced.
    HealthChanged {
        task_id: String,
        container_id: String,
        health: Health,
    },
    /// The container was removed (by berth or by someone else).
    Removed {
        task_id: String,
        container_id: String,
    },
    /// The engine's event stream broke. The stream reconnects by itself and
    /// asks the engine to replay what it missed, but the engine keeps only a
    /// short history: the consumer should `list` again to be sure.
    StreamInterrupted {
        reason: String,
    },
}

impl RuntimeEvent {
    /// The task the event is about, if it is about one.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            RuntimeEvent::Started { task_id, .. }
            | RuntimeEvent::Died { task_id, .. }
            | RuntimeEvent::HealthChanged { task_id, .. }
            | RuntimeEvent::Removed { task_id, .. } => Some(task_id),
            RuntimeEvent::StreamInterrupted { .. } => None,
        }
    }
}

/// An endless stream of one node's container events. Dropping it ends the
/// subscription.
pub type RuntimeEventStream = BoxStream<'static, RuntimeEvent>;

/// A tag on the engine came to point at an image (a build, tag, import or
/// load): what autoredeploy follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTagged {
    /// The reference as tagged, e.g. `web:latest`.
    pub image: String,
    pub image_id: String,
}

/// An endless stream of the engine's image tag events.
pub type ImageEventStream = BoxStream<'static, ImageTagged>;

/// What the agent needs from a container engine. Object safe, so the agent
/// can hold an `Arc<dyn Runtime>`.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates the container for `spec` and starts it; returns its id.
    /// Pulls only an image that names a registry; another missing image is
    /// [`RuntimeError::ImageNotFound`]. Neither leaves a container behind,
    /// and neither does a container that fails to start.
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Asks the container to stop, and kills it once `grace` has passed.
    /// Stopping a container that is not running succeeds.
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes the container, killing it first if it still runs. Removing a
    /// container that is already gone succeeds.
    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError>;

    /// Resolves once the engine is done with a container whose death it
    /// announced: an engine may still be tearing it down (network, mounts)
    /// when the event arrives, and containers started meanwhile wait for
    /// it. Called as soon as the death is seen. Best effort: it gives up
    /// after a while and does not report failures. By default it resolves
    /// at once.
    async fn wait_down(&self, _container_id: &str) {}

    /// Every berth container of `node_id`, running or not; containers of
    /// other nodes sharing the engine are not listed.
    async fn list(&self, node_id: &str) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// Subscribes to the events of `node_id`'s containers, from the moment
    /// of this call: an event that happens after `events` returns is
    /// delivered even if the stream is first polled later.
    fn events(&self, node_id: &str) -> RuntimeEventStream;

    /// Subscribes to image tags changing on the engine, from the moment of
    /// this call.
    fn image_events(&self) -> ImageEventStream;

    /// The host ports a running container's `ports` are published on.
    async fn endpoints(&self, _container_id: &str, _ports: &[u16]) -> Result<Vec<Endpoint>, RuntimeError> {
        Ok(Vec::new())
    }

    /// What the host offers in total.
    async fn resources(&self) -> Result<Resources, RuntimeError>;

    /// This node's stack networks with virtual IPs, kept current, for the
    /// node proxy to listen on; none unless the runtime has such networks.
    fn virtual_ip_ranges(&self) -> tokio::sync::watch::Receiver<VipRanges> {
        tokio::sync::watch::channel(VipRanges::new()).1
    }
}
