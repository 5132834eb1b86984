#!/usr/bin/env bash
# Runs berth's whole test suite: formatting, lints, unit and property
# tests, openraft's storage suite, real-Docker tests, the multi-process
# cluster tests and the power-loss tests (on a FUSE filesystem). This is
# what CI runs (.ci/run).
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/build-test-image.sh ]; then
    scripts/build-test-image.sh
fi
# The power-loss tests mount a FUSE filesystem through fusermount3.
if ! command -v fusermount3 >/dev/null; then
    echo "installing fuse3 (fusermount3) with apt-get" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q fuse3 >&2
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The cluster tests start the real `berth` binary.
cargo build --quiet -p berth-cli
# The upgrade tests start the previous release too: built from its revision
# in RELEASES.md once per machine (cached under ~/.cache/berth-releases).
BERTH_PREVIOUS_BIN=$(scripts/build-release.sh previous)
export BERTH_PREVIOUS_BIN
cargo nextest run --workspace --no-fail-fast
