//! `berth manager init|join` run a manager in this process until Ctrl-C or
//! SIGTERM; `berth manager rm` asks the cluster to drop one.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use berth_manager::dispatcher::DispatcherSettings;
use berth_manager::{Bootstrap, ManagerConfig, RaftTimings};
use berth_proto::v1 as proto;
use tokio_util::sync::CancellationToken;

use crate::cli::{ManagerCommand, ManagerRunArgs};
use crate::client::Client;
use crate::commands::process::{cancel_on_signal, init_logging};
use crate::output;

/// Log filter when RUST_LOG is unset: a manager's operator wants Raft's
/// own account of elections and membership too.
const MANAGER_LOG_FILTER: &str = "info";

pub async fn run(command: ManagerCommand, managers: &[String]) -> Result<()> {
    match command {
        ManagerCommand::Init(args) => serve(manager_config(&args, Bootstrap::Init)?).await,
        ManagerCommand::Join(args) => {
            let bootstrap = Bootstrap::Join { peer: args.peer.clone(), token: args.token.clone() };
            serve(manager_config(&args.run, bootstrap)?).await
        }
        ManagerCommand::Rm { id } => {
            let mut client = Client::new(managers)?;
            remove(&mut client, id).await?;
            output::emit(format!("removed manager {id}"))?;
            Ok(())
        }
    }
}

/// Builds the manager's settings from the flags. Unset Raft timings keep
/// the manager's own defaults, so they are defined in one place.
pub fn manager_config(args: &ManagerRunArgs, bootstrap: Bootstrap) -> Result<ManagerConfig> {
    let advertise = match &args.advertise {
        Some(advertise) => advertise.clone(),
        None if args.listen.ip().is_unspecified() => bail!(
            "--listen {} accepts connections on every interface, but other managers cannot \
             dial {0}; pass --advertise HOST:{} with an address they can reach",
            args.listen,
            args.listen.port()
        ),
        None => args.listen.to_string(),
    };
    let defaults = RaftTimings::default();
    let timings = RaftTimings {
        heartbeat_interval_ms: args.heartbeat_ms.unwrap_or(defaults.heartbeat_interval_ms),
        election_timeout_min_ms: args.election_timeout_min_ms.unwrap_or(defaults.election_timeout_min_ms),
        election_timeout_max_ms: args.election_timeout_max_ms.unwrap_or(defaults.election_timeout_max_ms),
        snapshot_threshold: args.snapshot_threshold.unwrap_or(defaults.snapshot_threshold),
    };
    Ok(ManagerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise,
        bootstrap,
        timings,
        dispatcher: dispatcher_settings(args)?,
    })
}

fn dispatcher_settings(args: &ManagerRunArgs) -> Result<DispatcherSettings> {
    let defaults = DispatcherSettings::default();
    let settings = DispatcherSettings {
        heartbeat_period_ms: args.agent_heartbeat_ms.unwrap_or(defaults.heartbeat_period_ms),
        node_down_grace_ms: args.node_down_grace_ms.unwrap_or(defaults.node_down_grace_ms),
    };
    if settings.heartbeat_period_ms == 0 || settings.node_down_grace_ms <= settings.heartbeat_period_ms {
        bail!(
            "--node-down-grace-ms ({}) must be larger than --agent-heartbeat-ms ({}), which must be above 0",
            settings.node_down_grace_ms,
            settings.heartbeat_period_ms
        );
    }
    Ok(settings)
}

async fn serve(config: ManagerConfig) -> Result<()> {
    init_logging(MANAGER_LOG_FILTER)?;
    let listen: SocketAddr = config.listen;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        %listen,
        advertise = %config.advertise,
        "starting manager"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    berth_manager::run(config, shutdown).await.context("manager stopped with an error")
}

/// The API has no request id for membership changes, so a retry after a
/// lost reply may find the manager already gone; that is reported as the
/// manager answers it.
async fn remove(client: &mut Client, id: u64) -> Result<()> {
    client.call(|mut c| async move { c.remove_manager(proto::RemoveManagerRequest { node_id: id }).await }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn run_args(args: &[&str]) -> (ManagerRunArgs, Option<(String, String)>) {
        let argv = ["berth", "manager"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Manager(ManagerCommand::Init(args))) => (args, None),
            Ok(Command::Manager(ManagerCommand::Join(args))) => (args.run, Some((args.peer, args.token))),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn init_without_flags_serves_a_laptop() {
        let (args, _) = run_args(&["init"]);
        let config = manager_config(&args, Bootstrap::Init).expect("valid");
        assert_eq!(config.listen.to_string(), berth_manager::config::DEFAULT_LISTEN);
        assert_eq!(config.advertise, berth_manager::config::DEFAULT_LISTEN);
        let defaults = RaftTimings::default();
        assert_eq!(config.timings.heartbeat_interval_ms, defaults.heartbeat_interval_ms);
        assert_eq!(config.timings.snapshot_threshold, defaults.snapshot_threshold);
    }

    #[test]
    fn join_takes_peer_token_and_timings() {
        let (args, join) = run_args(&[
            "join",
            "--peer",
            "10.0.0.1:4700",
            "--token",
            "BERTH1-MGR-x-y",
            "--listen",
            "10.0.0.2:4700",
            "--heartbeat-ms",
            "20",
            "--election-timeout-min-ms",
            "100",
            "--election-timeout-max-ms",
            "200",
            "--snapshot-threshold",
            "50",
            "--data-dir",
            "/tmp/m2",
        ]);
        assert_eq!(join, Some(("10.0.0.1:4700".into(), "BERTH1-MGR-x-y".into())));
        let config = manager_config(&args, Bootstrap::Init).expect("valid");
        assert_eq!(config.advertise, "10.0.0.2:4700");
        assert_eq!(config.data_dir, std::path::PathBuf::from("/tmp/m2"));
        assert_eq!(config.timings.heartbeat_interval_ms, 20);
        assert_eq!(config.timings.election_timeout_min_ms, 100);
        assert_eq!(config.timings.election_timeout_max_ms, 200);
        assert_eq!(config.timings.snapshot_threshold, 50);
    }

    #[test]
    fn listening_everywhere_needs_an_advertise_address() {
        let (args, _) = run_args(&["init", "--listen", "0.0.0.0:4700"]);
        let err = manager_config(&args, Bootstrap::Init).expect_err("unreachable advertise");
        assert!(err.to_string().contains("--advertise"), "{err}");

        let (args, _) = run_args(&["init", "--listen", "0.0.0.0:4700", "--advertise", "m1:4700"]);
        let config = manager_config(&args, Bootstrap::Init).expect("valid");
        assert_eq!(config.advertise, "m1:4700");
    }
}
