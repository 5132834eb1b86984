//! Stacks from compose files on real agents: a three-service file deploys
//! in one write, `depends_on: service_healthy` holds a service until its
//! dependency is healthy, a second deploy touches only the service that
//! changed, `--dry-run` changes nothing, and a malformed or invalid file is
//! an error at its line and column that changes nothing either.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cluster_tests::proto::Task;
use cluster_tests::workload::{agent_name, docker_cluster, running};
use cluster_tests::{cli, AgentOpts, CliOutput, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

fn compose(worker_greeting: &str) -> String {
    format!(
        r#"services:
  web:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www & trap 'kill $$!; exit 0' TERM; wait"]
    environment:
      VIRTUAL_HOST: shop.test
    deploy:
      replicas: 2
      update_config:
        monitor: 0s
    depends_on:
      store:
        condition: service_healthy
  worker:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    environment:
      - GREETING={worker_greeting}
    deploy:
      update_config:
        monitor: 0s
  store:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 300ms
      retries: 3
"#
    )
}

async fn berth(cluster: &Cluster, args: &[&str]) -> Result<CliOutput> {
    let manager = cluster.manager(0).addr().to_string();
    let all: Vec<&str> = ["--manager", manager.as_str()].into_iter().chain(args.iter().copied()).collect();
    cli(&all).await
}

async fn berth_ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let out = berth(cluster, args).await?;
    ensure!(out.status.success(), "berth {} failed:\n{}{}", args.join(" "), out.stdout, out.stderr);
    Ok(out.stdout)
}

fn write(dir: &Path, text: &str) -> Result<String> {
    let path = dir.join("compose.yml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

fn ids(tasks: &[Task]) -> Vec<String> {
    let mut ids: Vec<String> = running(tasks).iter().map(|t| t.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_stack_deploys_in_one_write_and_a_redeploy_touches_only_what_changed() -> Result<()> {
    let test = "a_stack_deploys_in_one_write_and_a_redeploy_touches_only_what_changed";
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(std::net::SocketAddr::from(([127, 0, 0, 1], cluster_tests::free_port()?)));
    }
    let listen = proxies.clone();
    let Some((_engine, cluster)) =
        docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i)).proxy(listen[i])).await?
    else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let file = write(dir.path(), &compose("hello"))?;
    let out = berth_ok(&cluster, &["stack", "deploy", "-c", &file, "shop"]).await?;
    ensure!(out.contains("3 created"), "unexpected plan:\n{out}");
    let web = cluster.wait_running("shop_web", 2, CONVERGE_DEADLINE).await?;
    let worker = cluster.wait_running("shop_worker", 1, CONVERGE_DEADLINE).await?;
    let store = cluster.wait_running("shop_store", 1, CONVERGE_DEADLINE).await?;
    let store_running_since = store[0].state_since_ms;
    ensure!(
        web.iter().all(|t| t.created_at_ms >= store_running_since),
        "web tasks were created before the store ran (depends_on: service_healthy)"
    );

    // The web answers through the load balancer of every node.
    for proxy in &proxies {
        cluster_tests::wait_until(&format!("{proxy} to serve shop.test"), CONVERGE_DEADLINE, || async {
            let (status, body) = cluster_tests::http::get(*proxy, "shop.test").await?;
            ensure!(status == 200 && !body.is_empty(), "{proxy} answered {status} {body:?}");
            Ok(())
        })
        .await?;
    }

    let listed: serde_json::Value = serde_json::from_str(&berth_ok(&cluster, &["stack", "ls", "-o", "json"]).await?)?;
    ensure!(listed[0]["name"] == "shop" && listed[0]["services"] == 3, "stack ls: {listed}");
    let ps: serde_json::Value =
        serde_json::from_str(&berth_ok(&cluster, &["stack", "ps", "shop", "-o", "json"]).await?)?;
    ensure!(ps.as_array().map(Vec::len) == Some(4), "stack ps lists 4 tasks: {ps}");

    // A dry run of a change prints the plan and changes nothing.
    let file = write(dir.path(), &compose("bonjour"))?;
    let dry = berth_ok(&cluster, &["stack", "deploy", "-c", &file, "shop", "--dry-run"]).await?;
    ensure!(dry.contains("~ shop_worker") && dry.contains("dry run"), "unexpected dry run:\n{dry}");
    ensure!(ids(&cluster.tasks("shop_worker").await?) == ids(&worker), "the dry run changed the worker");

    let out = berth_ok(&cluster, &["stack", "deploy", "-c", &file, "shop"]).await?;
    ensure!(out.contains("1 updated") && out.contains("2 unchanged"), "unexpected plan:\n{out}");
    let worker_after = cluster.wait_running("shop_worker", 1, CONVERGE_DEADLINE).await?;
    ensure!(ids(&worker_after) != ids(&worker), "the changed worker was not replaced");
    ensure!(ids(&cluster.tasks("shop_web").await?) == ids(&web), "the unchanged web was touched");
    ensure!(ids(&cluster.tasks("shop_store").await?) == ids(&store), "the unchanged store was touched");

    let removed = berth_ok(&cluster, &["stack", "rm", "shop"]).await?;
    ensure!(removed.lines().count() == 3, "stack rm removes its 3 services:\n{removed}");
    Ok(())
}

#[tokio::test]
async fn malformed_and_invalid_stack_files_are_errors_at_line_and_column_that_change_nothing() -> Result<()> {
    let test = "malformed_and_invalid_stack_files_are_errors_at_line_and_column_that_change_nothing";
    let Some((_engine, cluster)) = docker_cluster(test, 1, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    // Each error starts with the file, line and column it is about.
    let cases = [
        // The unclosed sequence is found where the file ends.
        ("services:\n  web:\n    image: [unclosed\n", "compose.yml:4:1: invalid YAML"),
        (
            "services:\n  web:\n    image: busybox\n    deploy:\n      replicas: -1\n",
            "compose.yml:5:17: services.web.deploy.replicas",
        ),
        ("services:\n  web:\n    image: busybox\n    links: [nowhere]\n", "compose.yml:4:13: services.web.links[0]"),
    ];
    for (text, position) in cases {
        let file = write(dir.path(), text)?;
        let out = berth(&cluster, &["stack", "deploy", "-c", &file, "bad"]).await?;
        ensure!(!out.status.success(), "a bad file was accepted:\n{text}");
        ensure!(out.stderr.contains(position), "no {position} position in the error for\n{text}\n{}", out.stderr);
    }
    let listed = berth_ok(&cluster, &["stack", "ls", "-o", "json"]).await?;
    ensure!(listed.trim() == "[]", "a refused file left a stack behind: {listed}");
    Ok(())
}
