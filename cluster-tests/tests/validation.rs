//! Refused writes: an invalid spec is refused with `InvalidArgument` naming
//! the field and never becomes a Raft entry; an update based on a stale
//! version is refused with `FailedPrecondition`.

use anyhow::{Context, Result};
use cluster_tests::proto::{
    CreateServiceRequest, EnvVar, GetServiceRequest, PortMapping, ReadConsistency, ServiceSpec, UpdateServiceRequest,
};
use cluster_tests::{list_services, names, request_id, service_spec, Cluster, ClusterOpts};

#[tokio::test]
async fn an_invalid_spec_is_refused_naming_the_field_and_writes_nothing() -> Result<()> {
    let cluster = Cluster::start(3, ClusterOpts::default()).await?;
    let leader = cluster.manager(cluster.leader().await?);
    let follower =
        cluster.managers().iter().find(|m| m.id() != leader.id()).context("three managers have followers")?;
    let mut client = follower.client().await?;
    // No replicas: the leader's orchestrator and scheduler have nothing to
    // write for it, so the log only grows if a refused spec got in.
    let valid = ServiceSpec { replicas: Some(0), ..service_spec("valid") };
    client
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(valid) })
        .await
        .context("creating the one valid service")?;
    let log_before = leader.status().await?.last_log_index;

    let invalid: Vec<(&str, Option<ServiceSpec>)> = vec![
        ("spec", None),
        ("name", Some(service_spec("Not A Name!"))),
        ("name", Some(service_spec(""))),
        ("image", Some(ServiceSpec { image: String::new(), ..service_spec("no-image") })),
        ("replicas", Some(ServiceSpec { replicas: Some(-1), ..service_spec("negative") })),
        ("replicas", Some(ServiceSpec { replicas: Some(1_000_000), ..service_spec("too-many") })),
        (
            "ports[0].host_port",
            Some(ServiceSpec {
                ports: vec![PortMapping { host_port: 0, container_port: 80, protocol: String::new() }],
                ..service_spec("port-zero")
            }),
        ),
        (
            "env[0]",
            Some(ServiceSpec {
                env: vec![EnvVar { name: String::new(), value: "x".into() }],
                ..service_spec("nameless-env")
            }),
        ),
    ];
    for (field, spec) in invalid {
        let result = client.create_service(CreateServiceRequest { request_id: request_id(), spec: spec.clone() }).await;
        let status = match result {
            Ok(reply) => panic!("invalid spec (bad {field}) accepted: {spec:?} -> {:?}", reply.into_inner()),
            Err(status) => status,
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "bad {field}: {status}");
        assert!(status.message().contains(field), "the refusal of a bad {field} does not name the field: {status}");
    }

    let after = names(&list_services(leader.addr(), ReadConsistency::Linearizable).await?);
    assert_eq!(after, ["valid".to_string()].into(), "services after refusals");
    assert_eq!(leader.status().await?.last_log_index, log_before, "refused specs were appended to the Raft log");
    Ok(())
}

#[tokio::test]
async fn an_update_based_on_a_stale_version_is_refused() -> Result<()> {
    let cluster = Cluster::start(1, ClusterOpts::default()).await?;
    let mut client = cluster.manager(0).client().await?;
    let created = client
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("web")) })
        .await?
        .into_inner()
        .service
        .context("no service in the reply")?;
    let update = |image: &str, expected_version: u64| UpdateServiceRequest {
        request_id: request_id(),
        name: "web".into(),
        spec: Some(ServiceSpec { image: image.into(), ..service_spec("web") }),
        expected_version,
    };
    let updated = client
        .update_service(update("nginx:1.28", created.version))
        .await
        .context("update based on the current version")?
        .into_inner()
        .service
        .context("no service in the reply")?;
    assert!(updated.version > created.version);

    let stale = client.update_service(update("nginx:1.29", created.version)).await;
    match stale {
        Ok(reply) => panic!(
            "an update based on version {} was accepted at version {}: {:?}",
            created.version,
            updated.version,
            reply.into_inner()
        ),
        Err(status) => assert_eq!(status.code(), tonic::Code::FailedPrecondition, "stale update: {status}"),
    }

    let current = client
        .get_service(GetServiceRequest { name: "web".into(), consistency: ReadConsistency::Linearizable as i32 })
        .await?
        .into_inner()
        .service
        .context("no service in the reply")?;
    assert_eq!(current.version, updated.version);
    assert_eq!(current.spec.map(|s| s.image), Some("nginx:1.28".to_string()));
    Ok(())
}
