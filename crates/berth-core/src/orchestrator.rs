//! The orchestrator's decisions, as a pure function of the state: which
//! tasks to create (replicas, every-node, restarts with back-off), which to
//! stop (scale-down, drained nodes, removed services) and which finished
//! records to forget. The leader runs it after every change and commits the
//! resulting [`TaskPlan`] as one Raft entry; placing new tasks on nodes is
//! the scheduler's job, not this one's.

use std::collections::{BTreeMap, BTreeSet};

use crate::rollout::{self, RolloutStep, SlotTasks};
use crate::{
    Autodestroy, ClusterState, DependencyCondition, DesiredState, Node, NodeStatus, RestartCondition, RolloutDecision,
    RolloutProgress, Service, ServiceMode, Task, TaskPlan, TaskState,
};

/// Finished tasks kept per slot for `service ps`, beyond the current one.
pub const MAX_TASK_HISTORY_PER_SLOT: usize = 3;
/// The second restart in a row waits this long; each further one doubles it.
pub const RESTART_BACKOFF_BASE_MS: i64 = 100;
pub const RESTART_BACKOFF_MAX_MS: i64 = 10_000;
/// A task that ran this long before stopping resets the back-off.
pub const RESTART_RESET_AFTER_MS: i64 = 10_000;

/// What to do now, and when to look again (a restart waiting on back-off).
#[derive(Debug, Default, PartialEq)]
pub struct Reconciliation {
    pub plan: TaskPlan,
    pub wake_at_ms: Option<i64>,
}

impl Reconciliation {
    fn wake_at(&mut self, at_ms: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |w| w.min(at_ms)));
    }
}

/// Compares every service with its tasks. `new_id` names new tasks.
pub fn reconcile(state: &ClusterState, now_ms: i64, new_id: &mut dyn FnMut() -> String) -> Reconciliation {
    let mut out = Reconciliation::default();
    for service in state.services() {
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                reconcile_replicated(state, service, replicas, now_ms, new_id, &mut out)
            }
            ServiceMode::EveryNode => reconcile_every_node(state, service, now_ms, new_id, &mut out),
        }
    }
    collect_garbage(state, &mut out);
    out
}

/// What the newest task of a slot says about the slot.
enum SlotFate {
    /// A task runs or will run there.
    Live,
    /// Its task was told to stop and is not down yet: a stop-first
    /// replacement waits for it. (A drained node's tasks are replaced at
    /// once, before they get here.)
    Stopping,
    /// Finished for good by its restart or autodestroy policy.
    Done,
    /// Needs a new task, not before `at_ms`, as restart number `attempt`.
    Replace { at_ms: i64, attempt: u32 },
    /// Retired by a scale-down; the slot number is free again.
    Retired,
}

fn slot_fate(service: &Service, latest: &Task, now_ms: i64) -> SlotFate {
    if latest.desired == DesiredState::Remove {
        return SlotFate::Retired;
    }
    if !latest.state.is_terminal() {
        return if latest.desired == DesiredState::Running { SlotFate::Live } else { SlotFate::Stopping };
    }
    if latest.desired == DesiredState::Shutdown || latest.state == TaskState::Orphaned {
        // Stopped by berth (drain) or lost with its node: not the task's
        // fault, so no back-off and no restart counted.
        return SlotFate::Replace { at_ms: now_ms, attempt: latest.attempt };
    }
    let spec = &latest.spec;
    let succeeded = latest.state == TaskState::Complete;
    let autodestroyed = match spec.autodestroy {
        Autodestroy::Off => false,
        Autodestroy::OnSuccess => succeeded,
        Autodestroy::Always => true,
    };
    let restart = match service.spec.restart.condition {
        RestartCondition::Always => true,
        RestartCondition::OnFailure => !succeeded,
        RestartCondition::Never => false,
    };
    if autodestroyed || !restart {
        return SlotFate::Done;
    }
    let ran_for = latest.state_since_ms - latest.started_at_ms;
    let attempt = if latest.started_at_ms > 0 && ran_for >= RESTART_RESET_AFTER_MS { 1 } else { latest.attempt + 1 };
    let max = service.spec.restart.max_attempts;
    if max > 0 && attempt > max {
        return SlotFate::Done;
    }
    SlotFate::Replace { at_ms: latest.state_since_ms + backoff_ms(attempt), attempt }
}

/// The first restart is immediate; then 100 ms, 200 ms, ... up to 10 s.
pub fn backoff_ms(attempt: u32) -> i64 {
    if attempt <= 1 {
        return 0;
    }
    let doublings = (attempt - 2).min(20);
    (RESTART_BACKOFF_BASE_MS << doublings).min(RESTART_BACKOFF_MAX_MS)
}

/// The task of a slot created last.
pub(crate) fn newest<'a>(tasks: &[&'a Task]) -> Option<&'a Task> {
    tasks.iter().copied().max_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)))
}

/// The task that speaks for a slot: its newest live task (a start-first
/// replacement that failed leaves the old one in charge), else its newest.
fn head<'a>(tasks: &[&'a Task], stopping: &BTreeSet<String>) -> Option<&'a Task> {
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| t.is_live() && !stopping.contains(&t.id)).collect();
    newest(&live).or_else(|| newest(tasks))
}

/// A slot as the rollout sees it.
fn slot_view<'a>(tasks: &[&'a Task], stopping: &BTreeSet<String>) -> SlotTasks<'a> {
    let mut live: Vec<&Task> = tasks.iter().copied().filter(|t| t.is_live() && !stopping.contains(&t.id)).collect();
    live.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    SlotTasks { live, all: tasks.to_vec() }
}

/// The slots of a service: replica numbers, or nodes for every-node.
fn slots_of<'a>(state: &'a ClusterState, service: &Service) -> BTreeMap<(u32, Option<&'a str>), Vec<&'a Task>> {
    let mut slots: BTreeMap<(u32, Option<&str>), Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        let node = if service.spec.mode == ServiceMode::EveryNode { task.node_id.as_deref() } else { None };
        if service.spec.mode == ServiceMode::EveryNode && node.is_none() {
            continue;
        }
        slots.entry((task.slot, node)).or_default().push(task);
    }
    slots
}

/// How far the service's rollout has come, read off its tasks.
pub fn progress(state: &ClusterState, service: &Service) -> RolloutProgress {
    let stopping = BTreeSet::new();
    let views: Vec<SlotTasks> = slots_of(state, service)
        .values()
        .filter(|tasks| newest(tasks).is_some_and(|t| t.desired != DesiredState::Remove))
        .map(|tasks| slot_view(tasks, &stopping))
        .collect();
    rollout::progress(service, &views)
}

/// Commits what the rollout decided; returns false when the service must
/// be left alone on this pass (its spec is about to change).
fn apply_rollout_step(
    service: &Service,
    step: RolloutStep<'_>,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Reconciliation,
) -> bool {
    for action in step.decisions {
        out.plan.rollouts.push(RolloutDecision {
            service_id: service.id.clone(),
            service_version: service.version,
            action,
        });
    }
    if let Some(at) = step.wake_at_ms {
        out.wake_at(at);
    }
    if step.hold {
        return false;
    }
    for old in step.retire {
        out.plan.set_desired.push((old.id.clone(), DesiredState::Shutdown));
    }
    for old in step.replace {
        if step.stop_first {
            // The replacement comes once the old task is down: never two
            // containers of the slot at once, as the user asked.
            out.plan.set_desired.push((old.id.clone(), DesiredState::Shutdown));
            continue;
        }
        // An every-node task is replaced on its node; a replica goes wherever
        // the scheduler finds room.
        let node = if service.spec.mode == ServiceMode::EveryNode { old.node_id.clone() } else { None };
        out.plan.create.push(new_task(service, old.slot, node, 0, new_id()));
    }
    true
}

/// Whether every dependency has reached the condition `depends_on` asks
/// for, so the service may start new tasks.
fn dependencies_met(state: &ClusterState, service: &Service) -> bool {
    service.spec.depends_on.iter().all(|dependency| {
        let Some(other) = state.service(&dependency.service) else { return true };
        let stopping = BTreeSet::new();
        let slots = slots_of(state, other);
        let heads: Vec<&Task> = slots.values().filter_map(|tasks| head(tasks, &stopping)).collect();
        let expected = other.spec.replicas().unwrap_or(1) as usize;
        heads.len() >= expected
            && heads.iter().all(|t| match dependency.condition {
                DependencyCondition::Started => t.state >= TaskState::Running,
                DependencyCondition::Healthy => rollout::is_ready(t),
                DependencyCondition::Completed => t.state == TaskState::Complete,
            })
    })
}

/// Sequential deployment: no new slot starts while another new task is
/// still on its way to ready.
fn sequential_budget(service: &Service, occupied: &[(u32, &Task, bool)], wanted: usize) -> usize {
    if !service.spec.sequential {
        return wanted;
    }
    let starting = occupied.iter().any(|(_, t, live)| *live && t.is_live() && !rollout::is_ready(t));
    usize::from(!starting).min(wanted)
}

fn new_task(service: &Service, slot: u32, node_id: Option<String>, attempt: u32, id: String) -> Task {
    Task {
        service_version: service.version,
        node_id,
        attempt,
        ..Task::new(id, service.id.clone(), slot, service.spec.clone())
    }
}

/// A node where running tasks must stop: drained, or gone.
fn must_leave(node: Option<&Node>) -> bool {
    node.is_none_or(|n| n.availability == crate::Availability::Drain)
}

fn reconcile_replicated(
    state: &ClusterState,
    service: &Service,
    replicas: u32,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Reconciliation,
) {
    let mut slots: BTreeMap<u32, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        slots.entry(task.slot).or_default().push(task);
    }
    // Live tasks on drained or removed nodes stop; their slot is replaced.
    let mut shutting_down = BTreeSet::new();
    for task in slots.values().flatten() {
        if task.is_live() && task.node_id.as_deref().is_some_and(|n| must_leave(state.node(n))) {
            shutting_down.insert(task.id.clone());
        }
    }
    let active: Vec<&Vec<&Task>> =
        slots.values().filter(|tasks| newest(tasks).is_some_and(|t| t.desired != DesiredState::Remove)).collect();
    let scaling_down = active.len() > replicas as usize;
    // Not while scaling down: a slot must not be retired and rolled at once.
    if !scaling_down {
        let views: Vec<SlotTasks> = active.iter().map(|tasks| slot_view(tasks, &shutting_down)).collect();
        let step = rollout::step(service, &views, now_ms);
        if !apply_rollout_step(service, step, new_id, out) {
            return;
        }
    }
    for id in &shutting_down {
        out.plan.set_desired.push((id.clone(), DesiredState::Shutdown));
    }

    let mut occupied: Vec<(u32, &Task, bool)> = Vec::new(); // (slot, head task, live)
    for (&slot, tasks) in &slots {
        let Some(latest) = head(tasks, &shutting_down) else { continue };
        let fate = if shutting_down.contains(&latest.id) {
            SlotFate::Replace { at_ms: now_ms, attempt: latest.attempt }
        } else {
            slot_fate(service, latest, now_ms)
        };
        match fate {
            SlotFate::Live | SlotFate::Stopping => occupied.push((slot, latest, true)),
            SlotFate::Done => occupied.push((slot, latest, false)),
            SlotFate::Retired => {}
            SlotFate::Replace { at_ms, attempt } => {
                occupied.push((slot, latest, true));
                if slot > replicas && occupied.len() as u32 > replicas {
                    continue; // about to be retired by the scale-down below
                }
                if at_ms <= now_ms {
                    out.plan.create.push(new_task(service, slot, None, attempt, new_id()));
                } else {
                    out.wake_at(at_ms);
                }
            }
        }
    }

    let wanted = replicas as usize;
    if occupied.len() > wanted {
        retire_extra_slots(state, &mut occupied, wanted, out);
    } else if occupied.len() < wanted && dependencies_met(state, service) {
        let taken: BTreeSet<u32> = occupied.iter().map(|(slot, _, _)| *slot).collect();
        let free = (1..).filter(|slot| !taken.contains(slot));
        let count = sequential_budget(service, &occupied, wanted - occupied.len());
        for slot in free.take(count) {
            out.plan.create.push(new_task(service, slot, None, 0, new_id()));
        }
    }
}

/// Scale-down: finished slots go first, then tasks not yet placed, then
/// running tasks from the most loaded nodes.
fn retire_extra_slots(
    state: &ClusterState,
    occupied: &mut [(u32, &Task, bool)],
    wanted: usize,
    out: &mut Reconciliation,
) {
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for node in state.nodes() {
        load.insert(node.id.as_str(), state.tasks_of_node(&node.id).filter(|t| t.is_live()).count());
    }
    let mut retire = occupied.len() - wanted;
    let mut candidates: Vec<&(u32, &Task, bool)> = occupied.iter().collect();
    while retire > 0 && !candidates.is_empty() {
        let rank = |(slot, task, live): &&(u32, &Task, bool)| {
            let node_load = task.node_id.as_deref().and_then(|n| load.get(n)).copied().unwrap_or(0);
            (!*live, task.node_id.is_none(), node_load, *slot)
        };
        let Some((index, _)) = candidates.iter().enumerate().max_by_key(|(_, c)| rank(c)) else { break };
        let (_, task, _) = candidates.swap_remove(index);
        for t in state.tasks_of_service(&task.service_id).filter(|t| t.slot == task.slot) {
            if t.desired != DesiredState::Remove {
                out.plan.set_desired.push((t.id.clone(), DesiredState::Remove));
            }
        }
        if let Some(n) = task.node_id.as_deref().and_then(|n| load.get_mut(n)) {
            *n = n.saturating_sub(1);
        }
        retire -= 1;
    }
}

fn reconcile_every_node(
    state: &ClusterState,
    service: &Service,
    now_ms: i64,
    new_id: &mut dyn FnMut() -> String,
    out: &mut Reconciliation,
) {
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        if let Some(node) = task.node_id.as_deref() {
            by_node.entry(node).or_default().push(task);
        }
    }
    let carries_tags = |node: &Node| service.spec.tags.iter().all(|t| node.tags.contains(t));
    let qualifies = |node_id: &str| state.node(node_id).is_some_and(|n| carries_tags(n) && n.accepts_tasks());
    // Tasks on nodes that no longer qualify stop.
    let mut leaving = BTreeSet::new();
    for (node_id, tasks) in &by_node {
        let stays = state.node(node_id).is_some_and(|n| carries_tags(n) && !must_leave(Some(n)));
        if !stays {
            leaving.extend(tasks.iter().filter(|t| t.is_live()).map(|t| t.id.clone()));
        }
    }
    // Rolling replaces a node's task on that same node, so only where new tasks may go.
    let views: Vec<SlotTasks> =
        by_node.iter().filter(|(node_id, _)| qualifies(node_id)).map(|(_, tasks)| slot_view(tasks, &leaving)).collect();
    let step = rollout::step(service, &views, now_ms);
    if !apply_rollout_step(service, step, new_id, out) {
        return;
    }
    for id in leaving {
        out.plan.set_desired.push((id, DesiredState::Shutdown));
    }
    let stopping = BTreeSet::new();
    for node in state.nodes() {
        if !carries_tags(node) || !node.accepts_tasks() {
            continue;
        }
        let tasks = by_node.get(node.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let fate = match head(tasks, &stopping) {
            None => SlotFate::Replace { at_ms: now_ms, attempt: 0 },
            Some(latest) => slot_fate(service, latest, now_ms),
        };
        match fate {
            SlotFate::Live | SlotFate::Stopping | SlotFate::Done => {}
            SlotFate::Retired => out.plan.create.push(new_task(service, 0, Some(node.id.clone()), 0, new_id())),
            SlotFate::Replace { at_ms, attempt } if at_ms <= now_ms => {
                out.plan.create.push(new_task(service, 0, Some(node.id.clone()), attempt, new_id()));
            }
            SlotFate::Replace { at_ms, .. } => out.wake_at(at_ms),
        }
    }
}

/// Forgets task records nobody needs: tasks of removed services, tasks told
/// to go whose container is gone (or whose node is), and old history.
fn collect_garbage(state: &ClusterState, out: &mut Reconciliation) {
    let mut per_slot: BTreeMap<(&str, u32, Option<&str>), Vec<&Task>> = BTreeMap::new();
    for task in state.tasks() {
        let service_exists = state.service_by_id(&task.service_id).is_some();
        let node_gone = match task.node_id.as_deref() {
            None => true,
            Some(node) => state.node(node).is_none_or(|n| n.status == NodeStatus::Down),
        };
        if !service_exists && task.desired != DesiredState::Remove {
            out.plan.set_desired.push((task.id.clone(), DesiredState::Remove));
            if node_gone {
                out.plan.delete.push(task.id.clone());
            }
            continue;
        }
        if task.desired == DesiredState::Remove && (task.state.is_terminal() || node_gone) {
            out.plan.delete.push(task.id.clone());
            continue;
        }
        if task.state.is_terminal() {
            let node_key = if task.slot == 0 { task.node_id.as_deref() } else { None };
            per_slot.entry((task.service_id.as_str(), task.slot, node_key)).or_default().push(task);
        }
    }
    for mut finished in per_slot.into_values() {
        if finished.len() <= MAX_TASK_HISTORY_PER_SLOT {
            continue;
        }
        finished.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        // Never forget the newest task of a slot: it tells the slot's fate.
        out.plan.delete.extend(finished.iter().skip(MAX_TASK_HISTORY_PER_SLOT).map(|t| t.id.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_world::{replicated, World};
    use crate::{Availability, Command, NodeStatusUpdate, RestartPolicy, ServiceSpec};

    #[test]
    fn creates_one_task_per_missing_replica_and_then_nothing() {
        let mut w = World::new();
        w.service(replicated("web", 3));
        let first = w.reconcile();
        assert_eq!(first.plan.create.len(), 3);
        let slots: BTreeSet<u32> = first.plan.create.iter().map(|t| t.slot).collect();
        assert_eq!(slots, BTreeSet::from([1, 2, 3]));
        assert!(w.reconcile().plan.is_empty(), "a converged service needs nothing");
    }

    #[test]
    fn a_failed_task_is_replaced_in_its_slot_with_back_off_after_the_first_retry() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        w.service(replicated("web", 1));
        w.reconcile();
        w.run_all_on(&n);
        let first = w.live()[0].id.clone();
        w.report(&n, &first, TaskState::Failed, Some(1));
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.len(), 1, "first restart is immediate");
        assert_eq!((plan.create[0].slot, plan.create[0].attempt), (1, 1));

        w.run_all_on(&n);
        let second = w.live()[0].id.clone();
        w.report(&n, &second, TaskState::Failed, Some(1));
        let later = w.reconcile();
        assert!(later.plan.create.is_empty(), "second restart waits");
        assert_eq!(later.wake_at_ms, Some(w.now + RESTART_BACKOFF_BASE_MS));
        w.now += RESTART_BACKOFF_BASE_MS;
        assert_eq!(w.reconcile().plan.create.len(), 1);
    }

    #[test]
    fn restart_policy_and_max_attempts_are_honoured() {
        let cases = [
            (RestartCondition::Never, TaskState::Failed, 0, false),
            (RestartCondition::OnFailure, TaskState::Complete, 0, false),
            (RestartCondition::OnFailure, TaskState::Failed, 0, true),
            (RestartCondition::Always, TaskState::Complete, 0, true),
            (RestartCondition::Always, TaskState::Failed, 1, true),
        ];
        for (condition, end, max_attempts, restarts) in cases {
            let mut w = World::new();
            let n = w.node("n1", &[]);
            let mut spec = replicated("job", 1);
            spec.restart = RestartPolicy { condition, max_attempts };
            w.service(spec);
            w.reconcile();
            w.run_all_on(&n);
            let task = w.live()[0].id.clone();
            w.report(&n, &task, end, Some(i64::from(end == TaskState::Failed)));
            let created = w.reconcile().plan.create.len();
            assert_eq!(created == 1, restarts, "{condition:?} after {end:?}");
        }
    }

    #[test]
    fn max_attempts_stops_restarting() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut spec = replicated("job", 1);
        spec.restart = RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 1 };
        w.service(spec);
        w.reconcile();
        for _ in 0..2 {
            w.run_all_on(&n);
            let task = w.live()[0].id.clone();
            w.report(&n, &task, TaskState::Failed, Some(1));
            w.now += RESTART_BACKOFF_MAX_MS;
            w.reconcile();
        }
        assert!(w.live().is_empty(), "one restart allowed, then the slot stays failed");
    }

    #[test]
    fn autodestroy_ends_the_slot_for_good() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut spec = replicated("job", 2);
        spec.autodestroy = Autodestroy::OnSuccess;
        w.service(spec);
        w.reconcile();
        w.run_all_on(&n);
        let tasks: Vec<String> = w.live().iter().map(|t| t.id.clone()).collect();
        w.report(&n, &tasks[0], TaskState::Complete, Some(0));
        w.report(&n, &tasks[1], TaskState::Failed, Some(3));
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.len(), 1, "only the failed one is replaced");
        assert_eq!(plan.create[0].slot, w.state.task(&tasks[1]).map(|t| t.slot).unwrap_or_default());
    }

    #[test]
    fn scale_down_retires_from_the_most_loaded_node_first() {
        let mut w = World::new();
        let a = w.node("a", &[]);
        let b = w.node("b", &[]);
        w.service(replicated("web", 3));
        w.reconcile();
        // Two tasks on a, one on b.
        let ids: Vec<String> = w.state.tasks().map(|t| t.id.clone()).collect();
        let assignments = vec![(ids[0].clone(), a.clone()), (ids[1].clone(), a.clone()), (ids[2].clone(), b.clone())];
        w.apply(Command::AssignTasks { assignments, unplaceable: vec![] });
        w.apply(Command::ScaleService { name: "web".into(), replicas: 2 });
        let plan = w.reconcile().plan;
        assert_eq!(plan.set_desired.len(), 1);
        let retired = w.state.task(&plan.set_desired[0].0).and_then(|t| t.node_id.clone());
        assert_eq!(retired, Some(a));
        assert_eq!(w.live().len(), 2);
        assert!(w.reconcile().plan.create.is_empty(), "retired slots are not refilled");
    }

    #[test]
    fn a_down_node_orphans_its_tasks_and_they_are_replaced() {
        let mut w = World::new();
        let a = w.node("a", &[]);
        w.service(replicated("web", 2));
        w.reconcile();
        w.run_all_on(&a);
        let update =
            NodeStatusUpdate { node_id: a.clone(), status: NodeStatus::Down, message: "missed heartbeats".into() };
        w.apply(Command::SetNodeStatus { updates: vec![update] });
        assert!(w.state.tasks().all(|t| t.state == TaskState::Orphaned));
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.len(), 2, "replaced at once, no back-off");
    }

    #[test]
    fn draining_a_node_moves_its_tasks() {
        let mut w = World::new();
        let a = w.node("a", &[]);
        w.service(replicated("web", 2));
        w.reconcile();
        w.run_all_on(&a);
        w.apply(Command::UpdateNode {
            id: a,
            availability: Some(Availability::Drain),
            tags_add: vec![],
            tags_rm: vec![],
        });
        let plan = w.reconcile().plan;
        assert_eq!(plan.set_desired.len(), 2);
        assert!(plan.set_desired.iter().all(|(_, d)| *d == DesiredState::Shutdown));
        assert_eq!(plan.create.len(), 2);
    }

    #[test]
    fn every_node_follows_nodes_and_their_tags() {
        let mut w = World::new();
        let a = w.node("a", &["ssd"]);
        w.node("b", &[]);
        let mut spec = ServiceSpec::new("agent", "busybox");
        spec.mode = ServiceMode::EveryNode;
        spec.strategy = crate::Strategy::EveryNode;
        spec.tags = vec!["ssd".into()];
        w.service(spec);
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].node_id.as_deref(), Some(a.as_str()));
        let c = w.node("c", &["ssd"]);
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.iter().map(|t| t.node_id.clone()).collect::<Vec<_>>(), vec![Some(c)]);
        w.apply(Command::UpdateNode { id: a, availability: None, tags_add: vec![], tags_rm: vec!["ssd".into()] });
        let plan = w.reconcile().plan;
        assert_eq!(plan.set_desired.len(), 1, "the task on the node that lost the tag stops");
    }

    #[test]
    fn removing_a_service_removes_its_tasks() {
        let mut w = World::new();
        let a = w.node("a", &[]);
        w.service(replicated("web", 2));
        w.reconcile();
        w.run_all_on(&a);
        w.apply(Command::RemoveService { name: "web".into() });
        let plan = w.reconcile().plan;
        assert_eq!(plan.set_desired.len(), 2);
        let ids: Vec<String> = w.state.tasks().map(|t| t.id.clone()).collect();
        for id in &ids {
            w.report(&a, id, TaskState::Shutdown, None);
        }
        w.reconcile();
        assert_eq!(w.state.tasks().count(), 0, "records go once the containers are down");
    }

    #[test]
    fn a_spec_change_replaces_tasks_a_few_slots_at_a_time() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        let mut spec = replicated("web", 3);
        spec.update.parallelism = 1;
        w.service(spec.clone());
        w.reconcile();
        w.run_all_on(&n);
        let version = w.state.service("web").map(|s| s.version).unwrap_or_default();
        spec.image = "busybox:2".into();
        w.apply(Command::UpdateService { name: "web".into(), spec, expected_version: version });
        let first = w.reconcile_through_stops();
        assert_eq!((first.create.len(), first.set_desired.len()), (1, 1), "one slot at a time");
        assert_eq!(first.create[0].spec.image, "busybox:2");
        assert!(w.reconcile().plan.is_empty(), "waits while the new task is not running");
        for _ in 0..2 {
            w.run_all_on(&n);
            assert_eq!(w.reconcile_through_stops().create.len(), 1);
        }
        w.run_all_on(&n);
        assert!(w.reconcile().plan.is_empty());
        let live: Vec<&Task> = w.live();
        assert_eq!(live.len(), 3);
        assert!(live.iter().all(|t| t.spec.image == "busybox:2"));
    }

    #[test]
    fn scaling_does_not_redeploy() {
        let mut w = World::new();
        let n = w.node("n1", &[]);
        w.service(replicated("web", 2));
        w.reconcile();
        w.run_all_on(&n);
        w.apply(Command::ScaleService { name: "web".into(), replicas: 3 });
        let plan = w.reconcile().plan;
        assert_eq!(plan.create.len(), 1);
        assert!(plan.set_desired.is_empty());
    }

    #[test]
    fn back_off_grows_and_caps() {
        assert_eq!(backoff_ms(1), 0);
        assert_eq!(backoff_ms(2), 100);
        assert_eq!(backoff_ms(3), 200);
        assert_eq!(backoff_ms(50), RESTART_BACKOFF_MAX_MS);
    }
}
