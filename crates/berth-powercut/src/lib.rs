//! Test support: a FUSE filesystem that simulates power loss, so berth's
//! cluster tests can check that `berth manager` processes (which keep their
//! data in sled) fsync everything they acknowledge.
//!
//! [`PowerCutFs::mount`] mounts a passthrough of a *backing directory* at a
//! mount point. The backing directory plays the disk platter: what is in it
//! survives a power cut, and nothing else does.
//!
//! # The model
//!
//! - **Metadata is durable at once.** lookup, getattr, mkdir, create/mknod,
//!   symlink, unlink, rmdir, rename, readdir, open, release, statfs and
//!   setattr of mode, owner and times act on the backing directory
//!   immediately. The model checks file *data* durability, not
//!   directory-entry durability: a file created and renamed without any
//!   directory fsync still exists after a cut.
//! - **File contents are durable only once fsync'd.** The first change to a
//!   file's data (a write, a size change through setattr/`ftruncate`, or
//!   `fallocate`) loads an in-memory *image* of the file from the backing
//!   file; the image records which byte ranges are dirty and how the length
//!   moved. Later reads and writes of that file go to the image.
//! - **`fsync` and `fdatasync`** through *any* open handle of the file
//!   (read-only ones too) write the dirty ranges and the length to the
//!   backing file and mark the image clean. Only the dirty ranges are
//!   written, never the whole file. The backing file itself is not synced:
//!   the host is not losing power. A write through a handle opened with
//!   `O_SYNC`/`O_DSYNC` is persisted the same way before it returns, as
//!   those flags promise.
//! - **`flush` and `release` (close) persist nothing.** A killed process has
//!   its files closed, and that must not count as a sync.
//! - **[`PowerCutFs::cut_power`]** atomically drops every image: every file
//!   reverts to exactly its contents as of its last fsync, and a file
//!   created but never synced is empty. Images are keyed by inode, so a
//!   rename keeps an unsynced image with its file; unlinking a file's last
//!   name drops its image.
//! - **[`PowerCutFs::fail_writes`]** makes every operation that would change
//!   data or metadata (write, create, mknod, mkdir, symlink, rename, unlink,
//!   rmdir, setattr, fsync, fsyncdir, fallocate) fail with a chosen errno,
//!   such as `ENOSPC` or `EIO`, until cleared. Reads, lookups, opens and
//!   closes keep working.
//!
//! The kernel caches nothing that could outlive a cut: every open file
//! uses FUSE direct I/O (no page cache), attribute and entry TTLs are zero,
//! and the writeback cache is off. Positioned reads and writes work at any
//! offset (a write past the end leaves a hole that reads as zeros), and
//! `flock` is left to the kernel, which handles it locally.
//!
//! # Limits
//!
//! - `sync(2)`, `syncfs(2)` and `sync_file_range(2)` never reach a FUSE
//!   filesystem, so they persist nothing here, exactly as they guarantee
//!   nothing about power loss on a real disk. sled 0.34's `flush()` relies
//!   on `sync_file_range` alone, so on this filesystem its data survives a
//!   cut only after an fsync: sled's background flusher calls one about
//!   every 500 ms, and a program that acknowledges a write after
//!   `flush()` must fsync sled's files itself.
//! - Hard links, extended attributes, POSIX record locks (`fcntl`), FIFOs,
//!   devices and sockets are not supported; `RENAME_EXCHANGE` is not either.
//!   Shared writable `mmap` does not work on direct-I/O files.
//! - An image lives in memory, so a file with unsynced changes may not grow
//!   past [`MAX_FILE_LEN_BYTES`] (writes beyond fail with `EFBIG`).
//! - One session thread serves every request, one at a time: several
//!   processes may use the mount at once, each request waits for the one
//!   before it.
//! - Mounting takes `/dev/fuse` and the `fusermount3` binary
//!   ([`fuse_available`] says which is missing). The mount is made with
//!   `allow_other` and `auto_unmount`, so as a user other than root it needs
//!   `user_allow_other` in `/etc/fuse.conf`; `auto_unmount` removes the
//!   mount even if the test process dies without unmounting.

mod fs;
mod image;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use fuser::{BackgroundSession, MountOption, SessionACL};

pub use crate::image::MAX_FILE_LEN_BYTES;

/// The device every FUSE mount talks through.
const FUSE_DEVICE: &str = "/dev/fuse";
/// The mount helper `fuser` uses when it is built without libfuse.
const FUSERMOUNT_BIN: &str = "fusermount3";
/// Where to look for [`FUSERMOUNT_BIN`] besides `$PATH`.
const FUSERMOUNT_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];
/// How long dropping a [`PowerCutFs`] waits for the kernel to let go of the
/// mount; a process still using it can hold it longer, and then the
/// unmount finishes in the background.
const UNMOUNT_WAIT_MS: u64 = 10_000;
/// The name the mount shows in `/proc/mounts`.
const FS_NAME: &str = "berth-powercut";

/// What a power cut threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had changes (data or length) not yet fsync'd.
    pub files: usize,
    /// Bytes written to them since their last fsync.
    pub bytes: u64,
}

/// How many of each operation the filesystem has served since it was
/// mounted, so tests can tell which calls a program made (for example
/// whether sled ever fsyncs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Files opened (without creating them).
    pub opens: u64,
    /// Files created (create or mknod).
    pub creates: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes those write requests carried.
    pub bytes_written: u64,
    /// Writes through `O_SYNC`/`O_DSYNC`, each persisted at once.
    pub sync_writes: u64,
    /// `fsync` calls on files.
    pub fsyncs: u64,
    /// `fdatasync` calls on files.
    pub fdatasyncs: u64,
    /// `fsync`/`fdatasync` calls on directories.
    pub dir_fsyncs: u64,
    /// Size changes through setattr (`ftruncate`, `set_len`, `O_TRUNC`).
    pub truncates: u64,
    /// `fallocate` calls.
    pub fallocates: u64,
    /// Renames.
    pub renames: u64,
    /// Unlinks and rmdirs.
    pub unlinks: u64,
    /// Calls to [`PowerCutFs::cut_power`].
    pub power_cuts: u64,
}

/// Why the filesystem could not be mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/fuse` or `fusermount3` is missing or unusable.
    #[error("FUSE is unavailable: {0}")]
    FuseUnavailable(String),
    /// The backing directory or mount point is unusable.
    #[error("{what} {}: {source}", path.display())]
    Path {
        /// Which of the two paths.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: io::Error,
    },
    /// The backing directory lies inside the mount point, where every
    /// backing operation would re-enter the filesystem.
    #[error("backing directory {} is inside the mount point {}", backing.display(), mountpoint.display())]
    BackingInsideMount {
        /// The backing directory.
        backing: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// `fusermount3` or the kernel refused the mount.
    #[error("mounting {}: {source}", mountpoint.display())]
    Mount {
        /// The mount point.
        mountpoint: PathBuf,
        /// The error `fuser` returned.
        #[source]
        source: io::Error,
    },
    /// The mount did not go away cleanly.
    #[error("unmounting {}: {reason}", mountpoint.display())]
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A mounted power-cut filesystem. Dropping it unmounts.
#[derive(Debug)]
pub struct PowerCutFs {
    shared: Arc<fs::Shared>,
    backing: PathBuf,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl PowerCutFs {
    /// Mounts a passthrough of the directory `backing` at the directory
    /// `mountpoint`; both must exist, and `backing` must not be inside
    /// `mountpoint`. Returns once the kernel has the mount.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<PowerCutFs, Error> {
        fuse_available().map_err(Error::FuseUnavailable)?;
        let path_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Path { what, path, source }
        };
        let backing = backing.canonicalize().map_err(path_error("backing directory", backing))?;
        let mountpoint = mountpoint.canonicalize().map_err(path_error("mount point", mountpoint))?;
        if backing.starts_with(&mountpoint) {
            return Err(Error::BackingInsideMount { backing, mountpoint });
        }
        let root_meta = std::fs::metadata(&backing).map_err(path_error("backing directory", &backing))?;
        if !root_meta.is_dir() {
            return Err(path_error("backing directory", &backing)(io::ErrorKind::NotADirectory.into()));
        }
        let shared = Arc::new(fs::Shared::new(backing.clone(), &root_meta));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName(FS_NAME.to_string()),
            // The kernel checks permissions from the attributes we return.
            MountOption::DefaultPermissions,
            // fusermount3 stays behind and unmounts if this process dies.
            MountOption::AutoUnmount,
        ];
        // auto_unmount requires allow_other; fuser still admits only root
        // and the mounting user.
        config.acl = SessionACL::RootAndOwner;
        let filesystem = fs::PowerCutFilesystem::new(Arc::clone(&shared));
        let session = fuser::spawn_mount(filesystem, &mountpoint, &config)
            .map_err(|source| Error::Mount { mountpoint: mountpoint.clone(), source })?;
        Ok(PowerCutFs { shared, backing, mountpoint, session: Some(session) })
    }

    /// Simulates power loss: atomically drops every unsynced change, so
    /// every file reads as of its last fsync. Processes using the mount keep
    /// running; a test normally kills them first.
    pub fn cut_power(&self) -> CutReport {
        self.shared.cut_power()
    }

    /// With `Some(errno)`, makes every operation that changes data or
    /// metadata fail with `errno` (a non-positive one becomes `EIO`);
    /// `None` lets them succeed again.
    pub fn fail_writes(&self, errno: Option<i32>) {
        self.shared.set_injected_errno(errno);
    }

    /// The operations served so far.
    pub fn op_counts(&self) -> OpCounts {
        self.shared.op_counts()
    }

    /// Where the filesystem is mounted (canonicalized).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory (canonicalized): what survives a power cut.
    pub fn backing_dir(&self) -> &Path {
        &self.backing
    }

    /// Unmounts, reporting what dropping would only log.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_session()
    }

    fn unmount_session(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // fuser's own unmount only closes its socket to the auto_unmount
        // watcher, which unmounts only a filesystem whose server is gone;
        // ours is still serving, so detach the mount ourselves. Lazily: a
        // process still inside it must not make this fail.
        let detached = self.detach_mount();
        // Joining the session thread waits until the kernel lets go of the
        // mount, which a process still using it can delay indefinitely.
        let (done_tx, done_rx) = mpsc::channel();
        let unmount_error = |reason: String| Error::Unmount { mountpoint: self.mountpoint.clone(), reason };
        thread::Builder::new()
            .name("powercut-unmount".to_string())
            .spawn(move || {
                // The receiver is gone only if the wait below timed out.
                let _ = done_tx.send(session.umount_and_join());
            })
            .map_err(|err| unmount_error(format!("cannot start the unmount thread: {err}")))?;
        match done_rx.recv_timeout(Duration::from_millis(UNMOUNT_WAIT_MS)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(unmount_error(err.to_string())),
            Err(_) => Err(unmount_error(match detached {
                Ok(()) => format!(
                    "detached, but the filesystem is still in use after {UNMOUNT_WAIT_MS} ms; \
                     it stops once its last user lets go"
                ),
                Err(reason) => format!("{reason}; still mounted after {UNMOUNT_WAIT_MS} ms"),
            })),
        }
    }

    /// `fusermount3 -u -z`: removes the mount from the namespace now; the
    /// kernel ends the session once nothing uses it.
    fn detach_mount(&self) -> Result<(), String> {
        let fusermount = find_fusermount()?;
        let output = Command::new(&fusermount)
            .args(["-u", "-z", "--"])
            .arg(&self.mountpoint)
            .output()
            .map_err(|err| format!("running {}: {err}", fusermount.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} -u -z failed ({}): {}",
                fusermount.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_session() {
            tracing::warn!(%err, "berth-powercut unmount");
        }
    }
}

/// Whether this machine can mount the filesystem: `Ok` when `/dev/fuse`
/// opens and `fusermount3` is installed, else the reason.
pub fn fuse_available() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE)
        .map_err(|err| format!("cannot open {FUSE_DEVICE}: {err} (no FUSE kernel module, or not allowed here)"))?;
    find_fusermount()?;
    Ok(())
}

/// Where `fuser` will find the mount helper: `$FUSERMOUNT_PATH` if set
/// (as `fuser` honours it), else `$PATH` and the usual directories.
fn find_fusermount() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("FUSERMOUNT_PATH") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("FUSERMOUNT_PATH={} is not an executable file", path.display()))
        };
    }
    let path_dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).collect()).unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(FUSERMOUNT_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(FUSERMOUNT_BIN))
        .find(|path| is_executable(path))
        .ok_or_else(|| {
            format!("{FUSERMOUNT_BIN} is not in $PATH nor in {} (Debian package fuse3)", FUSERMOUNT_DIRS.join(", "))
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
