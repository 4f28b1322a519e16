#!/usr/bin/env bash
# vendor-js.sh: copies the charting library (uPlot, MIT) that the dashboard
# and bench's HTML report draw with from its npm package into
# internal/uplot/, where go:embed takes it into the binary. The files are
# committed, so builds need no network; run this only to change the version.
set -euo pipefail

UPLOT_VERSION=1.6.32

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/internal/uplot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null
tar -xzf "uplot-$UPLOT_VERSION.tgz"
cp package/dist/uPlot.iife.min.js "$dest/uPlot.iife.min.js"
cp package/dist/uPlot.min.css "$dest/uPlot.min.css"
cp package/LICENSE "$dest/LICENSE"
echo "$UPLOT_VERSION" >"$dest/VERSION"
echo "vendored uPlot $UPLOT_VERSION into $dest"
