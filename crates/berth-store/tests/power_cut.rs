//! `SledStore::flush` on a filesystem that drops every byte not fsync'd
//! ([`berth_powercut`]): a child process writes small values and one too
//! large for a sled log segment (sled puts it in a blob file), flushes,
//! writes more without flushing and is killed; after the power cut the
//! store reopens with exactly what was flushed. Without FUSE the test
//! says why it skipped, except under CI, where it fails.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_powercut::{fuse_available, PowerCutFs};
use berth_store::kv::{KvStore, SledStore, Space};

/// Set in the child process to the store's directory.
const CHILD_DIR_ENV: &str = "BERTH_STORE_POWER_CUT_CHILD_DIR";
/// The test's own name: the child runs just this test.
const TEST_NAME: &str = "flushed_values_large_ones_too_survive_a_power_cut";
const READY_LINE: &str = "STORE-CHILD ready";
/// How long the child may take to write and flush.
const CHILD_READY_TIMEOUT_MS: u64 = 60_000;
/// Small values flushed before the cut.
const FLUSHED_KEYS: u8 = 50;
/// Far above sled 0.34's blob threshold (a quarter of its 512 KiB segment).
const LARGE_VALUE_BYTES: usize = 2 * 1024 * 1024;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn large_value() -> Vec<u8> {
    (0..LARGE_VALUE_BYTES).map(|i| (i % 251) as u8).collect()
}

/// Writes, flushes, writes more without a flush, says it is ready and
/// waits to be killed.
fn child(dir: &Path) -> ! {
    let store = SledStore::open(dir).unwrap();
    for k in 0..FLUSHED_KEYS {
        store.insert(Space::Log, &[k], format!("flushed {k}").as_bytes()).unwrap();
    }
    store.insert(Space::Meta, b"large", &large_value()).unwrap();
    store.flush().unwrap();
    store.insert(Space::Meta, b"unflushed", b"never synced").unwrap();
    println!("{READY_LINE}");
    std::thread::sleep(Duration::from_millis(CHILD_READY_TIMEOUT_MS));
    std::process::exit(1)
}

#[test]
fn flushed_values_large_ones_too_survive_a_power_cut() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
    if let Err(reason) = fuse_available() {
        assert!(!under_ci(), "FUSE is required under CI: {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("disk"), dir.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mountpoint).unwrap();
    let disk = PowerCutFs::mount(&backing, &mountpoint).unwrap();
    let store_dir = mountpoint.join("store");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, &store_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, ready) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The test harness prints "test NAME ... " before it on the same line.
            if line.ends_with(READY_LINE) {
                let _ = lines.send(());
            }
        }
    });
    let got_ready = ready.recv_timeout(Duration::from_millis(CHILD_READY_TIMEOUT_MS));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(got_ready.is_ok(), "the child never flushed (it exited with {status})");

    let dropped = disk.cut_power();
    eprintln!("the cut dropped {dropped:?}");
    let store = SledStore::open(&store_dir).unwrap();
    for k in 0..FLUSHED_KEYS {
        let value = store.get(Space::Log, &[k]).unwrap();
        assert_eq!(value.as_deref(), Some(format!("flushed {k}").as_bytes()), "flushed key {k} was lost");
    }
    let large = store.get(Space::Meta, b"large").unwrap();
    assert!(large == Some(large_value()), "the flushed large value (a sled blob) was lost or torn");
    drop(store);
    drop(disk);
}
