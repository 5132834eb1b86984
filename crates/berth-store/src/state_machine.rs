//! The Raft state machine: applies committed entries to the domain's
//! `ClusterState`, keeps the latest snapshot in the key-value store, and
//! publishes every change to watchers through [`StateView`].
//!
//! The applied state itself lives in memory; its durable image is the
//! snapshot plus the log after it. On restart the snapshot is loaded and
//! openraft re-applies the committed entries that follow (the log store
//! persists the committed id for that).

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::Arc;

use berth_core::{Change, ClusterState, Outcome, Response};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::format::FormatMarker;
use crate::kv::{KvStore, Space};
use crate::{Node, NodeId, StoreError, TypeConfig};

const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// Changes kept in memory for watchers that resume from an index.
pub const MAX_RETAINED_CHANGES: usize = 10_000;
/// Changes buffered per live watcher before it is told to resync.
pub const WATCH_CHANNEL_CAPACITY: usize = 4_096;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    Change {
        index: u64,
        change: Change,
    },
    /// The watcher missed changes (fell behind, or a snapshot replaced the
    /// state): it must re-read the state as of `index` and watch from there.
    Resync {
        index: u64,
        reason: String,
    },
}

/// The start of a watch: changes already retained, then a live receiver.
pub struct WatchStart {
    pub backlog: Vec<WatchItem>,
    pub live: broadcast::Receiver<WatchItem>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    cluster: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    /// The encoded `ClusterState`, kept as one binary value rather than a
    /// list of numbers.
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// Shared between the state machine (the one writer) and its readers.
struct Shared {
    state: RwLock<AppliedState>,
    retained: Mutex<VecDeque<(u64, Change)>>,
    changes: broadcast::Sender<WatchItem>,
    applied_index: watch::Sender<u64>,
}

/// Read access to the applied state, cheap to clone.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl StateView {
    /// Runs `f` over the applied cluster state and the index it reflects.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState, u64) -> T) -> T {
        let state = self.shared.state.read();
        let index = state.last_applied.map_or(0, |l| l.index);
        f(&state.cluster, index)
    }

    pub fn applied_index(&self) -> u64 {
        *self.shared.applied_index.borrow()
    }

    /// Resolves once the state has applied `index`, for read-index reads.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.shared.applied_index.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    /// Starts a watch of the changes applied after `from_index`; 0 means from now.
    pub fn watch(&self, from_index: u64) -> WatchStart {
        // Holding `retained` while subscribing: apply publishes under the
        // same lock, so no change falls between the backlog and the live feed.
        let retained = self.shared.retained.lock();
        let live = self.shared.changes.subscribe();
        let applied = self.applied_index();
        let mut backlog = Vec::new();
        if from_index > 0 && from_index < applied {
            let oldest = retained.front().map(|(i, _)| *i);
            match oldest {
                Some(oldest) if oldest <= from_index + 1 => {
                    backlog.extend(
                        retained
                            .iter()
                            .filter(|(i, _)| *i > from_index)
                            .map(|(index, change)| WatchItem::Change { index: *index, change: change.clone() }),
                    );
                }
                _ => backlog.push(WatchItem::Resync {
                    index: applied,
                    reason: format!("changes after index {from_index} are no longer retained by this manager"),
                }),
            }
        }
        WatchStart { backlog, live }
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    kv: Arc<dyn KvStore>,
    shared: Arc<Shared>,
    format: Arc<FormatMarker>,
}

impl StateMachineStore {
    pub(crate) fn open(kv: Arc<dyn KvStore>, format: Arc<FormatMarker>) -> Result<Self, StoreError> {
        let (changes, _) = broadcast::channel(WATCH_CHANNEL_CAPACITY);
        let (applied_index, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(AppliedState::default()),
            retained: Mutex::new(VecDeque::new()),
            changes,
            applied_index,
        });
        let sm = StateMachineStore { kv, shared, format };
        if let Some(stored) = sm.stored_snapshot()? {
            sm.load(&stored).map_err(|e| StoreError::Corrupt(format!("snapshot does not decode: {e}")))?;
        }
        Ok(sm)
    }

    pub fn view(&self) -> StateView {
        StateView { shared: self.shared.clone() }
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        match self.kv.get(Space::Meta, KEY_SNAPSHOT)? {
            Some(bytes) => berth_codec::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("stored snapshot does not decode: {e}"))),
            None => Ok(None),
        }
    }

    /// Stores a snapshot durably: once it is the current snapshot, openraft
    /// may purge the log entries it covers.
    async fn persist(&self, stored: &StoredSnapshot) -> StorageResult<()> {
        let signature = Some(stored.meta.signature());
        let bytes = berth_codec::encode(stored).map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        self.kv
            .insert(Space::Meta, KEY_SNAPSHOT, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || kv.flush())
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        Ok(())
    }

    /// Replaces the applied state with a snapshot's, and tells watchers.
    fn load(&self, stored: &StoredSnapshot) -> Result<(), berth_codec::CodecError> {
        let cluster: ClusterState = berth_codec::decode(&stored.data)?;
        let index = stored.meta.last_log_id.map_or(0, |l| l.index);
        {
            let mut state = self.shared.state.write();
            *state = AppliedState {
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership.clone(),
                cluster,
            };
        }
        let mut retained = self.shared.retained.lock();
        retained.clear();
        let _ = self.shared.changes.send(WatchItem::Resync { index, reason: "state replaced by a snapshot".into() });
        self.shared.applied_index.send_replace(index);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let state = self.shared.state.read();
            let data = berth_codec::encode(&state.cluster).map_err(|e| StorageIOError::read_state_machine(&e))?;
            let snapshot_id = match state.last_applied {
                Some(last) => format!("{}-{}-{}", last.leader_id, last.index, data.len()),
                None => format!("empty-{}", data.len()),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist(&stored).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
        let state = self.shared.state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut published = Vec::new();
        let mut last_index = None;
        {
            let mut state = self.shared.state.write();
            for entry in entries {
                let index = entry.log_id.index;
                state.last_applied = Some(entry.log_id);
                last_index = Some(index);
                match entry.payload {
                    EntryPayload::Blank => {
                        state.cluster.applied_index = index;
                        responses.push(Ok(Outcome::Done));
                    }
                    EntryPayload::Membership(membership) => {
                        state.cluster.applied_index = index;
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(Ok(Outcome::Done));
                    }
                    EntryPayload::Normal(request) => {
                        let (response, changes) = state.cluster.apply(index, &request);
                        published.extend(changes.into_iter().map(|change| (index, change)));
                        responses.push(response);
                    }
                }
            }
        }
        if !published.is_empty() {
            let mut retained = self.shared.retained.lock();
            for (index, change) in published {
                let _ = self.shared.changes.send(WatchItem::Change { index, change: change.clone() });
                retained.push_back((index, change));
            }
            while retained.len() > MAX_RETAINED_CHANGES {
                retained.pop_front();
            }
        }
        if let Some(index) = last_index {
            self.shared.applied_index.send_replace(index);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        self.load(&stored).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // A snapshot from a cluster at a higher version holds its records.
        let level = self.shared.state.read().cluster.cluster_version();
        self.format.cover(level).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.persist(&stored).await?;
        // Operators (and the catch-up test) tell a snapshot install from a
        // replay of the log by this line.
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self.stored_snapshot().map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
