//! Storage for a berth manager's Raft node: the openraft type config, the
//! log store and state machine, both kept in a key-value engine (sled)
//! behind the small [`kv::KvStore`] trait, and [`StateView`], the read side
//! of the applied state that the API and the controllers use.
//!
//! Invariants: nothing outside this crate names sled; only the state
//! machine's `apply` (through `berth_core::ClusterState::apply`) mutates the
//! replicated state; a vote, log entry or snapshot is reported saved only
//! after it has been fsync'd.

// openraft's StorageError is large by design; boxing it at every call site
// would fight the trait signatures it must match.
#![allow(clippy::result_large_err)]

pub mod format;
pub mod kv;
pub mod log_store;
pub mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, StateView, WatchItem, WatchStart};

pub type NodeId = u64;
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// berth's Raft types: client requests and responses are the domain's.
    pub TypeConfig:
        D = berth_core::Request,
        R = berth_core::Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data store at {path}: {source}")]
    Open { path: String, source: kv::KvError },
    #[error(
        "the data store at {path} was written by berth before release 0.1, whose records have no \
         format version; this berth cannot read it (nothing was changed). Run the berth that wrote \
         it, or start this manager from an empty data directory and let it join the cluster"
    )]
    Unversioned { path: String },
    #[error(
        "the data store at {path} is in format version {found}, and this berth reads formats \
         {oldest} to {current}{hint} (nothing was changed)"
    )]
    UnreadableFormat { path: String, found: String, oldest: u8, current: u8, hint: &'static str },
    #[error("corrupt data store: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Kv(#[from] kv::KvError),
}

/// Opens (or creates) the log store and state machine kept under `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let format = Arc::new(format::FormatMarker::check_or_create(dir)?);
    let kv: Arc<dyn kv::KvStore> = Arc::new(
        kv::SledStore::open(dir).map_err(|source| StoreError::Open { path: dir.display().to_string(), source })?,
    );
    let log = LogStore::open(kv.clone(), format.clone())?;
    let sm = StateMachineStore::open(kv, format)?;
    Ok((log, sm))
}

#[cfg(test)]
mod suite {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;
    use tempfile::TempDir;

    use super::*;

    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
            let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
            let (log, sm) = open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite: the contract every store must keep.
    #[test]
    fn sled_store_passes_the_openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(SledBuilder)
    }
}
