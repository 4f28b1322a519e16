#!/usr/bin/env bash
# setup.sh prepares a fresh Debian 12 machine (as root) to build, test and
# benchmark tandem. It is idempotent: a step that is already done does nothing.
#
# Usage: bash scripts/setup.sh [STEP...]     (no STEP: run every step, in order)
#        bash scripts/setup.sh --list
#
# To add a step: write a function step_NAME with a one-line "# NAME: ..." comment
# above it, and add NAME to STEPS. Install Debian packages with apt_install, which
# runs apt-get update at most once per run and only when something is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=/usr/bin/python3 # Debian's interpreter; the first python3 on PATH may lack its packages.

# Steps run in this order when none are named.
STEPS=(packages model onnxruntime grpcurl jaeger openai awslambda chromium docker cluster)

log() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

# quiet runs a command with its output kept in a log, shown only on failure.
quiet() {
	local out
	out="$(mktemp)"
	if ! "$@" >"$out" 2>&1; then
		printf 'setup: error: command failed: %s\n' "$*" >&2
		tail -n 30 "$out" | sed 's/^/  | /' >&2
		rm -f "$out"
		return 1
	fi
	rm -f "$out"
}

# missing_packages prints the named Debian packages that are not installed.
missing_packages() {
	local p
	for p in "$@"; do
		if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
			printf '%s\n' "$p"
		fi
	done
}

APT_UPDATED=0

# apt_install installs whichever of the named packages are missing, without
# starting any service they ship (nginx must not take port 80 behind our back).
apt_install() {
	local missing
	mapfile -t missing < <(missing_packages "$@")
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	[[ $EUID -eq 0 ]] || die "need root to install ${missing[*]} (run: sudo bash scripts/setup.sh)"
	command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12; install ${missing[*]} by hand"
	export DEBIAN_FRONTEND=noninteractive
	if ((APT_UPDATED == 0)); then
		log "apt-get update"
		quiet apt-get update -q || die "apt-get update failed (is the Debian mirror reachable?)"
		APT_UPDATED=1
	fi
	log "installing ${missing[*]}"
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local rc=0
	quiet apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
	if ((made_policy)); then rm -f "$policy"; fi
	((rc == 0)) || die "could not install ${missing[*]}"
}

# packages: Python, Flask and scikit-learn for the iris example; nginx and wrk for benchmarks.
step_packages() {
	apt_install python3 python3-flask python3-sklearn python3-numpy python3-joblib python3-uvicorn python3-fastapi nginx-light wrk
	log "packages: ok"
}

# model: train the iris example's model (examples/iris-flask/model.pkl) if it is missing.
step_model() {
	local dir="$ROOT/examples/iris-flask"
	if [[ -s $dir/model.pkl ]]; then
		log "model: ok ($dir/model.pkl exists)"
		return 0
	fi
	[[ -x $PYTHON ]] || die "$PYTHON not found: run 'bash scripts/setup.sh packages' first"
	"$PYTHON" -c 'import sklearn, joblib' 2>/dev/null ||
		die "$PYTHON cannot import sklearn and joblib: run 'bash scripts/setup.sh packages' first"
	quiet "$PYTHON" "$dir/train.py" || die "training the iris model failed"
	log "model: trained $dir/model.pkl"
}

# onnxruntime: ONNX Runtime's shared library (from the npm package onnxruntime-node, sha256-checked).
step_onnxruntime() {
	bash "$ROOT/scripts/fetch-onnxruntime.sh"
	log "onnxruntime: ok"
}

GRPCURL_VERSION=v1.9.4

# grpcurl: grpcurl (github.com/fullstorydev/grpcurl) into .cache/bin, for the test that calls tandem's gRPC service from the official proto.
step_grpcurl() {
	local bin="$ROOT/.cache/bin/grpcurl"
	# Built by go install, so the binary records its module version.
	if [[ -x $bin && "$(go version -m "$bin" 2>/dev/null)" == *"github.com/fullstorydev/grpcurl"*"$GRPCURL_VERSION"* ]]; then
		log "grpcurl: ok ($bin, $GRPCURL_VERSION)"
		return 0
	fi
	command -v go >/dev/null || die "go not found: install Go (go.mod says which version) first"
	mkdir -p "$ROOT/.cache/bin"
	quiet env GOBIN="$ROOT/.cache/bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" ||
		die "go install grpcurl@$GRPCURL_VERSION failed (is the Go module proxy reachable?)"
	log "grpcurl: installed $bin ($GRPCURL_VERSION)"
}

JAEGER_VERSION=v1.76.0

# jaeger: Jaeger all-in-one (github.com/jaegertracing/jaeger/cmd/jaeger) into .cache/bin, for the test that reads tandem's traces back through its query API.
step_jaeger() {
	local bin="$ROOT/.cache/bin/jaeger" stamp="$ROOT/.cache/bin/jaeger.version"
	if [[ -x $bin && -f $stamp && "$(cat "$stamp")" == "$JAEGER_VERSION" ]]; then
		log "jaeger: ok ($bin, $JAEGER_VERSION)"
		return 0
	fi
	command -v go >/dev/null || die "go not found: install Go (go.mod says which version) first"
	mkdir -p "$ROOT/.cache/bin"
	# `go install ...@version` refuses this module (its go.mod has a replace
	# directive), so it is built inside its own module as the Go module
	# proxy serves it (checked against the checksum database). Built inside its
	# module, the binary says "(devel)": the stamp file records the version.
	local dir
	dir="$(cd / && go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[[ -n $dir ]] || die "go mod download github.com/jaegertracing/jaeger@$JAEGER_VERSION failed (is the Go module proxy reachable?)"
	log "jaeger: building $JAEGER_VERSION (a large program: several minutes)"
	(cd "$dir" && quiet env GOBIN="$ROOT/.cache/bin" GOFLAGS=-mod=readonly go install -ldflags='-s -w' ./cmd/jaeger) ||
		die "building jaeger $JAEGER_VERSION failed"
	printf '%s\n' "$JAEGER_VERSION" >"$stamp"
	log "jaeger: installed $bin ($JAEGER_VERSION)"
}

# openai: the official openai npm client (pinned in internal/e2e/testdata/openai/package-lock.json) into .cache/npm/openai, for the test that calls tandem's OpenAI-compatible routes with it.
step_openai() {
	local src="$ROOT/internal/e2e/testdata/openai" dest="$ROOT/.cache/npm/openai"
	if [[ -f $dest/node_modules/openai/package.json ]] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
		log "openai: ok ($dest)"
		return 0
	fi
	command -v npm >/dev/null || apt_install nodejs npm
	mkdir -p "$dest"
	# Keep the cache folder out of git without touching the repository's .gitignore.
	[[ -f $ROOT/.cache/.gitignore ]] || printf '*\n' >"$ROOT/.cache/.gitignore"
	cp "$src/package.json" "$src/package-lock.json" "$dest/"
	# npm ci installs exactly what the lockfile says and checks its integrity hashes.
	quiet npm ci --prefix "$dest" --no-audit --no-fund --ignore-scripts ||
		die "npm ci of the openai client failed (is the npm registry reachable?)"
	log "openai: installed $dest/node_modules/openai ($(node -p "require('$dest/node_modules/openai/package.json').version"))"
}

# awslambda: the AWS SDK's Lambda client (@aws-sdk/client-lambda, pinned in internal/e2e/testdata/awslambda/package-lock.json) into .cache/npm/awslambda, for the test that invokes tandem's functions with it.
step_awslambda() {
	local src="$ROOT/internal/e2e/testdata/awslambda" dest="$ROOT/.cache/npm/awslambda"
	if [[ -f $dest/node_modules/@aws-sdk/client-lambda/package.json ]] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
		log "awslambda: ok ($dest)"
		return 0
	fi
	command -v npm >/dev/null || apt_install nodejs npm
	mkdir -p "$dest"
	[[ -f $ROOT/.cache/.gitignore ]] || printf '*\n' >"$ROOT/.cache/.gitignore"
	cp "$src/package.json" "$src/package-lock.json" "$dest/"
	# In the folder: npm ci --prefix takes this lockfile as out of sync.
	(cd "$dest" && quiet npm ci --no-audit --no-fund --ignore-scripts) ||
		die "npm ci of @aws-sdk/client-lambda failed (is the npm registry reachable?)"
	log "awslambda: installed $dest/node_modules/@aws-sdk/client-lambda ($(node -p "require('$dest/node_modules/@aws-sdk/client-lambda/package.json').version"))"
}

# chromium: Debian's headless Chromium, for the test that opens tandem bench's HTML report.
step_chromium() {
	apt_install chromium
	log "chromium: ok"
}

# docker: Docker Engine from Debian, started without a bridge, and the images the tests run.
step_docker() {
	timeout 1800 bash "$ROOT/scripts/docker.sh" install start images fakemodel images iris images onnx
	log "docker: ok"
}

# cluster: a real single-node Kubernetes cluster (builds kube once into .cache/kube), with the test images loaded.
step_cluster() {
	# Bounded: a stuck step must fail CI, not eat its whole time.
	quiet timeout 1800 bash "$ROOT/hack/local-cluster.sh" up || die "local cluster did not come up (hack/local-cluster.sh up)"
	quiet timeout 600 bash "$ROOT/hack/local-cluster.sh" load tandem-fakemodel:test tandem-onnx:latest || die "loading images into the cluster failed"
	log "cluster: ok ($(bash "$ROOT/hack/local-cluster.sh" kubeconfig))"
}

usage() {
	printf 'usage: bash scripts/setup.sh [STEP...]   (default: all steps)\nsteps:\n'
	local s
	for s in "${STEPS[@]}"; do
		printf '  %s\n' "$(grep -m1 "^# $s: " "${BASH_SOURCE[0]}" | sed 's/^# //')"
	done
}

main() {
	local steps=("$@") s
	case "${1:-}" in
	-h | --help | --list)
		usage
		return 0
		;;
	esac
	if ((${#steps[@]} == 0)); then
		steps=("${STEPS[@]}")
	fi
	for s in "${steps[@]}"; do
		[[ " ${STEPS[*]} " == *" $s "* ]] || die "unknown step '$s' (steps: ${STEPS[*]})"
	done
	for s in "${steps[@]}"; do
		"step_$s"
	done
}

main "$@"
