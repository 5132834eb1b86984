#!/usr/bin/env bash
# Runs berth's whole test suite: formatting, lints, unit and property
# tests, openraft's storage suite, real-Docker tests and the multi-process
# cluster tests. This is what CI runs (.ci/run).
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/build-test-image.sh ]; then
    scripts/build-test-image.sh
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The cluster tests start the real `berth` binary.
cargo build --quiet -p berth-cli
cargo nextest run --workspace --no-fail-fast
