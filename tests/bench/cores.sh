#!/usr/bin/env bash
# Does Kith use both cores? Throughput (window 10, bare and full JIDs) with the server
# pinned to one core and then to two (taskset), alternating, RUNS times; kith-bench is
# the load. Prints the medians and the ratio two cores / one core. With the server on
# core 0 alone, kith-bench is pinned to core 1, so the server has its core to itself
# (unpinned, the generator at times ran on it and the one-core figure came out low,
# which flattered the ratio); with the server on both, they share them.
#
#   tests/bench/cores.sh            (KITH_BIN: a kith binary; default target/ci/kith)
#
# Settings (environment): RUNS (3), USERS (200), DURATION (10), KITH_BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${RUNS:-3}
USERS=${USERS:-200}
DURATION=${DURATION:-10}
WORK=${KITH_BENCH_DIR:-/tmp/kith-bench}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
RESULTS=$WORK/cores-$(date -u +%Y%m%dT%H%M%S).jsonl
mkdir -p "$WORK"
# shellcheck source=tests/bench/servers.sh
source "$ROOT/tests/bench/servers.sh"
[ "$(nproc)" -ge 2 ] || { echo "cores.sh needs two cores" >&2; exit 2; }
if [ -z "${KITH_BIN:-}" ]; then
  cargo build --profile ci -p kith -p kith-bench
  KITH_BIN=$ROOT/target/ci/kith
fi
KITH_BIN=$(realpath "$KITH_BIN")
SERVER_PID=
trap '[ -z "$SERVER_PID" ] || stop_kith' EXIT
make_cert
provision_kith "$USERS"
for ((run = 1; run <= RUNS; run++)); do
  order=("0" "0,1")
  ((run % 2 == 0)) && order=("0,1" "0")
  for cpus in "${order[@]}"; do
    KITH_CPUS=$cpus start_kith
    sleep 2
    for to in bare full; do
      bench_cpus=0,1
      [ "$cpus" = 0 ] && bench_cpus=1
      timeout 300 taskset -c "$bench_cpus" "$BENCH" --addr "127.0.0.1:$PORT" --cert "$WORK/tls/cert.pem" \
        --server-pid "$SERVER_PID" --label "kith-cpus-$cpus" \
        throughput --users "$USERS" --window 10 --duration "$DURATION" --to "$to" >>"$RESULTS"
    done
    stop_kith
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| addressing | server on 1 core: msgs/s | on 2 cores: msgs/s | 2 cores / 1 | server CPU-s per s, 1 core | 2 cores |")
print("|---|---|---|---|---|---|")
for to in ("bare", "full"):
    one = [r for r in rs if r["server"] == "kith-cpus-0" and r["to"] == to]
    two = [r for r in rs if r["server"] == "kith-cpus-0,1" and r["to"] == to]
    m1 = statistics.median(r["msgs_per_s"] for r in one)
    m2 = statistics.median(r["msgs_per_s"] for r in two)
    c1 = statistics.median(r["server_cpu_s"] / r["seconds"] for r in one)
    c2 = statistics.median(r["server_cpu_s"] / r["seconds"] for r in two)
    print(f"| {to} JID | {m1:,.0f} | {m2:,.0f} | {m2 / m1:.2f}× | {c1:.2f} | {c2:.2f} |")
print(f"\nruns: {len(rs) // 4}; results: {sys.argv[1]}")
PY
