//! `berth agent` processes for the cluster tests: each with its own name,
//! tags, data dir and log file, all running tasks on the local Docker
//! Engine. A test kills one with SIGKILL and starts it again under the same
//! name, which is how a host comes back: the cluster keeps its node id, and
//! the agent finds its containers by the `berth.node` label.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process::BerthProcess;
use crate::LOG_TAIL_LINES;

/// Who an agent says it is when it registers.
#[derive(Debug, Clone, Default)]
pub struct AgentOpts {
    /// The node name; unique within the cluster.
    pub name: String,
    /// `--tag` values, e.g. `ssd` or `zone:a`.
    pub tags: Vec<String>,
    /// Where its load balancer serves HTTP; off unless a test asks, so
    /// concurrent test clusters never compete for a port.
    pub proxy_http_listen: Option<std::net::SocketAddr>,
    /// The `berth` binary it starts with; `None` is [`crate::berth_bin`].
    pub bin: Option<PathBuf>,
}

impl AgentOpts {
    pub fn named(name: impl Into<String>) -> AgentOpts {
        AgentOpts { name: name.into(), tags: Vec::new(), proxy_http_listen: None, bin: None }
    }

    pub fn proxy(mut self, listen: std::net::SocketAddr) -> AgentOpts {
        self.proxy_http_listen = Some(listen);
        self
    }

    /// Starts with `bin` (another release) instead of the binary under test.
    pub fn bin(mut self, bin: PathBuf) -> AgentOpts {
        self.bin = Some(bin);
        self
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
    process: BerthProcess,
    pub(crate) node_id: Option<String>,
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
        let mut process = BerthProcess::new(format!("agent {}", opts.name), dir.join("agent.log"))?;
        if let Some(bin) = &opts.bin {
            process.set_bin(bin.clone());
        }
        Ok(Agent { opts, dir, managers, token, process, node_id: None })
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
        self.process.log_path()
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
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
        let proxy = self.opts.proxy_http_listen.map_or_else(|| "off".to_string(), |addr| addr.to_string());
        args.extend(["--proxy-http-listen".to_string(), proxy]);
        args
    }

    /// Starts the process (first start or restart); returns at once.
    pub fn start(&mut self) -> Result<()> {
        let args = self.command_args();
        self.process.start(&args)
    }

    /// SIGKILL, then reap the process. Its containers keep running, as they
    /// do when an agent crashes.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Runs `bin` from the next start on: another release, for upgrades.
    pub fn set_binary(&mut self, bin: PathBuf) {
        self.process.set_bin(bin);
    }

    /// Starts the process again with the same name, tags and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.start()
    }

    /// An error that [`crate::wait_until`] does not retry if the process was
    /// started and has exited since.
    pub fn check_alive(&self) -> Result<()> {
        self.process.check_alive()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.stop();
        if self.process.starts() > 0 {
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
