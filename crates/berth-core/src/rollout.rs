//! Rolling replacement of a service's tasks: the rollout record kept in
//! Raft on the service, and the pure step the orchestrator takes on each
//! pass. Progress itself is never stored: it is read off the tasks (which
//! slots run the current spec and are ready), so a new leader continues a
//! rollout from the replicated state alone, and a slot is never replaced
//! twice or skipped. Only what the tasks cannot tell is stored: the
//! rollout's state, and the new tasks that failed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{FailureAction, Service, ServiceSpec, Task, TaskState, UpdateConfig, UpdateOrder};

/// A new task that has not reached running this long after it was created
/// is stuck (unplaceable, a slow pull, a start that hangs): a failure.
pub const TASK_START_DEADLINE_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutKind {
    /// A changed spec.
    Update,
    /// The same spec, fresh containers.
    Redeploy,
    /// Back to the previous spec, asked by the user.
    Rollback,
    /// Back to the previous spec after the update failed.
    AutoRollback,
}

impl RolloutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutKind::Update => "update",
            RolloutKind::Redeploy => "redeploy",
            RolloutKind::Rollback => "rollback",
            RolloutKind::AutoRollback => "automatic rollback",
        }
    }

    fn is_rollback(self) -> bool {
        matches!(self, RolloutKind::Rollback | RolloutKind::AutoRollback)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Replacing tasks.
    Rolling,
    /// Stopped by a failure; `service update` or `service rollback` goes on.
    Paused,
    /// Every task runs the current spec.
    Completed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Rolling => "rolling",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RolloutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub kind: RolloutKind,
    pub state: RolloutState,
    pub started_at_ms: i64,
    /// When it completed or paused; 0 while rolling.
    pub finished_at_ms: i64,
    /// Why it paused or rolled back, or how it ended.
    pub message: String,
    /// New tasks of this rollout that failed, each counted once.
    pub failed_tasks: BTreeSet<String>,
}

impl Rollout {
    pub fn start(kind: RolloutKind, now_ms: i64) -> Self {
        Rollout {
            kind,
            state: RolloutState::Rolling,
            started_at_ms: now_ms,
            finished_at_ms: 0,
            message: String::new(),
            failed_tasks: BTreeSet::new(),
        }
    }

    /// The settings this rollout rolls with.
    pub fn config<'a>(&self, spec: &'a ServiceSpec) -> &'a UpdateConfig {
        if self.kind.is_rollback() {
            &spec.rollback
        } else {
            &spec.update
        }
    }
}

/// A decision about a service's rollout, committed with the orchestrator's
/// plan. It applies only while the service is still at `service_version`:
/// a user's change in between supersedes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutDecision {
    pub service_id: String,
    pub service_version: u64,
    pub action: RolloutAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RolloutAction {
    TaskFailed { task_id: String },
    Pause { reason: String },
    Rollback { reason: String },
    Complete { message: String },
}

/// Tells whether a task runs an older spec than its service's. Scale,
/// rollout and start-order settings do not count: changing them redeploys
/// nothing. The service's spec is copied once per service, not per task.
pub struct SpecComparison<'a> {
    service: &'a Service,
    current: ServiceSpec,
}

impl<'a> SpecComparison<'a> {
    pub fn new(service: &'a Service) -> Self {
        SpecComparison { service, current: service.spec.clone() }
    }

    pub fn outdated(&mut self, task: &Task) -> bool {
        if task.service_version == self.service.version {
            return false;
        }
        self.current.copy_rollout_neutral_fields(&task.spec);
        self.current != task.spec
    }
}

/// Running and, when the service checks health, healthy: what a rollout
/// waits for before it counts a slot as updated.
pub fn is_ready(task: &Task) -> bool {
    task.state == TaskState::Running && (task.spec.health.is_none() || task.health == crate::Health::Healthy)
}

/// How long a running task of this spec may take to turn healthy.
fn health_deadline_ms(spec: &ServiceSpec, monitor_ms: u64) -> i64 {
    let health_ms = spec
        .health
        .as_ref()
        .map_or(0, |h| h.start_period_ms + h.interval_ms.saturating_mul(u64::from(h.retries) + 1) + h.timeout_ms);
    i64::try_from(health_ms.max(monitor_ms)).unwrap_or(i64::MAX)
}

/// One slot as the rollout sees it: its live tasks, oldest first, and its
/// finished ones.
pub struct SlotTasks<'a> {
    pub live: Vec<&'a Task>,
    pub all: Vec<&'a Task>,
}

impl SlotTasks<'_> {
    /// No task runs the slot because berth stopped its last one: it is
    /// stopping still, or down and waiting for its replacement.
    fn is_being_replaced(&self) -> bool {
        crate::orchestrator::newest(&self.all).is_some_and(|t| t.desired == crate::DesiredState::Shutdown)
    }
}

/// What the rollout wants done on this pass.
#[derive(Debug, Default)]
pub struct RolloutStep<'a> {
    /// Outdated tasks to replace now. Stop-first only stops them: the
    /// replacement is created once the old task is down, as after any stop
    /// by berth. Start-first creates the replacement at once.
    pub replace: Vec<&'a Task>,
    pub stop_first: bool,
    /// Old tasks whose replacement is ready (start-first).
    pub retire: Vec<&'a Task>,
    pub decisions: Vec<RolloutAction>,
    pub wake_at_ms: Option<i64>,
    /// A decision that changes the spec was taken: make no task changes
    /// for this service on this pass, they would use the old spec.
    pub hold: bool,
}

impl RolloutStep<'_> {
    fn wake_at(&mut self, at_ms: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |w| w.min(at_ms)));
    }
}

/// Progress of a rollout read off the tasks, for `service inspect` and
/// the CLI's live view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    pub slots: u32,
    /// Slots whose task runs the current spec and is ready.
    pub updated: u32,
    /// Slots whose new task is on its way.
    pub in_flight: u32,
    pub failed: u32,
}

/// The rollout's decisions for one service, given its slots.
pub fn step<'a>(service: &Service, slots: &[SlotTasks<'a>], now_ms: i64) -> RolloutStep<'a> {
    let mut out = RolloutStep::default();
    // A task whose replacement is ready goes, whatever the rollout's state:
    // with start-first that is how the old one leaves.
    for slot in slots {
        if let Some((newest, older)) = slot.live.split_last() {
            if !older.is_empty() && is_ready(newest) {
                out.retire.extend(older.iter().copied());
            }
        }
    }
    let Some(rollout) = service.rollout.as_ref().filter(|r| r.state == RolloutState::Rolling) else {
        return out;
    };
    let config = rollout.config(&service.spec);
    let mut comparison = SpecComparison::new(service);
    let mut candidates = Vec::new();
    let mut in_flight = 0usize;
    let mut last_ready_ms = 0i64;
    let mut new_failures: Vec<(&Task, String)> = Vec::new();

    for slot in slots {
        for task in &slot.all {
            let earlier = task.created_at_ms < rollout.started_at_ms;
            if earlier || rollout.failed_tasks.contains(&task.id) || comparison.outdated(task) {
                continue;
            }
            if let Some(reason) = failure_of(task, config.monitor_ms) {
                new_failures.push((task, reason));
            }
        }
        let tried = slot.all.iter().any(|t| rollout.failed_tasks.contains(&t.id));
        let Some(head) = slot.live.last() else {
            // Stop-first: the old task is on its way down, or just down and
            // about to be replaced (by the orchestrator's restart path).
            if slot.is_being_replaced() {
                in_flight += 1;
            }
            continue;
        };
        if comparison.outdated(head) {
            if !tried {
                candidates.push(*head);
            }
        } else if !is_ready(head) {
            in_flight += 1;
            if head.created_at_ms >= rollout.started_at_ms {
                match stuck_since(head, config.monitor_ms) {
                    Some(deadline) if deadline <= now_ms && !rollout.failed_tasks.contains(&head.id) => {
                        let reason = format!("task {} stuck in state {}", short(&head.id), head.state);
                        new_failures.push((head, reason));
                    }
                    Some(deadline) if deadline > now_ms => out.wake_at(deadline),
                    Some(_) => {}
                    None => {}
                }
            }
        } else if head.created_at_ms >= rollout.started_at_ms {
            last_ready_ms = last_ready_ms.max(head.ready_at_ms);
        }
    }

    for (task, _) in &new_failures {
        out.decisions.push(RolloutAction::TaskFailed { task_id: task.id.clone() });
    }
    let failures = rollout.failed_tasks.len() + new_failures.len();
    let allowed = (config.max_failure_ratio * slots.len() as f64).floor() as usize;
    if failures > allowed && !new_failures.is_empty() {
        let why = new_failures.iter().map(|(_, reason)| reason.as_str()).collect::<Vec<_>>().join("; ");
        match (config.failure_action, rollout.kind.is_rollback()) {
            (FailureAction::Continue, _) => {}
            (FailureAction::Rollback, false) if service.previous_spec.is_some() => {
                out.decisions.push(RolloutAction::Rollback { reason: format!("{why}; rolling back") });
                out.hold = true;
                return out;
            }
            _ => {
                out.decisions.push(RolloutAction::Pause { reason: format!("{why}; {} paused", rollout.kind) });
                return out;
            }
        }
    }

    if candidates.is_empty() && in_flight == 0 {
        let done_at = last_ready_ms.saturating_add(i64::try_from(config.monitor_ms).unwrap_or(i64::MAX));
        if now_ms >= done_at || last_ready_ms == 0 {
            let message = match (rollout.kind, failures) {
                // Keep why it rolled back: that is what the user needs to know.
                (RolloutKind::AutoRollback, _) => format!("rolled back after the update failed: {}", rollout.message),
                (_, 0) => format!("{} completed", rollout.kind),
                (_, n) => format!("{} completed with {n} failed task(s)", rollout.kind),
            };
            out.decisions.push(RolloutAction::Complete { message });
        } else {
            out.wake_at(done_at);
        }
        return out;
    }
    let budget = match config.parallelism as usize {
        0 => usize::MAX,
        n => n.saturating_sub(in_flight),
    };
    if budget == 0 || candidates.is_empty() {
        return out;
    }
    if config.delay_ms > 0 && last_ready_ms > 0 {
        let next_at = last_ready_ms.saturating_add(i64::try_from(config.delay_ms).unwrap_or(i64::MAX));
        if next_at > now_ms {
            out.wake_at(next_at);
            return out;
        }
    }
    candidates.sort_by(|a, b| (a.slot, &a.node_id).cmp(&(b.slot, &b.node_id)));
    candidates.truncate(budget);
    out.replace = candidates;
    out.stop_first = config.order == UpdateOrder::StopFirst;
    out
}

/// Why a task of the current spec counts as a failed update, if it does:
/// it failed before it ran `monitor_ms`.
fn failure_of(task: &Task, monitor_ms: u64) -> Option<String> {
    if !matches!(task.state, TaskState::Failed | TaskState::Rejected) {
        return None;
    }
    let ran_for = if task.started_at_ms > 0 { task.state_since_ms - task.started_at_ms } else { 0 };
    if ran_for > i64::try_from(monitor_ms).unwrap_or(i64::MAX) {
        return None;
    }
    let detail = match (&task.exit_code, task.message.is_empty()) {
        (_, false) => task.message.clone(),
        (Some(code), true) => format!("exited with code {code}"),
        (None, true) => task.state.to_string(),
    };
    Some(format!("task {} {}: {detail}", short(&task.id), task.state))
}

/// When a live, not-ready task counts as stuck.
fn stuck_since(task: &Task, monitor_ms: u64) -> Option<i64> {
    if task.state < TaskState::Running {
        let monitor = i64::try_from(monitor_ms).unwrap_or(i64::MAX);
        return Some(task.created_at_ms.saturating_add(TASK_START_DEADLINE_MS.max(monitor)));
    }
    if task.state == TaskState::Running {
        return Some(task.started_at_ms.saturating_add(health_deadline_ms(&task.spec, monitor_ms)));
    }
    None
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Reads a rollout's progress off the slots.
pub fn progress(service: &Service, slots: &[SlotTasks<'_>]) -> RolloutProgress {
    let mut comparison = SpecComparison::new(service);
    let mut out = RolloutProgress { slots: slots.len() as u32, ..Default::default() };
    for slot in slots {
        let Some(head) = slot.live.last() else { continue };
        if comparison.outdated(head) {
            continue;
        }
        if is_ready(head) {
            out.updated += 1;
        } else {
            out.in_flight += 1;
        }
    }
    out.failed = service.rollout.as_ref().map_or(0, |r| r.failed_tasks.len() as u32);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_world::{replicated, World};
    use crate::{Command, Health, HealthCheck, TaskState};

    const MONITOR_MS: u64 = 1_000;

    /// A world with `replicas` running tasks of `web` on one node.
    fn running(replicas: u32, edit: impl FnOnce(&mut ServiceSpec)) -> (World, String) {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut spec = replicated("web", replicas);
        spec.update.monitor_ms = MONITOR_MS;
        spec.rollback.monitor_ms = MONITOR_MS;
        edit(&mut spec);
        w.service(spec);
        w.reconcile();
        w.run_all_on(&n);
        (w, n)
    }

    fn update_image(w: &mut World, image: &str) {
        let service = w.service_of("web").clone();
        let mut spec = service.spec.clone();
        spec.image = image.into();
        w.apply(Command::UpdateService { name: "web".into(), spec, expected_version: service.version });
    }

    fn live_images(w: &World) -> Vec<String> {
        let mut images: Vec<String> = w.live().iter().map(|t| t.spec.image.clone()).collect();
        images.sort();
        images
    }

    fn rollout(w: &World) -> Rollout {
        w.service_of("web").rollout.clone().expect("a rollout")
    }

    /// Counts running tasks the way a watcher sees them.
    fn running_count(w: &World) -> usize {
        w.state.tasks().filter(|t| t.state == TaskState::Running).count()
    }

    #[test]
    fn stop_first_replaces_one_slot_at_a_time_and_waits_for_health() {
        let (mut w, n) = running(3, |s| s.health = Some(HealthCheck::new("true")));
        for id in w.live().iter().map(|t| t.id.clone()).collect::<Vec<_>>() {
            w.report_health(&id, TaskState::Running, Health::Healthy);
        }
        update_image(&mut w, "busybox:2");
        let mut floor = usize::MAX;
        for round in 0..3 {
            let plan = w.reconcile().plan;
            assert_eq!((plan.create.len(), plan.set_desired.len()), (0, 1), "round {round}: the old task stops first");
            let old = plan.set_desired[0].0.clone();
            w.report_health(&old, TaskState::Shutdown, Health::Healthy);
            floor = floor.min(running_count(&w));
            assert_eq!(w.reconcile().plan.create.len(), 1, "round {round}: its replacement comes once it is down");
            let new = w.start_all_on(&n);
            floor = floor.min(running_count(&w));
            w.report_health(&new[0], TaskState::Running, Health::Starting);
            assert!(w.reconcile().plan.create.is_empty(), "round {round}: running but not healthy yet");
            w.report_health(&new[0], TaskState::Running, Health::Healthy);
        }
        assert_eq!(floor, 2, "never fewer than N-1 running");
        assert_eq!(live_images(&w), vec!["busybox:2"; 3]);
        assert_eq!(rollout(&w).state, RolloutState::Rolling, "watched for the monitor period first");
        w.now += MONITOR_MS as i64;
        w.reconcile();
        let done = rollout(&w);
        assert_eq!((done.state, done.message.as_str()), (RolloutState::Completed, "update completed"));
    }

    #[test]
    fn start_first_keeps_every_old_task_until_its_replacement_is_ready() {
        let (mut w, n) = running(3, |s| s.update.order = UpdateOrder::StartFirst);
        update_image(&mut w, "busybox:2");
        for round in 0..10 {
            let plan = w.reconcile().plan;
            if plan.is_empty() {
                break;
            }
            assert!(plan.create.len() <= 1, "round {round}: parallelism 1");
            for (old, _) in &plan.set_desired {
                assert_eq!(w.state.task(old).map(|t| t.spec.image.as_str()), Some("busybox"));
                w.report_health(old, TaskState::Shutdown, Health::None);
                assert!(running_count(&w) >= 3, "round {round}: an old task left before its replacement ran");
            }
            for new in w.start_all_on(&n) {
                w.report_health(&new, TaskState::Running, Health::None);
            }
        }
        assert_eq!(live_images(&w), vec!["busybox:2"; 3]);
        assert_eq!(running_count(&w), 3);
    }

    #[test]
    fn a_failing_new_version_pauses_the_rollout_with_the_reason() {
        let (mut w, n) = running(3, |_| {});
        update_image(&mut w, "broken");
        w.reconcile_through_stops();
        let new = w.start_all_on(&n);
        w.report(&n, &new[0], TaskState::Failed, Some(3));
        w.reconcile();
        let paused = rollout(&w);
        assert_eq!(paused.state, RolloutState::Paused);
        assert!(paused.message.contains("exited with code 3"), "{}", paused.message);
        assert_eq!(paused.failed_tasks.len(), 1);
        let plan = w.reconcile().plan;
        assert!(plan.set_desired.is_empty(), "no further slot is touched while paused");
        assert_eq!(live_images(&w).iter().filter(|i| *i == "busybox").count(), 2);
    }

    #[test]
    fn with_failure_action_rollback_the_service_returns_to_its_previous_spec() {
        let (mut w, n) = running(3, |s| s.update.failure_action = FailureAction::Rollback);
        update_image(&mut w, "broken");
        w.reconcile_through_stops();
        let new = w.start_all_on(&n);
        w.report(&n, &new[0], TaskState::Rejected, None);
        w.reconcile();
        let service = w.service_of("web").clone();
        assert_eq!(service.spec.image, "busybox", "the spec rolled back");
        assert_eq!(service.previous_spec.map(|s| s.image).as_deref(), Some("broken"));
        let back = rollout(&w);
        assert_eq!((back.kind, back.state), (RolloutKind::AutoRollback, RolloutState::Rolling));
        assert!(back.message.contains("rolling back"), "{}", back.message);
        // The failed slot gets the old spec back; the others never changed.
        for _ in 0..3 {
            w.reconcile();
            w.run_all_on(&n);
        }
        assert_eq!(live_images(&w), vec!["busybox"; 3]);
        w.now += MONITOR_MS as i64;
        w.reconcile();
        assert_eq!(rollout(&w).state, RolloutState::Completed);
    }

    #[test]
    fn a_task_stuck_before_running_counts_as_a_failure_at_its_deadline() {
        let (mut w, n) = running(2, |_| {});
        update_image(&mut w, "slow");
        w.reconcile_through_stops();
        w.start_all_on(&n);
        let waiting = w.reconcile();
        assert_eq!(rollout(&w).state, RolloutState::Rolling);
        let deadline = waiting.wake_at_ms.expect("the orchestrator wakes at the deadline");
        assert_eq!(deadline, 1_000 + TASK_START_DEADLINE_MS);
        w.now = deadline;
        w.reconcile();
        let paused = rollout(&w);
        assert_eq!(paused.state, RolloutState::Paused);
        assert!(paused.message.contains("stuck in state starting"), "{}", paused.message);
    }

    #[test]
    fn max_failure_ratio_tolerates_some_failures() {
        let (mut w, n) = running(4, |s| {
            s.update.max_failure_ratio = 0.25;
            s.update.parallelism = 0;
        });
        update_image(&mut w, "flaky");
        w.reconcile_through_stops();
        let new = w.start_all_on(&n);
        w.report(&n, &new[0], TaskState::Failed, Some(1));
        w.reconcile();
        assert_eq!(rollout(&w).state, RolloutState::Rolling, "1 of 4 is within 25%");
        w.report(&n, &new[1], TaskState::Failed, Some(1));
        w.reconcile();
        assert_eq!(rollout(&w).state, RolloutState::Paused, "2 of 4 is not");
    }

    #[test]
    fn redeploy_replaces_every_task_once_with_the_same_spec() {
        let (mut w, n) = running(3, |s| s.update.parallelism = 2);
        let before: Vec<String> = w.live().iter().map(|t| t.id.clone()).collect();
        w.apply(Command::RedeployService { name: "web".into() });
        let mut created = 0;
        for _ in 0..4 {
            created += w.reconcile_through_stops().create.len();
            w.run_all_on(&n);
        }
        assert_eq!(created, 3, "each slot once");
        assert!(w.live().iter().all(|t| !before.contains(&t.id)));
        assert_eq!(live_images(&w), vec!["busybox"; 3]);
    }

    #[test]
    fn the_next_batch_waits_for_the_delay() {
        let (mut w, n) = running(2, |s| s.update.delay_ms = 500);
        update_image(&mut w, "busybox:2");
        w.reconcile_through_stops();
        w.run_all_on(&n);
        let waiting = w.reconcile();
        assert!(waiting.plan.create.is_empty());
        assert_eq!(waiting.wake_at_ms, Some(w.now + 500));
        w.now += 500;
        assert_eq!(w.reconcile_through_stops().create.len(), 1);
    }

    #[test]
    fn decisions_depend_only_on_the_replicated_state() {
        // What a new leader does: decide from the same state, get the same plan.
        let (mut w, n) = running(3, |_| {});
        update_image(&mut w, "busybox:2");
        w.reconcile_through_stops();
        w.run_all_on(&n);
        let strip = |r: crate::orchestrator::Reconciliation| -> Vec<(u32, String)> {
            r.plan.create.iter().map(|t| (t.slot, t.spec.image.clone())).collect()
        };
        let first = crate::orchestrator::reconcile(&w.state, w.now, &mut || "a".into());
        let second = crate::orchestrator::reconcile(&w.state.clone(), w.now, &mut || "b".into());
        assert_eq!(first.plan.set_desired, second.plan.set_desired);
        assert_eq!(strip(first), strip(second));
    }

    #[test]
    fn a_user_rollback_swaps_specs_and_keeps_the_scale() {
        let (mut w, _) = running(2, |_| {});
        let refused = w.state.check(&Command::RollbackService { name: "web".into() });
        assert!(refused.is_err(), "nothing to roll back to yet");
        update_image(&mut w, "busybox:2");
        w.apply(Command::ScaleService { name: "web".into(), replicas: 4 });
        w.apply(Command::RollbackService { name: "web".into() });
        let service = w.service_of("web");
        assert_eq!(service.spec.image, "busybox");
        assert_eq!(service.spec.replicas(), Some(4));
        assert_eq!(rollout(&w).kind, RolloutKind::Rollback);
    }

    #[test]
    fn an_image_change_redeploys_autoredeploy_services_once_per_image_id() {
        let (mut w, _) = running(1, |s| s.autoredeploy = true);
        let changed = |id: &str| Command::ImageChanged {
            node_id: "id-n1".into(),
            image: "busybox:latest".into(),
            image_id: id.into(),
        };
        w.apply(changed("sha256:aaa"));
        assert_eq!(w.service_of("web").spec.force_redeploy, 1);
        w.apply(changed("sha256:aaa"));
        assert_eq!(w.service_of("web").spec.force_redeploy, 1, "a second node seeing the same image changes nothing");
        w.apply(changed("sha256:bbb"));
        assert_eq!(w.service_of("web").spec.force_redeploy, 2);
    }

    #[test]
    fn sequential_deployment_starts_one_task_after_another() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut spec = replicated("web", 3);
        spec.sequential = true;
        w.service(spec);
        for expected_live in 1..=3 {
            assert_eq!(w.reconcile().plan.create.len(), 1);
            assert!(w.reconcile().plan.create.is_empty(), "waits for the previous task");
            w.run_all_on(&n);
            assert_eq!(w.live().len(), expected_live);
        }
    }

    #[test]
    fn depends_on_healthy_holds_a_service_until_its_dependency_is_healthy() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut store = replicated("store", 1);
        store.health = Some(HealthCheck::new("true"));
        w.service(store);
        let mut web = replicated("web", 1);
        web.depends_on
            .push(crate::Dependency { service: "store".into(), condition: crate::DependencyCondition::Healthy });
        w.service(web);
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.iter().map(|t| t.service_name.as_str()).collect::<Vec<_>>(), vec!["store"]);
        w.run_all_on(&n);
        assert!(w.reconcile().plan.create.is_empty(), "store runs but is not healthy yet");
        let store_task = w.live()[0].id.clone();
        w.report_health(&store_task, TaskState::Running, Health::Healthy);
        assert_eq!(w.reconcile().plan.create.len(), 1);
    }
}
