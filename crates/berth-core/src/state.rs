//! The replicated cluster state and [`ClusterState::apply`], the only
//! function that changes it. Every manager applies the same Raft entries in
//! the same order, so `apply` must be deterministic: it reads no clock and
//! draws no random numbers; both come inside the [`Request`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{CoreError, ServiceMode, ServiceSpec};

/// How many request ids are remembered for deduplication. A client retries
/// within seconds; this covers many minutes of writes at full speed.
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;

/// One client write as it travels through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client and reused on retry; empty disables deduplication.
    pub request_id: String,
    /// Wall-clock time at the proposing manager, so apply stays pure.
    pub issued_at_ms: i64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry of a new cluster, proposed by `manager init`.
    InitCluster {
        cluster_id: String,
        manager_token_hash: String,
        worker_token_hash: String,
    },
    /// Hands out the Raft node id of a joining manager.
    AllocateManagerId {
        address: String,
    },
    /// `id` is drawn by the proposing manager.
    CreateService {
        id: String,
        spec: ServiceSpec,
    },
    UpdateService {
        name: String,
        spec: ServiceSpec,
        expected_version: u64,
    },
    ScaleService {
        name: String,
        replicas: u32,
    },
    RemoveService {
        name: String,
    },
}

/// What applying a request produced. Refusals are values, not errors:
/// they are part of the replicated history like any other outcome.
pub type Response = Result<Outcome, CoreError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    ManagerId(u64),
    Service(Box<Service>),
    ServiceRemoved { id: String },
}

/// A change to the state, as `Watch` streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    ServiceUpserted(Box<Service>),
    ServiceRemoved { id: String, name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub spec: ServiceSpec,
    /// Raft index of the entry that last changed this service.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: String,
    pub manager_token_hash: String,
    pub worker_token_hash: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster: Option<ClusterInfo>,
    /// Raft index of the last entry applied to this state.
    pub applied_index: u64,
    /// The highest manager id handed out; ids are never reused.
    pub last_manager_id: u64,
    services: BTreeMap<String, Service>,
    /// Index: service name to id.
    service_ids: BTreeMap<String, String>,
    requests: RequestLog,
}

/// Responses to recent requests, keyed by request id, oldest evicted first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RequestLog {
    responses: BTreeMap<String, Response>,
    order: VecDeque<String>,
}

impl RequestLog {
    fn get(&self, request_id: &str) -> Option<&Response> {
        self.responses.get(request_id)
    }

    fn remember(&mut self, request_id: &str, response: &Response) {
        if request_id.is_empty() {
            return;
        }
        self.responses
            .insert(request_id.to_string(), response.clone());
        self.order.push_back(request_id.to_string());
        while self.order.len() > MAX_REMEMBERED_REQUESTS {
            if let Some(old) = self.order.pop_front() {
                self.responses.remove(&old);
            }
        }
    }
}

impl ClusterState {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.service_ids
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    /// The response already given to `request_id`, if it was applied.
    pub fn previous_response(&self, request_id: &str) -> Option<&Response> {
        self.requests.get(request_id)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Checks a command against the current state without changing it. The
    /// leader runs this before proposing, so a request that would be refused
    /// never becomes a Raft entry; `apply` runs it again because the state
    /// may have moved between the check and the commit.
    pub fn check(&self, command: &Command) -> Result<(), CoreError> {
        match command {
            Command::InitCluster { .. } => {
                if self.cluster.is_some() {
                    return Err(CoreError::Conflict("cluster is already initialised".into()));
                }
                Ok(())
            }
            Command::AllocateManagerId { .. } => Ok(()),
            Command::CreateService { spec, .. } => {
                spec.validate()?;
                if self.service_ids.contains_key(&spec.name) {
                    return Err(CoreError::AlreadyExists {
                        kind: "service".into(),
                        name: spec.name.clone(),
                    });
                }
                self.check_references(spec, None)
            }
            Command::UpdateService {
                name,
                spec,
                expected_version,
            } => {
                spec.validate()?;
                let current = self
                    .service(name)
                    .ok_or_else(|| CoreError::not_found("service", name))?;
                if current.version != *expected_version {
                    return Err(CoreError::StaleVersion {
                        expected: *expected_version,
                        found: current.version,
                    });
                }
                if spec.name != *name {
                    return Err(CoreError::invalid(
                        "name",
                        format!("a service cannot be renamed ('{name}' to '{}')", spec.name),
                    ));
                }
                self.check_references(spec, Some(&current.id))
            }
            Command::ScaleService { name, replicas } => {
                let current = self
                    .service(name)
                    .ok_or_else(|| CoreError::not_found("service", name))?;
                if current.spec.mode == ServiceMode::EveryNode {
                    return Err(CoreError::invalid(
                        "replicas",
                        format!("service '{name}' runs on every node and cannot be scaled"),
                    ));
                }
                let mut spec = current.spec.clone();
                spec.mode = ServiceMode::Replicated {
                    replicas: *replicas,
                };
                spec.validate()
            }
            Command::RemoveService { name } => {
                self.service(name)
                    .ok_or_else(|| CoreError::not_found("service", name))?;
                let dependents: Vec<&str> = self
                    .services
                    .values()
                    .filter(|s| s.spec.links.iter().any(|l| l.service == *name))
                    .map(|s| s.spec.name.as_str())
                    .collect();
                if !dependents.is_empty() {
                    return Err(CoreError::Conflict(format!(
                        "service '{name}' is linked from {}; remove or update those first",
                        dependents.join(", ")
                    )));
                }
                Ok(())
            }
        }
    }

    /// Links must name existing services and host ports must be free: two
    /// services publishing one host port could never share a node.
    fn check_references(
        &self,
        spec: &ServiceSpec,
        own_id: Option<&String>,
    ) -> Result<(), CoreError> {
        for (i, link) in spec.links.iter().enumerate() {
            if !self.service_ids.contains_key(&link.service) {
                return Err(CoreError::invalid(
                    format!("links[{i}].service"),
                    format!("service '{}' does not exist", link.service),
                ));
            }
        }
        for (i, port) in spec.ports.iter().enumerate() {
            let taken_by = self
                .services
                .values()
                .filter(|s| Some(&s.id) != own_id)
                .find(|s| {
                    s.spec
                        .ports
                        .iter()
                        .any(|p| p.host_port == port.host_port && p.protocol == port.protocol)
                });
            if let Some(other) = taken_by {
                return Err(CoreError::invalid(
                    format!("ports[{i}].host_port"),
                    format!(
                        "host port {}/{} is already published by service '{}'",
                        port.host_port, port.protocol, other.spec.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies one committed request at `index`. Returns the response for
    /// the client and the changes for watchers. A request id seen before
    /// returns the first response again and changes nothing.
    pub fn apply(&mut self, index: u64, request: &Request) -> (Response, Vec<Change>) {
        self.applied_index = index;
        if let Some(previous) = self.requests.get(&request.request_id) {
            return (previous.clone(), Vec::new());
        }
        let mut changes = Vec::new();
        let response = self
            .check(&request.command)
            .map(|()| self.execute(index, request, &mut changes));
        self.requests.remember(&request.request_id, &response);
        (response, changes)
    }

    /// Carries out a command that `check` accepted.
    fn execute(&mut self, index: u64, request: &Request, changes: &mut Vec<Change>) -> Outcome {
        let now = request.issued_at_ms;
        match &request.command {
            Command::InitCluster {
                cluster_id,
                manager_token_hash,
                worker_token_hash,
            } => {
                self.cluster = Some(ClusterInfo {
                    id: cluster_id.clone(),
                    manager_token_hash: manager_token_hash.clone(),
                    worker_token_hash: worker_token_hash.clone(),
                    created_at_ms: now,
                });
                Outcome::Done
            }
            Command::AllocateManagerId { .. } => {
                // The bootstrap manager is 1, whether or not it allocated.
                self.last_manager_id = self.last_manager_id.max(1) + 1;
                Outcome::ManagerId(self.last_manager_id)
            }
            Command::CreateService { id, spec } => {
                let service = Service {
                    id: id.clone(),
                    spec: spec.clone(),
                    version: index,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                self.upsert_service(service, changes)
            }
            Command::UpdateService { name, spec, .. } => {
                self.modify_service(name, index, now, changes, |s| *s = spec.clone())
            }
            Command::ScaleService { name, replicas } => {
                self.modify_service(name, index, now, changes, |s| {
                    s.mode = ServiceMode::Replicated {
                        replicas: *replicas,
                    }
                })
            }
            Command::RemoveService { name } => match self.service_ids.remove(name) {
                Some(id) => {
                    self.services.remove(&id);
                    changes.push(Change::ServiceRemoved {
                        id: id.clone(),
                        name: name.clone(),
                    });
                    Outcome::ServiceRemoved { id }
                }
                None => Outcome::Done,
            },
        }
    }

    fn modify_service(
        &mut self,
        name: &str,
        index: u64,
        now: i64,
        changes: &mut Vec<Change>,
        edit: impl FnOnce(&mut ServiceSpec),
    ) -> Outcome {
        let Some(mut service) = self.service(name).cloned() else {
            return Outcome::Done;
        };
        edit(&mut service.spec);
        service.version = index;
        service.updated_at_ms = now;
        self.upsert_service(service, changes)
    }

    fn upsert_service(&mut self, service: Service, changes: &mut Vec<Change>) -> Outcome {
        self.service_ids
            .insert(service.spec.name.clone(), service.id.clone());
        self.services.insert(service.id.clone(), service.clone());
        changes.push(Change::ServiceUpserted(Box::new(service.clone())));
        Outcome::Service(Box::new(service))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{PortMapping, Protocol, ServiceLink};

    fn request(id: &str, command: Command) -> Request {
        Request {
            request_id: id.to_string(),
            issued_at_ms: 1_000,
            command,
        }
    }

    fn create(name: &str) -> Command {
        Command::CreateService {
            id: format!("id-{name}"),
            spec: ServiceSpec::new(name, "busybox"),
        }
    }

    #[test]
    fn create_then_update_bumps_the_version_to_the_entry_index() {
        let mut state = ClusterState::default();
        let (created, changes) = state.apply(5, &request("a", create("web")));
        let Ok(Outcome::Service(service)) = created else {
            panic!("create failed: {created:?}")
        };
        assert_eq!(service.version, 5);
        assert_eq!(changes.len(), 1);

        let mut spec = service.spec.clone();
        spec.image = "busybox:2".into();
        let update = Command::UpdateService {
            name: "web".into(),
            spec,
            expected_version: 5,
        };
        let (updated, _) = state.apply(9, &request("b", update));
        assert!(
            matches!(updated, Ok(Outcome::Service(ref s)) if s.version == 9 && s.spec.image == "busybox:2")
        );
    }

    #[test]
    fn a_stale_update_is_refused_and_changes_nothing() {
        let mut state = ClusterState::default();
        let _ = state.apply(5, &request("a", create("web")));
        let before = state.service("web").cloned();
        let update = Command::UpdateService {
            name: "web".into(),
            spec: ServiceSpec::new("web", "other"),
            expected_version: 4,
        };
        let (response, changes) = state.apply(6, &request("b", update));
        assert_eq!(
            response,
            Err(CoreError::StaleVersion {
                expected: 4,
                found: 5
            })
        );
        assert!(changes.is_empty());
        assert_eq!(state.service("web").cloned(), before);
    }

    #[test]
    fn a_retried_request_is_applied_once() {
        let mut state = ClusterState::default();
        let first = state.apply(1, &request("same", create("web")));
        let again = state.apply(2, &request("same", create("web")));
        assert_eq!(first.0, again.0, "the retry gets the first response");
        assert!(again.1.is_empty(), "the retry changes nothing");
        assert_eq!(state.services().count(), 1);
        let fresh = state.apply(3, &request("other", create("web")));
        assert!(matches!(fresh.0, Err(CoreError::AlreadyExists { .. })));
    }

    #[test]
    fn links_and_ports_are_checked_against_other_services() {
        let mut state = ClusterState::default();
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.links.push(ServiceLink {
            service: "db".into(),
            alias: String::new(),
        });
        let err = state
            .check(&Command::CreateService {
                id: "x".into(),
                spec,
            })
            .expect_err("missing link");
        assert_eq!(
            err,
            CoreError::invalid("links[0].service", "service 'db' does not exist")
        );

        let mut web = ServiceSpec::new("web", "busybox");
        web.ports.push(PortMapping {
            host_port: 80,
            container_port: 80,
            protocol: Protocol::Tcp,
        });
        let _ = state.apply(
            1,
            &request(
                "a",
                Command::CreateService {
                    id: "w".into(),
                    spec: web.clone(),
                },
            ),
        );
        let mut other = web.clone();
        other.name = "other".into();
        let err = state
            .check(&Command::CreateService {
                id: "o".into(),
                spec: other,
            })
            .expect_err("port taken");
        assert!(
            matches!(err, CoreError::SpecInvalid { ref field, .. } if field == "ports[0].host_port")
        );
        // Its own port does not conflict with itself on update.
        let update = Command::UpdateService {
            name: "web".into(),
            spec: web,
            expected_version: 1,
        };
        assert_eq!(state.check(&update), Ok(()));
    }

    #[test]
    fn manager_ids_start_after_the_bootstrap_manager() {
        let mut state = ClusterState::default();
        let alloc = || {
            request(
                "",
                Command::AllocateManagerId {
                    address: "x".into(),
                },
            )
        };
        assert_eq!(state.apply(1, &alloc()).0, Ok(Outcome::ManagerId(2)));
        assert_eq!(state.apply(2, &alloc()).0, Ok(Outcome::ManagerId(3)));
    }

    #[test]
    fn removing_a_linked_service_is_refused() {
        let mut state = ClusterState::default();
        let _ = state.apply(1, &request("a", create("db")));
        let mut web = ServiceSpec::new("web", "busybox");
        web.links.push(ServiceLink {
            service: "db".into(),
            alias: "store".into(),
        });
        let _ = state.apply(
            2,
            &request(
                "b",
                Command::CreateService {
                    id: "w".into(),
                    spec: web,
                },
            ),
        );
        let (response, _) = state.apply(
            3,
            &request("c", Command::RemoveService { name: "db".into() }),
        );
        assert!(matches!(response, Err(CoreError::Conflict(_))));
        assert!(state.service("db").is_some());
    }

    fn arbitrary_command() -> impl Strategy<Value = Command> {
        let name = prop::sample::select(vec!["a", "b", "c"]);
        prop_oneof![
            name.clone().prop_map(create),
            (name.clone(), 0u32..5).prop_map(|(n, r)| Command::ScaleService {
                name: n.into(),
                replicas: r
            }),
            (name.clone(), 0u64..20).prop_map(|(n, v)| Command::UpdateService {
                name: n.into(),
                spec: ServiceSpec::new(n, "img2"),
                expected_version: v,
            }),
            name.prop_map(|n| Command::RemoveService { name: n.into() }),
        ]
    }

    proptest! {
        /// Replaying the same log gives the same state, and the state
        /// survives a snapshot round trip: what followers and restarted
        /// managers rely on.
        #[test]
        fn apply_is_deterministic_and_snapshots_round_trip(
            commands in prop::collection::vec((arbitrary_command(), 0usize..4), 1..40)
        ) {
            let requests: Vec<Request> = commands
                .into_iter()
                .map(|(c, id)| request(&format!("r{id}"), c))
                .collect();
            let mut first = ClusterState::default();
            let mut second = ClusterState::default();
            for (i, r) in requests.iter().enumerate() {
                let a = first.apply(i as u64 + 1, r);
                let b = second.apply(i as u64 + 1, r);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(&first, &second);
            let bytes = postcard::to_allocvec(&first).expect("encode");
            let decoded: ClusterState = postcard::from_bytes(&bytes).expect("decode");
            prop_assert_eq!(decoded, first);
        }
    }
}
