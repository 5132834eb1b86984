//! Settings of a manager process, as the CLI hands them over.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Loopback, so a laptop needs no flags and exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4700";

/// Raft timings. The defaults suit a LAN: a failed leader is replaced in
/// well under half a second, where Swarm's defaults take several seconds.
///
/// openraft (0.9) lets a follower stand for election only after the
/// leader's lease (`election_timeout_max_ms`) plus its own randomised
/// timeout (between the min and the max) have passed since it last heard
/// from the leader: a dead leader is replaced 300-400 ms after its last
/// heartbeat with these defaults (450-600 ms with 150/300, which missed
/// the 500 ms failover aim). The earliest election
/// still needs six missed heartbeats, so a leader slowed by a busy machine
/// is not deposed.
#[derive(Debug, Clone)]
pub struct RaftTimings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot and compact the log after this many entries.
    pub snapshot_threshold: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            snapshot_threshold: 10_000,
        }
    }
}

/// How this manager comes into a cluster. A data dir that already holds a
/// manager's state is resumed in either case, so the same command restarts it.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Start a new single-manager cluster.
    Init,
    /// Join the cluster that `peer` belongs to, with a manager join token.
    Join { peer: String, token: String },
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where the other managers and clients reach this one; defaults to `listen`.
    pub advertise: String,
    pub bootstrap: Bootstrap,
    pub timings: RaftTimings,
    pub dispatcher: crate::dispatcher::DispatcherSettings,
}
