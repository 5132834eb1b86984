//! The berth agent: runs the tasks the leader assigns to its node as
//! containers and reports what becomes of them.
//!
//! Invariant: the agent executes placement, it never decides it. The
//! container engine sits behind the [`runtime::Runtime`] trait so the rest
//! of the agent can be tested against [`runtime::MemoryRuntime`].

pub mod balancer;
pub mod executor;
pub mod runtime;
pub mod session;

pub use session::{run, AgentConfig};

/// Why an agent stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the cluster refused this agent: {0}")]
    Refused(String),
    #[error("invalid agent settings: {0}")]
    Config(String),
    #[error("no manager reachable: {0}")]
    Unreachable(String),
    #[error("container runtime: {0}")]
    Runtime(String),
}
