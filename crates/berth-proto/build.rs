//! Compiles `proto/berth/v1/*.proto` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);

    // Read at run time: a build script binary can be reused for another
    // checkout of the crate (a git worktree), where a compile-time path
    // would still point at the first one's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["berth/v1/cluster.proto", "berth/v1/raft.proto", "berth/v1/dispatcher.proto"];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("berth_descriptor.bin"))
        .compile_protos(&files.map(|f| root.join(f)), std::slice::from_ref(&root))?;
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    Ok(())
}
