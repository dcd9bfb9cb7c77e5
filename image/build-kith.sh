#!/usr/bin/env bash
# Cross-compiles `kith` for aarch64-unknown-linux-gnu with Debian's Rust and cross gcc
# (rustup cannot add targets on the build machine), into a target dir outside the repo so
# that a fresh clone reuses the compiled dependencies. Prints the binary's path on stdout.
#   KITH_IMAGE_PROFILE=release (default; lto=fat, what ships) or ci (quicker to link)
#   KITH_IMAGE_SRC=head  build the last commit (a copy of it), not the work tree: for
#                        building an image while the work tree holds unfinished edits
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

profile=${KITH_IMAGE_PROFILE:-release}
target=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${KITH_CROSS_TARGET_DIR:-$KITH_IMAGE_CACHE/target-aarch64}
# Debian's toolchain by full path: rustup's proxies come first on PATH and lack the target.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_BUILD_TARGET

# Each new checkout path adds its own copies of the workspace crates: start afresh when
# the target dir has grown past 8 GB rather than fill the disk.
if [[ -d $CARGO_TARGET_DIR ]] && (( $(du -sm "$CARGO_TARGET_DIR" | cut -f1) > 8192 )); then
  log "kith: $CARGO_TARGET_DIR is over 8 GB, removing it"
  rm -rf "$CARGO_TARGET_DIR"
fi
log "kith: cargo build --profile $profile --target $target (Debian rustc $(/usr/bin/rustc --version | cut -d' ' -f2))"
src=$REPO_DIR
if [[ ${KITH_IMAGE_SRC:-} == head ]]; then
  src=$KITH_IMAGE_CACHE/src-head
  rm -rf "$src"; mkdir -p "$src"
  git -C "$REPO_DIR" archive --format=tar HEAD | tar -x -C "$src"
  log "kith: building commit $(git -C "$REPO_DIR" rev-parse --short HEAD) (copy in $src)"
fi
cd "$src"
timeout 2400 nice -n 10 /usr/bin/cargo build --profile "$profile" --target "$target" \
  -p kith --bin kith >&2
bin=$CARGO_TARGET_DIR/$target/$profile/kith
[[ -x $bin ]] || die "kith: no binary at $bin"
# ELF e_machine (offset 18) must be EM_AARCH64 = 0xb7.
[[ $(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n') == b700 ]] || die "kith: $bin is not an aarch64 ELF"
log "kith: $bin ($(stat -c %s "$bin") bytes)"
echo "$bin"
