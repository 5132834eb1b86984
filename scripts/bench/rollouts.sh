#!/usr/bin/env bash
# Rolling redeploy benchmark on this machine's Docker engine: how long it
# takes to replace every container of a 50-replica service one at a time,
# on a one-host berth (`berth up`), `berth service redeploy` with
# --update-order stop-first and then start-first; beside a plain loop of
# `docker stop -t 0 C && docker run -d ...` over 50 containers, and Docker
# Swarm's `docker service update --force` with stop-first and start-first.
# Every system runs the same local image and a command that exits at once
# on SIGTERM, so no grace period is waited out. Prints every raw figure on
# stderr as it is measured, splits each rollout into per-slot phases read
# from the engine's event stream, and ends with medians and ratios.
#
# Swarm mode is switched on for the Swarm phase (`docker swarm init`) and
# off again at the end (`docker swarm leave --force`); when the engine is
# already in a swarm, or cannot start one, the Swarm columns say n/a.
#
# Usage: scripts/bench/rollouts.sh
#   RUNS=2            rollouts per system and order (median over them)
#   REPLICAS=50       containers per service / in the docker loop
#   SYSTEMS="berth docker swarm"  which columns to measure
#   BERTH_PORT=25792  loopback port of the benchmark's `berth up`
#   BERTH_RUST_LOG=   RUST_LOG for `berth up` only, e.g. debug (costs CPU)
#   BUILD=0           use target/release/berth as it is, without cargo build
#   RESULTS=FILE      also keep the raw results (METRIC SYSTEM VALUE lines)
#   KEEP_TMP=1        keep berth's data dir and log, event logs, per-slot phases
set -euo pipefail
# `x=$(f)` must fail when f fails part-way, not carry on with half a figure.
shopt -s inherit_errexit

RUNS=${RUNS:-2}
REPLICAS=${REPLICAS:-50}
SYSTEMS=${SYSTEMS:-"berth docker swarm"}
BERTH_PORT=${BERTH_PORT:-25792}
BERTH_RUST_LOG=${BERTH_RUST_LOG:-}
BUILD=${BUILD:-1}
HOST=127.0.0.1
DOCKER_SOCKET=${DOCKER_SOCKET:-/var/run/docker.sock}
IMAGE=berth-test/busybox:latest
# busybox `sh` as PID 1 would ignore SIGTERM; the trap makes it exit at
# once, so every system's stop is the engine's kill, not a grace period.
COMMAND=(sh -c "trap 'exit 0' TERM; sleep 3600 & wait")
BERTH_SERVICE=roll50
SWARM_SERVICE=roll50-swarm
# One slot at a time, no pause, no watching after a task runs (1 ms for
# Swarm, as in the issue's command: the Docker CLI waits out the monitor
# after convergence, so it must be next to nothing).
UPDATE_FLAGS=(--update-parallelism 1 --update-delay 0s)
BERTH_MONITOR=0s
SWARM_MONITOR=1ms
# Deadlines. A stuck deployment, rollout or cleanup ends the measurement
# with the logs instead of hanging; generous because the engine is shared
# (Swarm's stop-first rollout of 50 takes about 80 s here).
READY_TIMEOUT_SECS=60
CONVERGE_TIMEOUT_SECS=300
ROLLOUT_TIMEOUT_SECS=600
EVENTS_TIMEOUT_SECS=60
CLEANUP_TIMEOUT_SECS=300
STOP_TIMEOUT_SECS=30
# A timed-out `docker service update` gets this long after SIGTERM.
KILL_AFTER_SECS=10
# Pause between two looks at the engine or a log while waiting for a
# condition (never inside a timed section, except Swarm's 50/50 wait
# before a rollout, which is not timed).
POLL_SECS=0.05
# The aims from the issue, to print beside the figures.
AIM_STOP_FIRST_RATIO_TO_LOOP=1.0
AIM_START_FIRST_SECS=10

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH=$TARGET_DIR/release/berth
ADDR=$HOST:$BERTH_PORT

# No dot in the tag: container names are split at dots to find the slot.
TMP=$(mktemp -d -t berth-bench-rollouts-XXXXXX)
TAG=$(basename "$TMP")
# Every container this script creates carries RUN_LABEL (for cleanup) and a
# MEASURE_LABEL naming its measurement (for reading its events).
RUN_LABEL_KEY=berth-bench.run
MEASURE_LABEL_KEY=berth-bench.measure
RESULTS_FILE=$TMP/results.txt
: >"$RESULTS_FILE"
BERTH_LOG=$TMP/berth-up.log
BERTH_PID=""
SWARM_OURS=0
SWARM_NOTE=""
LOAD_AT_START=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# The 1, 5 and 15 minute load averages: on a shared machine they say how
# much of its CPU the figures competed for.
load_average() { cut -d' ' -f1-3 /proc/loadavg; }
now_ns() { date +%s%N; }
# `docker events --since` takes seconds with a fraction.
ns_to_since() { echo "${1:0:${#1}-9}.${1: -9}"; }
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

record() {
    echo "$1 $2 $3" >>"$RESULTS_FILE"
    log "result: $1 $2 $3"
}

# wait_until DESCRIPTION TIMEOUT_SECS COMMAND...: polls COMMAND until it
# succeeds; fails naming what it waited for once the deadline passes.
wait_until() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "gave up after ${timeout} s waiting for $what"
            return 1
        fi
        sleep "$POLL_SECS"
    done
}

containers_with() { docker ps -aq --filter "label=$1"; }
no_containers_with() { [[ -z $(containers_with "$1") ]]; }

# remove_containers LABEL: force-removes every container carrying LABEL.
remove_containers() {
    local ids
    ids=$(containers_with "$1")
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086 # one id per word
        docker rm -f $ids >/dev/null
    fi
    wait_until "containers with $1 to be gone" "$CLEANUP_TIMEOUT_SECS" no_containers_with "$1"
}

# ---------------------------------------------------------------- events

# Event watchers: `docker events --since T` replays what the engine saw
# since T before streaming, so one started just before a rollout misses
# nothing even if it connects after the rollout began.
WATCH_PID=""
start_watch() {
    local file=$1 since_ns=$2 measure=$3
    : >"$file"
    docker events --since "$(ns_to_since "$since_ns")" --filter type=container \
        --filter event=kill --filter event=die --filter event=create --filter event=start \
        --filter "label=$MEASURE_LABEL_KEY=$measure" \
        --format '{{.TimeNano}} {{.Action}} {{.ID}} {{.Actor.Attributes.name}}' >"$file" &
    WATCH_PID=$!
}
stop_watch() {
    if [[ -n $WATCH_PID ]]; then
        kill "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
        WATCH_PID=""
    fi
}
# The watcher streams behind the engine: a rollout is fully seen once
# REPLICAS containers were created and started and REPLICAS died.
distinct_with_action() { awk -v a="$2" '$2 == a { seen[$3] = 1 } END { n = 0; for (id in seen) n++; print n }' "$1"; }
rollout_seen() {
    (($(distinct_with_action "$1" create) >= REPLICAS)) &&
        (($(distinct_with_action "$1" start) >= REPLICAS)) &&
        (($(distinct_with_action "$1" die) >= REPLICAS))
}

# slot_events FILE: one line per replaced slot, ordered by the new
# container's start: START SLOT KILL DIE CREATE, in ns since the epoch,
# where KILL and DIE are the old container's (the one created before the
# watch began) and CREATE and START the new one's. Container names end in
# NAME.SLOT.SUFFIX for berth (`berth-` prefixed), Swarm and the loop alike.
slot_events() {
    awk '
        { key = $3 SUBSEP $2
          if (!(key in at)) at[key] = $1
          split($4, part, "."); slot[$3] = part[2] }
        END {
            for (id in slot) {
                s = slot[id]
                if ((id SUBSEP "create") in at) {
                    if (!(s in fresh) || at[id, "create"] < at[fresh[s], "create"]) fresh[s] = id
                } else if ((id SUBSEP "kill") in at && (id SUBSEP "die") in at) {
                    old[s] = id
                }
            }
            for (s in fresh) {
                if (!(s in old) || !((fresh[s] SUBSEP "start") in at)) continue
                print at[fresh[s], "start"], s, at[old[s], "kill"], at[old[s], "die"], at[fresh[s], "create"]
            }
        }' "$1" | sort -n
}

# slot_phases FILE: per replaced slot, the seconds of each phase as
# "PHASE SECONDS" lines; PHASE_ROWS says what each one is. The engine's
# create event marks the end of the create call and its start event the
# end of the start call. A slot's period runs from one new container's
# start to the next one's: with stop-first it is start-kill-next +
# kill-die + die-start, with start-first start-create-next + create-start.
slot_phases() {
    slot_events "$1" | awk '
        function out(name, from, to) { printf "%s %.3f\n", name, (to - from) / 1e9 }
        { s[NR] = $1; k[NR] = $3; d[NR] = $4; c[NR] = $5 }
        END {
            for (i = 1; i <= NR; i++) {
                out("kill-die", k[i], d[i])
                out("die-start", d[i], s[i])
                out("die-create", d[i], c[i])
                out("create-start", c[i], s[i])
                out("start-kill", s[i], k[i])
                if (i < NR) {
                    out("period", s[i], s[i + 1])
                    out("start-kill-next", s[i], k[i + 1])
                    out("start-create-next", s[i], c[i + 1])
                }
            }
        }'
}

median_stdin() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a";
        else if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Table rows: PHASE|ORDERS|LABEL, where ORDERS says for which update
# orders the phase means something (in the other it is negative or off
# the path from one slot to the next).
PHASE_ROWS=(
    "period|stop,start|slot period: new start -> next new start"
    "start-kill-next|stop|  new start -> next old kill"
    "kill-die|stop,start|  old kill -> die (engine)"
    "die-start|stop|  old die -> new start"
    "die-create|stop|    of which die -> new create"
    "start-create-next|start|  new start -> next new create"
    "create-start|stop,start|  new create -> start"
    "start-kill|start|  new start -> old kill"
)
PHASES=()
for row in "${PHASE_ROWS[@]}"; do PHASES+=("${row%%|*}"); done

# record_rollout SYSTEM FILE T0_NS SECS: records the rollout's wall clock,
# the time to the last new container's start and the median of each phase
# over its slots; the per-slot figures stay in FILE.phases.
record_rollout() {
    local system=$1 file=$2 t0=$3 secs=$4 last slots phase
    wait_until "the engine's events of $system's rollout" "$EVENTS_TIMEOUT_SECS" rollout_seen "$file"
    stop_watch
    slot_phases "$file" >"$file.phases"
    slots=$(slot_events "$file" | wc -l)
    ((slots == REPLICAS)) || log "$system: only $slots of $REPLICAS slots had a full kill/die/create/start (see $file)"
    last=$(awk '$2 == "start" { print $1 }' "$file" | sort -n | tail -n 1)
    record rollout "$system" "$secs"
    record last-start "$system" "$(secs_between "$t0" "$last")"
    for phase in "${PHASES[@]}"; do
        record "$phase" "$system" "$(awk -v p="$phase" '$1 == p { print $2 }' "$file.phases" | median_stdin)"
    done
}

# ---------------------------------------------------------------- berth

berth_cli() { "$BERTH" --manager "$ADDR" "$@"; }
berth_up_ready() {
    kill -0 "$BERTH_PID" 2>/dev/null || { log "berth up exited early"; return 2; }
    grep -qs "berth is up" "$BERTH_LOG"
}

start_berth() {
    log "starting berth up on $ADDR (log: $BERTH_LOG)"
    if [[ -n $BERTH_RUST_LOG ]]; then
        RUST_LOG=$BERTH_RUST_LOG "$BERTH" up --data-dir "$TMP/berth-data" --listen "$ADDR" >"$BERTH_LOG" 2>&1 &
    else
        "$BERTH" up --data-dir "$TMP/berth-data" --listen "$ADDR" >"$BERTH_LOG" 2>&1 &
    fi
    BERTH_PID=$!
    wait_until "berth up to say it is up" "$READY_TIMEOUT_SECS" berth_up_ready
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }
stop_berth() {
    [[ -n $BERTH_PID ]] || return 0
    kill -TERM "$BERTH_PID" 2>/dev/null || true
    if ! wait_until "berth up to exit after SIGTERM" "$STOP_TIMEOUT_SECS" pid_gone "$BERTH_PID"; then
        kill -9 "$BERTH_PID" 2>/dev/null || true
    fi
    wait "$BERTH_PID" 2>/dev/null || true
    BERTH_PID=""
}

berth_service_gone() { ! berth_cli service inspect "$BERTH_SERVICE" >/dev/null 2>&1; }
remove_berth_service() {
    local measure=$1
    berth_cli service rm "$BERTH_SERVICE" >/dev/null
    wait_until "berth's containers of $measure to be gone" "$CLEANUP_TIMEOUT_SECS" \
        no_containers_with "$MEASURE_LABEL_KEY=$measure"
    wait_until "berth to forget $BERTH_SERVICE" "$CLEANUP_TIMEOUT_SECS" berth_service_gone
}

# berth_redeploy SYSTEM MEASURE: times `berth service redeploy` (the CLI
# returns once the rollout completed) and records it with berth's own
# figure from the CLI's summary line.
berth_redeploy() {
    local system=$1 measure=$2 file=$TMP/${1}-${2#"$TAG"-}.events err t0 t1 own
    err=$file.stderr
    t0=$(now_ns)
    start_watch "$file" "$t0" "$measure"
    if ! berth_cli service redeploy "$BERTH_SERVICE" --timeout "${ROLLOUT_TIMEOUT_SECS}s" >/dev/null 2>"$err" ||
        ! grep -q "redeploy completed" "$err"; then
        t1=$(now_ns)
        log "$system: berth service redeploy failed after $(secs_between "$t0" "$t1") s; its output:"
        tail -n 20 "$err" >&2
        return 1
    fi
    t1=$(now_ns)
    own=$(grep -oE 'updated in [0-9.]+s: redeploy completed' "$err" | grep -oE '[0-9.]+s' | tr -d s) || true
    record own-figure "$system" "${own:-n/a}"
    record_rollout "$system" "$file" "$t0" "$(secs_between "$t0" "$t1")"
}

# The update order in `service inspect --output json`, which prints one
# field a line.
berth_update_order() {
    berth_cli service inspect "$BERTH_SERVICE" --output json |
        awk '/"update": \{/ { inside = 1 } inside && !found && /"order":/ { gsub(/[",]/, "", $2); print $2; found = 1 }'
}

berth_rollouts() {
    local run=$1 measure=$TAG-berth-$1 err=$TMP/berth-create-$1.stderr order
    log "run $run/$RUNS: berth service create --replicas $REPLICAS (stop-first)"
    if ! berth_cli service create "$BERTH_SERVICE" --image "$IMAGE" --replicas "$REPLICAS" \
        "${UPDATE_FLAGS[@]}" --update-monitor "$BERTH_MONITOR" --update-order stop-first \
        --timeout "${CONVERGE_TIMEOUT_SECS}s" \
        -l "$RUN_LABEL_KEY=$TAG" -l "$MEASURE_LABEL_KEY=$measure" \
        -- "${COMMAND[@]}" >/dev/null 2>"$err"; then
        log "berth service create failed; its output:"
        tail -n 20 "$err" >&2
        return 1
    fi
    log "run $run/$RUNS: berth service redeploy, stop-first"
    berth_redeploy berth-stop "$measure"
    berth_cli service update "$BERTH_SERVICE" --update-order start-first --detach >/dev/null
    # The switch changes no task: it must not start a rollout of its own.
    order=$(berth_update_order)
    [[ $order == start-first ]] || { log "berth: the update order is '$order' after switching to start-first"; return 1; }
    log "run $run/$RUNS: berth service redeploy, start-first"
    berth_redeploy berth-start "$measure"
    remove_berth_service "$measure"
}

# ---------------------------------------------------------------- docker loop

# The loop's containers are named TAG-loop-RUN.SLOT.GENERATION, so its
# events split into slots like an orchestrator's. Its docker calls run
# without a timeout wrapper, so the figure is the bare CLI loop.
docker_loop() {
    local run=$1 measure=$TAG-loop-$1 file t0 t1 slot
    local base=$TAG-loop-$1 ids=()
    local labels=(--label "$RUN_LABEL_KEY=$TAG" --label "$MEASURE_LABEL_KEY=$measure")
    file=$TMP/loop-$run.events
    log "run $run/$RUNS: $REPLICAS x docker run -d"
    for ((slot = 1; slot <= REPLICAS; slot++)); do
        ids[slot]=$(docker run -d --name "$base.$slot.0" "${labels[@]}" "$IMAGE" "${COMMAND[@]}")
    done
    log "run $run/$RUNS: docker stop -t 0 && docker run -d, one container after the other"
    t0=$(now_ns)
    start_watch "$file" "$t0" "$measure"
    for ((slot = 1; slot <= REPLICAS; slot++)); do
        # `docker stop C && docker run ...`, as two lines so that errexit
        # catches a failed stop.
        docker stop -t 0 "${ids[slot]}" >/dev/null
        ids[slot]=$(docker run -d --name "$base.$slot.1" "${labels[@]}" "$IMAGE" "${COMMAND[@]}")
    done
    t1=$(now_ns)
    record_rollout loop "$file" "$t0" "$(secs_between "$t0" "$t1")"
    remove_containers "$MEASURE_LABEL_KEY=$measure"
    engine_floor "$run"
}

# engine_floor RUN: the least time any one-slot-at-a-time start-first
# rollout of REPLICAS containers can take on this engine: REPLICAS
# containers, created beforehand, started one after the other straight
# through the engine's API (curl on its socket, no CLI start-up), with
# nothing else running. No orchestrator can start a slot's new container
# in less than one such call.
engine_floor() {
    local run=$1 measure=$TAG-floor-$1 t0 t1 slot ids=()
    log "run $run/$RUNS: engine floor: $REPLICAS start calls one after another, containers created beforehand"
    for ((slot = 1; slot <= REPLICAS; slot++)); do
        ids[slot]=$(docker create --name "$TAG-floor-$run.$slot.0" --label "$RUN_LABEL_KEY=$TAG" \
            --label "$MEASURE_LABEL_KEY=$measure" "$IMAGE" "${COMMAND[@]}")
    done
    t0=$(now_ns)
    for ((slot = 1; slot <= REPLICAS; slot++)); do
        curl -sf --unix-socket "$DOCKER_SOCKET" -X POST "http://engine/containers/${ids[slot]}/start" >/dev/null
    done
    t1=$(now_ns)
    record rollout floor "$(secs_between "$t0" "$t1")"
    remove_containers "$MEASURE_LABEL_KEY=$measure"
}

# ---------------------------------------------------------------- swarm

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

# Switches swarm mode on, or explains in SWARM_NOTE why the Swarm columns
# stay empty. A swarm this script did not create is left alone.
swarm_init() {
    local state out
    state=$(swarm_state)
    if [[ $state != inactive ]]; then
        SWARM_NOTE="the engine's swarm state was '$state' before this script; not touching someone else's swarm"
        return 1
    fi
    if out=$(docker swarm init 2>&1) || out=$(docker swarm init --advertise-addr "$HOST" 2>&1); then
        SWARM_OURS=1
        log "swarm mode on"
        return 0
    fi
    SWARM_NOTE="docker swarm init failed: $(echo "$out" | tail -n 1)"
    return 1
}

swarm_leave() {
    if ((SWARM_OURS)); then
        docker swarm leave --force >/dev/null 2>&1 || log "docker swarm leave --force failed; leave it by hand"
        SWARM_OURS=0
        log "left the swarm"
    fi
}

swarm_replicas_running() {
    [[ $(docker service ls --filter "id=$1" --format '{{.Replicas}}') == "$REPLICAS/$REPLICAS" ]]
}
swarm_service_gone() { [[ -z $(docker service ls -q --filter "name=$SWARM_SERVICE") ]]; }
remove_swarm_service() {
    docker service rm "$SWARM_SERVICE" >/dev/null
    wait_until "Swarm service $SWARM_SERVICE to be gone" "$CLEANUP_TIMEOUT_SECS" swarm_service_gone
    wait_until "Swarm's containers of $1 to be gone" "$CLEANUP_TIMEOUT_SECS" \
        no_containers_with "$MEASURE_LABEL_KEY=$1"
}

# swarm_update SYSTEM MEASURE ORDER: times `docker service update --force`,
# which waits until the service converged (no --detach) and then for the
# update monitor (1 ms) before it returns. --no-resolve-image keeps a
# registry lookup of the local image out of the figure.
swarm_update() {
    local system=$1 measure=$2 order=$3 file=$TMP/${1}-${2#"$TAG"-}.events out t0 t1
    out=$file.output
    t0=$(now_ns)
    start_watch "$file" "$t0" "$measure"
    if ! timeout --kill-after="$KILL_AFTER_SECS" "$ROLLOUT_TIMEOUT_SECS" \
        docker service update --force --detach=false --no-resolve-image "${UPDATE_FLAGS[@]}" \
        --update-monitor "$SWARM_MONITOR" --update-order "$order" "$SWARM_SERVICE" >"$out" 2>&1; then
        t1=$(now_ns)
        log "$system: docker service update failed after $(secs_between "$t0" "$t1") s; its output:"
        tail -n 20 "$out" >&2
        return 1
    fi
    t1=$(now_ns)
    record_rollout "$system" "$file" "$t0" "$(secs_between "$t0" "$t1")"
}

swarm_rollouts() {
    local run=$1 measure=$TAG-swarm-$1 id
    log "run $run/$RUNS: docker service create --replicas $REPLICAS (stop-first)"
    id=$(docker service create --detach --quiet --no-resolve-image --name "$SWARM_SERVICE" \
        --replicas "$REPLICAS" --stop-grace-period 0s "${UPDATE_FLAGS[@]}" \
        --update-monitor "$SWARM_MONITOR" --update-order stop-first \
        --container-label "$RUN_LABEL_KEY=$TAG" --container-label "$MEASURE_LABEL_KEY=$measure" \
        "$IMAGE" "${COMMAND[@]}")
    wait_until "Swarm service $SWARM_SERVICE to reach $REPLICAS/$REPLICAS" "$CONVERGE_TIMEOUT_SECS" \
        swarm_replicas_running "$id"
    log "run $run/$RUNS: docker service update --force, stop-first"
    swarm_update swarm-stop "$measure" stop-first
    log "run $run/$RUNS: docker service update --force, start-first"
    swarm_update swarm-start "$measure" start-first
    remove_swarm_service "$measure"
}

# ---------------------------------------------------------------- driver

# attempt DESCRIPTION FUNCTION ARGS...: runs one measurement in a subshell
# with errexit on; a failure is logged, its containers removed, and the
# script goes on so the other columns still get measured.
attempt() {
    local what=$1 status=0
    shift
    set +e
    (
        set -e
        trap stop_watch EXIT
        "$@"
    )
    status=$?
    set -e
    if ((status != 0)); then
        log "FAILED: $what (exit $status); its figures are missing from the table"
        FAILURES+=("$what")
        remove_services
        remove_containers "$RUN_LABEL_KEY=$TAG" || true
    fi
    return 0
}
FAILURES=()

# Removes the benchmark's services, if any, so a failed measurement does
# not leave an orchestrator recreating containers behind the next one.
remove_services() {
    if [[ -n $BERTH_PID ]]; then
        berth_cli service rm "$BERTH_SERVICE" >/dev/null 2>&1 || true
    fi
    if ((SWARM_OURS)); then
        docker service rm "$SWARM_SERVICE" >/dev/null 2>&1 || true
    fi
}

cleanup() {
    local status=$?
    set +e
    stop_watch
    remove_services
    stop_berth
    swarm_leave
    remove_containers "$RUN_LABEL_KEY=$TAG" >/dev/null 2>&1 ||
        log "containers labelled $RUN_LABEL_KEY=$TAG may be left; docker rm -f them"
    if ((status != 0 || ${#FAILURES[@]} > 0)) && [[ -f $BERTH_LOG ]]; then
        echo "--- last lines of $BERTH_LOG" >&2
        tail -n 30 "$BERTH_LOG" >&2
    fi
    if [[ -n ${RESULTS:-} ]]; then cp "$RESULTS_FILE" "$RESULTS"; fi
    if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# median METRIC SYSTEM: of the recorded figures, or n/a when there are none.
median() {
    awk -v m="$1" -v s="$2" '$1 == m && $2 == s && $3 != "n/a" { print $3 }' "$RESULTS_FILE" | median_stdin
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}
per_slot() {
    awk -v a="$1" -v n="$REPLICAS" 'BEGIN { if (a == "n/a") print "n/a"; else printf "%.3f\n", a / n }'
}
at_most() {
    awk -v v="$1" -v aim="$2" 'BEGIN { if (v == "n/a") print "not measured"; else if (v + 0 <= aim + 0) print "met"; else print "NOT met" }'
}
below() {
    awk -v v="$1" -v aim="$2" 'BEGIN { if (v == "n/a") print "not measured"; else if (v + 0 < aim + 0) print "met"; else print "NOT met" }'
}

COLUMNS_MEASURED=(berth-stop berth-start loop swarm-stop swarm-start)

# cell METRIC SYSTEM ORDERS: one figure of the table, empty where it
# means nothing (a phase outside ORDERS, berth's own figure for others).
# The docker loop stops first.
cell() {
    local metric=$1 system=$2 orders=$3 order=stop
    [[ $system == *-start ]] && order=start
    case $metric in
        per-slot) per_slot "$(median rollout "$system")" ;;
        own-figure) if [[ $system == berth-* ]]; then median "$metric" "$system"; fi ;;
        rollout | last-start) median "$metric" "$system" ;;
        *) if [[ ,$orders, == *,$order,* ]]; then median "$metric" "$system"; fi ;;
    esac
}

report() {
    local metric row system values row_fmt bs bt lp ws wt fl
    row_fmt="%-48s %11s %11s %11s %11s %11s\n"
    echo
    echo "rolling redeploy on the local engine ($(nproc) CPUs, Docker $(docker version --format '{{.Server.Version}}')):" \
        "$REPLICAS x $IMAGE ${COMMAND[*]}; one slot at a time; medians of $RUNS run(s), seconds"
    # shellcheck disable=SC2059 # the format is the row layout above
    printf "$row_fmt" "" "berth" "berth" "docker" "swarm" "swarm"
    # shellcheck disable=SC2059
    printf "$row_fmt" "" "stop-first" "start-first" "stop+run" "stop-first" "start-first"
    for row in "rollout|-|whole rollout (command's wall clock)" "per-slot|-|per slot" \
        "own-figure|-|berth CLI's own figure" "last-start|-|last new container started (events)" \
        "${PHASE_ROWS[@]}"; do
        IFS='|' read -r metric orders label <<<"$row"
        values=()
        for system in "${COLUMNS_MEASURED[@]}"; do
            values+=("$(cell "$metric" "$system" "$orders")")
        done
        # shellcheck disable=SC2059
        printf "$row_fmt" "$label" "${values[@]}"
    done
    echo "(per-slot phases are medians over the slots, read from the engine's events)"
    echo "load average (1/5/15 min) at the start: $LOAD_AT_START; at the end: $(load_average)"
    bs=$(median rollout berth-stop)
    bt=$(median rollout berth-start)
    lp=$(median rollout loop)
    ws=$(median rollout swarm-stop)
    wt=$(median rollout swarm-start)
    echo
    echo "berth stop-first / docker loop: $(ratio "$bs" "$lp");" \
        "berth stop-first / swarm stop-first: $(ratio "$bs" "$ws");" \
        "berth start-first / swarm start-first: $(ratio "$bt" "$wt")"
    echo "aim: berth stop-first no slower than the docker loop (ratio <= $AIM_STOP_FIRST_RATIO_TO_LOOP):" \
        "$(at_most "$(ratio "$bs" "$lp")" "$AIM_STOP_FIRST_RATIO_TO_LOOP")"
    echo "aim: berth start-first under $AIM_START_FIRST_SECS s: $(below "$bt" "$AIM_START_FIRST_SECS")"
    fl=$(median rollout floor)
    if [[ $fl != n/a ]]; then
        echo "engine floor: $REPLICAS start calls one after another, nothing else running: $fl s" \
            "($(per_slot "$fl") s each); berth start-first / floor: $(ratio "$bt" "$fl")"
    fi
    if [[ -n $SWARM_NOTE ]]; then echo "note: Swarm not measured: $SWARM_NOTE"; fi
    if ((${#FAILURES[@]} > 0)); then
        echo "note: failed measurements (figures missing): ${FAILURES[*]}"
    fi
}

wants() { [[ " $SYSTEMS " == *" $1 "* ]]; }

main() {
    local system run
    for system in $SYSTEMS; do
        case $system in berth | docker | swarm) ;; *)
            log "SYSTEMS: unknown system '$system', expected some of: berth docker swarm"
            exit 2
            ;;
        esac
    done
    LOAD_AT_START=$(load_average)
    if wants berth && ((BUILD)); then
        log "building berth-cli (release)"
        (cd "$ROOT" && cargo build --release -q -p berth-cli) >&2
    fi
    "$ROOT/scripts/build-test-image.sh" >/dev/null

    if wants berth; then start_berth; fi
    # berth and the docker loop alternate within each run, so a change in
    # the machine's load hits both columns alike.
    for ((run = 1; run <= RUNS; run++)); do
        if wants berth; then attempt "berth rollouts, run $run" berth_rollouts "$run"; fi
        if wants docker; then attempt "docker loop, run $run" docker_loop "$run"; fi
    done
    stop_berth

    if wants swarm; then
        if swarm_init; then
            for ((run = 1; run <= RUNS; run++)); do
                attempt "Swarm rollouts, run $run" swarm_rollouts "$run"
            done
            swarm_leave
        else
            log "NOTE: Swarm not measured: $SWARM_NOTE"
        fi
    fi
    report
}

main "$@"
