//! Hostile input on the manager's port: random bytes, idle connections and
//! an oversized request are refused without disturbing the service for
//! well-behaved clients.

use std::time::Duration;

use anyhow::{Context, Result};
use cluster_tests::proto::{CreateServiceRequest, EnvVar, ReadConsistency, ServiceSpec};
use cluster_tests::{list_services, names, request_id, seed, service_spec, Cluster, ClusterOpts};
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 client preface: with it, the garbage reaches the frame parser
/// instead of being refused at the first byte.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const GARBAGE_CONNECTIONS: usize = 16;
const MAX_GARBAGE_BYTES: usize = 64 * 1024;
/// How long to wait for the manager to close a garbage connection; whether
/// it does is not asserted, only that it keeps serving others.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// Twice tonic's default 4 MiB limit on a decoded message.
const OVERSIZED_ENV_BYTES: usize = 8 * 1024 * 1024;

#[tokio::test]
async fn garbage_bytes_on_the_port_do_not_disturb_the_manager() -> Result<()> {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::start(1, ClusterOpts::default()).await?;
    let manager = cluster.manager(0);

    // An idle connection stays open throughout.
    let _idle = TcpStream::connect(manager.addr()).await?;
    for round in 0..GARBAGE_CONNECTIONS {
        let mut garbage = if round % 2 == 0 { HTTP2_PREFACE.to_vec() } else { Vec::new() };
        let len = rng.gen_range(1..=MAX_GARBAGE_BYTES);
        let start = garbage.len();
        garbage.resize(start + len, 0);
        rng.fill_bytes(&mut garbage[start..]);
        let mut stream = TcpStream::connect(manager.addr())
            .await
            .with_context(|| format!("garbage connection {round} (seed {seed})"))?;
        // The manager may close the connection before all of it is written.
        let _ = stream.write_all(&garbage).await;
        let _ = stream.shutdown().await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(CLOSE_WAIT, stream.read_to_end(&mut reply)).await;
        manager
            .status()
            .await
            .with_context(|| format!("ClusterStatus after garbage connection {round} (seed {seed})"))?;
    }

    manager
        .client()
        .await?
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("after-garbage")) })
        .await
        .with_context(|| format!("a write after the garbage (seed {seed})"))?;
    Ok(())
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_manager_keeps_serving() -> Result<()> {
    let cluster = Cluster::start(1, ClusterOpts::default()).await?;
    let manager = cluster.manager(0);
    let mut client = manager.client().await?;

    let huge = ServiceSpec {
        env: vec![EnvVar { name: "HUGE".into(), value: "x".repeat(OVERSIZED_ENV_BYTES) }],
        ..service_spec("huge")
    };
    let result = client.create_service(CreateServiceRequest { request_id: request_id(), spec: Some(huge) }).await;
    match result {
        Ok(_) => panic!("an {OVERSIZED_ENV_BYTES}-byte env value was accepted"),
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::InvalidArgument
            ),
            "an oversized request was refused with {status}"
        ),
    }

    // Still serving, on a fresh connection and on the old one.
    manager.status().await?;
    client
        .create_service(CreateServiceRequest { request_id: request_id(), spec: Some(service_spec("normal")) })
        .await
        .context("a normal write after the oversized one")?;
    let services = names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?);
    assert_eq!(services, ["normal".to_string()].into());
    Ok(())
}
