//! The throughput run: N clients, each with its own connection to one
//! endpoint (assigned round-robin), write back to back for a fixed time.
//! Every client's connection is opened and its first write acknowledged
//! before the clock starts, so the figures exclude connection setup.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::client::{self, System, Writer};
use crate::stats;

/// More clients than this would measure the load generator, not the cluster.
const MAX_CLIENTS: usize = 1_024;
/// Bounds a run so a mistyped duration cannot load the machine for hours.
const MAX_DURATION_SECS: u64 = 600;
/// How long setup (creating berth's service, each client's first write) may take.
const SETUP_DEADLINE_SECS: u64 = 30;
/// Pause after a failed write so a dead endpoint is not hammered in a tight loop.
const ERROR_BACKOFF_MS: u64 = 10;

pub struct Plan {
    pub system: System,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub duration: Duration,
}

#[derive(Default)]
struct ClientOutcome {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the plan and returns the JSON line the script reads:
/// `{system, clients, writes, secs, writes_per_sec, p50_ms, p90_ms, p99_ms,
/// max_ms, errors, first_error}`.
pub async fn run(plan: Plan) -> Result<Value> {
    if plan.clients == 0 || plan.clients > MAX_CLIENTS {
        bail!("--clients {}: expected 1 to {MAX_CLIENTS}", plan.clients);
    }
    if plan.duration.is_zero() || plan.duration.as_secs() > MAX_DURATION_SECS {
        bail!("--duration-secs {}: expected 1 to {MAX_DURATION_SECS}", plan.duration.as_secs());
    }
    let setup_deadline = Duration::from_secs(SETUP_DEADLINE_SECS);
    client::prepare(plan.system, &plan.endpoints, setup_deadline).await?;

    let start_line = Arc::new(Barrier::new(plan.clients + 1));
    let mut tasks = Vec::with_capacity(plan.clients);
    for index in 0..plan.clients {
        let endpoint = plan.endpoints[index % plan.endpoints.len()].clone();
        let mut writer = Writer::new(plan.system, &endpoint, client::default_request_timeout())?;
        let start_line = Arc::clone(&start_line);
        let duration = plan.duration;
        let first_seq = index as u64;
        tasks.push(tokio::spawn(async move {
            let warm = first_ack(&mut writer, first_seq, setup_deadline).await;
            // Every client reaches the start line, even a failed one, or the
            // others would wait forever.
            start_line.wait().await;
            warm.with_context(|| format!("client {index} on {endpoint}"))?;
            Ok::<_, anyhow::Error>(write_until(&mut writer, first_seq + 1, duration).await)
        }));
    }
    start_line.wait().await;
    let started = Instant::now();

    let mut latencies_us = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let outcome = task.await.context("a client task panicked")??;
        latencies_us.extend(outcome.latencies_us);
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    let secs = started.elapsed().as_secs_f64();
    let writes = latencies_us.len();
    let summary = stats::summarize(latencies_us);
    #[allow(clippy::cast_precision_loss)] // write counts stay far below 2^52
    let writes_per_sec = writes as f64 / secs;
    Ok(json!({
        "system": plan.system.name(),
        "clients": plan.clients,
        "writes": writes,
        "secs": round(secs, 3),
        "writes_per_sec": round(writes_per_sec, 1),
        "p50_ms": summary.map(|s| s.p50_ms),
        "p90_ms": summary.map(|s| s.p90_ms),
        "p99_ms": summary.map(|s| s.p99_ms),
        "max_ms": summary.map(|s| s.max_ms),
        "errors": errors,
        "first_error": first_error,
    }))
}

/// Retries the client's first write until it is acknowledged or `deadline` passes.
async fn first_ack(writer: &mut Writer, seq: u64, deadline: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        match writer.write(seq).await {
            Ok(()) => return Ok(()),
            Err(status) if started.elapsed() >= deadline => {
                bail!("first write not acknowledged within {} s: {status}", deadline.as_secs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await,
        }
    }
}

async fn write_until(writer: &mut Writer, first_seq: u64, duration: Duration) -> ClientOutcome {
    let deadline = Instant::now() + duration;
    let mut outcome = ClientOutcome::default();
    let mut seq = first_seq;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match writer.write(seq).await {
            Ok(()) => {
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                outcome.latencies_us.push(us);
            }
            Err(status) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| status.to_string());
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
        }
        seq += 1;
    }
    outcome
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
