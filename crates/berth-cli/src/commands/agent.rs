//! `berth agent`: joins the cluster as a worker node and runs the tasks the
//! leader assigns to it on a Docker engine, until Ctrl-C or SIGTERM. Also
//! the agent half of `berth up`, which shares [`run_agent`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_agent::runtime::{DockerRuntime, DockerRuntimeConfig, Runtime};
use berth_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, NodeIdentityArgs};
use crate::commands::process::{cancel_on_signal, init_logging};

/// Where the kernel keeps this host's name (what `hostname` prints), then
/// the file most distributions set it from.
const HOSTNAME_FILES: &[&str] = &["/proc/sys/kernel/hostname", "/etc/hostname"];
/// Log filter when RUST_LOG is unset.
const AGENT_LOG_FILTER: &str = "info";

pub async fn run(args: AgentArgs, managers: &[String]) -> Result<()> {
    init_logging(AGENT_LOG_FILTER)?;
    let managers: Vec<String> = managers.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    if managers.is_empty() {
        bail!("no manager to join: pass --manager ADDR[,ADDR...] or set BERTH_MANAGER");
    }
    prepare_data_dir(&args.data_dir)?;
    let config = agent_config(managers, args.token, node_name(&args.node)?, &args.node);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run_agent(config, args.node.docker_host, shutdown).await
}

/// The node's name: `--name`, else this host's name.
pub fn node_name(node: &NodeIdentityArgs) -> Result<String> {
    match &node.name {
        Some(name) if !name.trim().is_empty() => Ok(name.trim().to_string()),
        Some(_) => bail!("--name must not be empty (leave it out to use this host's name)"),
        None => host_name(),
    }
}

pub fn agent_config(managers: Vec<String>, token: String, name: String, node: &NodeIdentityArgs) -> AgentConfig {
    // The address stays empty: the manager records the one the agent's
    // connection comes from, which is right more often than a guess here.
    AgentConfig {
        managers,
        token,
        name,
        tags: node.tags.clone(),
        address: String::new(),
        proxy_http_listen: node.proxy_http_listen.0,
    }
}

/// Connects to the Docker engine and runs the agent until `shutdown`. Ends
/// early, with the cluster's own words, when the cluster refuses the token.
pub async fn run_agent(config: AgentConfig, docker_host: Option<String>, shutdown: CancellationToken) -> Result<()> {
    let runtime = connect_docker(docker_host.as_deref()).await?;
    tracing::info!(
        name = %config.name,
        managers = %config.managers.join(","),
        tags = ?config.tags,
        "starting agent"
    );
    berth_agent::run(config, runtime, shutdown).await?;
    Ok(())
}

/// The agent keeps nothing on disk yet; the directory is made now so an
/// install (systemd unit, permissions) is right before that changes.
pub fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the agent's data dir {}", dir.display()))
}

async fn connect_docker(host: Option<&str>) -> Result<Arc<dyn Runtime>> {
    let config = DockerRuntimeConfig::default();
    let runtime = match host.map(str::trim).filter(|h| !h.is_empty()) {
        None => DockerRuntime::connect(config)
            .await
            .context("cannot use the local Docker engine (is it running, and may this user use its socket?)")?,
        Some(host) => {
            let docker = bollard::Docker::connect_with_host(host).with_context(|| {
                format!(
                    "cannot use --docker-host {host:?} (expected an engine address such as \
                     unix:///var/run/docker.sock or tcp://HOST:2375)"
                )
            })?;
            let docker = docker
                .negotiate_version()
                .await
                .with_context(|| format!("cannot use the Docker engine at {host} (is it running?)"))?;
            DockerRuntime::with_client(docker, config)
        }
    };
    Ok(Arc::new(runtime))
}

/// This host's name, the default node name.
pub fn host_name() -> Result<String> {
    HOSTNAME_FILES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok().and_then(|text| first_word(&text)))
        .or_else(|| std::env::var("HOSTNAME").ok().and_then(|text| first_word(&text)))
        .context("cannot tell this host's name; pass --name NAME")
}

fn first_word(text: &str) -> Option<String> {
    text.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn agent_takes_managers_token_name_and_tags() {
        let cli = Cli::try_parse_from([
            "berth",
            "agent",
            "--manager",
            "10.0.0.1:4700,10.0.0.2:4700",
            "--token",
            "BERTH1-WKR-x-y",
            "--name",
            "w1",
            "--tag",
            "ssd",
            "--tag",
            "zone:a",
            "--docker-host",
            "tcp://10.0.0.9:2375",
        ])
        .expect("parses");
        assert_eq!(cli.manager, ["10.0.0.1:4700", "10.0.0.2:4700"]);
        let Command::Agent(args) = cli.command else { panic!("not agent: {:?}", cli.command) };
        assert_eq!(args.token, "BERTH1-WKR-x-y");
        assert_eq!(args.node.name.as_deref(), Some("w1"));
        assert_eq!(args.node.tags, ["ssd", "zone:a"]);
        assert_eq!(args.node.docker_host.as_deref(), Some("tcp://10.0.0.9:2375"));
        assert_eq!(args.data_dir, std::path::PathBuf::from(crate::cli::DEFAULT_AGENT_DATA_DIR));
        assert_eq!(args.node.proxy_http_listen.0, Some("0.0.0.0:80".parse().expect("literal")), "on by default");
    }

    #[test]
    fn this_host_has_a_name() {
        let name = host_name().expect("a test host has a name");
        assert!(!name.is_empty() && !name.contains(char::is_whitespace), "{name:?}");
    }
}
