#!/usr/bin/env bash
# local-cluster.sh runs a real single-node Kubernetes cluster on this machine
# for tandem's tests and demos: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, a containerd of its own and a kubelet, all on 127.0.0.1.
#
#   hack/local-cluster.sh up           install, build and start what is missing;
#                                      the last line printed is the kubeconfig path
#   hack/local-cluster.sh down         stop everything, remove pods, bridge, state
#   hack/local-cluster.sh load IMAGE…  import local Docker images into the node
#   hack/local-cluster.sh status       say what runs
#   hack/local-cluster.sh build        only build the Kubernetes binaries
#   hack/local-cluster.sh kubeconfig   print the kubeconfig path
#
# Binaries: etcd, containerd, runc, the CNI plugins and kubectl come from
# Debian; kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
# are built from k8s.io/kubernetes (hack/cluster/go.mod) once, into
# .cache/kube/bin (git-ignored), and reused. The pod sandbox ("pause") image
# is a static Go program (hack/cluster/pause) packed by hack/cluster/ociimage.
#
# Pods get addresses on the bridge tnd0 (10.244.0.0/24, no masquerade, no
# route off the machine); the node's IP is the bridge's 10.244.0.1, so
# host-network pods work too. Facts behind the flags:
# /work/shared/notes/local-kubernetes.md.
#
# Environment:
#   TANDEM_CLUSTER_DIR  state: data, logs, pids, kubeconfig (default /tmp/tandem-cluster)
#   TANDEM_KUBE_BIN     built binaries (default <repo>/.cache/kube/bin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TANDEM_CLUSTER_DIR:-/tmp/tandem-cluster}"
BIN="${TANDEM_KUBE_BIN:-$ROOT/.cache/kube/bin}"
KUBECONFIG_PATH="$STATE/kubeconfig"
SOCK="$STATE/containerd/containerd.sock"
ETCD_PORT=12379
ETCD_PEER_PORT=12380
API_PORT=16443
CM_PORT=10357
SCHED_PORT=10359
BRIDGE=tnd0
POD_SUBNET=10.244.0.0/24
NODE_IP=10.244.0.1
NODE=node1
PAUSE_IMAGE=tandem.local/pause:1
NAMESPACE=tandem
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
export PATH="/usr/local/go/bin:$PATH"

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# wait_for DESC SECONDS CMD… polls CMD every 0.2s until it succeeds.
wait_for() {
	local desc="$1" secs="$2"
	shift 2
	local i
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "$desc not ready after ${secs}s (logs in $STATE/logs)"
}

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

running() {
	local pidfile="$STATE/pids/$1.pid"
	[[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start NAME CMD… starts CMD in its own session, logging to logs/NAME.log.
start() {
	local name="$1"
	shift
	if running "$name"; then
		return 0
	fi
	log "starting $name"
	# 9>&-: a daemon must not inherit (and so hold forever) the script's lock.
	setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null 9>&- &
	echo $! >"$STATE/pids/$name.pid"
}

stop() {
	local name="$1" pidfile="$STATE/pids/$1.pid"
	[[ -s "$pidfile" ]] || return 0
	local pid
	pid="$(cat "$pidfile")"
	if kill -0 "$pid" 2>/dev/null; then
		log "stopping $name (pid $pid)"
		kill "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

cmd_install() {
	local pkgs=()
	command -v etcd >/dev/null || pkgs+=(etcd-server)
	command -v containerd >/dev/null || pkgs+=(containerd)
	command -v runc >/dev/null || pkgs+=(runc)
	[[ -x /usr/lib/cni/bridge ]] || pkgs+=(containernetworking-plugins)
	command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
	command -v openssl >/dev/null || pkgs+=(openssl)
	command -v curl >/dev/null || pkgs+=(curl)
	command -v ip >/dev/null || pkgs+=(iproute2)
	[[ ${#pkgs[@]} -eq 0 ]] && return 0
	log "apt-get install ${pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
	# Debian may start its own etcd on install; ours uses other ports, but
	# there is no need for a second one.
	if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
		systemctl stop etcd || true
	fi
}

cmd_build() {
	local version
	version="$(awk '{for (i = 1; i < NF; i++) if ($i == "k8s.io/kubernetes" && $(i+1) ~ /^v/) {print $(i+1); exit}}' "$ROOT/hack/cluster/go.mod")"
	[[ -n "$version" ]] || die "no k8s.io/kubernetes version in hack/cluster/go.mod"
	local minor="${version#v1.}"
	minor="${minor%%.*}"
	local ldflags="-s -w"
	local p
	# Stamp the version, as Kubernetes' own build does, so that nodes and
	# clients report v1.31.x rather than v0.0.0.
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	# The binaries are reused while hack/cluster/go.mod and the flags stay
	# the same.
	local stamp
	stamp="$(cat "$ROOT/hack/cluster/go.mod" "$ROOT/hack/cluster/go.sum" <(echo "$ldflags") | sha256sum | cut -c1-16)"
	local missing=()
	local c
	for c in "${KUBE_CMDS[@]}"; do
		if [[ ! -x "$BIN/$c" || "$(cat "$BIN/.stamp" 2>/dev/null)" != "$stamp" ]]; then
			missing+=("k8s.io/kubernetes/cmd/$c")
		fi
	done
	mkdir -p "$BIN"
	if [[ ${#missing[@]} -gt 0 ]]; then
		log "building ${missing[*]##*/} $version from k8s.io/kubernetes (several minutes the first time)"
		(cd "$ROOT/hack/cluster" && nice go build -trimpath -buildvcs=false -ldflags="$ldflags" -o "$BIN/" "${missing[@]}")
		echo "$stamp" >"$BIN/.stamp"
	fi
	if [[ ! -s "$BIN/pause.tar" ]]; then
		(cd "$ROOT/hack/cluster" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$BIN/pause" ./pause &&
			go run -buildvcs=false ./ociimage -bin "$BIN/pause" -name "$PAUSE_IMAGE" -o "$BIN/pause.tar.tmp") &&
			mv "$BIN/pause.tar.tmp" "$BIN/pause.tar"
	fi
}

# init_state writes keys, tokens, the kubeconfig and the configs, once.
init_state() {
	mkdir -p "$STATE"/{pids,logs,pki,etcd,kubelet,cni,cni-ipam,containerd}
	if [[ ! -s "$STATE/sa.key" ]]; then
		openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
	fi
	if [[ ! -s "$STATE/tokens.csv" ]]; then
		local token
		token="$(openssl rand -hex 16)"
		echo "$token,admin,admin,system:masters" >"$STATE/tokens.csv"
		chmod 600 "$STATE/tokens.csv"
	fi
	local token
	token="$(cut -d, -f1 "$STATE/tokens.csv")"
	cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: $NAMESPACE}
current-context: local
EOF
	chmod 600 "$KUBECONFIG_PATH"
	cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
	cat >"$STATE/cni/10-tandem.conflist" <<EOF
{"cniVersion":"1.0.0","name":"tandem-local","plugins":[
 {"type":"bridge","bridge":"$BRIDGE","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"$STATE/cni-ipam","ranges":[[{"subnet":"$POD_SUBNET","gateway":"$NODE_IP"}]]}}
]}
EOF
	cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: unix://$SOCK
cgroupsPerQOS: false
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: ""
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
EOF
}

# bridge makes tnd0 with the node's address before the kubelet starts, so
# that the node IP exists; the CNI bridge plugin adopts it.
bridge() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
	fi
	# replace, not add: idempotent (a grep -q under pipefail may SIGPIPE ip and lie).
	ip addr replace "$NODE_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
}

api_ready() { curl -fsk -H "Authorization: Bearer $(cut -d, -f1 "$STATE/tokens.csv")" "https://127.0.0.1:$API_PORT/readyz"; }
node_ready() { [[ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; }

cmd_up() {
	[[ $EUID -eq 0 ]] || die "must run as root (containerd, kubelet, network)"
	cmd_install
	cmd_build
	init_state
	bridge

	start etcd etcd --name tandem-local --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "tandem-local=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_for etcd 30 curl -fs "http://127.0.0.1:$ETCD_PORT/health"

	start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--secure-port="$API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
		--cert-dir="$STATE/pki" --service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$STATE/sa.key" --service-account-signing-key-file="$STATE/sa.key" \
		--token-auth-file="$STATE/tokens.csv" --authorization-mode=RBAC \
		--service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --endpoint-reconciler-type=none
	wait_for kube-apiserver 60 api_ready

	local k="$KUBECONFIG_PATH"
	start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$k" \
		--authentication-kubeconfig="$k" --authorization-kubeconfig="$k" \
		--service-account-private-key-file="$STATE/sa.key" --root-ca-file="$STATE/pki/apiserver.crt" \
		--use-service-account-credentials=false --leader-elect=false --bind-address=127.0.0.1 --secure-port="$CM_PORT" \
		--controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route'
	start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$k" --authentication-kubeconfig="$k" \
		--authorization-kubeconfig="$k" --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT"

	start containerd containerd --config "$STATE/containerd/config.toml"
	wait_for containerd 30 ctr_ version
	if ! grep -qx "$PAUSE_IMAGE" <<<"$(ctr_ images ls -q)"; then
		ctr_ images import "$BIN/pause.tar" >/dev/null
	fi

	start kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$k" \
		--hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet"
	wait_for "node $NODE" 90 node_ready
	# The node-lifecycle controller is off, so nothing else lifts this taint.
	kc taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true

	kc create namespace "$NAMESPACE" >/dev/null 2>&1 || true
	wait_for "service account $NAMESPACE/default" 60 kc -n "$NAMESPACE" get serviceaccount default
	log "cluster up: kubectl --kubeconfig $KUBECONFIG_PATH get pods -A"
	echo "$KUBECONFIG_PATH"
}

# sandbox_netns prints the network namespace files of the node's pods.
sandbox_netns() {
	local id
	for id in $(ctr_ containers ls -q 2>/dev/null); do
		ctr_ containers info "$id" 2>/dev/null | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true
	done | sort -u
}

cmd_down() {
	[[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
	# Let the kubelet tear pods down properly (CNI DEL) while it still can:
	# stop the controllers that would replace them, then delete them all.
	if running kube-apiserver && running kubelet && api_ready >/dev/null 2>&1; then
		stop kube-controller-manager
		kc delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
		local i
		for ((i = 0; i < 100; i++)); do
			[[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]] && break
			sleep 0.2
		done
	fi
	stop kubelet
	local netns=()
	if running containerd; then
		mapfile -t netns < <(sandbox_netns)
		local id
		for id in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ containers ls -q 2>/dev/null); do
			ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
			ctr_ containers delete "$id" >/dev/null 2>&1 || true
		done
	fi
	stop kube-scheduler
	stop kube-controller-manager
	stop kube-apiserver
	stop etcd
	stop containerd
	# Shims outlive containerd; each wrote its pid in the state folder.
	local f
	for f in "$STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
		[[ -s "$f" ]] && kill -KILL "$(cat "$f")" 2>/dev/null || true
	done
	local ns
	for ns in "${netns[@]}"; do
		[[ -e "$ns" ]] || continue
		umount "$ns" 2>/dev/null || true
		rm -f "$ns"
	done
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		log "removing bridge $BRIDGE"
		ip link del "$BRIDGE"
	fi
	# Volumes and container root filesystems the kubelet or containerd left
	# mounted, deepest first.
	awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$STATE"
	log "cluster down"
}

cmd_load() {
	[[ $# -gt 0 ]] || die "usage: local-cluster.sh load IMAGE…"
	running containerd || die "the cluster is not up: run hack/local-cluster.sh up"
	local docker=docker
	[[ -x /usr/bin/docker ]] && docker=/usr/bin/docker
	local img tmp
	tmp="$(mktemp)"
	trap 'rm -f "$tmp"' RETURN
	for img in "$@"; do
		log "loading $img"
		"$docker" save -o "$tmp" "$img"
		ctr_ images import "$tmp" >/dev/null
	done
}

cmd_status() {
	local c ok=0
	for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet; do
		if running "$c"; then echo "$c: running (pid $(cat "$STATE/pids/$c.pid"))"; else echo "$c: stopped"; ok=1; fi
	done
	return $ok
}

[[ $# -gt 0 ]] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
# One command at a time: test packages running in parallel may all call up.
case "$1" in
up | down | load | build)
	exec 9>"$STATE.lock"
	flock 9
	;;
esac
case "$1" in
up) cmd_up ;;
down) cmd_down ;;
load) shift; cmd_load "$@" ;;
status) cmd_status ;;
build) cmd_build ;;
install) cmd_install ;;
kubeconfig) echo "$KUBECONFIG_PATH" ;;
*) die "unknown command $1 (up | down | load IMAGE… | status | build | kubeconfig)" ;;
esac
