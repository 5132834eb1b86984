//! A manager whose data directory fills up. The leader's data dir is a
//! small tmpfs of its own; the test fills it, writes on, and checks that
//! the full manager stops acknowledging (it exits, saying why and naming
//! its data directory) while the other two elect a leader and keep every
//! acknowledged write; once space is freed, the manager restarts from its
//! data dir and catches up.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cluster_tests::proto::ReadConsistency;
use cluster_tests::{list_services, names, request_id, service_spec, under_ci, wait_until, Cluster, ClusterOpts};

/// Room for a fresh manager's data dir (sled's first segments and the
/// snapshot of a small state), and little more.
const TMPFS_SIZE_MIB: u64 = 32;
/// Writes sent after the disk is full: far more than the few pages of log
/// left in the last partly written page.
const WRITES_AFTER_FULL: usize = 40;
const DEADLINE: Duration = Duration::from_secs(20);

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mib: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "berth-test-tmpfs"])
            .arg(path)
            .output()
            .context("running mount(8)")?;
        if !output.status.success() {
            bail!("mount -t tmpfs failed (this test needs root): {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(Tmpfs { path: path.to_path_buf() })
    }

    /// Writes zeros into `name` until the filesystem refuses with ENOSPC.
    fn fill(&self, name: &str) -> Result<u64> {
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => bail!("writing {} made no progress", path.display()),
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(written),
                Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_manager_whose_disk_fills_stops_acknowledging_and_the_other_two_carry_on() -> Result<()> {
    let dirs = tempfile::Builder::new().prefix("berth-disk-full-").tempdir().context("creating the temp dir")?;
    let data_root = dirs.path().join("data");
    // m1, the first manager and leader, keeps its data dir on the tmpfs.
    let tmpfs = match Tmpfs::mount(&data_root.join("m1"), TMPFS_SIZE_MIB) {
        Ok(tmpfs) => tmpfs,
        Err(e) if !under_ci() => {
            eprintln!("skipped: {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let opts = ClusterOpts { data_root: Some(data_root), ..ClusterOpts::default() };
    let mut cluster = Cluster::start(3, opts).await?;
    let full = 0;
    // Usually the leader: the first manager leads until something happens.
    let leader = cluster.leader().await?;
    eprintln!("m1 is {}", if leader == full { "the leader" } else { "a follower" });

    let mut acked = BTreeSet::new();
    for k in 0..5 {
        let name = format!("before-{k}");
        cluster.create_acked(service_spec(&name), &request_id(), DEADLINE).await?;
        acked.insert(name);
    }
    let filled = tmpfs.fill("filler")?;
    eprintln!("filled m1's disk with {filled} bytes");

    for k in 0..WRITES_AFTER_FULL {
        let name = format!("after-{k}");
        cluster.create_acked(service_spec(&name), &request_id(), DEADLINE).await?;
        acked.insert(name);
    }
    let status = cluster.manager(full).wait_exit(DEADLINE).await?;
    ensure!(!status.success(), "a manager that cannot write must exit with an error, it exited with {status}");
    let log = std::fs::read_to_string(cluster.manager(full).log_path()).context("reading m1's log")?;
    let data_dir = cluster.manager(full).data_dir().display().to_string();
    ensure!(
        log.contains("No space left on device") && log.contains(&data_dir),
        "m1's log must say that its disk is full and name its data dir {data_dir}:\n{}",
        cluster.manager(full).log_tail(30)
    );

    let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != full).collect();
    for &i in &survivors {
        let manager = cluster.manager(i);
        let seen = wait_until(&format!("a linearizable read on {}", manager.name()), DEADLINE, || async {
            Ok(names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?))
        })
        .await?;
        let lost: Vec<_> = acked.difference(&seen).collect();
        ensure!(lost.is_empty(), "{} lost acknowledged writes: {lost:?}", manager.name());
    }

    // Space again: m1 restarts from what it had synced and catches up.
    std::fs::remove_file(tmpfs.path.join("filler")).context("freeing m1's disk")?;
    cluster.restart(full).await?;
    let m1 = cluster.manager(full);
    wait_until("m1 to catch up after its disk has room again", DEADLINE, || async {
        let seen = names(&list_services(m1.addr(), ReadConsistency::Local).await?);
        let missing = acked.difference(&seen).count();
        ensure!(missing == 0, "m1 still misses {missing} acknowledged writes");
        Ok(())
    })
    .await?;
    drop(cluster);
    drop(tmpfs);
    Ok(())
}
