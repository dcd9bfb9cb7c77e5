#!/usr/bin/env bash
# Turns the cached root filesystem plus this repo's overlay and a kith binary into the
# Pi disk image, without loop devices or mounts (mkfs -d / mcopy / dd into one file).
#   assemble.sh ROOTFS_DIR KITH_BINARY    -> $KITH_IMAGE_OUT/kith-VERSION-rpi-arm64.img
#   KITH_IMAGE_XZ=1  also write .img.xz and its .sha256 (the release artefact)
#
# MBR layout (the Pi firmware reads MBR); 4 MiB alignment for SD erase blocks:
#   1 BOOT       FAT32   256 MiB  firmware, DTBs, kernel, initrd, config.txt, cmdline.txt
#   2 root-a     ext4   1024 MiB  the OS (slot A)
#   3 root-b     ext4   1024 MiB  reserved for A/B updates (empty, same size)
#   4 kith-data  ext4    128 MiB  /var/lib/kith, all mutable state; grown on first boot
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

rootfs=${1:?rootfs dir}; kith_bin=${2:?kith binary}
BOOT_MIB=256 ROOT_MIB=1024 DATA_MIB=128 START_MIB=4

version=$(python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["workspace"]["package"]["version"])' "$REPO_DIR/Cargo.toml")
commit=$(git -C "$REPO_DIR" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
name=kith-$version-rpi-arm64

stage=$KITH_IMAGE_CACHE/stage
rm -rf "$stage" "$KITH_IMAGE_CACHE"/trash.*; mkdir -p "$stage/bootfs" "$stage/data" "$KITH_IMAGE_OUT"
log "assemble: copying rootfs"
cp -a --reflink=auto "$rootfs" "$stage/root"
r=$stage/root

log "assemble: kith $version ($commit), overlay, users, units"
cp -a --no-preserve=ownership "$IMAGE_DIR/overlay/." "$r/"
install -m 0755 "$kith_bin" "$r/usr/bin/kith"
printf 'version=%s\ncommit=%s\nbuilt=%s\n' "$version" "$commit" "$(date -u +%FT%TZ)" > "$r/etc/kith/build-info"
# Every card gets its own machine-id on first boot; the hostname is set by first boot too.
: > "$r/etc/machine-id"
rm -f "$r/etc/hostname" "$r/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$r/var/lib/dbus/machine-id"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkith\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
systemd-sysusers --root="$r" >/dev/null 2>&1
systemctl --root="$r" --quiet enable kith.service kith-firstboot.service kith-boottest.service \
  kith-firewall.service kith-firewall.path kith-time-wait.service kith-mdns-name.service \
  systemd-networkd.service systemd-resolved.service systemd-timesyncd.service avahi-daemon.service
# Updates come as whole images, never through apt on the box.
systemctl --root="$r" --quiet mask apt-daily.timer apt-daily-upgrade.timer
kith_uid=$(awk -F: '$1 == "kith" { print $3 }' "$r/etc/passwd")
[[ -n $kith_uid ]] || die "assemble: no kith user"

# Pi boot files go to the FAT partition; the root keeps an empty mount point. The
# kernel and initrd copies in /boot are never booted from: 50 MB less in the root slot.
mv "$r/boot/firmware/"* "$stage/bootfs/"
rm -f "$r"/boot/vmlinuz-* "$r"/boot/initrd.img-* "$r"/vmlinuz* "$r"/initrd.img*
ls "$stage/bootfs"/vmlinuz-* "$stage/bootfs"/initrd.img-* >/dev/null || die "assemble: no kernel/initrd"
cp "$IMAGE_DIR/README.md" "$stage/data/README-kith-data.md" 2>/dev/null || true

log "assemble: filesystems"
img=$KITH_IMAGE_OUT/$name.img
tmpimg=$img.tmp
rm -f "$tmpimg" "$stage"/*.fs
p1=$START_MIB; p2=$((p1 + BOOT_MIB)); p3=$((p2 + ROOT_MIB)); p4=$((p3 + ROOT_MIB))
total=$((p4 + DATA_MIB))
mkfs.vfat -C -F 32 -n BOOT -i 4b697468 "$stage/boot.fs" $((BOOT_MIB * 1024)) >/dev/null
mcopy -s -p -m -i "$stage/boot.fs" "$stage/bootfs/"* ::/
mkext4() { # LABEL MIB DIR FILE
  truncate -s "$2M" "$4"
  mkfs.ext4 -q -F -L "$1" -T default -m 1 -E root_owner=0:0 -d "$3" "$4" "$2M"
}
mkext4 root-a "$ROOT_MIB" "$r" "$stage/root-a.fs"
mkdir -p "$stage/empty"
mkext4 root-b "$ROOT_MIB" "$stage/empty" "$stage/root-b.fs"
mkext4 kith-data "$DATA_MIB" "$stage/data" "$stage/data.fs"

log "assemble: partition table and image"
truncate -s "${total}M" "$tmpimg"
sfdisk --quiet "$tmpimg" <<SFDISK
label: dos
label-id: 0x4b697468
unit: sectors
start=$((p1 * 2048)), size=$((BOOT_MIB * 2048)), type=c, bootable
start=$((p2 * 2048)), size=$((ROOT_MIB * 2048)), type=83
start=$((p3 * 2048)), size=$((ROOT_MIB * 2048)), type=83
start=$((p4 * 2048)), size=$((DATA_MIB * 2048)), type=83
SFDISK
for pair in "boot.fs:$p1" "root-a.fs:$p2" "root-b.fs:$p3" "data.fs:$p4"; do
  dd if="$stage/${pair%%:*}" of="$tmpimg" bs=1M seek="${pair##*:}" conv=notrunc,sparse status=none
done
rm -f "$stage"/*.fs
mv "$tmpimg" "$img"
ln -sfn "$name.img" "$KITH_IMAGE_OUT/kith-rpi-arm64.img"
log "assemble: $img ($((total)) MiB, $(du -m "$img" | cut -f1) MiB allocated)"

if [[ ${KITH_IMAGE_XZ:-0} == 1 ]]; then
  log "assemble: xz"
  timeout 1200 xz -T2 -1 -f -k "$img"
  (cd "$KITH_IMAGE_OUT" && sha256sum "$name.img.xz" > "$name.img.xz.sha256")
  log "assemble: $img.xz ($(stat -c %s "$img.xz") bytes), sha256 $(cut -c1-16 "$img.xz.sha256")…"
fi
# Deleting the staged tree (~20k files) takes up to 20 s here: do it off the critical path.
trash=$KITH_IMAGE_CACHE/trash.$$
mv "$stage" "$trash"
setsid nohup rm -rf "$trash" >/dev/null 2>&1 < /dev/null &
echo "$img"
