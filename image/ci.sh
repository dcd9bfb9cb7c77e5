#!/usr/bin/env bash
# CI entry point for the appliance image: build it (reusing the cached root filesystem and
# cross-compiled dependencies in /var/cache/kith-image) and boot it under qemu.
# Exits non-zero on any failure. Cold: ~15-20 min on 2 cores; warm: ~2-4 min.
set -euo pipefail
cd "$(dirname "$0")"
export _t0=$(date +%s)
echo "== image: build"
timeout 2700 bash ./build.sh
echo "== image: boot test"
timeout 900 bash ./boot-test.sh
echo "== image: done in $(( $(date +%s) - _t0 ))s"
