#!/usr/bin/env bash
# A throwaway image registry with password authentication on loopback, for
# the tests of berth's authenticated pulls (cluster-tests/tests/registry.rs).
# Debian's docker-registry on 127.0.0.1:$PORT, htpasswd (bcrypt) auth, its
# config, storage and log in one temporary folder. No TLS: Docker allows
# plain HTTP to registries on 127.0.0.0/8.
#
# Usage:
#   PORT=5000 REGISTRY_USER=u REGISTRY_PASSWORD=p scripts/test-registry.sh start
#       starts the registry and waits until it answers; prints
#       REGISTRY_PID=<pid> and REGISTRY_DIR=<folder>, one a line
#   REGISTRY_DIR=<folder> REGISTRY_USER=u REGISTRY_PASSWORD=p SOURCE=<image> \
#       TARGET=127.0.0.1:<port>/<repo>:<tag> scripts/test-registry.sh push
#       logs in (a Docker client config inside the folder; ~/.docker is never
#       touched), tags SOURCE as TARGET, pushes it, and removes the TARGET tag
#       from the engine again so that only a pull brings it back
#   REGISTRY_DIR=<folder> scripts/test-registry.sh stop
#       kills the registry and removes the folder (and with it what was pushed)
# Installs docker-registry and apache2-utils (htpasswd) with apt-get when
# they are missing (needs root).
set -euo pipefail

# How long the registry may take to answer after it was started.
READY_DEADLINE_S=20
# How long the registry may take to exit after SIGTERM before SIGKILL.
STOP_DEADLINE_S=10
LOCK_FILE="${TMPDIR:-/tmp}/berth-test-registry-install.lock"

die() {
    echo "test-registry: $*" >&2
    exit 1
}

need() {
    [[ -n ${!1:-} ]] || die "$1 is not set (see: $0 --help)"
}

missing_packages() {
    command -v docker-registry >/dev/null 2>&1 || echo docker-registry
    command -v htpasswd >/dev/null 2>&1 || echo apache2-utils
}

install_missing() {
    [[ -z $(missing_packages) ]] && return 0
    # Tests start registries in parallel; one of them installs, the others
    # wait for it and then find nothing missing.
    exec 9>"$LOCK_FILE"
    flock 9
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "test-registry: installing ${missing[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    exec 9>&-
}

# Running and not a zombie (an exited child not yet reaped still takes
# signals as far as kill -0 can tell).
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n $state && $state != Z ]]
}

# The folder must be one this script made: `stop` deletes it.
check_dir() {
    need REGISTRY_DIR
    [[ -f $REGISTRY_DIR/config.yml && -f $REGISTRY_DIR/registry.pid ]] ||
        die "$REGISTRY_DIR is not a folder made by '$0 start'"
}

start() {
    need PORT
    need REGISTRY_USER
    need REGISTRY_PASSWORD
    [[ $PORT =~ ^[0-9]+$ ]] || die "PORT=$PORT is not a port number"
    install_missing

    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/berth-registry.XXXXXX")"
    mkdir -p "$dir/storage"
    htpasswd -B -b -c "$dir/htpasswd" "$REGISTRY_USER" "$REGISTRY_PASSWORD" 2>/dev/null ||
        die "htpasswd could not write $dir/htpasswd"
    cat >"$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$PORT
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
auth:
  htpasswd:
    realm: berth-test
    path: $dir/htpasswd
CONFIG

    # Its own session and no inherited descriptors: the caller may wait for
    # this script's output to close, which must not wait for the registry.
    setsid docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/registry.pid"

    local deadline=$((SECONDS + READY_DEADLINE_S)) code
    while :; do
        if ! alive "$pid"; then
            echo "test-registry: the registry exited at start; its log:" >&2
            cat "$dir/registry.log" >&2
            rm -rf "$dir"
            exit 1
        fi
        # 401 is the answer wanted: up, and asking for credentials.
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/v2/" || true)"
        [[ $code == 401 ]] && break
        if ((SECONDS >= deadline)); then
            echo "test-registry: no 401 from http://127.0.0.1:$PORT/v2/ after ${READY_DEADLINE_S}s (last: $code); its log:" >&2
            cat "$dir/registry.log" >&2
            REGISTRY_DIR="$dir" stop
            exit 1
        fi
        sleep 0.1
    done
    echo "REGISTRY_PID=$pid"
    echo "REGISTRY_DIR=$dir"
}

push() {
    check_dir
    need SOURCE
    need TARGET
    need REGISTRY_USER
    need REGISTRY_PASSWORD
    local host="${TARGET%%/*}"
    local config="$REGISTRY_DIR/docker-config"
    mkdir -p "$config"
    printf '%s' "$REGISTRY_PASSWORD" |
        docker --config "$config" login "$host" -u "$REGISTRY_USER" --password-stdin >&2
    docker tag "$SOURCE" "$TARGET"
    # The tag goes whether or not the push worked.
    local pushed=0
    docker --config "$config" push "$TARGET" >&2 || pushed=$?
    docker rmi "$TARGET" >/dev/null
    [[ $pushed -eq 0 ]] || die "docker push $TARGET failed"
    echo "$TARGET"
}

stop() {
    check_dir
    local pid
    pid="$(cat "$REGISTRY_DIR/registry.pid")"
    # Only the registry of this folder: the pid may have been reused.
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$REGISTRY_DIR/config.yml"; then
        kill "$pid"
        local deadline=$((SECONDS + STOP_DEADLINE_S))
        while alive "$pid"; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -rf "$REGISTRY_DIR"
}

case "${1:-}" in
    start) start ;;
    push) push ;;
    stop) stop ;;
    -h | --help) sed -n '2,20p' "$0" ;;
    *) die "usage: $0 start|push|stop (see --help)" ;;
esac
