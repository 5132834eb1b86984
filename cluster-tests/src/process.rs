//! One `berth` child process of the harness, manager or agent alike: its
//! log file (stdout and stderr of every run, appended, with the harness's
//! own notes), starting, SIGKILL, and noticing that it exited by itself.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

use crate::{berth_bin, GiveUp};

/// Log lines shown when a process exited by itself.
const EXIT_LOG_TAIL_LINES: usize = 20;

pub struct BerthProcess {
    /// How the harness names it in notes and errors, e.g. `agent a1`.
    label: String,
    bin: PathBuf,
    log_path: PathBuf,
    child: Mutex<Option<Child>>,
    starts: u32,
}

impl BerthProcess {
    pub fn new(label: String, log_path: PathBuf) -> Result<BerthProcess> {
        Ok(BerthProcess { label, bin: berth_bin()?, log_path, child: Mutex::new(None), starts: 0 })
    }

    pub fn log_path(&self) -> PathBuf {
        self.log_path.clone()
    }

    /// Runs `bin` from the next start on: another release, for upgrades.
    pub fn set_bin(&mut self, bin: PathBuf) {
        self.note(&format!("from the next start on, runs {}", bin.display()));
        self.bin = bin;
    }

    /// How many times it was started; 0 means it has no log worth showing.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Starts `berth ARGS` (first start or restart); returns at once.
    pub fn start(&mut self, args: &[String]) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_some() {
            bail!("{} is already running", self.label);
        }
        self.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        // Tokens show up here; these are throwaway clusters.
        writeln!(log, "=== harness: start #{} of {}: berth {}", self.starts, self.label, args.join(" "))?;
        let spawned = Command::new(&self.bin)
            .args(args)
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

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) -> Result<()> {
        let child = self.child().take();
        let Some(mut child) = child else {
            bail!("{} is not running", self.label);
        };
        child.kill().with_context(|| format!("killing {}", self.label))?;
        let status = child.wait()?;
        self.note(&format!("killed with SIGKILL ({status})"));
        Ok(())
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
                    "{} exited by itself: {status}; log tail:\n{}",
                    self.label,
                    self.log_tail(EXIT_LOG_TAIL_LINES)
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Appends a harness note to the log, so it reads in order with the process's own lines.
    pub fn note(&self, line: &str) {
        if let Ok(mut log) = File::options().append(true).open(&self.log_path) {
            let _ = writeln!(log, "=== harness: {}: {line}", self.label);
        }
    }

    /// Kills the process if it still runs, for `Drop`.
    pub fn stop(&mut self) {
        let child = self.child().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
