//! Power loss. Real managers keep their data dirs on [`berth_powercut`], a
//! filesystem that drops every byte not fsync'd when told to. Each round
//! writes, cuts the power of every manager at once (SIGKILL all of them,
//! then drop whatever they had not synced) and restarts them from the same
//! data dirs. Nothing acknowledged may be lost, every manager must start,
//! and after new writes every manager must hold the same contents at the
//! same commit index.
//!
//! The cut comes at a different moment each round, drawn from the seed:
//! right after an acknowledgement of one client's writes, in the middle of
//! many clients' writes, which the leader batches, or as soon as a manager
//! starts to store a snapshot (its blob file appears on the disk, before it
//! is synced). The snapshot threshold is a few entries, so snapshots are
//! built, installed and their logs purged throughout.
//!
//! `BERTH_POWER_CUT_ROUNDS` sets the rounds per test (default
//! [`DEFAULT_ROUNDS`]); `BERTH_BIN=/path/to/an/older/berth` runs the same
//! rounds against another build.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_powercut::{fuse_available, PowerCutFs};
use cluster_tests::proto::{ListTasksRequest, ReadConsistency, Service, Task};
use cluster_tests::{
    lazy_client, list_services, names, request_id, retryable, seed, service_spec, status, wait_until, Cluster,
    ClusterOpts, GiveUp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rounds per test unless `BERTH_POWER_CUT_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 10;
/// Entries between two snapshots: small, so that cuts meet snapshots.
const SNAPSHOT_THRESHOLD_ENTRIES: u64 = 16;
/// Clients writing at once in a round cut mid-batch.
const CONCURRENT_WRITERS: usize = 16;
/// Acknowledged writes before the cut, drawn per round from this range.
const WRITES_BEFORE_CUT: std::ops::RangeInclusive<usize> = 20..=80;
/// Writes after the restart, through every manager.
const WRITES_AFTER_RESTART: usize = 6;
/// How long a round cut during a snapshot waits for one to start.
const SNAPSHOT_WAIT_MS: u64 = 3_000;
/// How often the disk is looked at for a new snapshot blob.
const BLOB_POLL_MS: u64 = 1;
/// A cut that drops at least this much dropped a snapshot being written
/// (writes between two group commits are a few KiB).
const SNAPSHOT_BLOB_MIN_BYTES: u64 = 64 * 1024;
/// How long the cluster may take to elect, answer or converge after a restart.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
enum CutMoment {
    /// One client writes one request at a time; the cut follows an
    /// acknowledgement at once.
    RightAfterAnAck,
    /// Many clients write at once, so requests wait in the leader's batch
    /// and are in flight on every manager when the power goes.
    MidBatch,
    /// Many clients write until a manager starts to store a snapshot: sled
    /// writes a snapshot of this size to a new blob file, and the cut
    /// comes as soon as one appears on the disk, before it is synced.
    DuringSnapshot,
}

#[tokio::test]
async fn one_manager_keeps_every_acknowledged_write_through_power_cuts() -> Result<()> {
    power_cut_rounds(1).await
}

#[tokio::test]
async fn three_managers_losing_power_together_keep_every_acknowledged_write_and_agree() -> Result<()> {
    power_cut_rounds(3).await
}

async fn power_cut_rounds(managers: usize) -> Result<()> {
    if let Err(reason) = fuse_available() {
        if cluster_tests::under_ci() {
            bail!("the power-loss tests need FUSE under CI: {reason}");
        }
        eprintln!("skipped: {reason}");
        return Ok(());
    }
    let rounds = std::env::var("BERTH_POWER_CUT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let mut rng = StdRng::seed_from_u64(seed());

    let dirs = tempfile::Builder::new().prefix("berth-power-loss-").tempdir().context("creating the temp dir")?;
    let (backing, mountpoint) = (dirs.path().join("disk"), dirs.path().join("mnt"));
    for dir in [&backing, &mountpoint] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Declared before the cluster: dropped (unmounted) after its managers are killed.
    let disk = PowerCutFs::mount(&backing, &mountpoint).context("mounting the power-cut filesystem")?;
    let opts = ClusterOpts {
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD_ENTRIES),
        data_root: Some(mountpoint.clone()),
        ready_deadline: RECOVERY_DEADLINE,
        ..ClusterOpts::default()
    };
    let mut cluster = Cluster::start(managers, opts).await?;

    let mut acked_total = BTreeSet::new();
    let (mut snapshot_cuts, mut unsynced_snapshot_cuts) = (0, 0);
    for round in 0..rounds {
        let moment = match rng.gen_range(0..3) {
            0 => CutMoment::RightAfterAnAck,
            1 => CutMoment::MidBatch,
            _ => CutMoment::DuringSnapshot,
        };
        let writes = rng.gen_range(WRITES_BEFORE_CUT);
        let addrs: Vec<SocketAddr> = cluster.managers().iter().map(|m| m.addr()).collect();
        match moment {
            CutMoment::DuringSnapshot => eprintln!("round {round}: cut as soon as a snapshot blob appears"),
            _ => eprintln!("round {round}: {moment:?} after {writes} acknowledged writes"),
        }
        let acked = match moment {
            CutMoment::RightAfterAnAck => {
                let acked = write_one_at_a_time(&addrs, round, writes).await?;
                cut_power(&mut cluster, &disk)?;
                acked
            }
            CutMoment::MidBatch => {
                let writers = write_concurrently(&addrs, round);
                writers.wait_for_acks(writes).await?;
                writers.halt();
                cut_power(&mut cluster, &disk)?;
                writers.acknowledged().await?
            }
            CutMoment::DuringSnapshot => {
                let known = blob_files(&backing);
                let writers = write_concurrently(&addrs, round);
                let seen = wait_for_new_blob(&backing, &known).await;
                writers.halt();
                let dropped = cut_power(&mut cluster, &disk)?;
                if seen {
                    snapshot_cuts += 1;
                    if dropped.bytes >= SNAPSHOT_BLOB_MIN_BYTES {
                        unsynced_snapshot_cuts += 1;
                    }
                }
                writers.acknowledged().await?
            }
        };
        acked_total.extend(acked);
        restart_all(&mut cluster).await?;
        check_round(&cluster, round, &acked_total).await?;
    }
    eprintln!(
        "{rounds} power cuts of {managers} manager(s): all {} acknowledged writes kept; {snapshot_cuts} cut as a \
         snapshot blob appeared, {unsynced_snapshot_cuts} of them dropping it unsynced",
        acked_total.len()
    );
    Ok(())
}

/// The blob files of every manager's store, as the disk holds them.
fn blob_files(backing: &Path) -> BTreeSet<PathBuf> {
    let managers = std::fs::read_dir(backing).into_iter().flatten().flatten();
    managers
        .flat_map(|manager| {
            std::fs::read_dir(manager.path().join("raft").join("blobs")).into_iter().flatten().flatten()
        })
        .map(|blob| blob.path())
        .collect()
}

/// Polls the disk (not the mount, so it costs the managers nothing) until a
/// blob file that was not there before appears; false if none does in time
/// (the state may still be too small for sled to put it in a blob).
async fn wait_for_new_blob(backing: &Path, known: &BTreeSet<PathBuf>) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SNAPSHOT_WAIT_MS);
    while tokio::time::Instant::now() < deadline {
        if blob_files(backing).difference(known).next().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(BLOB_POLL_MS)).await;
    }
    false
}

/// SIGKILL every manager, then drop every byte they had not synced: from
/// the disk's side, the power went at the moment of the kill.
fn cut_power(cluster: &mut Cluster, disk: &PowerCutFs) -> Result<berth_powercut::CutReport> {
    for i in 0..cluster.len() {
        if cluster.manager(i).is_running() {
            cluster.kill(i)?;
        }
    }
    let dropped = disk.cut_power();
    eprintln!("power cut: dropped {} unsynced bytes of {} files", dropped.bytes, dropped.files);
    Ok(dropped)
}

async fn restart_all(cluster: &mut Cluster) -> Result<()> {
    for i in 0..cluster.len() {
        cluster.restart(i).await?;
    }
    cluster.leader().await?;
    Ok(())
}

/// After a restart: nothing acknowledged is lost on any manager, new writes
/// go through every manager, and all managers converge on the same state.
async fn check_round(cluster: &Cluster, round: usize, acked: &BTreeSet<String>) -> Result<()> {
    for manager in cluster.managers() {
        let seen = wait_until(&format!("a linearizable read on {}", manager.name()), RECOVERY_DEADLINE, || async {
            Ok(names(&list_services(manager.addr(), ReadConsistency::Linearizable).await?))
        })
        .await?;
        let lost: Vec<_> = acked.difference(&seen).collect();
        ensure!(
            lost.is_empty(),
            "round {round}: {} lost {} of {} acknowledged writes after the power cut: {lost:?}",
            manager.name(),
            lost.len(),
            acked.len()
        );
    }
    for k in 0..WRITES_AFTER_RESTART {
        let name = format!("after-{round}-{k}");
        cluster.create_acked(service_spec(&name), &request_id(), RECOVERY_DEADLINE).await?;
    }
    let addrs: Vec<SocketAddr> = cluster.managers().iter().map(|m| m.addr()).collect();
    wait_until(&format!("round {round}: every manager to hold the same state at one index"), RECOVERY_DEADLINE, || {
        same_state_everywhere(&addrs)
    })
    .await
}

/// The services and tasks a manager has applied, read locally between two
/// status calls that report the same applied index.
#[derive(Debug, PartialEq)]
struct AppliedState {
    index: u64,
    services: Vec<Service>,
    tasks: Vec<Task>,
}

async fn applied_state(addr: SocketAddr) -> Result<AppliedState> {
    let before = status(addr).await?;
    ensure!(
        before.applied_index == before.commit_index,
        "{addr} has applied {} of {} committed",
        before.applied_index,
        before.commit_index
    );
    let mut services = list_services(addr, ReadConsistency::Local).await?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tasks = lazy_client(addr)?
        .list_tasks(ListTasksRequest { service: String::new(), consistency: ReadConsistency::Local as i32 })
        .await
        .with_context(|| format!("ListTasks on {addr}"))?
        .into_inner()
        .tasks;
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let after = status(addr).await?;
    ensure!(before.applied_index == after.applied_index, "{addr} applied more while it was read");
    Ok(AppliedState { index: after.applied_index, services, tasks })
}

async fn same_state_everywhere(addrs: &[SocketAddr]) -> Result<()> {
    let mut states = Vec::new();
    for &addr in addrs {
        states.push((addr, applied_state(addr).await?));
    }
    let (first_addr, first) = &states[0];
    for (addr, state) in &states[1..] {
        ensure!(state.index == first.index, "{addr} is at index {}, {first_addr} at {}", state.index, first.index);
        if state != first {
            // Same index, different contents: the logs diverged, and
            // waiting will not heal that.
            bail!(GiveUp(format!(
                "{addr} and {first_addr} hold different states at index {}: services {:?} vs {:?}",
                state.index,
                names(&state.services),
                names(&first.services)
            )));
        }
    }
    Ok(())
}

/// One client writing `count` services one after another, each retried
/// with its request id across managers until acknowledged; returns the
/// acknowledged names. The caller cuts the power right after it returns.
async fn write_one_at_a_time(addrs: &[SocketAddr], round: usize, count: usize) -> Result<BTreeSet<String>> {
    let mut acked = BTreeSet::new();
    for k in 0..count {
        let name = format!("r{round}-{k}");
        ensure!(create_until_acked(addrs, &name, k, &AtomicBool::new(false)).await?, "no halt was asked for");
        acked.insert(name);
    }
    Ok(acked)
}

/// Creates `name`, retrying the same request id on the next manager while
/// the answer is retryable; `Ok(false)` if `stop` was set first.
async fn create_until_acked(addrs: &[SocketAddr], name: &str, turn: usize, stop: &AtomicBool) -> Result<bool> {
    let request =
        cluster_tests::proto::CreateServiceRequest { request_id: request_id(), spec: Some(service_spec(name)) };
    let started = tokio::time::Instant::now();
    for attempt in turn.. {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let addr = addrs[attempt % addrs.len()];
        match lazy_client(addr)?.create_service(request.clone()).await {
            Ok(_) => return Ok(true),
            Err(status) if retryable(&status) && started.elapsed() < RECOVERY_DEADLINE => {
                tokio::time::sleep(Duration::from_millis(cluster_tests::POLL_INTERVAL_MS)).await;
            }
            Err(status) => bail!("CreateService {name} through {addr}: {status}"),
        }
    }
    unreachable!("the attempts never run out")
}

/// Clients writing at once until halted.
struct Writers {
    acked: Arc<Mutex<Vec<String>>>,
    halted: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

/// Starts [`CONCURRENT_WRITERS`] clients, each writing one service after
/// another, spread over the managers.
fn write_concurrently(addrs: &[SocketAddr], round: usize) -> Writers {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let halted = Arc::new(AtomicBool::new(false));
    let tasks = (0..CONCURRENT_WRITERS)
        .map(|writer| {
            let (addrs, acked, halted) = (addrs.to_vec(), acked.clone(), halted.clone());
            tokio::spawn(async move {
                for k in 0.. {
                    let name = format!("r{round}-w{writer}-{k}");
                    match create_until_acked(&addrs, &name, writer + k, &halted).await {
                        Ok(true) => lock(&acked).push(name),
                        Ok(false) => break,
                        // Interrupted by the cut: never acknowledged.
                        Err(_) if halted.load(Ordering::SeqCst) => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
        })
        .collect();
    Writers { acked, halted, tasks }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writers {
    async fn wait_for_acks(&self, count: usize) -> Result<()> {
        wait_until(&format!("{count} concurrent writes to be acknowledged"), RECOVERY_DEADLINE, || async {
            let acked = lock(&self.acked).len();
            ensure!(acked >= count, "{acked} acknowledged so far");
            Ok(())
        })
        .await
    }

    /// No writer starts another attempt; those in flight go on, so the
    /// cut that follows finds requests waiting in the leader's batch.
    fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
    }

    /// Every name acknowledged, including those acknowledged while the
    /// managers were being killed, once every writer has stopped.
    async fn acknowledged(self) -> Result<BTreeSet<String>> {
        for task in self.tasks {
            task.await.context("a writer panicked")??;
        }
        let acked = lock(&self.acked).iter().cloned().collect();
        Ok(acked)
    }
}
