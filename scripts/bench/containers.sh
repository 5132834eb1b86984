#!/usr/bin/env bash
# Container benchmark on this machine's Docker engine: how long a
# 50-replica service takes to reach 50/50 running on a one-host berth
# (`berth up`), beside a plain `docker run -d` loop of 50 containers
# (sequential, and 4 in parallel) and Docker Swarm's
# `docker service create --replicas 50`, all with the same local image and
# command; then the time from `docker kill` of one container to its
# replacement's start, for berth and for Swarm (with Swarm's default 5 s
# restart delay and with --restart-delay 0s). Prints every raw figure on
# stderr as it is measured and ends with medians and ratios.
#
# Swarm mode is switched on for the Swarm phase (`docker swarm init`) and
# off again at the end (`docker swarm leave --force`); when the engine is
# already in a swarm, or cannot start one, the Swarm columns say n/a.
#
# Usage: scripts/bench/containers.sh
#   RUNS=3            convergence runs per system (median over them)
#   KILLS=5           kill->replacement measurements per system
#   REPLICAS=50       containers per service / per docker-run loop
#   PARALLEL=4        concurrent `docker run` in the parallel loop
#   SYSTEMS="berth docker swarm"  which columns to measure
#   BERTH_PORT=25791  loopback port of the benchmark's `berth up`
#   RESULTS=FILE      also keep the raw results (METRIC SYSTEM VALUE lines)
#   KEEP_TMP=1        keep berth's data dir, log and event logs
set -euo pipefail
# `x=$(f)` must fail when f fails part-way, not carry on with half a figure.
shopt -s inherit_errexit

RUNS=${RUNS:-3}
KILLS=${KILLS:-5}
REPLICAS=${REPLICAS:-50}
PARALLEL=${PARALLEL:-4}
SYSTEMS=${SYSTEMS:-"berth docker swarm"}
BERTH_PORT=${BERTH_PORT:-25791}
HOST=127.0.0.1
IMAGE=berth-test/busybox:latest
# busybox `sleep` as PID 1 ignores SIGTERM, so Swarm gets
# --stop-grace-period 0s and removal does not wait out a grace period.
COMMAND=(sleep 3600)
BERTH_SERVICE=bench50
SWARM_SERVICE=bench50-swarm
# Swarm's own default (`docker service create --help`), named so the table
# can say which delay the "default" column used.
SWARM_DEFAULT_RESTART_DELAY=5s
# Deadlines. A stuck deployment or cleanup ends the script with the logs
# instead of hanging; they are generous because the engine is shared.
READY_TIMEOUT_SECS=60
CONVERGE_TIMEOUT_SECS=300
REPLACE_TIMEOUT_SECS=60
CLEANUP_TIMEOUT_SECS=300
STOP_TIMEOUT_SECS=30
# Pause between two looks at the engine or a log while waiting for a
# condition; Swarm's "50/50 running" is read by polling, so this bounds how
# late that figure can be.
POLL_SECS=0.05
# The aims from the issue, to print beside the figures.
AIM_CONVERGE_RATIO_TO_PARALLEL_RUN=1.1
AIM_REPLACE_SECS=0.3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH=$TARGET_DIR/release/berth
ADDR=$HOST:$BERTH_PORT

TMP=$(mktemp -d -t berth-bench-containers.XXXXXX)
# Every container this script creates carries RUN_LABEL (for cleanup) and a
# MEASURE_LABEL naming its measurement (for counting its start events).
TAG=$(basename "$TMP")
RUN_LABEL_KEY=berth-bench.run
MEASURE_LABEL_KEY=berth-bench.measure
RESULTS_FILE=$TMP/results.txt
: >"$RESULTS_FILE"
BERTH_LOG=$TMP/berth-up.log
BERTH_PID=""
SWARM_OURS=0
SWARM_NOTE=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
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
running_count() { docker ps -q --filter "label=$1" --filter status=running | wc -l; }
has_running() { (($(running_count "$1") >= $2)); }

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

# Event watchers: `docker events --since T` replays what the engine saw
# since T before streaming, so one started just before an action misses
# nothing even if it connects after the action began.
WATCH_PID=""
start_watch() {
    local file=$1 since_ns=$2
    shift 2
    : >"$file"
    docker events --since "$(ns_to_since "$since_ns")" --filter type=container "$@" \
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
lines_at_least() { (($(wc -l <"$1") >= $2)); }

# last_start_secs FILE T0_NS COUNT: waits until FILE holds COUNT start
# events and prints the seconds from T0 to the COUNT-th of them.
last_start_secs() {
    local file=$1 t0=$2 count=$3 last
    wait_until "$count container start events" "$CONVERGE_TIMEOUT_SECS" lines_at_least "$file" "$count"
    last=$(awk '$2 == "start" { print $1 }' "$file" | sort -n | sed -n "${count}p")
    secs_between "$t0" "$last"
}

# ---------------------------------------------------------------- berth

berth_cli() { "$BERTH" --manager "$ADDR" "$@"; }
berth_up_ready() {
    kill -0 "$BERTH_PID" 2>/dev/null || { log "berth up exited early"; return 2; }
    grep -q "berth is up" "$BERTH_LOG"
}

start_berth() {
    log "starting berth up on $ADDR (log: $BERTH_LOG)"
    "$BERTH" up --data-dir "$TMP/berth-data" --listen "$ADDR" >"$BERTH_LOG" 2>&1 &
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

# create_berth_service MEASURE: creates the service and waits (the CLI
# does) until it reports REPLICAS/REPLICAS running; prints the CLI's
# wall-clock seconds and berth's own figure.
create_berth_service() {
    local measure=$1 err=$TMP/${1#"$TAG"-}.stderr t0 t1 own
    t0=$(now_ns)
    if ! berth_cli service create "$BERTH_SERVICE" --image "$IMAGE" --replicas "$REPLICAS" \
        --timeout "${CONVERGE_TIMEOUT_SECS}s" \
        -l "$RUN_LABEL_KEY=$TAG" -l "$MEASURE_LABEL_KEY=$measure" \
        -- "${COMMAND[@]}" >/dev/null 2>"$err"; then
        log "berth service create failed; its output:"
        tail -n 20 "$err" >&2
        return 1
    fi
    t1=$(now_ns)
    own=$(grep -oE "$REPLICAS/$REPLICAS running in [0-9.]+s" "$err" | tail -n 1 | grep -oE '[0-9.]+s$' | tr -d s) || true
    echo "$(secs_between "$t0" "$t1") ${own:-n/a}"
}

converge_berth() {
    local run=$1 measure=$TAG-berth-$1 t0 figures started
    t0=$(now_ns)
    start_watch "$TMP/${measure#"$TAG"-}.events" "$t0" --filter event=start --filter "label=$MEASURE_LABEL_KEY=$measure"
    figures=$(create_berth_service "$measure")
    started=$(last_start_secs "$TMP/${measure#"$TAG"-}.events" "$t0" "$REPLICAS")
    stop_watch
    record converge berth "${figures% *}"
    record own-figure berth "${figures#* }"
    record last-start berth "$started"
    remove_berth_service "$measure"
}

# ---------------------------------------------------------------- docker run

converge_docker() {
    local run=$1 mode=$2 measure=$TAG-$2-$1 t0 t1 started
    local labels=(--label "$RUN_LABEL_KEY=$TAG" --label "$MEASURE_LABEL_KEY=$measure")
    t0=$(now_ns)
    start_watch "$TMP/${measure#"$TAG"-}.events" "$t0" --filter event=start --filter "label=$MEASURE_LABEL_KEY=$measure"
    if [[ $mode == run-seq ]]; then
        local i
        for ((i = 0; i < REPLICAS; i++)); do
            docker run -d "${labels[@]}" "$IMAGE" "${COMMAND[@]}" >/dev/null
        done
    else
        seq "$REPLICAS" | xargs -P "$PARALLEL" -I{} \
            docker run -d "${labels[@]}" "$IMAGE" "${COMMAND[@]}" >/dev/null
    fi
    t1=$(now_ns)
    started=$(last_start_secs "$TMP/${measure#"$TAG"-}.events" "$t0" "$REPLICAS")
    stop_watch
    record converge "$mode" "$(secs_between "$t0" "$t1")"
    record last-start "$mode" "$started"
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

# create_swarm_service MEASURE RESTART_DELAY: creates it detached, so the
# figure ends at 50/50 running and not after the CLI's extra 5 s "verify"
# wait, and polls `docker service ls` until every replica runs; prints the
# seconds that took.
create_swarm_service() {
    local measure=$1 delay=$2 t0 t1 id
    t0=$(now_ns)
    id=$(docker service create --detach --quiet --no-resolve-image --name "$SWARM_SERVICE" \
        --replicas "$REPLICAS" --stop-grace-period 0s --restart-delay "$delay" \
        --container-label "$RUN_LABEL_KEY=$TAG" --container-label "$MEASURE_LABEL_KEY=$measure" \
        "$IMAGE" "${COMMAND[@]}")
    wait_until "Swarm service $SWARM_SERVICE to reach $REPLICAS/$REPLICAS" "$CONVERGE_TIMEOUT_SECS" \
        swarm_replicas_running "$id"
    t1=$(now_ns)
    secs_between "$t0" "$t1"
}

swarm_service_gone() { [[ -z $(docker service ls -q --filter "name=$SWARM_SERVICE") ]]; }
remove_swarm_service() {
    docker service rm "$SWARM_SERVICE" >/dev/null
    wait_until "Swarm service $SWARM_SERVICE to be gone" "$CLEANUP_TIMEOUT_SECS" swarm_service_gone
    wait_until "Swarm's containers of $1 to be gone" "$CLEANUP_TIMEOUT_SECS" \
        no_containers_with "$MEASURE_LABEL_KEY=$1"
}

converge_swarm() {
    local run=$1 measure=$TAG-swarm-$1 t0 secs started
    t0=$(now_ns)
    start_watch "$TMP/${measure#"$TAG"-}.events" "$t0" --filter event=start --filter "label=$MEASURE_LABEL_KEY=$measure"
    secs=$(create_swarm_service "$measure" "$SWARM_DEFAULT_RESTART_DELAY")
    started=$(last_start_secs "$TMP/${measure#"$TAG"-}.events" "$t0" "$REPLICAS")
    stop_watch
    record converge swarm "$secs"
    record last-start swarm "$started"
    remove_swarm_service "$measure"
}

# ---------------------------------------------------------------- kill

# Container names end in SERVICE.SLOT.TASK for berth (`berth-` prefixed)
# and for Swarm alike; the slot is the second dot-separated field since
# neither service name holds a dot.
slot_of_name() { echo "$1" | awk -F. '{ print $2 }'; }

# running_in_slot MEASURE SLOT: the id of the running container of SLOT.
running_in_slot() {
    docker ps --no-trunc --filter "label=$MEASURE_LABEL_KEY=$1" --filter status=running \
        --format '{{.ID}} {{.Names}}' | awk -v slot="$2" '{ split($2, p, "."); if (p[2] == slot) print $1 }' | head -n 1
}

# event_time FILE ACTION SLOT [NOT_ID]: the time of the first ACTION event
# in FILE of a container of SLOT (other than NOT_ID).
event_time() {
    awk -v action="$2" -v slot="$3" -v not_id="${4:-}" \
        '$2 == action && $3 != not_id { split($4, p, "."); if (p[2] == slot) { print $1; exit } }' "$1"
}
replacement_started() { [[ -n $(event_time "$1" start "$2" "$3") ]]; }

# kill_once SYSTEM MEASURE SLOT: kills the running container of SLOT and
# records the seconds from the engine's kill event to the start event of
# the slot's next container, both read from the engine's event stream. The
# log line splits that at the old container's death and the replacement's
# create (Swarm creates the replacement first, then waits out its restart
# delay before starting it; berth creates it when it is to start).
kill_once() {
    local system=$1 measure=$2 slot=$3 file cid t0 killed died created started
    file=$TMP/${measure#"$TAG"-}-kill-$slot.events
    cid=$(running_in_slot "$measure" "$slot")
    [[ -n $cid ]] || { log "$system: no running container in slot $slot"; return 1; }
    t0=$(now_ns)
    start_watch "$file" "$t0" --filter event=kill --filter event=die --filter event=create \
        --filter event=start --filter "label=$MEASURE_LABEL_KEY=$measure"
    docker kill "$cid" >/dev/null
    wait_until "$system to replace slot $slot" "$REPLACE_TIMEOUT_SECS" replacement_started "$file" "$slot" "$cid"
    stop_watch
    killed=$(awk -v id="$cid" '$2 == "kill" && $3 == id { print $1; exit }' "$file")
    died=$(awk -v id="$cid" '$2 == "die" && $3 == id { print $1; exit }' "$file")
    created=$(event_time "$file" create "$slot" "$cid")
    started=$(event_time "$file" start "$slot" "$cid")
    [[ -n $killed && -n $died && -n $created ]] ||
        { log "$system: the engine did not report kill, die and create for slot $slot (see $file)"; return 1; }
    log "$system slot $slot: kill->die $(secs_between "$killed" "$died") s," \
        "die->create $(secs_between "$died" "$created") s, create->start $(secs_between "$created" "$started") s"
    record kill "$system" "$(secs_between "$killed" "$started")"
}

# kill_series SYSTEM MEASURE: one kill in each of slots 1..KILLS, so every
# replacement is a slot's first restart (berth backs off from the second
# one in a row; Swarm's delay is the same for every restart); waits for
# REPLICAS running again before each kill.
kill_series() {
    local system=$1 measure=$2 slot
    for ((slot = 1; slot <= KILLS; slot++)); do
        wait_until "$REPLICAS running containers of $measure" "$CONVERGE_TIMEOUT_SECS" \
            has_running "$MEASURE_LABEL_KEY=$measure" "$REPLICAS"
        kill_once "$system" "$measure" "$slot"
    done
}

kill_berth() {
    local measure=$TAG-berth-kill
    create_berth_service "$measure" >/dev/null
    kill_series berth "$measure"
    remove_berth_service "$measure"
}

kill_swarm() {
    local system=$1 delay=$2 measure=$TAG-$1
    create_swarm_service "$measure" "$delay" >/dev/null
    kill_series "$system" "$measure"
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
        log "FAILED: $what (exit $status); its figure is missing from the table"
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
    awk -v m="$1" -v s="$2" '$1 == m && $2 == s && $3 != "n/a" { print $3 }' "$RESULTS_FILE" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a";
            else if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2];
            else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}
per_container() {
    awk -v a="$1" -v n="$REPLICAS" 'BEGIN { if (a == "n/a") print "n/a"; else printf "%.3f\n", a / n }'
}
verdict() {
    awk -v v="$1" -v aim="$2" 'BEGIN { if (v == "n/a") print "not measured"; else if (v + 0 <= aim + 0) print "met"; else print "NOT met" }'
}

report() {
    local metric b s p w row_fmt
    row_fmt="%-34s %8s %12s %12s %8s %13s %13s\n"
    echo
    echo "containers on the local engine ($(nproc) CPUs, Docker $(docker version --format '{{.Server.Version}}')):" \
        "$REPLICAS x $IMAGE ${COMMAND[*]}; medians of $RUNS runs, kill figures of $KILLS kills"
    # shellcheck disable=SC2059 # the format is the row layout above
    printf "$row_fmt" "measurement (s)" "berth" "docker run" "docker run" "swarm" "berth /" "berth /"
    # shellcheck disable=SC2059
    printf "$row_fmt" "" "" "seq" "x$PARALLEL" "" "run x$PARALLEL" "swarm"
    for metric in converge last-start; do
        b=$(median "$metric" berth)
        s=$(median "$metric" run-seq)
        p=$(median "$metric" run-par)
        w=$(median "$metric" swarm)
        case $metric in
            converge) row="$REPLICAS/$REPLICAS running" ;;
            last-start) row="last container started (events)" ;;
        esac
        # shellcheck disable=SC2059
        printf "$row_fmt" "$row" "$b" "$s" "$p" "$w" "$(ratio "$b" "$p")" "$(ratio "$b" "$w")"
    done
    # shellcheck disable=SC2059
    printf "$row_fmt" "berth CLI's own figure" "$(median own-figure berth)" "" "" "" "" ""
    # shellcheck disable=SC2059
    printf "$row_fmt" "per container" "$(per_container "$(median converge berth)")" \
        "$(per_container "$(median converge run-seq)")" "$(per_container "$(median converge run-par)")" \
        "$(per_container "$(median converge swarm)")" "" ""
    echo
    row_fmt="%-34s %8s %20s %16s\n"
    # shellcheck disable=SC2059
    printf "$row_fmt" "kill -> replacement started (s)" "berth" "swarm delay $SWARM_DEFAULT_RESTART_DELAY" "swarm delay 0s"
    local kb
    kb=$(median kill berth)
    # shellcheck disable=SC2059
    printf "$row_fmt" "median" "$kb" "$(median kill swarm-default-delay)" "$(median kill swarm-zero-delay)"
    echo
    echo "aim: berth converges within ${AIM_CONVERGE_RATIO_TO_PARALLEL_RUN}x of docker run x$PARALLEL:" \
        "$(verdict "$(ratio "$(median converge berth)" "$(median converge run-par)")" "$AIM_CONVERGE_RATIO_TO_PARALLEL_RUN")"
    echo "aim: berth replaces a killed container in under ${AIM_REPLACE_SECS} s: $(verdict "$kb" "$AIM_REPLACE_SECS")"
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
    if wants berth; then
        log "building berth-cli (release)"
        (cd "$ROOT" && cargo build --release -q -p berth-cli) >&2
    fi
    "$ROOT/scripts/build-test-image.sh" >/dev/null

    if wants berth; then start_berth; fi
    # berth and the docker-run loops alternate within each run, so a change
    # in the machine's load hits both columns alike.
    for ((run = 1; run <= RUNS; run++)); do
        if wants berth; then
            log "run $run/$RUNS: berth service create --replicas $REPLICAS"
            attempt "berth convergence, run $run" converge_berth "$run"
        fi
        if wants docker; then
            log "run $run/$RUNS: $REPLICAS x docker run -d, sequential"
            attempt "docker run sequential, run $run" converge_docker "$run" run-seq
            log "run $run/$RUNS: $REPLICAS x docker run -d, $PARALLEL in parallel"
            attempt "docker run x$PARALLEL, run $run" converge_docker "$run" run-par
        fi
    done
    if wants berth; then
        log "berth: $KILLS x docker kill -> replacement"
        attempt "berth kill->replacement" kill_berth
        stop_berth
    fi

    if wants swarm; then
        if swarm_init; then
            for ((run = 1; run <= RUNS; run++)); do
                log "run $run/$RUNS: docker service create --replicas $REPLICAS"
                attempt "Swarm convergence, run $run" converge_swarm "$run"
            done
            log "swarm: $KILLS x docker kill -> replacement, restart delay $SWARM_DEFAULT_RESTART_DELAY"
            attempt "Swarm kill->replacement, delay $SWARM_DEFAULT_RESTART_DELAY" \
                kill_swarm swarm-default-delay "$SWARM_DEFAULT_RESTART_DELAY"
            log "swarm: $KILLS x docker kill -> replacement, restart delay 0s"
            attempt "Swarm kill->replacement, delay 0s" kill_swarm swarm-zero-delay 0s
            swarm_leave
        else
            log "NOTE: Swarm not measured: $SWARM_NOTE"
        fi
    fi
    report
}

main "$@"
