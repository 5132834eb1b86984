//! `ClusterApi`, the public gRPC API. Thin: it converts and validates wire
//! input, then hands commands to [`ManagerNode`], which finds the leader.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::token::Role;
use berth_core::{orchestrator, ClusterVersion, Command, CoreError, Outcome, TriggerAction};
use berth_proto::v1 as pb;
use berth_proto::v1::cluster_api_client::ClusterApiClient;
use berth_proto::v1::cluster_api_server::ClusterApi;
use berth_store::WatchItem;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::error::ManagerError;
use crate::node::ManagerNode;
use berth_api::{node_to_proto, service_to_proto, spec_from_proto, task_to_proto};

/// A client request larger than this is refused before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Events buffered per watch stream towards a slow client.
pub const WATCH_STREAM_BUFFER: usize = 256;

pub struct Api {
    pub node: Arc<ManagerNode>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

fn request_id_or_new(id: String) -> String {
    if id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        id
    }
}

/// A service as the API shows it, with its rollout's progress read off its tasks.
fn service_view(state: &berth_core::ClusterState, service: &berth_core::Service) -> pb::Service {
    service_to_proto(service, orchestrator::progress(state, service))
}

fn invalid(e: CoreError) -> Status {
    ManagerError::Refused(e).into()
}

impl Api {
    fn service_reply(&self, outcome: Outcome) -> Result<Response<pb::ServiceReply>, Status> {
        match outcome {
            Outcome::Service(service) => {
                let version = service.version;
                let (service, index) = self.node.view.read(|state, index| (service_view(state, &service), index));
                Ok(Response::new(pb::ServiceReply { index: index.max(version), service: Some(service) }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// A node named by id or name, read linearizably.
    async fn resolve_node(&self, id_or_name: &str) -> Result<String, Status> {
        self.node.read_barrier().await?;
        self.node
            .view
            .read(|state, _| state.find_node(id_or_name).map(|n| n.id.clone()))
            .ok_or_else(|| invalid(CoreError::not_found("node", id_or_name)))
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        if consistency == pb::ReadConsistency::Local as i32 {
            return Ok(());
        }
        self.node.read_barrier().await.map_err(Status::from)
    }

    /// The leader's `ClusterApi`, for the few calls only the leader can run.
    fn leader_api(&self) -> Result<Option<ClusterApiClient<tonic::transport::Channel>>, Status> {
        match self.node.leader() {
            Some((leader, _)) if leader == self.node.id => Ok(None),
            Some((_, addr)) => {
                let channel = self.node.peers.channel(&addr).map_err(|e| Status::internal(e.to_string()))?;
                Ok(Some(ClusterApiClient::new(channel)))
            }
            None => Err(ManagerError::NoQuorum("no leader is elected right now".into()).into()),
        }
    }
}

#[tonic::async_trait]
impl ClusterApi for Api {
    #[instrument(skip_all, fields(node = self.node.id))]
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        let spec = spec_from_proto(request.spec.ok_or_else(|| invalid(CoreError::invalid("spec", "is required")))?)
            .map_err(invalid)?;
        let id = crate::node::hex_id();
        let outcome =
            self.node.write(request_id_or_new(request.request_id), Command::CreateService { id, spec }).await?;
        self.service_reply(outcome)
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        let spec = spec_from_proto(request.spec.ok_or_else(|| invalid(CoreError::invalid("spec", "is required")))?)
            .map_err(invalid)?;
        let command = Command::UpdateService { name: request.name, spec, expected_version: request.expected_version };
        let outcome = self.node.write(request_id_or_new(request.request_id), command).await?;
        self.service_reply(outcome)
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn scale_service(
        &self,
        request: Request<pb::ScaleServiceRequest>,
    ) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        let replicas = berth_core::non_negative("replicas", request.replicas).map_err(invalid)?;
        let command = Command::ScaleService { name: request.name, replicas };
        let outcome = self.node.write(request_id_or_new(request.request_id), command).await?;
        self.service_reply(outcome)
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn redeploy_service(
        &self,
        request: Request<pb::RedeployServiceRequest>,
    ) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        let command = Command::RedeployService { name: request.name };
        let outcome = self.node.write(request_id_or_new(request.request_id), command).await?;
        self.service_reply(outcome)
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn rollback_service(
        &self,
        request: Request<pb::RollbackServiceRequest>,
    ) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        let command = Command::RollbackService { name: request.name };
        let outcome = self.node.write(request_id_or_new(request.request_id), command).await?;
        self.service_reply(outcome)
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn deploy_stack(
        &self,
        request: Request<pb::DeployStackRequest>,
    ) -> Result<Response<pb::DeployStackReply>, Status> {
        let request = request.into_inner();
        let mut services = Vec::with_capacity(request.services.len());
        for spec in request.services {
            let name = spec.name.clone();
            let spec = spec_from_proto(spec).map_err(|e| invalid(e.in_service(&name)))?;
            services.push((crate::node::hex_id(), spec));
        }
        let specs: Vec<berth_core::ServiceSpec> = services.iter().map(|(_, s)| s.clone()).collect();
        let command = Command::DeployStack { stack: request.stack.clone(), services, prune: request.prune };
        if request.dry_run {
            self.node.read_barrier().await?;
            let plan = self.node.view.read(|state, _| {
                state.check(&command).map(|()| berth_core::stack::plan(state, &request.stack, &specs, request.prune))
            });
            return Ok(Response::new(pb::DeployStackReply {
                plan: Some(stack_plan_to_proto(&plan.map_err(invalid)?)),
                index: 0,
            }));
        }
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            Outcome::StackDeployed(plan) => Ok(Response::new(pb::DeployStackReply {
                plan: Some(stack_plan_to_proto(&plan)),
                index: self.node.view.applied_index(),
            })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_stacks(
        &self,
        request: Request<pb::ListStacksRequest>,
    ) -> Result<Response<pb::ListStacksReply>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let stacks = self.node.view.read(|state, _| berth_core::stack::stacks(state));
        let stacks = stacks
            .into_iter()
            .map(|(name, count)| pb::StackSummary { name, services: u32::try_from(count).unwrap_or(u32::MAX) })
            .collect();
        Ok(Response::new(pb::ListStacksReply { stacks }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_stack(
        &self,
        request: Request<pb::RemoveStackRequest>,
    ) -> Result<Response<pb::RemoveStackReply>, Status> {
        let request = request.into_inner();
        let command = Command::RemoveStack { stack: request.stack };
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            Outcome::StackRemoved { services } => Ok(Response::new(pb::RemoveStackReply { services })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn create_secret(
        &self,
        request: Request<pb::CreateSecretRequest>,
    ) -> Result<Response<pb::SecretReply>, Status> {
        let request = request.into_inner();
        // Checked before sealing, so the refusal names what is wrong.
        berth_core::secret::validate_secret(&request.name, request.data.len()).map_err(invalid)?;
        let key = crate::seal::DataKey::of(&self.node.identity).map_err(Status::from)?;
        let command = Command::CreateSecret {
            id: crate::node::hex_id(),
            name: request.name,
            sealed: key.seal(&request.data)?,
            size: request.data.len() as u64,
        };
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            Outcome::Secret(secret) => {
                let info = self.node.view.read(|state, _| secret_info(state, &secret));
                Ok(Response::new(pb::SecretReply { secret: Some(info) }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsReply>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let secrets = self.node.view.read(|state, _| state.secrets().map(|s| secret_info(state, s)).collect());
        Ok(Response::new(pb::ListSecretsReply { secrets }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_secret(
        &self,
        request: Request<pb::RemoveSecretRequest>,
    ) -> Result<Response<pb::RemoveSecretReply>, Status> {
        let request = request.into_inner();
        self.node.write(request_id_or_new(request.request_id), Command::RemoveSecret { name: request.name }).await?;
        Ok(Response::new(pb::RemoveSecretReply {}))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn registry_login(
        &self,
        request: Request<pb::RegistryLoginRequest>,
    ) -> Result<Response<pb::RegistryLoginReply>, Status> {
        let request = request.into_inner();
        berth_core::secret::validate_registry_host(&request.host).map_err(invalid)?;
        if request.password.is_empty() {
            return Err(invalid(CoreError::invalid("password", "must not be empty")));
        }
        let key = crate::seal::DataKey::of(&self.node.identity).map_err(Status::from)?;
        let command = Command::SetRegistryAuth {
            host: request.host.clone(),
            username: request.username.clone(),
            sealed_password: key.seal(request.password.as_bytes())?,
        };
        self.node.write(request_id_or_new(request.request_id), command).await?;
        let registry =
            pb::RegistryInfo { host: request.host, username: request.username, created_at_ms: crate::node::now_ms() };
        Ok(Response::new(pb::RegistryLoginReply { registry: Some(registry) }))
    }

    async fn list_registries(
        &self,
        request: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesReply>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let registries = self.node.view.read(|state, _| {
            state
                .registries()
                .map(|r| pb::RegistryInfo {
                    host: r.host.clone(),
                    username: r.username.clone(),
                    created_at_ms: r.created_at_ms,
                })
                .collect()
        });
        Ok(Response::new(pb::ListRegistriesReply { registries }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_registry(
        &self,
        request: Request<pb::RemoveRegistryRequest>,
    ) -> Result<Response<pb::RemoveRegistryReply>, Status> {
        let request = request.into_inner();
        self.node
            .write(request_id_or_new(request.request_id), Command::RemoveRegistryAuth { host: request.host })
            .await?;
        Ok(Response::new(pb::RemoveRegistryReply {}))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn create_trigger(
        &self,
        request: Request<pb::CreateTriggerRequest>,
    ) -> Result<Response<pb::CreateTriggerReply>, Status> {
        let request = request.into_inner();
        let action: TriggerAction = request.action.parse().map_err(invalid)?;
        let token = if request.token.is_empty() {
            hex::encode(crate::node::random_bytes::<{ berth_core::trigger::TRIGGER_SECRET_BYTES }>())
        } else {
            berth_core::trigger::validate_trigger_token(&request.token).map_err(invalid)?;
            request.token
        };
        let command = Command::CreateTrigger {
            id: crate::node::hex_id(),
            service: request.service,
            action,
            token_hash: berth_core::token::hash_token(&token),
        };
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            Outcome::Trigger(trigger) => {
                let trigger = self.node.view.read(|state, _| trigger_to_proto(state, &trigger));
                let url = format!("http://{}/v1/triggers/{token}", self.node.own_address());
                Ok(Response::new(pb::CreateTriggerReply { trigger: Some(trigger), token, url }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersReply>, Status> {
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let triggers = self.node.view.read(|state, _| -> Result<Vec<pb::Trigger>, CoreError> {
            let service_id = match request.service.as_str() {
                "" => None,
                name => Some(state.service(name).ok_or_else(|| CoreError::not_found("service", name))?.id.clone()),
            };
            Ok(state
                .triggers()
                .filter(|t| service_id.as_ref().is_none_or(|id| *id == t.service_id))
                .map(|t| trigger_to_proto(state, t))
                .collect())
        });
        Ok(Response::new(pb::ListTriggersReply { triggers: triggers.map_err(invalid)? }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_trigger(
        &self,
        request: Request<pb::RemoveTriggerRequest>,
    ) -> Result<Response<pb::RemoveTriggerReply>, Status> {
        let request = request.into_inner();
        let command = Command::RemoveTrigger { id: request.id };
        self.node.write(request_id_or_new(request.request_id), command).await?;
        Ok(Response::new(pb::RemoveTriggerReply {}))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_service(
        &self,
        request: Request<pb::RemoveServiceRequest>,
    ) -> Result<Response<pb::RemoveServiceReply>, Status> {
        let request = request.into_inner();
        let command = Command::RemoveService { name: request.name };
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            // The removal's own entry, so a watcher can match its event.
            Outcome::ServiceRemoved { id, index } => {
                let index = if index > 0 { index } else { self.node.view.applied_index() };
                Ok(Response::new(pb::RemoveServiceReply { id, index }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn get_service(&self, request: Request<pb::GetServiceRequest>) -> Result<Response<pb::ServiceReply>, Status> {
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let (service, index) =
            self.node.view.read(|state, index| (state.service(&request.name).map(|s| service_view(state, s)), index));
        let service = service.ok_or_else(|| invalid(CoreError::not_found("service", &request.name)))?;
        Ok(Response::new(pb::ServiceReply { service: Some(service), index }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesReply>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let (mut services, index): (Vec<pb::Service>, u64) =
            self.node.view.read(|state, index| (state.services().map(|s| service_view(state, s)).collect(), index));
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListServicesReply { services, index }))
    }

    async fn list_nodes(&self, request: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesReply>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let (mut nodes, index): (Vec<pb::Node>, u64) = self.node.view.read(|state, index| {
            let nodes = state.nodes().map(|n| node_to_proto(n, live_task_count(state, &n.id))).collect();
            (nodes, index)
        });
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListNodesReply { nodes, index }))
    }

    async fn get_node(&self, request: Request<pb::GetNodeRequest>) -> Result<Response<pb::NodeReply>, Status> {
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let (node, index) = self.node.view.read(|state, index| {
            let node = state.find_node(&request.node).map(|n| node_to_proto(n, live_task_count(state, &n.id)));
            (node, index)
        });
        let node = node.ok_or_else(|| invalid(CoreError::not_found("node", &request.node)))?;
        Ok(Response::new(pb::NodeReply { node: Some(node), index }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn update_node(&self, request: Request<pb::UpdateNodeRequest>) -> Result<Response<pb::NodeReply>, Status> {
        let request = request.into_inner();
        let availability = if request.availability.is_empty() {
            None
        } else {
            Some(request.availability.parse::<berth_core::Availability>().map_err(invalid)?)
        };
        let id = self.resolve_node(&request.node).await?;
        let command = Command::UpdateNode { id, availability, tags_add: request.tags_add, tags_rm: request.tags_rm };
        match self.node.write(request_id_or_new(request.request_id), command).await? {
            Outcome::Node(node) => {
                let count = self.node.view.read(|state, _| live_task_count(state, &node.id));
                Ok(Response::new(pb::NodeReply { node: Some(node_to_proto(&node, count)), index: 0 }))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeReply>, Status> {
        let request = request.into_inner();
        let id = self.resolve_node(&request.node).await?;
        self.node.write(request_id_or_new(request.request_id), Command::RemoveNode { id }).await?;
        Ok(Response::new(pb::RemoveNodeReply {}))
    }

    async fn list_tasks(&self, request: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksReply>, Status> {
        let request = request.into_inner();
        self.read_barrier(request.consistency).await?;
        let (tasks, index) = self.node.view.read(|state, index| {
            let node_name =
                |t: &berth_core::Task| t.node_id.as_deref().and_then(|n| state.node(n)).map(|n| n.name.clone());
            let to_proto = |t: &berth_core::Task| task_to_proto(t, &node_name(t).unwrap_or_default());
            if request.service.is_empty() {
                return (Ok(state.tasks().map(to_proto).collect::<Vec<_>>()), index);
            }
            match state.service(&request.service) {
                Some(service) => (Ok(state.tasks_of_service(&service.id).map(to_proto).collect()), index),
                None => (Err(CoreError::not_found("service", &request.service)), index),
            }
        });
        let mut tasks = tasks.map_err(invalid)?;
        tasks.sort_by(|a, b| (a.slot, &a.node_name, -a.created_at_ms).cmp(&(b.slot, &b.node_name, -b.created_at_ms)));
        Ok(Response::new(pb::ListTasksReply { tasks, index }))
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = metrics.replication.clone().unwrap_or_default();
        let pings = membership.nodes().map(|(id, node)| {
            let (id, addr) = (*id, node.addr.clone());
            let me = self.node.id;
            async move {
                if id == me {
                    return (id, addr, Some(berth_core::THIS_RELEASE.to_string()));
                }
                let version = self.node.ping(&addr).await.map(|reply| reply.version);
                (id, addr, version)
            }
        });
        let results = futures::future::join_all(pings).await;
        let members: Vec<pb::ManagerMember> = results
            .into_iter()
            .map(|(id, address, version)| pb::ManagerMember {
                id,
                address,
                voter: voters.contains(&id),
                reachable: version.is_some(),
                version: version.unwrap_or_default(),
                leader: metrics.current_leader == Some(id),
                matched_index: if id == self.node.id {
                    metrics.last_log_index
                } else {
                    matched.get(&id).copied().flatten().map(|l| l.index)
                },
            })
            .collect();
        let commit_index =
            commit_index(&members, &voters).unwrap_or_else(|| metrics.last_applied.map_or(0, |l| l.index));
        let leader_address =
            metrics.current_leader.and_then(|l| membership.get_node(&l).map(|n| n.addr.clone())).unwrap_or_default();
        Ok(Response::new(pb::ClusterStatusReply {
            cluster_id: self.node.identity.cluster_id.clone(),
            answered_by: self.node.id,
            leader_id: metrics.current_leader,
            leader_address,
            term: metrics.current_term,
            commit_index,
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            members,
            cluster_version: self.node.view.read(|state, _| state.cluster_version().to_string()),
        }))
    }

    async fn get_join_token(
        &self,
        request: Request<pb::GetJoinTokenRequest>,
    ) -> Result<Response<pb::GetJoinTokenReply>, Status> {
        let token = match request.into_inner().role() {
            pb::TokenRole::Manager => self.node.identity.manager_token.clone(),
            pb::TokenRole::Worker => self.node.identity.worker_token.clone(),
        };
        Ok(Response::new(pb::GetJoinTokenReply { token }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn join_manager(
        &self,
        request: Request<pb::JoinManagerRequest>,
    ) -> Result<Response<pb::JoinManagerReply>, Status> {
        let request = request.into_inner();
        self.node.check_join_token(&request.token, Role::Manager)?;
        if request.advertise_address.trim().is_empty() {
            return Err(invalid(CoreError::invalid("advertise_address", "must not be empty")));
        }
        if let Some(mut leader) = self.leader_api()? {
            return leader.join_manager(request).await;
        }
        let cluster_version = self.node.view.read(|state, _| state.cluster_version());
        match ClusterVersion::of_release(&request.version) {
            Some(level) if level >= cluster_version => {}
            _ => {
                return Err(Status::failed_precondition(format!(
                    "the cluster runs cluster version {cluster_version}, and the joining manager's release \
                     '{}' is older: join with berth {cluster_version} or later",
                    if request.version.is_empty() { "0.1" } else { &request.version }
                )))
            }
        }
        let node_id = if request.node_id == 0 {
            let command = Command::AllocateManagerId { address: request.advertise_address.clone() };
            match self.node.write(uuid::Uuid::new_v4().to_string(), command).await? {
                Outcome::ManagerId(id) => {
                    info!(manager = id, address = %request.advertise_address, "allocated manager id");
                    id
                }
                other => return Err(Status::internal(format!("unexpected outcome {other:?}"))),
            }
        } else {
            self.node.add_manager(request.node_id, request.advertise_address.clone()).await?;
            request.node_id
        };
        Ok(Response::new(pb::JoinManagerReply {
            cluster_id: self.node.identity.cluster_id.clone(),
            node_id,
            manager_token: self.node.identity.manager_token.clone(),
            worker_token: self.node.identity.worker_token.clone(),
            data_key: self.node.identity.data_key.clone(),
        }))
    }

    #[instrument(skip_all, fields(node = self.node.id))]
    async fn remove_manager(
        &self,
        request: Request<pb::RemoveManagerRequest>,
    ) -> Result<Response<pb::RemoveManagerReply>, Status> {
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_api()? {
            return leader.remove_manager(request).await;
        }
        self.node.remove_manager(request.node_id).await?;
        info!(manager = request.node_id, "manager removed from the cluster");
        Ok(Response::new(pb::RemoveManagerReply {}))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let start = self.node.view.watch(request.into_inner().from_index);
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_STREAM_BUFFER);
        tokio::spawn(async move {
            let mut live = start.live;
            for item in start.backlog {
                let resync = matches!(item, WatchItem::Resync { .. });
                if tx.send(Ok(watch_event(item))).await.is_err() || resync {
                    return;
                }
            }
            loop {
                let item = match live.recv().await {
                    Ok(item) => item,
                    Err(RecvError::Lagged(missed)) => {
                        WatchItem::Resync { index: 0, reason: format!("this watcher fell {missed} changes behind") }
                    }
                    Err(RecvError::Closed) => return,
                };
                let resync = matches!(item, WatchItem::Resync { .. });
                if tx.send(Ok(watch_event(item))).await.is_err() || resync {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

fn stack_plan_to_proto(plan: &berth_core::StackPlan) -> pb::StackPlan {
    pb::StackPlan {
        create: plan.create.clone(),
        update: plan.update.clone(),
        unchanged: plan.unchanged.clone(),
        remove: plan.remove.clone(),
        keep: plan.keep.clone(),
    }
}

/// A secret without its content, and the services using it.
fn secret_info(state: &berth_core::ClusterState, secret: &berth_core::Secret) -> pb::SecretInfo {
    let mut services: Vec<String> = state
        .services()
        .filter(|s| s.spec.secrets.iter().any(|r| r.name == secret.name))
        .map(|s| s.spec.name.clone())
        .collect();
    services.sort();
    pb::SecretInfo {
        id: secret.id.clone(),
        name: secret.name.clone(),
        size: secret.size,
        created_at_ms: secret.created_at_ms,
        services,
    }
}

fn trigger_to_proto(state: &berth_core::ClusterState, trigger: &berth_core::Trigger) -> pb::Trigger {
    pb::Trigger {
        id: trigger.id.clone(),
        service: state.service_by_id(&trigger.service_id).map(|s| s.spec.name.clone()).unwrap_or_default(),
        action: trigger.action.to_string(),
        created_at_ms: trigger.created_at_ms,
        last_fired_at_ms: trigger.last_fired_at_ms,
        fired_count: trigger.fired_count,
    }
}

/// Tasks on a node that are meant to run there.
fn live_task_count(state: &berth_core::ClusterState, node_id: &str) -> usize {
    state.tasks_of_node(node_id).filter(|t| t.is_live()).count()
}

fn watch_event(item: WatchItem) -> pb::WatchEvent {
    use pb::watch_event::Change as Wire;
    match item {
        WatchItem::Change { index, change } => {
            let change = match change {
                // Watchers follow the tasks themselves, so no progress here.
                berth_core::Change::ServiceUpserted(service) => {
                    Wire::ServiceUpserted(service_to_proto(&service, Default::default()))
                }
                berth_core::Change::ServiceRemoved { id, name } => {
                    Wire::ServiceRemoved(pb::ServiceRemoved { id, name })
                }
                // Watchers get the node without its task count; `node ls` has it.
                berth_core::Change::NodeUpserted(node) => Wire::NodeUpserted(node_to_proto(&node, 0)),
                berth_core::Change::NodeRemoved { id } => Wire::NodeRemoved(id),
                berth_core::Change::TaskUpserted(task) => Wire::TaskUpserted(task_to_proto(&task, "")),
                berth_core::Change::TaskRemoved { id, service_id } => {
                    Wire::TaskRemoved(pb::TaskRemoved { id, service_id })
                }
            };
            pb::WatchEvent { index, change: Some(change) }
        }
        WatchItem::Resync { index, reason } => {
            pb::WatchEvent { index, change: Some(Wire::Resync(pb::Resync { reason })) }
        }
    }
}

/// The highest index stored on a majority of voters, from the leader's
/// replication view; `None` when this manager is not the leader.
fn commit_index(members: &[pb::ManagerMember], voters: &BTreeSet<u64>) -> Option<u64> {
    let mut matched: Vec<u64> =
        members.iter().filter(|m| voters.contains(&m.id)).map(|m| m.matched_index).collect::<Option<Vec<_>>>()?;
    if matched.is_empty() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(matched.len() / 2).copied()
}
