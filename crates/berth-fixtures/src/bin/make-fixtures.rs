//! Writes every sample of `berth_fixtures::samples()` to
//! `fixtures/v<FORMAT_VERSION>/<name>` at the workspace root, printing what
//! it wrote. Run once per new format version (`scripts/make-fixtures.sh`):
//! it refuses to touch a folder that exists, since the fixtures of a
//! format stand for data already written in it. `--missing` adds only the
//! samples the folder lacks (a new command kind within the format) and
//! keeps every existing file; `--force` replaces the whole folder.
//!
//! Usage: `make-fixtures [--force | --missing] [--root <workspace root>]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("make-fixtures: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut force = false;
    let mut missing_only = false;
    // The workspace this binary was built from: two levels up from the crate.
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--force" => force = true,
            "--missing" => missing_only = true,
            "--root" => root = args.next().map(PathBuf::from).ok_or("--root needs a directory")?,
            "-h" | "--help" => {
                println!("usage: make-fixtures [--force | --missing] [--root <workspace root>]");
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown argument '{other}' (usage: make-fixtures [--force | --missing] [--root DIR])"
                ))
            }
        }
    }
    if force && missing_only {
        return Err("--force replaces the folder and --missing keeps it: pass one of them".into());
    }
    let root = root.canonicalize().map_err(|e| format!("workspace root {}: {e}", root.display()))?;
    let dir = root.join("fixtures").join(format!("v{}", berth_codec::FORMAT_VERSION));
    if dir.exists() && !missing_only {
        if !force {
            return Err(format!(
                "{} exists: the fixtures of format {} are written once and kept; pass --missing to add \
                 only the samples it lacks, or --force to replace them all",
                dir.display(),
                berth_codec::FORMAT_VERSION
            ));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
        println!("removed {}", dir.display());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let samples = berth_fixtures::samples();
    let (mut written, mut kept, mut total) = (0, 0, 0);
    for sample in &samples {
        let path = dir.join(&sample.name);
        if missing_only && path.exists() {
            kept += 1;
            continue;
        }
        std::fs::write(&path, &sample.bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {:>7} bytes  {}", sample.bytes.len(), path.display());
        written += 1;
        total += sample.bytes.len();
    }
    println!("{written} samples written ({total} bytes), {kept} already there and kept, in {}", dir.display());
    Ok(())
}
