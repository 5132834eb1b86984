#!/usr/bin/env bash
# Control-plane benchmark: a 3-manager berth cluster against a 3-member etcd
# cluster, both on loopback on this machine, under the same load from
# berth-bench. For each run it starts a fresh cluster of each system, measures
# committed writes/s and p50/p99 latency from 1 and from 64 clients, with the
# CPU time the servers and the load generator spent per write, then a no-op
# gRPC call to berth's managers under the same load (the floor under a
# write), then SIGKILLs the leader and times until the first write the new
# leader acknowledges; at the end it prints the medians and the ratio
# berth/etcd.
#
# Both systems fsync every write (batch) before acknowledging it: etcd's WAL
# does at its defaults, and berth fdatasyncs sled's files after every
# group-commit flush. Each run measures both systems twice, once per
# setting of the Raft timings, and prints a table per setting:
#   berth's timing: heartbeat 50 ms, election timeout 100 ms randomised up
#     to 200 ms (berth's defaults). etcd randomises its election timeout
#     from T to 2T as berth does, so it runs with --election-timeout 100,
#     and with --heartbeat-interval 20: etcd refuses an election timeout
#     under 5 heartbeats, so 20 ms is the slowest heartbeat it accepts
#     with 100 ms.
#   etcd's timing: heartbeat 100 ms, election timeout 1,000 ms randomised
#     up to 2,000 ms (etcd's defaults); berth runs with the same.
# Installs Debian's etcd-server with apt-get if `etcd` is missing.
#
# Usage: scripts/bench/control-plane.sh
#   RUNS=3          runs per system (median over them)
#   DURATION=5      seconds per throughput measurement
#   CLIENTS=64      the concurrent client count (1 client is always measured)
#   RETRY_MS=200    failover client's pause after a failed write
#   REQUEST_TIMEOUT_MS=1000  failover client's timeout for one write
#   SYSTEMS="etcd berth"  which systems to measure (e.g. SYSTEMS=etcd)
#   SETTINGS="berth etcd" whose Raft timings to run both systems with
#   BERTH_BIN=PATH  measure this berth binary instead of building one (for
#                   a before/after comparison with an older build)
#   BASE_PORT=23000 first of the loopback ports used (BASE_PORT..+1999)
#   RESULTS=FILE    also keep the raw JSON lines there
#   KEEP_TMP=1      keep data dirs and logs instead of removing them
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-64}
RETRY_MS=${RETRY_MS:-200}
REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS:-1000}
SYSTEMS=${SYSTEMS:-"etcd berth"}
SETTINGS=${SETTINGS:-"berth etcd"}
BASE_PORT=${BASE_PORT:-23000}
# A cluster that has no agreed leader by then is reported as broken.
READY_TIMEOUT_SECS=60
HOST=127.0.0.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH=${BERTH_BIN:-$TARGET_DIR/release/berth}
BENCH=$TARGET_DIR/release/berth-bench

TMP=$(mktemp -d -t berth-bench.XXXXXX)
RESULTS_FILE=$TMP/results.jsonl
: >"$RESULTS_FILE"
PIDS=()
declare -A ENDPOINT_PID

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Stops every process this script started and waits, with a deadline, until
# they are gone so the next cluster can bind the same ports. The servers are
# disowned when started (so bash does not print a "Killed" notice when
# failover kills one), hence the kill -0 poll instead of `wait`.
STOP_TIMEOUT_SECS=10
stop_all() {
    local pid deadline=$((SECONDS + STOP_TIMEOUT_SECS))
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS > deadline)); then
                log "process $pid still alive after kill -9"
                break
            fi
            sleep 0.05
        done
    done
    PIDS=()
}

# start_server ENDPOINT LOG COMMAND...: runs a cluster member in the
# background and records its pid for the endpoint it serves.
start_server() {
    local endpoint=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    local pid=$!
    disown "$pid"
    PIDS+=("$pid")
    ENDPOINT_PID[$endpoint]=$pid
}

cleanup() {
    local status=$?
    stop_all
    if [[ $status -ne 0 ]]; then
        local f
        for f in "$TMP"/*/*.log; do
            [[ -f $f ]] || continue
            echo "--- last lines of $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if [[ -n ${RESULTS:-} ]]; then cp "$RESULTS_FILE" "$RESULTS"; fi
    if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_etcd() {
    if command -v etcd >/dev/null; then return; fi
    log "installing etcd-server with apt-get"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2
}

build() {
    local packages=(-p berth-bench)
    if [[ " $SYSTEMS " == *" berth "* && -z ${BERTH_BIN:-} ]]; then packages+=(-p berth-cli); fi
    log "building ${packages[*]} (release)"
    (cd "$ROOT" && cargo build --release -q "${packages[@]}") >&2
}

TICKS_PER_SEC=$(getconf CLK_TCK)

# cpu_ticks PID...: the user and system CPU time the processes have used.
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}

# with_cpu LINE SERVER_TICKS CLIENT_TIMES: the throughput JSON line with the
# CPU time spent per acknowledged write by the servers together and by the
# load generator (CLIENT_TIMES: its user and system seconds).
with_cpu() {
    local writes
    writes=$(grep -o '"writes":[0-9]*' <<<"$1" | cut -d: -f2)
    awk -v line="$1" -v ticks="$2" -v hz="$TICKS_PER_SEC" -v times="$3" -v writes="${writes:-0}" 'BEGIN {
        split(times, t, " ")
        if (writes > 0) {
            sub(/}$/, sprintf(",\"server_cpu_us_per_write\":%.1f,\"client_cpu_us_per_write\":%.1f}",
                ticks / hz * 1e6 / writes, (t[1] + t[2]) * 1e6 / writes), line)
        }
        print line
    }'
}

# throughput SYSTEM ORDERED_ENDPOINTS CLIENTS ENDPOINT...: one throughput
# run, recorded with the CPU time the servers (ENDPOINT...) and the load
# generator spent on it.
throughput() {
    local system=$1 ordered=$2 clients=$3 e before after times line servers=()
    shift 3
    for e in "$@"; do servers+=("${ENDPOINT_PID[$e]}"); done
    before=$(cpu_ticks "${servers[@]}")
    times=$({
        TIMEFORMAT='%U %S'
        time "$BENCH" throughput --system "$system" --endpoints "$ordered" \
            --clients "$clients" --duration-secs "$DURATION" >"$TMP/line"
    } 2>&1)
    after=$(cpu_ticks "${servers[@]}")
    line=$(with_cpu "$(cat "$TMP/line")" $((after - before)) "$times")
    record "$line"
}

# record LINE: keeps a result line, tagged with the current setting.
record() {
    local line="{\"setting\":\"$SETTING_LABEL\",${1#\{}"
    log "$line"
    echo "$line" >>"$RESULTS_FILE"
}

# Raft timing flags for each system under each setting (see the header).
timing_flags() {
    local system=$1 setting=$2
    case "$system/$setting" in
        berth/berth) ;;
        berth/etcd) echo "--heartbeat-ms 100 --election-timeout-min-ms 1000 --election-timeout-max-ms 2000" ;;
        etcd/berth) echo "--heartbeat-interval 20 --election-timeout 100" ;;
        etcd/etcd) ;;
    esac
}

setting_label() {
    case "$1" in
        berth) echo "at berth's timing (heartbeat 50 ms berth / 20 ms etcd, election timeout 100-200 ms)" ;;
        etcd) echo "at etcd's timing (heartbeat 100 ms, election timeout 1,000-2,000 ms)" ;;
    esac
}

# measure SYSTEM ENDPOINT... : throughput at 1 and $CLIENTS clients,
# then failover; ENDPOINT_PID maps each endpoint to its process. Endpoints
# are ordered leader first, so the single client talks to the leader and the
# failover client sees its connection die.
measure() {
    local system=$1
    shift
    local all leader ordered e kind line
    all=$(IFS=,; echo "$*")
    leader=$("$BENCH" leader --system "$system" --endpoints "$all" --wait-secs "$READY_TIMEOUT_SECS")
    ordered=$leader
    for e in "$@"; do [[ $e == "$leader" ]] || ordered+=",$e"; done
    log "$system leader is $leader (pid ${ENDPOINT_PID[$leader]})"

    local clients kinds=("$system")
    # berth's managers also answer a no-op call: the floor under a write.
    if [[ $system == berth ]]; then kinds+=(berth-noop); fi
    for kind in "${kinds[@]}"; do
        for clients in 1 "$CLIENTS"; do
            throughput "$kind" "$ordered" "$clients" "$@"
        done
    done
    line=$("$BENCH" failover --system "$system" --endpoints "$ordered" \
        --kill-pid "${ENDPOINT_PID[$leader]}" --retry-ms "$RETRY_MS" \
        --request-timeout-ms "$REQUEST_TIMEOUT_MS")
    record "$line"
}

run_etcd() {
    local run=$1 setting=$2
    local dir=$TMP/etcd-$run-$setting i cluster="" endpoints=() timing
    read -ra timing <<<"$(timing_flags etcd "$setting")"
    mkdir -p "$dir"
    for i in 1 2 3; do
        cluster+="${cluster:+,}m$i=http://$HOST:$((BASE_PORT + 100 * i + 80))"
    done
    for i in 1 2 3; do
        local client_port=$((BASE_PORT + 100 * i + 79)) peer_port=$((BASE_PORT + 100 * i + 80))
        start_server "$HOST:$client_port" "$dir/m$i.log" \
            etcd --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "http://$HOST:$client_port" \
            --advertise-client-urls "http://$HOST:$client_port" \
            --listen-peer-urls "http://$HOST:$peer_port" \
            --initial-advertise-peer-urls "http://$HOST:$peer_port" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "berth-bench-$run" "${timing[@]}"
        endpoints+=("$HOST:$client_port")
    done
    measure etcd "${endpoints[@]}"
    stop_all
    rm -rf "$dir"/m?
}

run_berth() {
    local run=$1 setting=$2
    local dir=$TMP/berth-$run-$setting i token endpoints=() timing
    read -ra timing <<<"$(timing_flags berth "$setting")"
    mkdir -p "$dir"
    for i in 1 2 3; do endpoints+=("$HOST:$((BASE_PORT + 1000 + i))"); done

    start_server "${endpoints[0]}" "$dir/m1.log" \
        "$BERTH" manager init --data-dir "$dir/m1" --listen "${endpoints[0]}" "${timing[@]}"
    "$BENCH" leader --system berth --endpoints "${endpoints[0]}" --wait-secs "$READY_TIMEOUT_SECS" >/dev/null
    token=$("$BERTH" join-token manager -q --manager "${endpoints[0]}")
    for i in 2 3; do
        start_server "${endpoints[i - 1]}" "$dir/m$i.log" \
            "$BERTH" manager join --peer "${endpoints[0]}" --token "$token" \
            --data-dir "$dir/m$i" --listen "${endpoints[i - 1]}" "${timing[@]}"
    done
    measure berth "${endpoints[@]}"
    stop_all
    rm -rf "$dir"/m?
}

main() {
    local run system setting
    for system in $SYSTEMS; do
        [[ $system == etcd || $system == berth ]] || { log "SYSTEMS: unknown system '$system', expected etcd and/or berth"; exit 2; }
    done
    for setting in $SETTINGS; do
        [[ $setting == etcd || $setting == berth ]] || { log "SETTINGS: unknown setting '$setting', expected berth and/or etcd"; exit 2; }
    done
    install_etcd
    build
    for run in $(seq 1 "$RUNS"); do
        for setting in $SETTINGS; do
            SETTING_LABEL=$(setting_label "$setting")
            for system in $SYSTEMS; do
                log "run $run/$RUNS: $system $SETTING_LABEL"
                "run_$system" "$run" "$setting"
            done
        done
    done
    echo
    echo "control plane on loopback, 3 members each; median of $RUNS runs," \
        "${DURATION} s per throughput run, failover client retrying every $RETRY_MS ms" \
        "with a $REQUEST_TIMEOUT_MS ms request timeout"
    "$BENCH" report "$RESULTS_FILE"
}

main "$@"
