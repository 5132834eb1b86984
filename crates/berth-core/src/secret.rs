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

/// Credentials for one image registry, the password sealed like a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// `registry.example.com:5000`, as images name it.
    pub host: String,
    pub username: String,
    pub sealed_password: Vec<u8>,
    pub created_at_ms: i64,
}

/// The registry an image reference names, if any: its first component,
/// when that holds a '.' or a ':' or is `localhost` (as Docker reads it).
pub fn registry_of(image: &str) -> Option<&str> {
    let (first, rest) = image.split_once('/')?;
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    (is_host && !rest.is_empty()).then_some(first)
}

/// An image reference's repository and tag, `latest` when it names none
/// (as Docker reads it). A digest reference comes back whole, with no tag.
pub fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
        None => (image, "latest"),
    }
}

pub fn validate_registry_host(host: &str) -> Result<(), CoreError> {
    let valid = !host.is_empty()
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        return Err(CoreError::invalid(
            "host",
            format!("'{host}' is not a registry host such as registry.example.com:5000"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_are_read_as_docker_reads_them() {
        assert_eq!(registry_of("localhost:5000/web:1"), Some("localhost:5000"));
        assert_eq!(registry_of("registry.example.com/team/web"), Some("registry.example.com"));
        assert_eq!(registry_of("team/web:1"), None, "a Docker Hub namespace is no host");
        assert_eq!(registry_of("busybox"), None);
        assert!(validate_registry_host("127.0.0.1:5000").is_ok());
        assert!(validate_registry_host("bad host").is_err());
    }

    #[test]
    fn an_untagged_image_means_latest_not_every_tag() {
        assert_eq!(split_tag("127.0.0.1:5000/app"), ("127.0.0.1:5000/app", "latest"));
        assert_eq!(split_tag("127.0.0.1:5000/app:2"), ("127.0.0.1:5000/app", "2"));
        assert_eq!(split_tag("registry.example.com/team/app:v1.2"), ("registry.example.com/team/app", "v1.2"));
        assert_eq!(split_tag("app@sha256:ab"), ("app@sha256:ab", ""));
    }

    #[test]
    fn secrets_are_limited_to_500_kib() {
        assert!(validate_secret("db-password", 10).is_ok());
        assert!(validate_secret("db-password", MAX_SECRET_BYTES + 1).is_err());
        assert!(validate_secret("db-password", 0).is_err());
        assert!(validate_secret("Bad Name", 10).is_err());
    }
}
