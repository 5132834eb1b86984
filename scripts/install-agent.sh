#!/usr/bin/env bash
# Installs the berth agent on a worker host and starts it.
#
#   scripts/install-agent.sh --manager ADDR[,ADDR...] --token WORKER_TOKEN [--tag T]... [--name NAME]
#                            [--binary PATH] [--prefix DIR]
#
# Checks that Docker is running, installs the `berth` binary (from --binary,
# else target/release or target/debug of this checkout, else the one on PATH)
# into PREFIX/usr/local/bin, writes the token to PREFIX/etc/berth/agent.env
# (mode 0600) and, where systemd runs, installs and starts berth-agent.service.
# Without systemd it prints the command that runs the agent. A missing or
# malformed token is refused before anything is touched. --prefix (default /)
# installs under another root, e.g. for a dry run.
set -euo pipefail

die() { echo "install-agent: $*" >&2; exit 1; }

MANAGER=""
TOKEN=""
NAME=""
BINARY=""
PREFIX=""
TAGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --manager) MANAGER=${2:-}; shift 2 ;;
        --token) TOKEN=${2:-}; shift 2 ;;
        --tag) TAGS+=("${2:-}"); shift 2 ;;
        --name) NAME=${2:-}; shift 2 ;;
        --binary) BINARY=${2:-}; shift 2 ;;
        --prefix) PREFIX=${2%/}; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# Refuse bad input before touching anything.
[ -n "$MANAGER" ] || die "--manager ADDR is required (a manager's address, e.g. 10.0.0.1:4700)"
[ -n "$TOKEN" ] || die "--token is required (run \`berth join-token worker\` on a manager)"
if ! [[ "$TOKEN" =~ ^BERTH1-(WKR|MGR)-[0-9a-f]+-[0-9a-f]{40}$ ]]; then
    die "malformed token: expected BERTH1-WKR-<cluster id>-<secret> (from \`berth join-token worker\`)"
fi
[[ "$TOKEN" == BERTH1-WKR-* ]] || die "this is a manager token; agents join with the worker token (\`berth join-token worker\`)"
for tag in "${TAGS[@]+"${TAGS[@]}"}"; do
    [[ -n "$tag" && "$tag" != *[[:space:],]* ]] || die "invalid tag '$tag': non-empty, no spaces or commas"
done

command -v docker >/dev/null || die "docker is not installed; install Docker Engine first"
docker info >/dev/null 2>&1 || die "the Docker Engine is not reachable (is dockerd running, and may this user use it?)"
# Discovery across nodes puts service virtual IPs on stack network bridges.
if ! command -v ip >/dev/null; then
    echo "warning: \`ip\` (iproute2) is missing: services will be reached by name from their own node only" >&2
fi

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$BINARY" ]; then
    for candidate in "$here/target/release/berth" "$here/target/debug/berth" "$(command -v berth || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then BINARY=$candidate; break; fi
    done
fi
[ -n "$BINARY" ] && [ -x "$BINARY" ] || die "no berth binary found: build it (cargo build --release -p berth-cli) or pass --binary PATH"

BIN_DIR="$PREFIX/usr/local/bin"
CONF_DIR="$PREFIX/etc/berth"
DATA_DIR="$PREFIX/var/lib/berth/agent"
mkdir -p "$BIN_DIR" "$CONF_DIR" "$DATA_DIR"
if [ "$(readlink -f "$BINARY")" != "$(readlink -f "$BIN_DIR/berth" 2>/dev/null || true)" ]; then
    install -m 0755 "$BINARY" "$BIN_DIR/berth"
fi
umask 077
{
    echo "BERTH_MANAGER=$MANAGER"
    echo "BERTH_JOIN_TOKEN=$TOKEN"
} >"$CONF_DIR/agent.env"

ARGS=(agent --data-dir "$DATA_DIR")
[ -n "$NAME" ] && ARGS+=(--name "$NAME")
for tag in "${TAGS[@]+"${TAGS[@]}"}"; do ARGS+=(--tag "$tag"); done

if [ -z "$PREFIX" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    cat >/etc/systemd/system/berth-agent.service <<UNIT
[Unit]
Description=berth agent
After=docker.service network-online.target
Requires=docker.service

[Service]
EnvironmentFile=/etc/berth/agent.env
ExecStart=/usr/local/bin/berth ${ARGS[*]}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now berth-agent.service
    echo "berth agent installed and started (systemctl status berth-agent)"
else
    echo "berth installed in $BIN_DIR; this host has no systemd (or --prefix was given), so start the agent with:"
    echo "  set -a; . $CONF_DIR/agent.env; set +a; nohup $BIN_DIR/berth ${ARGS[*]} >$DATA_DIR/agent.log 2>&1 &"
fi
