#!/usr/bin/env bash
# Brings up a local berth cluster on loopback — three managers and three
# agents sharing the local Docker engine — and deploys a demo service, or
# tears it down again.
#
#   scripts/dev-cluster.sh          # build, start 3 managers + 3 agents, create the demo service
#   scripts/dev-cluster.sh down     # stop everything and delete .berth/dev
#
# Managers listen on 127.0.0.1:4700-4702 (4700 is the CLI's default, so
# plain `target/debug/berth service ls` works); data and logs live in .berth/dev.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV_DIR=.berth/dev
BERTH=target/debug/berth
PORTS=(4700 4701 4702)
READY_DEADLINE_SECS=60

down() {
    if [ -d "$DEV_DIR" ]; then
        # Agents first: while one runs, it would replace the containers
        # removed below.
        for pidfile in "$DEV_DIR"/*.pid; do
            [ -e "$pidfile" ] || continue
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        done
        ids=$(docker ps -aq --filter label=berth.dev-cluster=1 2>/dev/null || true)
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
        rm -rf "$DEV_DIR"
    fi
    echo "dev cluster stopped"
}

if [ "${1:-up}" = "down" ]; then
    down
    exit 0
fi

echo "==> building berth and the local test image"
cargo build --quiet -p berth-cli
scripts/build-test-image.sh
down >/dev/null
mkdir -p "$DEV_DIR"

start_manager() { # index, then the init/join arguments
    local i=$1
    shift
    "$BERTH" manager "$@" --data-dir "$DEV_DIR/manager-$i" --listen "127.0.0.1:${PORTS[$i]}" \
        >"$DEV_DIR/manager-$i.log" 2>&1 &
    echo $! >"$DEV_DIR/manager-$i.pid"
}

wait_for() { # description, command...
    local what=$1
    shift
    local deadline=$((SECONDS + READY_DEADLINE_SECS))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out waiting for $what; logs are in $DEV_DIR" >&2
            exit 1
        fi
        sleep 0.2
    done
}

echo "==> starting manager 1 (init) on 127.0.0.1:${PORTS[0]}"
start_manager 0 init
wait_for "manager 1" "$BERTH" join-token manager -q --manager "127.0.0.1:${PORTS[0]}"
TOKEN=$("$BERTH" join-token manager -q --manager "127.0.0.1:${PORTS[0]}")

for i in 1 2; do
    echo "==> starting manager $((i + 1)) (join) on 127.0.0.1:${PORTS[$i]}"
    start_manager "$i" join --peer "127.0.0.1:${PORTS[0]}" --token "$TOKEN"
done
all_voters() {
    [ "$("$BERTH" cluster status --output json --manager "127.0.0.1:${PORTS[0]}" |
        grep -c '"voter": true')" -eq 3 ]
}
wait_for "three voting managers" all_voters

MANAGERS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
WORKER_TOKEN=$("$BERTH" join-token worker -q --manager "127.0.0.1:${PORTS[0]}")
ZONES=(a b c)
# Three agents share this host, so each load balancer gets a port of its own.
PROXY_PORTS=(8081 8082 8083)
for i in 0 1 2; do
    echo "==> starting agent dev-agent-$((i + 1)) (zone:${ZONES[$i]}, load balancer on 127.0.0.1:${PROXY_PORTS[$i]})"
    "$BERTH" agent --manager "$MANAGERS" --token "$WORKER_TOKEN" --name "dev-agent-$((i + 1))" \
        --tag "zone:${ZONES[$i]}" --data-dir "$DEV_DIR/agent-$i" \
        --proxy-http-listen "127.0.0.1:${PROXY_PORTS[$i]}" >"$DEV_DIR/agent-$i.log" 2>&1 &
    echo $! >"$DEV_DIR/agent-$i.pid"
done
three_ready_nodes() {
    [ "$("$BERTH" node ls --output json --manager "127.0.0.1:${PORTS[0]}" | grep -c '"status": "ready"')" -eq 3 ]
}
wait_for "three ready agents" three_ready_nodes

echo "==> creating the demo service 'hello' (3 replicas spread over the zones, behind hello.test)"
"$BERTH" service create hello --image berth-test/busybox:latest --replicas 3 --strategy high-availability \
    --label berth.dev-cluster=1 --env VIRTUAL_HOST=hello.test -- \
    sh -c "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www & trap 'kill \$!; exit 0' TERM; wait"

"$BERTH" cluster status
echo
"$BERTH" service ls
echo
echo
"$BERTH" service ps hello
echo
echo "Try: curl -H 'Host: hello.test' http://127.0.0.1:${PROXY_PORTS[0]}/   (any of ${PROXY_PORTS[*]}; answers round-robin)"
echo "     $BERTH node ls | $BERTH service scale hello=6 | $BERTH service redeploy hello | docker kill <a container>"
echo "Stop with: scripts/dev-cluster.sh down"
