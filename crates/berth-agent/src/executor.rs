//! Carries out the node's assignments on the container runtime and turns
//! what happens to containers into task status reports.
//!
//! The executor owns no decisions: it starts what is assigned to run, stops
//! what is assigned to stop, removes containers no task claims any more,
//! and reports. It learns of exits and health changes from the runtime's
//! event stream, never by polling. After a restart it adopts the containers
//! already labelled with its node instead of starting duplicates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_core::{Autodestroy, DesiredState, Endpoint, Health, Task, TaskState};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::runtime::{
    ContainerInfo, ContainerSpec, DiscoveryHost, RegistryLogin, Runtime, RuntimeError, RuntimeEvent, SecretFile,
};

/// How long a stopping container gets before it is killed.
pub const STOP_GRACE_MS: u64 = 3_000;
/// How long a load-balanced task keeps running after it was told to stop,
/// so every node's proxy (following the same change) takes it out of its
/// routes first and no request is sent to a container on its way down.
pub const DRAIN_MS: u64 = 300;

/// What the leader sends beside a task for its start only, and the agent
/// never stores: the content of its secrets, registry credentials, and the
/// names its container resolves through the node proxy.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub secrets: Vec<SecretFile>,
    pub registry: Option<RegistryLogin>,
    pub discovery: Vec<DiscoveryHost>,
}

/// What the agent tells the leader about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub task_id: String,
    pub state: TaskState,
    pub health: Health,
    pub container_id: String,
    pub exit_code: Option<i64>,
    pub message: String,
    /// Published container ports, once running.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default)]
struct Tracked {
    container_id: Option<String>,
    /// A start or stop is in flight; don't issue another.
    busy: bool,
    /// berth asked it to stop, so an exit is a shutdown, not a failure.
    stopping: bool,
    /// The newest report for this task.
    last: Option<StatusReport>,
    /// The leader's view of it.
    assignment: Option<Task>,
}

struct Inner {
    tasks: HashMap<String, Tracked>,
    /// Reports not yet sent to the leader.
    outbox: Vec<StatusReport>,
}

/// Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct Executor {
    runtime: Arc<dyn Runtime>,
    node_id: String,
    inner: Arc<Mutex<Inner>>,
    outbox_ready: Arc<Notify>,
}

impl Executor {
    /// Adopts the node's existing containers and starts following the
    /// runtime's events until `shutdown`.
    pub async fn start(
        runtime: Arc<dyn Runtime>,
        node_id: String,
        shutdown: CancellationToken,
    ) -> Result<Executor, RuntimeError> {
        // Subscribe before listing, so nothing that happens in between is missed.
        let events = runtime.events(&node_id);
        let existing = runtime.list(&node_id).await?;
        let executor = Executor {
            runtime,
            node_id: node_id.clone(),
            inner: Arc::new(Mutex::new(Inner { tasks: HashMap::new(), outbox: Vec::new() })),
            outbox_ready: Arc::new(Notify::new()),
        };
        info!(node = %node_id, containers = existing.len(), "adopting existing containers");
        executor.adopt(existing);
        let follower = executor.clone();
        tokio::spawn(
            async move {
                let mut events = events;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        event = events.next() => match event {
                            Some(event) => follower.on_event(event).await,
                            None => return,
                        },
                    }
                }
            }
            .instrument(info_span!("runtime-events", node = %node_id)),
        );
        Ok(executor)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn adopt(&self, containers: Vec<ContainerInfo>) {
        let mut inner = self.inner.lock();
        for container in containers {
            let state = if container.running {
                TaskState::Running
            } else if container.exit_code == Some(0) {
                TaskState::Complete
            } else {
                TaskState::Failed
            };
            let report = StatusReport {
                task_id: container.task_id.clone(),
                state,
                health: container.health,
                container_id: container.container_id.clone(),
                exit_code: container.exit_code,
                message: exit_message(state, container.exit_code),
                endpoints: Vec::new(),
            };
            let tracked = inner.tasks.entry(container.task_id).or_default();
            tracked.container_id = Some(container.container_id);
            tracked.last = Some(report);
        }
    }

    /// Takes every report not yet sent.
    pub fn drain_outbox(&self) -> Vec<StatusReport> {
        std::mem::take(&mut self.inner.lock().outbox)
    }

    /// Resolves when there are reports to send.
    pub async fn outbox_ready(&self) {
        self.outbox_ready.notified().await;
    }

    /// The newest report of every task this node knows, for the leader
    /// after a reconnect.
    pub fn full_state(&self) -> Vec<StatusReport> {
        self.inner.lock().tasks.values().filter_map(|t| t.last.clone()).collect()
    }

    fn report(&self, report: StatusReport) {
        {
            let mut inner = self.inner.lock();
            let tracked = inner.tasks.entry(report.task_id.clone()).or_default();
            tracked.last = Some(report.clone());
            inner.outbox.push(report);
        }
        self.outbox_ready.notify_one();
    }

    /// Brings the node in line with the leader's full list of its tasks.
    pub fn apply(&self, tasks: Vec<Task>) {
        self.apply_assigned(tasks.into_iter().map(|task| (task, Delivered::default())).collect());
    }

    /// [`Executor::apply`], with what the leader delivers beside each task
    /// (its secrets, registry credentials), used when the task starts.
    pub fn apply_assigned(&self, tasks: Vec<(Task, Delivered)>) {
        let mut delivered: HashMap<String, Delivered> = HashMap::new();
        let mut wanted: BTreeMap<String, Task> = BTreeMap::new();
        for (task, extras) in tasks {
            delivered.insert(task.id.clone(), extras);
            wanted.insert(task.id.clone(), task);
        }
        let mut to_start = Vec::new();
        let mut to_stop = Vec::new();
        let mut to_remove = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (task_id, task) in &wanted {
                let tracked = inner.tasks.entry(task_id.clone()).or_default();
                tracked.assignment = Some(task.clone());
                if tracked.busy {
                    continue;
                }
                let locally_ended = tracked.last.as_ref().is_some_and(|r| r.state.is_terminal());
                let should_run = task.desired == DesiredState::Running && !task.state.is_terminal();
                match (&tracked.container_id, should_run) {
                    (None, true) if !locally_ended => {
                        tracked.busy = true;
                        to_start.push((task.clone(), delivered.remove(task_id).unwrap_or_default()));
                    }
                    (Some(_), true) => {
                        // Adopted after a restart, or already reported: make
                        // sure the leader has heard the latest.
                        if let Some(last) = tracked.last.clone() {
                            if last.state > task.state || last.health != task.health {
                                inner.outbox.push(last);
                            }
                        }
                    }
                    (Some(container), false) => {
                        let removing =
                            task.desired == DesiredState::Remove || autodestroys(task, tracked.last.as_ref());
                        let running = tracked.last.as_ref().is_none_or(|r| !r.state.is_terminal());
                        if running {
                            tracked.busy = true;
                            tracked.stopping = true;
                            // Only a task that ran can have taken traffic.
                            let drain = task.spec.is_load_balanced()
                                && tracked.last.as_ref().is_some_and(|r| r.state == TaskState::Running);
                            to_stop.push((task.id.clone(), container.clone(), removing, drain));
                        } else if removing {
                            tracked.busy = true;
                            to_remove.push((task.id.clone(), container.clone()));
                        }
                    }
                    (None, _) => {}
                }
            }
            // Containers no task claims any more are stale copies: remove them.
            let stale: Vec<String> = inner.tasks.keys().filter(|id| !wanted.contains_key(*id)).cloned().collect();
            for task_id in stale {
                if let Some(tracked) = inner.tasks.remove(&task_id) {
                    if let Some(container) = tracked.container_id {
                        to_remove.push((task_id, container));
                    }
                }
            }
            if !inner.outbox.is_empty() {
                self.outbox_ready.notify_one();
            }
        }
        for (task, extras) in to_start {
            let executor = self.clone();
            tokio::spawn(async move { executor.start_task(task, extras).await }.instrument(tracing::Span::current()));
        }
        for (task_id, container, remove, drain) in to_stop {
            let executor = self.clone();
            tokio::spawn(async move {
                if drain {
                    tokio::time::sleep(Duration::from_millis(DRAIN_MS)).await;
                }
                executor.stop_task(task_id, container, remove).await
            });
        }
        for (task_id, container) in to_remove {
            let executor = self.clone();
            tokio::spawn(async move { executor.remove_container(task_id, container).await });
        }
    }

    async fn start_task(&self, task: Task, extras: Delivered) {
        let span = info_span!("task", task = %task.id, service = %task.service_name, slot = task.slot);
        self.start_task_in_span(task, extras).instrument(span).await
    }

    async fn start_task_in_span(&self, task: Task, extras: Delivered) {
        let mut spec = ContainerSpec::from_task(&task, &self.node_id);
        spec.secrets = extras.secrets;
        spec.registry = extras.registry;
        spec.discovery = extras.discovery;
        let mut report = StatusReport {
            task_id: task.id.clone(),
            state: TaskState::Starting,
            health: Health::None,
            container_id: String::new(),
            exit_code: None,
            message: String::new(),
            endpoints: Vec::new(),
        };
        self.report(report.clone());
        let result = self.runtime.create_and_start(&spec).await;
        match result {
            Ok(container_id) => {
                debug!(container = %container_id, "task started");
                report.state = TaskState::Running;
                report.health = if task.spec.health.is_some() { Health::Starting } else { Health::None };
                report.container_id = container_id.clone();
                if !spec.proxied_ports.is_empty() {
                    match self.runtime.endpoints(&container_id, &spec.proxied_ports).await {
                        Ok(endpoints) => report.endpoints = endpoints,
                        Err(error) => {
                            warn!(%error, "cannot read the task's published ports; proxies will not reach it")
                        }
                    }
                }
                let (already_ended, still_wanted, remove) = {
                    let mut inner = self.inner.lock();
                    let tracked = inner.tasks.entry(task.id.clone()).or_default();
                    tracked.container_id = Some(container_id.clone());
                    tracked.busy = false;
                    // An exit may have been reported while the start call returned.
                    let already_ended = tracked.last.as_ref().is_some_and(|r| r.state.is_terminal());
                    // Assignments that arrived during the start were skipped: if
                    // the task is no longer meant to run (stopped, orphaned by a
                    // node-down, removed), stop what was just started.
                    let still_wanted = tracked
                        .assignment
                        .as_ref()
                        .is_some_and(|t| t.desired == DesiredState::Running && !t.state.is_terminal());
                    let remove = tracked.assignment.as_ref().is_none_or(|t| t.desired == DesiredState::Remove);
                    if !still_wanted {
                        tracked.busy = true;
                        tracked.stopping = true;
                    }
                    (already_ended, still_wanted, remove)
                };
                if !already_ended {
                    self.report(report);
                }
                if !still_wanted {
                    Box::pin(self.stop_task(task.id.clone(), container_id, remove)).await;
                }
            }
            Err(error) => {
                warn!(%error, "task could not start");
                report.state = match error {
                    RuntimeError::ImageNotFound { .. } | RuntimeError::PullFailed { .. } => TaskState::Rejected,
                    _ => TaskState::Failed,
                };
                report.message = error.to_string();
                if let Some(tracked) = self.inner.lock().tasks.get_mut(&task.id) {
                    tracked.busy = false;
                }
                self.report(report);
            }
        }
    }

    async fn stop_task(&self, task_id: String, container_id: String, remove: bool) {
        if let Err(error) = self.runtime.stop(&container_id, Duration::from_millis(STOP_GRACE_MS)).await {
            if !error.is_not_found() {
                warn!(task = %task_id, %error, "could not stop container");
            }
        }
        let report = StatusReport {
            task_id: task_id.clone(),
            state: TaskState::Shutdown,
            health: Health::None,
            container_id: container_id.clone(),
            exit_code: None,
            message: "stopped by berth".into(),
            endpoints: Vec::new(),
        };
        let first_terminal = self
            .inner
            .lock()
            .tasks
            .get(&task_id)
            .is_none_or(|t| t.last.as_ref().is_none_or(|r| !r.state.is_terminal()));
        if first_terminal {
            self.report(report);
        }
        if remove {
            self.remove_container(task_id, container_id).await;
        } else if let Some(tracked) = self.inner.lock().tasks.get_mut(&task_id) {
            tracked.busy = false;
        }
    }

    async fn remove_container(&self, task_id: String, container_id: String) {
        if let Err(error) = self.runtime.remove(&container_id).await {
            if !error.is_not_found() {
                warn!(task = %task_id, %error, "could not remove container");
            }
        }
        let mut inner = self.inner.lock();
        if let Some(tracked) = inner.tasks.get_mut(&task_id) {
            tracked.container_id = None;
            tracked.busy = false;
        }
    }

    async fn on_event(&self, event: RuntimeEvent) {
        match event {
            RuntimeEvent::Died { task_id, container_id, exit_code } => {
                let (stopping, assignment, known) = {
                    let inner = self.inner.lock();
                    match inner.tasks.get(&task_id) {
                        Some(t) => (t.stopping, t.assignment.clone(), true),
                        None => (false, None, false),
                    }
                };
                if !known {
                    return;
                }
                // Told at once, so the engine's teardown of the container
                // overlaps the leader's decision about a replacement; the
                // replacement's start waits for the teardown in the runtime.
                let runtime = self.runtime.clone();
                let dead = container_id.clone();
                tokio::spawn(async move { runtime.wait_down(&dead).await });
                let state = if stopping {
                    TaskState::Shutdown
                } else if exit_code == Some(0) {
                    TaskState::Complete
                } else {
                    TaskState::Failed
                };
                let report = StatusReport {
                    task_id: task_id.clone(),
                    state,
                    health: Health::None,
                    container_id: container_id.clone(),
                    exit_code,
                    message: if stopping { "stopped by berth".into() } else { exit_message(state, exit_code) },
                    endpoints: Vec::new(),
                };
                self.report(report.clone());
                if assignment.as_ref().is_some_and(|t| autodestroys(t, Some(&report))) {
                    self.remove_container(task_id, container_id).await;
                }
            }
            RuntimeEvent::HealthChanged { task_id, container_id, health } => {
                let last = self.inner.lock().tasks.get(&task_id).and_then(|t| t.last.clone());
                let Some(mut report) = last else { return };
                if report.state.is_terminal() {
                    return;
                }
                report.health = health;
                report.container_id = container_id.clone();
                if health == Health::Unhealthy {
                    // As Swarm does: an unhealthy task has failed and is replaced.
                    report.state = TaskState::Failed;
                    report.message = "health check failed".into();
                    self.report(report);
                    if let Some(tracked) = self.inner.lock().tasks.get_mut(&task_id) {
                        tracked.stopping = true;
                    }
                    let _ = self.runtime.stop(&container_id, Duration::from_millis(STOP_GRACE_MS)).await;
                } else {
                    self.report(report);
                }
            }
            RuntimeEvent::Started { .. } | RuntimeEvent::Removed { .. } => {}
            RuntimeEvent::StreamInterrupted { reason } => {
                warn!(%reason, "runtime event stream interrupted; re-reading containers");
                if let Ok(containers) = self.runtime.list(&self.node_id).await {
                    for container in containers.into_iter().filter(|c| !c.running) {
                        let event = RuntimeEvent::Died {
                            task_id: container.task_id,
                            container_id: container.container_id,
                            exit_code: container.exit_code,
                        };
                        Box::pin(self.on_event(event)).await;
                    }
                }
            }
        }
    }
}

/// Whether a finished task's container goes for good under its service's
/// autodestroy setting.
fn autodestroys(task: &Task, last: Option<&StatusReport>) -> bool {
    let Some(last) = last.filter(|r| r.state.is_terminal() && r.state != TaskState::Shutdown) else {
        return false;
    };
    match task.spec.autodestroy {
        Autodestroy::Off => false,
        Autodestroy::OnSuccess => last.state == TaskState::Complete,
        Autodestroy::Always => true,
    }
}

fn exit_message(state: TaskState, exit_code: Option<i64>) -> String {
    match (state, exit_code) {
        (TaskState::Failed, Some(code)) => format!("exited with code {code}"),
        (TaskState::Failed, None) => "exited".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::{ServiceSpec, Task};

    use super::*;
    use crate::runtime::MemoryRuntime;

    const NODE: &str = "node-1";
    const DEADLINE: Duration = Duration::from_secs(5);

    fn task(id: &str, image: &str) -> Task {
        Task {
            service_version: 1,
            node_id: Some(NODE.into()),
            state: TaskState::Assigned,
            ..Task::new(id, "svc", 1, ServiceSpec::new("web", image))
        }
    }

    async fn executor(runtime: Arc<MemoryRuntime>) -> Executor {
        Executor::start(runtime, NODE.into(), CancellationToken::new()).await.expect("executor starts")
    }

    /// Waits until the newest report for `task_id` is in `state`.
    async fn wait_for(exec: &Executor, task_id: &str, state: TaskState) -> StatusReport {
        let waiting = async {
            loop {
                let latest = exec.full_state().into_iter().find(|r| r.task_id == task_id && r.state == state);
                if let Some(report) = latest {
                    return report;
                }
                // Every report notifies; one that lands after the check
                // leaves a permit, so this cannot miss it.
                exec.outbox_ready().await;
            }
        };
        tokio::time::timeout(DEADLINE, waiting).await.expect("report in time")
    }

    /// Waits until the runtime announces that `task_id`'s container was removed.
    async fn wait_removed(events: &mut crate::runtime::RuntimeEventStream, task_id: &str) {
        let waiting = async {
            while let Some(event) = events.next().await {
                if matches!(&event, RuntimeEvent::Removed { task_id: t, .. } if t == task_id) {
                    return;
                }
            }
            panic!("the event stream ended");
        };
        tokio::time::timeout(DEADLINE, waiting).await.expect("container removed in time")
    }

    fn memory() -> Arc<MemoryRuntime> {
        let runtime = Arc::new(MemoryRuntime::new());
        runtime.add_image("busybox");
        runtime
    }

    #[tokio::test]
    async fn an_assigned_task_runs_and_its_exit_is_reported() {
        let runtime = memory();
        let exec = executor(runtime.clone()).await;
        exec.apply(vec![task("t1", "busybox")]);
        let running = wait_for(&exec, "t1", TaskState::Running).await;
        runtime.exit(&running.container_id, 2).expect("container exists");
        let failed = wait_for(&exec, "t1", TaskState::Failed).await;
        assert_eq!(failed.exit_code, Some(2));
        assert_eq!(failed.message, "exited with code 2");
    }

    #[tokio::test]
    async fn a_missing_image_rejects_the_task() {
        let exec = executor(memory()).await;
        exec.apply(vec![task("t1", "nope")]);
        let rejected = wait_for(&exec, "t1", TaskState::Rejected).await;
        assert!(rejected.message.contains("not found"), "{}", rejected.message);
    }

    #[tokio::test]
    async fn a_task_told_to_stop_is_shut_down_not_failed() {
        let runtime = memory();
        let exec = executor(runtime.clone()).await;
        let mut events = runtime.events(NODE);
        let mut t = task("t1", "busybox");
        exec.apply(vec![t.clone()]);
        wait_for(&exec, "t1", TaskState::Running).await;
        t.state = TaskState::Running;
        t.desired = DesiredState::Remove;
        exec.apply(vec![t]);
        wait_for(&exec, "t1", TaskState::Shutdown).await;
        wait_removed(&mut events, "t1").await;
        assert!(runtime.list(NODE).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_restarted_agent_adopts_running_containers_and_removes_stale_ones() {
        let runtime = memory();
        let first = executor(runtime.clone()).await;
        first.apply(vec![task("keep", "busybox"), task("stale", "busybox")]);
        let kept = wait_for(&first, "keep", TaskState::Running).await;
        wait_for(&first, "stale", TaskState::Running).await;

        // A new executor on the same node, as after an agent restart.
        let mut events = runtime.events(NODE);
        let second = executor(runtime.clone()).await;
        let mut keep = task("keep", "busybox");
        keep.state = TaskState::Running;
        second.apply(vec![keep]);
        wait_removed(&mut events, "stale").await;
        let left = runtime.list(NODE).await.expect("list");
        assert_eq!(left.len(), 1, "only the kept container is left: {left:?}");
        assert_eq!(left[0].container_id, kept.container_id, "the running container is adopted, not replaced");
        assert!(left[0].running);
    }
}
