//! The agent's session with the leader: register with the worker token,
//! heartbeat, stream status reports, receive assignments. It follows
//! leader changes by itself (a follower answers with the leader's address)
//! and resends the node's full state after every reconnect. While no
//! manager answers, the executor and its containers carry on untouched.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{reported_state_text, task_from_assignment};
use berth_proto::v1 as pb;
use berth_proto::v1::dispatcher_client::DispatcherClient;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{info, info_span, warn, Instrument};

use crate::executor::{Delivered, Executor, StatusReport};
use crate::runtime::{DiscoveryHost, ImageTagged, RegistryLogin, Runtime, SecretFile};
use crate::AgentError;

pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// Reconnect back-off bounds.
pub const RECONNECT_MIN_MS: u64 = 50;
pub const RECONNECT_MAX_MS: u64 = 1_000;
/// Messages queued towards the leader.
pub const OUTBOUND_BUFFER: usize = 256;
/// Status reports per message.
pub const MAX_REPORTS_PER_MESSAGE: usize = 500;
/// Image tag changes held while no session is up; older ones are dropped
/// first (only the latest id of a tag matters).
pub const MAX_PENDING_IMAGE_CHANGES: usize = 64;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Any managers of the cluster; the agent finds the leader among them.
    pub managers: Vec<String>,
    pub token: String,
    pub name: String,
    pub tags: Vec<String>,
    /// Reported to the cluster as the node's address; informational.
    pub address: String,
    /// Where the node's load balancer serves HTTP; `None` leaves it off.
    pub proxy_http_listen: Option<std::net::SocketAddr>,
}

enum SessionEnd {
    /// Go to this manager next (empty: the sender knows no leader yet).
    Redirect(String),
    Lost(String),
}

/// Runs the agent until `shutdown`. Fails only when the cluster refuses the
/// token; every other problem is retried.
pub async fn run(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    if config.managers.is_empty() {
        return Err(AgentError::Config("at least one manager address is needed (--manager)".into()));
    }
    let mut executor: Option<Executor> = None;
    let images = Arc::new(tokio::sync::Mutex::new(watch_images(runtime.clone(), shutdown.clone())));
    // Even without HTTP, the proxy carries discovery across nodes.
    tokio::spawn(crate::balancer::run(
        config.proxy_http_listen,
        config.managers.clone(),
        runtime.virtual_ip_ranges(),
        shutdown.clone(),
    ));
    let mut next = 0usize;
    let mut redirect: Option<String> = None;
    let mut backoff = RECONNECT_MIN_MS;
    loop {
        let addr = redirect.take().unwrap_or_else(|| {
            next = next.wrapping_add(1);
            config.managers[next % config.managers.len()].clone()
        });
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            outcome = session(&addr, &config, &runtime, &mut executor, &images, &shutdown) => outcome,
        };
        match outcome {
            Ok(SessionEnd::Redirect(leader)) => {
                if leader.is_empty() {
                    backoff = (backoff * 2).min(RECONNECT_MAX_MS);
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                } else {
                    info!(%leader, "following the leader");
                    redirect = Some(leader);
                }
                continue;
            }
            Ok(SessionEnd::Lost(reason)) => {
                warn!(manager = %addr, %reason, "session lost; reconnecting");
                backoff = RECONNECT_MIN_MS;
            }
            Err(AgentError::Refused(message)) => return Err(AgentError::Refused(message)),
            Err(e) => {
                warn!(manager = %addr, error = %e, "cannot reach manager");
                backoff = (backoff * 2).min(RECONNECT_MAX_MS);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
        }
    }
}

async fn session(
    addr: &str,
    config: &AgentConfig,
    runtime: &Arc<dyn Runtime>,
    executor: &mut Option<Executor>,
    images: &ImageChanges,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AgentError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| AgentError::Config(format!("bad manager address '{addr}': {e}")))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| AgentError::Unreachable(e.to_string()))?;
    let mut client = DispatcherClient::new(channel);
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    let resources = runtime.resources().await.unwrap_or_default();
    let register = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Register(pb::Register {
            token: config.token.clone(),
            name: config.name.clone(),
            address: config.address.clone(),
            tags: config.tags.clone(),
            millicpus: i64::try_from(resources.millicpus).unwrap_or(0),
            memory_bytes: i64::try_from(resources.memory_bytes).unwrap_or(0),
            agent_version: berth_core::THIS_RELEASE.to_string(),
        })),
    };
    tx.send(register).await.map_err(|_| AgentError::Unreachable("session closed".into()))?;
    let mut inbound = match client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return match status.code() {
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                    Err(AgentError::Refused(status.message().to_string()))
                }
                _ => Err(AgentError::Unreachable(status.message().to_string())),
            }
        }
    };
    let first = inbound.message().await.map_err(|s| AgentError::Unreachable(s.message().to_string()))?;
    let (node_id, heartbeat_ms) = match first.and_then(|m| m.body) {
        Some(pb::manager_message::Body::Registered(r)) => (r.node_id, r.heartbeat_period_ms.max(10)),
        Some(pb::manager_message::Body::NotLeader(n)) => return Ok(SessionEnd::Redirect(n.leader_address)),
        _ => return Ok(SessionEnd::Lost("the manager closed the session before registering".into())),
    };
    let exec = match executor {
        Some(exec) if exec.node_id() == node_id => exec.clone(),
        _ => {
            let exec = Executor::start(runtime.clone(), node_id.clone(), shutdown.clone())
                .await
                .map_err(|e| AgentError::Runtime(e.to_string()))?;
            *executor = Some(exec.clone());
            exec
        }
    };
    info!(node = %node_id, manager = %addr, "session established");
    let span = info_span!("session", node = %node_id);
    // The leader may have missed anything while we were away: send it all.
    send_reports(&tx, exec.full_state()).await?;
    exec.drain_outbox();

    let ended = CancellationToken::new();
    // The forwarder must stop with the session, also when the caller drops
    // this future (shutdown), or it would hold the stream open.
    let _stop_forwarder = ended.clone().drop_guard();
    let sender = tokio::spawn(
        forward_reports_and_heartbeats(
            exec.clone(),
            images.clone(),
            tx,
            Duration::from_millis(heartbeat_ms),
            ended.clone(),
        )
        .instrument(span.clone()),
    );
    let result = async {
        loop {
            let message = match inbound.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return SessionEnd::Lost("the manager ended the session".into()),
                Err(status) => return SessionEnd::Lost(status.message().to_string()),
            };
            match message.body {
                Some(pb::manager_message::Body::Assignments(assignments)) => {
                    let tasks = assignments.tasks.into_iter().filter_map(|mut a| {
                        let extras = delivered(&mut a);
                        match task_from_assignment(a) {
                            Ok(task) => Some((task, extras)),
                            Err(e) => {
                                warn!(error = %e, "ignoring an assignment that does not decode");
                                None
                            }
                        }
                    });
                    exec.apply_assigned(tasks.collect());
                }
                Some(pb::manager_message::Body::NotLeader(n)) => return SessionEnd::Redirect(n.leader_address),
                Some(pb::manager_message::Body::Registered(_)) | None => {}
            }
        }
    }
    .instrument(span)
    .await;
    ended.cancel();
    let _ = sender.await;
    Ok(result)
}

/// Takes the secrets and registry credentials out of an assignment.
fn delivered(assignment: &mut pb::Assignment) -> Delivered {
    let files: std::collections::HashMap<String, String> = assignment
        .spec
        .as_ref()
        .map(|s| {
            s.secrets
                .iter()
                .map(|r| (r.name.clone(), if r.target.is_empty() { r.name.clone() } else { r.target.clone() }))
                .collect()
        })
        .unwrap_or_default();
    Delivered {
        secrets: std::mem::take(&mut assignment.secrets)
            .into_iter()
            .map(|s| SecretFile { file_name: files.get(&s.name).cloned().unwrap_or(s.name), data: s.data })
            .collect(),
        registry: assignment.registry.take().map(|r| RegistryLogin {
            host: r.host,
            username: r.username,
            password: r.password,
        }),
        discovery: std::mem::take(&mut assignment.discovery)
            .into_iter()
            .map(|d| DiscoveryHost { name: d.name, virtual_ip: d.virtual_ip })
            .collect(),
    }
}

async fn send_reports(tx: &mpsc::Sender<pb::AgentMessage>, reports: Vec<StatusReport>) -> Result<(), AgentError> {
    for chunk in reports.chunks(MAX_REPORTS_PER_MESSAGE) {
        let statuses = chunk
            .iter()
            .map(|r| pb::TaskStatusReport {
                task_id: r.task_id.clone(),
                state: reported_state_text(r.state).to_string(),
                health: r.health.to_string(),
                container_id: r.container_id.clone(),
                exit_code: r.exit_code,
                message: r.message.clone(),
                endpoints: r.endpoints.iter().map(berth_api::endpoint_to_proto).collect(),
            })
            .collect();
        let message = pb::AgentMessage { body: Some(pb::agent_message::Body::Statuses(pb::TaskStatuses { statuses })) };
        tx.send(message).await.map_err(|_| AgentError::Unreachable("session closed".into()))?;
    }
    Ok(())
}

/// Image tag changes seen on the engine, waiting for a session to carry them.
type ImageChanges = Arc<tokio::sync::Mutex<mpsc::Receiver<ImageTagged>>>;

/// Follows the engine's image tags for the agent's whole life, so a retag
/// while no manager answers is still reported once one does.
fn watch_images(runtime: Arc<dyn Runtime>, shutdown: CancellationToken) -> mpsc::Receiver<ImageTagged> {
    let (tx, rx) = mpsc::channel(MAX_PENDING_IMAGE_CHANGES);
    let mut events = runtime.image_events();
    tokio::spawn(async move {
        loop {
            let tagged = tokio::select! {
                _ = shutdown.cancelled() => return,
                tagged = events.next() => match tagged {
                    Some(tagged) => tagged,
                    None => return,
                },
            };
            if let Err(mpsc::error::TrySendError::Full(tagged)) = tx.try_send(tagged) {
                warn!(image = %tagged.image, "too many image changes queued; dropping this one");
            }
        }
    });
    rx
}

async fn forward_reports_and_heartbeats(
    exec: Executor,
    images: ImageChanges,
    tx: mpsc::Sender<pb::AgentMessage>,
    period: Duration,
    ended: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    // This session's forwarder is the only reader while it lives.
    let mut images = images.lock().await;
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            Some(tagged) = images.recv() => {
                let change = pb::ImageChanged { image: tagged.image, image_id: tagged.image_id };
                let message = pb::AgentMessage { body: Some(pb::agent_message::Body::ImageChanged(change)) };
                if tx.send(message).await.is_err() {
                    return;
                }
                continue;
            }
            _ = ticker.tick() => {
                let heartbeat = pb::AgentMessage { body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat {})) };
                if tx.send(heartbeat).await.is_err() {
                    return;
                }
            }
            _ = exec.outbox_ready() => {}
        }
        let reports = exec.drain_outbox();
        if !reports.is_empty() && send_reports(&tx, reports).await.is_err() {
            return;
        }
    }
}
