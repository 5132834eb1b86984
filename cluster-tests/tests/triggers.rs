//! Triggers end to end: `berth trigger create` prints a URL, an HTTP POST
//! to it on any manager redeploys or scales the service, and a wrong or
//! revoked token, or a body over the limit, is refused and changes nothing.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::http::post;
use cluster_tests::workload::{agent_name, describe, docker_cluster, sleeper, unique_name};
use cluster_tests::{cli, request_id, wait_until, AgentOpts, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

/// `http://HOST:PORT/v1/triggers/TOKEN` into its address and path.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("not an http URL")?;
    let (addr, path) = rest.split_once('/').context("no path in the URL")?;
    Ok((addr.to_string(), format!("/{path}")))
}

async fn berth(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let manager = cluster.manager(0).addr().to_string();
    let all: Vec<&str> = ["--manager", manager.as_str()].into_iter().chain(args.iter().copied()).collect();
    let out = cli(&all).await?;
    ensure!(out.status.success(), "berth {} failed:\n{}{}", args.join(" "), out.stdout, out.stderr);
    Ok(out.stdout.trim().to_string())
}

#[tokio::test]
async fn a_trigger_redeploys_or_scales_and_a_wrong_or_revoked_one_does_nothing() -> Result<()> {
    let test = "a_trigger_redeploys_or_scales_and_a_wrong_or_revoked_one_does_nothing";
    let Some((_engine, cluster)) = docker_cluster(test, 2, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("hooked");
    cluster.create_acked(sleeper(&name, 2), &request_id(), CONVERGE_DEADLINE).await?;
    let before = cluster.wait_running(&name, 2, CONVERGE_DEADLINE).await?;
    let url = berth(&cluster, &["trigger", "create", &name, "--action", "redeploy", "-q"]).await?;
    let (addr, path) = split_url(&url)?;
    let version = cluster.service(&name).await?.version;

    let token = path.rsplit('/').next().context("no token in the URL")?;
    let wrong = format!("/v1/triggers/{}", token.replace(|c: char| c.is_ascii_digit(), "0"));
    ensure!(wrong != path, "the made-up token must differ");
    ensure!(post(&addr, &wrong, b"").await? == 404, "a wrong token must get 404");
    ensure!(post(&addr, "/v1/triggers/short", b"").await? == 404, "a malformed token must get 404");
    ensure!(post(&addr, &path, &vec![b'x'; 64 * 1024]).await? == 413, "an oversized body must be refused");
    ensure!(cluster.service(&name).await?.version == version, "refused requests changed the service");

    // Any manager answers the URL, not only the one that printed it.
    let other = cluster.manager(2).addr().to_string();
    ensure!(post(&other, &path, b"{}").await? == 202, "the trigger must be accepted");
    wait_until("the trigger's redeploy to replace every task", CONVERGE_DEADLINE, || async {
        let tasks = cluster.wait_running(&name, 2, Duration::from_secs(5)).await?;
        if tasks.iter().any(|t| before.iter().any(|b| b.id == t.id)) {
            bail!("old tasks still run:\n{}", describe(&tasks));
        }
        Ok(())
    })
    .await?;

    let scale_url = berth(&cluster, &["trigger", "create", &name, "--action", "scale-up", "-q"]).await?;
    let (scale_addr, scale_path) = split_url(&scale_url)?;
    ensure!(post(&scale_addr, &scale_path, b"").await? == 202, "the scale-up trigger must be accepted");
    cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;

    let listed = berth(&cluster, &["trigger", "ls", &name, "--output", "json"]).await?;
    let triggers: serde_json::Value = serde_json::from_str(&listed).context("trigger ls json")?;
    let ids: Vec<String> =
        triggers.as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(String::from)).collect();
    ensure!(ids.len() == 2, "two triggers expected, listed {listed}");
    for id in &ids {
        berth(&cluster, &["trigger", "rm", id]).await?;
    }
    // A redeploy or a scale bumps the service's version: a revoked trigger
    // of either kind must leave it where it is.
    let revoked_at = cluster.service(&name).await?.version;
    ensure!(post(&addr, &path, b"").await? == 404, "a revoked redeploy trigger must get 404");
    ensure!(post(&scale_addr, &scale_path, b"").await? == 404, "a revoked scale trigger must get 404");
    let after = cluster.service(&name).await?;
    ensure!(
        after.version == revoked_at,
        "a revoked trigger changed the service: version {revoked_at} -> {}",
        after.version
    );
    ensure!(after.spec.and_then(|s| s.replicas) == Some(3), "a revoked trigger scaled the service");
    Ok(())
}
