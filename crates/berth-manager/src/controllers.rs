//! The leader's control loops: after every change to the state, the
//! orchestrator decides which tasks should exist and the scheduler places
//! the new ones, each committing its decisions as one batched Raft entry.
//! They run only while this manager leads and stop the moment it does not,
//! so two managers never decide at once; a new leader picks up from the
//! replicated state alone.

use std::sync::Arc;
use std::time::Duration;

use berth_core::orchestrator;
use berth_core::{ClusterVersion, Command, DesiredState, TaskState};
use berth_scheduler::{Decision, Scheduler};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::dispatcher::{run_liveness_checker, DispatcherSettings, Liveness};
use crate::node::{hex_id, now_ms, ManagerNode};

/// After a failed write (e.g. lost quorum), wait this long before retrying.
pub const CONTROLLER_RETRY_MS: u64 = 100;

/// Runs the controllers whenever this manager is the leader, until shutdown.
pub async fn supervise(
    node: Arc<ManagerNode>,
    liveness: Arc<Liveness>,
    settings: DispatcherSettings,
    shutdown: CancellationToken,
) {
    let mut metrics = node.raft.metrics();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        while !node.is_leader() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
        // A new leader may not have applied everything its predecessor
        // committed yet; controllers deciding on that state would plan again
        // what is already planned (a second task for a slot). The read
        // index waits until this leader's own first entry is applied.
        let caught_up = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = tokio::time::timeout(
                Duration::from_millis(crate::node::LEADER_COMMIT_TIMEOUT_MS),
                node.raft.ensure_linearizable(),
            ) => matches!(read, Ok(Ok(_))),
        };
        if !caught_up {
            // No quorum to confirm this leadership yet: look again shortly.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(CONTROLLER_RETRY_MS)) => {}
            }
            continue;
        }
        let term = metrics.borrow().current_term;
        info!(term, "leading: starting the orchestrator, scheduler and liveness checks");
        let leading = shutdown.child_token();
        let loops = tokio::spawn({
            let (node, leading, liveness, settings) =
                (node.clone(), leading.clone(), liveness.clone(), settings.clone());
            async move {
                tokio::join!(
                    control_loop(node.clone(), leading.clone()),
                    raise_cluster_version(node.clone(), leading.clone()),
                    run_liveness_checker(node, liveness, settings, leading),
                );
            }
            .instrument(info_span!("controllers", term))
        });
        while node.is_leader() && metrics.borrow().current_term == term {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => if changed.is_err() { break },
            }
        }
        leading.cancel();
        let _ = loops.await;
        info!(term, "no longer leading: controllers stopped");
    }
}

/// How often a leader whose cluster version is below its own release asks
/// the other managers which release they run.
pub const CLUSTER_VERSION_CHECK_MS: u64 = 1_000;

/// Raises the recorded cluster version to the lowest release among the
/// members, once every member answers: a manager being upgraded keeps it
/// where it is until it is back. Ends when the cluster is at this build's
/// level, which it cannot pass (the leader is a voter).
async fn raise_cluster_version(node: Arc<ManagerNode>, leading: CancellationToken) {
    let ours = ClusterVersion::this_build();
    loop {
        let current = node.view.read(|state, _| state.cluster_version());
        if current >= ours {
            return;
        }
        match members_level(&node).await {
            Some(level) if level > current => {
                let command = Command::SetClusterVersion { version: level };
                match node.write(format!("cluster-version-{level}"), command).await {
                    Ok(_) => {
                        info!(from = %current, to = %level, "every manager runs {level} or later: raised the cluster version")
                    }
                    Err(e) => warn!(error = %e, "cannot raise the cluster version; retrying"),
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = leading.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(CLUSTER_VERSION_CHECK_MS)) => {}
        }
    }
}

/// The lowest release level among the members (this one included), or
/// `None` while one of them does not answer. Learners count: a manager of
/// the older release still catching up would not read the raise either.
async fn members_level(node: &ManagerNode) -> Option<ClusterVersion> {
    let membership = node.raft.metrics().borrow().membership_config.membership().clone();
    let mut lowest = ClusterVersion::this_build();
    for (_, member) in membership.nodes().filter(|(id, _)| **id != node.id) {
        let reply = node.ping(&member.addr).await?;
        lowest = lowest.min(ClusterVersion::of_release(&reply.version)?);
    }
    Some(lowest)
}

async fn control_loop(node: Arc<ManagerNode>, leading: CancellationToken) {
    let mut changes = node.view.watch(0).live;
    loop {
        let wake_at_ms = match pass(&node).await {
            Ok(wake) => wake,
            Err(e) => {
                warn!(error = %e, "controller pass failed; retrying");
                Some(now_ms() + CONTROLLER_RETRY_MS as i64)
            }
        };
        let sleep = match wake_at_ms {
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = leading.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
            item = changes.recv() => {
                if matches!(item, Err(RecvError::Closed)) {
                    return;
                }
                // Take the whole burst of changes before deciding again.
                while changes.try_recv().is_ok() {}
            }
        }
    }
}

/// One round of orchestration and scheduling. Returns when to look again
/// even if nothing changes (a restart waiting on its back-off).
async fn pass(node: &ManagerNode) -> Result<Option<i64>, crate::error::ManagerError> {
    let reconciliation = node.view.read(|state, _| orchestrator::reconcile(state, now_ms(), &mut hex_id));
    if !reconciliation.plan.is_empty() {
        let plan = &reconciliation.plan;
        debug!(
            create = plan.create.len(),
            stop = plan.set_desired.len(),
            forget = plan.delete.len(),
            "orchestrator plan"
        );
        node.write(hex_id(), Command::ReconcileTasks(reconciliation.plan)).await?;
    }

    let decisions = node.view.read(|state, _| {
        let pending: Vec<_> =
            state.tasks().filter(|t| t.state < TaskState::Assigned && t.desired == DesiredState::Running).collect();
        if pending.is_empty() {
            return Vec::new();
        }
        let mut scheduler = Scheduler::new(state.nodes(), state.tasks());
        scheduler
            .place(pending.iter().copied())
            .into_iter()
            .filter(|decision| match decision {
                // An unchanged reason is not worth a Raft entry.
                Decision::Unplaceable { task_id, reason } => {
                    state.task(task_id).is_none_or(|t| t.state != TaskState::Pending || t.message != *reason)
                }
                Decision::Assign { .. } => true,
            })
            .collect()
    });
    if !decisions.is_empty() {
        let mut assignments = Vec::new();
        let mut unplaceable = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Assign { task_id, node_id } => assignments.push((task_id, node_id)),
                Decision::Unplaceable { task_id, reason } => unplaceable.push((task_id, reason)),
            }
        }
        debug!(assigned = assignments.len(), unplaceable = unplaceable.len(), "scheduler decisions");
        node.write(hex_id(), Command::AssignTasks { assignments, unplaceable }).await?;
    }
    Ok(reconciliation.wake_at_ms)
}
