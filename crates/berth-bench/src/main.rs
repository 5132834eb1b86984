//! `berth-bench`: the load generator behind `scripts/bench/control-plane.sh`.
//! It drives a berth manager cluster or an etcd cluster through the same
//! client loop (one gRPC connection per client, writes back to back, one
//! per-request timeout) so that the two systems' committed writes per second,
//! latencies and leader failover times can be compared on one machine. Every
//! subcommand prints a single JSON line on stdout for the script to read.

mod client;
mod failover;
mod leader;
mod report;
mod stats;
mod throughput;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use client::System;

#[derive(Parser)]
#[command(name = "berth-bench", about = "Control-plane benchmark client for berth and etcd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Committed writes per second and p50/p99 latency from N concurrent clients.
    Throughput {
        #[arg(long, value_enum)]
        system: System,
        /// Client addresses (host:port), comma separated; clients are spread
        /// over them round-robin.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        duration_secs: u64,
    },
    /// Time from `kill -9` of a process (the leader) until the first write
    /// acknowledged after it, with one client that retries on error.
    Failover {
        #[arg(long, value_enum)]
        system: System,
        /// The client starts on the first endpoint and moves to the next one
        /// after each error; put the leader first to watch its connection die.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// Process to SIGKILL once the client is writing steadily.
        #[arg(long)]
        kill_pid: u32,
        /// Pause after a failed write before trying the next endpoint.
        #[arg(long, default_value_t = 200)]
        retry_ms: u64,
        /// A write unanswered for this long counts as failed, e.g. one
        /// forwarded by a follower to the dead leader.
        #[arg(long, default_value_t = client::REQUEST_TIMEOUT_MS)]
        request_timeout_ms: u64,
        /// How long the client writes before the kill.
        #[arg(long, default_value_t = 1_000)]
        warmup_ms: u64,
        /// Give up when no write is acknowledged this long after the kill.
        #[arg(long, default_value_t = 30)]
        max_wait_secs: u64,
    },
    /// Print the endpoint (one of --endpoints) of the current leader, once
    /// every endpoint answers and all agree on who leads.
    Leader {
        #[arg(long, value_enum)]
        system: System,
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// Keep asking until this deadline instead of failing at once.
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
    },
    /// Print the comparison table (medians and ratio berth/etcd) from a file
    /// of JSON lines written by `throughput` and `failover`.
    Report {
        /// The JSON lines file.
        results: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Throughput { system, endpoints, clients, duration_secs } => {
            let endpoints = client::parse_endpoints(&endpoints)?;
            let report = throughput::run(throughput::Plan {
                system,
                endpoints,
                clients,
                duration: Duration::from_secs(duration_secs),
            })
            .await?;
            println!("{report}");
        }
        Command::Failover { system, endpoints, kill_pid, retry_ms, request_timeout_ms, warmup_ms, max_wait_secs } => {
            let endpoints = client::parse_endpoints(&endpoints)?;
            let report = failover::run(failover::Plan {
                system,
                endpoints,
                kill_pid,
                retry: Duration::from_millis(retry_ms),
                request_timeout: Duration::from_millis(request_timeout_ms),
                warmup: Duration::from_millis(warmup_ms),
                max_wait: Duration::from_secs(max_wait_secs),
            })
            .await?;
            println!("{report}");
        }
        Command::Leader { system, endpoints, wait_secs } => {
            let endpoints = client::parse_endpoints(&endpoints)?;
            let leader = leader::wait_for_leader(system, &endpoints, Duration::from_secs(wait_secs)).await?;
            println!("{leader}");
        }
        Command::Report { results } => {
            let text =
                std::fs::read_to_string(&results).with_context(|| format!("reading results {}", results.display()))?;
            print!("{}", report::Report::parse(&text)?.tables());
        }
    }
    Ok(())
}
