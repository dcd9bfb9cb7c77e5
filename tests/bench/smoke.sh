#!/usr/bin/env bash
# Benchmark smoke run: about 35 s of kith-bench against Kith alone (sequential logins,
# held sessions, 1:1 messages at windows 1 and 10, then 2 s of group chat: 10 users in
# one room of groups.DOMAIN, 2 senders). Fails on any error or lost message; it checks
# that the tool and the server work, not how fast they are.
#   tests/bench/smoke.sh          (uses $KITH_BIN, default target/ci/kith)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KITH_BIN_GIVEN=${KITH_BIN:-}
KITH_BIN=${KITH_BIN:-$ROOT/target/ci/kith}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
WORK=$(mktemp -d /tmp/kith-smoke.XXXXXX)

# shellcheck source=tests/bench/servers.sh
source "$ROOT/tests/bench/servers.sh"

SERVER_PID=
cleanup() {
  [ -z "$SERVER_PID" ] || stop_kith
  rm -rf "$WORK"
}
trap cleanup EXIT

# tests/run.sh has just built every binary and exports KITH_BIN: build nothing then.
if [ -z "${KITH_BIN_GIVEN:-}" ] || [ ! -x "$BENCH" ]; then
  cargo build --profile ci -p kith -p kith-bench
fi
# A free port below the ephemeral range, so that a smoke run never meets another
# test's server (start_kith moves on from it if it is taken).
KITH_PORT=$((20000 + RANDOM % 12000))
make_cert
provision_kith 20
if ! start_kith; then
  log "kith did not start; last lines of its log:"
  tail -n 20 "$WORK/kith/kith.log" >&2 || true
  exit 1
fi
# One readable line per scenario on stderr; the JSON lines on stdout are kept for the
# archive check below.
if ! timeout 180 "$BENCH" --addr "127.0.0.1:$KITH_PORT" --cert "$WORK/tls/cert.pem" \
  --server-pid "$SERVER_PID" --label kith --timeout 20 smoke --users 20 --seconds 30 --muc-service "$(muc_service kith)" \
  >"$WORK/smoke.jsonl"; then
  log "smoke run failed; last lines of the server log:"
  tail -n 20 "$WORK/kith/kith.log" >&2 || true
  exit 1
fi
# The shipped default archives every 1:1 message on both sides: after a clean stop the
# archive holds two rows for each message the throughput scenarios delivered.
stop_kith
python3 - "$WORK/smoke.jsonl" "$WORK/kith/data/kith.db" <<'PY'
import json, sqlite3, sys
delivered = sum(json.loads(l)["received"] for l in open(sys.argv[1])
                if l.startswith("{") and json.loads(l)["scenario"] == "throughput")
db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
rows = db.execute("SELECT COUNT(*) FROM archive JOIN archive_jids o ON o.id = archive.owner WHERE o.jid NOT LIKE '%@%'").fetchone()[0]
print(f"[smoke] {delivered} messages delivered, {rows} archive rows of accounts", file=sys.stderr)
if delivered == 0 or rows < 2 * delivered:
    sys.exit(f"smoke: expected at least {2 * delivered} archive rows, found {rows}")
PY
