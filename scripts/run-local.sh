#!/usr/bin/env bash
# The main job: installs and builds if needed, then runs one meridian-node on 127.0.0.1:2379
# with its data in ./data/default.etcd, in the foreground (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DATA_DIR=${MERIDIAN_DATA_DIR:-$PWD/data/default.etcd}
CLIENT_PORT=${MERIDIAN_CLIENT_PORT:-2379}
PEER_PORT=${MERIDIAN_PEER_PORT:-2380}
mkdir -p "$(dirname "$DATA_DIR")"
cat <<MSG

meridian-node is starting on 127.0.0.1:${CLIENT_PORT} (data in ${DATA_DIR}).
Use it with etcdctl from another terminal, for example:

  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=127.0.0.1:${CLIENT_PORT}
  etcdctl put greeting hello
  etcdctl get greeting -w json
  etcdctl watch --prefix greet
  etcdctl endpoint status -w table
  curl http://127.0.0.1:${CLIENT_PORT}/health

Press Ctrl-C to stop it.

MSG
exec build/bin/meridian-node \
  --name default \
  --data-dir "$DATA_DIR" \
  --listen-client-urls "http://127.0.0.1:${CLIENT_PORT}" \
  --advertise-client-urls "http://127.0.0.1:${CLIENT_PORT}" \
  --listen-peer-urls "http://127.0.0.1:${PEER_PORT}" \
  --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORT}" \
  --initial-cluster "default=http://127.0.0.1:${PEER_PORT}"
