#!/usr/bin/env bash
# Benchmarks Kith, Prosody and ejabberd side by side on this machine, one server at a
# time, alternating the order between runs, and prints one Markdown table of medians
# with Kith's ratios. See docs/benchmarks.md.
#
#   tests/bench/compare.sh                 3 runs, sessions N=1000 and 10000, every server
#   RUNS=1 SESSIONS="1000" SERVERS="prosody ejabberd" tests/bench/compare.sh
#
# Servers: Kith as shipped (its archive is always on); Prosody and ejabberd as installed
# (no archive) and with their archiving module on (`prosody-mam`, `ejabberd-mam`: the
# throughput scenarios only). Throughput is measured at windows 1 and 10, each with
# messages addressed to the partner's bare JID and to its full JID. Held sessions are
# measured with kith-bench's rustls clients and with OpenSSL clients (held_tls.py).
#
# Settings (environment): RUNS (3), SESSIONS ("1000 10000"; empty: none), ADDRESSING
# ("bare full"; empty: no throughput), SERVERS ("prosody
# prosody-mam ejabberd ejabberd-mam kith"), USERS (200, throughput), DURATION (10 s per throughput window), LOGINS (200
# sequential logins), KITH_BENCH_DIR (scratch dir, kept: users are created once),
# KITH_BIN (a kith binary to measure; default: build target/ci/kith), KITH_LABEL (its
# name in the results; default kith), KITH_BENCH_RESULTS (append to this file).
# Installs prosody and ejabberd from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=${RUNS:-3}
SESSIONS=${SESSIONS-1000 10000}
SERVERS=${SERVERS:-prosody prosody-mam ejabberd ejabberd-mam kith}
ADDRESSING=${ADDRESSING-bare full}
USERS=${USERS:-200}
DURATION=${DURATION:-10}
LOGINS=${LOGINS:-200}
WORK=${KITH_BENCH_DIR:-/tmp/kith-bench}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
RESULTS=${KITH_BENCH_RESULTS:-$WORK/results-$(date -u +%Y%m%dT%H%M%S).jsonl}
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
KITH_BIN_GIVEN=${KITH_BIN:-}
if [ -n "${KITH_BIN:-}" ]; then
  KITH_BIN=$(realpath "$KITH_BIN")
  log "measuring the given $KITH_BIN; building kith-bench (profile ci)"
  cargo build --profile ci -p kith-bench
else
  log "building kith and kith-bench (profile ci)"
  cargo build --profile ci -p kith -p kith-bench
  KITH_BIN=$ROOT/target/ci/kith
fi
# 10 000 sessions need 10 000 descriptors in the server and in the generator.
ulimit -n "$(ulimit -Hn)"
make_cert
# Measure a snapshot: the shared target/ may be rebuilt while the runs go on.
cp "$KITH_BIN" "$WORK/kith-under-test"
KITH_BIN=$WORK/kith-under-test
# The commit measured (a benchmark never shows figures without the code they describe);
# "+changes" when the working tree differs from it, "given binary" for KITH_BIN.
kith_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || kith_commit="$kith_commit+changes"
[ -z "${KITH_BIN_GIVEN:-}" ] || kith_commit="$kith_commit (given binary)"

max_users=$USERS
for n in $SESSIONS; do ((n > max_users)) && max_users=$n; done
for s in $SERVERS; do "provision_$s" "$max_users"; done

peers_version="prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null), ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null)"
# The size of Kith's database goes in too: the archive grows with every throughput run
# (scratch directories are kept), and the writer's cost per row grows with it.
machine() {
  local db_bytes=0
  [ -f "$WORK/kith/data/kith.db" ] && db_bytes=$(stat -c %s "$WORK/kith/data/kith.db")
  printf '{"scenario":"machine","phase":"%s","nproc":%s,"load1":%s,"date":"%s","kith":"%s","peers":"%s","kith_db_bytes":%s}\n' \
    "$1" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$(date -u +%FT%TZ)" "$kith_commit" "$peers_version" "$db_bytes" >>"$RESULTS"
}

# bench LABEL ARGS...: one scenario against the running server, result appended.
bench() {
  local label=$1
  # KITH_LABEL names the kith binary in the results (before_after.sh: kith-before).
  [ "$label" = kith ] && label=${KITH_LABEL:-kith}
  shift
  timeout 900 "$BENCH" --addr "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" \
    --server-pid "$SERVER_PID" --label "$label" "$@" >>"$RESULTS" ||
    log "$label: kith-bench $1 failed (exit $?)"
}

# held_openssl LABEL N: N sessions held by OpenSSL clients (held_tls.py).
held_openssl() {
  local label=$1
  [ "$label" = kith ] && label=${KITH_LABEL:-kith}
  timeout 900 python3 "$ROOT/tests/bench/held_tls.py" --port "$PORT" --cert "$WORK/tls/cert.pem" \
    --server-pid "$SERVER_PID" --label "$label" --count "$2" --concurrency 32 >>"$RESULTS" ||
    log "$label: held_tls.py failed (exit $?)"
}

# one_server NAME: every scenario against NAME, each group from a fresh start: what a
# scenario leaves behind (Prosody's Lua heap after 1000 sessions, say) would otherwise
# slow the next one down.
one_server() {
  local s=$1 n
  CURRENT=$s
  "start_$s"
  sleep 3
  case $s in *-mam) ;; *)
    bench "$s" idle
    bench "$s" latency --count "$LOGINS" --users "$USERS"
    ;;
  esac
  for to in $ADDRESSING; do
    bench "$s" throughput --users "$USERS" --window 1 --duration "$DURATION" --to "$to"
    bench "$s" throughput --users "$USERS" --window 10 --duration "$DURATION" --to "$to"
  done
  "stop_$s"
  case $s in *-mam) CURRENT= && return 0 ;; esac
  for n in $SESSIONS; do
    "start_$s"
    sleep 3
    bench "$s" sessions --count "$n" --concurrency 32
    "stop_$s"
    # The same with OpenSSL clients: a different TLS stack leaves different state.
    "start_$s"
    sleep 3
    held_openssl "$s" "$n"
    "stop_$s"
  done
  CURRENT=
}

read -ra order <<<"$SERVERS"
for ((run = 1; run <= RUNS; run++)); do
  machine "start of run $run"
  # Rotate the order so that no server always goes first (or last) in a sitting.
  for ((k = 0; k < ${#order[@]}; k++)); do
    s=${order[$(((k + run - 1) % ${#order[@]}))]}
    log "run $run/$RUNS: $s"
    one_server "$s"
  done
done
machine "end"

log "results: $RESULTS"
echo
echo "nproc $(nproc); load average at start and end of runs:" \
  "$(grep -o '"load1":[0-9.]*' "$RESULTS" | cut -d: -f2 | tr '\n' ' ')"
python3 "$ROOT/tests/bench/table.py" "$RESULTS"
