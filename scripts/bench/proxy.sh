#!/usr/bin/env bash
# HTTP proxy benchmark: berth's proxy (crates/berth-proxy, run as its
# static_proxy example) against haproxy, both in front of the same three
# busybox httpd containers, measured with wrk on this machine. Each round
# measures, one after another: wrk straight at one backend ("direct"),
# through haproxy (mode http, roundrobin, keep-alive, http-reuse always),
# and through berth (round-robin); each with CONNECTIONS connections for
# throughput and with one connection for latency. Ends with the medians
# over the rounds and the ratios berth/haproxy: requests/s, and the p99
# each proxy adds over direct.
#
# Usage: scripts/bench/proxy.sh        (as root: installs wrk, haproxy and
#                                       curl with apt-get when missing)
#   ROUNDS=5          rounds of direct, haproxy, berth (medians over them;
#                     each round starts with the next target in turn)
#   DURATION=10       seconds per wrk run
#   THREADS=2         wrk threads for the throughput run
#   CONNECTIONS=64    wrk connections for the throughput run
#   BASE_PORT=19100   backends on BASE_PORT+1..3, haproxy on BASE_PORT+80,
#                     berth on BASE_PORT+81 (all 127.0.0.1)
#   TARGETS="direct haproxy berth"   which columns to measure
#   KEEP_TMP=1        keep the configs, logs and raw wrk output
set -euo pipefail
shopt -s inherit_errexit

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
BASE_PORT=${BASE_PORT:-19100}
TARGETS=${TARGETS:-"direct haproxy berth"}
IMAGE=berth-test/busybox:latest
HOST_HEADER=web.test
BACKEND_PORTS=($((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)))
HAPROXY_PORT=$((BASE_PORT + 80))
BERTH_PORT=$((BASE_PORT + 81))
# Seconds of load before each measured run, so pools and caches are warm.
WARMUP_SECS=2
# How long a backend or proxy may take to answer its first request.
READY_TIMEOUT_SECS=30
# The aims from the issue, printed beside the figures.
AIM_RPS_RATIO=0.90
AIM_ADDED_P99_MS=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_LABEL="berth-proxy-bench.run=$$-$(date +%s)"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-proxy-bench.XXXXXX")
PIDS=()

log() { echo "proxy-bench: $*" >&2; }

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local containers
    containers=$(docker ps -aq --filter "label=$RUN_LABEL" 2>/dev/null || true)
    if [ -n "$containers" ]; then
        # shellcheck disable=SC2086 # one id per word
        docker rm -f $containers >/dev/null 2>&1 || true
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
for tool in wrk haproxy curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk haproxy curl >/dev/null
fi

"$ROOT/scripts/build-test-image.sh" >/dev/null
log "building static_proxy (release)"
(cd "$ROOT" && cargo build --quiet --release -p berth-proxy --example static_proxy)
STATIC_PROXY="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/static_proxy"

# Waits until `curl` gets a 200 from $1 with our Host header.
wait_ready() {
    local url=$1 deadline=$((SECONDS + READY_TIMEOUT_SECS))
    until curl -fsS -o /dev/null -H "Host: $HOST_HEADER" "$url" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            log "$url did not answer within ${READY_TIMEOUT_SECS}s"
            tail -n 20 "$TMP"/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
}

for port in "${BACKEND_PORTS[@]}"; do
    docker run -d --label "$RUN_LABEL" -p "127.0.0.1:$port:80" "$IMAGE" \
        sh -c 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
done
for port in "${BACKEND_PORTS[@]}"; do
    wait_ready "http://127.0.0.1:$port/"
done
log "3 busybox httpd backends on 127.0.0.1:${BACKEND_PORTS[*]}"

cat >"$TMP/haproxy.cfg" <<EOF
global
    # Each connection takes two descriptors; this stays under a 20,000 ulimit.
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend busybox
backend busybox
    balance roundrobin
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}
    server b3 127.0.0.1:${BACKEND_PORTS[2]}
EOF
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)

"$STATIC_PROXY" --http-listen "127.0.0.1:$BERTH_PORT" --host "$HOST_HEADER" \
    --backend "127.0.0.1:${BACKEND_PORTS[0]}" --backend "127.0.0.1:${BACKEND_PORTS[1]}" \
    --backend "127.0.0.1:${BACKEND_PORTS[2]}" --balance round-robin >"$TMP/berth.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$HAPROXY_PORT/"
wait_ready "http://127.0.0.1:$BERTH_PORT/"
log "haproxy $(haproxy -v | awk 'NR==1 {print $3}') on :$HAPROXY_PORT, berth static_proxy on :$BERTH_PORT"

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:${BACKEND_PORTS[0]}/" ;;
        haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/" ;;
        berth) echo "http://127.0.0.1:$BERTH_PORT/" ;;
    esac
}

# wrk's latency figure in ms, from "582.00us", "1.37ms" or "1.02s".
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

# Runs wrk and prints "RPS P50_MS P99_MS ERRORS" (errors: socket errors
# plus non-2xx/3xx answers).
measure() {
    local target=$1 threads=$2 connections=$3 out
    out="$TMP/wrk-$target-c$connections-$(date +%s%N).txt"
    wrk -t"$threads" -c"$connections" -d"${WARMUP_SECS}s" -H "Host: $HOST_HEADER" "$(url_of "$target")" >/dev/null
    wrk -t"$threads" -c"$connections" -d"${DURATION}s" --latency -H "Host: $HOST_HEADER" "$(url_of "$target")" >"$out"
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    errors=$(awk '/Socket errors:/ {gsub(",", ""); s += $4 + $6 + $8 + $10} /Non-2xx/ {s += $NF} END {print s + 0}' "$out")
    echo "$rps $p50 $p99 $errors"
}

RESULTS="$TMP/results"
: >"$RESULTS"
read -r -a target_list <<<"$TARGETS"
for round in $(seq 1 "$ROUNDS"); do
    # Each round starts with the next target, so none is always measured
    # right after the same neighbour.
    order=()
    for i in "${!target_list[@]}"; do
        order+=("${target_list[$(((i + round - 1) % ${#target_list[@]}))]}")
    done
    for target in "${order[@]}"; do
        read -r rps p50 p99 errors < <(measure "$target" "$THREADS" "$CONNECTIONS")
        echo "$target c$CONNECTIONS $rps $p50 $p99 $errors $round" >>"$RESULTS"
        log "round $round $target c$CONNECTIONS: $rps req/s, p50 $p50 ms, p99 $p99 ms, $errors errors"
        read -r rps p50 p99 errors < <(measure "$target" 1 1)
        echo "$target c1 $rps $p50 $p99 $errors $round" >>"$RESULTS"
        log "round $round $target c1: $rps req/s, p50 $p50 ms, p99 $p99 ms, $errors errors"
    done
done

# Median of the numbers on stdin, one a line.
median_of() {
    sort -g | awk '{v[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median TARGET LOAD FIELD (3 rps, 4 p50, 5 p99, 6 errors)
median() {
    awk -v t="$1" -v c="$2" -v f="$3" '$1 == t && $2 == c {print $f}' "$RESULTS" | median_of
}

# The same figure of two targets measured in the same round, combined by
# EXPR over a (berth) and b (haproxy) and d (direct), one line per round.
# Other load on the machine moves whole rounds; pairing within a round
# cancels most of that.
per_round() {
    local load=$1 field=$2 expr=$3
    awk -v c="$load" -v f="$field" '$2 == c {v[$7 " " $1] = $f; r[$7] = 1}
        END { for (k in r) if ((k " berth") in v && (k " haproxy") in v && (k " direct") in v)
              print v[k " berth"], v[k " haproxy"], v[k " direct"] }' "$RESULTS" |
        awk "{ a = \$1; b = \$2; d = \$3; printf \"%.4f\\n\", $expr }"
}

calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -H 'Host: $HOST_HEADER' and wrk -t1 -c1 (same duration);"
echo "medians over $ROUNDS rounds; 3 busybox httpd backends (one request per connection), $(nproc) cores"
echo
printf '%-8s | %10s %9s %9s %7s | %9s %9s %9s %7s\n' target "req/s@$CONNECTIONS" "p50 ms" "p99 ms" errors "req/s@1" "p50 ms" "p99 ms" errors
for target in $TARGETS; do
    printf '%-8s | %10s %9s %9s %7s | %9s %9s %9s %7s\n' "$target" \
        "$(median "$target" "c$CONNECTIONS" 3)" "$(median "$target" "c$CONNECTIONS" 4)" \
        "$(median "$target" "c$CONNECTIONS" 5)" "$(median "$target" "c$CONNECTIONS" 6)" \
        "$(median "$target" c1 3)" "$(median "$target" c1 4)" "$(median "$target" c1 5)" "$(median "$target" c1 6)"
done

for needed in direct haproxy berth; do
    case " $TARGETS " in *" $needed "*) ;; *) exit 0 ;; esac
done
echo
echo "berth against haproxy (aims: req/s ratio >= $AIM_RPS_RATIO; berth adds < $AIM_ADDED_P99_MS ms to direct's p99):"
for load in "c$CONNECTIONS" c1; do
    b_rps=$(median berth "$load" 3); h_rps=$(median haproxy "$load" 3)
    d_p99=$(median direct "$load" 5); b_p99=$(median berth "$load" 5); h_p99=$(median haproxy "$load" 5)
    echo "  ${load#c} connection(s), from the medians: req/s ratio $(calc "$b_rps / $h_rps");" \
        "added p99: berth $(calc "$b_p99 - $d_p99" 3) ms, haproxy $(calc "$h_p99 - $d_p99" 3) ms"
    echo "  ${load#c} connection(s), median of per-round figures:" \
        "req/s ratio $(per_round "$load" 3 'a / b' | median_of | xargs printf '%.2f');" \
        "added p99: berth $(per_round "$load" 5 'a - d' | median_of | xargs printf '%.3f') ms," \
        "haproxy $(per_round "$load" 5 'b - d' | median_of | xargs printf '%.3f') ms"
done
