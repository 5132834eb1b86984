//! Secrets as the replicated state holds them: sealed (encrypted by the
//! managers with the cluster's data key before they are proposed), so the
//! Raft log and snapshots never hold one in the clear. This module only
//! stores and checks; sealing and opening is the managers' business.

use serde::{Deserialize, Serialize};

use crate::spec::validate_name;
use crate::CoreError;

/// The largest secret accepted, as its clear bytes.
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// Secrets a cluster keeps.
pub const MAX_SECRETS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub name: String,
    /// Nonce and ciphertext, as the managers sealed them.
    pub sealed: Vec<u8>,
    /// Bytes of the clear secret.
    pub size: u64,
    pub created_at_ms: i64,
}

/// A secret's name is a file name under /run/secrets and a reference in
/// specs, so it follows service naming.
pub fn validate_secret(name: &str, size: usize) -> Result<(), CoreError> {
    validate_name("name", name)?;
    if size == 0 {
        return Err(CoreError::invalid("data", "is empty"));
    }
    if size > MAX_SECRET_BYTES {
        return Err(CoreError::invalid(
            "data",
            format!("{size} bytes is more than the {MAX_SECRET_BYTES} bytes (500 KiB) a secret may hold"),
        ));
    }
    Ok(())
}
