//! Managers killed with SIGKILL: the majority elects a new leader, keeps
//! every acknowledged write and keeps accepting new ones, and a killed
//! manager restarts from its data dir and catches up. A paused leader does
//! not serve stale reads when it wakes, and a cluster killed entirely comes
//! back from disk.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::proto::{CreateServiceRequest, ReadConsistency};
use cluster_tests::{
    list_services, names, request_id, retryable, service_spec, wait_until, Cluster, ClusterOpts, GiveUp, Manager,
};

/// How long a survivor may take to serve reads, or a restarted manager to
/// catch up, after a failure.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

/// Creates `name` through `manager` in one call, with no retry.
async fn create_through(manager: &Manager, name: &str) -> Result<()> {
    let reply = manager
        .client()
        .await?
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec(name)) })
        .await
        .with_context(|| format!("CreateService {name} through {}", manager.name()))?
        .into_inner();
    let created = reply.service.context("CreateService replied without a service")?;
    ensure!(created.name == name, "created {name} but the reply names {}", created.name);
    Ok(())
}

/// Creates `name` through `manager` only, resending the same request while
/// the answer is retryable (the manager is still learning of a new leader).
async fn create_retrying_through(manager: &Manager, name: &str) -> Result<()> {
    let request = CreateServiceRequest { request_id: request_id(), spec: Some(service_spec(name)) };
    wait_until(&format!("CreateService {name} through {}", manager.name()), RECOVERY_DEADLINE, || async {
        match manager.client().await?.create_service(request.clone()).await {
            Ok(_) => Ok(()),
            Err(status) if retryable(&status) => bail!("{status}"),
            Err(status) => Err(GiveUp(format!("refused: {status}")).into()),
        }
    })
    .await
}

/// Waits until a linearizable read on `manager` succeeds and returns the names.
async fn linearizable_names(manager: &Manager) -> Result<BTreeSet<String>> {
    wait_until(&format!("a linearizable ListServices on {}", manager.name()), RECOVERY_DEADLINE, || async {
        Ok(names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?))
    })
    .await
}

#[tokio::test]
async fn three_managers_keep_every_acknowledged_write_when_the_leader_is_killed() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;

    // Writes through every manager: followers forward them to the leader.
    let mut acked = BTreeSet::new();
    for i in 0..cluster.len() {
        for k in 0..3 {
            let name = format!("before-{i}-{k}");
            create_through(cluster.manager(i), &name).await?;
            acked.insert(name);
        }
    }

    let old_leader = cluster.leader().await?;
    let old_leader_name = cluster.manager(old_leader).name().to_string();
    cluster.kill(old_leader)?;
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader, "a killed manager cannot lead");

    for i in cluster.running() {
        let seen = linearizable_names(cluster.manager(i)).await?;
        let lost: Vec<_> = acked.difference(&seen).collect();
        assert!(
            lost.is_empty(),
            "{} lost acknowledged writes {lost:?} after {old_leader_name} (the leader) was killed; it has {seen:?}",
            cluster.manager(i).name()
        );
    }

    // Writes continue, through the new leader and the remaining follower.
    for i in cluster.running() {
        let name = format!("after-{i}");
        create_through(cluster.manager(i), &name).await?;
        acked.insert(name);
    }

    cluster.restart(old_leader).await?;
    let restarted = cluster.manager(old_leader);
    let caught_up = wait_until(
        &format!("restarted {old_leader_name} to apply every acknowledged write"),
        RECOVERY_DEADLINE,
        || async {
            let seen = names(&list_services(restarted.addr(), ReadConsistency::Local).await?);
            let missing: Vec<_> = acked.difference(&seen).collect();
            ensure!(missing.is_empty(), "still missing {missing:?}");
            Ok(seen)
        },
    )
    .await?;
    assert_eq!(caught_up, acked, "the restarted manager has services nobody created");
    Ok(())
}

#[tokio::test]
async fn five_managers_keep_accepting_writes_after_two_fail() -> Result<()> {
    let mut cluster = Cluster::start(5, ClusterOpts::default()).await?;
    create_through(cluster.manager(0), "before").await?;

    let leader = cluster.leader().await?;
    let follower =
        cluster.running().into_iter().find(|&i| i != leader).context("a five-manager cluster has followers")?;
    cluster.kill(leader)?;
    cluster.kill(follower)?;
    cluster.leader().await?;

    let mut acked = BTreeSet::from(["before".to_string()]);
    for i in cluster.running() {
        let name = format!("after-{i}");
        create_through(cluster.manager(i), &name).await?;
        acked.insert(name);
    }
    for i in cluster.running() {
        let seen = linearizable_names(cluster.manager(i)).await?;
        assert_eq!(seen, acked, "{} after losing two of five managers", cluster.manager(i).name());
    }
    Ok(())
}

#[tokio::test]
async fn a_cluster_whose_every_manager_was_killed_restarts_from_disk_with_its_services() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let mut acked = BTreeSet::new();
    for k in 0..5 {
        let name = format!("durable-{k}");
        create_through(cluster.manager(k % cluster.len()), &name).await?;
        acked.insert(name);
    }
    for i in cluster.running() {
        cluster.kill(i)?;
    }
    // In reverse order, so the first to come back is not the first manager.
    for i in (0..cluster.len()).rev() {
        cluster.restart(i).await?;
    }
    let leader = cluster.leader().await?;
    for i in cluster.running() {
        let seen = linearizable_names(cluster.manager(i)).await?;
        assert_eq!(seen, acked, "{} after a full restart", cluster.manager(i).name());
    }
    create_through(cluster.manager(leader), "after-restart").await?;
    Ok(())
}

#[tokio::test]
async fn a_paused_leader_never_serves_a_stale_linearizable_read_after_it_resumes() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    create_through(cluster.manager(0), "before-pause").await?;
    let old_leader = cluster.leader().await?;
    cluster.pause(old_leader)?;
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader, "a paused manager cannot lead");
    create_through(cluster.manager(new_leader), "during-pause").await?;

    // Resumed, the old leader may still believe it leads; a linearizable
    // read must either be refused or see the write it missed.
    cluster.resume(old_leader)?;
    let resumed = cluster.manager(old_leader);
    match list_services(resumed.addr(), ReadConsistency::Linearizable).await {
        Ok(services) => assert!(
            names(&services).contains("during-pause"),
            "{} served a stale linearizable read right after SIGCONT: {:?}",
            resumed.name(),
            names(&services)
        ),
        Err(refused) => eprintln!("first linearizable read after SIGCONT refused: {refused:#}"),
    }

    // It then follows the new leader: it forwards writes and catches up.
    create_retrying_through(resumed, "after-resume").await?;
    wait_until(&format!("{} to apply the writes it missed", resumed.name()), RECOVERY_DEADLINE, || async {
        let seen = names(&list_services(resumed.addr(), ReadConsistency::Local).await?);
        ensure!(seen.contains("during-pause") && seen.contains("after-resume"), "has {seen:?}");
        Ok(())
    })
    .await?;
    cluster.leader().await?;
    Ok(())
}
