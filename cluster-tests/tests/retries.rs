//! Retried writes are applied exactly once, even when the retry reaches a
//! different manager after the leader that acknowledged them was killed:
//! request ids and their responses are part of the replicated state.

use std::time::Duration;

use anyhow::{Context, Result};
use cluster_tests::proto::{CreateServiceRequest, GetServiceRequest, ReadConsistency, ScaleServiceRequest};
use cluster_tests::{list_services, request_id, service_spec, Cluster, ClusterOpts};

const RETRY_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn writes_retried_after_the_leader_is_killed_are_applied_once() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.leader().await?;
    let mut client = cluster.manager(leader).client().await?;

    let create = CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("web")) };
    let created = client
        .create_service(create.clone())
        .await
        .context("first CreateService")?
        .into_inner()
        .service
        .context("no service in the reply")?;
    let scale = ScaleServiceRequest { request_id: request_id(), name: "web".into(), replicas: 3 };
    let scaled = client
        .scale_service(scale.clone())
        .await
        .context("first ScaleService")?
        .into_inner()
        .service
        .context("no service in the reply")?;
    assert!(scaled.version > created.version);

    cluster.kill(leader)?;

    // Both writes were acknowledged; they are resent as a client whose
    // replies were lost would resend them, and reach a survivor.
    let retried =
        cluster.create_acked(create.spec.clone().context("spec")?, &create.request_id, RETRY_DEADLINE).await?;
    assert_eq!(retried.id, created.id, "the retried CreateService made a second service");
    let rescaled = cluster
        .call_acked("ScaleService web=3", RETRY_DEADLINE, |mut client| {
            let scale = scale.clone();
            async move { client.scale_service(scale).await }
        })
        .await?
        .into_inner()
        .service
        .context("no service in the reply")?;
    assert_eq!(rescaled.version, scaled.version, "the retried ScaleService was applied again");

    let survivor = cluster.manager(cluster.leader().await?);
    let services = list_services(survivor.addr(), ReadConsistency::Linearizable).await?;
    let webs: Vec<_> = services.iter().filter(|s| s.name == "web").collect();
    assert_eq!(webs.len(), 1, "services after the retries: {services:?}");
    let current = survivor
        .client()
        .await?
        .get_service(GetServiceRequest { name: "web".into(), consistency: ReadConsistency::Linearizable as i32 })
        .await?
        .into_inner()
        .service
        .context("no service in the reply")?;
    assert_eq!(current.id, created.id);
    assert_eq!(current.version, scaled.version, "the version moved after the retries");
    assert_eq!(current.spec.and_then(|s| s.replicas), Some(3));
    Ok(())
}
