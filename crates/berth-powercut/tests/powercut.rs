//! The power-cut model on real FUSE mounts in temporary directories: what
//! survives a cut (fsync'd data, every namespace change) and what does not
//! (writes, truncations and new files' contents never fsync'd), error
//! injection, concurrent writers, and sled as a real consumer. Without
//! FUSE each test prints why it skipped, unless `CI` is `true` or `1`,
//! where it fails.

#![allow(clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use berth_powercut::{fuse_available, CutReport, PowerCutFs};
use tempfile::TempDir;

/// A mount over a fresh backing directory; unmounts before the temporary
/// directory goes (fields drop in order).
struct Mounted {
    fs: PowerCutFs,
    _dir: TempDir,
}

impl Mounted {
    /// A path through the mount.
    fn path(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }

    /// The same path in the backing directory: what is on the "platter".
    fn backing(&self, name: &str) -> PathBuf {
        self.fs.backing_dir().join(name)
    }
}

fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Mounts a fresh filesystem, or returns `None` (after saying why) when
/// this machine cannot mount FUSE and this is not CI.
fn mount(test: &str) -> Option<Mounted> {
    if let Err(reason) = fuse_available() {
        assert!(!under_ci(), "{test}: FUSE is required under CI: {reason}");
        eprintln!("skipping {test}: {reason}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    match PowerCutFs::mount(&backing, &mountpoint) {
        Ok(fs) => Some(Mounted { fs, _dir: dir }),
        // The kernel or fusermount3 refused (say, in a container without the right to mount).
        Err(err @ berth_powercut::Error::Mount { .. }) if !under_ci() => {
            eprintln!("skipping {test}: {err}");
            None
        }
        Err(err) => panic!("{test}: {err}"),
    }
}

fn write_synced(path: &Path, contents: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(contents).unwrap();
    file.sync_all().unwrap();
}

fn raw_os_error(result: std::io::Result<impl std::fmt::Debug>) -> Option<i32> {
    result.expect_err("the operation should have failed").raw_os_error()
}

#[test]
fn unmount_removes_the_mount() {
    let Some(m) = mount("unmount_removes_the_mount") else { return };
    let mountpoint = m.fs.mountpoint().to_path_buf();
    write_synced(&m.path("f"), b"on the platter");
    let is_mounted = || {
        fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some(mountpoint.to_str().unwrap()))
    };
    assert!(is_mounted());

    let Mounted { fs, _dir: dir } = m;
    fs.unmount().unwrap();
    assert!(!is_mounted());
    assert!(!mountpoint.join("f").exists(), "the mount point is an empty directory again");
    assert_eq!(fs::read(dir.path().join("backing/f")).unwrap(), b"on the platter");
}

#[test]
fn unsynced_write_is_dropped_by_power_cut() {
    let Some(m) = mount("unsynced_write_is_dropped_by_power_cut") else { return };
    let path = m.path("f");
    write_synced(&path, b"durable");

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"LOST", 0).unwrap();
    drop(file); // a close is not a sync

    assert_eq!(fs::read(&path).unwrap(), b"LOSTble");
    assert_eq!(fs::read(m.backing("f")).unwrap(), b"durable", "the write reached the platter unsynced");
    assert_eq!(m.fs.cut_power(), CutReport { files: 1, bytes: 4 });
    assert_eq!(fs::read(&path).unwrap(), b"durable");
}

#[test]
fn fsynced_and_fdatasynced_writes_survive_power_cut() {
    let Some(m) = mount("fsynced_and_fdatasynced_writes_survive_power_cut") else { return };
    write_synced(&m.path("fsync"), b"kept by fsync");
    let mut file = File::create(m.path("fdatasync")).unwrap();
    file.write_all(b"kept by fdatasync").unwrap();
    file.sync_data().unwrap();

    assert_eq!(m.fs.cut_power(), CutReport { files: 0, bytes: 0 });
    assert_eq!(fs::read(m.path("fsync")).unwrap(), b"kept by fsync");
    assert_eq!(fs::read(m.path("fdatasync")).unwrap(), b"kept by fdatasync");
    let counts = m.fs.op_counts();
    assert_eq!((counts.fsyncs, counts.fdatasyncs), (1, 1));
}

#[test]
fn write_after_fsync_is_dropped_while_synced_prefix_survives() {
    let Some(m) = mount("write_after_fsync_is_dropped_while_synced_prefix_survives") else { return };
    let path = m.path("log");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"prefix-").unwrap();
    file.sync_all().unwrap();
    file.write_all(b"suffix").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"prefix-suffix");

    assert_eq!(m.fs.cut_power(), CutReport { files: 1, bytes: 6 });
    assert_eq!(fs::read(&path).unwrap(), b"prefix-");
}

#[test]
fn unsynced_set_len_reverts_on_power_cut() {
    let Some(m) = mount("unsynced_set_len_reverts_on_power_cut") else { return };
    let path = m.path("f");
    let original: Vec<u8> = (0..100u8).collect();
    write_synced(&path, &original);

    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 10);
    file.set_len(40).unwrap();
    let mut expected = original[..10].to_vec();
    expected.resize(40, 0);
    assert_eq!(fs::read(&path).unwrap(), expected, "regrown bytes must read as zeros");

    let report = m.fs.cut_power();
    assert_eq!(report.files, 1);
    assert_eq!(fs::read(&path).unwrap(), original);
}

#[test]
fn synced_shrink_then_grow_leaves_zeros_after_power_cut() {
    let Some(m) = mount("synced_shrink_then_grow_leaves_zeros_after_power_cut") else { return };
    let path = m.path("f");
    write_synced(&path, &[7u8; 100]);

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    file.set_len(40).unwrap();
    file.sync_data().unwrap();

    m.fs.cut_power();
    let mut expected = vec![7u8; 10];
    expected.resize(40, 0);
    assert_eq!(fs::read(&path).unwrap(), expected);
}

#[test]
fn truncating_open_without_fsync_reverts_on_power_cut() {
    let Some(m) = mount("truncating_open_without_fsync_reverts_on_power_cut") else { return };
    let path = m.path("f");
    write_synced(&path, b"durable contents");

    let mut file = File::create(&path).unwrap(); // O_TRUNC
    file.write_all(b"new").unwrap();
    drop(file);
    assert_eq!(fs::read(&path).unwrap(), b"new");

    m.fs.cut_power();
    assert_eq!(fs::read(&path).unwrap(), b"durable contents");
}

#[test]
fn rename_keeps_unsynced_image_and_cut_reverts_it_under_new_name() {
    let Some(m) = mount("rename_keeps_unsynced_image_and_cut_reverts_it_under_new_name") else { return };
    let (from, to) = (m.path("state.tmp"), m.path("state"));
    write_synced(&from, b"old contents");
    write_synced(&to, b"replaced target");

    let file = OpenOptions::new().write(true).open(&from).unwrap();
    file.write_all_at(b"NEW", 0).unwrap();
    fs::rename(&from, &to).unwrap();
    assert!(!from.exists());
    assert_eq!(fs::read(&to).unwrap(), b"NEW contents", "the image moved with the file");

    assert_eq!(m.fs.cut_power(), CutReport { files: 1, bytes: 3 });
    assert!(!from.exists(), "a rename is durable at once");
    assert_eq!(fs::read(&to).unwrap(), b"old contents");
}

#[test]
fn synced_file_renamed_over_target_survives_power_cut() {
    let Some(m) = mount("synced_file_renamed_over_target_survives_power_cut") else { return };
    write_synced(&m.path("target"), b"previous");
    write_synced(&m.path("target.tmp"), b"replacement");
    fs::rename(m.path("target.tmp"), m.path("target")).unwrap();

    m.fs.cut_power();
    assert_eq!(fs::read(m.path("target")).unwrap(), b"replacement");
    assert!(!m.path("target.tmp").exists());
}

#[test]
fn created_file_never_synced_is_empty_after_power_cut() {
    let Some(m) = mount("created_file_never_synced_is_empty_after_power_cut") else { return };
    let path = m.path("new");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"never synced").unwrap();
    drop(file);

    assert_eq!(m.fs.cut_power(), CutReport { files: 1, bytes: 12 });
    assert!(path.exists(), "the directory entry is durable at once");
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn namespace_changes_are_durable_without_fsync() {
    let Some(m) = mount("namespace_changes_are_durable_without_fsync") else { return };
    fs::create_dir(m.path("d")).unwrap();
    File::create(m.path("d/f")).unwrap();
    fs::rename(m.path("d"), m.path("e")).unwrap();
    write_synced(&m.path("e/f"), b"synced under the renamed directory");
    fs::create_dir(m.path("gone")).unwrap();
    fs::remove_dir(m.path("gone")).unwrap();

    m.fs.cut_power();
    let mut names: Vec<_> = fs::read_dir(m.fs.mountpoint()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["e"]);
    assert_eq!(fs::read(m.path("e/f")).unwrap(), b"synced under the renamed directory");
}

#[test]
fn unlink_drops_the_unsynced_image() {
    let Some(m) = mount("unlink_drops_the_unsynced_image") else { return };
    let path = m.path("f");
    write_synced(&path, b"synced");
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"unsynced", 0).unwrap();
    fs::remove_file(&path).unwrap();

    assert_eq!(m.fs.cut_power(), CutReport { files: 0, bytes: 0 });
    assert!(!path.exists());
}

#[test]
fn pread_and_pwrite_work_at_offsets_and_past_the_end() {
    let Some(m) = mount("pread_and_pwrite_work_at_offsets_and_past_the_end") else { return };
    let path = m.path("f");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.write_all_at(b"head", 0).unwrap();
    file.write_all_at(b"tail", 10_000).unwrap();
    file.write_all_at(b"XY", 1).unwrap();
    // Larger than one FUSE request, so the kernel splits it.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    file.write_all_at(&big, 20_000).unwrap();
    let len = 20_000 + big.len() as u64;
    assert_eq!(file.metadata().unwrap().len(), len);

    let check = |file: &File| {
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hXYd");
        file.read_exact_at(&mut buf, 10_000).unwrap();
        assert_eq!(&buf, b"tail");
        let mut hole = vec![1u8; 5_000];
        file.read_exact_at(&mut hole, 4_000).unwrap();
        assert!(hole.iter().all(|&b| b == 0), "a hole reads as zeros");
        let mut back = vec![0u8; big.len()];
        file.read_exact_at(&mut back, 20_000).unwrap();
        assert!(back == big, "the large write reads back");
        assert_eq!(file.read_at(&mut buf, len + 100).unwrap(), 0, "a read past the end is empty");
    };
    check(&file);
    file.sync_data().unwrap();
    drop(file);

    m.fs.cut_power();
    check(&File::open(&path).unwrap());
    check(&File::open(m.backing("f")).unwrap());
}

#[test]
fn o_dsync_write_survives_power_cut() {
    let Some(m) = mount("o_dsync_write_survives_power_cut") else { return };
    let path = m.path("f");
    let mut file = OpenOptions::new().write(true).create(true).custom_flags(libc::O_DSYNC).open(&path).unwrap();
    file.write_all(b"durable on return").unwrap();
    drop(file);

    let counts = m.fs.op_counts();
    assert_eq!((counts.sync_writes, counts.fsyncs, counts.fdatasyncs), (1, 0, 0), "the write itself was the sync");
    assert_eq!(m.fs.cut_power(), CutReport { files: 0, bytes: 0 });
    assert_eq!(fs::read(&path).unwrap(), b"durable on return");
}

#[test]
fn fsync_through_read_only_handle_persists_other_handles_writes() {
    let Some(m) = mount("fsync_through_read_only_handle_persists_other_handles_writes") else { return };
    let path = m.path("f");
    let mut writer = File::create(&path).unwrap();
    writer.write_all(b"written by one handle").unwrap();
    drop(writer);
    File::open(&path).unwrap().sync_data().unwrap();

    m.fs.cut_power();
    assert_eq!(fs::read(&path).unwrap(), b"written by one handle");
}

#[test]
fn fail_writes_enospc_fails_changes_until_cleared() {
    let Some(m) = mount("fail_writes_enospc_fails_changes_until_cleared") else { return };
    let path = m.path("f");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.write_all_at(b"before", 0).unwrap();
    file.sync_all().unwrap();
    file.write_all_at(b"B", 0).unwrap(); // unsynced, so the fsync below has work to refuse

    m.fs.fail_writes(Some(libc::ENOSPC));
    let enospc = Some(libc::ENOSPC);
    assert_eq!(raw_os_error(file.write_all_at(b"x", 0)), enospc);
    assert_eq!(raw_os_error(file.sync_all()), enospc);
    assert_eq!(raw_os_error(file.sync_data()), enospc);
    assert_eq!(raw_os_error(file.set_len(0)), enospc);
    assert_eq!(raw_os_error(File::create(m.path("new"))), enospc);
    assert_eq!(raw_os_error(fs::create_dir(m.path("dir"))), enospc);
    assert_eq!(raw_os_error(fs::rename(&path, m.path("moved"))), enospc);
    assert_eq!(raw_os_error(fs::remove_file(&path)), enospc);
    // Reads keep working.
    assert_eq!(fs::read(&path).unwrap(), b"Before");
    assert_eq!(fs::read_dir(m.fs.mountpoint()).unwrap().count(), 1);

    m.fs.fail_writes(None);
    file.write_all_at(b"after!", 0).unwrap();
    file.sync_all().unwrap();
    m.fs.cut_power();
    assert_eq!(fs::read(&path).unwrap(), b"after!");
}

#[test]
fn fail_writes_eio_fails_fsync() {
    let Some(m) = mount("fail_writes_eio_fails_fsync") else { return };
    let mut file = File::create(m.path("f")).unwrap();
    file.write_all(b"unsynced").unwrap();
    m.fs.fail_writes(Some(libc::EIO));
    assert_eq!(raw_os_error(file.sync_all()), Some(libc::EIO));
    m.fs.fail_writes(None);

    assert_eq!(m.fs.cut_power(), CutReport { files: 1, bytes: 8 }, "a failed fsync persisted nothing");
}

#[test]
fn concurrent_writers_on_different_files_keep_only_their_synced_records() {
    const WRITERS: usize = 2;
    const RECORDS: usize = 400;
    const SYNCED_RECORDS: usize = 250;
    let Some(m) = mount("concurrent_writers_on_different_files_keep_only_their_synced_records") else { return };
    let record = |writer: usize, n: usize| format!("writer {writer} record {n:05}\n").into_bytes();
    let start = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let path = m.path(&format!("w{writer}"));
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut file = File::create(&path).unwrap();
                start.wait();
                for n in 0..RECORDS {
                    file.write_all(&record(writer, n)).unwrap();
                    if n + 1 == SYNCED_RECORDS {
                        file.sync_data().unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    for writer in 0..WRITERS {
        let all: Vec<u8> = (0..RECORDS).flat_map(|n| record(writer, n)).collect();
        assert_eq!(fs::read(m.path(&format!("w{writer}"))).unwrap(), all);
    }
    assert_eq!(m.fs.cut_power().files, WRITERS);
    for writer in 0..WRITERS {
        let synced: Vec<u8> = (0..SYNCED_RECORDS).flat_map(|n| record(writer, n)).collect();
        assert_eq!(fs::read(m.path(&format!("w{writer}"))).unwrap(), synced, "writer {writer}");
    }
}

/// Set in the child process of the sled test to the database directory.
const SLED_CHILD_DIR_ENV: &str = "BERTH_POWERCUT_SLED_CHILD_DIR";
/// Must equal the sled test's function name: the child runs just that test.
const SLED_TEST_NAME: &str = "sled_reopens_after_power_cut_with_exactly_the_fsynced_keys";
/// Starts the lines the child reports its progress with.
const CHILD_MARKER: &str = "SLED-CHILD";
const SYNCED_KEYS: u32 = 300;
const FLUSHED_KEYS: u32 = 300;
const MEMORY_KEYS: u32 = 100;
/// How long the child may take to open sled and write every batch.
const CHILD_READY_TIMEOUT_MS: u64 = 60_000;
/// How long the child waits to be killed before giving up by itself.
const CHILD_LINGER_MS: u64 = 120_000;

fn sled_key(batch: &str, n: u32) -> Vec<u8> {
    format!("{batch}/{n:06}").into_bytes()
}

fn sled_value(batch: &str, n: u32) -> Vec<u8> {
    format!("value of {batch} {n} ").repeat(4).into_bytes()
}

fn open_sled(dir: &Path, background_fsync: bool) -> sled::Db {
    // The mode berth-store uses.
    let config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput);
    let config = if background_fsync { config } else { config.flush_every_ms(None) };
    config.open().unwrap_or_else(|err| panic!("sled open {}: {err}", dir.display()))
}

/// The process whose power gets cut: writes three batches, and is killed.
/// sled's background flusher is off, so the only fsync is the test's own.
fn sled_child(dir: &Path) -> ! {
    let db = open_sled(dir, false);
    let report = |stage: &str| {
        println!("{CHILD_MARKER} {stage}");
        std::io::stdout().flush().unwrap();
    };
    for n in 0..SYNCED_KEYS {
        db.insert(sled_key("synced", n), sled_value("synced", n)).unwrap();
    }
    db.flush().unwrap();
    // What a store that acknowledges after a sync does (berth-store does
    // this after sled's flush): fdatasync sled's log file.
    File::open(dir.join("db")).unwrap().sync_data().unwrap();
    report("synced");
    for n in 0..FLUSHED_KEYS {
        db.insert(sled_key("flushed", n), sled_value("flushed", n)).unwrap();
    }
    // sled "makes these stable" with sync_file_range, which never reaches
    // a FUSE filesystem and guarantees nothing across a power loss.
    db.flush().unwrap();
    report("flushed");
    for n in 0..MEMORY_KEYS {
        db.insert(sled_key("memory", n), sled_value("memory", n)).unwrap();
    }
    report("ready");
    thread::sleep(Duration::from_millis(CHILD_LINGER_MS));
    std::process::exit(1);
}

#[test]
fn sled_reopens_after_power_cut_with_exactly_the_fsynced_keys() {
    if let Some(dir) = std::env::var_os(SLED_CHILD_DIR_ENV) {
        sled_child(Path::new(&dir));
    }
    let Some(m) = mount(SLED_TEST_NAME) else { return };
    let db_dir = m.path("sled");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", SLED_TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(SLED_CHILD_DIR_ENV, &db_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match line_rx.recv_timeout(Duration::from_millis(CHILD_READY_TIMEOUT_MS)) {
            Ok(line) if line == format!("{CHILD_MARKER} ready") => break,
            Ok(_) => continue,
            Err(err) => {
                let _ = child.kill();
                panic!("the sled child never got ready ({err}); exit: {:?}", child.wait());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: its files are closed, nothing is synced
    child.wait().unwrap();

    let counts = m.fs.op_counts();
    let report = m.fs.cut_power();
    eprintln!("sled on berth-powercut before the cut: {counts:?}; the cut dropped {report:?}");
    assert!(report.files >= 1 && report.bytes > 0, "sled's flush wrote the flushed batch, and only the cut dropped it");

    let db = open_sled(&db_dir, true);
    for n in 0..SYNCED_KEYS {
        let value = db.get(sled_key("synced", n)).unwrap();
        assert_eq!(value.as_deref(), Some(&sled_value("synced", n)[..]), "fsync'd key {n} lost");
    }
    for batch in ["flushed", "memory"] {
        let survivors = db.scan_prefix(format!("{batch}/")).count();
        assert_eq!(survivors, 0, "{survivors} keys of the {batch} batch survived though nothing fsync'd them");
    }
    // The reopened database keeps working on the filesystem.
    db.insert(b"after the cut", b"works").unwrap();
    db.flush().unwrap();
}
