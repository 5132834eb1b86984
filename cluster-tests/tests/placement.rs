//! Where tasks land, with three managers and real agents on the local
//! Docker Engine: replicas spread evenly, an every-node service follows a
//! node that joins later, a drained node's tasks move, tag constraints
//! hold (and explain why a task cannot be placed), and high-availability
//! spreads a service across `zone:` tags.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::proto::{ServiceSpec, Task, UpdateNodeRequest};
use cluster_tests::workload::{
    agent_name, check_containers_match, count_by_node, describe, docker_cluster, is_live, live, running, sleeper,
    unique_name,
};
use cluster_tests::{request_id, seed, wait_until, AgentOpts, Cluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long a service may take to converge: generous for a loaded 2-core
/// machine that runs other clusters at the same time.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// `{a1: n, a2: n, ...}` for the given agent names.
fn each(names: &[&str], n: usize) -> BTreeMap<String, usize> {
    names.iter().map(|name| (name.to_string(), n)).collect()
}

#[tokio::test]
async fn six_replicas_land_two_on_each_of_three_agents() -> Result<()> {
    let test = "six_replicas_land_two_on_each_of_three_agents";
    let Some((engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("spread");
    let service = cluster.create_acked(sleeper(&name, 6), &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;

    let counts = count_by_node(&tasks);
    assert_eq!(
        counts,
        each(&["a1", "a2", "a3"], 2),
        "tasks per node:\n{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );
    check_containers_match(&engine, &service.id, &tasks.iter().collect::<Vec<_>>()).await?;
    for node in cluster.nodes().await? {
        assert_eq!(node.task_count, 2, "task_count of {}: {node:?}", node.name);
    }
    Ok(())
}

#[tokio::test]
async fn an_every_node_service_gets_a_task_on_an_agent_that_joins_later() -> Result<()> {
    let test = "an_every_node_service_gets_a_task_on_an_agent_that_joins_later";
    let Some((engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("everywhere");
    let spec = ServiceSpec { replicas: None, every_node: true, ..sleeper(&name, 0) };
    let service = cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;
    assert_eq!(
        count_by_node(&tasks),
        each(&["a1", "a2", "a3"], 1),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );

    cluster.start_agents(1, |i| AgentOpts::named(agent_name(i))).await?;
    let tasks = cluster.wait_running(&name, 4, CONVERGE_DEADLINE).await?;
    assert_eq!(
        count_by_node(&tasks),
        each(&["a1", "a2", "a3", "a4"], 1),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );
    check_containers_match(&engine, &service.id, &tasks.iter().collect::<Vec<_>>()).await?;
    Ok(())
}

#[tokio::test]
async fn draining_an_agent_moves_its_tasks_to_the_other_agents() -> Result<()> {
    let test = "draining_an_agent_moves_its_tasks_to_the_other_agents";
    let mut rng = StdRng::seed_from_u64(seed());
    let Some((engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("drain");
    let service = cluster.create_acked(sleeper(&name, 6), &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;
    assert_eq!(
        count_by_node(&tasks),
        each(&["a1", "a2", "a3"], 2),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );

    let drained = rng.gen_range(0..3);
    let drained_name = cluster.agent(drained).name().to_string();
    let drained_id = cluster.node_id(drained)?.to_string();
    eprintln!("draining {drained_name}");
    let request = UpdateNodeRequest {
        request_id: request_id(),
        node: drained_name.clone(),
        availability: "drain".to_string(),
        ..UpdateNodeRequest::default()
    };
    let node = cluster.update_node_acked(request, CONVERGE_DEADLINE).await?;
    assert_eq!(node.availability, "drain", "{node:?}");

    let others: Vec<&str> = ["a1", "a2", "a3"].into_iter().filter(|n| *n != drained_name).collect();
    wait_until(&format!("six tasks running off {drained_name}, none live on it"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let running = running(&tasks);
        let on_drained = live(&tasks).into_iter().filter(|t| t.node_id == drained_id).count();
        if on_drained > 0 || live(&tasks).len() != 6 || count_by_node(running.iter().copied()) != each(&others, 3) {
            bail!("{on_drained} live tasks still on {drained_name}:\n{}", describe(&tasks));
        }
        // The agent stopped the drained node's containers too.
        check_containers_match(&engine, &service.id, &running).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn tags_keep_tasks_on_agents_with_every_tag_and_unplaceable_ones_pending_with_a_reason() -> Result<()> {
    let test = "tags_keep_tasks_on_agents_with_every_tag_and_unplaceable_ones_pending_with_a_reason";
    let mut rng = StdRng::seed_from_u64(seed());
    let untagged = rng.gen_range(0..3);
    let opts = |i: usize| {
        let agent = AgentOpts::named(agent_name(i)).tag("rack:r1");
        if i == untagged {
            agent
        } else {
            agent.tag("ssd")
        }
    };
    let Some((engine, cluster)) = docker_cluster(test, 3, opts).await? else {
        return Ok(());
    };
    let untagged_name = agent_name(untagged);
    eprintln!("{untagged_name} has no ssd tag");

    // No node carries `gpu`: the tasks wait, and say why.
    let gpu = unique_name("gpu");
    let gpu_spec = ServiceSpec { tags: vec!["gpu".to_string()], ..sleeper(&gpu, 2) };
    let gpu_service = cluster.create_acked(gpu_spec, &request_id(), CONVERGE_DEADLINE).await?;
    let pending = |tasks: &[Task]| -> Result<()> {
        let waiting = tasks
            .iter()
            .filter(|t| is_live(t) && t.state == "pending" && t.node_id.is_empty() && t.message.contains("gpu"))
            .count();
        ensure!(
            tasks.len() == 2 && waiting == 2,
            "want 2 pending tasks, unplaced, whose message names the missing tag gpu:\n{}",
            describe(tasks)
        );
        Ok(())
    };
    wait_until(&format!("the tasks of {gpu} to wait with a reason"), CONVERGE_DEADLINE, || async {
        pending(&cluster.tasks(&gpu).await?)
    })
    .await?;

    let ssd = unique_name("ssd");
    let ssd_spec = ServiceSpec { tags: vec!["ssd".to_string()], ..sleeper(&ssd, 4) };
    let ssd_service = cluster.create_acked(ssd_spec, &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&ssd, 4, CONVERGE_DEADLINE).await?;
    let tagged: Vec<String> = (0..3).filter(|&i| i != untagged).map(agent_name).collect();
    let tagged: Vec<&str> = tagged.iter().map(String::as_str).collect();
    assert_eq!(
        count_by_node(&tasks),
        each(&tagged, 2),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );
    check_containers_match(&engine, &ssd_service.id, &tasks.iter().collect::<Vec<_>>()).await?;

    // The scheduler has placed a later service since: the gpu tasks still
    // wait, and nothing of theirs reached the engine.
    pending(&cluster.tasks(&gpu).await?)?;
    let containers = engine.service_containers(&gpu_service.id).await?;
    assert!(containers.is_empty(), "unplaceable tasks have containers: {containers:?}");
    Ok(())
}

/// The `zone:` tag value of the node that `task` runs on.
fn zone_of(cluster: &Cluster, task: &Task) -> Result<String> {
    let index = cluster.agent_index(&task.node_name).with_context(|| format!("no agent named {}", task.node_name))?;
    let zone = cluster.agent(index).tags().iter().find_map(|t| t.strip_prefix("zone:"));
    Ok(zone.with_context(|| format!("agent {} has no zone tag", task.node_name))?.to_string())
}

fn count_by_zone(cluster: &Cluster, tasks: &[Task]) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts.entry(zone_of(cluster, task)?).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::test]
async fn high_availability_spreads_a_service_across_zones() -> Result<()> {
    let test = "high_availability_spreads_a_service_across_zones";
    let mut rng = StdRng::seed_from_u64(seed());
    // Two nodes in zone a, one in zone b; which one is alone is seeded so
    // that a tie-break by name cannot pass for spreading.
    let alone = rng.gen_range(0..3);
    let opts = |i: usize| AgentOpts::named(agent_name(i)).tag(if i == alone { "zone:b" } else { "zone:a" });
    let Some((engine, cluster)) = docker_cluster(test, 3, opts).await? else {
        return Ok(());
    };
    eprintln!("{} is alone in zone b", agent_name(alone));
    let name = unique_name("ha");
    let spec = ServiceSpec { strategy: "high-availability".to_string(), ..sleeper(&name, 2) };
    let service = cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 2, CONVERGE_DEADLINE).await?;
    let zones = count_by_zone(&cluster, &tasks)?;
    assert_eq!(
        zones,
        BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1)]),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );

    // Zones stay even as the service grows, so the lone zone-b node gets
    // as many tasks as both zone-a nodes together.
    cluster.scale_acked(&name, 4, CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 4, CONVERGE_DEADLINE).await?;
    let zones = count_by_zone(&cluster, &tasks)?;
    assert_eq!(
        zones,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]),
        "{}\nnodes:\n{}",
        describe(&tasks),
        cluster.explain_nodes().await
    );
    let zone_a: Vec<String> = (0..3).filter(|&i| i != alone).map(agent_name).collect();
    let per_node = count_by_node(&tasks);
    for node in &zone_a {
        assert_eq!(
            per_node.get(node),
            Some(&1),
            "zone a spreads over its nodes too:\n{}\nnodes:\n{}",
            describe(&tasks),
            cluster.explain_nodes().await
        );
    }
    check_containers_match(&engine, &service.id, &tasks.iter().collect::<Vec<_>>()).await?;
    Ok(())
}
