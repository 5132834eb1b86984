#!/usr/bin/env bash
# Builds berth's test image, berth-test/busybox:latest, on this machine's
# Docker Engine without any registry: a rootfs holding Debian's static
# busybox and its applet symlinks, imported with `docker import`.
#
# Usage: scripts/build-test-image.sh [--force]
#   --force  rebuild even when the image already exists
# Installs the Debian package busybox-static with apt-get when it is missing
# (needs root). Prints the image name on success. Safe to run concurrently:
# builds are serialised with flock.
set -euo pipefail

IMAGE="berth-test/busybox:latest"
BUSYBOX=/bin/busybox
# Applets the tests and the docs use; every one is a symlink to busybox.
APPLETS=(sh ash sleep httpd echo cat true false wget nc ls ps kill env id
         hostname printf test grep sed mkdir rm touch date head tail wc
         uname pwd ping nslookup ifconfig ip netstat top vi)
LOCK_FILE="${TMPDIR:-/tmp}/berth-build-test-image.lock"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build-test-image: unknown argument '$arg' (accepted: --force)" >&2; exit 2 ;;
    esac
done

exec 9>"$LOCK_FILE"
flock 9

if [[ $force -eq 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi

if ! dpkg -s busybox-static >/dev/null 2>&1 || [[ ! -x $BUSYBOX ]]; then
    echo "build-test-image: installing busybox-static with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq busybox-static >&2
fi

# A dynamically linked busybox would need the host's libc inside the image.
if file -L "$BUSYBOX" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "build-test-image: $BUSYBOX is dynamically linked; install busybox-static" >&2
    exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,var/www}
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for applet in "${APPLETS[@]}"; do
    ln -s busybox "$rootfs/bin/$applet"
done
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "berth test image" > "$rootfs/var/www/index.html"

tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . \
    | docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/bin' \
        --message 'berth test image (static busybox)' \
        - "$IMAGE" >/dev/null

echo "$IMAGE"
