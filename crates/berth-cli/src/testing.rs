//! An in-process fake of the `ClusterApi`, for testing the client's retries
//! and the commands' read-modify-write loops against a real gRPC server.
//! It keeps services in a map and checks versions, and answers task lists
//! from a script of snapshots; nothing more (no watch, so followers poll).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_proto::v1 as proto;
use berth_proto::v1::cluster_api_server::{ClusterApi, ClusterApiServer};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    /// Answers for the next calls (any method), before normal service.
    failures: VecDeque<Status>,
    /// Updates to refuse as stale, each after bumping the version as a
    /// concurrent writer would.
    concurrent_writes: u32,
    services: BTreeMap<String, proto::Service>,
    last_index: u64,
    create_requests: Vec<proto::CreateServiceRequest>,
    update_requests: Vec<proto::UpdateServiceRequest>,
    scale_requests: Vec<proto::ScaleServiceRequest>,
    /// Successive answers to `ListTasks`; the last one repeats.
    task_script: VecDeque<Vec<proto::Task>>,
    task_lists: usize,
    /// Successive rollouts `GetService` reports after a redeploy or
    /// rollback; the last one repeats.
    rollout_script: VecDeque<proto::Rollout>,
    /// `GetService` answers that carried a scripted rollout.
    rollout_reads: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread poisons only that test's fake.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_rollout(&self, name: &str, kind: &str) -> Result<Response<proto::ServiceReply>, Status> {
        self.take_failure()?;
        let mut state = self.lock();
        state.last_index += 1;
        let index = state.last_index;
        let service = state.services.get_mut(name).ok_or_else(|| not_found(name))?;
        service.version = index;
        service.rollout = Some(proto::Rollout { kind: kind.into(), state: "rolling".into(), ..Default::default() });
        Ok(Response::new(proto::ServiceReply { service: Some(service.clone()), index }))
    }

    fn take_failure(&self) -> Result<(), Status> {
        match self.lock().failures.pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

/// A running fake; the server stops when this is dropped.
pub struct FakeCluster {
    fake: Fake,
    address: String,
    stop: CancellationToken,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeCluster {
    pub async fn start() -> Self {
        let incoming =
            TcpIncoming::bind("127.0.0.1:0".parse().expect("literal address")).expect("bind a loopback port");
        let address = incoming.local_addr().expect("bound address").to_string();
        let fake = Fake::default();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(ClusterApiServer::new(fake.clone()))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        tokio::spawn(server);
        FakeCluster { fake, address, stop }
    }

    /// A loopback address nothing listens on.
    pub async fn unused_address() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address").to_string();
        drop(listener);
        address
    }

    pub fn address(&self) -> String {
        self.address.clone()
    }

    pub fn script_rollouts(&self, rollouts: impl IntoIterator<Item = proto::Rollout>) {
        self.fake.lock().rollout_script.extend(rollouts);
    }

    /// How many times a client read a scripted rollout.
    pub fn rollout_reads(&self) -> usize {
        self.fake.lock().rollout_reads
    }

    pub fn fail_next(&self, statuses: impl IntoIterator<Item = Status>) {
        self.fake.lock().failures.extend(statuses);
    }

    pub fn concurrent_writes(&self, count: u32) {
        self.fake.lock().concurrent_writes = count;
    }

    pub fn insert(&self, spec: proto::ServiceSpec) -> proto::Service {
        let mut state = self.fake.lock();
        state.last_index += 1;
        let service = proto::Service {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            version: state.last_index,
            created_at_ms: 1,
            updated_at_ms: 1,
            spec: Some(spec),
            previous_spec: None,
            rollout: None,
            virtual_ip: 0,
        };
        state.services.insert(service.name.clone(), service.clone());
        service
    }

    pub fn service(&self, name: &str) -> Option<proto::Service> {
        self.fake.lock().services.get(name).cloned()
    }

    pub fn create_requests(&self) -> Vec<proto::CreateServiceRequest> {
        self.fake.lock().create_requests.clone()
    }

    pub fn update_requests(&self) -> Vec<proto::UpdateServiceRequest> {
        self.fake.lock().update_requests.clone()
    }

    pub fn scale_requests(&self) -> Vec<proto::ScaleServiceRequest> {
        self.fake.lock().scale_requests.clone()
    }

    /// What `ListTasks` answers, one snapshot per call, the last repeating.
    pub fn script_tasks(&self, snapshots: impl IntoIterator<Item = Vec<proto::Task>>) {
        self.fake.lock().task_script = snapshots.into_iter().collect();
    }

    /// How many times the tasks were listed.
    pub fn task_lists(&self) -> usize {
        self.fake.lock().task_lists
    }
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("service '{name}' not found"))
}

#[tonic::async_trait]
impl ClusterApi for Fake {
    async fn create_service(
        &self,
        request: Request<proto::CreateServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        let request = request.into_inner();
        self.lock().create_requests.push(request.clone());
        self.take_failure()?;
        let spec = request.spec.unwrap_or_default();
        let mut state = self.lock();
        if state.services.contains_key(&spec.name) {
            return Err(Status::already_exists(format!("service '{}' already exists", spec.name)));
        }
        state.last_index += 1;
        let service = proto::Service {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            version: state.last_index,
            created_at_ms: 1,
            updated_at_ms: 1,
            spec: Some(spec),
            previous_spec: None,
            rollout: None,
            virtual_ip: 0,
        };
        state.services.insert(service.name.clone(), service.clone());
        Ok(Response::new(proto::ServiceReply { service: Some(service), index: state.last_index }))
    }

    async fn update_service(
        &self,
        request: Request<proto::UpdateServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        let request = request.into_inner();
        self.lock().update_requests.push(request.clone());
        self.take_failure()?;
        let mut state = self.lock();
        if state.concurrent_writes > 0 {
            state.concurrent_writes -= 1;
            state.last_index += 1;
            let index = state.last_index;
            if let Some(service) = state.services.get_mut(&request.name) {
                service.version = index;
            }
        }
        let index = state.last_index + 1;
        let service = state.services.get_mut(&request.name).ok_or_else(|| not_found(&request.name))?;
        if service.version != request.expected_version {
            return Err(Status::failed_precondition(format!(
                "stale version: the update was based on version {}, the current version is {}",
                request.expected_version, service.version
            )));
        }
        service.spec = request.spec;
        service.version = index;
        let service = service.clone();
        state.last_index = index;
        Ok(Response::new(proto::ServiceReply { service: Some(service), index }))
    }

    async fn scale_service(
        &self,
        request: Request<proto::ScaleServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        let request = request.into_inner();
        self.lock().scale_requests.push(request.clone());
        self.take_failure()?;
        if request.replicas < 0 {
            return Err(Status::invalid_argument(format!("invalid replicas: {} is negative", request.replicas)));
        }
        let mut state = self.lock();
        state.last_index += 1;
        let index = state.last_index;
        let service = state.services.get_mut(&request.name).ok_or_else(|| not_found(&request.name))?;
        if let Some(spec) = service.spec.as_mut() {
            spec.replicas = Some(request.replicas);
        }
        service.version = index;
        Ok(Response::new(proto::ServiceReply { service: Some(service.clone()), index }))
    }

    async fn remove_service(
        &self,
        request: Request<proto::RemoveServiceRequest>,
    ) -> Result<Response<proto::RemoveServiceReply>, Status> {
        self.take_failure()?;
        let request = request.into_inner();
        let mut state = self.lock();
        let service = state.services.remove(&request.name).ok_or_else(|| not_found(&request.name))?;
        state.last_index += 1;
        Ok(Response::new(proto::RemoveServiceReply { id: service.id, index: state.last_index }))
    }

    async fn get_service(
        &self,
        request: Request<proto::GetServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        self.take_failure()?;
        let name = request.into_inner().name;
        let mut state = self.lock();
        let next_rollout = match state.rollout_script.len() {
            0 => None,
            1 => state.rollout_script.front().cloned(),
            _ => state.rollout_script.pop_front(),
        };
        let index = state.last_index;
        let service = state.services.get_mut(&name).ok_or_else(|| not_found(&name))?;
        let read_a_script = next_rollout.is_some();
        if read_a_script {
            service.rollout = next_rollout;
        }
        let reply = proto::ServiceReply { service: Some(service.clone()), index };
        state.rollout_reads += usize::from(read_a_script);
        Ok(Response::new(reply))
    }

    async fn registry_login(
        &self,
        _request: Request<proto::RegistryLoginRequest>,
    ) -> Result<Response<proto::RegistryLoginReply>, Status> {
        Err(Status::unimplemented("the fake has no registries"))
    }

    async fn list_registries(
        &self,
        _request: Request<proto::ListRegistriesRequest>,
    ) -> Result<Response<proto::ListRegistriesReply>, Status> {
        Err(Status::unimplemented("the fake has no registries"))
    }

    async fn remove_registry(
        &self,
        _request: Request<proto::RemoveRegistryRequest>,
    ) -> Result<Response<proto::RemoveRegistryReply>, Status> {
        Err(Status::unimplemented("the fake has no registries"))
    }

    async fn create_secret(
        &self,
        _request: Request<proto::CreateSecretRequest>,
    ) -> Result<Response<proto::SecretReply>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn list_secrets(
        &self,
        _request: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsReply>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn remove_secret(
        &self,
        _request: Request<proto::RemoveSecretRequest>,
    ) -> Result<Response<proto::RemoveSecretReply>, Status> {
        Err(Status::unimplemented("the fake has no secrets"))
    }

    async fn deploy_stack(
        &self,
        _request: Request<proto::DeployStackRequest>,
    ) -> Result<Response<proto::DeployStackReply>, Status> {
        Err(Status::unimplemented("the fake has no stacks"))
    }

    async fn list_stacks(
        &self,
        _request: Request<proto::ListStacksRequest>,
    ) -> Result<Response<proto::ListStacksReply>, Status> {
        Err(Status::unimplemented("the fake has no stacks"))
    }

    async fn remove_stack(
        &self,
        _request: Request<proto::RemoveStackRequest>,
    ) -> Result<Response<proto::RemoveStackReply>, Status> {
        Err(Status::unimplemented("the fake has no stacks"))
    }

    async fn create_trigger(
        &self,
        _request: Request<proto::CreateTriggerRequest>,
    ) -> Result<Response<proto::CreateTriggerReply>, Status> {
        Err(Status::unimplemented("the fake has no triggers"))
    }

    async fn list_triggers(
        &self,
        _request: Request<proto::ListTriggersRequest>,
    ) -> Result<Response<proto::ListTriggersReply>, Status> {
        Err(Status::unimplemented("the fake has no triggers"))
    }

    async fn remove_trigger(
        &self,
        _request: Request<proto::RemoveTriggerRequest>,
    ) -> Result<Response<proto::RemoveTriggerReply>, Status> {
        Err(Status::unimplemented("the fake has no triggers"))
    }

    async fn redeploy_service(
        &self,
        request: Request<proto::RedeployServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        self.start_rollout(&request.into_inner().name, "redeploy")
    }

    async fn rollback_service(
        &self,
        request: Request<proto::RollbackServiceRequest>,
    ) -> Result<Response<proto::ServiceReply>, Status> {
        self.start_rollout(&request.into_inner().name, "rollback")
    }

    async fn list_services(
        &self,
        _request: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesReply>, Status> {
        self.take_failure()?;
        let state = self.lock();
        Ok(Response::new(proto::ListServicesReply {
            services: state.services.values().cloned().collect(),
            index: state.last_index,
        }))
    }

    async fn list_nodes(
        &self,
        _request: Request<proto::ListNodesRequest>,
    ) -> Result<Response<proto::ListNodesReply>, Status> {
        Err(Status::unimplemented("list_nodes"))
    }

    async fn get_node(&self, _request: Request<proto::GetNodeRequest>) -> Result<Response<proto::NodeReply>, Status> {
        Err(Status::unimplemented("get_node"))
    }

    async fn update_node(
        &self,
        _request: Request<proto::UpdateNodeRequest>,
    ) -> Result<Response<proto::NodeReply>, Status> {
        Err(Status::unimplemented("update_node"))
    }

    async fn remove_node(
        &self,
        _request: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::RemoveNodeReply>, Status> {
        Err(Status::unimplemented("remove_node"))
    }

    async fn list_tasks(
        &self,
        request: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::ListTasksReply>, Status> {
        self.take_failure()?;
        let name = request.into_inner().service;
        let mut state = self.lock();
        if !state.services.contains_key(&name) {
            return Err(not_found(&name));
        }
        state.task_lists += 1;
        let tasks = if state.task_script.len() > 1 {
            state.task_script.pop_front().unwrap_or_default()
        } else {
            state.task_script.front().cloned().unwrap_or_default()
        };
        Ok(Response::new(proto::ListTasksReply { tasks, index: state.last_index }))
    }

    async fn cluster_status(
        &self,
        _request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusReply>, Status> {
        self.take_failure()?;
        Err(Status::unimplemented("cluster_status"))
    }

    async fn get_join_token(
        &self,
        _request: Request<proto::GetJoinTokenRequest>,
    ) -> Result<Response<proto::GetJoinTokenReply>, Status> {
        self.take_failure()?;
        Err(Status::unimplemented("get_join_token"))
    }

    async fn join_manager(
        &self,
        _request: Request<proto::JoinManagerRequest>,
    ) -> Result<Response<proto::JoinManagerReply>, Status> {
        Err(Status::unimplemented("join_manager"))
    }

    async fn remove_manager(
        &self,
        _request: Request<proto::RemoveManagerRequest>,
    ) -> Result<Response<proto::RemoveManagerReply>, Status> {
        Err(Status::unimplemented("remove_manager"))
    }

    type WatchStream = tonic::codegen::tokio_stream::Empty<Result<proto::WatchEvent, Status>>;

    async fn watch(&self, _request: Request<proto::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}
