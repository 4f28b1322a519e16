#!/usr/bin/env bash
# Warm-path benchmark (tandem issue 2): the gateway's added latency at one
# connection, and its throughput at 32 connections against nginx set up as a
# keep-alive reverse proxy, all on loopback with the same instance program.
#
#   bash bench/warm.sh            # 3 rounds of 10 s runs (about 4 minutes)
#   DURATION=5s ROUNDS=5 bash bench/warm.sh
#
# It builds tandem and fakemodel into a scratch folder, then starts three
# identical fakemodel instances: one called directly, one behind nginx
# (bench/nginx.conf.tmpl, run as `nginx -c CONF -p DIR`, not the system
# service), and one that tandem starts itself (a dedicated deployment, min 1,
# max 1, so both proxies have exactly one upstream). Runs alternate direct,
# tandem, nginx in each round so that a slow moment of a shared machine hits
# all three alike; the table shows medians across rounds.
#
# Needs: go, wrk, nginx (Debian's nginx-light), curl, awk, ss.
# Besides wrk's figures it prints the CPU time each proxy spent per request
# at 32 connections, which other load on a shared machine disturbs less.
#
# Environment: DURATION (10s), ROUNDS (3), CONNS (32), THREADS (2),
# NGINX_WORKERS (auto), PATH_Q (/pid: a tiny constant answer), TANDEM_BIN (a
# tandem binary to measure instead of building ./cmd/tandem, for comparing a
# prototype), KEEP=1 keeps the scratch folder (logs, raw wrk output).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
PATH_Q=${PATH_Q:-/pid}

for tool in go wrk nginx curl awk ss; do
	command -v "$tool" >/dev/null || { echo "warm.sh: $tool is not installed" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/bench-warm.XXXXXX)
PIDS=()
cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	if [[ -f $WORK/nginx.pid ]]; then
		kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true
	fi
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${KEEP:-} == 1 || $rc != 0 ]]; then
		echo "warm.sh: logs and raw output kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# freeport prints a port nothing uses (and that no earlier call gave), below
# the kernel's ephemeral range so that outgoing connections cannot take it.
TAKEN=" "
freeport() {
	local p lo
	lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
	while :; do
		p=$((10000 + RANDOM % (lo - 10000)))
		[[ $TAKEN == *" $p "* ]] && continue
		ss -Htan "sport = :$p" | grep -q . && continue
		TAKEN+="$p "
		echo "$p"
		return
	done
}

# waitok waits until URL answers 200, failing early when one of the
# processes started here has exited.
waitok() {
	local url=$1 pid
	for _ in $(seq 1 300); do
		if curl -fs -o /dev/null "$url"; then return 0; fi
		for pid in "${PIDS[@]}"; do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "warm.sh: process $pid exited early; see the logs in $WORK" >&2
				return 1
			fi
		done
		sleep 0.1
	done
	echo "warm.sh: $url did not answer in 30 s" >&2
	return 1
}

echo "== build (into $WORK/bin)"
mkdir -p "$WORK/bin"
if [[ -n ${TANDEM_BIN:-} ]]; then
	cp "$TANDEM_BIN" "$WORK/bin/tandem" # a build to compare, such as a prototype
else
	go build -o "$WORK/bin/tandem" ./cmd/tandem
fi
go build -o "$WORK/bin/fakemodel" ./cmd/fakemodel

DIRECT_PORT=$(freeport)
UP_PORT=$(freeport)
NGINX_PORT=$(freeport)
GW_PORT=$(freeport)
ADMIN_PORT=$(freeport)

echo "== start: fakemodel direct :$DIRECT_PORT, nginx :$NGINX_PORT -> fakemodel :$UP_PORT, tandem :$GW_PORT"
PORT=$DIRECT_PORT "$WORK/bin/fakemodel" >"$WORK/direct.log" 2>&1 &
PIDS+=($!)
PORT=$UP_PORT "$WORK/bin/fakemodel" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)

sed -e "s#@DIR@#$WORK#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" -e "s#@UPSTREAM_PORT@#$UP_PORT#g" \
	-e "s#^worker_processes .*#worker_processes $NGINX_WORKERS;#" \
	bench/nginx.conf.tmpl >"$WORK/nginx.conf"
nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx-test.log" ||
	{ cat "$WORK/nginx-test.log" >&2; exit 1; }
nginx -c "$WORK/nginx.conf" -p "$WORK" 2>>"$WORK/nginx-error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

mkdir -p "$WORK/data"
# Listeners not measured here are turned off, so that they cannot collide
# with another tandem on their default ports.
EXTRA=()
if "$WORK/bin/tandem" serve --help 2>&1 | grep -q -- --grpc-listen; then
	EXTRA+=(--grpc-listen "")
fi
"$WORK/bin/tandem" serve --listen "127.0.0.1:$GW_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
	--data-dir "$WORK/data" --log-level warn "${EXTRA[@]}" >"$WORK/tandem.log" 2>&1 &
TANDEM_PID=$!
PIDS+=("$TANDEM_PID")
waitok "http://127.0.0.1:$ADMIN_PORT/healthz"
cat >"$WORK/warm.yaml" <<EOF
name: warm
mode: dedicated
runtime:
  command: ["$WORK/bin/fakemodel"]
  health: /health
scaling:
  min: 1
  max: 1
EOF
"$WORK/bin/tandem" --admin "127.0.0.1:$ADMIN_PORT" deploy -f "$WORK/warm.yaml" >/dev/null

DIRECT_URL="http://127.0.0.1:$DIRECT_PORT$PATH_Q"
NGINX_URL="http://127.0.0.1:$NGINX_PORT$PATH_Q"
TANDEM_URL="http://127.0.0.1:$GW_PORT/models/warm$PATH_Q"
waitok "$DIRECT_URL"
waitok "$NGINX_URL"
waitok "$TANDEM_URL"

# proxypids NAME prints the processes whose CPU time counts for NAME: the
# nginx master and workers, the tandem process (not its instance), none for
# direct.
proxypids() {
	case $1 in
	nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
	tandem) echo "$TANDEM_PID" ;;
	esac
}

# cputicks PID... prints the user+system clock ticks the processes used.
cputicks() {
	local t=0 pid
	for pid in "$@"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$t"
}

# run NAME KIND URL: one wrk run; KIND is c1 (1 connection) or cN. Besides
# wrk's figures it records the proxy's CPU time per request, a figure that a
# busy shared machine disturbs much less than req/s.
run() {
	local name=$1 kind=$2 url=$3 out pids t0 t1
	out="$WORK/raw/$name-$kind-$ROUND.txt"
	pids=$(proxypids "$name")
	# shellcheck disable=SC2086
	t0=$(cputicks $pids)
	if [[ $kind == c1 ]]; then
		wrk -t1 -c1 -d"$DURATION" --latency "$url" >"$out"
	else
		wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
	fi
	# shellcheck disable=SC2086
	t1=$(cputicks $pids)
	if grep -q "Non-2xx\|Socket errors" "$out"; then
		echo "warm.sh: errors in $name $kind run:" >&2
		cat "$out" >&2
		exit 1
	fi
	awk -v name="$name" -v kind="$kind" -v round="$ROUND" -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
		function us(v) {
			if (v ~ /us$/) return v + 0
			if (v ~ /ms$/) return (v + 0) * 1000
			if (v ~ /s$/) return (v + 0) * 1000000
			return v + 0
		}
		$1 == "50%" { p50 = us($2) }
		$1 == "99%" { p99 = us($2) }
		$1 == "Requests/sec:" { rps = $2 }
		/requests in/ { n = $1 }
		END { printf "%s %s %s %.1f %.1f %.0f %.1f\n", name, kind, round, p50, p99, rps, (n > 0 ? ticks / hz * 1e6 / n : 0) }
	' "$out" | tee -a "$WORK/results.txt"
}

mkdir -p "$WORK/raw"
: >"$WORK/results.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== warm-up (2 s each, not counted)"
for url in "$DIRECT_URL" "$TANDEM_URL" "$NGINX_URL"; do
	wrk -t"$THREADS" -c"$CONNS" -d2s "$url" >/dev/null
done

echo "== $ROUNDS rounds of $DURATION runs; columns: target kind round p50_us p99_us req/s proxy_cpu_us/req"
for ROUND in $(seq 1 "$ROUNDS"); do
	run direct c1 "$DIRECT_URL"
	run tandem c1 "$TANDEM_URL"
	run nginx c1 "$NGINX_URL"
	run direct cN "$DIRECT_URL"
	run tandem cN "$TANDEM_URL"
	run nginx cN "$NGINX_URL"
done

echo
echo "== medians across $ROUNDS rounds (path $PATH_Q, $(nproc) cores, load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg))"
awk -v conns="$CONNS" '
	function median(key,   n, i, j, t, a) {
		n = split(vals[key], a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
	}
	{ k = $1 "-" $2; vals[k "-p50"] = vals[k "-p50"] " " $4; vals[k "-p99"] = vals[k "-p99"] " " $5; vals[k "-rps"] = vals[k "-rps"] " " $6; vals[k "-cpu"] = vals[k "-cpu"] " " $7 }
	END {
		dp50 = median("direct-c1-p50"); dp99 = median("direct-c1-p99")
		tp50 = median("tandem-c1-p50"); tp99 = median("tandem-c1-p99")
		np50 = median("nginx-c1-p50"); np99 = median("nginx-c1-p99")
		printf "1 connection      p50 (us)   p99 (us)   added p50   added p99\n"
		printf "  direct        %10.1f %10.1f\n", dp50, dp99
		printf "  tandem        %10.1f %10.1f %11.1f %11.1f\n", tp50, tp99, tp50 - dp50, tp99 - dp99
		printf "  nginx         %10.1f %10.1f %11.1f %11.1f\n", np50, np99, np50 - dp50, np99 - dp99
		d = median("direct-cN-rps"); t = median("tandem-cN-rps"); n = median("nginx-cN-rps")
		printf "%d connections    req/s   proxy CPU us/req\n", conns
		printf "  direct        %10.0f\n", d
		printf "  nginx         %10.0f %10.1f\n", n, median("nginx-cN-cpu")
		printf "  tandem        %10.0f %10.1f   (%.0f%% of nginx req/s)\n", t, median("tandem-cN-cpu"), 100 * t / n
		printf "targets: p50 added < 100 us: %s; tandem >= 75%% of nginx: %s\n", \
			(tp50 - dp50 < 100 ? "met" : "MISSED"), (t >= 0.75 * n ? "met" : "MISSED")
	}
' "$WORK/results.txt" | tee "$WORK/summary.txt"
