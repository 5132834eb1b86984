#!/usr/bin/env bash
# Builds the `berth` binary of a past release, from the git revision that
# RELEASES.md lists for it, and prints the binary's path. Builds are cached
# (per release, in BERTH_RELEASE_CACHE, default ~/.cache/berth-releases), so
# the upgrade tests pay for a release's build once per machine.
#
#   scripts/build-release.sh 0.1.0        # prints .../0.1.0/berth
#   scripts/build-release.sh previous     # the newest release listed
#   BERTH_RELEASE_CACHE=/tmp/releases scripts/build-release.sh 0.1.0
set -euo pipefail

version=${1:?usage: scripts/build-release.sh VERSION}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${BERTH_RELEASE_CACHE:-$HOME/.cache/berth-releases}

if [[ $version == previous ]]; then
    # The last row of the release table with a revision: the newest release.
    version=$(awk -F'|' '$3 ~ /^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]+ *$/ { gsub(/ /, "", $2); v = $2 } END { print v }' "$root/RELEASES.md")
    [[ -n $version ]] || { echo "build-release.sh: RELEASES.md lists no release" >&2; exit 2; }
fi

# The row "| VERSION | REVISION | ..." of the release table.
rev=$(awk -F'|' -v v="$version" '$2 ~ "^ *"v" *$" { gsub(/ /, "", $3); print $3 }' "$root/RELEASES.md")
if [[ ! $rev =~ ^[0-9a-f]{7,40}$ ]]; then
    echo "build-release.sh: RELEASES.md lists no git revision for release $version" >&2
    exit 2
fi

out=$cache/$version
if [[ -x $out/berth && $(cat "$out/revision" 2>/dev/null) == "$rev" ]]; then
    echo "$out/berth"
    exit 0
fi
# A plain copy of the release's tree (git archive), not a worktree: the
# cache outlives the clone it was made from.
src=$out/src
rm -rf "$src"
mkdir -p "$src"
git -C "$root" archive "$rev" | tar -x -C "$src"
echo "building berth $version ($rev)" >&2
(cd "$src" && CARGO_TARGET_DIR=$out/target cargo build --quiet -p berth-cli --bin berth) >&2
cp "$out/target/debug/berth" "$out/berth"
echo "$rev" >"$out/revision"
echo "$out/berth"
