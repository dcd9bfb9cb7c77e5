#!/usr/bin/env bash
# The stream management resume benchmark (tests/bench/sm_resume.py) against Prosody
# (mod_smacks, part of Prosody 0.12) and ejabberd (mod_stream_mgmt), each set up by
# servers.sh with stream management added. Prints the same lines as sm_resume.py.
#   tests/bench/sm_resume_peers.sh [RUNS] [SIZES]      (defaults: 20 and 0,100)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${1:-20}
SIZES=${2:-0,100}
BENCH=${KITH_BENCH_BIN:-$ROOT/target/ci/kith-bench}
KITH_BIN=${KITH_BIN:-$ROOT/target/ci/kith}
WORK=$(mktemp -d /tmp/kith-sm-peers.XXXXXX)
chmod 755 "$WORK"  # ejabberd runs as its own user
PROSODY_EXTRA_MODULES='; "smacks"'
EJABBERD_EXTRA_MODULES='  mod_stream_mgmt: {}'

# shellcheck source=tests/bench/servers.sh
source "$ROOT/tests/bench/servers.sh"

SERVER_PID=
RUNNING=
cleanup() {
  case "$RUNNING" in
    prosody) stop_prosody ;;
    ejabberd) stop_ejabberd ;;
  esac
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BENCH" ] || cargo build --profile ci -p kith-bench
install_peers
make_cert
for server in ${SERVERS:-prosody ejabberd}; do
  "provision_$server" 2
  "start_$server"
  RUNNING=$server
  log "$server: resume benchmark, $RUNS runs of N=$SIZES"
  "$ROOT/.venv/bin/python" tests/bench/sm_resume.py --addr "127.0.0.1:$PORT" \
    --users u1,u2 --password "$PASSWORD" --runs "$RUNS" --n "$SIZES" 2>&1 |
    sed "s/^N=/$server N=/"
  "stop_$server"
  RUNNING=
done
