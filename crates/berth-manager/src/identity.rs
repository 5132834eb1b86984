//! What a manager remembers about itself outside Raft: its node id, its
//! cluster, the clear join tokens (Raft only holds their hashes) and
//! whether its join finished. Kept in `<data dir>/manager.json`, mode 0600.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "manager.json";
/// The version of `manager.json`'s layout, kept in its `format` key (a
/// file without one is format 1, as release 0.1 wrote it). JSON: a reader
/// ignores keys it does not know, and a new key gets a default, so a later
/// layout raises this only for a change an older reader must not accept.
pub const IDENTITY_FORMAT: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: String,
    pub manager_token: String,
    pub worker_token: String,
    /// False between allocating an id and being promoted to voter, so a
    /// manager that crashed midway finishes its join on restart.
    pub joined: bool,
    /// The cluster's data key (hex), shared by every manager: secrets are
    /// sealed with it before they are proposed. Empty in a data dir from
    /// before secrets existed; such a cluster refuses secrets.
    #[serde(default)]
    pub data_key: String,
}

impl Identity {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
                let format = value.get("format").and_then(serde_json::Value::as_u64).unwrap_or(1);
                if format > IDENTITY_FORMAT {
                    anyhow::bail!(
                        "{} is in format {format}, and this berth reads format {IDENTITY_FORMAT}: it was \
                         written by a newer berth (nothing was changed)",
                        path.display()
                    );
                }
                let identity =
                    serde_json::from_value(value).with_context(|| format!("{} is corrupt", path.display()))?;
                Ok(Some(identity))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes atomically and durably (synced temp file, rename, synced
    /// directory) so a crash never leaves half a file.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        let mut value = serde_json::to_value(self)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("format".into(), IDENTITY_FORMAT.into());
        }
        let bytes = serde_json::to_vec_pretty(&value)?;
        write_private(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", data_dir.display()))?;
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            node_id: 2,
            cluster_id: "c".into(),
            manager_token: "m".into(),
            worker_token: "w".into(),
            joined: true,
            data_key: "k".into(),
        }
    }

    #[test]
    fn a_saved_identity_reads_back_and_carries_its_format() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        identity().save(dir.path())?;
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME))?;
        assert!(text.contains("\"format\": 1"), "{text}");
        let loaded = Identity::load(dir.path())?.map(|i| (i.node_id, i.cluster_id));
        assert_eq!(loaded, Some((2, "c".to_string())));
        Ok(())
    }

    #[test]
    fn a_release_0_1_file_reads_and_a_newer_format_is_refused_unchanged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        let old = serde_json::to_string(&identity())?;
        std::fs::write(&path, &old)?;
        assert_eq!(Identity::load(dir.path())?.map(|i| i.node_id), Some(2), "0.1 wrote no format key");

        let newer = old.replacen('{', "{\"format\":2,", 1);
        std::fs::write(&path, &newer)?;
        let refused = Identity::load(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("format 2") && refused.contains("newer berth"), "{refused}");
        assert_eq!(std::fs::read_to_string(&path)?, newer);
        Ok(())
    }
}
