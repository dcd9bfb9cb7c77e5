# apt_ensure: install Debian packages as one consistent set, whatever the machine came with.
# Sourced, not run (bash).
#
#   apt_ensure [--with-recommends] PKG[:ARCH]...
#
# Installs the named packages that are missing, from this machine's configured suites.
# Machines of this kind sometimes come with a package at a version that no configured
# source offers any more (seen: `qemu-utils` from bookworm-backports with no backports
# source, which Breaks bookworm's `qemu-system-*`). Before installing, every installed
# package built from the same source package as a wanted one is checked: when its version
# is not downloadable from a configured source, it is brought to the newest version that
# is (a downgrade if need be). No version string is written down here, so a point release
# changes nothing. Idempotent: with everything present and consistent it only reads dpkg's
# database (no `apt-get update`, no network).
# shellcheck shell=bash

_apt_updated=0
_apt_update() {
  if [[ $_apt_updated == 0 ]]; then
    timeout 600 apt-get update -q >/dev/null || { echo "apt: apt-get update failed" >&2; return 1; }
    _apt_updated=1
  fi
}

# Is PKG (optionally PKG:ARCH) installed?
_apt_installed() {
  dpkg-query -W -f='${db:Status-Abbrev}\n' "$1" 2>/dev/null | grep -q '^ii'
}

# The newest version of PKG that a configured source offers (empty when none).
_apt_newest_available() {
  local best="" v
  while IFS= read -r v; do
    [[ -n $v ]] || continue
    if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done < <(apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
  printf '%s' "$best"
}

# Installed packages, from the same source packages as the wanted ones, whose installed
# version no configured source offers: printed as PKG:ARCH=VERSION to install instead.
_apt_stray_pins() {
  local -A sources=()
  local p src
  for p in "$@"; do
    src=$(apt-cache show --no-all-versions "$p" 2>/dev/null | awk '/^Source:/ {print $2; exit}')
    [[ -n $src ]] || src=${p%%:*}
    sources[$src]=1
  done
  local status name arch version source want
  while IFS='|' read -r status name arch version source; do
    [[ $status == ii* && -n ${sources[$source]:-} ]] || continue
    want=$(_apt_newest_available "$name:$arch")
    [[ -n $want ]] || continue
    if ! apt-cache madison "$name:$arch" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
      echo "apt: $name:$arch $version is offered by no configured source; installing $want" >&2
      printf '%s\n' "$name:$arch=$want"
    fi
  done < <(dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Architecture}|${Version}|${source:Package}\n')
}

apt_ensure() {
  local recommends=--no-install-recommends
  if [[ ${1:-} == --with-recommends ]]; then recommends=""; shift; fi
  local missing=() p
  for p in "$@"; do _apt_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  [[ -z $sudo ]] || { echo "apt: not root; using sudo" >&2; }
  _apt_update
  local pins=()
  mapfile -t pins < <(_apt_stray_pins "$@")
  echo "apt: installing ${missing[*]}${pins[*]:+ (and ${pins[*]})}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y -q \
    ${recommends:+"$recommends"} --allow-downgrades "${missing[@]}" "${pins[@]}"
}
