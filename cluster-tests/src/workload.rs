//! What the Docker tests deploy and how they look at it: service specs over
//! the test image, the live and running tasks of a service, counts per
//! node, and the check that the containers on the engine are exactly the
//! ones the cluster records.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::docker::{Container, Engine, TEST_IMAGE};
use crate::proto::{EnvVar, Node, ServiceSpec, Task};
use crate::{wait_until, AgentOpts, Cluster, ClusterOpts};

/// Managers of every Docker test cluster: enough to lose one.
pub const MANAGERS: usize = 3;

/// The local engine and a cluster of [`MANAGERS`] managers and `agents`
/// agents, or `None` (after saying why) when `test` is skipped because
/// there is no Docker Engine outside CI.
pub async fn docker_cluster(
    test: &str,
    agents: usize,
    opts: impl FnMut(usize) -> AgentOpts,
) -> Result<Option<(Engine, Cluster)>> {
    let Some(engine) = Engine::for_test(test).await? else {
        return Ok(None);
    };
    let mut cluster = Cluster::start(MANAGERS, ClusterOpts::default()).await?;
    cluster.start_agents(agents, opts).await?;
    Ok(Some((engine, cluster)))
}

/// `a1`, `a2`, ... for agent index 0, 1, ...
pub fn agent_name(i: usize) -> String {
    format!("a{}", i + 1)
}

/// `prefix-` and eight random hex digits: service names of concurrent and
/// earlier test runs never collide on the shared engine.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Runs until stopped and exits 0 at once on SIGTERM, so that stopping a
/// task does not wait out the agent's stop grace period (`sleep` as PID 1
/// would ignore SIGTERM).
pub fn sleeper_command() -> Vec<String> {
    ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"].map(String::from).to_vec()
}

/// busybox httpd serving the container's hostname behind the virtual host
/// `host`, stopping at once on SIGTERM.
pub fn hostname_web(name: &str, replicas: i64, host: &str) -> ServiceSpec {
    let script = "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www & \
                  trap 'kill $!; exit 0' TERM; wait";
    ServiceSpec {
        name: name.to_string(),
        image: TEST_IMAGE.to_string(),
        command: ["sh", "-c", script].map(String::from).to_vec(),
        replicas: Some(replicas),
        env: vec![EnvVar { name: "VIRTUAL_HOST".into(), value: host.into() }],
        ..ServiceSpec::default()
    }
}

/// A replicated service of `replicas` sleepers on the test image.
pub fn sleeper(name: &str, replicas: i64) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        image: TEST_IMAGE.to_string(),
        command: sleeper_command(),
        replicas: Some(replicas),
        ..ServiceSpec::default()
    }
}

/// States a task never leaves (`TaskState::is_terminal` in berth-core).
pub const TERMINAL_STATES: &[&str] = &["complete", "shutdown", "failed", "rejected", "orphaned"];

pub fn is_terminal(task: &Task) -> bool {
    TERMINAL_STATES.contains(&task.state.as_str())
}

/// Meant to run and not finished: what the orchestrator counts against the
/// replica count (`Task::is_live` in berth-core).
pub fn is_live(task: &Task) -> bool {
    task.desired_state == "running" && !is_terminal(task)
}

/// Meant to run and running.
pub fn is_running(task: &Task) -> bool {
    is_live(task) && task.state == "running"
}

pub fn live(tasks: &[Task]) -> Vec<&Task> {
    tasks.iter().filter(|t| is_live(t)).collect()
}

pub fn running(tasks: &[Task]) -> Vec<&Task> {
    tasks.iter().filter(|t| is_running(t)).collect()
}

/// How many of `tasks` each node has, by node name.
pub fn count_by_node<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts.entry(task.node_name.clone()).or_default() += 1;
    }
    counts
}

/// One line per task, for failure messages.
pub fn describe<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> String {
    let mut lines: Vec<String> = tasks
        .into_iter()
        .map(|t| {
            format!(
                "  slot {} task {} on {:?}: desired {} state {} container {:.12} exit {:?} {:?}",
                t.slot,
                short(&t.id),
                t.node_name,
                t.desired_state,
                t.state,
                t.container_id,
                t.exit_code,
                t.message
            )
        })
        .collect();
    lines.sort();
    if lines.is_empty() {
        return "  (no tasks)".to_string();
    }
    lines.join("\n")
}

/// One line per node, for failure messages.
pub fn describe_nodes(nodes: &[Node]) -> String {
    let lines: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "  {} id {} tags {:?} {} {} ({} tasks) {:?}",
                n.name, n.id, n.tags, n.status, n.availability, n.task_count, n.status_message
            )
        })
        .collect();
    lines.join("\n")
}

/// One line per container, for failure messages.
pub fn describe_containers(containers: &[Container]) -> String {
    if containers.is_empty() {
        return "  (no containers)".to_string();
    }
    let lines: Vec<String> = containers
        .iter()
        .map(|c| format!("  {} {:.12} {} task {} node {}", c.name, c.id, c.state, short(c.task_id()), c.node_id()))
        .collect();
    lines.join("\n")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// The running containers of the service with id `service_id` are exactly
/// one per task of `running` (same container id, task, node and slot), and
/// no other container of the service runs.
pub async fn check_containers_match(engine: &Engine, service_id: &str, running: &[&Task]) -> Result<Vec<Container>> {
    check_containers_match_except(engine, service_id, running, None).await
}

/// [`check_containers_match`], ignoring the containers of node `except`
/// (a node whose agent is dead, so that nobody stops them).
pub async fn check_containers_match_except(
    engine: &Engine,
    service_id: &str,
    running: &[&Task],
    except: Option<&str>,
) -> Result<Vec<Container>> {
    let mut containers = engine.service_containers(service_id).await?;
    containers.retain(|c| Some(c.node_id()) != except);
    let up: Vec<&Container> = containers.iter().filter(|c| c.is_running()).collect();
    let mismatch = |why: String| -> Result<Vec<Container>> {
        bail!("{why}\ntasks:\n{}\ncontainers:\n{}", describe(running.iter().copied()), describe_containers(&containers))
    };
    if up.len() != running.len() {
        return mismatch(format!("{} running containers for {} running tasks", up.len(), running.len()));
    }
    for task in running {
        let Some(container) = up.iter().find(|c| c.id == task.container_id) else {
            return mismatch(format!(
                "task {} reports container {:.12}, which does not run",
                task.id, task.container_id
            ));
        };
        if container.task_id() != task.id || container.node_id() != task.node_id || container.slot() != Some(task.slot)
        {
            return mismatch(format!("container {:.12} is labelled for another task, node or slot", container.id));
        }
    }
    Ok(containers)
}

/// Service-level waits.
impl Cluster {
    /// Waits until `service` has exactly `replicas` live tasks, all running,
    /// and returns them. On failure the error also shows the nodes, since a
    /// node marked down is the usual reason tasks moved.
    pub async fn wait_running(&self, service: &str, replicas: usize, deadline: Duration) -> Result<Vec<Task>> {
        let waited = wait_until(&format!("{replicas} running tasks of {service}"), deadline, || async {
            let tasks = self.tasks(service).await?;
            let live = live(&tasks);
            let running = running(&tasks);
            if live.len() != replicas || running.len() != replicas {
                bail!(
                    "{} live and {} running tasks, want {replicas}:\n{}",
                    live.len(),
                    running.len(),
                    describe(&tasks)
                );
            }
            Ok(running.into_iter().cloned().collect())
        })
        .await;
        match waited {
            Ok(tasks) => Ok(tasks),
            Err(e) => Err(e.context(format!("nodes now:\n{}", self.explain_nodes().await))),
        }
    }

    /// The nodes as the cluster lists them now, for failure messages.
    pub async fn explain_nodes(&self) -> String {
        match self.nodes().await {
            Ok(nodes) => describe_nodes(&nodes),
            Err(e) => format!("  (nodes could not be listed: {e:#})"),
        }
    }
}
