#!/usr/bin/env bash
# Measures a change: two kith binaries, before and after, in one sitting, alternating
# which goes first in each run, with compare.sh's scenarios (idle RSS, sequential logins,
# throughput at windows 1 and 10, held sessions). Prints compare.sh's table with a
# "Kith vs kith-before" column (>1× means the new binary is better).
#
#   tests/bench/before_after.sh BEFORE_BIN AFTER_BIN
#
# Settings (environment): RUNS (3), SESSIONS ("1000"; empty: no held sessions),
# ADDRESSING ("bare full"; empty: no throughput), DURATION (10), LOGINS (200),
# USERS (200), KITH_BENCH_DIR (scratch dir; each binary gets its own data under it,
# as a newer binary may have migrated the database).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN" >&2; exit 2; }
cd "$(dirname "$0")/../.."
before=$(realpath "$1")
after=$(realpath "$2")
RUNS=${RUNS:-3}
base=${KITH_BENCH_DIR:-/tmp/kith-bench-ab}
mkdir -p "$base"
results=$base/results-$(date -u +%Y%m%dT%H%M%S).jsonl
for ((run = 1; run <= RUNS; run++)); do
  order=(before after)
  ((run % 2 == 0)) && order=(after before)
  for which in "${order[@]}"; do
    if [ "$which" = before ]; then bin=$before label=kith-before; else bin=$after label=kith; fi
    echo "[before_after] run $run/$RUNS: $which ($bin)" >&2
    KITH_BIN=$bin KITH_LABEL=$label KITH_BENCH_DIR=$base/$which KITH_BENCH_RESULTS=$results \
      RUNS=1 SERVERS=kith SESSIONS="${SESSIONS-1000}" tests/bench/compare.sh >/dev/null
  done
done
echo "nproc $(nproc); results: $results"
python3 tests/bench/table.py "$results"
