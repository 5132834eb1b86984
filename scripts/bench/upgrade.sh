#!/usr/bin/env bash
# Upgrade benchmark: how long it takes to roll a three-manager, three-agent
# cluster from the previous release (RELEASES.md, built by
# scripts/build-release.sh) to this build, one process at a time, while a
# service behind the agents' proxies serves a request loop. The baseline,
# run in the same script, is the same roll from this build to this build:
# what restarting every process one at a time costs by itself. Prints each
# run and the medians with the ratio upgrade/baseline. The roll is the
# cluster test `upgrade::a_service_serves_every_request_while_managers_and_
# agents_roll_to_this_build`, which also checks that no request failed and
# no container was replaced; it needs Docker.
#
# Usage: scripts/bench/upgrade.sh
#   RUNS=3     runs of each (median over them)
#   AGENTS=3   agents in the cluster
set -euo pipefail

RUNS=${RUNS:-3}
AGENTS=${AGENTS:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

scripts/build-test-image.sh >/dev/null
cargo build --quiet -p berth-cli
PREVIOUS=$(scripts/build-release.sh previous)
CURRENT=$TARGET_DIR/debug/berth
TEST=a_service_serves_every_request_while_managers_and_agents_roll_to_this_build

# roll FROM_BIN: one roll; prints its milliseconds.
roll() {
    local out
    out=$(BERTH_PREVIOUS_BIN=$1 BERTH_UPGRADE_AGENTS=$AGENTS \
        cargo nextest run -p cluster-tests --test upgrade -E "test($TEST)" --no-capture 2>&1) || {
        echo "$out" | tail -n 40 >&2
        log "the roll failed"
        exit 1
    }
    grep -o 'rolled 3 managers and [0-9]* agents in [0-9]* ms; [0-9]* requests served, [0-9]* failed' <<<"$out" \
        | tee /dev/stderr | awk '{ print $8 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

upgrade=() baseline=()
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS: previous release -> this build"
    upgrade+=("$(roll "$PREVIOUS")")
    log "run $run/$RUNS: this build -> this build (baseline)"
    baseline+=("$(roll "$CURRENT")")
done
up=$(printf '%s\n' "${upgrade[@]}" | median)
base=$(printf '%s\n' "${baseline[@]}" | median)
echo
echo "rolling 3 managers and $AGENTS agents one at a time under a request loop; median of $RUNS runs"
echo "previous release -> this build: ${up} ms (runs: ${upgrade[*]})"
echo "this build -> this build:       ${base} ms (runs: ${baseline[*]})"
awk -v u="$up" -v b="$base" 'BEGIN { printf "ratio upgrade/baseline: %.2f\n", u / b }'
