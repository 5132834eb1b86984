//! What the long-running commands (`manager init|join`, `agent`, `up`)
//! share: logs on stderr, and one cancellation token that the first Ctrl-C
//! or SIGTERM cancels.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit status after a second Ctrl-C cut a graceful shutdown short, as a
/// shell reports a process killed by SIGINT (128 + 2).
const INTERRUPTED_EXIT_CODE: i32 = 130;

/// Logs go to stderr so stdout stays free for anything a script reads.
/// `default_filter` applies when RUST_LOG is unset.
pub fn init_logging(default_filter: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => {
            EnvFilter::try_new(&spec).with_context(|| format!("RUST_LOG={spec:?} is not a valid log filter"))?
        }
        Err(_) => EnvFilter::new(default_filter),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a log file
        // they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM, so a manager closes
/// its store cleanly and an agent leaves its containers to be adopted on
/// restart; a second Ctrl-C exits at once, for a shutdown that hangs.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutting down (interrupt again to exit at once)");
    shutdown.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(INTERRUPTED_EXIT_CODE);
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
