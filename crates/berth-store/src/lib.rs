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

/// The file in a store's directory that names the format it was written
/// in; it is checked before the store is opened, so a store this build
/// cannot read is refused without a byte changed.
pub const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "berth-store-format ";

/// Opens (or creates) the log store and state machine kept under `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    check_format(dir)?;
    let kv: Arc<dyn kv::KvStore> = Arc::new(
        kv::SledStore::open(dir).map_err(|source| StoreError::Open { path: dir.display().to_string(), source })?,
    );
    let log = LogStore::open(kv.clone())?;
    let sm = StateMachineStore::open(kv)?;
    Ok((log, sm))
}

/// Refuses a store in a format this build cannot read, and marks a new
/// store with the current format (synced before anything else is written).
fn check_format(dir: &Path) -> Result<(), StoreError> {
    let path = dir.display().to_string();
    let marker = dir.join(FORMAT_FILE);
    let io_error = |what: &str, e: std::io::Error| StoreError::Open {
        path: path.clone(),
        source: kv::KvError::msg(format!("cannot {what} {}: {e}", marker.display())),
    };
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let found = text.trim().strip_prefix(FORMAT_PREFIX).unwrap_or(text.trim()).to_string();
            match found.parse::<u8>() {
                Ok(format) if (berth_codec::OLDEST_READABLE_FORMAT..=berth_codec::FORMAT_VERSION).contains(&format) => {
                    Ok(())
                }
                parsed => Err(StoreError::UnreadableFormat {
                    path,
                    found,
                    oldest: berth_codec::OLDEST_READABLE_FORMAT,
                    current: berth_codec::FORMAT_VERSION,
                    hint: match parsed {
                        Ok(format) if format > berth_codec::FORMAT_VERSION => {
                            ": it was written by a newer berth; run that version, or this one on a fresh data directory"
                        }
                        _ => "",
                    },
                }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
            if has_data {
                return Err(StoreError::Unversioned { path });
            }
            std::fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", e))?;
            let text = format!("{FORMAT_PREFIX}{}\n", berth_codec::FORMAT_VERSION);
            write_synced(&marker, text.as_bytes()).map_err(|e| io_error("write", e))
        }
        Err(e) => Err(io_error("read", e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn a_new_store_is_marked_with_the_current_format_and_reopens() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = dir.path().join("raft");
        check_format(&store)?;
        let text = std::fs::read_to_string(store.join(FORMAT_FILE)).unwrap_or_default();
        assert_eq!(text, format!("berth-store-format {}\n", berth_codec::FORMAT_VERSION));
        check_format(&store)
    }

    #[test]
    fn an_unversioned_or_newer_store_is_refused_and_left_as_it_was() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let old = dir.path().join("old");
        std::fs::create_dir_all(&old)?;
        std::fs::write(old.join("db"), b"postcard records")?;
        let refused = check_format(&old).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("before release 0.1"), "{refused}");
        assert!(!old.join(FORMAT_FILE).exists(), "a refused store must not be marked");

        let newer = dir.path().join("newer");
        std::fs::create_dir_all(&newer)?;
        let future = berth_codec::FORMAT_VERSION + 1;
        std::fs::write(newer.join(FORMAT_FILE), format!("berth-store-format {future}\n"))?;
        let refused = check_format(&newer).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains(&format!("format version {future}")) && refused.contains("newer berth"), "{refused}");
        let text = std::fs::read_to_string(newer.join(FORMAT_FILE))?;
        assert_eq!(text, format!("berth-store-format {future}\n"), "a refused store is left as it was");
        Ok(())
    }
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
