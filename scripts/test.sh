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
# One package at a time (-p 1): on two cores the 100,000-request gateway test
# and the end-to-end suite slowed cold starts tenfold in the packages that
# ran beside them, and tandem bench's serverless-vs-dedicated agreement
# test measures cold starts. Serial costs a few minutes, not flakes.
go test -race -count=1 -p 1 -timeout 40m ./...

echo "== fuzz (briefly)"
bash scripts/fuzz.sh 5s
