#!/usr/bin/env bash
# Prepares the tandem-onnx build context in $1: the tandem binary and the
# ONNX Runtime library (fetched and checked by scripts/fetch-onnxruntime.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ctx="$1"
bash "$ROOT/scripts/fetch-onnxruntime.sh" >/dev/null
(cd "$ROOT" && go build -o "$ctx/tandem" ./cmd/tandem)
cp "$ROOT/.cache/onnxruntime/libonnxruntime.so.1" "$ctx/libonnxruntime.so.1"
