//! The key-value engine under the Raft storage, behind a trait so sled can
//! be replaced without touching the log store or the state machine (the
//! lesson Garage learned when it moved off sled).
//!
//! Durability: sled 0.34's `flush()` is not a sync. It makes its log
//! "stable" with `sync_file_range`, which flushes neither the drive's
//! write cache nor the file's size, and it writes values too large for a
//! log segment to blob files it never syncs; its own `sync_all` runs
//! only from a background thread about every 500 ms. [`SledStore::flush`]
//! therefore syncs sled's files itself after sled's flush: new blob files
//! (and their directory) first, then `fdatasync` of the log file, then the
//! data directory when sled created, renamed or removed a file in it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The separate key spaces the storage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Raft log entries, keyed by big-endian index so keys sort by index.
    Log,
    /// Vote, committed and purged log ids, the current snapshot.
    Meta,
}

#[derive(Debug, thiserror::Error)]
#[error("storage engine: {0}")]
pub struct KvError(String);

impl KvError {
    pub fn msg(message: impl Into<String>) -> Self {
        KvError(message.into())
    }
}

impl From<sled::Error> for KvError {
    fn from(e: sled::Error) -> Self {
        KvError(e.to_string())
    }
}

impl KvError {
    fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        KvError(format!("cannot {what} {}: {e}", path.display()))
    }
}

pub type KvResult<T> = Result<T, KvError>;

/// The operations the Raft storage needs. Writes become durable only after
/// [`KvStore::flush`] returns.
pub trait KvStore: Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>>;
    fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> KvResult<()>;
    /// Inserts the pairs in order. Not atomic: a crash may keep a prefix,
    /// which is all a Raft log append needs (it is acknowledged only after
    /// the flush that follows).
    fn insert_all(&self, space: Space, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> KvResult<()>;
    /// Removes every key in `from..to` (`to` unbounded when `None`).
    fn remove_range(&self, space: Space, from: &[u8], to: Option<&[u8]>) -> KvResult<()>;
    /// Values of keys in `from..to`, in key order.
    fn scan(&self, space: Space, from: &[u8], to: &[u8]) -> KvResult<Vec<Vec<u8>>>;
    /// The value of the greatest key.
    fn last(&self, space: Space) -> KvResult<Option<Vec<u8>>>;
    /// Blocks until every write before it is on stable storage (fsync'd).
    fn flush(&self) -> KvResult<()>;
}

pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    files: SledFiles,
}

impl SledStore {
    pub fn open(dir: &Path) -> KvResult<Self> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()?;
        let log = db.open_tree("raft-log")?;
        let meta = db.open_tree("raft-meta")?;
        let files = SledFiles::open(dir)?;
        Ok(SledStore { db, log, meta, files })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Log => &self.log,
            Space::Meta => &self.meta,
        }
    }
}

impl KvStore for SledStore {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self.tree(space).get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.tree(space).insert(key, value)?;
        Ok(())
    }

    fn insert_all(&self, space: Space, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> KvResult<()> {
        // Plain inserts, not a sled batch: a batch takes sled's global write
        // lock and waits out every concurrent reader (replication reads the
        // log back constantly), which cost half the write throughput.
        let tree = self.tree(space);
        for (k, v) in pairs {
            tree.insert(k, v)?;
        }
        Ok(())
    }

    fn remove_range(&self, space: Space, from: &[u8], to: Option<&[u8]>) -> KvResult<()> {
        let tree = self.tree(space);
        let mut batch = sled::Batch::default();
        let keys = match to {
            Some(to) => tree.range(from..to),
            None => tree.range(from..),
        };
        for item in keys {
            let (key, _) = item?;
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    fn scan(&self, space: Space, from: &[u8], to: &[u8]) -> KvResult<Vec<Vec<u8>>> {
        self.tree(space).range(from..to).map(|item| Ok(item?.1.to_vec())).collect()
    }

    fn last(&self, space: Space) -> KvResult<Option<Vec<u8>>> {
        Ok(self.tree(space).last()?.map(|(_, v)| v.to_vec()))
    }

    fn flush(&self) -> KvResult<()> {
        let blobs_before = self.files.blob_names()?;
        self.db.flush()?;
        self.files.sync(&blobs_before)
    }
}

/// The files sled writes under its directory, and what has been synced of
/// them. sled 0.34 keeps its log in `db`, values too large for a segment in
/// `blobs/<lsn>`, and its page-table snapshots in `snap.<lsn>` (written,
/// synced and renamed into place by sled itself).
struct SledFiles {
    dir: PathBuf,
    log_file: File,
    blobs_dir: PathBuf,
    synced: Mutex<SyncedNames>,
}

#[derive(Default)]
struct SyncedNames {
    /// Blob files synced so far (sled removes them when it collects them).
    blobs: BTreeSet<OsString>,
    /// The directory's entries as of its last sync.
    entries: BTreeSet<OsString>,
}

impl SledFiles {
    fn open(dir: &Path) -> KvResult<Self> {
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(|e| KvError::io("open", &log_path, e))?;
        let files =
            SledFiles { dir: dir.to_path_buf(), log_file, blobs_dir: dir.join("blobs"), synced: Mutex::default() };
        // sled writes its configuration once, at creation, and never syncs it.
        let conf_path = dir.join("conf");
        File::open(&conf_path).and_then(|conf| conf.sync_data()).map_err(|e| KvError::io("sync", &conf_path, e))?;
        // A new store's files must not vanish with their directory entries,
        // nor the store's directory with its entry in the parent.
        files.sync(&BTreeSet::new())?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    fn blob_names(&self) -> KvResult<BTreeSet<OsString>> {
        entry_names(&self.blobs_dir)
    }

    /// Makes everything sled flushed before this call durable. Blobs go
    /// first: a durable log record that points to a lost blob would be
    /// corruption, while a synced blob nothing points to is removed by
    /// sled's recovery. `blobs_before` is the blob listing taken before
    /// sled's flush.
    fn sync(&self, blobs_before: &BTreeSet<OsString>) -> KvResult<()> {
        let mut synced = self.synced.lock();
        self.sync_new_blobs(&mut synced, blobs_before)?;
        self.log_file.sync_data().map_err(|e| KvError::io("sync", &self.dir.join("db"), e))?;
        let entries = entry_names(&self.dir)?;
        if entries != synced.entries {
            sync_dir(&self.dir)?;
            synced.entries = entries;
        }
        Ok(())
    }

    /// Syncs every blob not known to be synced. sled writes a blob while it
    /// reserves the log record that points to it, and its flush waits for
    /// every reservation made before the flush began. So a blob listed
    /// before the flush was complete when it was synced here, and is
    /// recorded as synced; one that appeared since may still be being
    /// written, and is synced again by the next flush. Tracked by name,
    /// not by the highest LSN: concurrent writers may create a
    /// lower-numbered blob after a higher one.
    fn sync_new_blobs(&self, synced: &mut SyncedNames, blobs_before: &BTreeSet<OsString>) -> KvResult<()> {
        let present = self.blob_names()?;
        let mut new_entries = false;
        for name in present.difference(&synced.blobs) {
            let path = self.blobs_dir.join(name);
            match File::open(&path) {
                Ok(blob) => blob.sync_data().map_err(|e| KvError::io("sync", &path, e))?,
                // Collected by sled since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(KvError::io("open", &path, e)),
            }
            new_entries = true;
        }
        if new_entries {
            sync_dir(&self.blobs_dir)?;
        }
        let complete: BTreeSet<OsString> = synced.blobs.union(blobs_before).cloned().collect();
        synced.blobs = complete.intersection(&present).cloned().collect();
        Ok(())
    }
}

fn entry_names(dir: &Path) -> KvResult<BTreeSet<OsString>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(KvError::io("list", dir, e)),
    };
    entries.map(|entry| entry.map(|e| e.file_name()).map_err(|e| KvError::io("list", dir, e))).collect()
}

/// Makes a directory's entries (files created, renamed or removed in it)
/// durable; on Linux that takes an fsync of the directory itself.
fn sync_dir(dir: &Path) -> KvResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| KvError::io("sync", dir, e))
}

/// An in-memory [`KvStore`] for unit tests of the layers above it.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::BTreeMap;

    use parking_lot::Mutex;

    use super::{KvResult, KvStore, Space};

    type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

    #[derive(Default)]
    pub(crate) struct MemoryStore {
        spaces: Mutex<[Tree; 2]>,
    }

    fn slot(space: Space) -> usize {
        match space {
            Space::Log => 0,
            Space::Meta => 1,
        }
    }

    impl KvStore for MemoryStore {
        fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
            Ok(self.spaces.lock()[slot(space)].get(key).cloned())
        }

        fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> KvResult<()> {
            self.spaces.lock()[slot(space)].insert(key.to_vec(), value.to_vec());
            Ok(())
        }

        fn insert_all(&self, space: Space, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> KvResult<()> {
            self.spaces.lock()[slot(space)].extend(pairs);
            Ok(())
        }

        fn remove_range(&self, space: Space, from: &[u8], to: Option<&[u8]>) -> KvResult<()> {
            self.spaces.lock()[slot(space)]
                .retain(|k, _| k.as_slice() < from || to.is_some_and(|to| k.as_slice() >= to));
            Ok(())
        }

        fn scan(&self, space: Space, from: &[u8], to: &[u8]) -> KvResult<Vec<Vec<u8>>> {
            Ok(self.spaces.lock()[slot(space)].range(from.to_vec()..to.to_vec()).map(|(_, v)| v.clone()).collect())
        }

        fn last(&self, space: Space) -> KvResult<Option<Vec<u8>>> {
            Ok(self.spaces.lock()[slot(space)].values().next_back().cloned())
        }

        fn flush(&self) -> KvResult<()> {
            Ok(())
        }
    }
}
