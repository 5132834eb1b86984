#!/usr/bin/env bash
# Writes an encoded sample of every berth record format (Raft log entries of
# every command kind, vote, snapshot, manager-to-manager messages, agent
# protobuf messages) to fixtures/v<format>/ at the workspace root, with the
# current code; crates/berth-fixtures/tests/fixtures.rs then checks that every
# later build still reads them. Run it once when a new format version is made
# and commit the folder; an existing folder is never overwritten by default.
#
#   scripts/make-fixtures.sh             # write fixtures/v<current format>/
#   scripts/make-fixtures.sh --missing   # add only the samples the folder lacks
#   scripts/make-fixtures.sh --force     # replace the folder (rarely right)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exec cargo run --quiet -p berth-fixtures --bin make-fixtures -- --root "$root" "$@"
