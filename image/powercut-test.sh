#!/usr/bin/env bash
# The power-cut test: the box (qemu, virt board) is killed outright — SIGKILL of qemu, so
# nothing is flushed, no unit stops — at random moments, and booted again on the same
# disk. Every boot after a cut must come back healthy (systemd running with no failed
# unit, kith active and answering XMPP over STARTTLS with its certificate, first boot
# done), and no message the box acknowledged may be missing from the archive. The test
# prints what each cut lost.
#
# The cuts come in cycles of three on a fresh disk (a qcow2 overlay on the image, kept
# between the boots of a cycle; the image is never written); each cut's next boot is the
# one that is cut next, and the cycle's third boot and the one after the flood must be
# healthy (the last cut of a run is always followed by a boot that must be healthy):
#   first-boot   a random moment 3-45 s after power-on: kernel, fsck, first boot growing
#                the data partition, machine-id, first start of kith;
#   cert-write   0-3 s after systemd starts kith for the first time: kith writes its
#                self-signed certificate and key, creates its database;
#   flood        alice floods offline bob with messages (image/test/flood.py), recording
#                each acknowledgement (XEP-0198) on the host; cut 4-15 s into it. After
#                it the box must present the same certificate as before the cut (it
#                lives on the data partition: cert_fingerprint.py).
#
#   powercut-test.sh [IMAGE]
#   KITH_POWERCUT_CUTS=3        cuts in all (CI: one cycle; by hand: 20)
#   KITH_POWERCUT_SEED=N        the random moments (printed, to repeat a run)
#   KITH_POWERCUT_BOOT_TIMEOUT=480   seconds for a boot to become healthy
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

img=$(readlink -f "${1:-$KITH_IMAGE_OUT/kith-rpi-arm64.img}")
[[ -f $img ]] || die "powercut: no image at $img (run image/build.sh)"
cuts=${KITH_POWERCUT_CUTS:-3}
seed=${KITH_POWERCUT_SEED:-$RANDOM}
boot_timeout=${KITH_POWERCUT_BOOT_TIMEOUT:-480}
RANDOM=$seed
work=$(mktemp -d /tmp/kith-powercut.XXXXXX)
qpid="" boot_no=0

cleanup() {
  local rc=$?
  stop_qemu "$work/qemu.pid" "$qpid"
  if [[ $rc != 0 && -s $work/serial.log ]]; then
    log "powercut: last lines of the serial console (boot $boot_no):"
    tail -n 60 "$work/serial.log" | sed 's/^/    | /' >&2
  fi
  [[ -n ${KITH_BOOTTEST_KEEP:-} ]] && log "powercut: kept $work" || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kernel=$(extract_boot_files "$img" "$work" "powercut")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# "quick": the box's report stops after the state (no watchdog wait, no failed-start
# test); "users": it creates alice and bob for the flood.
cmdline="root=LABEL=root-a rw rootwait console=ttyAMA0 net.ifnames=0 fsck.repair=yes"
cmdline+=" kith.boottest=quick kith.boottest.users systemd.mask=serial-getty@ttyAMA0.service"
log "powercut: $cuts cuts, seed $seed, $(basename "$img"), kernel $kernel"

boot() { # start qemu on $work/disk.qcow2 (writes kept: no snapshot), serial to serial.log
  boot_no=$((boot_no + 1))
  : > "$work/serial.log"
  rm -f "$work/qemu.pid"
  timeout -s KILL $((boot_timeout + 120)) qemu-system-aarch64 \
    -M virt -cpu cortex-a72 -m 1024 -smp 2 -accel tcg,thread=multi \
    -display none -monitor none -serial "file:$work/serial.log" -no-reboot \
    -pidfile "$work/qemu.pid" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "$cmdline" \
    -drive "if=none,file=$work/disk.qcow2,format=qcow2,cache=writeback,id=hd0" \
    -device virtio-blk-pci,drive=hd0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:5222" \
    -device virtio-net-pci,netdev=n0,romfile= \
    >"$work/qemu.out" 2>&1 &
  qpid=$!
  t_boot=$(date +%s)
  for _ in $(seq 50); do [[ -s $work/qemu.pid ]] && break; sleep 0.1; done
}
cut() { # the power cut: SIGKILL, no grace; qemu's writes it had not passed on are lost
  local p; p=$(cat "$work/qemu.pid" 2>/dev/null || true)
  [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=""
}
healthy() { # wait for the box to come back; prints the failing facts and returns 1 if not
  local deadline=$(( t_boot + boot_timeout )) xmpp=no report
  while (( $(date +%s) < deadline )); do
    kill -0 "$qpid" 2>/dev/null || { echo "qemu exited: $(tail -n 3 "$work/qemu.out")"; return 1; }
    if [[ $xmpp == no ]] && python3 "$IMAGE_DIR/test/xmpp_probe.py" 127.0.0.1 "$port" kith.local >/dev/null 2>&1; then
      xmpp=yes
    fi
    grep -q 'KITH-BOOTTEST end' "$work/serial.log" 2>/dev/null && [[ $xmpp == yes ]] && break
    sleep 1
  done
  report=$(sed -n 's/\r$//; s/^.*KITH-BOOTTEST //p' "$work/serial.log")
  local state kith firstboot failed
  state=$(sed -n 's/^system-state=//p' <<<"$report" | head -n 1)
  kith=$(sed -n 's/^kith=//p' <<<"$report" | head -n 1)
  firstboot=$(sed -n 's/^firstboot=//p' <<<"$report" | head -n 1)
  failed=$(sed -n 's/^failed-unit=//p' <<<"$report" | xargs)
  echo "after $(( $(date +%s) - t_boot ))s: xmpp=$xmpp system=${state:-?} kith=${kith:-?} firstboot=${firstboot:-?}${failed:+ failed=$failed}"
  [[ $xmpp == yes && $state == running && $kith == active && $firstboot == done && -z $failed ]] || {
    sed -n 's/^log /    | /p' <<<"$report" | tail -n 30; return 1; }
}
fresh_disk() {
  rm -f "$work/disk.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$img" "$work/disk.qcow2" 6G
}

failures=0 cut_no=0 flood_lost_unacked=0 flood_lost_acked=0 flood_acked=0 flood_sent=0
kith_started=no
record() { # CUT-DESCRIPTION RESULT OK(0/1)
  if [[ $3 == 0 ]]; then log "PASS powercut $cut_no/$cuts $1 -> $2"
  else log "FAIL powercut $cut_no/$cuts $1 -> $2"; failures=$((failures + 1)); fi
}
while (( cut_no < cuts )); do
  kind=$(( cut_no % 3 ))
  cut_no=$((cut_no + 1))
  case $kind in
    0) # a fresh card, cut during its first boot
      fresh_disk; boot
      at=$(( 3 + RANDOM % 43 ))
      sleep "$at"
      grep -q 'Starting.*Kith chat server' "$work/serial.log" && kith_started=yes || kith_started=no
      cut
      what="first-boot: cut ${at}s after power-on ($(grep -c . "$work/serial.log" || true) console lines, kith started: $kith_started)"
      if (( cut_no == cuts )); then  # the last cut: the box must come back
        boot; out=$(healthy) && record "$what" "healthy $out" 0 || record "$what" "NOT HEALTHY $out" 1
        cut
      fi
      ;;
    1) # the next boot on that card, cut just after systemd starts kith (for the first time
       # on this card unless the first cut came later): certificate, key, database
      boot
      deadline=$(( $(date +%s) + boot_timeout ))
      until grep -q 'Starting.*Kith chat server' "$work/serial.log" 2>/dev/null || (( $(date +%s) > deadline )); do
        kill -0 "$qpid" 2>/dev/null || break
        sleep 0.2
      done
      came_back=$(grep -q 'Starting.*Kith chat server' "$work/serial.log" && echo yes || echo no)
      ms=$(( RANDOM % 3000 ))
      sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
      cut
      what="$([[ $kith_started == no ]] && echo cert-write || echo kith-start): cut ${ms}ms after systemd started kith"
      record "first-boot (previous cut)" "came back as far as starting kith: $came_back" "$([[ $came_back == yes ]]; echo $?)"
      if (( cut_no == cuts )); then
        boot; out=$(healthy) && record "$what" "healthy $out" 0 || record "$what" "NOT HEALTHY $out" 1
        cut
      fi
      ;;
    2) # the box comes back; alice floods bob; cut in the middle of it
      boot
      if out=$(healthy); then
        record "cert-write/kith-start (previous cut)" "healthy $out" 0
      else
        record "cert-write/kith-start (previous cut)" "NOT HEALTHY $out" 1
        cut; continue
      fi
      # The certificate is on the data partition: the box must present the same one
      # after the cut (a new one would mean it was lost and made again).
      fp_before=$(python3 "$IMAGE_DIR/test/cert_fingerprint.py" 127.0.0.1 "$port" kith.local 2>&1 || true)
      run="r$cut_no-$seed"
      : > "$work/flood.log"
      python3 "$IMAGE_DIR/test/flood.py" send 127.0.0.1 "$port" "$run" "$work/flood.log" >/dev/null 2>"$work/flood.err" &
      fpid=$!
      at=$(( 4 + RANDOM % 12 ))
      sleep "$at"; cut
      wait "$fpid" || true
      what="flood: cut ${at}s into the flood ($(grep -c '^acked' "$work/flood.log" || true) acknowledgements received)"
      boot
      if out=$(healthy); then
        fp_after=$(python3 "$IMAGE_DIR/test/cert_fingerprint.py" 127.0.0.1 "$port" kith.local 2>&1 || true)
        if [[ $fp_after == "$fp_before" && $fp_after =~ ^[0-9a-f]{64}$ ]]; then
          record "$what" "the same certificate after the cut (${fp_after:0:16}…)" 0
        else
          record "$what" "CERTIFICATE CHANGED: before '$fp_before', after '$fp_after'" 1
        fi
        if fl=$(timeout 300 python3 "$IMAGE_DIR/test/flood.py" check 127.0.0.1 "$port" "$run" "$work/flood.log" 2>&1); then
          record "$what" "healthy $out; archive: $fl" 0
        else
          record "$what" "healthy $out; ARCHIVE: $fl" 1
        fi
        flood_sent=$((flood_sent + $(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$fl" | grep . || echo 0)))
        flood_acked=$((flood_acked + $(sed -n 's/.* acked=\([0-9]*\).*/\1/p' <<<"$fl" | grep . || echo 0)))
        flood_lost_acked=$((flood_lost_acked + $(sed -n 's/.*lost_acked=\([0-9]*\).*/\1/p' <<<"$fl" | grep . || echo 0)))
        flood_lost_unacked=$((flood_lost_unacked + $(sed -n 's/.*lost_unacked=\([0-9]*\).*/\1/p' <<<"$fl" | grep . || echo 0)))
      else
        record "$what" "NOT HEALTHY $out" 1
      fi
      cut
      ;;
  esac
done

echo "powercut: $cuts cuts (seed $seed), $failures failed"
echo "powercut: what a power cut lost: messages acknowledged by the box: $flood_lost_acked of $flood_acked;" \
  "sent but not yet acknowledged: $flood_lost_unacked lost (of $((flood_sent - flood_acked)) in flight);" \
  "the journal of the boot that was cut (it is kept in RAM)."
[[ $failures == 0 ]]
