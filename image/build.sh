#!/usr/bin/env bash
# Builds the Kith appliance image: installs the build machine's tools, cross-compiles kith
# for aarch64 while the arm64 root filesystem is built (or taken from the cache), then
# assembles image/out/kith-VERSION-rpi-arm64.img.
#   build.sh           the image (no .xz: what the boot test needs)
#   build.sh --release also kith-VERSION-rpi-arm64.img.xz and its .sha256
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
[[ ${1:-} == --release ]] && export KITH_IMAGE_XZ=1
[[ $(id -u) == 0 ]] || die "build.sh must run as root (apt-get, mmdebstrap --mode=root)"

log "step 1/4: host tools"
timeout 1500 bash "$IMAGE_DIR/lib/host-deps.sh" >&2

log "step 2/4: root filesystem (background) and kith for aarch64"
mkdir -p "$KITH_IMAGE_CACHE"
rootfs_log=$KITH_IMAGE_CACHE/rootfs.log
# Its own process group, so that a failure here stops mmdebstrap and its children too.
setsid bash "$IMAGE_DIR/build-rootfs.sh" >"$KITH_IMAGE_CACHE/rootfs.path" 2>"$rootfs_log" &
rootfs_pid=$!
trap 'kill -TERM -- -$rootfs_pid 2>/dev/null || true' EXIT
trap 'exit 143' TERM INT
kith_bin=$(bash "$IMAGE_DIR/build-kith.sh")
log "step 3/4: waiting for the root filesystem (log: $rootfs_log)"
if ! wait "$rootfs_pid"; then
  tail -n 40 "$rootfs_log" >&2
  die "root filesystem build failed"
fi
trap - EXIT
grep '^\[image' "$rootfs_log" >&2 || true
rootfs=$(cat "$KITH_IMAGE_CACHE/rootfs.path")

log "step 4/4: disk image"
bash "$IMAGE_DIR/assemble.sh" "$rootfs" "$kith_bin"
