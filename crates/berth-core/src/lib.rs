//! The berth domain: service specs and their validation, join tokens, the
//! replicated cluster state and the one pure function that changes it.
//!
//! Invariant: no I/O, no clock, no randomness. Timestamps and random bytes
//! are passed in by the caller, so applying the same commands to the same
//! state always gives the same result.

pub mod discovery;
pub mod error;
pub mod node;
pub mod orchestrator;
pub mod rollout;
pub mod secret;
pub mod spec;
pub mod stack;
pub mod state;
#[cfg(test)]
pub(crate) mod test_world;
pub mod token;
pub mod trigger;
pub mod version;

pub use error::CoreError;
pub use node::*;
pub use rollout::{Rollout, RolloutAction, RolloutDecision, RolloutKind, RolloutProgress, RolloutState};
pub use secret::Secret;
pub use spec::*;
pub use stack::StackPlan;
pub use state::*;
pub use trigger::{Trigger, TriggerAction};
pub use version::{ClusterVersion, THIS_RELEASE};
