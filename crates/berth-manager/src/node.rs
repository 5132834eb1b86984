//! One manager's Raft node and the paths every request takes through it:
//! writes go to the leader (forwarded when this manager follows), reads
//! are linearizable through a read index unless the caller asks for a
//! local read. Both give up within [`WRITE_DEADLINE_MS`] with a clear
//! "no quorum" error instead of hanging in a minority partition.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_core::token::{hash_token, JoinToken, Role};
use berth_core::{Command, CoreError, Outcome, Request, Response};
use berth_proto::v1::{PingReply, PingRequest, RaftPayload, ReadIndexRequest};
use berth_store::{NodeId, Raft, StateView};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::error::ManagerError;
use crate::identity::Identity;
use crate::network::PeerChannels;
use crate::proposer::{ProposeFailure, Proposer};

/// A client hears back within this time: committed, refused, or "no quorum".
pub const WRITE_DEADLINE_MS: u64 = 1_800;
/// How long the leader waits for a quorum to acknowledge one entry.
pub const LEADER_COMMIT_TIMEOUT_MS: u64 = 1_500;
/// One forwarded request to the leader.
pub const FORWARD_TIMEOUT_MS: u64 = 1_600;
/// How often a request waiting for a leader re-checks.
pub const LEADER_POLL_MS: u64 = 20;
/// A joining manager may need to receive a large snapshot first.
pub const JOIN_CATCH_UP_TIMEOUT_MS: u64 = 120_000;

/// The leader's answer to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied(Response),
    NotLeader,
    NoQuorum(String),
    Failed(String),
}

pub struct ManagerNode {
    pub id: NodeId,
    pub raft: Raft,
    pub view: StateView,
    pub identity: Identity,
    pub peers: PeerChannels,
    /// Proposes this manager's writes while it leads, batched.
    pub proposer: Proposer,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How long a ping of another manager may take before it counts as unreachable.
pub const PING_TIMEOUT_MS: u64 = 300;

impl ManagerNode {
    /// Pings the manager at `addr`: its reply (with its release), or `None`
    /// when it does not answer within [`PING_TIMEOUT_MS`].
    pub async fn ping(&self, addr: &str) -> Option<PingReply> {
        let mut client = self.peers.raft_client(addr).ok()?;
        let mut ping = tonic::Request::new(PingRequest {});
        ping.set_timeout(Duration::from_millis(PING_TIMEOUT_MS));
        client.ping(ping).await.ok().map(tonic::Response::into_inner)
    }

    /// The current leader's id and address, as this manager knows it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        // Borrowed, not cloned: this runs on every request.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    /// The address other managers and clients reach this one at.
    pub fn own_address(&self) -> String {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().get_node(&self.id).map(|n| n.addr.clone()).unwrap_or_default()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn no_quorum_message(&self) -> String {
        let metrics = self.raft.metrics().borrow().clone();
        let voters = metrics.membership_config.membership().voter_ids().count();
        format!(
            "manager {} has no leader to commit through (term {}, {voters} voting managers): \
             fewer than a majority of managers are reachable; retry once they are back",
            self.id, metrics.current_term
        )
    }

    /// Commits a client command through the leader, wherever it is.
    pub async fn write(&self, request_id: String, command: Command) -> Result<Outcome, ManagerError> {
        self.view.read(|state, _| state.check_cluster_version(&command))?;
        let request = Request { request_id, issued_at_ms: now_ms(), command };
        let deadline = Instant::now() + Duration::from_millis(WRITE_DEADLINE_MS);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.leader() {
                Some((leader, _)) if leader == self.id => match self.propose_as_leader(&request, remaining).await {
                    Ok(response) => return Ok(response?),
                    Err(ProposeFailure::NoQuorum(message)) => return Err(ManagerError::NoQuorum(message)),
                    Err(ProposeFailure::Internal(message)) => return Err(ManagerError::Internal(message)),
                    Err(ProposeFailure::NotLeader) => {}
                },
                Some((leader, addr)) => match self.forward(&addr, &request, remaining).await {
                    Ok(ForwardReply::Applied(response)) => return Ok(response?),
                    Ok(ForwardReply::NoQuorum(message)) => return Err(ManagerError::NoQuorum(message)),
                    Ok(ForwardReply::Failed(message)) => return Err(ManagerError::Internal(message)),
                    Ok(ForwardReply::NotLeader) => {
                        debug!(leader, "forwarded to a former leader; retrying")
                    }
                    Err(e) => debug!(leader, error = %e, "cannot forward to the leader; retrying"),
                },
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(ManagerError::NoQuorum(self.no_quorum_message()));
            }
            self.wait_for_leader_change(deadline).await;
        }
    }

    async fn wait_for_leader_change(&self, deadline: Instant) {
        let pause = Duration::from_millis(LEADER_POLL_MS).min(deadline.saturating_duration_since(Instant::now()));
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(pause, metrics.changed()).await;
    }

    /// Runs on the leader: refuse what the state refuses without writing
    /// an entry, answer a retried request from memory, else commit.
    async fn propose_as_leader(&self, request: &Request, budget: Duration) -> Result<Response, ProposeFailure> {
        let precheck = self.view.read(|state, _| {
            if let Some(previous) = state.previous_response(&request.request_id) {
                return Some(previous);
            }
            state.check(&request.command).err().map(Err)
        });
        if let Some(response) = precheck {
            return Ok(response);
        }
        let timeout = budget.min(Duration::from_millis(LEADER_COMMIT_TIMEOUT_MS));
        self.proposer.propose(request.clone(), timeout).await
    }

    async fn forward(&self, addr: &str, request: &Request, budget: Duration) -> Result<ForwardReply, ManagerError> {
        let data = berth_codec::encode(request).map_err(ManagerError::internal)?;
        let mut client = self.peers.raft_client(addr).map_err(ManagerError::internal)?;
        let mut message = tonic::Request::new(RaftPayload { data });
        message.set_timeout(budget.min(Duration::from_millis(FORWARD_TIMEOUT_MS)));
        let reply = client.propose(message).await.map_err(|s| ManagerError::Internal(s.message().to_string()))?;
        berth_codec::decode(&reply.into_inner().data).map_err(ManagerError::internal)
    }

    /// Handles a write forwarded by a follower: only ever proposes locally,
    /// so a request never bounces between managers.
    pub async fn accept_forwarded(&self, request: Request) -> ForwardReply {
        if !self.is_leader() {
            return ForwardReply::NotLeader;
        }
        let budget = Duration::from_millis(LEADER_COMMIT_TIMEOUT_MS);
        match self.propose_as_leader(&request, budget).await {
            Ok(response) => ForwardReply::Applied(response),
            Err(ProposeFailure::NotLeader) => ForwardReply::NotLeader,
            Err(ProposeFailure::NoQuorum(message)) => ForwardReply::NoQuorum(message),
            Err(ProposeFailure::Internal(message)) => ForwardReply::Failed(message),
        }
    }

    /// Waits until this manager's state reflects every write committed
    /// before the call (Raft's read index), so the read that follows is
    /// linearizable even on a follower.
    pub async fn read_barrier(&self) -> Result<(), ManagerError> {
        let deadline = Instant::now() + Duration::from_millis(WRITE_DEADLINE_MS);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let index = match self.leader() {
                Some((leader, _)) if leader == self.id => self.read_index_as_leader(remaining).await,
                Some((_, addr)) => self.remote_read_index(&addr, remaining).await,
                None => Err(ManagerError::NoQuorum(self.no_quorum_message())),
            };
            match index {
                Ok(index) => {
                    return tokio::time::timeout(remaining, self.view.wait_applied(index)).await.map_err(|_| {
                        ManagerError::NoQuorum(format!("this manager did not catch up to index {index} in time"))
                    });
                }
                Err(ManagerError::NoQuorum(_) | ManagerError::LeadershipMoved | ManagerError::Internal(_))
                    if Instant::now() < deadline =>
                {
                    self.wait_for_leader_change(deadline).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn read_index_as_leader(&self, budget: Duration) -> Result<u64, ManagerError> {
        match tokio::time::timeout(budget, self.raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => Err(ManagerError::LeadershipMoved),
            Ok(Err(e)) => Err(ManagerError::NoQuorum(e.to_string())),
            Err(_) => Err(ManagerError::NoQuorum(self.no_quorum_message())),
        }
    }

    async fn remote_read_index(&self, addr: &str, budget: Duration) -> Result<u64, ManagerError> {
        let mut client = self.peers.raft_client(addr).map_err(ManagerError::internal)?;
        let mut message = tonic::Request::new(ReadIndexRequest {});
        message.set_timeout(budget.min(Duration::from_millis(FORWARD_TIMEOUT_MS)));
        match client.read_index(message).await {
            Ok(reply) => Ok(reply.into_inner().index),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Err(ManagerError::NoQuorum(status.message().into()))
            }
            Err(status) => Err(ManagerError::Internal(status.message().into())),
        }
    }

    /// Checks a join token against this cluster's hashes, with an error
    /// that says what is wrong with it.
    pub fn check_join_token(&self, token: &str, wanted: Role) -> Result<(), Status> {
        let parsed: JoinToken = token.parse().map_err(|e: CoreError| Status::invalid_argument(e.to_string()))?;
        let cluster = self
            .view
            .read(|state, _| state.cluster.clone())
            .ok_or_else(|| Status::unavailable("the cluster is still initialising"))?;
        if parsed.cluster_id != cluster.id {
            return Err(Status::permission_denied(format!(
                "this token belongs to cluster {}, not to this cluster ({})",
                parsed.cluster_id, cluster.id
            )));
        }
        if parsed.role != wanted {
            return Err(Status::permission_denied(format!(
                "this is a {} join token; a {wanted} joins with the {wanted} token (`berth join-token {wanted}`)",
                parsed.role
            )));
        }
        let expected = match wanted {
            Role::Manager => cluster.manager_token_hash,
            Role::Worker => cluster.worker_token_hash,
        };
        if hash_token(token.trim()) != expected {
            return Err(Status::permission_denied(
                "invalid join token: it does not match this cluster's current token",
            ));
        }
        Ok(())
    }

    /// Adds a manager that already runs its Raft node: as a learner first,
    /// caught up (from a snapshot if the log was compacted), then as a voter.
    pub async fn add_manager(&self, id: NodeId, addr: String) -> Result<(), ManagerError> {
        let allocated = self.view.read(|state, _| state.last_manager_id);
        if id < 2 || id > allocated {
            return Err(ManagerError::PermissionDenied(format!("manager id {id} was never allocated by this cluster")));
        }
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        info!(manager = id, %addr, "adding manager as learner");
        let node = openraft::BasicNode::new(addr);
        tokio::time::timeout(Duration::from_millis(JOIN_CATCH_UP_TIMEOUT_MS), self.raft.add_learner(id, node, true))
            .await
            .map_err(|_| ManagerError::NoQuorum(format!("manager {id} did not catch up within the join timeout")))?
            .map_err(|e| ManagerError::NoQuorum(format!("cannot add manager {id} as learner: {e}")))?;
        info!(manager = id, "manager caught up; promoting to voter");
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
    }

    pub async fn remove_manager(&self, id: NodeId) -> Result<(), ManagerError> {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(ManagerError::Refused(berth_core::CoreError::not_found("manager", id.to_string())));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(ManagerError::Refused(berth_core::CoreError::Conflict(
                "cannot remove the last voting manager".into(),
            )));
        }
        let change = if voters.contains(&id) {
            // With `retain = false` a removed voter leaves the node set too.
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_membership(change).await
    }

    async fn change_membership(&self, change: ChangeMembers<NodeId, openraft::BasicNode>) -> Result<(), ManagerError> {
        let deadline = Instant::now() + Duration::from_millis(JOIN_CATCH_UP_TIMEOUT_MS);
        loop {
            match self.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) if Instant::now() < deadline => {
                    // Another change is in flight (e.g. two managers joining at once).
                    warn!(error = %e, "membership change busy; retrying");
                    tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS * 5)).await;
                }
                Err(e) => return Err(ManagerError::NoQuorum(format!("membership change failed: {e}"))),
            }
        }
    }
}

/// Draws `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A fresh random id for services, nodes and tasks.
pub fn hex_id() -> String {
    hex::encode(random_bytes::<12>())
}
