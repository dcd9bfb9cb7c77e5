#!/usr/bin/env bash
# Prepare the machine for the end-to-end tests. Idempotent: safe to run again.
#
# - Debian packages the tests use (openssl, for the e2e tests' throw-away CA; prosody,
#   ejabberd and dnsmasq for the federation tests), installed
#   with apt-get only when missing (apt-get update only then, too), through
#   scripts/lib/apt.sh, which also brings a preinstalled package of the same source at a
#   version no configured suite offers to the suite's version.
# - A virtualenv at <repo>/.venv with the exact pins of tests/requirements.txt.
# - tests/web/node_modules: Converse.js and playwright-core, exact pins from
#   tests/web/package-lock.json (`npm ci`); the browser is Debian's chromium, never a
#   downloaded one.
#
# Needs only Python 3.11+, apt and root (or sudo) on a fresh machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

# Preconditions this script cannot install: say which one is missing, and stop.
fail() { echo "setup.sh: $*" >&2; exit 1; }
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    fail "needs root (or sudo) to install Debian packages and to run the image and namespace tests"
fi
# A strict run (tests/run.sh) skips nothing, and some tests need root itself: the
# full-disk test mounts a tmpfs, the federation tests make network namespaces.
if [[ ${KITH_STRICT:-0} == 1 && $(id -u) -ne 0 ]]; then
    fail "tests/run.sh needs root: the full-disk test mounts a tmpfs and the federation tests make network namespaces (run it as root, e.g. sudo -E tests/run.sh)"
fi
case ":$PATH:" in
    *:/usr/sbin:*|*:/sbin:*) ;;
    *) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
       echo "setup.sh: /usr/sbin was not on PATH; added for this run" ;;
esac
command -v cargo >/dev/null 2>&1 || fail "no Rust toolchain: cargo is not on PATH"
cargo fmt --version >/dev/null 2>&1 || fail "the Rust toolchain has no rustfmt (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || fail "the Rust toolchain has no clippy (rustup component add clippy)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "needs Python 3.11 or newer ($python is $("$python" --version 2>&1))"

# Debian packages: command -> package.
# prosody, ejabberd and dnsmasq: the real federation peers and their DNS (test_federation.py);
# chromium and npm: Converse.js and the web shell in a real browser (test_converse.py,
# test_web_shell.py); curl: HTTP/2 negotiation (test_web_shell.py);
# g++: libFuzzer's C++ sources, built by the libfuzzer-sys crate (fuzz/run.sh);
# pebble (with pebble-challtestsrv): the ACME CA of the certificate tests, and bind9's
# named: the DNS server the RFC 2136 (DNS-01) test updates (test_certificates.py).
declare -A want=([openssl]=openssl [prosody]=prosody [ejabberdctl]=ejabberd [dnsmasq]=dnsmasq-base
                [chromium]=chromium [npm]=npm [curl]=curl [g++]=g++ [unshare]=util-linux
                [pebble]=pebble [pebble-challtestsrv]=pebble [named]=bind9)
missing=()
for cmd in "${!want[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
# `python3 -m venv` needs ensurepip (Debian splits it out as python3-venv).
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    echo "setup.sh: installing Debian packages: ${missing[*]}"
    # shellcheck source=../scripts/lib/apt.sh
    source "$root/scripts/lib/apt.sh"
    apt_ensure --with-recommends "${missing[@]}"
fi

# The venv is rebuilt only when requirements.txt changed since it was last filled.
stamp="$venv/.requirements.sha256"
want_sum="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want_sum" ]]; then
    echo "setup.sh: $venv up to date"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-virtualenv -r "$here/requirements.txt"
    echo "$want_sum" >"$stamp"
    echo "setup.sh: $venv ready" \
        "($("$venv/bin/python" -c 'import slixmpp; print("slixmpp", slixmpp.__version__)'))"
fi

# Browser-test packages: reinstalled only when the lock file changed.
web="$here/web"
web_stamp="$web/node_modules/.lock.sha256"
web_sum="$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$web_stamp" && "$(cat "$web_stamp")" == "$web_sum" ]]; then
    echo "setup.sh: $web/node_modules up to date"
else
    (cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$web_sum" >"$web_stamp"
    echo "setup.sh: $web/node_modules ready"
fi
