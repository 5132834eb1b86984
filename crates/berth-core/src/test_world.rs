//! A small simulated cluster for the orchestrator's and rollouts' unit
//! tests: commands applied in order at a controllable clock, the
//! orchestrator run and its plan committed, and agents' reports made up.

use crate::orchestrator::{reconcile, Reconciliation};
use crate::{
    ClusterState, Command, Health, Outcome, Request, Resources, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus,
};

pub struct World {
    pub state: ClusterState,
    pub index: u64,
    pub now: i64,
    next_id: u32,
}

impl World {
    pub fn new() -> Self {
        World { state: ClusterState::default(), index: 0, now: 1_000, next_id: 0 }
    }

    pub fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        let request = Request { request_id: String::new(), issued_at_ms: self.now, command };
        self.state.apply(self.index, &request).0.expect("command applies")
    }

    pub fn node(&mut self, name: &str, tags: &[&str]) -> String {
        let command = Command::RegisterNode {
            id: format!("id-{name}"),
            name: name.into(),
            address: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            resources: Resources::default(),
            agent_version: String::new(),
        };
        match self.apply(command) {
            Outcome::Node(node) => node.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn service(&mut self, spec: ServiceSpec) {
        let id = format!("svc-{}", spec.name);
        self.apply(Command::CreateService { id, spec });
    }

    /// Runs the orchestrator and commits its plan; returns it.
    pub fn reconcile(&mut self) -> Reconciliation {
        let mut counter = self.next_id;
        let result = reconcile(&self.state, self.now, &mut || {
            counter += 1;
            format!("t{counter}")
        });
        self.next_id = counter;
        if !result.plan.is_empty() {
            self.apply(Command::ReconcileTasks(result.plan.clone()));
        }
        result
    }

    /// Places every new task on the given node and reports it running.
    pub fn run_all_on(&mut self, node: &str) {
        let new: Vec<String> = self
            .state
            .tasks()
            .filter(|t| t.state == TaskState::New && t.node_id.is_none())
            .map(|t| t.id.clone())
            .collect();
        let assignments = new.iter().map(|t| (t.clone(), node.to_string())).collect();
        self.apply(Command::AssignTasks { assignments, unplaceable: vec![] });
        let assigned: Vec<(String, String)> = self
            .state
            .tasks()
            .filter(|t| t.state == TaskState::Assigned || (t.state == TaskState::New && t.node_id.is_some()))
            .map(|t| (t.id.clone(), t.node_id.clone().unwrap_or_default()))
            .collect();
        for (task, node) in assigned {
            self.report(&node, &task, TaskState::Running, None);
        }
    }

    /// Runs the orchestrator; every task it stops is reported down at once
    /// and the orchestrator runs again (a stop-first step and its
    /// replacement). Returns both plans merged.
    pub fn reconcile_through_stops(&mut self) -> crate::TaskPlan {
        let first = self.reconcile().plan;
        let stopped: Vec<String> = first
            .set_desired
            .iter()
            .filter(|(_, d)| *d == crate::DesiredState::Shutdown)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stopped {
            if let Some(node) = self.state.task(id).and_then(|t| t.node_id.clone()) {
                self.report(&node, id, TaskState::Shutdown, None);
            }
        }
        let mut plan = first;
        if !stopped.is_empty() {
            let second = self.reconcile().plan;
            plan.create.extend(second.create);
            plan.set_desired.extend(second.set_desired);
            plan.rollouts.extend(second.rollouts);
        }
        plan
    }

    /// Places new tasks on `node` and reports them started, but not yet
    /// running, so a test can move each on by hand.
    pub fn start_all_on(&mut self, node: &str) -> Vec<String> {
        let new: Vec<(String, String)> = self
            .state
            .tasks()
            .filter(|t| t.state == TaskState::New)
            .map(|t| (t.id.clone(), t.node_id.clone().unwrap_or_else(|| node.to_string())))
            .collect();
        let assignments = new.iter().filter(|(t, _)| self.state.task(t).is_some_and(|t| t.node_id.is_none()));
        let assignments = assignments.map(|(t, n)| (t.clone(), n.clone())).collect();
        self.apply(Command::AssignTasks { assignments, unplaceable: vec![] });
        for (task, node) in &new {
            self.report(node, task, TaskState::Starting, None);
        }
        new.into_iter().map(|(t, _)| t).collect()
    }

    pub fn report_health(&mut self, task: &str, state: TaskState, health: Health) {
        let node = self.state.task(task).and_then(|t| t.node_id.clone()).expect("task is placed");
        let status = TaskStatus {
            task_id: task.into(),
            state,
            health,
            container_id: format!("c-{task}"),
            exit_code: None,
            message: String::new(),
            endpoints: Vec::new(),
        };
        self.apply(Command::ReportTaskStatus { node_id: node, statuses: vec![status] });
    }

    pub fn service_of(&self, name: &str) -> &crate::Service {
        self.state.service(name).expect("service exists")
    }

    pub fn report(&mut self, node: &str, task: &str, state: TaskState, exit_code: Option<i64>) {
        let status = TaskStatus {
            task_id: task.into(),
            state,
            health: Health::None,
            container_id: format!("c-{task}"),
            exit_code,
            message: String::new(),
            endpoints: Vec::new(),
        };
        self.apply(Command::ReportTaskStatus { node_id: node.into(), statuses: vec![status] });
    }

    pub fn live(&self) -> Vec<&Task> {
        self.state.tasks().filter(|t| t.is_live()).collect()
    }
}

pub fn replicated(name: &str, replicas: u32) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "busybox");
    spec.mode = ServiceMode::Replicated { replicas };
    spec
}
