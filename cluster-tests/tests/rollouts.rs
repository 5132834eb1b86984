//! Rolling redeploys and updates on real agents and Docker: the running
//! count never drops below its floor (sampled from every change in the
//! Watch stream, not from polls), a broken version rolls back by itself,
//! a leader killed mid-rollout leaves every slot updated exactly once,
//! sequential deployment starts tasks one after another, and autoredeploy
//! follows a rebuilt local image.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::proto::{RedeployServiceRequest, Service, ServiceSpec, Task, UpdateConfig, UpdateServiceRequest};
use cluster_tests::sampler::TaskSampler;
use cluster_tests::workload::{agent_name, describe, docker_cluster, running, sleeper, unique_name};
use cluster_tests::{cli, request_id, wait_until, AgentOpts, Cluster};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
const REPLICAS: usize = 6;

fn rolling(name: &str, replicas: i64, order: &str) -> ServiceSpec {
    ServiceSpec {
        update: Some(UpdateConfig {
            parallelism: Some(1),
            order: order.to_string(),
            monitor_ms: Some(0),
            ..UpdateConfig::default()
        }),
        ..sleeper(name, replicas)
    }
}

/// Waits until the service's rollout has left "rolling", and returns the service.
async fn wait_rollout_done(cluster: &Cluster, name: &str) -> Result<Service> {
    wait_until(&format!("the rollout of {name} to end"), CONVERGE_DEADLINE, || async {
        let service = cluster.service(name).await?;
        let rollout = service.rollout.clone().context("no rollout recorded")?;
        if rollout.state == "rolling" {
            bail!("still rolling: {}/{} updated ({})", rollout.updated, rollout.slots, rollout.message);
        }
        Ok(service)
    })
    .await
}

/// Tasks of the service created at or after Raft index `index`, by slot.
fn new_tasks_per_slot(
    tasks: &BTreeMap<String, Task>,
    created: &BTreeMap<String, u64>,
    index: u64,
) -> BTreeMap<u32, usize> {
    let mut per_slot = BTreeMap::new();
    for task in tasks.values() {
        if created.get(&task.id).is_some_and(|at| *at > index) {
            *per_slot.entry(task.slot).or_default() += 1;
        }
    }
    per_slot
}

/// Redeploys a 6-replica service with `order` and checks the floor of
/// running tasks over every change, and that each slot was replaced once.
async fn redeploy_keeps_the_floor(test: &str, order: &str, floor: usize) -> Result<()> {
    let Some((_engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("roll");
    let service =
        cluster.create_acked(rolling(&name, REPLICAS as i64, order), &request_id(), CONVERGE_DEADLINE).await?;
    let before = cluster.wait_running(&name, REPLICAS, CONVERGE_DEADLINE).await?;
    let sampler = TaskSampler::start(&cluster, &name, &service.id).await?;
    let start_index = sampler.samples().index;

    // Through the CLI, as a user would; it follows the rollout to its end.
    let manager = cluster.manager(0).addr().to_string();
    let out = cli(&["--manager", &manager, "service", "redeploy", &name]).await?;
    ensure!(out.status.success(), "berth service redeploy failed:\n{}\n{}", out.stdout, out.stderr);
    ensure!(out.stderr.contains("redeploy completed"), "no completion summary in:\n{}", out.stderr);

    let done = wait_rollout_done(&cluster, &name).await?;
    let rollout = done.rollout.context("rollout")?;
    ensure!(rollout.state == "completed", "rollout ended {}: {}", rollout.state, rollout.message);
    let tasks = cluster.wait_running(&name, REPLICAS, CONVERGE_DEADLINE).await?;
    ensure!(
        tasks.iter().all(|t| before.iter().all(|b| b.id != t.id)),
        "some task was not replaced:\n{}",
        describe(&tasks)
    );

    let samples = sampler.samples();
    ensure!(
        samples.min_running >= floor,
        "with {order}, {} tasks ran at the lowest point; the floor is {floor}",
        samples.min_running
    );
    let per_slot = new_tasks_per_slot(&samples.tasks, &samples.created_at_index, start_index);
    ensure!(
        per_slot.len() == REPLICAS && per_slot.values().all(|n| *n == 1),
        "each slot must get exactly one new task, got {per_slot:?}"
    );
    if order == "stop-first" {
        // Stop-first means it: a slot's new task exists only once its old one is down.
        for old in &before {
            let ended = samples.ended_at_index.get(&old.id).copied().context("an old task never ended")?;
            let replacement = samples.tasks.values().find(|t| {
                t.slot == old.slot && samples.created_at_index.get(&t.id).is_some_and(|at| *at > start_index)
            });
            let created = replacement.and_then(|t| samples.created_at_index.get(&t.id)).copied().unwrap_or(0);
            ensure!(
                created > ended,
                "slot {}: the new task was created at index {created}, before the old one ended at {ended}",
                old.slot
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_stop_first_redeploy_never_runs_fewer_than_n_minus_one() -> Result<()> {
    redeploy_keeps_the_floor("a_stop_first_redeploy_never_runs_fewer_than_n_minus_one", "stop-first", REPLICAS - 1)
        .await
}

#[tokio::test]
async fn a_start_first_redeploy_never_runs_fewer_than_n() -> Result<()> {
    redeploy_keeps_the_floor("a_start_first_redeploy_never_runs_fewer_than_n", "start-first", REPLICAS).await
}

#[tokio::test]
async fn a_broken_version_rolls_back_by_itself() -> Result<()> {
    let test = "a_broken_version_rolls_back_by_itself";
    let Some((_engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("broken");
    let mut spec = rolling(&name, 3, "stop-first");
    if let Some(update) = spec.update.as_mut() {
        update.failure_action = "rollback".into();
        update.monitor_ms = Some(2_000);
    }
    let created = cluster.create_acked(spec.clone(), &request_id(), CONVERGE_DEADLINE).await?;
    cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;
    let good_command = spec.command.clone();

    let broken = ServiceSpec { command: ["sh", "-c", "exit 3"].map(String::from).to_vec(), ..spec };
    let request = UpdateServiceRequest {
        request_id: request_id(),
        name: name.clone(),
        spec: Some(broken),
        expected_version: created.version,
    };
    cluster
        .call_acked("UpdateService", CONVERGE_DEADLINE, |mut c| {
            let request = request.clone();
            async move { c.update_service(request).await }
        })
        .await?;

    let done = wait_rollout_done(&cluster, &name).await?;
    let rollout = done.rollout.context("rollout")?;
    ensure!(
        rollout.kind == "automatic rollback" && rollout.state == "completed",
        "expected a completed automatic rollback, got {} {}: {}",
        rollout.kind,
        rollout.state,
        rollout.message
    );
    ensure!(rollout.message.contains("exited with code 3"), "the reason is missing: {}", rollout.message);
    let spec = done.spec.context("spec")?;
    ensure!(spec.command == good_command, "the spec did not return to the previous one: {:?}", spec.command);
    let tasks = cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;
    let all_tasks = cluster.tasks(&name).await?;
    ensure!(
        running(&all_tasks).len() == 3 && tasks.len() == 3,
        "the old version does not run again:\n{}",
        describe(&all_tasks)
    );
    Ok(())
}

#[tokio::test]
async fn a_rollout_continues_after_the_leader_dies_and_updates_each_slot_once() -> Result<()> {
    let test = "a_rollout_continues_after_the_leader_dies_and_updates_each_slot_once";
    let Some((_engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("failover");
    // A health check makes each slot take a moment, so the kill lands mid-rollout.
    let mut spec = rolling(&name, REPLICAS as i64, "stop-first");
    spec.health = Some(cluster_tests::proto::HealthCheck {
        command: "true".into(),
        interval_ms: 300,
        timeout_ms: 1_000,
        retries: 3,
        start_period_ms: 0,
    });
    let service = cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    cluster.wait_running(&name, REPLICAS, CONVERGE_DEADLINE).await?;
    let sampler = TaskSampler::start(&cluster, &name, &service.id).await?;
    let start_index = sampler.samples().index;

    let request = RedeployServiceRequest { request_id: request_id(), name: name.clone() };
    cluster
        .call_acked("RedeployService", CONVERGE_DEADLINE, |mut c| {
            let request = request.clone();
            async move { c.redeploy_service(request).await }
        })
        .await?;
    wait_until("two slots to be updated", CONVERGE_DEADLINE, || async {
        let rollout = cluster.service(&name).await?.rollout.context("rollout")?;
        if rollout.updated < 2 {
            bail!("{}/{} updated", rollout.updated, rollout.slots);
        }
        Ok(())
    })
    .await?;
    let leader = cluster.leader().await?;
    eprintln!("killing the leader, manager {leader}, mid-rollout");
    cluster.kill(leader)?;

    let done = wait_rollout_done(&cluster, &name).await?;
    let rollout = done.rollout.context("rollout")?;
    ensure!(rollout.state == "completed", "rollout ended {}: {}", rollout.state, rollout.message);
    cluster.wait_running(&name, REPLICAS, CONVERGE_DEADLINE).await?;
    let samples = sampler.samples();
    let per_slot = new_tasks_per_slot(&samples.tasks, &samples.created_at_index, start_index);
    ensure!(
        per_slot.len() == REPLICAS && per_slot.values().all(|n| *n == 1),
        "each slot must be updated exactly once across the failover, got {per_slot:?}"
    );
    Ok(())
}

#[tokio::test]
async fn sequential_deployment_starts_each_task_after_the_previous_one_runs() -> Result<()> {
    let test = "sequential_deployment_starts_each_task_after_the_previous_one_runs";
    let Some((_engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("seq");
    // An empty service first, so the sampler sees every task from its creation.
    let service = cluster
        .create_acked(ServiceSpec { sequential: true, ..sleeper(&name, 0) }, &request_id(), CONVERGE_DEADLINE)
        .await?;
    let sampler = TaskSampler::start(&cluster, &name, &service.id).await?;
    let manager = cluster.manager(0).addr().to_string();
    let out = cli(&["--manager", &manager, "service", "scale", &format!("{name}=4")]).await?;
    ensure!(out.status.success(), "scale failed:\n{}", out.stderr);
    cluster.wait_running(&name, 4, CONVERGE_DEADLINE).await?;

    let samples = sampler.samples();
    let mut order: Vec<(u64, &String)> = samples.created_at_index.iter().map(|(id, at)| (*at, id)).collect();
    order.sort();
    ensure!(order.len() == 4, "expected 4 tasks, saw {}", order.len());
    for pair in order.windows(2) {
        let (created_next, next) = pair[1];
        let previous = pair[0].1;
        let previous_ran = samples.running_at_index.get(previous).copied().context("a task never ran")?;
        ensure!(
            previous_ran < created_next,
            "task {next} was created at index {created_next}, before task {previous} ran (index {previous_ran})"
        );
    }
    Ok(())
}

#[tokio::test]
async fn autoredeploy_follows_a_rebuilt_local_image() -> Result<()> {
    let test = "autoredeploy_follows_a_rebuilt_local_image";
    let Some((engine, cluster)) = docker_cluster(test, 2, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("auto");
    let image = format!("berth-test/{name}:latest");
    engine.build_from_test_image(&image, "v1").await?;
    let spec = ServiceSpec { image: image.clone(), autoredeploy: true, ..rolling(&name, 2, "stop-first") };
    cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    let before = cluster.wait_running(&name, 2, CONVERGE_DEADLINE).await?;

    let new_id = engine.build_from_test_image(&image, "v2").await?;
    let result = wait_until("the service to redeploy onto the rebuilt image", CONVERGE_DEADLINE, || async {
        let tasks = cluster.wait_running(&name, 2, Duration::from_secs(5)).await?;
        if tasks.iter().any(|t| before.iter().any(|b| b.id == t.id)) {
            bail!("old tasks still run:\n{}", describe(&tasks));
        }
        for task in &tasks {
            let image_id = engine.container_image_id(&task.container_id).await?;
            ensure!(image_id == new_id, "task {} runs image {image_id}, not {new_id}", task.id);
        }
        Ok(())
    })
    .await;
    engine.remove_image(&image).await?;
    result
}
