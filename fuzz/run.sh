#!/usr/bin/env bash
# Build the fuzz targets with coverage instrumentation (stable rustc, libFuzzer
# from the libfuzzer-sys crate) and run each for a bounded time, starting
# from a copy of its committed seed corpus. Exits non-zero on any crash,
# panic, timeout or memory blow-up; the input is left in fuzz/artifacts/.
#   fuzz/run.sh                 every target, 20 s each
#   fuzz/run.sh 600             every target, 10 minutes each
#   fuzz/run.sh 600 stream sasl only these targets
# See docs/fuzzing.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

seconds="${1:-20}"
[ "$#" -gt 0 ] && shift
all=(stream bosh websocket sasl jid config upload)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

# Inputs larger than what a target's parser meets in one go only slow it down.
declare -A max_len=(
  [stream]=16384 [bosh]=8192 [websocket]=4096 [sasl]=1024
  [jid]=4096 [config]=4096 [upload]=2048
)

# Instrument for libFuzzer with stable codegen options only (what cargo-fuzz
# passes, minus the sanitizer, which needs nightly): edge coverage, 8-bit
# counters, the PC table, comparison tracing; plus debug assertions and
# overflow checks so that arithmetic overflow is a crash too. `--target`
# keeps these flags off build scripts and proc-macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# The instrumented build lives outside the clone when it can (like the image's cache),
# so a fresh clone on the same machine (CI) rebuilds only what changed.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
elif mkdir -p /var/cache/kith-fuzz 2>/dev/null && [ -w /var/cache/kith-fuzz ]; then
  export CARGO_TARGET_DIR=/var/cache/kith-fuzz/target
else
  export CARGO_TARGET_DIR="$here/target"
fi
built=$(date +%s)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
# Not --locked: a dependency added to kith-server or kith-web must not break
# this build; commit fuzz/Cargo.lock when the build changed it.
cargo build --release --target "$triple" "${bins[@]}"
echo "fuzz targets built in $(( $(date +%s) - built ))s"
bin_dir="$CARGO_TARGET_DIR/$triple/release"

export RUST_BACKTRACE=1
failed=()
for t in "${targets[@]}"; do
  work="$here/work/$t"
  artifacts="$here/artifacts/$t"
  rm -rf "$work"
  mkdir -p "$work" "$artifacts"
  cp "$here/corpus/$t"/* "$work/"
  log="$here/work/$t.log"
  dict=()
  [ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
  status=0
  start=$(date +%s)
  # -timeout: one input may take at most 10 s (an endless loop is a crash);
  # -rss_limit_mb: a memory blow-up is a crash too.
  "$bin_dir/$t" "$work" "${dict[@]}" \
    -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" \
    -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1 || true)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $status)"
    failed+=("$t")
  fi
  printf '%-10s %s s, %s runs, %s exec/s, %s, peak %s MB: %s\n' \
    "$t" "$elapsed" "${runs:-?}" "${speed:-?}" "${cov:-cov: ?}" "${rss:-?}" "$result"
  if [ "$status" -ne 0 ]; then
    echo "---- $t: last lines of $log"
    tail -n 60 "$log"
    echo "---- crash inputs in $artifacts:"
    ls -l "$artifacts"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
