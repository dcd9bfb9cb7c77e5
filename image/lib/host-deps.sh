#!/usr/bin/env bash
# Installs the build machine's tools for the image: Debian's aarch64 cross toolchain and
# Rust, mmdebstrap + qemu-user for the arm64 root filesystem, the image tools, and
# qemu-system-aarch64 for the boot test. Idempotent: does nothing when all are there.
# A preinstalled package at a version no configured suite offers (e.g. a backports
# qemu-utils) is brought to the suite's version: see scripts/lib/apt.sh.
set -euo pipefail

PKGS=(
  # cross-compiling kith (Debian's Rust: rustup cannot add targets on this machine)
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross rustc-web cargo-web libstd-rust-web-dev:arm64
  # arm64 root filesystem
  mmdebstrap arch-test qemu-user-static binfmt-support
  # disk image without loop devices or mounts
  dosfstools mtools fdisk e2fsprogs genimage xz-utils
  # boot test
  qemu-system-arm qemu-utils iproute2 python3
)

# shellcheck source=../../scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/apt.sh"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  _apt_updated=0
fi
apt_ensure "${PKGS[@]}"

# mmdebstrap runs arm64 maintainer scripts through qemu-user: binfmt_misc must know
# the aarch64 interpreter (containers often have neither the mount nor the entry).
if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || { echo "host-deps: binfmt for aarch64 missing" >&2; exit 1; }
echo "host-deps: ok"
