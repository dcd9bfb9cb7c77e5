#!/usr/bin/env bash
# Runs every test of Kith: style and lints, unit tests, end-to-end tests with real
# clients, the benchmark smoke run and the appliance image boot test.
# Installs what it needs (Debian packages, a Python venv) through tests/setup.sh.
#   tests/run.sh            everything
#   KITH_SKIP_IMAGE=1 ...   everything but the (slow) image build and qemu boot test
#                           (which otherwise runs alongside the other steps)
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's administration tools (ip, nft, mkfs, sfdisk) live in /usr/sbin.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac
# Strict: a test that cannot run here (a missing program, a missing privilege) fails and
# names what is missing; nothing is skipped (tests/e2e/conftest.py, image/boot-test.sh).
export KITH_STRICT=1
export KITH_BOOTTEST_STRICT="${KITH_BOOTTEST_STRICT:-1}"
started=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$1" "$(( $(date +%s) - started ))"; }

step "set-up: packages and the Python venv"
bash tests/setup.sh

# The appliance image (apt, a cross build, then qemu boots and power cuts: mostly
# emulation, waiting on little of what the steps below use) runs alongside them, in its
# own process group, its output in target/image-ci.log, printed whole when it is waited
# for at the end. Serially the two would take over 45 minutes on a fresh 2-core machine.
image_pid=""
if [ -f image/ci.sh ] && [ "${KITH_SKIP_IMAGE:-0}" != 1 ]; then
  step "appliance image: started alongside (log: target/image-ci.log)"
  mkdir -p target
  setsid bash image/ci.sh > target/image-ci.log 2>&1 < /dev/null &
  image_pid=$!
  trap '[ -z "$image_pid" ] || kill -TERM -- "-$image_pid" 2>/dev/null || true' EXIT
fi

step "format and lints"
# The browser code embedded in the binary is what its pinned npm packages build.
bash webadmin/client/build.sh --check
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci -- -D warnings

step "build kith (profile ci)"
cargo build --profile ci --workspace --bins
# (Cargo's target folder may be elsewhere: CARGO_TARGET_DIR.)
export KITH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/ci/kith"
export KITH_BENCH_BIN="${CARGO_TARGET_DIR:-$PWD/target}/ci/kith-bench"

step "unit and Rust interop tests"
cargo test --workspace --profile ci

step "fuzz targets (libFuzzer, 20 s each)"
bash fuzz/run.sh 20

step "end-to-end tests (slixmpp, raw sockets)"
report="${CARGO_TARGET_DIR:-$PWD/target}/e2e-report.xml"
rm -f "$report"
.venv/bin/python -m pytest tests/e2e --junitxml="$report"
# The strict hook turns skips into failures; this says so again from pytest's own count.
.venv/bin/python - "$report" <<'PY'
import sys
import xml.etree.ElementTree as ET
suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(f"end-to-end tests: {skipped} skipped")
sys.exit(f"end-to-end tests: {skipped} skipped; a strict run skips nothing" if skipped else 0)
PY

if [ -f tests/bench/smoke.sh ]; then
  step "benchmark smoke run"
  bash tests/bench/smoke.sh
fi

if [ -n "$image_pid" ]; then
  step "appliance image: build, boot test, power cuts (waiting for it; its log follows)"
  image_rc=0
  wait "$image_pid" || image_rc=$?
  image_pid=""
  sed 's/^/  image | /' target/image-ci.log
  [ "$image_rc" = 0 ] || { echo "appliance image: FAILED (exit $image_rc), see above"; exit 1; }
fi

step "all tests passed"
