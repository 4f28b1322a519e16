#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what the
# tests need (idempotent), then every Go test with the race detector and the
# fuzz targets for a few seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== set-up"
bash scripts/setup.sh

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 40m ./... 2>&1 | tee /tmp/tandem-test.log

echo "== fuzz (briefly)"
bash scripts/fuzz.sh 5s
