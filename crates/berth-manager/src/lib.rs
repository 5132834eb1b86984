//! The berth manager: one openraft node persisted in sled, the gRPC servers
//! (`ClusterApi`, `RaftService`, health, reflection) on one port, and the
//! forwarding of writes and linearizable reads to the leader.
//!
//! Invariant: the manager changes replicated state only by proposing
//! `berth_core::Command`s; it never edits the state machine directly.

pub mod api;
pub mod config;
pub mod controllers;
pub mod dispatcher;
pub mod error;
pub mod identity;
pub mod network;
pub mod node;
pub mod proposer;
pub mod raft_service;
pub mod seal;
pub mod triggers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_core::token::{JoinToken, Role};
use berth_core::Command;
use berth_proto::v1 as pb;
use berth_proto::v1::cluster_api_client::ClusterApiClient;
use berth_proto::v1::cluster_api_server::ClusterApiServer;
use berth_proto::v1::dispatcher_server::DispatcherServer;
use berth_proto::v1::raft_service_server::RaftServiceServer;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

pub use config::{Bootstrap, ManagerConfig, RaftTimings};

use crate::identity::Identity;
use crate::network::{Network, PeerChannels, MAX_RAFT_MESSAGE_BYTES};
use crate::node::{random_bytes, ManagerNode};

/// The first manager of a cluster always has Raft node id 1.
pub const BOOTSTRAP_NODE_ID: u64 = 1;
/// How long a joining manager keeps trying to reach the peer it was given.
pub const JOIN_RETRY_DEADLINE_MS: u64 = 30_000;
/// Snapshot chunks stay far below gRPC's default 4 MiB message limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Log entries kept after a snapshot, so a briefly lagging follower
/// catches up from the log rather than a full snapshot.
pub const MAX_LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;

/// Runs a manager until `shutdown` is cancelled.
pub async fn run(config: ManagerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (identity, pending_join) = establish_identity(&config).await?;
    let span = info_span!("manager", node = identity.node_id, cluster = %identity.cluster_id);
    serve(config, identity, pending_join, shutdown).instrument(span).await
}

/// Loads this manager's identity, or creates it: a fresh cluster for
/// `init`, an id allocated by the cluster for `join`.
async fn establish_identity(config: &ManagerConfig) -> anyhow::Result<(Identity, Option<(String, String)>)> {
    let existing = Identity::load(&config.data_dir)?;
    match (existing, &config.bootstrap) {
        (Some(identity), bootstrap) => {
            info!(node = identity.node_id, "resuming manager from {}", config.data_dir.display());
            let pending = match (identity.joined, bootstrap) {
                (false, Bootstrap::Join { peer, token }) => Some((peer.clone(), token.clone())),
                (false, Bootstrap::Init) => {
                    bail!("this data dir holds a manager whose join did not finish; run `berth manager join` again")
                }
                (true, _) => None,
            };
            Ok((identity, pending))
        }
        (None, Bootstrap::Init) => {
            let cluster_id = hex::encode(random_bytes::<8>());
            let identity = Identity {
                node_id: BOOTSTRAP_NODE_ID,
                manager_token: JoinToken::new(Role::Manager, &cluster_id, random_bytes()).to_string(),
                worker_token: JoinToken::new(Role::Worker, &cluster_id, random_bytes()).to_string(),
                cluster_id,
                joined: true,
                data_key: hex::encode(random_bytes::<{ seal::DATA_KEY_BYTES }>()),
            };
            identity.save(&config.data_dir)?;
            Ok((identity, None))
        }
        (None, Bootstrap::Join { peer, token }) => {
            let token = token.trim().to_string();
            let parsed: JoinToken = token.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            if parsed.role != Role::Manager {
                bail!(
                    "this is a worker join token; a manager joins with the manager token (`berth join-token manager`)"
                );
            }
            let reply = join_call(peer, &token, &config.advertise, 0).await?;
            let identity = Identity {
                node_id: reply.node_id,
                cluster_id: reply.cluster_id,
                manager_token: reply.manager_token,
                worker_token: reply.worker_token,
                joined: false,
                data_key: reply.data_key,
            };
            identity.save(&config.data_dir)?;
            Ok((identity, Some((peer.clone(), token))))
        }
    }
}

async fn join_call(peer: &str, token: &str, advertise: &str, node_id: u64) -> anyhow::Result<pb::JoinManagerReply> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(JOIN_RETRY_DEADLINE_MS);
    loop {
        let attempt = async {
            let mut client = ClusterApiClient::connect(format!("http://{peer}")).await?;
            let request = pb::JoinManagerRequest {
                token: token.to_string(),
                advertise_address: advertise.to_string(),
                node_id,
                version: berth_core::THIS_RELEASE.to_string(),
            };
            anyhow::Ok(client.join_manager(request).await)
        };
        match attempt.await {
            Ok(Ok(reply)) => return Ok(reply.into_inner()),
            Ok(Err(status)) if status.code() != tonic::Code::Unavailable => {
                bail!("the cluster refused to let this manager join: {}", status.message())
            }
            Ok(Err(status)) if tokio::time::Instant::now() >= deadline => {
                bail!("cannot join through {peer}: {}", status.message())
            }
            Err(e) if tokio::time::Instant::now() >= deadline => bail!("cannot reach {peer}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn raft_config(timings: &RaftTimings) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "berth".into(),
        heartbeat_interval: timings.heartbeat_interval_ms,
        election_timeout_min: timings.election_timeout_min_ms,
        election_timeout_max: timings.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timings.snapshot_threshold),
        max_in_snapshot_log_to_keep: MAX_LOGS_KEPT_AFTER_SNAPSHOT.min(timings.snapshot_threshold / 2),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    };
    config.validate().context("invalid raft timings")
}

async fn serve(
    config: ManagerConfig,
    mut identity: Identity,
    pending_join: Option<(String, String)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let raft_config = Arc::new(raft_config(&config.timings)?);
    let (log_store, state_machine) =
        berth_store::open(&config.data_dir.join("raft")).context("cannot open the raft store")?;
    let view = state_machine.view();
    let peers = PeerChannels::default();
    let network = Network { peers: peers.clone() };
    let raft = berth_store::Raft::new(identity.node_id, raft_config, network, log_store, state_machine)
        .await
        .context("cannot start raft")?;
    let commit_timeout = std::time::Duration::from_millis(node::LEADER_COMMIT_TIMEOUT_MS);
    let proposer = proposer::Proposer::start(raft.clone(), identity.node_id, commit_timeout);
    let node = Arc::new(ManagerNode { id: identity.node_id, raft, view, identity: identity.clone(), peers, proposer });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(listen = %config.listen, advertise = %config.advertise, "manager listening");
    let liveness = Arc::new(dispatcher::Liveness::default());
    let (status_tx, status_rx) = tokio::sync::mpsc::channel(dispatcher::SESSION_BUFFER * 16);
    let dispatcher_service = dispatcher::DispatcherService {
        node: node.clone(),
        settings: config.dispatcher.clone(),
        liveness: liveness.clone(),
        statuses: status_tx,
    };
    let server = tokio::spawn(grpc_server(node.clone(), dispatcher_service, listener, shutdown.clone()));
    tokio::spawn(dispatcher::run_status_batcher(node.clone(), status_rx, shutdown.clone()).in_current_span());
    tokio::spawn(
        controllers::supervise(node.clone(), liveness, config.dispatcher.clone(), shutdown.clone()).in_current_span(),
    );

    if identity.node_id == BOOTSTRAP_NODE_ID {
        bootstrap_cluster(&node, &config.advertise).await?;
    }
    if let Some((peer, token)) = pending_join {
        join_call(&peer, &token, &config.advertise, identity.node_id).await?;
        identity.joined = true;
        identity.save(&config.data_dir)?;
        info!("joined the cluster as a voting manager");
    }

    let stopped = tokio::select! {
        () = shutdown.cancelled() => None,
        fatal = raft_stopped(&node.raft) => Some(fatal),
    };
    if let Some(fatal) = &stopped {
        error!(
            error = %fatal,
            data_dir = %config.data_dir.display(),
            "raft stopped, most likely because the data directory cannot be written (full, read-only or failing); \
             this manager acknowledges nothing more and exits, and the other managers carry on"
        );
        shutdown.cancel();
    } else {
        info!("shutting down");
    }
    if let Err(e) = node.raft.shutdown().await {
        warn!(error = %e, "raft did not shut down cleanly");
    }
    server.await.context("grpc server task failed")??;
    match stopped {
        Some(fatal) => bail!(
            "raft stopped: {fatal} (is the data directory {} full, read-only or failing?)",
            config.data_dir.display()
        ),
        None => Ok(()),
    }
}

/// Resolves when this node's Raft has stopped by itself: openraft stops
/// for good on a storage error, and a node that cannot persist must not
/// go on answering as if it could.
async fn raft_stopped(raft: &berth_store::Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "raft stopped".to_string();
        }
    }
}

/// Makes this manager the single voter of a new cluster and records the
/// cluster's identity. Safe to repeat after a crash at any point.
async fn bootstrap_cluster(node: &ManagerNode, advertise: &str) -> anyhow::Result<()> {
    let members = BTreeMap::from([(BOOTSTRAP_NODE_ID, openraft::BasicNode::new(advertise))]);
    if !node.raft.is_initialized().await? {
        node.raft.initialize(members).await.context("cannot initialise raft")?;
    }
    if node.view.read(|state, _| state.cluster.is_some()) {
        return Ok(());
    }
    // Only the first start gets here; wait to lead our one-member cluster.
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(BOOTSTRAP_NODE_ID, "bootstrap leader")
        .await
        .context("the new cluster did not elect its first leader")?;
    let hash = |t: &str| berth_core::token::hash_token(t);
    let command = Command::InitCluster {
        cluster_id: node.identity.cluster_id.clone(),
        manager_token_hash: hash(&node.identity.manager_token),
        worker_token_hash: hash(&node.identity.worker_token),
    };
    node.write(format!("init-{}", node.identity.cluster_id), command).await?;
    info!(cluster = %node.identity.cluster_id, "initialised a new cluster");
    Ok(())
}

async fn grpc_server(
    node: Arc<ManagerNode>,
    dispatcher_service: dispatcher::DispatcherService,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ClusterApiServer<api::Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    // Older grpcurl releases only speak the v1alpha reflection protocol.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build the reflection service")?;
    let cluster_api =
        ClusterApiServer::new(api::Api { node: node.clone() }).max_decoding_message_size(api::MAX_REQUEST_BYTES);
    let trigger_routes = triggers::router(node.clone());
    let raft_api = RaftServiceServer::new(raft_service::RaftGrpc { node })
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(cluster_api)
        .add_service(raft_api)
        .add_service(DispatcherServer::new(dispatcher_service).max_decoding_message_size(api::MAX_REQUEST_BYTES));
    // HTTP/1.1 is accepted beside gRPC for the trigger URLs; gRPC clients
    // speak HTTP/2 and are routed as before.
    let routes = tonic::service::Routes::from(grpc.into_axum_router().merge(trigger_routes));
    // The builder's `tcp_nodelay` applies only to listeners tonic binds
    // itself; accepted sockets of a listener handed in keep Nagle on
    // unless the incoming stream sets TCP_NODELAY, and every Raft and
    // client reply is a small write that Nagle would hold back.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .context("grpc server failed")
}
