#!/usr/bin/env bash
# Build Gennai's front-end assets (run via `make assets`); npm works in this folder (gennai/frontend).
#
#   1. npm ci  — installs the exact versions pinned in package-lock.json
#   2. Tailwind CSS v4 (+ Digital Agency theme) → gennai/static/gennai/css/app.css (minified)
#   3. Vendors htmx, the htmx SSE extension and Chart.js (UMD build) → gennai/static/gennai/js/
#
# The outputs are committed, so running the app never needs Node or a CDN.
# Set GENNAI_SKIP_NPM_CI=1 to reuse an existing node_modules/.
set -euo pipefail

FRONTEND="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$FRONTEND/../.." && pwd)"
cd "$FRONTEND"

STATIC="$ROOT/gennai/static/gennai"
CSS_OUT="$STATIC/css/app.css"
JS_DIR="$STATIC/js"

command -v npm >/dev/null 2>&1 || { echo "assets: npm not found (Node.js 20+ is required)" >&2; exit 1; }

if [[ "${GENNAI_SKIP_NPM_CI:-0}" != "1" || ! -d node_modules ]]; then
  echo "assets: npm ci"
  # --ignore-scripts: nothing we use needs an install script (Tailwind's native
  # binaries come as optional packages); --include=dev in case NODE_ENV=production.
  npm ci --include=dev --ignore-scripts --no-audit --no-fund
fi

mkdir -p "$STATIC/css" "$JS_DIR"

echo "assets: tailwind → $CSS_OUT"
./node_modules/.bin/tailwindcss --input css/app.css --output "$CSS_OUT" --minify

echo "assets: vendoring htmx → $JS_DIR"
cp node_modules/htmx.org/dist/htmx.min.js "$JS_DIR/htmx.min.js"
cp node_modules/htmx-ext-sse/dist/sse.js "$JS_DIR/htmx-ext-sse.js"
# Chart.js for the console's usage dashboard (loaded only on that page).
cp node_modules/chart.js/dist/chart.umd.min.js "$JS_DIR/chart.umd.min.js"

# Sanity checks: the outputs exist and are not empty.
for f in "$CSS_OUT" "$JS_DIR/htmx.min.js" "$JS_DIR/htmx-ext-sse.js" "$JS_DIR/chart.umd.min.js" "$JS_DIR/app.js"; do
  [[ -s "$f" ]] || { echo "assets: missing or empty $f" >&2; exit 1; }
done

htmx_version="$(node -p "require('./node_modules/htmx.org/package.json').version")"
sse_version="$(node -p "require('./node_modules/htmx-ext-sse/package.json').version")"
echo "assets: done (htmx $htmx_version, htmx-ext-sse $sse_version, css $(wc -c <"$CSS_OUT") bytes)"
