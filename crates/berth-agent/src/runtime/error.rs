//! What can go wrong when the agent drives its container engine, worded so
//! that the person reading a task's failure message knows what to do.

/// An error from a [`Runtime`](super::Runtime).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not on the node and names no registry to pull it from.
    #[error("image '{image}' not found on this node (it names no registry to pull from: build or load it on the node, or name its registry)")]
    ImageNotFound { image: String },

    /// The image is not on the node and pulling it from its registry failed.
    #[error("cannot pull image '{image}': {reason}")]
    PullFailed { image: String, reason: String },

    #[error("container '{container_id}' not found on this node")]
    ContainerNotFound { container_id: String },

    /// Container names embed the task id, so this is almost always a
    /// container left behind for the same task; the agent should adopt it.
    #[error("a container named '{name}' already exists on this node")]
    NameInUse { name: String },

    /// The container was created but its process could not be started (for
    /// example its command does not exist, or a host port is taken). The
    /// container has been removed again.
    #[error("container '{name}' could not start: {reason}")]
    StartFailed { name: String, reason: String },

    /// A spec value the engine cannot represent.
    #[error("invalid {field}: {reason}")]
    SpecRejected { field: &'static str, reason: String },

    /// Several networks carry a stack network's name and berth could not
    /// bring them down to one, because more than one has containers.
    #[error(
        "{count} networks named '{name}' exist on this node and more than one is in use; \
         disconnect the containers from all but one and remove the others (docker network rm)"
    )]
    NetworkUnsettled { name: String, count: usize },

    #[error("cannot reach the Docker Engine: {reason} (is dockerd running, and does DOCKER_HOST point at it?)")]
    EngineUnreachable { reason: String },

    #[error("the Docker Engine refused to {operation}: {message}")]
    Engine { operation: &'static str, message: String },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::ContainerNotFound { .. })
    }
}
