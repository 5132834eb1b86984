//! The harness behind berth's cluster tests. It starts real `berth manager`
//! processes from the built binary on loopback, each with its own data dir
//! and log file, and hands tests what they need to break them: SIGKILL and
//! restart from the same data dir and port, gRPC clients to any manager, the
//! leader as every survivor sees it, and [`wait_until`], which waits for a
//! condition with a deadline instead of sleeping. [`Cluster::start_agents`]
//! adds `berth agent` processes ([`agent`]) that run tasks on the local
//! Docker Engine ([`docker`]). Dropping a [`Cluster`] kills every agent and
//! manager, removes the containers of its agents' nodes and prints the tail
//! of each log; the test runner shows that output only when the test failed.
//!
//! Run with `cargo build -p berth-cli --bin berth && cargo nextest run -p
//! cluster-tests`. Environment: `BERTH_BIN` picks the binary,
//! `BERTH_TEST_SEED` replays a test's random choices, `BERTH_KEEP_TEST_DIRS`
//! keeps data dirs and logs of passing tests too (a test that panicked or
//! whose [`wait_until`] failed keeps them), `RUST_LOG` is passed to the managers and agents (default
//! `info`), and `DOCKER_HOST` picks the engine. Without a Docker Engine the
//! tests that need one print that they are skipped, except under
//! `CI=true`, where they fail.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

pub mod agent;
pub mod docker;
pub mod http;
pub mod process;
pub mod sampler;
pub mod workload;

pub use agent::{Agent, AgentOpts};
pub use berth_proto::v1 as proto;
pub use docker::Engine;
use process::BerthProcess;
use proto::cluster_api_client::ClusterApiClient;
use proto::{
    ClusterStatusReply, ClusterStatusRequest, CreateServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, Node, ReadConsistency, ScaleServiceRequest, Service, ServiceSpec, Task, UpdateNodeRequest,
};

/// A gRPC client of one manager's public API.
pub type Client = ClusterApiClient<Channel>;

/// Pause between two attempts of a [`wait_until`] condition.
pub const POLL_INTERVAL_MS: u64 = 25;
/// Loopback connects either succeed at once or the manager is down.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Bound on every gRPC call a test makes, so a hung manager fails the test
/// with a message instead of hanging it.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Bound on a one-shot CLI command such as `berth join-token`.
pub const CLI_TIMEOUT_MS: u64 = 15_000;
/// How much of each manager's log a failed test prints.
pub const LOG_TAIL_LINES: usize = 80;

/// Raft timings and deadlines for a test cluster. The defaults are short so
/// that elections, and therefore the tests, take a fraction of a second.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// `None` keeps the manager's default.
    pub snapshot_threshold: Option<u64>,
    /// How long starting the cluster (every join included) may take.
    pub ready_deadline: Duration,
    /// Where the managers' data dirs go (`<data_root>/<name>`), for tests
    /// that put them on a special filesystem; `None` keeps them beside
    /// each manager's log in the cluster's temp dir.
    pub data_root: Option<PathBuf>,
    /// The `berth` binary the managers start with; `None` is [`berth_bin`].
    /// Upgrade tests start from [`previous_release_bin`].
    pub bin: Option<PathBuf>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_threshold: None,
            ready_deadline: Duration::from_secs(20),
            data_root: None,
            bin: None,
        }
    }
}

impl ClusterOpts {
    fn raft_args(&self) -> Vec<String> {
        let mut args = vec![
            "--heartbeat-ms".to_string(),
            self.heartbeat_ms.to_string(),
            "--election-timeout-min-ms".to_string(),
            self.election_timeout_min_ms.to_string(),
            "--election-timeout-max-ms".to_string(),
            self.election_timeout_max_ms.to_string(),
        ];
        if let Some(threshold) = self.snapshot_threshold {
            args.push("--snapshot-threshold".to_string());
            args.push(threshold.to_string());
        }
        args
    }
}

/// What the `berth` binary is built from, relative to the workspace: a file
/// here newer than the binary means the binary is stale.
const BERTH_SOURCES: &[&str] = &[
    "Cargo.lock",
    "proto",
    "crates/berth-proto",
    "crates/berth-core",
    "crates/berth-api",
    "crates/berth-store",
    "crates/berth-scheduler",
    "crates/berth-manager",
    "crates/berth-agent",
    "crates/berth-cli",
];

/// The `berth` binary under test: `BERTH_BIN` if set, else
/// `<target dir>/debug/berth`, built with cargo once per test process when
/// it is missing. cargo does not rebuild it for these tests (a package
/// cannot depend on a binary-only package), and rebuilding it here would
/// make every test fail while a colleague's half-done change does not
/// compile; so a stale binary is tested as it is, with a warning that the
/// runner shows with a failed test's output. Run
/// `cargo build -p berth-cli --bin berth` before the tests.
pub fn berth_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build_berth().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn locate_or_build_berth() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("BERTH_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("cluster-tests sits inside the workspace")?
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("berth");
    let built_at = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest_source = BERTH_SOURCES.iter().filter_map(|path| newest_mtime(&workspace.join(path))).max();
    if let Some(built) = built_at {
        if newest_source.is_some_and(|source| source > built) {
            eprintln!(
                "warning: {} is older than its sources; these tests run the old \
                 binary (cargo build -p berth-cli --bin berth)",
                bin.display()
            );
        }
        return Ok(bin);
    }
    // Cargo's lock on the target dir serialises test processes that all
    // find the binary missing; the later builds find it up to date.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "berth-cli", "--bin", "berth"])
        .current_dir(&workspace)
        .stdout(Stdio::null())
        .status()
        .context("running cargo build -p berth-cli")?;
    if !status.success() {
        bail!(
            "cargo build -p berth-cli --bin berth failed ({status}); \
             set BERTH_BIN to test an existing binary"
        );
    }
    if !bin.is_file() {
        bail!("cargo built berth-cli but {} does not exist; set BERTH_BIN", bin.display());
    }
    Ok(bin)
}

/// The `berth` binary of the previous release, for upgrade tests:
/// `BERTH_PREVIOUS_BIN` if set (`scripts/test.sh` sets it), else built once
/// per machine by `scripts/build-release.sh previous` (minutes, the first
/// time).
pub fn previous_release_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_previous_release().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build_previous_release() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BERTH_PREVIOUS_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "BERTH_PREVIOUS_BIN={} is not a file", bin.display());
        return Ok(bin);
    }
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("cluster-tests sits inside the workspace")?;
    let output = Command::new(workspace.join("scripts/build-release.sh"))
        .arg("previous")
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/build-release.sh previous")?;
    ensure!(output.status.success(), "scripts/build-release.sh previous failed: {}", output.status);
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    ensure!(bin.is_file(), "scripts/build-release.sh printed {}, which is not a file", bin.display());
    Ok(bin)
}

/// The latest modification time of `path` or anything under it.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name() != "target")
        .filter_map(|entry| newest_mtime(&entry.path()))
        .chain(own)
        .max()
}

/// A loopback port that nothing listens on now. The listener is dropped at
/// once; ports handed out earlier in this process are never handed out
/// again, so two managers of one test cannot collide.
pub fn free_port() -> Result<u16> {
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if taken.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port found in 100 tries")
}

/// The seed for a test's random choices: `BERTH_TEST_SEED` if set, else a
/// fresh one. It is printed so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("BERTH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with BERTH_TEST_SEED={seed})");
    seed
}

/// True when `CI` is set to any value that means yes (`true`, `1`, `yes`,
/// in any case): a test that cannot run there must fail, not skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// A fresh request id, as a client picks one per logical write.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A valid, minimal replicated service spec.
pub fn service_spec(name: &str) -> ServiceSpec {
    ServiceSpec { name: name.to_string(), image: "nginx:1.27".to_string(), replicas: Some(1), ..ServiceSpec::default() }
}

/// Marks an error that [`wait_until`] must not retry, such as a manager
/// process that exited.
#[derive(Debug)]
pub struct GiveUp(pub String);

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// Set when a [`wait_until`] in this process failed. A test that returns
/// that error drops its [`Cluster`] without panicking, so this is how the
/// cluster knows to keep its files for the post-mortem.
static WAIT_FAILED: AtomicBool = AtomicBool::new(false);

/// Runs `attempt` until it returns `Ok`, at most until `deadline` has passed,
/// and returns that value. An `Err` means "not yet, and here is why"; the
/// last reason is in the error when the deadline passes. An error carrying
/// [`GiveUp`] ends the wait at once.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut tries = 0u32;
    // Kept so that an attempt cut short by the deadline does not hide why
    // the ones before it failed.
    let mut previous: Option<String> = None;
    loop {
        tries += 1;
        let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => match &previous {
                Some(before) => anyhow!("the attempt was still running at the deadline; the one before: {before}"),
                None => anyhow!("the attempt was still running at the deadline"),
            },
        };
        previous = Some(format!("{error:#}"));
        if error.downcast_ref::<GiveUp>().is_some() {
            WAIT_FAILED.store(true, Ordering::Relaxed);
            return Err(error.context(format!("gave up waiting for {what}")));
        }
        if started.elapsed() >= deadline {
            WAIT_FAILED.store(true, Ordering::Relaxed);
            return Err(error.context(format!("{what}: not true after {:?} ({tries} tries)", started.elapsed())));
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// A gRPC client of the manager at `addr`, with the harness's timeouts.
pub async fn client(addr: SocketAddr) -> Result<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .context("endpoint url")?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(ClusterApiClient::new(channel))
}

/// A client of the manager at `addr` that connects on its first call; a
/// manager that cannot be reached shows as `Unavailable`.
pub fn lazy_client(addr: SocketAddr) -> Result<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .context("endpoint url")?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .connect_lazy();
    Ok(ClusterApiClient::new(channel))
}

/// `ClusterStatus` as the manager at `addr` sees it.
pub async fn status(addr: SocketAddr) -> Result<ClusterStatusReply> {
    let reply = client(addr)
        .await?
        .cluster_status(ClusterStatusRequest {})
        .await
        .with_context(|| format!("ClusterStatus on {addr}"))?;
    Ok(reply.into_inner())
}

/// Every service, read from the manager at `addr` with `consistency`.
pub async fn list_services(addr: SocketAddr, consistency: ReadConsistency) -> Result<Vec<Service>> {
    let reply = client(addr)
        .await?
        .list_services(ListServicesRequest { consistency: consistency as i32 })
        .await
        .with_context(|| format!("ListServices ({consistency:?}) on {addr}"))?;
    Ok(reply.into_inner().services)
}

/// The names of `services`, sorted.
pub fn names(services: &[Service]) -> BTreeSet<String> {
    services.iter().map(|s| s.name.clone()).collect()
}

/// How many members are voters in `status`.
pub fn voters(status: &ClusterStatusReply) -> usize {
    status.members.iter().filter(|m| m.voter).count()
}

/// Output of a one-shot CLI command.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `berth ARGS` to completion, within [`CLI_TIMEOUT_MS`].
pub async fn cli(args: &[&str]) -> Result<CliOutput> {
    let bin = berth_bin()?;
    let run = tokio::process::Command::new(&bin).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_millis(CLI_TIMEOUT_MS), run)
        .await
        .map_err(|_| anyhow!("berth {} did not finish in {CLI_TIMEOUT_MS} ms", args.join(" ")))?
        .with_context(|| format!("running berth {}", args.join(" ")))?;
    Ok(CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// How a manager process enters the cluster; the same command resumes it
/// from its data dir on restart.
#[derive(Debug, Clone)]
pub enum Role {
    Init,
    Join { peer: String, token: String },
}

/// One `berth manager` process: its port, folder (data dir and log) and,
/// while it runs, its child process.
pub struct Manager {
    name: String,
    addr: SocketAddr,
    data_dir: PathBuf,
    role: Role,
    raft_args: Vec<String>,
    process: BerthProcess,
    paused: bool,
    id: Option<u64>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager that is not started yet, in `root/name`, on a free port.
    pub fn new(root: &Path, name: &str, role: Role, opts: &ClusterOpts) -> Result<Manager> {
        let dir = root.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let data_dir = match &opts.data_root {
            Some(data_root) => data_root.join(name),
            None => dir.join("data"),
        };
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut process = BerthProcess::new(format!("{name} ({addr})"), dir.join("manager.log"))?;
        if let Some(bin) = &opts.bin {
            process.set_bin(bin.clone());
        }
        Ok(Manager {
            name: name.to_string(),
            addr,
            data_dir,
            role,
            raft_args: opts.raft_args(),
            process,
            paused: false,
            id: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Raft node id, once the manager has answered `ClusterStatus`.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Both stdout and stderr of every run, appended.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Running and not paused: expected to answer.
    pub fn is_serving(&self) -> bool {
        self.is_running() && !self.paused
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGSTOP: the process keeps its sockets and state but does nothing,
    /// like a manager stuck in a long GC pause or a frozen VM.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        self.process.note("paused with SIGSTOP");
        Ok(())
    }

    /// SIGCONT after [`Manager::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        self.process.note("resumed with SIGCONT");
        Ok(())
    }

    /// Sends a signal through `kill(1)`: the workspace forbids unsafe code.
    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().with_context(|| format!("{} is not running", self.name))?;
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().context("running kill(1)")?;
        if !status.success() {
            bail!("kill -{signal} {pid} ({}) failed: {status}", self.name);
        }
        Ok(())
    }

    fn command_args(&self) -> Vec<String> {
        let mut args = vec!["manager".to_string()];
        match &self.role {
            Role::Init => args.push("init".to_string()),
            Role::Join { peer, token } => args.extend([
                "join".to_string(),
                "--peer".to_string(),
                peer.clone(),
                "--token".to_string(),
                token.clone(),
            ]),
        }
        args.extend([
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
            "--listen".to_string(),
            self.addr.to_string(),
        ]);
        args.extend(self.raft_args.iter().cloned());
        args
    }

    /// Starts the process (first start or restart); returns at once.
    pub fn start(&mut self) -> Result<()> {
        let args = self.command_args();
        self.process.start(&args)
    }

    /// Runs `bin` from the next start on: another release, for upgrades.
    pub fn set_binary(&mut self, bin: PathBuf) {
        self.process.set_bin(bin);
    }

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()?;
        self.paused = false;
        Ok(())
    }

    /// Starts the process again with the same data dir, port and command.
    pub fn restart(&mut self) -> Result<()> {
        self.start()
    }

    /// An error if the process was started and has exited since.
    pub fn check_alive(&self) -> Result<()> {
        self.process.check_alive()
    }

    /// Waits for the process to exit by itself and returns its status.
    pub async fn wait_exit(&self, deadline: Duration) -> Result<ExitStatus> {
        wait_until(&format!("{} to exit", self.name), deadline, || async {
            let mut child = self.process.child();
            let running = child.as_mut().ok_or_else(|| GiveUp(format!("{} is not running", self.name)))?;
            match running.try_wait()? {
                Some(status) => {
                    *child = None;
                    Ok(status)
                }
                None => bail!("{} still runs", self.name),
            }
        })
        .await
    }

    /// A client of this manager.
    pub async fn client(&self) -> Result<Client> {
        client(self.addr).await
    }

    /// `ClusterStatus` from this manager; fails fast if the process died.
    pub async fn status(&self) -> Result<ClusterStatusReply> {
        self.check_alive()?;
        status(self.addr).await
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.process.stop();
        if self.process.starts() > 0 {
            // Captured by the test runner, which shows it only on failure.
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of {} ({}, id {:?}, {}) -----\n{}",
                self.name,
                self.addr,
                self.id,
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

/// A running set of managers in one temporary folder.
pub struct Cluster {
    managers: Vec<Manager>,
    agents: Vec<Agent>,
    opts: ClusterOpts,
    manager_token: String,
    worker_token: Option<String>,
    // Declared last: dropped after the managers have been killed.
    root: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` managers: `manager init` for the first, then `manager
    /// join` with the manager token for each other, one at a time; returns
    /// once all `n` are voters and every manager sees the same leader.
    pub async fn start(n: usize, opts: ClusterOpts) -> Result<Cluster> {
        if n == 0 {
            bail!("a cluster needs at least one manager");
        }
        let root = tempfile::Builder::new()
            .prefix("berth-cluster-test-")
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let first = Manager::new(root.path(), "m1", Role::Init, &opts)?;
        let mut cluster = Cluster {
            managers: vec![first],
            agents: Vec::new(),
            opts,
            manager_token: String::new(),
            worker_token: None,
            root: Some(root),
        };
        cluster.managers[0].start()?;
        cluster.wait_converged(1).await?;
        let addr = cluster.managers[0].addr().to_string();
        cluster.manager_token = join_token("manager", &addr).await?;
        for _ in 1..n {
            cluster.add_manager().await?;
        }
        Ok(cluster)
    }

    /// Joins one more manager with the manager token and waits until it is a
    /// voter seen by every running manager. Returns its index.
    pub async fn add_manager(&mut self) -> Result<usize> {
        let contact = self.any_serving()?;
        let peer = contact.addr().to_string();
        let expected = voters(&contact.status().await?) + 1;
        let name = format!("m{}", self.managers.len() + 1);
        let role = Role::Join { peer, token: self.manager_token.clone() };
        let mut manager = Manager::new(self.root_path(), &name, role, &self.opts)?;
        manager.start()?;
        self.managers.push(manager);
        self.wait_converged(expected).await?;
        Ok(self.managers.len() - 1)
    }

    /// A manager that would join this cluster with `token` through `peer`,
    /// not started and not part of the cluster: for tests of refused joins.
    pub fn joiner(&self, name: &str, peer: SocketAddr, token: &str) -> Result<Manager> {
        let role = Role::Join { peer: peer.to_string(), token: token.to_string() };
        Manager::new(self.root_path(), name, role, &self.opts)
    }

    fn root_path(&self) -> &Path {
        self.root.as_ref().map(tempfile::TempDir::path).unwrap_or_else(|| Path::new("."))
    }

    pub fn len(&self) -> usize {
        self.managers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.managers.is_empty()
    }

    pub fn manager(&self, i: usize) -> &Manager {
        &self.managers[i]
    }

    pub fn managers(&self) -> &[Manager] {
        &self.managers
    }

    /// The managers, to change one (say, the binary it runs from its next start).
    pub fn managers_mut(&mut self) -> &mut [Manager] {
        &mut self.managers
    }

    pub fn manager_token(&self) -> &str {
        &self.manager_token
    }

    /// Indexes of the managers that run and are not paused.
    pub fn running(&self) -> Vec<usize> {
        (0..self.managers.len()).filter(|&i| self.managers[i].is_serving()).collect()
    }

    fn any_serving(&self) -> Result<&Manager> {
        self.managers.iter().find(|m| m.is_serving()).context("no manager is running unpaused")
    }

    /// The index of the manager with Raft id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.managers.iter().position(|m| m.id == Some(id))
    }

    /// SIGKILL manager `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.managers[i].kill()
    }

    /// SIGSTOP manager `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.managers[i].pause()
    }

    /// SIGCONT manager `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.managers[i].resume()
    }

    /// Restarts manager `i` from its data dir and waits until it answers.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.managers[i].restart()?;
        let manager = &self.managers[i];
        wait_until(&format!("restarted {} to answer ClusterStatus", manager.name), self.opts.ready_deadline, || {
            manager.status()
        })
        .await?;
        Ok(())
    }

    /// Waits until every running, unpaused manager names the same leader,
    /// that leader is one of them, and returns its index.
    pub async fn leader(&self) -> Result<usize> {
        wait_until("every running manager to agree on a running leader", self.opts.ready_deadline, || {
            self.agreed_leader(None)
        })
        .await
    }

    async fn agreed_leader(&self, voters_expected: Option<usize>) -> Result<usize> {
        let mut leader = None;
        for manager in self.managers.iter().filter(|m| m.is_serving()) {
            let status = manager.status().await?;
            if status.answered_by != manager.id.unwrap_or(status.answered_by) {
                bail!("{} answers as id {}, it was {:?}", manager.name, status.answered_by, manager.id);
            }
            let Some(id) = status.leader_id else {
                bail!("{} knows no leader (term {})", manager.name, status.term);
            };
            if let Some(expected) = voters_expected {
                if voters(&status) != expected {
                    bail!(
                        "{} sees {} voters of {} members, expected {expected}: {:?}",
                        manager.name,
                        voters(&status),
                        status.members.len(),
                        status.members
                    );
                }
            }
            match leader {
                None => leader = Some(id),
                Some(seen) if seen != id => {
                    bail!("{} names leader {id}, another manager names {seen}", manager.name)
                }
                Some(_) => {}
            }
        }
        let id = leader.context("no manager is running")?;
        let index = self.index_of(id).with_context(|| format!("leader id {id} is none of the started managers"))?;
        if !self.managers[index].is_serving() {
            bail!("the running managers still name {} (killed or paused) as leader", self.managers[index].name);
        }
        Ok(index)
    }

    /// Waits until every running manager answers, sees `voters` voters and
    /// names the same leader; records each manager's Raft id.
    async fn wait_converged(&mut self, voters: usize) -> Result<()> {
        let deadline = self.opts.ready_deadline;
        for i in self.running() {
            let manager = &self.managers[i];
            let status =
                wait_until(&format!("{} to answer ClusterStatus", manager.name), deadline, || manager.status()).await?;
            self.managers[i].id = Some(status.answered_by);
        }
        let this = &*self;
        wait_until(&format!("{voters} voters and one leader seen by every running manager"), deadline, || {
            this.agreed_leader(Some(voters))
        })
        .await?;
        Ok(())
    }

    /// Sends one request to the running managers in turn, as a client does
    /// across a failover, until one answers something other than a
    /// [`retryable`] error or the manager cannot be reached. `call` must
    /// resend the same request (same request id) every time.
    pub async fn call_acked<T, F, Fut>(&self, what: &str, deadline: Duration, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut turn = 0usize;
        wait_until(&format!("{what} to be acknowledged"), deadline, || {
            let running = self.running();
            let attempt = running
                .get(turn % running.len().max(1))
                .map(|&i| &self.managers[i])
                .map(|manager| (manager.name.clone(), lazy_client(manager.addr).map(&mut call)));
            turn += 1;
            async move {
                let (name, call) = attempt.ok_or_else(|| GiveUp("no manager is running".into()))?;
                match call?.await {
                    Ok(value) => Ok(value),
                    Err(status) if retryable(&status) => bail!("{name}: {status}"),
                    Err(status) => Err(GiveUp(format!("{name} refused {what}: {status}")).into()),
                }
            }
        })
        .await
    }

    /// Creates a service with [`Cluster::call_acked`].
    pub async fn create_acked(&self, spec: ServiceSpec, request_id: &str, deadline: Duration) -> Result<Service> {
        let request = CreateServiceRequest { request_id: request_id.to_string(), spec: Some(spec) };
        let what = format!("CreateService {}", request.spec.as_ref().map_or("", |s| &s.name));
        let reply = self
            .call_acked(&what, deadline, |mut client| {
                let request = request.clone();
                async move { client.create_service(request).await }
            })
            .await?;
        reply.into_inner().service.context("CreateService replied without a service")
    }
}

/// Agents, and reads and writes about nodes and tasks.
impl Cluster {
    /// The worker join token (`berth join-token worker -q`), fetched once.
    pub async fn worker_token(&mut self) -> Result<String> {
        if let Some(token) = &self.worker_token {
            return Ok(token.clone());
        }
        let contact = self.any_serving()?.addr().to_string();
        let token = join_token("worker", &contact).await?;
        self.worker_token = Some(token.clone());
        Ok(token)
    }

    /// Starts `n` agents, each told of every manager, and waits until the
    /// cluster lists each of them as a ready node. `opts` is called with
    /// the index each agent will have in [`Cluster::agents`]. Returns those
    /// indexes.
    pub async fn start_agents(
        &mut self,
        n: usize,
        mut opts: impl FnMut(usize) -> AgentOpts,
    ) -> Result<std::ops::Range<usize>> {
        let token = self.worker_token().await?;
        let managers: Vec<String> = self.managers.iter().map(|m| m.addr().to_string()).collect();
        let started = self.agents.len()..self.agents.len() + n;
        for i in started.clone() {
            let agent_opts = opts(i);
            if self.agents.iter().any(|a| a.name() == agent_opts.name) {
                bail!("two agents named {}", agent_opts.name);
            }
            let mut agent = Agent::new(self.root_path(), agent_opts, managers.clone(), token.clone())?;
            agent.start()?;
            self.agents.push(agent);
        }
        for i in started.clone() {
            self.wait_agent_ready(i, None).await?;
        }
        Ok(started)
    }

    /// Waits until agent `i`'s node is `ready` (and, with `after_ms`, was
    /// registered again after that time) and records its node id.
    async fn wait_agent_ready(&mut self, i: usize, after_ms: Option<i64>) -> Result<()> {
        let name = self.agents[i].name().to_string();
        let this = &*self;
        let node = wait_until(&format!("agent {name} to be a ready node"), this.opts.ready_deadline, || async {
            this.agents[i].check_alive()?;
            let node = this.node(&name).await?;
            if node.status != "ready" {
                bail!("node {name} is {} ({})", node.status, node.status_message);
            }
            if let Some(after) = after_ms {
                if node.updated_at_ms <= after {
                    bail!("node {name} has not registered again since {after} ms");
                }
            }
            Ok(node)
        })
        .await?;
        if let Some(known) = &self.agents[i].node_id {
            ensure!(*known == node.id, "agent {name} was node {known} and is now node {}", node.id);
        }
        self.agents[i].node_id = Some(node.id);
        Ok(())
    }

    pub fn agent(&self, i: usize) -> &Agent {
        &self.agents[i]
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The index of the agent named `name`.
    pub fn agent_index(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.name() == name)
    }

    /// The node id of agent `i`, known once it was seen ready.
    pub fn node_id(&self, i: usize) -> Result<&str> {
        self.agents[i].node_id().with_context(|| format!("agent {} was never seen ready", self.agents[i].name()))
    }

    /// The name of the agent whose node id is `node_id`, or the id itself.
    pub fn node_name<'a>(&'a self, node_id: &'a str) -> &'a str {
        self.agents.iter().find(|a| a.node_id() == Some(node_id)).map_or(node_id, Agent::name)
    }

    /// SIGKILL agent `i`; its containers keep running.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        self.agents[i].kill()
    }

    /// Starts agent `i` again under the same name and waits until its node
    /// has registered again and is ready, with the same node id.
    /// Agent `i`, to change it (say, the binary it runs from its next start).
    pub fn agent_mut(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i]
    }

    pub async fn restart_agent(&mut self, i: usize) -> Result<()> {
        let before = self.node(self.agents[i].name()).await?.updated_at_ms;
        self.agents[i].restart()?;
        self.wait_agent_ready(i, Some(before)).await
    }

    /// An error that [`wait_until`] does not retry if an agent that should
    /// run has exited by itself.
    pub fn check_agents_alive(&self) -> Result<()> {
        self.agents.iter().try_for_each(Agent::check_alive)
    }

    /// Sends a read to the serving managers in turn and returns the first
    /// answer; the error of the last one if none answers.
    pub async fn read<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = None;
        for i in self.running() {
            let manager = &self.managers[i];
            match call(lazy_client(manager.addr)?).await {
                Ok(value) => return Ok(value),
                Err(status) => last = Some(anyhow!("{what} on {}: {status}", manager.name)),
            }
        }
        Err(last.unwrap_or_else(|| GiveUp(format!("no manager is running to answer {what}")).into()))
    }

    /// Every node, read linearizably.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        self.check_agents_alive()?;
        let request = ListNodesRequest { consistency: ReadConsistency::Linearizable as i32 };
        let reply = self.read("ListNodes", |mut client| async move { client.list_nodes(request).await }).await?;
        Ok(reply.into_inner().nodes)
    }

    /// The node named `name`, read linearizably.
    pub async fn node(&self, name: &str) -> Result<Node> {
        let nodes = self.nodes().await?;
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let found = nodes.iter().find(|n| n.name == name).cloned();
        found.with_context(|| format!("no node named {name} among {names:?}"))
    }

    /// The service named `name`, read linearizably.
    pub async fn service(&self, name: &str) -> Result<Service> {
        let request =
            proto::GetServiceRequest { name: name.to_string(), consistency: ReadConsistency::Linearizable as i32 };
        let reply = self
            .read(&format!("GetService {name}"), |mut client| {
                let request = request.clone();
                async move { client.get_service(request).await }
            })
            .await?;
        reply.into_inner().service.context("GetService replied without a service")
    }

    /// Every task of `service` (by name), read linearizably.
    pub async fn tasks(&self, service: &str) -> Result<Vec<Task>> {
        self.check_agents_alive()?;
        let request =
            ListTasksRequest { service: service.to_string(), consistency: ReadConsistency::Linearizable as i32 };
        let reply = self
            .read(&format!("ListTasks {service}"), |mut client| {
                let request = request.clone();
                async move { client.list_tasks(request).await }
            })
            .await?;
        Ok(reply.into_inner().tasks)
    }

    /// `UpdateNode` with [`Cluster::call_acked`].
    pub async fn update_node_acked(&self, request: UpdateNodeRequest, deadline: Duration) -> Result<Node> {
        let what = format!("UpdateNode {}", request.node);
        let reply = self
            .call_acked(&what, deadline, |mut client| {
                let request = request.clone();
                async move { client.update_node(request).await }
            })
            .await?;
        reply.into_inner().node.context("UpdateNode replied without a node")
    }

    /// `ScaleService` with [`Cluster::call_acked`].
    pub async fn scale_acked(&self, service: &str, replicas: i64, deadline: Duration) -> Result<Service> {
        let request = ScaleServiceRequest { request_id: request_id(), name: service.to_string(), replicas };
        let what = format!("ScaleService {service} to {replicas}");
        let reply = self
            .call_acked(&what, deadline, |mut client| {
                let request = request.clone();
                async move { client.scale_service(request).await }
            })
            .await?;
        reply.into_inner().service.context("ScaleService replied without a service")
    }
}

/// Whether a client should retry a write elsewhere: the manager could not
/// commit it now (no quorum, leader change) or the connection broke, as
/// the CLI decides. A connection that breaks mid-request (a manager that
/// exits) surfaces as Unknown or Internal with the local transport error as
/// its source; a status a manager sent carries none.
pub fn retryable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown | tonic::Code::Internal => status.source().is_some(),
        _ => false,
    }
}

/// `berth join-token ROLE -q --manager ADDR`.
pub async fn join_token(role: &str, manager: &str) -> Result<String> {
    let output = cli(&["join-token", role, "-q", "--manager", manager]).await?;
    if !output.status.success() {
        bail!("berth join-token {role} failed ({}): {}", output.status, output.stderr);
    }
    let token = output.stdout.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("berth join-token {role} -q printed {:?}, not one token", output.stdout);
    }
    Ok(token)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill everything before the logs are printed and the folder goes;
        // agents first, so that none reports on containers being removed.
        for agent in &mut self.agents {
            if agent.is_running() {
                let _ = agent.kill();
            }
        }
        for manager in &mut self.managers {
            if manager.is_running() {
                let _ = manager.kill();
            }
        }
        docker::remove_node_containers_blocking(self.agents.iter().filter_map(|a| a.node_id.clone()).collect());
        let keep = std::thread::panicking()
            || WAIT_FAILED.load(Ordering::Relaxed)
            || std::env::var_os("BERTH_KEEP_TEST_DIRS").is_some();
        let root = self.root.take();
        // The managers and agents print their log tails as they drop, after this.
        if keep {
            if let Some(root) = root {
                eprintln!("cluster files kept in {}", root.keep().display());
            }
        } else {
            // Logs are read before the folder is removed.
            drop(std::mem::take(&mut self.agents));
            drop(std::mem::take(&mut self.managers));
            drop(root);
        }
    }
}
