//! Agents and managers that die under a running service: an agent killed
//! with SIGKILL has its node marked down and its tasks moved, and when it
//! comes back it stops the stale copies; an agent restarted quickly adopts
//! its running containers instead of starting new ones; and a leader killed
//! in the middle of a scale-up leaves exactly one task and one container
//! per slot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use cluster_tests::proto::{ServiceSpec, Task};
use cluster_tests::workload::{
    agent_name, check_containers_match, check_containers_match_except, count_by_node, describe, describe_containers,
    docker_cluster, is_live, live, running, sleeper, unique_name,
};
use cluster_tests::{request_id, seed, wait_until, AgentOpts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_killed_agent_is_marked_down_and_its_tasks_move_to_the_other_agents() -> Result<()> {
    let test = "a_killed_agent_is_marked_down_and_its_tasks_move_to_the_other_agents";
    let mut rng = StdRng::seed_from_u64(seed());
    let Some((engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("lost");
    let service = cluster.create_acked(sleeper(&name, 6), &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;

    let victim = rng.gen_range(0..3);
    let victim_name = cluster.agent(victim).name().to_string();
    let victim_id = cluster.node_id(victim)?.to_string();
    let lost: BTreeSet<String> = tasks.iter().filter(|t| t.node_id == victim_id).map(|t| t.id.clone()).collect();
    eprintln!("killing agent {victim_name} with {} tasks", lost.len());
    cluster.kill_agent(victim)?;

    let node = wait_until(&format!("node {victim_name} to be marked down"), CONVERGE_DEADLINE, || async {
        let node = cluster.node(&victim_name).await?;
        ensure!(node.status == "down", "node {victim_name} is {}", node.status);
        Ok(node)
    })
    .await?;
    eprintln!("{victim_name} is down: {:?}", node.status_message);

    let survivors: BTreeMap<String, usize> = (0..3).filter(|&i| i != victim).map(|i| (agent_name(i), 3)).collect();
    wait_until("six tasks running on the two other agents", CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let running = running(&tasks);
        let on_victim = live(&tasks).into_iter().filter(|t| t.node_id == victim_id).count();
        if on_victim > 0 || live(&tasks).len() != 6 || count_by_node(running.iter().copied()) != survivors {
            bail!("{on_victim} live tasks still on {victim_name}:\n{}", describe(&tasks));
        }
        // Nobody is left to stop the dead agent's containers; the others
        // run exactly the tasks placed on them.
        check_containers_match_except(&engine, &service.id, &running, Some(&victim_id)).await?;
        Ok(())
    })
    .await?;
    let tasks = cluster.tasks(&name).await?;
    let still_live: Vec<&Task> = tasks.iter().filter(|t| lost.contains(&t.id) && is_live(t)).collect();
    assert!(still_live.is_empty(), "tasks of the dead node are still live:\n{}", describe(still_live));
    Ok(())
}

#[tokio::test]
async fn an_agent_back_after_its_node_was_marked_down_stops_its_stale_containers() -> Result<()> {
    let test = "an_agent_back_after_its_node_was_marked_down_stops_its_stale_containers";
    let mut rng = StdRng::seed_from_u64(seed());
    let Some((engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("stale");
    let service = cluster.create_acked(sleeper(&name, 6), &request_id(), CONVERGE_DEADLINE).await?;
    cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;

    let victim = rng.gen_range(0..3);
    let victim_name = cluster.agent(victim).name().to_string();
    let victim_id = cluster.node_id(victim)?.to_string();
    eprintln!("killing agent {victim_name} until its node is down, then starting it again");
    cluster.kill_agent(victim)?;
    wait_until(&format!("node {victim_name} to be marked down"), CONVERGE_DEADLINE, || async {
        let node = cluster.node(&victim_name).await?;
        ensure!(node.status == "down", "node {victim_name} is {}", node.status);
        Ok(())
    })
    .await?;
    let moved = wait_until("six tasks running on the two other agents", CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let running: Vec<Task> = running(&tasks).into_iter().cloned().collect();
        ensure!(running.len() == 6 && running.iter().all(|t| t.node_id != victim_id), "not yet:\n{}", describe(&tasks));
        Ok(running)
    })
    .await?;
    let stale = engine.node_containers(&victim_id).await?;
    ensure!(
        stale.iter().any(|c| c.is_running()),
        "the dead agent's containers should still run:\n{}",
        describe_containers(&stale)
    );

    cluster.restart_agent(victim).await?;
    wait_until(&format!("{victim_name} to stop its stale copies"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let running = running(&tasks);
        ensure!(live(&tasks).len() == 6 && running.len() == 6, "tasks changed:\n{}", describe(&tasks));
        check_containers_match(&engine, &service.id, &running).await?;
        Ok(())
    })
    .await?;
    let tasks = cluster.tasks(&name).await?;
    let ids = |tasks: &[&Task]| tasks.iter().map(|t| t.id.clone()).collect::<BTreeSet<String>>();
    assert_eq!(
        ids(&running(&tasks)),
        ids(&moved.iter().collect::<Vec<_>>()),
        "the returning node changed where tasks run:\n{}",
        describe(&tasks)
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_running_containers_instead_of_starting_new_ones() -> Result<()> {
    let test = "a_restarted_agent_adopts_its_running_containers_instead_of_starting_new_ones";
    let mut rng = StdRng::seed_from_u64(seed());
    let Some((engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("adopted");
    let service = cluster.create_acked(sleeper(&name, 6), &request_id(), CONVERGE_DEADLINE).await?;
    let before = cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;

    let victim = rng.gen_range(0..3);
    let victim_name = cluster.agent(victim).name().to_string();
    let victim_id = cluster.node_id(victim)?.to_string();
    let mut containers_before: Vec<String> =
        engine.node_containers(&victim_id).await?.into_iter().map(|c| c.id).collect();
    containers_before.sort();
    eprintln!("restarting agent {victim_name}, which runs {} containers", containers_before.len());
    // Restarted well within the node-down grace period (1.5 s by default),
    // so the cluster keeps the node's tasks where they are.
    cluster.kill_agent(victim)?;
    cluster.restart_agent(victim).await?;

    // A task placed on the node after the restart runs only once the agent
    // has taken in its full assignment set, adoption included.
    let probe = unique_name("probe");
    let probe_spec = ServiceSpec { replicas: None, every_node: true, ..sleeper(&probe, 0) };
    cluster.create_acked(probe_spec, &request_id(), CONVERGE_DEADLINE).await?;
    cluster.wait_running(&probe, 3, CONVERGE_DEADLINE).await?;

    let after = cluster.wait_running(&name, 6, CONVERGE_DEADLINE).await?;
    let ids = |tasks: &[Task]| -> BTreeMap<String, String> {
        tasks.iter().map(|t| (t.id.clone(), t.container_id.clone())).collect()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "the tasks (and their containers) changed across the agent restart (had the restart taken longer than \
         the node-down grace period, the node would have been marked down and its tasks moved):\nbefore:\n{}\n\
         after:\n{}",
        describe(&before),
        describe(&after)
    );
    let containers = check_containers_match(&engine, &service.id, &after.iter().collect::<Vec<_>>()).await?;
    let mut on_victim: Vec<String> =
        containers.iter().filter(|c| c.node_id() == victim_id).map(|c| c.id.clone()).collect();
    on_victim.sort();
    let service_before: Vec<String> = {
        let mut v: Vec<String> =
            before.iter().filter(|t| t.node_id == victim_id).map(|t| t.container_id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        on_victim,
        service_before,
        "{victim_name} should run exactly the containers it ran before:\n{}",
        describe_containers(&containers)
    );
    assert!(
        service_before.iter().all(|id| containers_before.contains(id)),
        "containers before the restart: {containers_before:?}"
    );
    Ok(())
}

/// How far a scale-up has got when the leader is killed.
#[derive(Debug, Clone, Copy)]
enum ScalePhase {
    /// Right after the scale was acknowledged.
    Acknowledged,
    /// The orchestrator has created the new tasks.
    TasksCreated,
    /// The scheduler has placed at least one new task.
    SomeAssigned,
    /// At least one new task runs.
    SomeRunning,
}

#[tokio::test]
async fn killing_the_leader_during_a_scale_up_leaves_one_task_and_one_container_per_slot() -> Result<()> {
    let test = "killing_the_leader_during_a_scale_up_leaves_one_task_and_one_container_per_slot";
    let mut rng = StdRng::seed_from_u64(seed());
    let phase = [ScalePhase::Acknowledged, ScalePhase::TasksCreated, ScalePhase::SomeAssigned, ScalePhase::SomeRunning]
        [rng.gen_range(0..4)];
    let Some((engine, mut cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("scale");
    let service = cluster.create_acked(sleeper(&name, 3), &request_id(), CONVERGE_DEADLINE).await?;
    let first = cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;
    let first_ids: BTreeSet<String> = first.iter().map(|t| t.id.clone()).collect();

    cluster.scale_acked(&name, 9, CONVERGE_DEADLINE).await?;
    let new_tasks =
        |tasks: &[Task]| -> Vec<Task> { tasks.iter().filter(|t| !first_ids.contains(&t.id)).cloned().collect() };
    wait_until(&format!("the scale-up to reach {phase:?}"), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let new = new_tasks(&tasks);
        let reached = match phase {
            ScalePhase::Acknowledged => true,
            ScalePhase::TasksCreated => !new.is_empty(),
            ScalePhase::SomeAssigned => new.iter().any(|t| !t.node_id.is_empty()),
            ScalePhase::SomeRunning => new.iter().any(|t| t.state == "running"),
        };
        ensure!(reached, "not there yet:\n{}", describe(&tasks));
        Ok(())
    })
    .await?;
    let leader = cluster.leader().await?;
    eprintln!("killing leader {} at {phase:?}", cluster.manager(leader).name());
    cluster.kill(leader)?;
    cluster.leader().await?;

    let tasks = cluster.wait_running(&name, 9, CONVERGE_DEADLINE).await?;
    let slots: BTreeSet<u32> = tasks.iter().map(|t| t.slot).collect();
    assert_eq!(slots, (1..=9).collect::<BTreeSet<u32>>(), "one live task per slot:\n{}", describe(&tasks));
    // Nothing failed, so every task ever created is live, unless a node
    // missed its grace period around the leader change (a loaded machine)
    // and had its tasks orphaned and replaced: legitimate, and visible.
    let all = cluster.tasks(&name).await?;
    let extra: Vec<&Task> = all.iter().filter(|t| !is_live(t)).collect();
    assert!(
        extra.iter().all(|t| t.state == "orphaned"),
        "tasks that are neither live nor lost with their node:\n{}\nnodes:\n{}",
        describe(&all),
        cluster.explain_nodes().await
    );
    if !extra.is_empty() {
        eprintln!("a node went down around the leader change; its tasks were replaced:\n{}", describe(extra));
    }
    let containers = wait_until("one running container per slot", CONVERGE_DEADLINE, || async {
        check_containers_match(&engine, &service.id, &tasks.iter().collect::<Vec<_>>()).await
    })
    .await?;
    let container_slots: BTreeSet<u32> =
        containers.iter().filter(|c| c.is_running()).filter_map(|c| c.slot()).collect();
    assert_eq!(container_slots, slots, "{}", describe_containers(&containers));
    Ok(())
}
