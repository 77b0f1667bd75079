#!/usr/bin/env bash
# Checks that meridian-bench measures what an independent client measures.
#
# For each `etcdctl check perf` load (etcd's own Go client: 256-byte random keys, 1 KiB values,
# a burst-1 rate limit and N clients with a connection each, for 60 s) it runs etcdctl, then
# meridian-bench put with the same shape (clients, connections, rate limit without catch-up, key
# and value sizes, duration), each against a fresh server (write throughput depends on how much
# the server already holds), and compares the write throughputs: PASS within ±25%.
# As a client-independent witness it also reports the server's own count, the revision delta over
# the run's wall time ("server-seen"; it includes client start-up, so it reads a little low), and
# the CPU each client used, since both share the cores with the server. A closed-loop run (no rate
# limit) finally compares meridian-bench's figure with the server's count.
#
# With two or more CPUs (and taskset), the server runs on CPU 0 and each client on the others
# (--no-pin turns this off). Otherwise the client's own CPU appetite decides how much CPU the
# server gets: etcdctl's Go client burns several times the CPU of meridian-bench per request, so
# on 2 shared cores the same server does fewer writes/s under etcdctl, and the two clients then
# disagree about the server, not about what they measured.
#
#   bench/check_agreement.sh [--server meridian|etcd] [--loads "m l"] [--bench-seconds 60]
#                            [--no-pin]
#
# Binaries: MERIDIAN_NODE_BIN (default build/bin/meridian-node), MERIDIAN_BENCH_BIN (default
# build/bin/meridian-bench), etcd and etcdctl from PATH. Exits 0 when nothing FAILed.
# Takes about 2 minutes per load.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_bin="${MERIDIAN_NODE_BIN:-$repo/build/bin/meridian-node}"
bench_bin="${MERIDIAN_BENCH_BIN:-$repo/build/bin/meridian-bench}"
server=meridian
loads="m l"
bench_seconds=60
pin=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) server="$2"; shift 2 ;;
    --loads) loads="$2"; shift 2 ;;
    --bench-seconds) bench_seconds="$2"; shift 2 ;;
    --no-pin) pin=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$server" in
  meridian) server_bin="$node_bin" ;;
  etcd) server_bin="$(command -v etcd || true)" ;;
  *) echo "--server must be meridian or etcd" >&2; exit 2 ;;
esac
for b in "$server_bin" "$bench_bin" "$(command -v etcdctl || true)"; do
  if [[ ! -x "$b" ]]; then
    echo "missing binary: '$b' (build it first, see bench/README.md)" >&2
    exit 2
  fi
done

server_pin=()
client_pin=()
if [[ "$pin" == 1 && "$(nproc)" -ge 2 ]] && command -v taskset >/dev/null; then
  server_pin=(taskset -c 0)
  client_pin=(taskset -c "1-$(($(nproc) - 1))")
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$endpoint" "$@"; }

tmp="$(mktemp -d /tmp/meridian-agree-XXXXXX)"
server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# A fresh single member on free loopback ports; sets $endpoint.
start_server() {
  local client peer
  stop_server
  rm -rf "$tmp/data"
  client="$(free_port)"
  peer="$(free_port)"
  endpoint="127.0.0.1:$client"
  "${server_pin[@]}" "$server_bin" --name agree --data-dir "$tmp/data" \
    --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "agree=http://127.0.0.1:$peer" --quota-backend-bytes 8589934592 \
    --log-level warn >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    if ctl --dial-timeout 1s endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "server did not start:" >&2
  tail -5 "$tmp/server.log" >&2
  exit 1
}

# check perf load -> "rate clients" (etcdctl/ctlv3/command/check.go)
shape() {
  case "$1" in
    s) echo "150 50" ;;
    m) echo "1000 200" ;;
    l) echo "8000 500" ;;
    xl) echo "15000 1000" ;;
    *) echo "unknown load $1" >&2; exit 2 ;;
  esac
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$@"; }
revision() {
  ctl get /meridian-agree-revision -w json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'
}
now_s() { python3 -c 'import time; print(time.monotonic())'; }
# timed OUT CMD...: runs CMD with stdout to OUT; prints the CPU cores it used ((user+sys)/real).
timed() {
  local out="$1" times
  shift
  times="$( { TIMEFORMAT='%R %U %S'; time "$@" >"$out" 2>>"$tmp/client.err"; } 2>&1 )"
  python3 -c 'import sys; r,u,s=map(float,sys.argv[1:]); print(f"{(u+s)/r:.2f}")' $times
}
# Server-seen writes/s: revision delta over the wall time between two (revision, time) samples.
server_rate() {
  python3 -c 'import sys; r0,t0,r1,t1=map(float,sys.argv[1:]); print(round((r1-r0)/(t1-t0)))' "$@"
}
# meridian-bench put with the agreement shape; prints its JSON line.
bench_put() {
  "${client_pin[@]}" "$bench_bin" put --endpoints "$endpoint" --clients "$1" --conns "$1" "${@:3}" \
    --duration "$2" --key-prefix /meridian-bench-agree/ --key-size 276 --key-pad-right \
    --val-size 1024 --key-space 1000000000000 --progress 0 --quiet
}

echo "server: $server ($server_bin); $(nproc) CPUs; meridian-bench runs ${bench_seconds} s"
if [[ ${#server_pin[@]} -gt 0 ]]; then
  echo "pinned: server on CPU 0, clients on CPUs 1-$(($(nproc) - 1))"
else
  echo "not pinned: server and clients share the CPUs"
fi
echo "writes/s as each client reports it, (in parentheses) as the server's revision counter saw it"
status=0
fmt='%-5s %5s %7s %18s %18s %6s %s\n'
printf "$fmt" load rate clients "etcdctl (server)" "bench (server)" ratio verdict
for load in $loads; do
  read -r rate clients <<<"$(shape "$load")"

  start_server
  r0="$(revision)"; t0="$(now_s)"
  etcdctl_cores="$(timed "$tmp/perf.out" "${client_pin[@]}" env ETCDCTL_API=3 etcdctl --endpoints "$endpoint" check perf --load "$load" || true)"
  t1="$(now_s)"; r1="$(revision)"
  etcdctl_wps="$(grep -oE 'Throughput (is|too low:) [0-9]+' "$tmp/perf.out" \
    | grep -oE '[0-9]+$' || true)"
  if [[ -z "$etcdctl_wps" ]]; then
    echo "etcdctl check perf --load $load gave no throughput:" >&2
    tail -c 600 "$tmp/perf.out" >&2
    status=1
    continue
  fi
  etcdctl_seen="$(server_rate "$r0" "$t0" "$r1" "$t1")"

  # Same shape: 276-byte keys (etcdctl: 20-byte prefix + 256 bytes) whose random part comes first
  # (--key-pad-right; etcdctl's keys are a varint then zeros), 1 KiB values, random keys,
  # the same rate limit (a late request is skipped, not sent later, as with etcdctl's limiter),
  # one connection per client.
  start_server
  r0="$(revision)"; t0="$(now_s)"
  bench_cores="$(timed "$tmp/bench.out" bench_put "$clients" "$bench_seconds" --rate "$rate" \
    --rate-catchup 0)"
  bench_json="$(cat "$tmp/bench.out")"
  t1="$(now_s)"; r1="$(revision)"
  bench_seen="$(server_rate "$r0" "$t0" "$r1" "$t1")"
  bench_wps="$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["qps"]))' \
    "$bench_json")"
  errors="$(json_field "$bench_json" error_count)"
  read -r ratio verdict <<<"$(python3 -c '
import sys
b, e, errors = map(float, sys.argv[1:])
r = b / e
print(f"{r:.2f}", "PASS" if 0.75 <= r <= 1.25 and errors == 0 else "FAIL")
' "$bench_wps" "$etcdctl_wps" "$errors")"
  [[ "$verdict" == PASS ]] || status=1
  printf "$fmt" "$load" "$rate" "$clients" "$etcdctl_wps ($etcdctl_seen)" \
    "$bench_wps ($bench_seen)" "$ratio" "$verdict"
  echo "      client CPU: etcdctl $etcdctl_cores cores, meridian-bench $bench_cores cores" \
    "(of $(nproc))"
  if [[ "$errors" != 0 ]]; then echo "  meridian-bench errors: $bench_json" >&2; fi
done

# Closed loop (no rate): the server's count is the witness.
closed_clients=500
start_server
r0="$(revision)"; t0="$(now_s)"
bench_cores="$(timed "$tmp/bench.out" bench_put "$closed_clients" 20)"
bench_json="$(cat "$tmp/bench.out")"
t1="$(now_s)"; r1="$(revision)"
bench_seen="$(server_rate "$r0" "$t0" "$r1" "$t1")"
bench_wps="$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["qps"]))' \
  "$bench_json")"
errors="$(json_field "$bench_json" error_count)"
read -r ratio verdict <<<"$(python3 -c '
import sys
b, seen, errors = map(float, sys.argv[1:])
r = b / seen if seen else 0
print(f"{r:.2f}", "PASS" if 0.75 <= r <= 1.25 and errors == 0 else "FAIL")
' "$bench_wps" "$bench_seen" "$errors")"
[[ "$verdict" == PASS ]] || status=1
echo "closed loop, $closed_clients clients, 20 s: meridian-bench $bench_wps writes/s," \
  "server-seen $bench_seen writes/s, ratio $ratio $verdict (bench CPU $bench_cores cores)"
stop_server
exit "$status"
