#!/bin/sh
# fetch-onnxruntime.sh puts ONNX Runtime's shared library (CPU, linux x64)
# where tandem's built-in ONNX runtime looks for it by default:
#
#   .cache/onnxruntime/libonnxruntime.so.1   (under the repository root)
#
# The library ships inside the npm package onnxruntime-node; this script
# takes it from `npm pack` (no install scripts run) and checks its sha256.
# It does nothing when the library is already there with the right digest.
# Set TANDEM_ONNXRUNTIME_LIB to use a library somewhere else instead.
set -eu

VERSION=1.24.1
SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
MEMBER=package/bin/napi-v6/linux/x64/libonnxruntime.so.1

root=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="$root/.cache/onnxruntime"
dest="$dest_dir/libonnxruntime.so.1"

check() { [ -f "$1" ] && echo "$SHA256  $1" | sha256sum -c --status -; }

if check "$dest"; then
	echo "onnxruntime $VERSION already at $dest"
	exit 0
fi

case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*) echo "fetch-onnxruntime.sh: only linux/x86_64 is supported (got $(uname -s)/$(uname -m))" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "fetch-onnxruntime.sh: npm is needed (apt-get install npm)" >&2; exit 1; }

mkdir -p "$dest_dir"
# Keep the cache folder out of git without touching the repository's .gitignore.
[ -f "$root/.cache/.gitignore" ] || printf '*\n' >"$root/.cache/.gitignore"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime-node@$VERSION from npm..."
(cd "$tmp" && npm pack --silent "onnxruntime-node@$VERSION" >/dev/null)
tar xzf "$tmp/onnxruntime-node-$VERSION.tgz" -C "$tmp" "$MEMBER"
if ! check "$tmp/$MEMBER"; then
	echo "fetch-onnxruntime.sh: sha256 of libonnxruntime.so.1 does not match $SHA256" >&2
	exit 1
fi
mv "$tmp/$MEMBER" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "onnxruntime $VERSION at $dest"
