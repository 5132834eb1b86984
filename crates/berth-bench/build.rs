//! Compiles the minimal etcd v3 client protocol in `proto/etcd_kv.proto`
//! with a vendored `protoc`, so the benchmark builds on a fresh machine and
//! needs neither a system protobuf compiler nor etcd's own sources.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);

    // Read at run time, as in berth-proto: a compile-time path would point
    // at whichever checkout first built this script.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let file = root.join("etcd_kv.proto");
    tonic_prost_build::configure().build_server(false).compile_protos(std::slice::from_ref(&file), &[root])?;
    println!("cargo:rerun-if-changed={}", file.display());
    Ok(())
}
