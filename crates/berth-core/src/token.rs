//! Join tokens: `BERTH1-<ROLE>-<cluster id>-<secret>`. The role and the
//! cluster id are readable so a wrong token gives a precise error; only a
//! SHA-256 hash of the whole token is replicated.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::CoreError;

const PREFIX: &str = "BERTH1";
/// Bytes of randomness in a token's secret.
pub const SECRET_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    fn code(self) -> &'static str {
        match self {
            Role::Manager => "MGR",
            Role::Worker => "WKR",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub role: Role,
    pub cluster_id: String,
    secret: String,
}

impl JoinToken {
    /// `secret` comes from the caller's random source, keeping this module pure.
    pub fn new(role: Role, cluster_id: &str, secret: [u8; SECRET_BYTES]) -> Self {
        JoinToken { role, cluster_id: cluster_id.to_string(), secret: hex::encode(secret) }
    }

    pub fn hash(&self) -> String {
        hash_token(&self.to_string())
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{}-{}-{}", self.role.code(), self.cluster_id, self.secret)
    }
}

impl FromStr for JoinToken {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        let malformed =
            || CoreError::invalid("token", "malformed join token: expected BERTH1-MGR|WKR-<cluster id>-<secret>");
        let mut parts = s.trim().split('-');
        if parts.next() != Some(PREFIX) {
            return Err(malformed());
        }
        let role = match parts.next() {
            Some("MGR") => Role::Manager,
            Some("WKR") => Role::Worker,
            _ => return Err(malformed()),
        };
        let cluster_id = parts.next().filter(|c| !c.is_empty()).ok_or_else(malformed)?;
        let secret = parts.next().filter(|c| c.len() == SECRET_BYTES * 2).ok_or_else(malformed)?;
        if parts.next().is_some() || !secret.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        Ok(JoinToken { role, cluster_id: cluster_id.to_string(), secret: secret.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_hashes_stably() {
        let token = JoinToken::new(Role::Manager, "c0ffee", [7; SECRET_BYTES]);
        let text = token.to_string();
        assert!(text.starts_with("BERTH1-MGR-c0ffee-"));
        let parsed: JoinToken = text.parse().expect("round trip");
        assert_eq!(parsed, token);
        assert_eq!(parsed.hash(), hash_token(&text));
        assert_ne!(parsed.hash(), JoinToken::new(Role::Worker, "c0ffee", [7; SECRET_BYTES]).hash());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "garbage", "BERTH1-XXX-c-00", "BERTH1-MGR--00", "BERTH1-MGR-c-zz", "BERTH1-WKR-c-0000"] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad} should be refused");
        }
    }
}
