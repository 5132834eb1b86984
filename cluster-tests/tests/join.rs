//! Joining managers: a wrong or a worker token is refused and changes
//! nothing; a manager that joins after the log was compacted catches up from
//! a snapshot; managers report their release, raise the cluster version
//! to their level, and a manager of an older release cannot join.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cluster_tests::proto::{JoinManagerRequest, ReadConsistency};
use cluster_tests::{join_token, list_services, names, request_id, service_spec, wait_until, Cluster, ClusterOpts};

/// A refused joiner must give up by itself, not retry forever.
const REFUSED_JOIN_EXIT_DEADLINE: Duration = Duration::from_secs(10);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(15);

/// The membership as (id, address, voter), sorted.
fn membership(status: &cluster_tests::proto::ClusterStatusReply) -> BTreeSet<(u64, String, bool)> {
    status.members.iter().map(|m| (m.id, m.address.clone(), m.voter)).collect()
}

#[tokio::test]
async fn a_wrong_or_worker_token_cannot_join_as_manager_and_changes_nothing() -> Result<()> {
    let cluster = Cluster::start(1, ClusterOpts::default()).await?;
    let manager = cluster.manager(0);
    let before = manager.status().await?;
    let worker_token = join_token("worker", &manager.addr().to_string()).await?;
    let mut tampered = cluster.manager_token().to_string();
    let last = tampered.pop().context("the manager token is empty")?;
    tampered.push(if last == 'a' { 'b' } else { 'a' });

    let tokens = [("garbage", "not-a-token".to_string()), ("tampered", tampered), ("worker", worker_token)];
    for (kind, token) in &tokens {
        // Through the API, as the joining process does.
        let refused = manager
            .client()
            .await?
            .join_manager(JoinManagerRequest {
                token: token.clone(),
                advertise_address: "127.0.0.1:1".into(),
                node_id: 0,
                ..JoinManagerRequest::default()
            })
            .await;
        match refused {
            Ok(reply) => panic!("JoinManager with a {kind} token was accepted: {:?}", reply.into_inner()),
            // Text that is not a token at all may be refused as a bad
            // argument; a well-formed token that does not admit a manager
            // is a denied permission.
            Err(status) if *kind == "garbage" => assert!(
                matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::PermissionDenied),
                "JoinManager with a {kind} token: {status}"
            ),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "JoinManager with a {kind} token: {status}")
            }
        }

        // Through the CLI: the joiner exits non-zero and says why.
        let mut joiner = cluster.joiner(&format!("joiner-{kind}"), manager.addr(), token)?;
        joiner.start()?;
        let exit = joiner.wait_exit(REFUSED_JOIN_EXIT_DEADLINE).await?;
        assert!(!exit.success(), "`manager join` with a {kind} token exited with {exit}");
        let log = joiner.log_tail(40).to_lowercase();
        assert!(
            log.contains("token") || log.contains("permission"),
            "`manager join` with a {kind} token did not say why it failed:\n{log}"
        );
    }

    let after = manager.status().await?;
    assert_eq!(membership(&after), membership(&before), "refused joins changed the membership");
    assert_eq!(after.leader_id, before.leader_id);
    Ok(())
}

#[tokio::test]
async fn a_late_joiner_catches_up_from_a_snapshot() -> Result<()> {
    let opts = ClusterOpts { snapshot_threshold: Some(20), ..ClusterOpts::default() };
    let mut cluster = Cluster::start(3, opts).await?;
    let leader = cluster.manager(cluster.leader().await?);
    let mut client = leader.client().await?;
    let mut created = BTreeSet::new();
    for k in 0..100 {
        let name = format!("svc-{k:03}");
        client
            .create_service(cluster_tests::proto::CreateServiceRequest {
                request_id: request_id(),
                spec: Some(service_spec(&name)),
            })
            .await
            .with_context(|| format!("CreateService {name}"))?;
        created.insert(name);
    }

    let late = cluster.add_manager().await?;
    let late = cluster.manager(late);
    let seen = wait_until(&format!("{} to apply all 100 services", late.name()), CATCH_UP_DEADLINE, || async {
        let seen = names(&list_services(late.addr(), ReadConsistency::Local).await?);
        ensure!(seen.len() >= created.len(), "{} of {} services so far", seen.len(), created.len());
        Ok(seen)
    })
    .await?;
    assert_eq!(seen, created);
    let status = late.status().await?;
    assert_eq!(cluster_tests::voters(&status), 4, "the late joiner sees {:?}", status.members);
    // Caught up from a snapshot, not by replaying the whole log: the log
    // before the snapshot was purged, so a replay could not have happened.
    let log = std::fs::read_to_string(late.log_path()).context("reading the late joiner's log")?;
    ensure!(
        log.contains("installed a snapshot from the leader"),
        "the late joiner did not install a snapshot:\n{}",
        late.log_tail(20)
    );
    Ok(())
}

#[tokio::test]
async fn managers_report_their_release_and_raise_the_cluster_version_which_an_older_manager_cannot_join() -> Result<()>
{
    let cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let status = wait_until(
        "every manager to report its release and the cluster version to rise",
        CATCH_UP_DEADLINE,
        || async {
            let status = cluster.manager(0).status().await?;
            let versions: Vec<&str> = status.members.iter().map(|m| m.version.as_str()).collect();
            ensure!(versions.iter().all(|v| v.starts_with("0.")), "members report releases {versions:?}");
            ensure!(status.cluster_version != "0.1", "the cluster version is still {}", status.cluster_version);
            Ok(status)
        },
    )
    .await?;
    let release = &status.members[0].version;
    let level: String = release.split('.').take(2).collect::<Vec<_>>().join(".");
    assert_eq!(status.cluster_version, level, "three managers of {release} raise the cluster version to its level");

    // A manager of 0.1 says no release when it joins: refused, nothing allocated.
    let refused = cluster
        .manager(0)
        .client()
        .await?
        .join_manager(JoinManagerRequest {
            token: cluster.manager_token().to_string(),
            advertise_address: "127.0.0.1:1".into(),
            node_id: 0,
            version: String::new(),
        })
        .await;
    let status_error = refused.err().context("a manager of 0.1 joined a cluster at a higher version")?;
    assert_eq!(status_error.code(), tonic::Code::FailedPrecondition, "{status_error}");
    assert!(status_error.message().contains(&level), "the refusal names the cluster version: {status_error}");
    Ok(())
}
