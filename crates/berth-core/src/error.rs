//! Errors of the domain, named for what went wrong.

use serde::{Deserialize, Serialize};

/// Why a request was refused. Carried in Raft responses, so it is
/// serializable and deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CoreError {
    #[error("invalid {field}: {reason}")]
    SpecInvalid { field: String, reason: String },
    #[error("{kind} '{name}' not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("stale version: the update was based on version {expected}, the current version is {found}; read it again and retry")]
    StaleVersion { expected: u64, found: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("cluster is not initialised")]
    NotInitialised,
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::SpecInvalid { field: field.into(), reason: reason.into() }
    }

    /// The same refusal about another field, e.g. `rollback.order` for a
    /// keyword parsed with the `update.order` field name.
    pub fn renamed(self, field: &str) -> Self {
        match self {
            CoreError::SpecInvalid { reason, .. } => CoreError::SpecInvalid { field: field.to_string(), reason },
            other => other,
        }
    }

    /// The same refusal about a field of one service among several (a
    /// stack): `image` becomes `shop_db.image`.
    pub fn in_service(self, service: &str) -> Self {
        match self {
            CoreError::SpecInvalid { field, reason } => {
                CoreError::SpecInvalid { field: format!("{service}.{field}"), reason }
            }
            other => other,
        }
    }

    pub fn not_found(kind: &str, name: impl Into<String>) -> Self {
        CoreError::NotFound { kind: kind.to_string(), name: name.into() }
    }
}
