//! Triggers: secret URLs that redeploy or scale a service when something
//! outside the cluster (a CI pipeline) POSTs to them. Only a SHA-256 hash
//! of the secret is replicated, so the log and snapshots never hold a
//! usable token; removing the trigger revokes it.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Random bytes in a trigger's secret.
pub const TRIGGER_SECRET_BYTES: usize = 24;
/// Triggers a cluster keeps: each is a few hundred bytes in every snapshot.
pub const MAX_TRIGGERS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TriggerAction {
    #[default]
    Redeploy,
    ScaleUp,
    ScaleDown,
}

impl TriggerAction {
    pub const ALL: &'static [&'static str] = &["redeploy", "scale-up", "scale-down"];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerAction::Redeploy => "redeploy",
            TriggerAction::ScaleUp => "scale-up",
            TriggerAction::ScaleDown => "scale-down",
        }
    }
}

impl std::fmt::Display for TriggerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TriggerAction {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "" | "redeploy" => Ok(TriggerAction::Redeploy),
            "scale-up" => Ok(TriggerAction::ScaleUp),
            "scale-down" => Ok(TriggerAction::ScaleDown),
            other => {
                Err(CoreError::invalid("action", format!("'{other}' is not one of {}", TriggerAction::ALL.join(", "))))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: String,
    pub service_id: String,
    pub action: TriggerAction,
    /// `token::hash_token` of the secret in the trigger's URL.
    pub token_hash: String,
    pub created_at_ms: i64,
    /// 0 until it first fires.
    pub last_fired_at_ms: i64,
    pub fired_count: u64,
}

/// A trigger's secret as it appears in its URL: letters and digits only,
/// long enough not to be guessed.
pub fn validate_trigger_token(token: &str) -> Result<(), CoreError> {
    if token.len() < 32 || token.len() > 128 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CoreError::invalid("token", "must be 32 to 128 letters and digits"));
    }
    Ok(())
}
