//! Discovery across nodes on real agents and Docker: a stack's client on
//! one node reaches the stack's api, whose tasks all run on another node
//! (on a bridge network of their own, which the client's network cannot
//! reach), by its short name, full name and link alias, through the node
//! proxy at the api's virtual IP; requests spread over the api's tasks, and
//! the name keeps answering across a rolling redeploy of the api. A
//! standalone service reaches another through `--link`, across nodes, the
//! same way.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cluster_tests::workload::{docker_cluster, unique_name};
use cluster_tests::{cli, wait_until, AgentOpts, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);

fn compose() -> &'static str {
    r#"services:
  api:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www & trap 'kill $$!; exit 0' TERM; wait"]
    expose: ["8080"]
    deploy:
      replicas: 2
      placement:
        constraints: ["node.labels.zone == two"]
      update_config:
        monitor: 0s
  client:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    links: ["api:backend"]
    deploy:
      placement:
        constraints: ["node.labels.zone == one"]
"#
}

async fn berth_ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let manager = cluster.manager(0).addr().to_string();
    let all: Vec<&str> = ["--manager", manager.as_str()].into_iter().chain(args.iter().copied()).collect();
    let out = cli(&all).await?;
    ensure!(out.status.success(), "berth {} failed:\n{}{}", args.join(" "), out.stdout, out.stderr);
    Ok(out.stdout)
}

/// A cluster of two agents, tagged `zone:one` and `zone:two`.
async fn two_zones(test: &str) -> Result<Option<(cluster_tests::docker::Engine, Cluster)>> {
    let zones = ["zone:one", "zone:two"];
    docker_cluster(test, 2, |i| AgentOpts::named(format!("d{}", i + 1)).tag(zones[i])).await
}

/// Runs `script` in container `id` and returns what it printed.
async fn exec(id: &str, script: &str) -> Result<String> {
    let out = tokio::process::Command::new("docker").args(["exec", id, "sh", "-c", script]).output().await?;
    ensure!(
        out.status.success(),
        "`{script}` in {id} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The networks container `id` is attached to.
async fn networks_of(id: &str) -> Result<BTreeSet<String>> {
    let format = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}";
    let out = tokio::process::Command::new("docker").args(["inspect", "-f", format, id]).output().await?;
    ensure!(out.status.success(), "docker inspect {id}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect())
}

#[tokio::test]
async fn a_stack_service_is_reached_by_name_from_another_node_through_the_node_proxy() -> Result<()> {
    let test = "a_stack_service_is_reached_by_name_from_another_node_through_the_node_proxy";
    let Some((_engine, cluster)) = two_zones(test).await? else {
        return Ok(());
    };
    let stack = unique_name("disc").replace('-', "");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("compose.yml");
    std::fs::write(&file, compose()).context("writing compose.yml")?;
    berth_ok(&cluster, &["stack", "deploy", "-c", &file.display().to_string(), &stack]).await?;
    let api = cluster.wait_running(&format!("{stack}_api"), 2, CONVERGE_DEADLINE).await?;
    let client = cluster.wait_running(&format!("{stack}_client"), 1, CONVERGE_DEADLINE).await?;
    let client_node = client[0].node_id.clone();
    ensure!(api.iter().all(|t| t.node_id != client_node), "placement put an api task beside the client");
    let client_id = client[0].container_id.clone();

    // The client's network is its node's, not the api tasks'.
    let client_networks = networks_of(&client_id).await?;
    for task in &api {
        let api_networks = networks_of(&task.container_id).await?;
        ensure!(
            client_networks.is_disjoint(&api_networks),
            "client on {client_networks:?} shares a network with an api task on {api_networks:?}"
        );
    }

    let hostnames: BTreeSet<String> = api.iter().map(|t| t.container_id.chars().take(12).collect()).collect();
    for name in ["api", &format!("{stack}_api"), "backend"] {
        wait_until(&format!("the client to reach {name}:8080"), CONVERGE_DEADLINE, || async {
            let answer = exec(&client_id, &format!("wget -q -O- http://{name}:8080/")).await?;
            ensure!(hostnames.contains(&answer), "{name}:8080 answered {answer:?}, not an api task");
            Ok(())
        })
        .await?;
    }
    let hosts = exec(&client_id, "cat /etc/hosts").await?;
    ensure!(hosts.lines().any(|l| l.ends_with("\tapi") || l.ends_with(" api")), "no api line in\n{hosts}");

    // Round-robin over both api tasks, wherever they run.
    let seen = exec(&client_id, "for i in 1 2 3 4 5 6; do wget -q -O- http://api:8080/; done").await?;
    let seen: BTreeSet<String> = seen.lines().map(String::from).collect();
    ensure!(seen == hostnames, "requests reached {seen:?}, expected every api task {hostnames:?}");

    // The name follows the api through a rolling redeploy.
    berth_ok(&cluster, &["service", "redeploy", &format!("{stack}_api")]).await?;
    let replaced = cluster.wait_running(&format!("{stack}_api"), 2, CONVERGE_DEADLINE).await?;
    let fresh: BTreeSet<String> = replaced.iter().map(|t| t.container_id.chars().take(12).collect()).collect();
    ensure!(fresh.is_disjoint(&hostnames), "the redeploy kept an old container");
    wait_until("the client to reach the redeployed api", CONVERGE_DEADLINE, || async {
        let answer = exec(&client_id, "wget -q -O- http://api:8080/").await?;
        ensure!(fresh.contains(&answer), "api:8080 answered {answer:?}, not a new api task");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_standalone_service_reaches_its_link_on_another_node() -> Result<()> {
    let Some((_engine, cluster)) = two_zones("a_standalone_service_reaches_its_link_on_another_node").await? else {
        return Ok(());
    };
    let (db, app) = (unique_name("db"), unique_name("app"));
    let image = cluster_tests::docker::TEST_IMAGE;
    let serve = "mkdir -p /www && hostname > /www/index.html && httpd -f -p 7000 -h /www & \
                 trap 'kill $!; exit 0' TERM; wait";
    let idle = "trap 'exit 0' TERM; sleep 3600 & wait";
    let create_db = ["service", "create", &db, "--image", image, "--expose", "7000", "--tag", "zone:two"];
    berth_ok(&cluster, &[&create_db[..], &["--", "sh", "-c", serve]].concat()).await?;
    let link = format!("{db}:database");
    let create_app = ["service", "create", &app, "--image", image, "--link", &link, "--tag", "zone:one"];
    berth_ok(&cluster, &[&create_app[..], &["--", "sh", "-c", idle]].concat()).await?;
    let db_task = cluster.wait_running(&db, 1, CONVERGE_DEADLINE).await?;
    let app_task = cluster.wait_running(&app, 1, CONVERGE_DEADLINE).await?;
    ensure!(db_task[0].node_id != app_task[0].node_id, "placement put both on one node");
    let db_host: String = db_task[0].container_id.chars().take(12).collect();
    for name in ["database", db.as_str()] {
        wait_until(&format!("{app} to reach {name}:7000"), CONVERGE_DEADLINE, || async {
            let answer = exec(&app_task[0].container_id, &format!("wget -q -O- http://{name}:7000/")).await?;
            ensure!(answer == db_host, "{name}:7000 answered {answer:?}, not {db_host}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}
