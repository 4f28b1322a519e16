#!/usr/bin/env bash
# docker.sh installs and starts a Docker engine for tandem's Docker backend and
# builds the images its tests and examples use. Every command is idempotent.
#
#   scripts/docker.sh install        apt-get install docker.io if dockerd is missing
#   scripts/docker.sh start          start dockerd without a bridge, wait for the socket
#   scripts/docker.sh stop           stop the dockerd this script started
#   scripts/docker.sh images [NAME]  build images: fakemodel (default), podserver, iris, onnx,
#                                    tandem, all
#   scripts/docker.sh status         say whether the engine answers
#
# Commands may be chained: scripts/docker.sh install start images
#
# The engine runs with --bridge=none --iptables=false --ip-masq=false: no
# container gets an address outside loopback, so containers use host
# networking (runtime.network: host). No registry is reachable, so images are
# built FROM scratch or from a debootstrap'd Debian base imported with
# `docker import`.
#
# Environment:
#   TANDEM_DOCKER_STATE  folder for the daemon's log and pid (default /tmp/tandem-docker)
#   TANDEM_IMAGE_CACHE   folder for the debootstrap rootfs tarballs (default /var/cache/tandem-images)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TANDEM_DOCKER_STATE:-/tmp/tandem-docker}"
CACHE="${TANDEM_IMAGE_CACHE:-/var/cache/tandem-images}"
SOCK=/var/run/docker.sock
export PATH="/usr/local/go/bin:$PATH"

TMPDIRS=()
cleanup() { [[ ${#TMPDIRS[@]} -eq 0 ]] || rm -rf "${TMPDIRS[@]}"; }
trap cleanup EXIT
# tmpdir VAR sets VAR to a new temporary folder, removed when the script exits.
tmpdir() { local d; d="$(mktemp -d)"; TMPDIRS+=("$d"); printf -v "$1" '%s' "$d"; }

log() { printf 'docker.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# docker runs the Debian client when present: it matches the engine (API 1.41).
docker() {
	if [[ -x /usr/bin/docker ]]; then /usr/bin/docker "$@"; else command docker "$@"; fi
}

engine_up() { docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; }

cmd_install() {
	if command -v dockerd >/dev/null 2>&1; then
		log "dockerd already installed: $(dockerd --version)"
		return
	fi
	log "installing docker.io from Debian"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y docker.io >/dev/null || { apt-get update >/dev/null && apt-get install -y docker.io >/dev/null; }
	log "installed: $(dockerd --version)"
}

cmd_start() {
	if engine_up; then
		log "engine already answering on $SOCK"
		return
	fi
	command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed: run scripts/docker.sh install"
	mkdir -p "$STATE"
	log "starting dockerd (no bridge), log in $STATE/dockerd.log"
	# setsid: the daemon outlives this script and the shell that ran it.
	setsid dockerd --bridge=none --iptables=false --ip-masq=false \
		--pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 </dev/null &
	for _ in $(seq 1 300); do
		if engine_up; then
			log "engine up: API $(docker version --format '{{.Server.APIVersion}}')"
			return
		fi
		sleep 0.1
	done
	tail -20 "$STATE/dockerd.log" >&2 || true
	die "dockerd did not answer on $SOCK within 30s"
}

cmd_stop() {
	local pidfile="$STATE/dockerd.pid"
	if [[ ! -s "$pidfile" ]]; then
		log "no dockerd started by this script"
		return
	fi
	local pid
	pid="$(cat "$pidfile")"
	if kill -0 "$pid" 2>/dev/null; then
		log "stopping dockerd (pid $pid)"
		kill "$pid"
		for _ in $(seq 1 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
	fi
	rm -f "$pidfile"
}

cmd_status() {
	if engine_up; then
		docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'
	else
		echo "engine not answering on $SOCK"
		return 1
	fi
}

# image_fakemodel builds tandem-fakemodel:test: scratch plus a static cmd/fakemodel.
image_fakemodel() {
	local ctx
	tmpdir ctx
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$ctx/fakemodel" ./cmd/fakemodel)
	cp "$ROOT/images/fakemodel/Dockerfile" "$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t tandem-fakemodel:test "$ctx" >/dev/null
	log "built tandem-fakemodel:test"
}

# image_podserver builds tandem-podserver:test: scratch plus a static
# internal/backend/kubernetes/testdata/podserver, a model server for the pod
# network (it listens on every interface and answers /name with its pod's name).
image_podserver() {
	local ctx
	tmpdir ctx
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$ctx/podserver" ./internal/backend/kubernetes/testdata/podserver)
	printf 'FROM scratch\nCOPY podserver /podserver\nENTRYPOINT ["/podserver"]\n' >"$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t tandem-podserver:test "$ctx" >/dev/null
	log "built tandem-podserver:test"
}

# debian_base makes tandem-debian:bookworm-<name> from a debootstrap'd minbase
# Debian with the given packages (comma-separated), once; the rootfs tarball is
# cached so that a second build skips debootstrap.
debian_base() {
	local name="$1" include="$2" tag="tandem-debian:bookworm-$1"
	if docker image inspect "$tag" >/dev/null 2>&1; then
		log "$tag already present"
		return
	fi
	local tarball="$CACHE/bookworm-$name.tar"
	if [[ ! -s "$tarball" ]]; then
		command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null 2>&1 ||
			die "cannot install debootstrap"
		local dir
		tmpdir dir
		log "debootstrap bookworm ($include) into $dir (a few minutes)"
		local mirror
		mirror="$(awk '/^deb / && /debian/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
		if [[ -z "$mirror" ]]; then
			mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
		fi
		debootstrap --variant=minbase --include="$include" bookworm "$dir" "${mirror:-http://deb.debian.org/debian}" >"$dir.log" 2>&1 ||
			{ tail -20 "$dir.log" >&2; die "debootstrap failed (log $dir.log)"; }
		# Keep the image small: apt lists and caches are not needed at run time.
		rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
		mkdir -p "$CACHE"
		tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$dir.log"
	fi
	docker import "$tarball" "$tag" >/dev/null
	log "imported $tag"
}

# image_iris builds tandem-iris:latest: the iris Flask example on a Debian base
# with python3-flask and python3-sklearn.
image_iris() {
	debian_base flask-sklearn python3-flask,python3-sklearn
	[[ -f "$ROOT/examples/iris-flask/app.py" ]] || die "examples/iris-flask/app.py is missing"
	local ctx
	tmpdir ctx
	cp -r "$ROOT/examples/iris-flask" "$ctx/app"
	rm -rf "$ctx/app/__pycache__"
	cp "$ROOT/images/iris/Dockerfile" "$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t tandem-iris:latest "$ctx" >/dev/null
	log "built tandem-iris:latest"
}

# image_onnx builds tandem-onnx:latest: tandem's own binary plus the ONNX
# Runtime library on a minimal Debian base. Its inputs belong to the ONNX
# runtime's owner: images/onnx/build.sh, when present, prepares the build
# context in the folder given as its first argument (the tandem binary and
# libonnxruntime.so) and images/onnx/Dockerfile builds FROM
# tandem-debian:bookworm-minimal.
image_onnx() {
	if [[ ! -f "$ROOT/images/onnx/Dockerfile" ]]; then
		die "images/onnx/Dockerfile is missing: the ONNX runtime image is not defined yet"
	fi
	debian_base onnx libstdc++6,ca-certificates
	local ctx
	tmpdir ctx
	cp -r "$ROOT/images/onnx/." "$ctx/"
	if [[ -x "$ROOT/images/onnx/build.sh" ]]; then
		"$ROOT/images/onnx/build.sh" "$ctx"
	fi
	DOCKER_BUILDKIT=0 docker build -q -t tandem-onnx:latest "$ctx" >/dev/null
	log "built tandem-onnx:latest"
}

# image_tandem builds tandem:latest (tandem in a cluster) on top of tandem-onnx.
image_tandem() {
	image_onnx
	DOCKER_BUILDKIT=0 docker build -q -t tandem:latest "$ROOT/images/tandem" >/dev/null
	log "built tandem:latest"
}

cmd_images() {
	engine_up || die "engine not answering: run scripts/docker.sh start"
	case "${1:-fakemodel}" in
	fakemodel) image_fakemodel ;;
	podserver) image_podserver ;;
	iris) image_iris ;;
	onnx) image_onnx ;;
	tandem) image_tandem ;;
	all) image_fakemodel; image_podserver; image_iris; image_tandem ;;
	*) die "unknown image $1 (fakemodel | podserver | iris | onnx | tandem | all)" ;;
	esac
}

[[ $# -gt 0 ]] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
	case "$1" in
	install) cmd_install ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	images)
		if [[ $# -gt 1 && "$2" =~ ^(fakemodel|podserver|iris|onnx|tandem|all)$ ]]; then
			cmd_images "$2"
			shift
		else
			cmd_images fakemodel
		fi
		;;
	*) die "unknown command $1 (install | start | stop | status | images [NAME])" ;;
	esac
	shift
done
