//! The berth manager: one openraft node persisted in sled, the gRPC servers
//! (`ClusterApi`, `RaftService`, health, reflection) on one port, and the
//! forwarding of writes and linearizable reads to the leader.

pub mod config;

pub use config::{Bootstrap, ManagerConfig, RaftTimings};

use tokio_util::sync::CancellationToken;

/// Runs a manager until `shutdown` is cancelled.
pub async fn run(config: ManagerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = (config, shutdown);
    anyhow::bail!("not yet implemented")
}
