//! `berth agent` processes for the cluster tests: each with its own name,
//! tags, data dir and log file, all running tasks on the local Docker
//! Engine. A test kills one with SIGKILL and starts it again under the same
//! name, which is how a host comes back: the cluster keeps its node id, and
//! the agent finds its containers by the `berth.node` label.

use std::fmt;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

use crate::{berth_bin, GiveUp, LOG_TAIL_LINES};

/// Who an agent says it is when it registers.
#[derive(Debug, Clone, Default)]
pub struct AgentOpts {
    /// The node name; unique within the cluster.
    pub name: String,
    /// `--tag` values, e.g. `ssd` or `zone:a`.
    pub tags: Vec<String>,
}

impl AgentOpts {
    pub fn named(name: impl Into<String>) -> AgentOpts {
        AgentOpts { name: name.into(), tags: Vec::new() }
    }

    pub fn tag(mut self, tag: impl Into<String>) -> AgentOpts {
        self.tags.push(tag.into());
        self
    }
}

/// One `berth agent` process: its folder (data dir and log), the managers
/// and token it starts with and, while it runs, its child process.
pub struct Agent {
    opts: AgentOpts,
    dir: PathBuf,
    managers: Vec<String>,
    token: String,
    bin: PathBuf,
    child: Mutex<Option<Child>>,
    pub(crate) node_id: Option<String>,
    starts: u32,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.opts.name)
            .field("tags", &self.opts.tags)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent that is not started yet, in `root/agent-<name>`.
    pub fn new(root: &Path, opts: AgentOpts, managers: Vec<String>, token: String) -> Result<Agent> {
        if opts.name.is_empty() {
            bail!("an agent needs a name");
        }
        let dir = root.join(format!("agent-{}", opts.name));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Agent { opts, dir, managers, token, bin: berth_bin()?, child: Mutex::new(None), node_id: None, starts: 0 })
    }

    pub fn name(&self) -> &str {
        &self.opts.name
    }

    pub fn tags(&self) -> &[String] {
        &self.opts.tags
    }

    /// The node id the cluster gave this agent, once it was seen ready.
    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Both stdout and stderr of every run, appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    fn command_args(&self) -> Vec<String> {
        let mut args = vec![
            "agent".to_string(),
            "--manager".to_string(),
            self.managers.join(","),
            "--token".to_string(),
            self.token.clone(),
            "--name".to_string(),
            self.opts.name.clone(),
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
        ];
        for tag in &self.opts.tags {
            args.extend(["--tag".to_string(), tag.clone()]);
        }
        args
    }

    /// Starts the process (first start or restart); returns at once.
    pub fn start(&mut self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_some() {
            bail!("agent {} is already running", self.opts.name);
        }
        self.starts += 1;
        let args = self.command_args();
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        // The token is a secret in real life, but these are throwaway clusters.
        writeln!(log, "=== harness: start #{} of agent {}: berth {}", self.starts, self.opts.name, args.join(" "))?;
        let spawned = Command::new(&self.bin)
            .args(&args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        *child = Some(spawned);
        Ok(())
    }

    /// SIGKILL, then reap the process. Its containers keep running, as they
    /// do when an agent crashes.
    pub fn kill(&mut self) -> Result<()> {
        let child = self.child().take();
        let Some(mut child) = child else {
            bail!("agent {} is not running", self.opts.name);
        };
        child.kill().with_context(|| format!("killing agent {}", self.opts.name))?;
        let status = child.wait()?;
        self.note(&format!("killed with SIGKILL ({status})"));
        Ok(())
    }

    /// Starts the process again with the same name, tags and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.start()
    }

    /// An error that [`crate::wait_until`] does not retry if the process was
    /// started and has exited since.
    pub fn check_alive(&self) -> Result<()> {
        let mut child = self.child();
        if let Some(running) = child.as_mut() {
            if let Some(status) = running.try_wait()? {
                *child = None;
                drop(child);
                self.note(&format!("exited by itself ({status})"));
                return Err(GiveUp(format!(
                    "agent {} exited by itself: {status}; log tail:\n{}",
                    self.opts.name,
                    self.log_tail(20)
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn note(&self, line: &str) {
        if let Ok(mut log) = File::options().append(true).open(self.log_path()) {
            let _ = writeln!(log, "=== harness: agent {}: {line}", self.opts.name);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let child = self.child().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.starts > 0 {
            // Captured by the test runner, which shows it only on failure.
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of agent {} (node {:?}, {}) -----\n{}",
                self.opts.name,
                self.node_id,
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}
