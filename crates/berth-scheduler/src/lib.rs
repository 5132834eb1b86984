//! Placement for berth: given the nodes, the tasks that hold resources on
//! them and a batch of pending tasks, decide which node runs each pending
//! task, or say in words why none can.
//!
//! Invariant: no I/O, no clock, no randomness. The same nodes, holdings and
//! batch always give the same decisions, whatever order the nodes arrive in,
//! so a new leader that rebuilds a [`Scheduler`] from the replicated state
//! decides exactly as the old one would have.
//!
//! The rules follow Tutum's deployment strategies:
//!
//! - A node is *eligible* for a task when it is ready and active
//!   ([`berth_core::Node::accepts_tasks`]), carries every tag of the task's
//!   spec, has the task's reservation free, and none of the task's published
//!   host ports (port and protocol) is taken there by another task.
//! - Free capacity is the node's total minus the reservations of the tasks
//!   that hold resources there ([`holds_resources`]). A node that reports a
//!   total of 0 for a resource has *unknown* capacity for it — agents on
//!   hosts that cannot measure report 0 — and is treated as unlimited: every
//!   reservation fits, and it ranks as having the most free.
//! - `emptiest-node` picks the eligible node with the fewest tasks, then the
//!   most free memory, then the most free CPU, then the smallest node id.
//! - `high-availability` spreads a service: the eligible node whose `zone:`
//!   tag value holds the fewest tasks of the service (nodes without the tag
//!   form the zone `""`), then the node with the fewest tasks of the
//!   service, then the emptiest-node order above.
//! - `every-node` tasks arrive with their node already chosen by the
//!   orchestrator; the scheduler only confirms that node is still eligible.
//!
//! [`reference`] runs the same rules literally, scanning every node for every
//! task; tests check the indexed [`Scheduler`] against it and the bench uses
//! it as the baseline.

mod decision;
mod node_state;
mod reason;
pub mod reference;
mod scheduler;

pub use decision::{partition_decisions, Assignments, Decision, Refusals};
pub use scheduler::{NodeUsage, Scheduler};

use berth_core::{Task, TaskState};

/// The tag key whose value names a node's failure zone for
/// `high-availability` spreading, as in `zone:eu-1a`.
pub const ZONE_TAG_KEY: &str = "zone";

/// Whether a task's reservation counts against its node: it has been
/// assigned (state `assigned` or later) and its container may still be
/// running (any state before `complete`). A task being shut down still holds
/// its node until the agent reports it stopped. A `new` or `pending` task
/// holds nothing, even when it already names a node (every-node tasks do,
/// before the scheduler confirms them).
pub fn holds_resources(task: &Task) -> bool {
    task.node_id.is_some() && task.state >= TaskState::Assigned && !task.state.is_terminal()
}
