#!/usr/bin/env bash
# Builds the appliance's Debian bookworm arm64 root filesystem with mmdebstrap, or reuses
# the cached one. The cache key is a hash of the package list, the dpkg filters, the
# hooks and this script, so a rebuild with only a new kith binary skips this entirely.
# Prints the cached rootfs directory on stdout.
#   KITH_IMAGE_FRESH=1  ignore the cache (e.g. to pick up Debian security updates)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

key=$( (cd "$IMAGE_DIR" && cat build-rootfs.sh rootfs/packages.txt rootfs/dpkg-excludes.txt rootfs/hooks/*) \
        | sha256sum | cut -c1-16)
dest=$KITH_IMAGE_CACHE/rootfs-$key
if [[ -d $dest && -z ${KITH_IMAGE_FRESH:-} ]]; then
  log "rootfs: cached $dest"
  echo "$dest"; exit 0
fi

mkdir -p "$KITH_IMAGE_CACHE"
tmp=$KITH_IMAGE_CACHE/rootfs-$key.tmp
rm -rf "$tmp"

pkgs=$(grep -v '^\s*#' "$IMAGE_DIR/rootfs/packages.txt" | xargs | tr ' ' ',')
dpkgopts=()
while read -r l; do
  [[ -z $l || $l == \#* ]] || dpkgopts+=(--dpkgopt="$l")
done < "$IMAGE_DIR/rootfs/dpkg-excludes.txt"
mapfile -t mirrors < <(apt_mirror_lines)

log "rootfs: building $dest (mmdebstrap, arm64 under qemu-user; about 10 min cold)"
# mmdebstrap drives apt and dpkg; the maintainer scripts run under qemu-aarch64-static.
timeout 1800 mmdebstrap --mode=root --architectures=arm64 --variant=minbase \
  --components=main,non-free-firmware \
  --aptopt='APT::Install-Recommends "false"' \
  --aptopt='Acquire::Retries "3"' \
  "${dpkgopts[@]}" \
  --include="$pkgs" \
  --setup-hook="$IMAGE_DIR/rootfs/hooks/setup.sh" \
  --essential-hook="$IMAGE_DIR/rootfs/hooks/essential.sh" \
  --customize-hook="$IMAGE_DIR/rootfs/hooks/customize.sh" \
  "$SUITE" "$tmp" "${mirrors[@]}" >&2

[[ -e $tmp/boot/firmware/config.txt ]] || die "rootfs: no /boot/firmware/config.txt"
ls "$tmp"/boot/firmware/initrd.img* >/dev/null 2>&1 || die "rootfs: no initrd in /boot/firmware"
# Keep this rootfs and the newest other one (each is ~500 MB): two branches with different
# package lists (a developer's and CI's) do not rebuild each other's away.
# (On a new machine there is no other one: grep then finds nothing, which is no failure.)
{ ls -1dt "$KITH_IMAGE_CACHE"/rootfs-*/ 2>/dev/null || true; } \
  | { grep -v "/rootfs-$key" || true; } | tail -n +2 | xargs -r rm -rf
mv "$tmp" "$dest"
log "rootfs: done, $(du -sh "$dest" | cut -f1)"
echo "$dest"
