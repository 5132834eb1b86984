//! Errors of the manager, and how each reaches a gRPC client.

use berth_core::CoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Refused(#[from] CoreError),
    /// No leader, or the leader cannot reach a quorum.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// This manager stopped leading while it served the request; the
    /// caller retries with the new leader.
    #[error("leadership moved: this manager no longer leads")]
    LeadershipMoved,
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ManagerError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ManagerError::Internal(e.to_string())
    }
}

impl From<ManagerError> for Status {
    fn from(e: ManagerError) -> Status {
        let code = match &e {
            ManagerError::Refused(core) => match core {
                CoreError::SpecInvalid { .. } => Code::InvalidArgument,
                CoreError::NotFound { .. } => Code::NotFound,
                CoreError::AlreadyExists { .. } => Code::AlreadyExists,
                CoreError::StaleVersion { .. } | CoreError::Conflict(_) => Code::FailedPrecondition,
                CoreError::NotInitialised => Code::Unavailable,
            },
            ManagerError::NoQuorum(_) | ManagerError::LeadershipMoved => Code::Unavailable,
            ManagerError::PermissionDenied(_) => Code::PermissionDenied,
            ManagerError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
