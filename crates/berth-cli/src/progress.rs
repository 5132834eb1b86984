//! How far a service is from what was asked of it, as a pure function of
//! its tasks: the judgement behind the live progress of `service create`,
//! `scale` and `update`. No I/O and no clock, so every rule is unit-tested;
//! `commands::follow` feeds it the tasks it lists and shows the result.
//!
//! The tasks are grouped into slots as the orchestrator groups them: by
//! slot number for a replicated service, by node for an every-node one.
//! Only the newest task of a slot says where the slot stands; older ones
//! are history, except that the one just before a task that has not
//! started yet tells whether that task is a retry of a rejected one.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_core::RestartCondition;
use berth_proto::v1 as proto;

const RUNNING: &str = "running";
const REJECTED: &str = "rejected";
const COMPLETE: &str = "complete";
const ORPHANED: &str = "orphaned";
const REMOVE: &str = "remove";
/// The states after which a task never runs again (see
/// `berth_core::TaskState::is_terminal`).
const TERMINAL_STATES: &[&str] = &["complete", "shutdown", "failed", "rejected", "orphaned"];
/// States of a task that has no container yet: a rejection comes before
/// any of them is left.
const NOT_STARTED_STATES: &[&str] = &["new", "pending", "assigned", "accepted"];
/// States in which a task may have a container that is up or coming up.
const ACTIVE_STATES: &[&str] = &["assigned", "accepted", "starting", "running"];

/// How many tasks the service should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Replicas(usize),
    /// One task on each eligible node; this many nodes are eligible now.
    EveryNode {
        eligible_nodes: usize,
    },
}

/// What the service is meant to reach, from its spec (and, for an
/// every-node service, the nodes).
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub service: String,
    pub target: Target,
    pub restart: RestartCondition,
    /// 0: no limit.
    pub restart_max_attempts: i64,
}

impl Goal {
    pub fn new(service: &proto::Service, nodes: &[proto::Node]) -> Goal {
        let spec = service.spec.clone().unwrap_or_default();
        let target = if spec.every_node {
            Target::EveryNode { eligible_nodes: eligible_nodes(nodes, &spec.tags) }
        } else {
            // Unset means 1 on the wire; a negative count was refused by the
            // manager before we get here.
            Target::Replicas(usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0))
        };
        Goal {
            service: service.name.clone(),
            target,
            // A keyword from a newer manager: assume the default, "always".
            restart: spec.restart.parse().unwrap_or_default(),
            restart_max_attempts: spec.restart_max_attempts,
        }
    }

    pub fn wanted(&self) -> usize {
        match self.target {
            Target::Replicas(n) => n,
            Target::EveryNode { eligible_nodes } => eligible_nodes,
        }
    }
}

/// Nodes an every-node service runs on: ready, active, and carrying all
/// of the service's tags (the orchestrator's rule).
pub fn eligible_nodes(nodes: &[proto::Node], tags: &[String]) -> usize {
    nodes
        .iter()
        .filter(|n| n.status == "ready" && n.availability == "active")
        .filter(|n| tags.iter().all(|t| n.tags.contains(t)))
        .count()
}

/// Where the service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still on its way (or stuck in a way that may clear: a crash loop, a
    /// node that may come back); only a deadline ends the wait.
    Converging,
    /// Every wanted task runs (or, for a one-off task, has completed) and
    /// no task that is meant to stop still runs.
    Converged,
    /// Cannot get there without a change: why, for the user.
    Failed(String),
}

/// One evaluation of the service's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub wanted: usize,
    /// Slots whose newest task runs and is meant to.
    pub running: usize,
    /// Slots whose newest task completed and will not be restarted.
    pub completed: usize,
    /// Tasks meant to stop (scale-down, drain) whose container may still run.
    pub stopping: usize,
    pub verdict: Verdict,
    /// The most recent thing worth telling: why a task waits, or how it failed.
    pub note: Option<String>,
}

/// Where one slot stands, judged by its newest task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Running,
    /// Completed and will not be restarted: a one-off task that did its job.
    Completed,
    /// Rejected by its node, or a retry of a rejected task that has not
    /// started yet: it will be rejected again unless something changes.
    Rejected,
    /// Ended and will not be restarted, by the restart policy or limit.
    Ended,
    /// On its way to running, or about to be replaced.
    InProgress,
}

/// Judges the service's tasks against the goal.
pub fn evaluate(goal: &Goal, tasks: &[proto::Task]) -> Progress {
    let mut slots: BTreeMap<(u32, &str), Vec<&proto::Task>> = BTreeMap::new();
    for task in tasks {
        let node = if task.slot == 0 { task.node_id.as_str() } else { "" };
        slots.entry((task.slot, node)).or_default().push(task);
    }
    let mut states: Vec<SlotState> = Vec::new();
    let mut rejection: Option<&proto::Task> = None;
    let mut ended: Option<&proto::Task> = None;
    let mut note_candidates: Vec<&proto::Task> = Vec::new();
    for history in slots.values_mut() {
        // Newest first, as the orchestrator orders them.
        history.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        let Some(&newest) = history.first() else { continue };
        if newest.desired_state == REMOVE {
            continue; // retired by a scale-down; counted below if still up
        }
        let previous = history.get(1).copied();
        let state = slot_state(goal, newest, previous);
        states.push(state);
        match state {
            SlotState::Rejected => {
                let rejected = if newest.state == REJECTED { newest } else { previous.unwrap_or(newest) };
                rejection = newer(rejection, rejected);
            }
            SlotState::Ended => ended = newer(ended, newest),
            _ => {}
        }
        if newest.state != RUNNING {
            note_candidates.push(newest);
            note_candidates.extend(previous);
        }
    }
    let count = |wanted: SlotState| states.iter().filter(|s| **s == wanted).count();
    let current_slots = states.len();
    let (running, completed, rejected, in_progress) = (
        count(SlotState::Running),
        count(SlotState::Completed),
        count(SlotState::Rejected),
        count(SlotState::InProgress),
    );
    let stopping =
        tasks.iter().filter(|t| t.desired_state != RUNNING && ACTIVE_STATES.contains(&t.state.as_str())).count();
    let wanted = goal.wanted();

    let all_slots_exist = current_slots >= wanted;
    let verdict = if running + completed == wanted && stopping == 0 && current_slots <= wanted {
        Verdict::Converged
    } else if all_slots_exist && wanted > 0 && running + in_progress + rejected + completed < wanted {
        // Tasks that ended for good leave too few that can still run.
        let task = ended.or(rejection);
        Verdict::Failed(match task {
            Some(task) => format!("{} and will not be restarted", describe(goal, task)),
            None => format!("only {} of {wanted} tasks can still run", running + in_progress),
        })
    } else if all_slots_exist && wanted > 0 && running == 0 && in_progress == 0 && rejected > 0 {
        let task = rejection.map(|t| describe(goal, t)).unwrap_or_default();
        Verdict::Failed(if rejected == 1 { task } else { format!("all {rejected} tasks were rejected; {task}") })
    } else {
        Verdict::Converging
    };
    let note = note_candidates
        .into_iter()
        .filter(|t| !t.message.is_empty() || t.exit_code.is_some_and(|code| code != 0))
        .max_by_key(|t| (t.state_since_ms, t.created_at_ms))
        .map(|t| describe(goal, t));
    Progress { wanted, running, completed, stopping, verdict, note }
}

fn slot_state(goal: &Goal, newest: &proto::Task, previous: Option<&proto::Task>) -> SlotState {
    let terminal = TERMINAL_STATES.contains(&newest.state.as_str());
    if newest.desired_state == RUNNING && newest.state == RUNNING {
        return SlotState::Running;
    }
    if terminal && !restarts(goal, newest) {
        return if newest.state == COMPLETE { SlotState::Completed } else { SlotState::Ended };
    }
    let retry_of_rejected =
        NOT_STARTED_STATES.contains(&newest.state.as_str()) && previous.is_some_and(|p| p.state == REJECTED);
    if newest.state == REJECTED || retry_of_rejected {
        return SlotState::Rejected;
    }
    SlotState::InProgress
}

/// Whether the orchestrator will replace this ended task (see
/// `berth_core::orchestrator::slot_fate`; its back-off reset after a long
/// run is left out, since a task that ran that long is not what a
/// deployment waits on).
fn restarts(goal: &Goal, task: &proto::Task) -> bool {
    if task.desired_state != RUNNING || task.state == ORPHANED {
        return true; // stopped by berth or lost with its node: replaced
    }
    let by_policy = match goal.restart {
        RestartCondition::Always => true,
        RestartCondition::OnFailure => task.state != COMPLETE,
        RestartCondition::Never => false,
    };
    let within_limit = goal.restart_max_attempts <= 0 || i64::from(task.attempt) < goal.restart_max_attempts;
    by_policy && within_limit
}

fn newer<'a>(current: Option<&'a proto::Task>, candidate: &'a proto::Task) -> Option<&'a proto::Task> {
    match current {
        Some(c) if (c.state_since_ms, c.created_at_ms) >= (candidate.state_since_ms, candidate.created_at_ms) => {
            Some(c)
        }
        _ => Some(candidate),
    }
}

/// `web.2` for a replicated task, `web on node-a` for an every-node one.
pub fn task_name(service: &str, task: &proto::Task) -> String {
    if task.slot > 0 {
        format!("{service}.{}", task.slot)
    } else if task.node_name.is_empty() {
        format!("{service} on node {}", task.node_id)
    } else {
        format!("{service} on {}", task.node_name)
    }
}

/// `web.2 rejected: No such image: x:latest`, `web.1 failed (exit 3)`.
fn describe(goal: &Goal, task: &proto::Task) -> String {
    let mut text = format!("{} {}", task_name(&goal.service, task), task.state);
    if let Some(code) = task.exit_code.filter(|code| *code != 0) {
        text.push_str(&format!(" (exit {code})"));
    }
    if !task.message.is_empty() {
        text.push_str(": ");
        text.push_str(&task.message);
    }
    text
}

/// `web: 2/3 running`, with what else is going on.
pub fn status_line(goal: &Goal, progress: &Progress) -> String {
    let mut text = format!("{}: {}/{} running", goal.service, progress.running, progress.wanted);
    if progress.completed > 0 {
        text.push_str(&format!(", {} completed", progress.completed));
    }
    if progress.stopping > 0 {
        text.push_str(&format!(", {} stopping", progress.stopping));
    }
    text
}

/// `web: 3/3 running in 1.2s`.
pub fn summary(goal: &Goal, progress: &Progress, elapsed: Duration) -> String {
    format!("{} in {:.1}s", status_line(goal, progress), elapsed.as_secs_f64())
}

/// Where a rollout stands, as the manager reports it on the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutVerdict {
    Rolling,
    Completed,
    /// Stopped by a failure: why.
    Paused(String),
    /// The update failed and the service went back to its previous spec: why.
    RolledBack(String),
}

pub fn rollout_verdict(rollout: &proto::Rollout) -> RolloutVerdict {
    match (rollout.kind.as_str(), rollout.state.as_str()) {
        (AUTOMATIC_ROLLBACK, "completed") => RolloutVerdict::RolledBack(rollout.message.clone()),
        (_, "completed") => RolloutVerdict::Completed,
        (_, "paused") => RolloutVerdict::Paused(rollout.message.clone()),
        _ => RolloutVerdict::Rolling,
    }
}

const AUTOMATIC_ROLLBACK: &str = "automatic rollback";

/// `web: update: 3/6 updated, 1 starting`.
pub fn rollout_line(service: &str, rollout: &proto::Rollout) -> String {
    let verb = if rollout.kind == AUTOMATIC_ROLLBACK { "rolling back" } else { rollout.kind.as_str() };
    let mut text = format!("{service}: {verb}: {}/{} updated", rollout.updated, rollout.slots);
    if rollout.in_flight > 0 {
        text.push_str(&format!(", {} starting", rollout.in_flight));
    }
    if rollout.failed > 0 {
        text.push_str(&format!(", {} failed", rollout.failed));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(replicas: usize) -> Goal {
        Goal {
            service: "web".into(),
            target: Target::Replicas(replicas),
            restart: RestartCondition::Always,
            restart_max_attempts: 0,
        }
    }

    /// A task of slot `slot`, created at `created` (ms), in `state`.
    fn task(slot: u32, created: i64, state: &str) -> proto::Task {
        proto::Task {
            id: format!("t{slot}-{created}"),
            service_name: "web".into(),
            slot,
            node_id: "n1".into(),
            node_name: "node-1".into(),
            desired_state: RUNNING.into(),
            state: state.into(),
            created_at_ms: created,
            state_since_ms: created,
            ..Default::default()
        }
    }

    fn with_message(mut task: proto::Task, message: &str) -> proto::Task {
        task.message = message.into();
        task
    }

    fn desired(mut task: proto::Task, desired: &str) -> proto::Task {
        task.desired_state = desired.into();
        task
    }

    #[test]
    fn no_tasks_yet_is_converging() {
        let progress = evaluate(&goal(3), &[]);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!((progress.running, progress.wanted), (0, 3));
    }

    #[test]
    fn all_replicas_running_converges() {
        let tasks = [task(1, 1, "running"), task(2, 1, "running"), task(3, 1, "running")];
        let progress = evaluate(&goal(3), &tasks);
        assert_eq!(progress.verdict, Verdict::Converged);
        assert_eq!(status_line(&goal(3), &progress), "web: 3/3 running");
        assert_eq!(summary(&goal(3), &progress, Duration::from_millis(1_230)), "web: 3/3 running in 1.2s");
    }

    #[test]
    fn some_tasks_still_starting_is_converging_with_the_pending_reason() {
        let tasks = [
            task(1, 1, "running"),
            task(2, 1, "starting"),
            with_message(task(3, 2, "pending"), "no node has 2 CPUs free"),
        ];
        let progress = evaluate(&goal(3), &tasks);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!(progress.running, 1);
        assert_eq!(progress.note.as_deref(), Some("web.3 pending: no node has 2 CPUs free"));
    }

    #[test]
    fn every_task_rejected_fails_with_the_nodes_message() {
        let tasks: Vec<_> =
            (1..=3).map(|slot| with_message(task(slot, 1, "rejected"), "No such image: nope:latest")).collect();
        let progress = evaluate(&goal(3), &tasks);
        assert_eq!(
            progress.verdict,
            Verdict::Failed("all 3 tasks were rejected; web.1 rejected: No such image: nope:latest".into())
        );
    }

    #[test]
    fn retries_of_rejected_tasks_that_have_not_started_still_count_as_rejected() {
        // The orchestrator replaces a rejected task at once; the retry
        // waits for its node, which will reject it again.
        let tasks = [
            with_message(task(1, 1, "rejected"), "No such image: nope:latest"),
            task(1, 2, "assigned"),
            with_message(task(2, 1, "rejected"), "No such image: nope:latest"),
        ];
        let progress = evaluate(&goal(2), &tasks);
        assert!(matches!(progress.verdict, Verdict::Failed(ref m) if m.contains("No such image")), "{progress:?}");
    }

    #[test]
    fn one_rejected_task_among_running_ones_keeps_waiting() {
        // Another node may have the image: only the deadline ends this.
        let tasks = [task(1, 1, "running"), with_message(task(2, 1, "rejected"), "No such image: x")];
        let progress = evaluate(&goal(2), &tasks);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!(progress.note.as_deref(), Some("web.2 rejected: No such image: x"));
    }

    #[test]
    fn a_rejection_before_all_slots_exist_is_not_yet_a_failure() {
        let tasks = [with_message(task(1, 1, "rejected"), "No such image: x")];
        assert_eq!(evaluate(&goal(3), &tasks).verdict, Verdict::Converging);
    }

    #[test]
    fn a_crash_loop_that_restarts_keeps_waiting_and_shows_the_exit_code() {
        let mut failed = task(1, 1, "failed");
        failed.exit_code = Some(3);
        let tasks = [failed, task(1, 2, "starting")];
        let progress = evaluate(&goal(1), &tasks);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!(progress.note.as_deref(), Some("web.1 failed (exit 3)"));
    }

    #[test]
    fn a_failed_task_that_will_not_restart_fails_the_deployment() {
        let mut g = goal(2);
        g.restart = RestartCondition::Never;
        let mut failed = task(2, 1, "failed");
        failed.exit_code = Some(1);
        let tasks = [task(1, 1, "running"), failed];
        let progress = evaluate(&g, &tasks);
        assert_eq!(progress.verdict, Verdict::Failed("web.2 failed (exit 1) and will not be restarted".into()));
    }

    #[test]
    fn the_restart_limit_ends_a_slot() {
        let mut g = goal(1);
        g.restart_max_attempts = 2;
        let mut failed = task(1, 3, "failed");
        failed.attempt = 2;
        let progress = evaluate(&g, &[task(1, 1, "failed"), task(1, 2, "failed"), failed]);
        assert!(matches!(progress.verdict, Verdict::Failed(_)), "{progress:?}");
    }

    #[test]
    fn a_one_off_task_that_completed_converges() {
        let mut g = goal(1);
        g.restart = RestartCondition::OnFailure;
        let mut done = task(1, 1, "complete");
        done.exit_code = Some(0);
        let progress = evaluate(&g, &[done]);
        assert_eq!(progress.verdict, Verdict::Converged);
        assert_eq!(status_line(&g, &progress), "web: 0/1 running, 1 completed");
    }

    #[test]
    fn scale_down_waits_for_retired_tasks_to_stop() {
        let tasks = [task(1, 1, "running"), desired(task(2, 1, "running"), REMOVE)];
        let progress = evaluate(&goal(1), &tasks);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!(status_line(&goal(1), &progress), "web: 1/1 running, 1 stopping");

        let tasks = [task(1, 1, "running"), desired(task(2, 1, "shutdown"), REMOVE)];
        assert_eq!(evaluate(&goal(1), &tasks).verdict, Verdict::Converged);
    }

    #[test]
    fn more_running_slots_than_wanted_is_not_converged() {
        // Scaled down, but the orchestrator has not retired the extra yet.
        let tasks = [task(1, 1, "running"), task(2, 1, "running")];
        assert_eq!(evaluate(&goal(1), &tasks).verdict, Verdict::Converging);
    }

    #[test]
    fn scale_to_zero_converges_once_everything_stopped() {
        assert_eq!(evaluate(&goal(0), &[]).verdict, Verdict::Converged);
        let tasks = [desired(task(1, 1, "running"), REMOVE)];
        assert_eq!(evaluate(&goal(0), &tasks).verdict, Verdict::Converging);
    }

    #[test]
    fn only_the_newest_task_of_a_slot_counts() {
        let old = with_message(task(1, 1, "failed"), "exit 1");
        let tasks = [old, task(1, 2, "running")];
        let progress = evaluate(&goal(1), &tasks);
        assert_eq!(progress.verdict, Verdict::Converged);
        assert_eq!(progress.note, None, "history of a running slot is not news");
    }

    fn node(name: &str, status: &str, availability: &str, tags: &[&str]) -> proto::Node {
        proto::Node {
            id: format!("id-{name}"),
            name: name.into(),
            status: status.into(),
            availability: availability.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_node_services_want_one_task_per_eligible_node() {
        let nodes = [
            node("a", "ready", "active", &["ssd"]),
            node("b", "ready", "active", &[]),
            node("c", "down", "active", &["ssd"]),
            node("d", "ready", "drain", &["ssd"]),
        ];
        assert_eq!(eligible_nodes(&nodes, &[]), 2);
        assert_eq!(eligible_nodes(&nodes, &["ssd".to_string()]), 1);

        let service = proto::Service {
            name: "agent".into(),
            spec: Some(proto::ServiceSpec { every_node: true, ..Default::default() }),
            ..Default::default()
        };
        let g = Goal::new(&service, &nodes);
        assert_eq!(g.target, Target::EveryNode { eligible_nodes: 2 });
        assert_eq!(g.wanted(), 2);

        let on = |node: &str, state: &str| {
            let mut t = task(0, 1, state);
            t.node_id = format!("id-{node}");
            t.node_name = node.into();
            t
        };
        let progress = evaluate(&g, &[on("a", "running"), on("b", "starting")]);
        assert_eq!(progress.verdict, Verdict::Converging);
        assert_eq!(progress.running, 1);
        let progress = evaluate(&g, &[on("a", "running"), on("b", "running")]);
        assert_eq!(progress.verdict, Verdict::Converged);

        let rejected = with_message(on("b", "rejected"), "No such image: x");
        let progress = evaluate(&g, &[with_message(on("a", "rejected"), "No such image: x"), rejected]);
        assert!(
            matches!(progress.verdict, Verdict::Failed(ref m) if m.starts_with("all 2 tasks were rejected; agent on a rejected")),
            "{progress:?}"
        );
    }

    #[test]
    fn a_replicated_goal_reads_the_spec() {
        let service = |replicas: Option<i64>| proto::Service {
            name: "web".into(),
            spec: Some(proto::ServiceSpec { replicas, restart: "on-failure".into(), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(Goal::new(&service(None), &[]).target, Target::Replicas(1), "unset means 1");
        let g = Goal::new(&service(Some(4)), &[]);
        assert_eq!(g.target, Target::Replicas(4));
        assert_eq!(g.restart, RestartCondition::OnFailure);
    }

    fn rollout(kind: &str, state: &str, message: &str) -> proto::Rollout {
        proto::Rollout {
            kind: kind.into(),
            state: state.into(),
            message: message.into(),
            slots: 6,
            updated: 3,
            in_flight: 1,
            failed: 1,
            ..Default::default()
        }
    }

    #[test]
    fn rollout_verdicts_follow_kind_and_state() {
        assert_eq!(rollout_verdict(&rollout("update", "rolling", "")), RolloutVerdict::Rolling);
        assert_eq!(rollout_verdict(&rollout("redeploy", "completed", "")), RolloutVerdict::Completed);
        assert_eq!(rollout_verdict(&rollout("update", "paused", "why")), RolloutVerdict::Paused("why".into()));
        assert_eq!(rollout_verdict(&rollout("automatic rollback", "rolling", "x")), RolloutVerdict::Rolling);
        assert_eq!(
            rollout_verdict(&rollout("automatic rollback", "completed", "why")),
            RolloutVerdict::RolledBack("why".into())
        );
        assert_eq!(
            rollout_line("web", &rollout("automatic rollback", "rolling", "")),
            "web: rolling back: 3/6 updated, 1 starting, 1 failed"
        );
    }
}
