//! `Watch` streams the changes a manager applies: a service created through
//! the leader shows up on a follower's watch, and so does its removal.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cluster_tests::proto::watch_event::Change;
use cluster_tests::proto::{CreateServiceRequest, RemoveServiceRequest, WatchEvent, WatchRequest};
use cluster_tests::{request_id, service_spec, Cluster, ClusterOpts};
use tokio::time::Instant;
use tonic::Streaming;

const EVENT_DEADLINE: Duration = Duration::from_secs(5);

/// The next event on `stream` for which `wanted` holds, skipping others.
async fn next_matching(
    stream: &mut Streaming<WatchEvent>,
    what: &str,
    wanted: impl Fn(&WatchEvent) -> bool,
) -> Result<WatchEvent> {
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("no {what} within {EVENT_DEADLINE:?}"))?
            .with_context(|| format!("the watch failed before {what}"))?;
        match event {
            None => bail!("the watch ended before {what}"),
            Some(event) if wanted(&event) => return Ok(event),
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn a_follower_watch_delivers_a_created_and_a_removed_service() -> Result<()> {
    let cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.manager(cluster.leader().await?);
    let follower =
        cluster.managers().iter().find(|m| m.id() != leader.id()).context("three managers have followers")?;
    let mut stream = follower
        .client()
        .await?
        .watch(WatchRequest { from_index: 0 })
        .await
        .context("starting the watch")?
        .into_inner();

    let mut writer = leader.client().await?;
    let created = writer
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("watched")) })
        .await?
        .into_inner()
        .service
        .context("no service in the reply")?;
    let upserted = next_matching(
        &mut stream,
        "service_upserted for watched",
        |e| matches!(&e.change, Some(Change::ServiceUpserted(s)) if s.name == "watched"),
    )
    .await?;
    let Some(Change::ServiceUpserted(service)) = upserted.change else {
        bail!("matched a different change");
    };
    assert_eq!(service.id, created.id);
    assert_eq!(upserted.index, created.version);

    let removed = writer
        .remove_service(RemoveServiceRequest { request_id: request_id(), name: "watched".into() })
        .await?
        .into_inner();
    let event = next_matching(
        &mut stream,
        "service_removed for watched",
        |e| matches!(&e.change, Some(Change::ServiceRemoved(r)) if r.name == "watched"),
    )
    .await?;
    assert_eq!(event.index, removed.index);
    Ok(())
}
