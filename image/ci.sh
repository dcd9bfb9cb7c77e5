#!/usr/bin/env bash
# CI entry point for the appliance image: build it (reusing the cached root filesystem and
# cross-compiled dependencies in /var/cache/kith-image) and boot it under qemu.
# Exits non-zero on any failure. Measured on the 2-core machine while it was shared with
# other builds: cold 16 min, warm 5 min 15 s (docs/benchmarks.md, "Appliance image").
set -euo pipefail
cd "$(dirname "$0")"
_t0=$(date +%s); export _t0
echo "== image: build"
timeout 2700 bash ./build.sh
echo "== image: boot test"
timeout 900 bash ./boot-test.sh
echo "== image: done in $(( $(date +%s) - _t0 ))s"
