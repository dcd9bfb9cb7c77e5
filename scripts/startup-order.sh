#!/usr/bin/env bash
# Makes appliance/startup.ld again: the linker script that gathers the functions a start
# of `kith serve` runs in front of the rest of its code (docs/benchmarks.md, "Idle RSS").
# Run it after changes to what kith does at start, or after a compiler or dependency
# upgrade, then commit the new script; tests/bench/compare.sh's idle figure shows the effect.
#
# It builds a release kith with its symbols, starts it twice under valgrind's callgrind
# (a new box: empty data directory, every listener; then the same box again with two
# accounts and a history of 50 000 messages, as after a reboot), and writes every function
# of kith that ran.
#   KITH_TRACE_TARGET_DIR  where the traced build goes (default target/startup-trace)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v valgrind >/dev/null; then
  # shellcheck source=lib/apt.sh
  source scripts/lib/apt.sh
  apt_ensure valgrind
fi

target_dir=${KITH_TRACE_TARGET_DIR:-$root/target/startup-trace}
echo "startup-order: building release kith with symbols in $target_dir" >&2
# `-C strip=none` given to rustc for the binary alone: a profile setting
# (CARGO_PROFILE_RELEASE_STRIP) would change every symbol's hash, and the exact
# names in the script would then miss the build that ships.
# Linked without the present script: valgrind counts code outside `.text` to no object.
KITH_NO_STARTUP_LD=1 CARGO_TARGET_DIR=$target_dir cargo rustc --release -p kith --bin kith -- -C strip=none >&2
bin=$target_dir/release/kith

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/kith.toml" <<EOF
domain = "localhost"
data_dir = "$work/data"

[listen]
c2s = "127.0.0.1:0"
c2s_tls = "127.0.0.1:0"
s2s = "127.0.0.1:0"
http = "127.0.0.1:0"
https = "127.0.0.1:0"
EOF

# One start under callgrind: until kith says it is ready, then 3 s at rest, then SIGINT.
trace() {
  local out=$1 log=$work/$1.log
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$out" \
    "$bin" --config "$work/kith.toml" serve >"$log" 2>&1 &
  local pid=$! i
  for ((i = 0; i < 600; i++)); do
    grep -q "kith ready" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "startup-order: kith stopped" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "kith ready" "$log" || { cat "$log" >&2; echo "startup-order: kith never got ready" >&2; exit 1; }
  # What a first client does to a box at rest (and what a port probe does): a connection
  # closed at once, then one that opens a stream and reads the features.
  local port
  port=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n 's/.*listening for clients addr=Some(127\.0\.0\.1:\([0-9]*\)).*direct_tls=false.*/\1/p' | head -n 1)
  [[ -n $port ]] || { cat "$log" >&2; echo "startup-order: no c2s port in the log" >&2; exit 1; }
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null ||
    { echo "startup-order: kith refused a connection on $port" >&2; exit 1; }
  python3 image/test/xmpp_probe.py 127.0.0.1 "$port" localhost >/dev/null ||
    { echo "startup-order: no stream features from kith on $port" >&2; exit 1; }
  sleep 3
  kill -INT "$pid"
  wait "$pid" || true
}

trace first-start
for user in alice bob; do
  echo 'a long enough password' | "$bin" --config "$work/kith.toml" user add "$user@localhost" >&2
done
python3 scripts/lib/fill_archive.py "$work/data/kith.db" 50000 alice bob
trace restart
python3 scripts/startup_ld.py appliance/startup.ld "$bin" "$work/first-start" "$work/restart"
