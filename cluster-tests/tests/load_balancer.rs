//! The built-in load balancer on real agents and Docker: a service with a
//! virtual host answers through the proxy of every node, a scale-up is
//! followed by the proxies without a reload, and a rolling redeploy under a
//! constant request loop loses no request.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use cluster_tests::proto::{ServiceSpec, UpdateConfig};
use cluster_tests::workload::{agent_name, docker_cluster, hostname_web, unique_name};
use cluster_tests::{cli, free_port, request_id, wait_until, AgentOpts, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
const REQUEST_DEADLINE: Duration = cluster_tests::http::HTTP_DEADLINE;
const HOST: &str = "shop.test";

/// The hostname web service, updated one task at a time without a monitor.
fn web(name: &str, replicas: i64) -> ServiceSpec {
    ServiceSpec {
        update: Some(UpdateConfig { parallelism: Some(1), monitor_ms: Some(0), ..UpdateConfig::default() }),
        ..hostname_web(name, replicas, HOST)
    }
}

async fn get(proxy: SocketAddr) -> Result<(u16, String)> {
    cluster_tests::http::get(proxy, HOST).await
}

/// Starts a cluster whose 3 agents each run a proxy on a free port.
async fn cluster_with_proxies(test: &str) -> Result<Option<(Cluster, Vec<SocketAddr>)>> {
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    }
    let listen = proxies.clone();
    let Some((_engine, cluster)) =
        docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i)).proxy(listen[i])).await?
    else {
        return Ok(None);
    };
    Ok(Some((cluster, proxies)))
}

/// Waits until `replicas` tasks of the service are running and ready.
async fn wait_ready(cluster: &Cluster, name: &str, replicas: usize) -> Result<()> {
    wait_until(&format!("{replicas} ready tasks of {name}"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(name).await?;
        let ready = tasks.iter().filter(|t| t.desired_state == "running" && t.ready && !t.endpoints.is_empty()).count();
        if ready != replicas {
            bail!("{ready} ready tasks with endpoints");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn every_node_proxy_serves_the_service_and_follows_a_scale_up() -> Result<()> {
    let test = "every_node_proxy_serves_the_service_and_follows_a_scale_up";
    let Some((cluster, proxies)) = cluster_with_proxies(test).await? else { return Ok(()) };
    let name = unique_name("lb");
    cluster.create_acked(web(&name, 2), &request_id(), CONVERGE_DEADLINE).await?;
    wait_ready(&cluster, &name, 2).await?;

    for proxy in &proxies {
        wait_until(&format!("{proxy} to serve {HOST}"), REQUEST_DEADLINE, || async {
            let (status, body) = get(*proxy).await?;
            ensure!(status == 200 && !body.is_empty(), "{proxy} answered {status} {body:?}");
            Ok(())
        })
        .await?;
    }

    let manager = cluster.manager(0).addr().to_string();
    let out = cli(&["--manager", &manager, "service", "scale", &format!("{name}=4")]).await?;
    ensure!(out.status.success(), "scale failed: {}", out.stderr);
    wait_ready(&cluster, &name, 4).await?;
    // The proxies follow the cluster's changes: once the tasks are ready,
    // every one of them answers within a second.
    wait_until("the proxy to spread over all 4 tasks", Duration::from_secs(1), || async {
        let mut seen = BTreeSet::new();
        for _ in 0..24 {
            let (status, body) = get(proxies[1]).await?;
            ensure!(status == 200, "status {status}");
            seen.insert(body);
        }
        ensure!(seen.len() == 4, "answers came from {} tasks: {seen:?}", seen.len());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_rolling_redeploy_under_a_request_loop_loses_no_request() -> Result<()> {
    let test = "a_rolling_redeploy_under_a_request_loop_loses_no_request";
    let Some((cluster, proxies)) = cluster_with_proxies(test).await? else { return Ok(()) };
    let name = unique_name("zero");
    cluster.create_acked(web(&name, 3), &request_id(), CONVERGE_DEADLINE).await?;
    wait_ready(&cluster, &name, 3).await?;
    wait_until("the proxy to serve", REQUEST_DEADLINE, || async {
        ensure!(get(proxies[0]).await?.0 == 200, "not yet");
        Ok(())
    })
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = tokio::spawn({
        let (stop, ok, failed, errors, proxy) = (stop.clone(), ok.clone(), failed.clone(), errors.clone(), proxies[0]);
        async move {
            while !stop.load(Ordering::Relaxed) {
                match get(proxy).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        if let Ok(mut errors) = errors.lock() {
                            errors.push(format!("{other:?}"));
                        }
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }
    });
    let manager = cluster.manager(0).addr().to_string();
    let out = cli(&["--manager", &manager, "service", "redeploy", &name]).await?;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    ensure!(out.status.success(), "redeploy failed: {}", out.stderr);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("during the redeploy: {ok} requests answered, {failed} failed");
    ensure!(failed == 0, "{failed} requests failed during the rollout: {:?}", errors.lock().map(|e| e.clone()));
    ensure!(ok >= 20, "only {ok} requests were made; the loop did not run through the rollout");
    Ok(())
}
