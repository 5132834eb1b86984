//! The manager-to-manager gRPC service: Raft messages in, forwarded writes
//! and read-index requests from followers, and liveness pings.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::raft_service_server::RaftService;
use berth_proto::v1::{PingReply, PingRequest, RaftPayload, ReadIndexReply, ReadIndexRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::node::{ManagerNode, LEADER_COMMIT_TIMEOUT_MS};

pub struct RaftGrpc {
    pub node: Arc<ManagerNode>,
}

fn decode<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    berth_codec::decode(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = berth_codec::encode(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.node.raft.append_entries(decode(request)?).await;
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.node.raft.vote(decode(request)?).await;
        encode(&result)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.node.raft.install_snapshot(decode(request)?).await;
        encode(&result)
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let reply = self.node.accept_forwarded(decode(request)?).await;
        encode(&reply)
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        if !self.node.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let index = self
            .node
            .read_index_as_leader(Duration::from_millis(LEADER_COMMIT_TIMEOUT_MS))
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply { node_id: self.node.id, version: berth_core::THIS_RELEASE.to_string() }))
    }
}
