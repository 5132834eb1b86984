//! Follows one service's tasks through the `Watch` stream, change by
//! change, so a test can assert what held at *every* point of a rollout
//! (the fewest tasks running at once, the order tasks were created and
//! started in), not just at the moments it happened to poll. The stream is
//! reopened on another manager from the last index seen when its manager
//! dies, so no change is missed across a failover.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use crate::proto::watch_event::Change;
use crate::proto::{ListTasksRequest, ReadConsistency, Task, WatchRequest};
use crate::{client, Cluster};

/// What the sampler saw so far.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Every task of the service as of the last change seen.
    pub tasks: BTreeMap<String, Task>,
    /// The fewest tasks observed running at once since `reset_floor`.
    pub min_running: usize,
    /// Raft index at which each task first appeared, and first ran.
    pub created_at_index: BTreeMap<String, u64>,
    pub running_at_index: BTreeMap<String, u64>,
    /// Raft index at which each task was first seen finished (down).
    pub ended_at_index: BTreeMap<String, u64>,
    /// The last index seen.
    pub index: u64,
}

impl Samples {
    pub fn running(&self) -> usize {
        self.tasks.values().filter(|t| t.state == "running").count()
    }
}

pub struct TaskSampler {
    samples: Arc<Mutex<Samples>>,
    follower: JoinHandle<()>,
}

impl Drop for TaskSampler {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl TaskSampler {
    /// Lists the service's tasks and follows every change after that list.
    pub async fn start(cluster: &Cluster, service_name: &str, service_id: &str) -> Result<TaskSampler> {
        let request =
            ListTasksRequest { service: service_name.to_string(), consistency: ReadConsistency::Linearizable as i32 };
        let listed = cluster
            .read("ListTasks", |mut c| {
                let request = request.clone();
                async move { c.list_tasks(request).await }
            })
            .await?
            .into_inner();
        let mut samples = Samples { index: listed.index, ..Samples::default() };
        for task in listed.tasks {
            // Tasks that exist already count as created at the list's index.
            samples.created_at_index.insert(task.id.clone(), listed.index);
            if task.state == "running" {
                samples.running_at_index.insert(task.id.clone(), listed.index);
            }
            samples.tasks.insert(task.id.clone(), task);
        }
        samples.min_running = samples.running();
        let samples = Arc::new(Mutex::new(samples));
        let managers: Vec<SocketAddr> = cluster.managers().iter().map(|m| m.addr()).collect();
        let follower = tokio::spawn(follow(managers, service_id.to_string(), samples.clone()));
        Ok(TaskSampler { samples, follower })
    }

    pub fn samples(&self) -> Samples {
        self.lock().clone()
    }

    /// Starts counting the floor from the current running count.
    pub fn reset_floor(&self) {
        let mut samples = self.lock();
        samples.min_running = samples.running();
    }

    fn lock(&self) -> MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Pause after every manager refused a watch in a row: a reconnect
/// back-off (nothing signals that a manager is back), not a wait for a
/// condition; the tests' waits are on the samples, with deadlines.
const ALL_DOWN_BACKOFF_MS: u64 = 50;

async fn follow(managers: Vec<SocketAddr>, service_id: String, samples: Arc<Mutex<Samples>>) {
    let mut turn = 0usize;
    let mut failed_in_a_row = 0usize;
    loop {
        let addr = managers[turn % managers.len()];
        turn += 1;
        let from_index = samples.lock().map(|s| s.index).unwrap_or(0);
        let Ok(mut stream) = open(addr, from_index).await else {
            // A dead manager refuses at once: try the next one straight away.
            failed_in_a_row += 1;
            if failed_in_a_row.is_multiple_of(managers.len()) {
                tokio::time::sleep(std::time::Duration::from_millis(ALL_DOWN_BACKOFF_MS)).await;
            }
            continue;
        };
        failed_in_a_row = 0;
        while let Ok(Some(event)) = stream.message().await {
            let Ok(mut s) = samples.lock() else { return };
            s.index = s.index.max(event.index);
            match event.change {
                Some(Change::TaskUpserted(task)) if task.service_id == service_id => {
                    s.created_at_index.entry(task.id.clone()).or_insert(event.index);
                    if task.state == "running" {
                        s.running_at_index.entry(task.id.clone()).or_insert(event.index);
                    }
                    if crate::workload::TERMINAL_STATES.contains(&task.state.as_str()) {
                        s.ended_at_index.entry(task.id.clone()).or_insert(event.index);
                    }
                    s.tasks.insert(task.id.clone(), task);
                }
                Some(Change::TaskRemoved(task)) if task.service_id == service_id => {
                    s.tasks.remove(&task.id);
                }
                _ => continue,
            }
            s.min_running = s.min_running.min(s.running());
        }
    }
}

async fn open(addr: SocketAddr, from_index: u64) -> Result<tonic::Streaming<crate::proto::WatchEvent>> {
    // One entry carries many changes: start again at the last entry seen,
    // in case the stream broke in the middle of it (upserts repeat harmlessly).
    let request = WatchRequest { from_index: from_index.saturating_sub(1).max(1) };
    Ok(client(addr).await?.watch(request).await.context("opening a watch")?.into_inner())
}
