//! One benchmark client of either system. Both sides share the connection
//! setup, the per-request timeout and the write loop's error handling; only
//! the RPC differs: an etcd `KV.Put` of one key, or a berth `ScaleService`
//! of one service (each with a fresh request id, as a real client sends),
//! or, as the baseline, a berth `RaftService.Ping` that writes nothing.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_proto::v1::cluster_api_client::ClusterApiClient;
use berth_proto::v1::raft_service_client::RaftServiceClient;
use berth_proto::v1::{ClusterStatusRequest, CreateServiceRequest, PingRequest, ScaleServiceRequest, ServiceSpec};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Generated client code for the minimal etcd protocol in `proto/etcd_kv.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdserverpb::kv_client::KvClient;
use etcdserverpb::maintenance_client::MaintenanceClient;
use etcdserverpb::{PutRequest, StatusRequest};

/// A write, or a status probe, that takes longer than this counts as failed,
/// so a request to a dead node cannot stall the client (the failover client
/// may be given another one).
pub const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Loopback connects either succeed or are refused at once; this only bounds
/// a connect to a node that is frozen rather than dead.
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// The service every berth write scales (created once by `prepare`).
const BENCH_SERVICE: &str = "bench";
const BENCH_IMAGE: &str = "busybox";
/// The etcd key every etcd write overwrites, the counterpart of the service.
const BENCH_KEY: &[u8] = b"/berth-bench/service/bench";
/// Every berth write scales the service to this count. Each is still a full
/// Raft commit (the service's version moves), but with no tasks to create
/// the benchmark measures the replicated write path, as etcd's puts do,
/// rather than the orchestration work that real replicas would start.
const BENCH_REPLICAS: i64 = 0;
/// Pause between attempts to create the benchmark service.
const PREPARE_RETRY_MS: u64 = 200;

/// Which control plane a client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Berth,
    Etcd,
    /// Not a write: a no-op call (`RaftService.Ping`) to berth's managers,
    /// answered at once. Run beside the writes, it is the floor a write
    /// over gRPC cannot go under on this machine, in time and in CPU.
    BerthNoop,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Berth => "berth",
            System::Etcd => "etcd",
            System::BerthNoop => "berth-noop",
        }
    }
}

/// Normalises `host:port` endpoints (an `http://` prefix is tolerated) and
/// refuses an empty list or an empty entry.
pub fn parse_endpoints(raw: &[String]) -> Result<Vec<String>> {
    let endpoints: Vec<String> = raw.iter().map(|e| e.trim().trim_start_matches("http://").to_string()).collect();
    if endpoints.is_empty() || endpoints.iter().any(String::is_empty) {
        bail!("--endpoints {raw:?}: expected a comma separated list of host:port, e.g. 127.0.0.1:2379,127.0.0.1:2479");
    }
    Ok(endpoints)
}

/// A lazily connected channel: creating it never fails on a dead endpoint,
/// the first request does (within the timeouts), which is what the failover
/// client wants.
pub fn channel(endpoint: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("endpoint {endpoint:?} is not a valid host:port"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// The default per-request timeout.
pub fn default_request_timeout() -> Duration {
    Duration::from_millis(REQUEST_TIMEOUT_MS)
}

/// Runs `fut` under a per-request timeout, mapping both failure kinds to a
/// gRPC status so callers handle one error type.
async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()))),
    }
}

/// A client bound to one endpoint that issues the benchmark's write.
pub struct Writer {
    rpc: WriteRpc,
    timeout: Duration,
}

enum WriteRpc {
    Etcd(KvClient<Channel>),
    Berth(ClusterApiClient<Channel>),
    Noop(RaftServiceClient<Channel>),
}

impl Writer {
    pub fn new(system: System, endpoint: &str, timeout: Duration) -> Result<Self> {
        let channel = channel(endpoint)?;
        let rpc = match system {
            System::Etcd => WriteRpc::Etcd(KvClient::new(channel)),
            System::Berth => WriteRpc::Berth(ClusterApiClient::new(channel)),
            System::BerthNoop => WriteRpc::Noop(RaftServiceClient::new(channel)),
        };
        Ok(Self { rpc, timeout })
    }

    /// One write, acknowledged only once committed by the cluster.
    pub async fn write(&mut self, seq: u64) -> Result<(), tonic::Status> {
        let request_id = uuid::Uuid::new_v4().to_string();
        match &mut self.rpc {
            WriteRpc::Etcd(kv) => {
                let request = PutRequest {
                    key: BENCH_KEY.to_vec(),
                    value: format!("{request_id}:{seq}").into_bytes(),
                    ..Default::default()
                };
                bounded(self.timeout, kv.put(request)).await.map(drop)
            }
            WriteRpc::Berth(api) => {
                let request =
                    ScaleServiceRequest { request_id, name: BENCH_SERVICE.to_string(), replicas: BENCH_REPLICAS };
                bounded(self.timeout, api.scale_service(request)).await.map(drop)
            }
            WriteRpc::Noop(raft) => bounded(self.timeout, raft.ping(PingRequest {})).await.map(drop),
        }
    }
}

/// Makes the cluster ready for `Writer::write`: berth needs the service that
/// is scaled to exist; etcd needs nothing. Tries every endpoint in turn
/// until `deadline` passes.
pub async fn prepare(system: System, endpoints: &[String], deadline: Duration) -> Result<()> {
    if system != System::Berth {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut last_error = String::from("no endpoint tried");
    for endpoint in endpoints.iter().cycle() {
        if started.elapsed() > deadline {
            break;
        }
        let mut api = ClusterApiClient::new(channel(endpoint)?);
        let request = CreateServiceRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            spec: Some(ServiceSpec {
                name: BENCH_SERVICE.to_string(),
                image: BENCH_IMAGE.to_string(),
                ..Default::default()
            }),
        };
        match bounded(default_request_timeout(), api.create_service(request)).await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => return Ok(()),
            Err(status) => {
                last_error = format!("{endpoint}: {status}");
                tokio::time::sleep(Duration::from_millis(PREPARE_RETRY_MS)).await;
            }
        }
    }
    bail!("could not create service {BENCH_SERVICE:?} within {} s; last error: {last_error}", deadline.as_secs())
}

/// What one member says about itself and the leader it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub endpoint: String,
    /// The member that answered.
    pub member_id: u64,
    /// The leader it follows, if any.
    pub leader_id: Option<u64>,
    /// Voters in its membership, when the protocol tells (berth does, etcd's
    /// Status does not).
    pub voters: Option<usize>,
}

/// Asks one endpoint who it is and who leads.
pub async fn member_view(system: System, endpoint: &str) -> Result<MemberView> {
    let channel = channel(endpoint)?;
    match system {
        System::Etcd => {
            let status = bounded(default_request_timeout(), MaintenanceClient::new(channel).status(StatusRequest {}))
                .await
                .with_context(|| format!("etcd Status on {endpoint}"))?;
            let member_id = status
                .header
                .map(|h| h.member_id)
                .with_context(|| format!("etcd Status on {endpoint} has no header"))?;
            Ok(MemberView {
                endpoint: endpoint.to_string(),
                member_id,
                leader_id: (status.leader != 0).then_some(status.leader),
                voters: None,
            })
        }
        System::Berth | System::BerthNoop => {
            let status = bounded(
                default_request_timeout(),
                ClusterApiClient::new(channel).cluster_status(ClusterStatusRequest {}),
            )
            .await
            .with_context(|| format!("berth ClusterStatus on {endpoint}"))?;
            Ok(MemberView {
                endpoint: endpoint.to_string(),
                member_id: status.answered_by,
                leader_id: status.leader_id.filter(|id| *id != 0),
                voters: Some(status.members.iter().filter(|m| m.voter).count()),
            })
        }
    }
}
