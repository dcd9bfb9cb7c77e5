# Shared settings for the image scripts. Sourced, not run.
# shellcheck shell=bash

IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$IMAGE_DIR/.." && pwd)
# Everything slow to make lives outside the repo, so a fresh clone (CI) reuses it.
KITH_IMAGE_CACHE=${KITH_IMAGE_CACHE:-/var/cache/kith-image}
KITH_IMAGE_OUT=${KITH_IMAGE_OUT:-$IMAGE_DIR/out}
SUITE=bookworm

_t0=${_t0:-$(date +%s)}
export _t0
log()  { printf '[image %4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die()  { log "FAILED: $*"; exit 1; }

# Mirror lines for mmdebstrap, taken from this machine's own apt sources (so no host is
# written down here): "deb URI SUITE COMPONENTS" for SUITE, SUITE-updates, SUITE-security.
apt_mirror_lines() {
  local comps="main non-free-firmware"
  python3 - "$SUITE" "$comps" <<'PY'
import glob, re, sys
suite, comps = sys.argv[1], sys.argv[2]
uris = {}
for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = dict(re.findall(r"^(\S+):\s*(.*)$", stanza, re.M))
        if "deb" not in f.get("Types", "").split():
            continue
        for s in f.get("Suites", "").split():
            uris.setdefault(s, f.get("URIs", "").split()[0])
for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
    try:
        for line in open(path):
            p = line.split("#")[0].split()
            if len(p) >= 3 and p[0] == "deb":
                p = [x for x in p if not x.startswith("[")]
                uris.setdefault(p[2], p[1])
    except FileNotFoundError:
        pass
for s in (suite, suite + "-updates", suite + "-security"):
    if s not in uris:
        sys.exit("no apt source for suite %s on this machine" % s)
    print("deb %s %s %s" % (uris[s], s, comps))
PY
}

# Copy the newest kernel and initrd out of the image's FAT BOOT partition (the first
# partition, at 4 MiB) into DIR as vmlinuz and initrd.img; prints the kernel's name.
# Usage: extract_boot_files IMAGE DIR WHO   (WHO prefixes the error message)
extract_boot_files() {
  local fat="$1@@$((4 * 1024 * 1024))" kernel initrd
  kernel=$(mdir -b -i "$fat" ::/ | sed -n 's|^::/\(vmlinuz-.*\)|\1|p' | sort -V | tail -n 1)
  initrd=$(mdir -b -i "$fat" ::/ | sed -n 's|^::/\(initrd.img-.*\)|\1|p' | sort -V | tail -n 1)
  [[ -n $kernel && -n $initrd ]] || die "$3: no kernel/initrd in the BOOT partition"
  mcopy -n -i "$fat" "::/$kernel" "$2/vmlinuz"
  mcopy -n -i "$fat" "::/$initrd" "$2/initrd.img"
  printf '%s\n' "$kernel"
}

# Stop qemu: its own PID (from -pidfile PIDFILE), then the timeout(1) wrapper WRAPPER_PID;
# SIGTERM, up to 3 s of grace, then SIGKILL of the same PID, and reap the wrapper.
# Usage: stop_qemu PIDFILE WRAPPER_PID
stop_qemu() {
  local p
  for p in "$(cat "$1" 2>/dev/null)" "$2"; do
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.3; done
    kill -KILL "$p" 2>/dev/null || true
  done
  [[ -n $2 ]] && wait "$2" 2>/dev/null || true
}
