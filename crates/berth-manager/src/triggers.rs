//! The trigger endpoint: `POST /v1/triggers/TOKEN` on the API port of any
//! manager, plain HTTP/1.1 beside gRPC, so a CI pipeline needs nothing but
//! curl. The token is hashed and looked up by the state machine; a wrong
//! or revoked one gets 404 and writes nothing (the leader checks before it
//! proposes). Bodies are not used and are refused past a small limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use berth_core::token::hash_token;
use berth_core::trigger::validate_trigger_token;
use berth_core::{Command, CoreError, Outcome, ServiceMode};
use tracing::{info, warn};

use crate::error::ManagerError;
use crate::node::{hex_id, ManagerNode};

pub const TRIGGER_PATH: &str = "/v1/triggers/{token}";
/// A trigger needs no body; anything past this is refused with 413.
pub const MAX_TRIGGER_BODY_BYTES: usize = 4 * 1024;

pub fn router(node: Arc<ManagerNode>) -> Router {
    Router::new().route(TRIGGER_PATH, post(fire)).layer(DefaultBodyLimit::max(MAX_TRIGGER_BODY_BYTES)).with_state(node)
}

async fn fire(State(node): State<Arc<ManagerNode>>, Path(token): Path<String>, _body: Bytes) -> (StatusCode, String) {
    const NOT_FOUND: &str = "no such trigger\n";
    if validate_trigger_token(&token).is_err() {
        return (StatusCode::NOT_FOUND, NOT_FOUND.into());
    }
    match node.write(hex_id(), Command::FireTrigger { token_hash: hash_token(&token) }).await {
        Ok(Outcome::Service(service)) => {
            let what = match service.spec.mode {
                ServiceMode::Replicated { replicas } => format!("{} now wants {replicas} replicas", service.spec.name),
                ServiceMode::EveryNode => service.spec.name.clone(),
            };
            info!(service = %service.spec.name, "trigger fired");
            (StatusCode::ACCEPTED, format!("triggered: {what}\n"))
        }
        Ok(_) | Err(ManagerError::Refused(CoreError::NotFound { .. })) => (StatusCode::NOT_FOUND, NOT_FOUND.into()),
        Err(ManagerError::Refused(e)) => (StatusCode::CONFLICT, format!("{e}\n")),
        Err(e) => {
            warn!(error = %e, "a trigger could not be carried out");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    }
}
