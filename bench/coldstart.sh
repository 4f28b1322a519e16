#!/usr/bin/env bash
# Cold-start benchmark (tandem issue 2): what tandem adds to the first
# answer from zero on the process backend, over the instance program's own
# exec-to-ready time. Builds tandem, fakemodel and cmd/coldstart into a
# scratch folder and runs cmd/coldstart (read its doc comment for the
# method); extra arguments go to it.
#
#   bash bench/coldstart.sh            # 20 rounds (about 40 s)
#   bash bench/coldstart.sh -n 50
#   bash bench/coldstart.sh functions  # the seeds' iris Lambda handler and
#                                      # Flask app, with and without
#                                      # runtime.template: median of 20 first
#                                      # answers from zero (a few minutes)
#
# Needs: go; for functions, /usr/bin/python3 with flask and sklearn, and
# examples/iris-flask/model.pkl (scripts/setup.sh). TANDEM_BIN=path measures that tandem binary instead of
# building ./cmd/tandem (to compare a prototype); KEEP=1 keeps the scratch
# folder (tandem's log and data folder).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/bench-coldstart.XXXXXX)
cleanup() {
	local rc=$?
	if [[ ${KEEP:-} == 1 || $rc != 0 ]]; then
		echo "coldstart.sh: logs kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

echo "== build (into $WORK/bin)"
mkdir -p "$WORK/bin" "$WORK/run"
if [[ -n ${TANDEM_BIN:-} ]]; then
	cp "$TANDEM_BIN" "$WORK/bin/tandem"
else
	go build -o "$WORK/bin/tandem" ./cmd/tandem
fi
go build -o "$WORK/bin/fakemodel" ./cmd/fakemodel
go build -o "$WORK/bin/coldstart" ./cmd/coldstart

echo "== measure ($(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg))"
# cmd/coldstart stops the tandem it starts, even when interrupted.
if [[ ${1:-} == functions ]]; then
	shift
	"$WORK/bin/coldstart" -tandem "$WORK/bin/tandem" -functions "$PWD/examples" -work-dir "$WORK/run" "$@"
else
	"$WORK/bin/coldstart" -tandem "$WORK/bin/tandem" -model "$WORK/bin/fakemodel" -work-dir "$WORK/run" "$@"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
