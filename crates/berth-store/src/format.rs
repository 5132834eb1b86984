//! The store's `FORMAT` file: which records the store may hold, read before
//! sled opens the store, so that a store this build cannot read is refused
//! without a byte changed.
//!
//! Store format 1 holds records of cluster version 0.1 only. Store format 2
//! may also hold records that need cluster version 0.2 (a recorded cluster
//! version, nodes with their agent's release), which berth 0.1 cannot read.
//! A new store is format 1; it is raised, synced, before the first record
//! that needs more is written, so a manager can go back one release for as
//! long as the cluster version has not been raised, and is refused with an
//! error naming both formats after.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use berth_core::ClusterVersion;
use parking_lot::Mutex;

use crate::{kv, StoreError};

pub const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "berth-store-format ";
/// The oldest store format this build reads.
pub const OLDEST_STORE_FORMAT: u8 = 1;
/// The newest store format this build reads and writes.
pub const NEWEST_STORE_FORMAT: u8 = 2;

/// The store format that records of `level` need.
pub fn store_format_for(level: ClusterVersion) -> u8 {
    if level >= ClusterVersion::V0_2 {
        2
    } else {
        1
    }
}

/// A store's format, as its `FORMAT` file says.
#[derive(Debug)]
pub struct FormatMarker {
    path: PathBuf,
    current: AtomicU8,
    /// Serialises raises: two must not write the file at once.
    raising: Mutex<()>,
}

impl FormatMarker {
    /// Refuses a store in a format this build cannot read, or one written
    /// before formats existed; marks a new store (synced before anything
    /// else is written in it).
    pub fn check_or_create(dir: &Path) -> Result<FormatMarker, StoreError> {
        let path = dir.display().to_string();
        let marker = dir.join(FORMAT_FILE);
        let io_error = |what: &str, e: std::io::Error| StoreError::Open {
            path: path.clone(),
            source: kv::KvError::msg(format!("cannot {what} {}: {e}", marker.display())),
        };
        let current = match std::fs::read_to_string(&marker) {
            Ok(text) => {
                let found = text.trim().strip_prefix(FORMAT_PREFIX).unwrap_or(text.trim()).to_string();
                match found.parse::<u8>() {
                    Ok(format) if (OLDEST_STORE_FORMAT..=NEWEST_STORE_FORMAT).contains(&format) => format,
                    parsed => {
                        return Err(StoreError::UnreadableFormat {
                            path,
                            found,
                            oldest: OLDEST_STORE_FORMAT,
                            current: NEWEST_STORE_FORMAT,
                            hint: match parsed {
                                Ok(format) if format > NEWEST_STORE_FORMAT => {
                                    ": it was written by a newer berth, after the cluster version was raised; \
                                     run that version, or this one on a fresh data directory"
                                }
                                _ => "",
                            },
                        })
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let has_data = std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
                if has_data {
                    return Err(StoreError::Unversioned { path });
                }
                std::fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", e))?;
                write_synced(&marker, OLDEST_STORE_FORMAT).map_err(|e| io_error("write", e))?;
                OLDEST_STORE_FORMAT
            }
            Err(e) => return Err(io_error("read", e)),
        };
        Ok(FormatMarker { path: marker, current: AtomicU8::new(current), raising: Mutex::new(()) })
    }

    /// The store's format now.
    pub fn current(&self) -> u8 {
        self.current.load(Ordering::Acquire)
    }

    /// Makes sure the store is marked for records of `level`, raising (and
    /// syncing) the file first if it is not: called before such records
    /// are written.
    pub fn cover(&self, level: ClusterVersion) -> std::io::Result<()> {
        let needed = store_format_for(level);
        if needed <= self.current() {
            return Ok(());
        }
        let _raising = self.raising.lock();
        if needed > self.current() {
            write_synced(&self.path, needed)?;
            self.current.store(needed, Ordering::Release);
            tracing::info!(format = needed, %level, "store format raised: berth before {level} can no longer open it");
        }
        Ok(())
    }
}

/// Writes the file through a temp file and a rename, each synced, so that
/// a crash leaves either the old format or the new one.
fn write_synced(path: &Path, format: u8) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{FORMAT_PREFIX}{format}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(FORMAT_FILE)).unwrap_or_default()
    }

    #[test]
    fn a_new_store_is_format_1_and_is_raised_once_for_records_of_0_2() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = dir.path().join("raft");
        let marker = FormatMarker::check_or_create(&store)?;
        assert_eq!(read(&store), "berth-store-format 1\n", "a fresh store stays readable by 0.1");
        marker.cover(ClusterVersion::INITIAL).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        assert_eq!(read(&store), "berth-store-format 1\n");
        marker.cover(ClusterVersion::V0_2).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        assert_eq!(read(&store), "berth-store-format 2\n");
        assert_eq!(FormatMarker::check_or_create(&store)?.current(), 2, "a raised store reopens raised");
        Ok(())
    }

    #[test]
    fn an_unversioned_or_newer_store_is_refused_and_left_as_it_was() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let old = dir.path().join("old");
        std::fs::create_dir_all(&old)?;
        std::fs::write(old.join("db"), b"postcard records")?;
        let refused = FormatMarker::check_or_create(&old).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("before release 0.1"), "{refused}");
        assert!(!old.join(FORMAT_FILE).exists(), "a refused store must not be marked");

        let newer = dir.path().join("newer");
        std::fs::create_dir_all(&newer)?;
        let future = NEWEST_STORE_FORMAT + 1;
        std::fs::write(newer.join(FORMAT_FILE), format!("berth-store-format {future}\n"))?;
        let refused = FormatMarker::check_or_create(&newer).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains(&format!("format version {future}")) && refused.contains("newer berth"), "{refused}");
        assert!(
            refused.contains(&format!("reads formats {OLDEST_STORE_FORMAT} to {NEWEST_STORE_FORMAT}")),
            "{refused}"
        );
        assert_eq!(read(&newer), format!("berth-store-format {future}\n"), "a refused store is left as it was");
        Ok(())
    }
}
