//! The key-value engine under the Raft storage, behind a trait so sled can
//! be replaced without touching the log store or the state machine (the
//! lesson Garage learned when it moved off sled).

use std::path::Path;

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
    /// Blocks until every write before it is on disk.
    fn flush(&self) -> KvResult<()>;
}

pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl SledStore {
    pub fn open(dir: &Path) -> KvResult<Self> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()?;
        let log = db.open_tree("raft-log")?;
        let meta = db.open_tree("raft-meta")?;
        Ok(SledStore { db, log, meta })
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
        self.db.flush()?;
        Ok(())
    }
}
