//! Rolling upgrade and downgrade of managers between the previous release
//! (built from its revision in RELEASES.md by `scripts/build-release.sh`)
//! and this build. Three managers start on the previous release; each is
//! replaced in turn on its own data directory while writes go on, and one
//! is taken back down and up again while the cluster is mixed. No
//! acknowledged write is lost and no manager of the previous release ever
//! stops (it never meets a record it cannot read): the cluster version
//! stays at the previous level, and the stores stay in the format it
//! reads, until every manager runs this build. Then the cluster version
//! rises, and the previous release refuses a data directory, naming both
//! formats, without changing a byte of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cluster_tests::proto::ReadConsistency;
use cluster_tests::{
    berth_bin, list_services, names, previous_release_bin, request_id, service_spec, wait_until, Cluster, ClusterOpts,
};

const DEADLINE: Duration = Duration::from_secs(20);
/// Acknowledged writes between two steps of the upgrade.
const WRITES_PER_STEP: usize = 4;

#[tokio::test]
async fn managers_roll_from_the_previous_release_and_back_without_losing_a_write() -> Result<()> {
    let previous = previous_release_bin()?;
    let current = berth_bin()?;
    let opts = ClusterOpts { bin: Some(previous.clone()), ..ClusterOpts::default() };
    let mut cluster = Cluster::start(3, opts).await?;
    let mut acked = BTreeSet::new();
    write_some(&cluster, "before", &mut acked).await?;

    // One manager at a time to this build; the one before stays the
    // previous release, so the cluster is mixed for a while.
    for i in 0..cluster.len() {
        upgrade(&mut cluster, i, &current).await?;
        write_some(&cluster, &format!("after-m{}", i + 1), &mut acked).await?;
        check_every_write_kept(&cluster, &acked).await?;
        if i + 1 < cluster.len() {
            // Mixed: the level stays where the previous release is.
            let status = cluster.manager(i).status().await?;
            assert_eq!(status.cluster_version, "0.1", "the cluster version rose with an old manager still a member");
            assert_eq!(
                store_format(&cluster.manager(i).data_dir())?,
                "1",
                "a store left the previous release's format"
            );
        }
        if i == 0 {
            // A way back while the cluster is mixed: the upgraded manager
            // goes back to the previous release on its data dir, and up again.
            upgrade(&mut cluster, 0, &previous).await?;
            write_some(&cluster, "downgraded-m1", &mut acked).await?;
            check_every_write_kept(&cluster, &acked).await?;
            upgrade(&mut cluster, 0, &current).await?;
        }
    }

    // Every manager runs this build: the cluster version rises, and every
    // store is marked so the previous release no longer opens it.
    wait_until("the cluster version to rise once every manager runs this build", DEADLINE, || async {
        let status = cluster.manager(0).status().await?;
        ensure!(status.cluster_version == "0.2", "the cluster version is {:?}", status.cluster_version);
        Ok(())
    })
    .await?;
    wait_until("every store to be raised to format 2", DEADLINE, || async {
        for manager in cluster.managers() {
            let format = store_format(&manager.data_dir())?;
            ensure!(format == "2", "{} is in store format {format}", manager.name());
        }
        Ok(())
    })
    .await?;

    // Back to the previous release now: refused, nothing changed.
    let last = cluster.len() - 1;
    cluster.kill(last)?;
    let before = tree_digest(&cluster.manager(last).data_dir())?;
    cluster.managers_mut()[last].set_binary(previous.clone());
    cluster.managers_mut()[last].start()?;
    let status = cluster.manager(last).wait_exit(DEADLINE).await?;
    ensure!(!status.success(), "the previous release opened a store of a raised cluster: {status}");
    let log = std::fs::read_to_string(cluster.manager(last).log_path()).context("reading the manager's log")?;
    let refusal = log.lines().rev().find(|l| l.contains("format version")).unwrap_or_default().to_string();
    ensure!(
        refusal.contains("format version 2") && refusal.contains("reads formats 1 to 1"),
        "the previous release must refuse naming both formats; its log ends:\n{}",
        cluster.manager(last).log_tail(15)
    );
    assert_eq!(tree_digest(&cluster.manager(last).data_dir())?, before, "a refused start changed the data dir");

    // This build takes the manager back, and it catches up.
    upgrade(&mut cluster, last, &current).await?;
    write_some(&cluster, "end", &mut acked).await?;
    check_every_write_kept(&cluster, &acked).await
}

/// Stops manager `i`, starts it on `bin` with the same data dir and port,
/// and waits until it answers and the cluster agrees on a leader.
async fn upgrade(cluster: &mut Cluster, i: usize, bin: &Path) -> Result<()> {
    if cluster.manager(i).is_running() {
        cluster.kill(i)?;
    }
    cluster.managers_mut()[i].set_binary(bin.to_path_buf());
    cluster.restart(i).await?;
    cluster.leader().await?;
    for manager in cluster.managers() {
        manager.check_alive()?;
    }
    Ok(())
}

async fn write_some(cluster: &Cluster, prefix: &str, acked: &mut BTreeSet<String>) -> Result<()> {
    for k in 0..WRITES_PER_STEP {
        let name = format!("{prefix}-{k}");
        cluster.create_acked(service_spec(&name), &request_id(), DEADLINE).await?;
        acked.insert(name);
    }
    Ok(())
}

/// Every manager, old or new, serves every acknowledged write.
async fn check_every_write_kept(cluster: &Cluster, acked: &BTreeSet<String>) -> Result<()> {
    for manager in cluster.managers() {
        let seen = wait_until(&format!("a linearizable read on {}", manager.name()), DEADLINE, || async {
            Ok(names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?))
        })
        .await?;
        let lost: Vec<_> = acked.difference(&seen).collect();
        ensure!(lost.is_empty(), "{} lost acknowledged writes: {lost:?}", manager.name());
    }
    Ok(())
}

/// The number in a manager's store `FORMAT` file.
fn store_format(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("raft").join("FORMAT");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().trim_start_matches("berth-store-format ").to_string())
}

/// Every file under `dir` with its length and contents' hash.
fn tree_digest(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, u64)>> {
    use std::hash::{Hash, Hasher};
    let mut digest = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path())?;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                digest.insert(entry.path(), (bytes.len() as u64, hasher.finish()));
            }
        }
    }
    Ok(digest)
}
