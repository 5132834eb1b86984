//! The failover run: one client writes continuously, the leader is killed
//! with SIGKILL between two writes (so no write is in flight at that moment),
//! and the time until the next acknowledged write is the failover time. The
//! client behaves like a simple real one: after a failed write it waits the
//! retry period and moves on to the next endpoint.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{self, System, Writer};

/// How long the cluster may take to acknowledge a first write before the kill.
const READY_DEADLINE_SECS: u64 = 30;

pub struct Plan {
    pub system: System,
    /// The client starts on the first one.
    pub endpoints: Vec<String>,
    pub kill_pid: u32,
    pub retry: Duration,
    /// A write unanswered for this long counts as failed.
    pub request_timeout: Duration,
    pub warmup: Duration,
    pub max_wait: Duration,
}

/// The client's current connection and where it is in the endpoint list.
struct RetryingClient<'a> {
    system: System,
    endpoints: &'a [String],
    cursor: usize,
    request_timeout: Duration,
    writer: Writer,
    seq: u64,
}

impl<'a> RetryingClient<'a> {
    fn new(system: System, endpoints: &'a [String], request_timeout: Duration) -> Result<Self> {
        Ok(Self {
            system,
            endpoints,
            cursor: 0,
            request_timeout,
            writer: Writer::new(system, &endpoints[0], request_timeout)?,
            seq: 0,
        })
    }

    fn endpoint(&self) -> &str {
        &self.endpoints[self.cursor]
    }

    async fn write(&mut self) -> Result<(), tonic::Status> {
        self.seq += 1;
        self.writer.write(self.seq).await
    }

    async fn retry_elsewhere(&mut self, pause: Duration) -> Result<()> {
        tokio::time::sleep(pause).await;
        self.cursor = (self.cursor + 1) % self.endpoints.len();
        self.writer = Writer::new(self.system, &self.endpoints[self.cursor], self.request_timeout)?;
        Ok(())
    }
}

/// Runs the plan and returns `{system, failover_ms, failed_attempts, acked_by, last_error}`.
pub async fn run(plan: Plan) -> Result<Value> {
    client::prepare(plan.system, &plan.endpoints, Duration::from_secs(READY_DEADLINE_SECS)).await?;
    let mut client = RetryingClient::new(plan.system, &plan.endpoints, plan.request_timeout)?;

    // Write steadily for the warm-up, and at least until one write is
    // acknowledged, so the failover is measured from a working cluster.
    let warm_start = Instant::now();
    let ready_deadline = plan.warmup + Duration::from_secs(READY_DEADLINE_SECS);
    let mut acked = 0u64;
    while warm_start.elapsed() < plan.warmup || acked == 0 {
        match client.write().await {
            Ok(()) => acked += 1,
            Err(status) if warm_start.elapsed() > ready_deadline => {
                bail!("no write acknowledged within {} s before the kill: {status}", ready_deadline.as_secs())
            }
            Err(_) => client.retry_elsewhere(plan.retry).await?,
        }
    }

    let killed_at = Instant::now();
    kill_9(plan.kill_pid).await?;
    let mut failed_attempts = 0u64;
    let mut last_error = None;
    loop {
        match client.write().await {
            Ok(()) => break,
            Err(status) => {
                failed_attempts += 1;
                last_error = Some(format!("{}: {status}", client.endpoint()));
                if killed_at.elapsed() > plan.max_wait {
                    bail!(
                        "no write acknowledged within {} s of killing {}; last error: {status}",
                        plan.max_wait.as_secs(),
                        plan.kill_pid
                    );
                }
                client.retry_elsewhere(plan.retry).await?;
            }
        }
    }
    let failover_ms = killed_at.elapsed().as_secs_f64() * 1_000.0;
    Ok(json!({
        "system": plan.system.name(),
        "failover_ms": (failover_ms * 10.0).round() / 10.0,
        "failed_attempts": failed_attempts,
        "acked_by": client.endpoint(),
        "last_error": last_error,
    }))
}

/// SIGKILL through `kill(1)`: the workspace forbids unsafe code, and a
/// signal is all that is needed.
async fn kill_9(pid: u32) -> Result<()> {
    let status = tokio::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -9 {pid} failed ({status}): is the process still running?");
    }
    Ok(())
}
