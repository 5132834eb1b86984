//! Removing managers with `berth manager rm`: the rest of the cluster keeps
//! a leader and keeps accepting writes, whether the removed manager was a
//! follower or the leader itself.

use anyhow::{ensure, Context, Result};
use cluster_tests::proto::{CreateServiceRequest, ReadConsistency};
use cluster_tests::{cli, list_services, names, request_id, service_spec, voters, wait_until, Cluster, ClusterOpts};
use std::time::Duration;

const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(10);

/// Removes manager `removed` with the CLI sent to manager `via`, waits until
/// the others see two voters without it, stops its process, and checks that
/// the remaining two elect a leader and accept a write.
async fn remove_and_keep_writing(cluster: &mut Cluster, removed: usize, via: usize) -> Result<()> {
    let removed_id = cluster.manager(removed).id().context("every started manager has an id")?;
    let output =
        cli(&["manager", "rm", &removed_id.to_string(), "--manager", &cluster.manager(via).addr().to_string()]).await?;
    ensure!(output.status.success(), "berth manager rm {removed_id} failed ({}): {}", output.status, output.stderr);

    let remaining: Vec<usize> = (0..cluster.len()).filter(|&i| i != removed).collect();
    for &i in &remaining {
        let manager = cluster.manager(i);
        wait_until(&format!("{} to see manager {removed_id} removed", manager.name()), MEMBERSHIP_DEADLINE, || async {
            let status = manager.status().await?;
            ensure!(
                voters(&status) == 2 && status.members.iter().all(|m| m.id != removed_id),
                "members {:?}",
                status.members
            );
            Ok(())
        })
        .await?;
    }
    cluster.kill(removed)?;
    let leader = cluster.leader().await?;
    assert_ne!(leader, removed);

    let mut client = cluster.manager(leader).client().await?;
    client
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("after-removal")) })
        .await
        .context("a write after the removal")?;
    for i in remaining {
        let seen = names(&list_services(cluster.manager(i).addr(), ReadConsistency::Linearizable).await?);
        assert!(seen.contains("after-removal"), "{} has {seen:?}", cluster.manager(i).name());
    }
    Ok(())
}

#[tokio::test]
async fn removing_a_follower_leaves_two_managers_that_keep_writing() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.leader().await?;
    let mut followers = (0..cluster.len()).filter(|&i| i != leader);
    let removed = followers.next().context("three managers have followers")?;
    let via = followers.next().context("three managers have two followers")?;
    remove_and_keep_writing(&mut cluster, removed, via).await
}

#[tokio::test]
async fn removing_the_leader_leaves_two_managers_that_elect_a_leader_and_keep_writing() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.leader().await?;
    let via = (0..cluster.len()).find(|&i| i != leader).context("three managers have followers")?;
    remove_and_keep_writing(&mut cluster, leader, via).await
}
