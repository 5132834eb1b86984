//! `berth`: one binary that runs managers and drives a cluster through its
//! gRPC API. This file only parses the command line, runs the command and
//! turns a failure into one `error: ...` line and a non-zero exit status.

mod cli;
mod client;
mod commands;
mod output;
mod parse;
mod progress;
mod spec;
#[cfg(test)]
mod testing;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: under load a manager spends a
/// tenth of its CPU in the allocator, and mimalloc's thread-local free
/// lists cut that (measured with scripts/bench/control-plane.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
