//! The format fixtures: every file under `fixtures/v*/` at the workspace
//! root must still read with the current code, and the folder of the
//! current format must hold a sample of every record `samples()` makes.
//! A failure here means a change broke reading data that clusters already
//! hold: make the change readable (ARCHITECTURE.md, *Formats and
//! versions*) rather than edit or regenerate the fixtures.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use berth_codec::{CodecError, FORMAT_VERSION, OLDEST_READABLE_FORMAT};
use berth_core::COMMAND_KINDS;
use berth_fixtures::{decode_sample, encoding_of, samples, Encoding};

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Every `fixtures/v<N>` folder with its format number, oldest first.
/// Fails loudly when there is none: a missing folder must not pass as
/// "nothing to check".
fn folders() -> Vec<(u8, PathBuf)> {
    let root = fixtures_root();
    let entries = fs::read_dir(&root).unwrap_or_else(|e| {
        panic!("no fixtures folder at {}: {e}; write one with scripts/make-fixtures.sh and commit it", root.display())
    });
    let mut folders: Vec<(u8, PathBuf)> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display())).path())
        .filter(|path| path.is_dir())
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let format = name.strip_prefix('v').and_then(|n| n.parse().ok());
            let format = format.unwrap_or_else(|| panic!("{}: expected only v<format> folders", path.display()));
            (format, path)
        })
        .collect();
    folders.sort();
    assert!(!folders.is_empty(), "no v<format> folder in {}: run scripts/make-fixtures.sh", root.display());
    folders
}

/// The files of a fixtures folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path())
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

fn current_folder() -> PathBuf {
    let dir = fixtures_root().join(format!("v{FORMAT_VERSION}"));
    assert!(
        dir.is_dir(),
        "no fixtures of the current format {FORMAT_VERSION} at {}: a new format needs its fixtures \
         (scripts/make-fixtures.sh), committed with the change that makes it",
        dir.display()
    );
    dir
}

#[test]
fn every_fixture_of_every_format_reads_with_the_current_code() {
    let mut failures = Vec::new();
    let mut read = 0;
    for (format, dir) in folders() {
        let files = files(&dir);
        assert!(!files.is_empty(), "{} holds no fixtures", dir.display());
        for (name, bytes) in files {
            read += 1;
            if encoding_of(&name) == Encoding::Versioned {
                if let Ok(found) = berth_codec::format_of(&bytes) {
                    if found != format {
                        failures.push(format!("fixtures/v{format}/{name}: its envelope says format {found}"));
                    }
                }
            }
            if let Err(e) = decode_sample(&name, &bytes) {
                failures.push(format!("fixtures/v{format}/{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {read} fixtures do not read with this build:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_folder_is_a_format_this_build_reads() {
    for (format, dir) in folders() {
        assert!(
            (OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&format),
            "{} holds format {format}, but this build reads formats {OLDEST_READABLE_FORMAT} to \
             {FORMAT_VERSION}: clusters holding format {format} data could not upgrade to it",
            dir.display()
        );
    }
}

#[test]
fn the_current_format_has_a_fixture_of_every_command_kind_and_every_sample() {
    let present: BTreeSet<String> = files(&current_folder()).into_iter().map(|(name, _)| name).collect();
    let mut wanted: BTreeSet<String> = COMMAND_KINDS.iter().map(|kind| format!("entry-command-{kind}.bin")).collect();
    wanted.extend(samples().into_iter().map(|sample| sample.name));
    let missing: Vec<&String> = wanted.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "fixtures/v{FORMAT_VERSION} has no {missing:#?}: add them with `scripts/make-fixtures.sh --missing` \
         (it keeps the files already there) and commit them"
    );
}

/// What this build writes reads back too: the samples themselves, before
/// any of them is a file.
#[test]
fn every_sample_this_build_writes_reads_back() {
    let samples = samples();
    let failures: Vec<String> = samples
        .iter()
        .filter_map(|s| decode_sample(&s.name, &s.bytes).err().map(|e| format!("{}: {e}", s.name)))
        .collect();
    assert!(failures.is_empty(), "samples that do not read back:\n{}", failures.join("\n"));
    let kinds = samples.iter().filter(|s| s.name.starts_with("entry-command-")).count();
    assert_eq!(kinds, COMMAND_KINDS.len(), "one command entry per kind");
}

/// A fixture is data an older build wrote; this build need not write the
/// same bytes (a hash map's order, a field since added), only read it. So
/// the bytes are compared for the record only, never asserted equal.
#[test]
fn a_fixture_need_not_be_the_bytes_this_build_writes() {
    let fixtures = files(&current_folder());
    let differing: Vec<&str> = samples()
        .iter()
        .filter_map(|sample| {
            let fixture = fixtures.iter().find(|(name, _)| *name == sample.name)?;
            (fixture.1 != sample.bytes).then_some(fixture.0.as_str())
        })
        .collect();
    if !differing.is_empty() {
        println!("fixtures/v{FORMAT_VERSION} files whose bytes this build writes differently (fine): {differing:?}");
    }
}

/// What the fixture test says when a format stops being readable: each
/// versioned fixture, its envelope set to a format this build does not
/// read, is refused with `UnreadableFormat` naming that format.
#[test]
fn a_fixture_in_a_format_this_build_does_not_read_is_refused_as_unreadable() {
    let unknown: Vec<u8> =
        [OLDEST_READABLE_FORMAT.checked_sub(1), FORMAT_VERSION.checked_add(1)].into_iter().flatten().collect();
    let mut checked = 0;
    for (name, bytes) in files(&current_folder()) {
        if encoding_of(&name) != Encoding::Versioned {
            continue;
        }
        for &format in &unknown {
            let mut flipped = bytes.clone();
            flipped[1] = format;
            let expected = CodecError::UnreadableFormat { found: format };
            assert_eq!(berth_codec::format_of(&flipped), Err(expected.clone()), "{name} as format {format}");
            let error = decode_sample(&name, &flipped)
                .err()
                .unwrap_or_else(|| panic!("{name} in format {format} was read by a build that cannot read it"));
            assert!(error.contains(&expected.to_string()), "{name} as format {format}: {error}");
            let why = if format > FORMAT_VERSION { "newer berth" } else { "too old to migrate" };
            assert!(error.contains(why), "{name} as format {format}: {error}");
        }
        checked += 1;
    }
    assert!(checked > 0, "no versioned fixture to check in fixtures/v{FORMAT_VERSION}");
}
