//! What a manager remembers about itself outside Raft: its node id, its
//! cluster, the clear join tokens (Raft only holds their hashes) and
//! whether its join finished. Kept in `<data dir>/manager.json`, mode 0600.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "manager.json";

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
                let identity =
                    serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
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
        let bytes = serde_json::to_vec_pretty(self)?;
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
