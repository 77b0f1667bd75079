#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks (Debian packages only), then configures and
# builds Meridian into build/ (or $MERIDIAN_BUILD_DIR). Safe to run again: it installs nothing
# that is present and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config ccache clang libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libc-ares-dev libabsl-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libspdlog-dev libcli11-dev libjemalloc-dev
  etcd-server etcd-client dnsmasq-base gnuplot-nox curl openssl
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${MERIDIAN_BUILD_DIR:-build}
JOBS=${MERIDIAN_JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${MERIDIAN_BUILD_TYPE:-Release} "$@" >/dev/null
# MERIDIAN_BUILD_TARGETS: a space-separated subset to build (default: everything).
targets=()
for t in ${MERIDIAN_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}"
