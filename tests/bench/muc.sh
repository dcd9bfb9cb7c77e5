#!/usr/bin/env bash
# Group-chat fan-out (docs/benchmarks.md, "Group chat fan-out"): Kith, Prosody and
# ejabberd side by side, one server at a time, the order rotating between runs. In each
# run USERS users join one new room of the server's MUC service (the first creates it as
# an instant room and makes the others members), SENDERS of them send groupchat messages
# for DURATION seconds with at most WINDOW messages each not yet delivered to every
# occupant; then the owner destroys the room. Prints one Markdown table of medians with
# Kith's ratios, like compare.sh.
#
#   tests/bench/muc.sh                           3 runs, 50 occupants, 5 senders, 10 s
#   RUNS=1 SERVERS="prosody ejabberd" tests/bench/muc.sh
#
# Settings (environment): RUNS (3), SERVERS ("prosody ejabberd kith"), USERS (50, at
# most 200: ejabberd's and Kith's default occupant limit), SENDERS (5), WINDOW (10),
# DURATION (10), BENCH_MUC_ARCHIVE (1: every server archives the room; 0: Prosody and
# ejabberd without archive, Kith unchanged), BENCH_MUC_STORAGE (default: each peer's
# default storage; sql: their room archives in SQLite like Kith's), KITH_BENCH_DIR (scratch dir, kept: users are
# created once), KITH_BIN (a kith binary to measure; default: build target/ci/kith).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=${RUNS:-3}
SERVERS=${SERVERS:-prosody ejabberd kith}
USERS=${USERS:-50}
SENDERS=${SENDERS:-5}
WINDOW=${WINDOW:-10}
DURATION=${DURATION:-10}
WORK=${KITH_BENCH_DIR:-/tmp/kith-bench-muc-${BENCH_MUC_STORAGE:-default}}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
RESULTS=$WORK/results-muc-$(date -u +%Y%m%dT%H%M%S).jsonl
export BENCH_MUC=1
mkdir -p "$WORK"

# shellcheck source=tests/bench/servers.sh
source "$ROOT/tests/bench/servers.sh"

SERVER_PID=
CURRENT=
cleanup() {
  if [ -n "$CURRENT" ] && [ -n "$SERVER_PID" ]; then
    "stop_$CURRENT" || true
  fi
}
trap cleanup EXIT

install_peers
install_muc_sql
if [ -n "${KITH_BIN:-}" ]; then
  KITH_BIN=$(realpath "$KITH_BIN")
  log "measuring the given $KITH_BIN; building kith-bench (profile ci)"
  cargo build --profile ci -p kith-bench
else
  log "building kith and kith-bench (profile ci)"
  cargo build --profile ci -p kith -p kith-bench
  KITH_BIN=$ROOT/target/ci/kith
fi
make_cert
# Measure a snapshot: the shared target/ may be rebuilt while the runs go on.
cp "$KITH_BIN" "$WORK/kith-under-test"
KITH_BIN=$WORK/kith-under-test
kith_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
for s in $SERVERS; do "provision_$s" "$USERS"; done

machine() {
  printf '{"scenario":"machine","phase":"%s","nproc":%s,"load1":%s,"date":"%s","kith":"%s"}\n' \
    "$1" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$(date -u +%FT%TZ)" "$kith_commit" >>"$RESULTS"
}

# one_server NAME RUN: a fresh start of NAME, its idle RSS, one fan-out run in a new room.
one_server() {
  local s=$1 run=$2
  CURRENT=$s
  "start_$s"
  sleep 3
  timeout 120 "$BENCH" --addr "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" \
    --server-pid "$SERVER_PID" --label "$s" idle >>"$RESULTS" ||
    log "$s: kith-bench idle failed (exit $?)"
  timeout 300 "$BENCH" --addr "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" \
    --server-pid "$SERVER_PID" --label "$s" muc --service "$(muc_service "$s")" \
    --room "bench-$(date -u +%H%M%S)-$run" --users "$USERS" --senders "$SENDERS" \
    --window "$WINDOW" --duration "$DURATION" >>"$RESULTS" ||
    log "$s: kith-bench muc failed (exit $?)"
  "stop_$s"
  CURRENT=
}

read -ra order <<<"$SERVERS"
for ((run = 1; run <= RUNS; run++)); do
  machine "start of run $run"
  # Rotate the order so that no server always goes first (or last) in a sitting.
  for ((k = 0; k < ${#order[@]}; k++)); do
    s=${order[$(((k + run - 1) % ${#order[@]}))]}
    log "run $run/$RUNS: $s"
    one_server "$s" "$run"
  done
done
machine "end"

log "results: $RESULTS"
echo
echo "nproc $(nproc); load average at start and end of runs:" \
  "$(grep -o '"load1":[0-9.]*' "$RESULTS" | cut -d: -f2 | tr '\n' ' ')"
python3 "$ROOT/tests/bench/table.py" "$RESULTS"
