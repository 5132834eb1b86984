//! The `berth` CLI against a real cluster: it finds a live manager among
//! several addresses, and its `--output json` reflects the cluster.

use anyhow::{ensure, Context, Result};
use cluster_tests::{cli, Cluster, ClusterOpts};
use serde_json::Value;

async fn berth_ok(args: &[&str]) -> Result<String> {
    let output = cli(args).await?;
    ensure!(output.status.success(), "berth {} failed ({}): {}", args.join(" "), output.status, output.stderr);
    Ok(output.stdout)
}

#[tokio::test]
async fn the_cli_creates_and_lists_services_while_a_listed_manager_is_down() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let status: Value = serde_json::from_str(
        &berth_ok(&["cluster", "status", "--output", "json", "--manager", &cluster.manager(1).addr().to_string()])
            .await?,
    )
    .context("cluster status --output json is not JSON")?;
    let members = status["members"].as_array().context("cluster status JSON has no members array")?;
    assert_eq!(members.len(), 3, "{status}");

    cluster.kill(0)?;
    cluster.leader().await?;
    let managers = cluster.managers().iter().map(|m| m.addr().to_string()).collect::<Vec<_>>().join(",");
    // --detach: this cluster has no agents, so the tasks would never run.
    berth_ok(&[
        "service",
        "create",
        "web",
        "--image",
        "nginx:1.27",
        "--replicas",
        "2",
        "--detach",
        "--manager",
        &managers,
    ])
    .await?;
    let listed: Value =
        serde_json::from_str(&berth_ok(&["service", "ls", "--output", "json", "--manager", &managers]).await?)
            .context("service ls --output json is not JSON")?;
    let services = listed.as_array().context("service ls JSON is not an array")?;
    assert!(services.iter().any(|s| s["name"] == "web"), "web missing from {listed}");
    Ok(())
}
