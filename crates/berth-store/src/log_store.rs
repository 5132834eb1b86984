//! The Raft log and vote, persisted through [`KvStore`].
//!
//! Appends are written at once and made durable by one flusher thread that
//! takes every append queued while the previous flush ran and syncs them
//! together (group commit). openraft is told an entry is saved only from
//! that thread, after the sync, so a crash never loses an acknowledged
//! entry; meanwhile the Raft core keeps replicating instead of waiting on
//! the disk. A vote is synced before `save_vote` returns.
//!
//! Everything lives in one store whose syncs cover every earlier write, so
//! what survives a power cut is always a prefix of what was written: a
//! vote that survived has every log entry appended before it. A leader's
//! entries appended after its vote are another matter: followers may hold
//! (and have committed) entries the leader had not synced yet when it lost
//! power. openraft 0.9 resumes a node whose stored vote says it leads as
//! leader at once, without an election, and it would then write new
//! entries under the same log ids as those its followers hold. So
//! [`LogStore::open`] stores a committed vote back as a plain vote for the
//! same leader: the node restarts as a follower, and a leader is elected
//! in a new term among logs as they are on disk, as etcd's raft always
//! restarts.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use berth_core::ClusterVersion;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::format::FormatMarker;
use crate::kv::{KvError, KvStore, Space};
use crate::{NodeId, StoreError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Work for the flusher thread: either a log append to acknowledge or a
/// caller waiting for its write (a vote) to be durable.
enum FlushWaiter {
    Append(LogFlushed<TypeConfig>),
    Sync(oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub struct LogStore {
    kv: Arc<dyn KvStore>,
    flusher: mpsc::Sender<FlushWaiter>,
    format: Arc<FormatMarker>,
}

impl LogStore {
    /// Opens the log kept in `kv`. A committed vote is stored back
    /// uncommitted (see the module doc) before openraft reads it.
    pub fn open(kv: Arc<dyn KvStore>, format: Arc<FormatMarker>) -> Result<Self, StoreError> {
        let store = LogStore::new(kv, format);
        let vote: Option<Vote<NodeId>> =
            store.read_meta(KEY_VOTE).map_err(|e| StoreError::Corrupt(format!("stored vote: {e}")))?;
        if let Some(vote) = vote.filter(Vote::is_committed) {
            let demoted = Vote { committed: false, ..vote };
            store.write_meta(KEY_VOTE, &demoted).map_err(|e| StoreError::Corrupt(format!("stored vote: {e}")))?;
            store.kv.flush()?;
            tracing::info!(%vote, "restarting as a follower: a leader elected in a new term continues");
        }
        Ok(store)
    }

    fn new(kv: Arc<dyn KvStore>, format: Arc<FormatMarker>) -> Self {
        let (tx, rx) = mpsc::channel();
        let flush_kv = kv.clone();
        // A plain thread: flushing blocks, and must not stall the async runtime.
        std::thread::Builder::new()
            .name("berth-log-flush".into())
            .spawn(move || run_flusher(flush_kv, rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the log flusher thread"));
        LogStore { kv, flusher: tx, format }
    }

    /// Waits until every write issued so far is on disk.
    async fn sync(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.flusher.send(FlushWaiter::Sync(tx)).map_err(|_| "log flusher stopped".to_string())?;
        rx.await.map_err(|_| "log flusher stopped".to_string())?
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, KvErrorOrDecode> {
        match self.kv.get(Space::Meta, key)? {
            Some(bytes) => Ok(Some(berth_codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), KvErrorOrDecode> {
        let bytes = berth_codec::encode(value)?;
        self.kv.insert(Space::Meta, key, &bytes)?;
        Ok(())
    }
}

fn run_flusher(kv: Arc<dyn KvStore>, rx: mpsc::Receiver<FlushWaiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = kv.flush().map_err(|e| e.to_string());
        for waiter in waiters {
            match waiter {
                FlushWaiter::Append(callback) => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                FlushWaiter::Sync(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}

/// Either the engine failed or stored bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KvErrorOrDecode {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("cannot encode or decode stored data: {0}")]
    Codec(#[from] berth_codec::CodecError),
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let values =
            self.kv.scan(Space::Log, &index_key(start), &index_key(end)).map_err(|e| StorageIOError::read_logs(&e))?;
        values
            .iter()
            .map(|bytes| berth_codec::decode(bytes).map_err(|e| StorageIOError::read_logs(&e).into()))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(KEY_LAST_PURGED).map_err(|e| StorageIOError::read_logs(&e))?;
        let last_entry = self.kv.last(Space::Log).map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last_entry {
            Some(bytes) => {
                let entry: Entry<TypeConfig> =
                    berth_codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(KEY_VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        // A vote forgotten after a crash could let this node vote twice in one term.
        self.sync().await.map_err(|e| StorageIOError::write_vote(&KvError::msg(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.read_meta(KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e))?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed on purpose: it only lets a restarted node re-apply
        // sooner; losing it is safe, the leader tells the commit index again.
        self.write_meta(KEY_COMMITTED, &committed).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let committed: Option<Option<LogId<NodeId>>> =
            self.read_meta(KEY_COMMITTED).map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut pairs = Vec::new();
        let mut level = ClusterVersion::INITIAL;
        for entry in entries {
            if let EntryPayload::Normal(request) = &entry.payload {
                level = level.max(request.command.required_version());
            }
            let bytes = berth_codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            pairs.push((index_key(entry.log_id.index).to_vec(), bytes));
        }
        // The store's format must say what it holds before it holds it.
        self.format.cover(level).map_err(|e| StorageIOError::write_logs(&e))?;
        self.kv.insert_all(Space::Log, pairs).map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher
            .send(FlushWaiter::Append(callback))
            .map_err(|_| StorageIOError::write_logs(&KvError::msg("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.kv.remove_range(Space::Log, &index_key(log_id.index), None).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge point first: if we crash midway, the log state
        // still reports a consistent last purged id.
        self.write_meta(KEY_LAST_PURGED, &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.kv
            .remove_range(Space::Log, &index_key(0), Some(&index_key(log_id.index.saturating_add(1))))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;
    use crate::kv::memory::MemoryStore;

    fn format() -> anyhow::Result<(tempfile::TempDir, Arc<FormatMarker>)> {
        let dir = tempfile::tempdir()?;
        let marker = FormatMarker::check_or_create(&dir.path().join("store"))?;
        Ok((dir, Arc::new(marker)))
    }

    #[tokio::test]
    async fn a_committed_vote_is_reopened_as_a_plain_vote_for_the_same_leader() -> anyhow::Result<()> {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
        let (_dir, format) = format()?;
        let mut store = LogStore::open(kv.clone(), format.clone())?;
        let leading = Vote::new_committed(7, 2);
        store.save_vote(&leading).await?;
        assert_eq!(store.read_vote().await?, Some(leading), "a running store reads back what it saved");

        let mut reopened = LogStore::open(kv, format)?;
        let vote = reopened.read_vote().await?.context("the vote survives a reopen")?;
        assert!(!vote.is_committed(), "a reopened node must not resume leading from its vote: {vote}");
        assert_eq!(vote.leader_id(), leading.leader_id(), "the term and the node voted for are kept");
        Ok(())
    }

    #[tokio::test]
    async fn an_uncommitted_vote_is_reopened_unchanged() -> anyhow::Result<()> {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::default());
        let (_dir, format) = format()?;
        let candidate = Vote::new(3, 1);
        LogStore::open(kv.clone(), format.clone())?.save_vote(&candidate).await?;
        assert_eq!(LogStore::open(kv, format)?.read_vote().await?, Some(candidate));
        Ok(())
    }
}
