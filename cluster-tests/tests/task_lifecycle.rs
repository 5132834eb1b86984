//! What becomes of a task's container on real agents: a container killed
//! behind berth's back is replaced in its slot, autodestroy removes tasks
//! that finished well together with their containers, and a missing image
//! is a clear rejection rather than a silent pull or a retry loop nobody
//! understands.

use std::time::Duration;

use anyhow::{bail, Result};
use cluster_tests::proto::ServiceSpec;
use cluster_tests::workload::{
    agent_name, check_containers_match, describe, describe_containers, docker_cluster, live, running, sleeper,
    unique_name,
};
use cluster_tests::{request_id, seed, wait_until, AgentOpts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_task_whose_container_is_killed_is_replaced_in_its_slot() -> Result<()> {
    let test = "a_task_whose_container_is_killed_is_replaced_in_its_slot";
    let mut rng = StdRng::seed_from_u64(seed());
    let Some((engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("killed");
    let service = cluster.create_acked(sleeper(&name, 3), &request_id(), CONVERGE_DEADLINE).await?;
    let tasks = cluster.wait_running(&name, 3, CONVERGE_DEADLINE).await?;
    let victim = tasks[rng.gen_range(0..tasks.len())].clone();
    eprintln!("killing the container of slot {} (task {}) on {}", victim.slot, victim.id, victim.node_name);
    engine.kill(&victim.container_id).await?;

    wait_until(&format!("a new task to run in slot {}", victim.slot), CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        let Some(old) = tasks.iter().find(|t| t.id == victim.id) else {
            bail!("the killed task {} is gone from the list:\n{}", victim.id, describe(&tasks));
        };
        if old.state != "failed" {
            bail!("the killed task is {}, not failed:\n{}", old.state, describe(&tasks));
        }
        let running = running(&tasks);
        let replacement = running.iter().find(|t| t.slot == victim.slot && t.id != victim.id);
        if live(&tasks).len() != 3 || running.len() != 3 || replacement.is_none() {
            bail!("slot {} has no running replacement yet:\n{}", victim.slot, describe(&tasks));
        }
        check_containers_match(&engine, &service.id, &running).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn autodestroy_on_success_removes_tasks_that_exit_zero_and_their_containers() -> Result<()> {
    let test = "autodestroy_on_success_removes_tasks_that_exit_zero_and_their_containers";
    let Some((engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("oneshot");
    let spec = ServiceSpec {
        command: ["sh", "-c", "exit 0"].map(String::from).to_vec(),
        restart: "on-failure".to_string(),
        autodestroy: "on-success".to_string(),
        ..sleeper(&name, 3)
    };
    let service = cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;

    let finished = |tasks: &[cluster_tests::proto::Task]| -> Result<()> {
        let complete = tasks.iter().filter(|t| t.state == "complete" && t.exit_code == Some(0)).count();
        if tasks.len() != 3 || complete != 3 {
            bail!("want 3 tasks, all complete with exit code 0, and no replacement:\n{}", describe(tasks));
        }
        Ok(())
    };
    wait_until("every task to complete and its container to go", CONVERGE_DEADLINE, || async {
        finished(&cluster.tasks(&name).await?)?;
        let containers = engine.service_containers(&service.id).await?;
        if !containers.is_empty() {
            bail!("containers left behind:\n{}", describe_containers(&containers));
        }
        Ok(())
    })
    .await?;

    // Another service converging means the orchestrator has run since: had
    // it meant to replace the finished tasks, it would have by now.
    let later = unique_name("later");
    cluster.create_acked(sleeper(&later, 1), &request_id(), CONVERGE_DEADLINE).await?;
    cluster.wait_running(&later, 1, CONVERGE_DEADLINE).await?;
    finished(&cluster.tasks(&name).await?)?;
    let containers = engine.service_containers(&service.id).await?;
    assert!(containers.is_empty(), "containers came back:\n{}", describe_containers(&containers));
    Ok(())
}

#[tokio::test]
async fn a_task_whose_image_is_missing_is_rejected_with_a_message_saying_so() -> Result<()> {
    let test = "a_task_whose_image_is_missing_is_rejected_with_a_message_saying_so";
    let Some((engine, cluster)) = docker_cluster(test, 3, |i| AgentOpts::named(agent_name(i))).await? else {
        return Ok(());
    };
    let name = unique_name("noimage");
    let image = format!("berth-test/{}:missing", unique_name("no-such-image"));
    let spec = ServiceSpec { image: image.clone(), ..sleeper(&name, 1) };
    let service = cluster.create_acked(spec, &request_id(), CONVERGE_DEADLINE).await?;

    let rejected = wait_until("the task to be rejected", CONVERGE_DEADLINE, || async {
        let tasks = cluster.tasks(&name).await?;
        match tasks.iter().find(|t| t.state == "rejected") {
            Some(task) => Ok(task.clone()),
            None => bail!("no rejected task yet:\n{}", describe(&tasks)),
        }
    })
    .await?;
    assert!(
        rejected.message.contains("not found") && rejected.message.contains(&image),
        "the rejection should say that image {image} was not found: {:?}",
        rejected.message
    );
    let containers = engine.service_containers(&service.id).await?;
    assert!(containers.is_empty(), "a container exists without its image:\n{}", describe_containers(&containers));
    Ok(())
}
