#!/usr/bin/env bash
# Counts the CPU instructions Kith spends per login and per message, for one or more
# kith binaries, with valgrind's callgrind: a count, not a time, so it is the same on a
# busy machine as on a quiet one and shows changes of a few percent that timing runs
# cannot separate from noise. Only the server's user-space instructions are counted
# (not the kernel's: TLS records and archive writes cost syscalls too), and under
# valgrind the server runs ~50× slower, so batch sizes (archive group commit, TLS
# records per read) differ from a real run: compare binaries with this, not servers.
#
#   tests/bench/instructions.sh BIN [BIN...]
#
# For each binary: a fresh data directory with USERS users, the server started under
# callgrind with counting off; then each scenario runs with counting on (counters
# zeroed before, dumped after): LOGINS sequential logins (kith-bench latency), and
# throughput at window 1 and 10 to bare JIDs for DURATION seconds (the generator's
# own logins taken out). Prints one JSON line
# per binary and scenario: instructions per login or per message delivered.
# Settings (environment): USERS (100), LOGINS (100), DURATION (10), KITH_BENCH_DIR.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
cd "$(dirname "$0")/../.."
ROOT=$PWD
USERS=${USERS:-100}
LOGINS=${LOGINS:-100}
DURATION=${DURATION:-10}
base=${KITH_BENCH_DIR:-/tmp/kith-instructions}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BENCH" ] || cargo build --profile ci -p kith-bench

# shellcheck source=tests/bench/servers.sh
source "$ROOT/tests/bench/servers.sh"

SERVER_PID=
trap '[ -z "$SERVER_PID" ] || kill -KILL "$SERVER_PID" 2>/dev/null || true' EXIT

# count LABEL SCENARIO ARGS...: run one kith-bench scenario with counting on; print
# instructions per unit (logins, or messages delivered).
count() {
  local label=$1 scenario=$2 out ir units
  shift 2
  callgrind_control -z "$SERVER_PID" >/dev/null
  callgrind_control -i on "$SERVER_PID" >/dev/null
  out=$(timeout 900 "$BENCH" --addr "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" \
    --server-pid "$SERVER_PID" --label "$label" "$scenario" "$@")
  callgrind_control -i off "$SERVER_PID" >/dev/null
  rm -f "$WORK/cg.out".*
  callgrind_control -d "$scenario" "$SERVER_PID" >/dev/null
  sleep 1
  ir=$(cat "$WORK"/cg.out.* 2>/dev/null | awk '/^totals:/ {s += $2} END {print s + 0}')
  units=$(printf '%s' "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
print(r["received"] if "received" in r else r.get("ok", 0))')
  # The throughput scenarios log their USERS users in first: their logins' share
  # (USERS x the per-login count measured just before) is taken out.
  python3 - "$label" "$scenario $*" "$ir" "$units" "${LOGIN_IR:-0}" "$USERS" <<'EOF'
import json, sys
label, scenario = sys.argv[1], sys.argv[2]
ir, units, login_ir, users = (int(float(a)) for a in sys.argv[3:7])
logins_share = users * login_ir if scenario.startswith("throughput") else 0
work = ir - logins_share
print(json.dumps({"binary": label, "scenario": scenario, "instructions": ir,
                  "logins_share": logins_share, "units": units,
                  "per_unit": round(work / units) if units else None}))
EOF
}

for bin in "$@"; do
  bin=$(realpath "$bin")
  label=$(basename "$bin")
  WORK=$base/$label
  KITH_BIN=$bin
  rm -rf "$WORK"
  mkdir -p "$WORK"
  make_cert
  provision_kith "$USERS"
  KITH_PORT=$(pick_port "$KITH_PORT")
  kith_config
  # One callgrind output per dump, all threads together (--separate-threads=no).
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
    "$KITH_BIN" --config "$WORK/kith/kith.toml" serve 2>>"$WORK/valgrind.log" &
  SERVER_PID=$!
  PORT=$KITH_PORT
  wait_port "$PORT" 120
  sleep 2
  LOGIN_IR=0
  line=$(count "$label" latency --count "$LOGINS" --users "$USERS")
  echo "$line"
  LOGIN_IR=$(printf '%s' "$line" | python3 -c 'import json, sys; print(json.load(sys.stdin)["per_unit"] or 0)')
  count "$label" throughput --users "$USERS" --window 1 --duration "$DURATION" --to bare
  count "$label" throughput --users "$USERS" --window 10 --duration "$DURATION" --to bare
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
done
