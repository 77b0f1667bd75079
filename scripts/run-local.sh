#!/usr/bin/env bash
# The main job: installs and builds if needed, then runs a 3-member meridian-node cluster on
# loopback (clients on 127.0.0.1:2379, 22379 and 32379; peers on 2380, 22380 and 32380) with
# data in ./data/m0.etcd, m1.etcd and m2.etcd, and a meridian-proxy in front of them on
# 127.0.0.1:23790, until Ctrl-C, which stops them all.
#
#   MERIDIAN_MEMBERS=1 scripts/run-local.sh   # a single member on 127.0.0.1:2379 instead
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DATA_ROOT=${MERIDIAN_DATA_ROOT:-$PWD/data}
MEMBERS=${MERIDIAN_MEMBERS:-3}
if [[ "$MEMBERS" != 1 && "$MEMBERS" != 3 ]]; then
  echo "MERIDIAN_MEMBERS must be 1 or 3" >&2
  exit 2
fi
client_ports=(2379 22379 32379)
peer_ports=(2380 22380 32380)
mkdir -p "$DATA_ROOT"

cluster=""
for ((i = 0; i < MEMBERS; i++)); do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:${peer_ports[$i]}"
done
endpoints=""
for ((i = 0; i < MEMBERS; i++)); do
  endpoints+="${endpoints:+,}127.0.0.1:${client_ports[$i]}"
done

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for ((i = 0; i < MEMBERS; i++)); do
  build/bin/meridian-node \
    --name "m$i" \
    --data-dir "$DATA_ROOT/m$i.etcd" \
    --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
    --initial-cluster "$cluster" \
    --initial-cluster-token meridian-local \
    --log-level warn \
    2>>"$DATA_ROOT/m$i.log" &
  pids+=($!)
done

# The proxy tier in front of the members (etcd grpc-proxy's default port).
build/bin/meridian-proxy --endpoints "$endpoints" --listen-addr 127.0.0.1:23790 --log-level warn \
  2>>"$DATA_ROOT/proxy.log" &
pids+=($!)

cat <<MSG

A ${MEMBERS}-member meridian-node cluster is starting on loopback (data and logs in ${DATA_ROOT}).
Use it with etcdctl from another terminal, for example:

  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=${endpoints}
  etcdctl put greeting hello
  etcdctl get greeting -w json
  etcdctl watch --prefix greet
  etcdctl member list -w table
  etcdctl endpoint status --cluster -w table
  curl http://127.0.0.1:${client_ports[0]}/health

or through the proxy, which coalesces watches and lease keepalives:

  etcdctl --endpoints 127.0.0.1:23790 watch --prefix greet
  curl http://127.0.0.1:23790/metrics | grep meridian_proxy

Press Ctrl-C to stop it.

MSG
# Runs until a member exits (then stops the others) or Ctrl-C.
wait -n "${pids[@]}"
echo "a member or the proxy exited; see ${DATA_ROOT}/*.log" >&2
exit 1
