#!/usr/bin/env bash
# Boots the appliance image on qemu's Raspberry Pi 3 model (`-M raspi3b`), from the image
# as an SD card, with the kernel, initrd and the Pi 3 B device tree taken out of the
# image's BOOT partition. What it proves that the `virt` boot test cannot: the Pi's device
# tree and SD controller (bcm2835 sdhost), the initramfs's module set finding
# root-a on mmcblk0p2, and first boot growing mmcblk0p4 on an SD card. qemu does not run
# the Pi's GPU firmware (config.txt, cmdline.txt) and has no network for this board, so
# the checks read the box's report on the serial console. Hard timeout; qemu killed by PID.
#   boot-test-pi3.sh [IMAGE]   KITH_PI3_TIMEOUT=600
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

img=$(readlink -f "${1:-$KITH_IMAGE_OUT/kith-rpi-arm64.img}")
[[ -f $img ]] || die "pi3 boot test: no image at $img"
timeout_s=${KITH_PI3_TIMEOUT:-600}
work=$(mktemp -d /tmp/kith-pi3.XXXXXX)
qpid=""
cleanup() {
  local rc=$?
  stop_qemu "$work/qemu.pid" "$qpid"
  if [[ $rc != 0 && -s $work/serial.log ]]; then
    log "pi3 boot test: last lines of the serial console:"
    tail -n 40 "$work/serial.log" | sed 's/^/    | /' >&2
  fi
  [[ -n ${KITH_BOOTTEST_KEEP:-} ]] && log "pi3 boot test: kept $work" || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fat="$img@@$((4 * 1024 * 1024))"
kernel=$(extract_boot_files "$img" "$work" "pi3 boot test")
mcopy -n -i "$fat" ::/bcm2837-rpi-3-b.dtb "$work/pi3.dtb"
# An SD card's size must be a power of two for qemu: a 4 GiB overlay on the image.
qemu-img create -q -f qcow2 -F raw -b "$img" "$work/sd.qcow2" 4G

cmdline="root=LABEL=root-a rw rootwait console=ttyAMA0 net.ifnames=0 fsck.repair=yes"
cmdline+=" kith.boottest systemd.mask=serial-getty@ttyAMA0.service"
# qemu's raspi3b models the BCM2835 watchdog only as the kernel's reboot path: arming it
# (RuntimeWatchdogSec, on a real Pi a 14 s timer) resets the board at once. The driver
# stays out here; the hardware watchdog is checked on the virt board (i6300esb).
cmdline+=" modprobe.blacklist=bcm2835_wdt"
log "pi3 boot test: qemu -M raspi3b (timeout ${timeout_s}s)"
t0=$(date +%s)
timeout -s KILL $((timeout_s + 60)) qemu-system-aarch64 -M raspi3b -m 1G -smp 4 \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -dtb "$work/pi3.dtb" -append "$cmdline" \
  -drive "file=$work/sd.qcow2,if=sd,format=qcow2,snapshot=on" \
  -display none -monitor none -serial "file:$work/serial.log" -no-reboot \
  -pidfile "$work/qemu.pid" >"$work/qemu.out" 2>&1 &
qpid=$!
deadline=$((t0 + timeout_s))
until grep -q 'KITH-BOOTTEST end' "$work/serial.log" 2>/dev/null; do
  kill -0 "$qpid" 2>/dev/null || { cat "$work/qemu.out" >&2; die "pi3 boot test: qemu exited early"; }
  (( $(date +%s) < deadline )) || { log "pi3 boot test: timed out after ${timeout_s}s"; break; }
  sleep 2
done
report=$(sed -n 's/\r$//; s/^.*KITH-BOOTTEST //p' "$work/serial.log")
get() { sed -n "s/^$1=//p" <<<"$report" | head -n 1; }
log "pi3 boot test: report after $(( $(date +%s) - t0 ))s: $(get startup)"

passed=0 failed=0
check() {
  if [[ $2 == 0 ]]; then passed=$((passed + 1)); log "PASS pi3 $1: $3"
  else failed=$((failed + 1)); log "FAIL pi3 $1: $3"; fi
}
root=$(get root-mount)
check "root from SD" "$([[ $root == /dev/mmcblk0p2\ * ]]; echo $?)" "${root:-no report}"
state=$(get system-state)
failed_units=$(sed -n 's/^failed-unit=//p' <<<"$report" | xargs)
check "systemd" "$([[ $state == running && -z $failed_units ]]; echo $?)" \
  "is-system-running=${state:-?}${failed_units:+, failed: $failed_units}"
check "kith" "$([[ $(get kith) == active ]] && grep -Eq '^listen=(\*|\[::\]|0\.0\.0\.0):5222$' <<<"$report"; echo $?)" \
  "kith.service $(get kith), listening on 5222: $(grep -c '^listen=.*:5222$' <<<"$report")"
data_bytes=$(get data-bytes); data_bytes=${data_bytes:-0}
check "first boot" "$([[ $(get firstboot) == "done" && $(get hostname) == kith ]] && (( data_bytes > 1024 * 1024 * 1024 )); echo $?)" \
  "hostname $(get hostname), /var/lib/kith $((data_bytes / 1024 / 1024)) MiB on $(get data-mount | cut -d' ' -f1)"
echo "boot-test-pi3: $passed passed, $failed failed"
[[ $failed == 0 ]]
