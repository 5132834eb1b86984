//! `berth up`: one host, one command. Starts (or resumes) a single-manager
//! cluster and an agent on the local Docker engine in this process, waits
//! until the node is ready, says where to point `berth service create`,
//! and runs both until Ctrl-C or SIGTERM, which stop both through one
//! cancellation token.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_manager::config::DEFAULT_LISTEN;
use berth_manager::Bootstrap;
use berth_proto::v1 as proto;
use berth_proto::v1::cluster_api_client::ClusterApiClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{ManagerRunArgs, UpArgs};
use crate::commands::agent::{agent_config, node_name, run_agent};
use crate::commands::manager::manager_config;
use crate::commands::process::{cancel_on_signal, init_logging};
use crate::output;

/// How long the manager may take to answer after it starts: opening (or
/// replaying) its store and binding its port.
pub const MANAGER_READY_DEADLINE_MS: u64 = 30_000;
/// How long the agent may take to register and be reported ready once the
/// manager answers: a leader election and the first heartbeat.
pub const NODE_READY_DEADLINE_MS: u64 = 30_000;
/// Pause between two looks at the manager while waiting for it.
pub const READY_POLL_MS: u64 = 100;
/// Worker threads of the agent's runtime: it mostly waits on the engine
/// and the manager.
const AGENT_RUNTIME_THREADS: usize = 2;
/// How long the agent's leftover tasks get to finish once it returned.
const AGENT_RUNTIME_SHUTDOWN_MS: u64 = 5_000;
/// Log filter when RUST_LOG is unset: `up` is for a person at a terminal,
/// who wants berth's account of what happens, not every Raft step of a
/// one-manager cluster.
const UP_LOG_FILTER: &str = "info,openraft=warn";
/// One connection attempt or request while waiting; a fresh manager on
/// loopback answers in far less.
const READY_REQUEST_TIMEOUT_MS: u64 = 1_000;

pub async fn run(args: UpArgs) -> Result<()> {
    init_logging(UP_LOG_FILTER)?;
    // Read before anything starts: a broken file changes nothing.
    let stack = match &args.compose_file {
        Some(path) => {
            let name = stack_name(&args, path)?;
            let file = crate::commands::stack::read_compose_file(path, &name)?;
            Some((name, file))
        }
        None => None,
    };
    let run_args = ManagerRunArgs {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise.clone(),
        heartbeat_ms: None,
        election_timeout_min_ms: None,
        election_timeout_max_ms: None,
        snapshot_threshold: None,
        agent_heartbeat_ms: None,
        node_down_grace_ms: None,
    };
    // Init resumes by itself when the data dir already holds this cluster.
    let config = manager_config(&run_args, Bootstrap::Init)?;
    let name = node_name(&args.node)?;
    let address = config.advertise.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let mut manager: JoinHandle<Result<()>> = tokio::spawn(berth_manager::run(config, shutdown.clone()));
    let token = tokio::select! {
        token = worker_token(&address) => token,
        ended = &mut manager => return stopped_early("manager", ended, shutdown.is_cancelled()),
    };
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            // Let the manager close its store before reporting.
            shutdown.cancel();
            let _ = manager.await;
            return Err(e);
        }
    };
    let config = agent_config(vec![address.clone()], token, name.clone(), &args.node);
    let mut agent = spawn_agent(config, args.node.docker_host.clone(), shutdown.clone());

    let ready = tokio::select! {
        ready = node_ready(&address, &name) => ready,
        ended = &mut manager => {
            let asked_to_stop = shutdown.is_cancelled();
            shutdown.cancel();
            let _ = agent.await;
            return stopped_early("manager", ended, asked_to_stop);
        }
        ended = &mut agent => {
            let asked_to_stop = shutdown.is_cancelled();
            shutdown.cancel();
            let _ = manager.await;
            return stopped_early("agent", ended, asked_to_stop);
        }
    };
    match ready {
        Ok(()) => output::emit(ready_line(&address, &name, stack.as_ref().map(|(s, _)| s.as_str())))?,
        Err(e) => tracing::warn!("{e:#}; still running, see the log above"),
    }
    // `-c compose.yml` deploys after the node is ready, so its services are
    // placed at once; a refused file stops both halves.
    if let Some((name, file)) = stack {
        if let Err(e) = deploy_stack(&address, &name, file).await {
            shutdown.cancel();
            let _ = agent.await;
            let _ = manager.await;
            return Err(e);
        }
    }

    // Whichever half ends first ends the other.
    let (manager_first, ended) = tokio::select! {
        ended = &mut manager => (true, ended),
        ended = &mut agent => (false, ended),
    };
    let (first, other, remaining) =
        if manager_first { ("manager", "agent", agent) } else { ("agent", "manager", manager) };
    let asked_to_stop = shutdown.is_cancelled();
    shutdown.cancel();
    let first_result = flatten(ended).with_context(|| format!("the {first} stopped"));
    let other_result = flatten(remaining.await).with_context(|| format!("the {other} stopped"));
    first_result?;
    other_result?;
    if !asked_to_stop {
        bail!("the {first} stopped on its own; stopped the {other} too");
    }
    Ok(())
}

/// The stack's name: `--stack`, else the compose file's folder name, as
/// docker compose names its project.
fn stack_name(args: &UpArgs, compose_file: &std::path::Path) -> Result<String> {
    if let Some(name) = &args.stack {
        return Ok(name.clone());
    }
    let absolute =
        std::path::absolute(compose_file).with_context(|| format!("cannot resolve {}", compose_file.display()))?;
    let folder = absolute.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().to_lowercase());
    let name: String = folder
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let name = name.trim_start_matches(['-', '_']).to_string();
    if name.is_empty() {
        bail!("cannot name the stack after the folder of {}; give --stack NAME", compose_file.display());
    }
    Ok(name)
}

async fn deploy_stack(address: &str, stack: &str, file: crate::commands::stack::StackFile) -> Result<()> {
    let mut client = crate::client::Client::new(&[address.to_string()])?;
    crate::commands::stack::create_missing_secrets(&mut client, &file.secrets).await?;
    let reply = crate::commands::stack::deploy_services(&mut client, stack, file.services, false, false).await?;
    let plan = reply.plan.unwrap_or_default();
    output::emit(output::stack_plan_text(stack, &plan, false))?;
    let wait = crate::cli::WaitArgs { detach: false, timeout: None };
    if let Err(e) = crate::commands::stack::follow_changes(&mut client, &plan, &wait).await {
        // The cluster keeps working on it; `up` stays up.
        tracing::warn!("{e:#}");
    }
    Ok(())
}

/// Runs the agent on a runtime of its own, on its own thread. When the
/// agent returns, dropping that runtime ends every task it spawned. That
/// matters because the manager's graceful shutdown waits for its open
/// connections: one agent task that outlives `berth_agent::run` and keeps
/// its session open (as the heartbeat forwarder of berth-agent at 364067a
/// does) would otherwise hang `up` on Ctrl-C.
fn spawn_agent(
    config: berth_agent::AgentConfig,
    docker_host: Option<String>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<()>> {
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name("berth-agent".into()).spawn(move || {
        let result = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(AGENT_RUNTIME_THREADS)
            .thread_name("berth-agent")
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let result = runtime.block_on(run_agent(config, docker_host, shutdown));
                runtime.shutdown_timeout(Duration::from_millis(AGENT_RUNTIME_SHUTDOWN_MS));
                result
            }
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the agent's runtime")),
        };
        // The receiver is gone only if `up` itself is ending.
        let _ = result_tx.send(result);
    });
    tokio::spawn(async move {
        thread.context("cannot start the agent's thread")?;
        result_rx.await.unwrap_or_else(|_| Err(anyhow!("the agent's thread ended without a result (it panicked)")))
    })
}

/// The one line `up` prints when the cluster is ready for work.
/// What `up` says once its node is ready; with a compose file, how to
/// follow the stack rather than how to create a service.
fn ready_line(address: &str, node: &str, stack: Option<&str>) -> String {
    let manager_flag = if address == DEFAULT_LISTEN { String::new() } else { format!(" --manager {address}") };
    let next = match stack {
        Some(stack) => format!("deploying stack '{stack}'; see it with: berth{manager_flag} stack ps {stack}"),
        None => format!("Deploy with: berth{manager_flag} service create web --image nginx --replicas 2"),
    };
    format!("berth is up: manager on {address}, node '{node}' ready. {next} (Ctrl-C stops both)")
}

fn flatten(joined: Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|e| anyhow!("it panicked: {e}"))?
}

/// One half ended before the cluster was ready: fine if Ctrl-C asked for
/// it, an error otherwise.
fn stopped_early(what: &str, joined: Result<Result<()>, tokio::task::JoinError>, asked_to_stop: bool) -> Result<()> {
    match flatten(joined) {
        Ok(()) if asked_to_stop => Ok(()),
        Ok(()) => Err(anyhow!("the {what} stopped before the cluster was ready")),
        Err(e) => Err(e.context(format!("the {what} stopped before the cluster was ready"))),
    }
}

/// Connects to the manager and asks once, within [`READY_REQUEST_TIMEOUT_MS`].
async fn ask<T, F, Fut>(address: &str, op: F) -> Result<T, String>
where
    F: FnOnce(ClusterApiClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let attempt = async {
        let client = ClusterApiClient::connect(format!("http://{address}")).await.map_err(|e| e.to_string())?;
        op(client).await.map(tonic::Response::into_inner).map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(Duration::from_millis(READY_REQUEST_TIMEOUT_MS), attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {READY_REQUEST_TIMEOUT_MS}ms")))
}

/// Polls the starting manager for the worker token until it answers: the
/// first sign that its API is up.
async fn worker_token(address: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_millis(MANAGER_READY_DEADLINE_MS);
    loop {
        let request = proto::GetJoinTokenRequest { role: proto::TokenRole::Worker as i32 };
        let last_error = match ask(address, |mut c| async move { c.get_join_token(request).await }).await {
            Ok(reply) => return Ok(reply.token),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("the manager did not answer on {address} within {MANAGER_READY_DEADLINE_MS}ms: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
}

/// Polls the node list until this host's node is registered and ready.
async fn node_ready(address: &str, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(NODE_READY_DEADLINE_MS);
    loop {
        let request = proto::ListNodesRequest { consistency: crate::client::read_consistency() };
        let seen = match ask(address, |mut c| async move { c.list_nodes(request).await }).await {
            Ok(reply) => match reply.nodes.iter().find(|n| n.name == name) {
                Some(node) if node.status == "ready" => return Ok(()),
                Some(node) => format!("node '{name}' is {}", node.status),
                None => format!("node '{name}' has not registered"),
            },
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("the node was not ready within {NODE_READY_DEADLINE_MS}ms ({seen})");
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, DEFAULT_UP_DATA_DIR};
    use clap::Parser;

    #[test]
    fn up_needs_no_flags() {
        let cli = Cli::try_parse_from(["berth", "up"]).expect("parses");
        let Command::Up(args) = cli.command else { panic!("not up: {:?}", cli.command) };
        assert_eq!(args.data_dir, std::path::PathBuf::from(DEFAULT_UP_DATA_DIR));
        assert_eq!(args.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(args.node.name, None);
    }

    #[test]
    fn the_ready_line_says_how_to_deploy() {
        let line = ready_line(DEFAULT_LISTEN, "laptop", None);
        assert!(line.contains("manager on 127.0.0.1:4700"), "{line}");
        assert!(line.contains("berth service create"), "{line}");
        let line = ready_line("10.0.0.1:4800", "laptop", None);
        assert!(line.contains("berth --manager 10.0.0.1:4800 service create"), "{line}");
        let line = ready_line(DEFAULT_LISTEN, "laptop", Some("shop"));
        assert!(line.contains("berth stack ps shop") && !line.contains("service create"), "{line}");
    }

    #[tokio::test]
    async fn waiting_for_a_manager_that_never_answers_is_bounded() {
        // Not the full deadline: one refused attempt shows the error path.
        let address = crate::testing::FakeCluster::unused_address().await;
        let err = ask(&address, |mut c| async move {
            c.get_join_token(proto::GetJoinTokenRequest { role: proto::TokenRole::Worker as i32 }).await
        })
        .await
        .expect_err("nobody listens");
        assert!(!err.is_empty());
    }
}
