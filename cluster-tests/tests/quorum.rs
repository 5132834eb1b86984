//! A manager that has lost the majority refuses writes quickly with
//! `Unavailable` and says why, instead of hanging the client.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster_tests::proto::CreateServiceRequest;
use cluster_tests::{request_id, service_spec, Cluster, ClusterOpts};

/// The bound is two seconds; the extra half second absorbs process
/// scheduling on a loaded test machine, not manager behaviour.
const REFUSAL_BOUND: Duration = Duration::from_millis(2_500);

/// Kills every manager but `survivor` and checks two writes to it in a row.
async fn lone_manager_refuses_writes(survivor_is_leader: bool) -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.leader().await?;
    let lone = if survivor_is_leader {
        leader
    } else {
        (0..cluster.len()).find(|&i| i != leader).context("three managers have followers")?
    };
    for i in cluster.running() {
        if i != lone {
            cluster.kill(i)?;
        }
    }
    let manager = cluster.manager(lone);
    let mut client = manager.client().await?;
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = client
            .create_service(CreateServiceRequest {
                request_id: request_id(),
                spec: Some(service_spec(&format!("lonely-{attempt}"))),
            })
            .await;
        let elapsed = started.elapsed();
        eprintln!("write {attempt} to the lone manager answered in {elapsed:?}: {result:?}");
        let status = match result {
            Ok(reply) => panic!(
                "write {attempt} to {} (alone of three) was acknowledged: {:?}",
                manager.name(),
                reply.into_inner()
            ),
            Err(status) => status,
        };
        assert_eq!(status.code(), tonic::Code::Unavailable, "write {attempt} to a lone {}: {status}", manager.name());
        assert!(
            elapsed < REFUSAL_BOUND,
            "write {attempt} to a lone {} took {elapsed:?} to be refused ({status})",
            manager.name()
        );
        let message = status.message().to_lowercase();
        assert!(
            ["quorum", "majority", "leader"].iter().any(|word| message.contains(word)),
            "the refusal does not say why: {status}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_former_leader_left_alone_refuses_writes_with_unavailable_within_two_seconds() -> Result<()> {
    lone_manager_refuses_writes(true).await
}

#[tokio::test]
async fn a_follower_left_alone_refuses_writes_with_unavailable_within_two_seconds() -> Result<()> {
    lone_manager_refuses_writes(false).await
}
