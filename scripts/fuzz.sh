#!/usr/bin/env bash
# Runs every go test -fuzz target for a short time each (default 10s).
#
# Go 1.26's fuzz coordinator can fail a target with "context deadline exceeded"
# at the -fuzztime boundary when a worker is still mid-call (golang/go#75804,
# fixed in Go 1.27): a race in the harness, with no failing input. A target
# that fails that way, and wrote no failing input, is run again once for a
# fixed number of executions, which has no deadline to race. Every other
# failure, and any failing input written, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for f in $(grep -rl --include="*_test.go" "^func Fuzz" internal cmd); do
  pkg=./$(dirname "$f")
  for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "-- $pkg $name ($t)"
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" 2>&1 | tee "$log"; then
      continue
    fi
    if grep -q "Failing input written to" "$log" || ! grep -q "^    context deadline exceeded" "$log"; then
      exit 1
    fi
    echo "-- $pkg $name: the coordinator's deadline race (golang/go#75804), no failing input; again for 20000 executions"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime 20000x "$pkg"
  done
done
