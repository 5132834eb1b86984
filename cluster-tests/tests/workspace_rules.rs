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
/// The workspace's packages as `cargo metadata` describes them: the
/// dependency graph as cargo resolves it, not as a manifest reads.
fn workspace_packages() -> Vec<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata: {e}"));
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("cargo metadata printed no JSON: {e}"));
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    assert!(packages.len() > 10, "cargo metadata listed only {} packages", packages.len());
    packages
}

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
    for package in workspace_packages() {
        let krate = package["name"].as_str().unwrap_or_default().to_string();
        let Some(layer) = layers.get(krate.as_str()) else {
            if krate.starts_with("berth-") {
                violations.push(format!("{krate} has no layer here"));
            }
            continue;
        };
        // Normal dependencies only: tests and build scripts may reach anywhere.
        let normal = package["dependencies"].as_array().into_iter().flatten().filter(|d| d["kind"].is_null());
        for dependency in normal {
            let name = dependency["name"].as_str().unwrap_or_default();
            match layers.get(name) {
                Some(dep_layer) if dep_layer >= layer => {
                    violations.push(format!("{krate} (layer {layer}) depends on {name} (layer {dep_layer})"))
                }
                None if name.starts_with("berth-") => {
                    violations.push(format!("{krate} depends on {name}, which has no layer here"))
                }
                _ => {}
            }
        }
    }
    assert!(violations.is_empty(), "dependency direction broken: {violations:#?}");
}
