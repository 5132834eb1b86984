//! House rules that hold for the whole workspace: every Rust file opens
//! with a `//!` paragraph saying what it is for, and crate dependencies
//! point one way (cli → manager/agent → store/scheduler/api → core/proto),
//! so each layer can be read and tested without the ones above it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    rust_files(&workspace().join("cluster-tests"), &mut files);
    assert!(files.len() > 20, "found only {} files; is the walk broken?", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! paragraph: {missing:#?}");
}

/// The layer of each crate; a crate may only depend on lower layers.
fn layers() -> BTreeMap<&'static str, u8> {
    BTreeMap::from([
        ("berth-core", 0),
        ("berth-proto", 0),
        ("berth-codec", 0),
        ("berth-powercut", 0),
        ("berth-api", 1),
        ("berth-store", 1),
        ("berth-scheduler", 1),
        ("berth-proxy", 1),
        ("berth-compose", 1),
        ("berth-manager", 2),
        ("berth-agent", 2),
        ("berth-cli", 3),
        ("berth-bench", 3),
        ("berth-fixtures", 3),
    ])
}

#[test]
fn crate_dependencies_point_one_way() {
    let layers = layers();
    let mut violations = Vec::new();
    for (krate, layer) in &layers {
        let manifest = workspace().join("crates").join(krate).join("Cargo.toml");
        let text = fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let mut in_normal_deps = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_normal_deps = line == "[dependencies]";
                continue;
            }
            if !in_normal_deps {
                continue;
            }
            let name = line.split(['.', ' ', '=']).next().unwrap_or_default();
            if let Some(dep_layer) = layers.get(name) {
                if dep_layer >= layer {
                    violations.push(format!("{krate} (layer {layer}) depends on {name} (layer {dep_layer})"));
                }
            } else if name.starts_with("berth-") {
                violations.push(format!("{krate} depends on {name}, which has no layer here"));
            }
        }
    }
    assert!(violations.is_empty(), "dependency direction broken: {violations:#?}");
}
