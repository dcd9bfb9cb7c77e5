#!/usr/bin/env bash
# Build the browser code and stylesheet into dist/ (embedded in the kith binary by
# webadmin/src/assets.rs): npm ci from the committed package-lock.json (exact pins),
# then esbuild bundles src/app.js (htmx + its SSE extension + our modules) and
# src/style.css, minified. The output is deterministic and committed, so a fresh clone
# and the image's cross build need no node; `build.sh --check` says whether dist/ is
# what the sources and pins produce, after node's test runner ran test/ (tests/run.sh
# runs it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
stamp=node_modules/.lock.sha256
sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$sum" ]]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$sum" >"$stamp"
fi
out=dist
if [[ ${1:-} == --check ]]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
esbuild=node_modules/.bin/esbuild
"$esbuild" src/app.js --bundle --format=esm --minify --target=es2022 \
    --legal-comments=eof --log-level=warning --outfile="$out/app.js"
"$esbuild" src/style.css --bundle --minify --log-level=warning --outfile="$out/app.css"
if [[ ${1:-} == --check ]]; then
    node --test test/
    for f in app.js app.css; do
        cmp -s "$out/$f" "dist/$f" || { echo "build.sh: dist/$f is stale; run webadmin/client/build.sh and commit dist/" >&2; exit 1; }
    done
    echo "build.sh: dist/ matches the sources"
fi
