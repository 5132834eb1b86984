//! The leader's proposals. A request that arrives while [`MAX_IN_FLIGHT`]
//! entries are being committed waits, and every request waiting when a
//! slot frees goes into one Raft entry (`Command::Batch`). One client sees
//! no added wait (an idle proposer proposes at once); many clients share
//! entries, and with them appends, flushes and replication round trips,
//! which is where a write's CPU went when each had an entry of its own.

use std::sync::Arc;
use std::time::Duration;

use berth_core::{Command, Outcome, Request, Response};
use berth_store::{NodeId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::node::now_ms;

/// Entries being committed at once: with two, one entry is replicated
/// while the next one fills. Measured with 64 clients (control-plane.sh):
/// 1 gave 7,600 writes/s, 2 gave 8,450, 4 gave 7,750.
pub const MAX_IN_FLIGHT: usize = 2;
/// Requests in one entry, which keeps an entry well under gRPC's message
/// limit even with large requests (a stack deploy is a few KiB).
pub const MAX_BATCH: usize = 128;

/// Why the local leader could not commit a request.
#[derive(Debug, Clone)]
pub enum ProposeFailure {
    NotLeader,
    NoQuorum(String),
    /// A bug: the entry was committed but its answer was not a batch's.
    Internal(String),
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Result<Response, ProposeFailure>>,
}

/// Hands requests to the loop that proposes them. Dropping it ends the loop.
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    node_id: NodeId,
}

impl Proposer {
    /// Starts the proposing loop of manager `node_id`. Must run inside a
    /// tokio runtime.
    pub fn start(raft: Raft, node_id: NodeId, commit_timeout: Duration) -> Proposer {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, pending, node_id, commit_timeout));
        Proposer { queue, node_id }
    }

    /// Commits `request`, alone or with others, waiting at most `budget`.
    /// On a timeout the request may still be applied later: retrying it
    /// with the same request id is safe.
    pub async fn propose(&self, request: Request, budget: Duration) -> Result<Response, ProposeFailure> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { request, reply }).map_err(|_| ProposeFailure::NotLeader)?;
        match tokio::time::timeout(budget, answer).await {
            Ok(Ok(result)) => result,
            // The loop ended: this manager is shutting down.
            Ok(Err(_)) => Err(ProposeFailure::NotLeader),
            Err(_) => Err(timed_out(self.node_id, budget)),
        }
    }
}

fn timed_out(node_id: NodeId, waited: Duration) -> ProposeFailure {
    ProposeFailure::NoQuorum(format!(
        "the leader (manager {node_id}) could not reach a majority of managers within {} ms; the write may still \
         be applied if they come back, and retrying with the same request id is safe",
        waited.as_millis()
    ))
}

async fn run(raft: Raft, mut pending: mpsc::UnboundedReceiver<Pending>, node_id: NodeId, commit_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        // While every slot is busy, more requests queue up behind this one.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch, node_id, commit_timeout).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry (a lone request as itself) and answers
/// each request with its own response.
async fn commit(raft: &Raft, batch: Vec<Pending>, node_id: NodeId, commit_timeout: Duration) {
    let (mut requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let lone = requests.len() == 1;
    let entry = if lone {
        requests.swap_remove(0)
    } else {
        Request { request_id: String::new(), issued_at_ms: now_ms(), command: Command::Batch { requests } }
    };
    let outcome = match tokio::time::timeout(commit_timeout, raft.client_write(entry)).await {
        Ok(Ok(reply)) => Ok(reply.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(ProposeFailure::NotLeader),
        Ok(Err(e)) => Err(ProposeFailure::NoQuorum(e.to_string())),
        Err(_) => Err(timed_out(node_id, commit_timeout)),
    };
    let responses: Vec<Result<Response, ProposeFailure>> = match outcome {
        Ok(response) if lone => vec![Ok(response)],
        Ok(Ok(Outcome::Batch(responses))) if responses.len() == replies.len() => {
            responses.into_iter().map(Ok).collect()
        }
        Ok(other) => {
            warn!(?other, "a batch entry was answered with something else; failing its requests");
            let failure =
                ProposeFailure::Internal("the entry this request was committed in had no answer for it".into());
            replies.iter().map(|_| Err(failure.clone())).collect()
        }
        Err(failure) => replies.iter().map(|_| Err(failure.clone())).collect(),
    };
    for (reply, response) in replies.into_iter().zip(responses) {
        // The caller may have stopped waiting; the entry stands either way.
        let _ = reply.send(response);
    }
}
