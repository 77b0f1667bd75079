#!/usr/bin/env bash
# Installs and builds if needed, then runs every test:
#   1. the whole CTest suite (unit, model, e2e with etcdctl, differential against Debian's etcd,
#      crash and bench smoke tests) on the Release build in build/;
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), and
#      the proxy's acceptance suite against an ASan+UBSan meridian-proxy;
#   3. the concurrent units under ThreadSanitizer (build-tsan/);
#   4. the libFuzzer targets (clang, build-fuzz/) for a bounded time each, from their corpora.
# MERIDIAN_SKIP_SANITIZERS=1 runs step 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh

echo "== test: full suite (Release)"
ctest --test-dir build --output-on-failure -j 2 --timeout 900

if [ "${MERIDIAN_SKIP_SANITIZERS:-0}" != 1 ]; then
  # Unit-level targets only: the e2e suites exercise the same code through processes.
  ASAN_TARGETS=(mvcc_test wal_test bolt_test common_test server_test raft_test peer_test proxy_unit_test
    discovery_test)
  echo "== test: ASan+UBSan"
  MERIDIAN_BUILD_TARGETS="${ASAN_TARGETS[*]} meridian-proxy" MERIDIAN_BUILD_DIR=build-asan \
    MERIDIAN_BUILD_TYPE=Debug scripts/setup.sh \
    -DMERIDIAN_SANITIZE=address,undefined -DMERIDIAN_UNIT_TESTS_ONLY=ON >/dev/null
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j 2 --timeout 900 \
    -R "^($(IFS='|'; echo "${ASAN_TARGETS[*]}"))$"
  # The proxy's acceptance suite (the Release test binary) against an ASan+UBSan meridian-proxy:
  # its streams, reactors and coalescing state under real load, kills and fail-overs. A sanitizer
  # report aborts the proxy, which fails the suite. Leaks are not checked: tests SIGKILL it.
  echo "== test: proxy acceptance suite against an ASan+UBSan meridian-proxy"
  MERIDIAN_PROXY_BIN="$PWD/build-asan/bin/meridian-proxy" ASAN_OPTIONS=detect_leaks=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build --output-on-failure --timeout 900 -R '^e2e_proxy$'

  # The threaded units: the MVCC store with its compactor and the watch hub, the WAL, the
  # HTTP/metrics code, and the DNS follower.
  # Not peer_test: it runs gRPC servers in-process, and Debian's libgrpc is not built with TSan,
  # so its own synchronization is invisible and every run reports races inside libgrpc.
  TSAN_TARGETS=(mvcc_test wal_test server_test discovery_test)
  echo "== test: TSan"
  MERIDIAN_BUILD_TARGETS="${TSAN_TARGETS[*]}" MERIDIAN_BUILD_DIR=build-tsan \
    MERIDIAN_BUILD_TYPE=Debug scripts/setup.sh \
    -DMERIDIAN_SANITIZE=thread -DMERIDIAN_UNIT_TESTS_ONLY=ON >/dev/null
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp" \
    ctest --test-dir build-tsan --output-on-failure -j 2 --timeout 900 \
    -R "^($(IFS='|'; echo "${TSAN_TARGETS[*]}"))$"

  # Coverage-guided fuzzing of the decoders that take bytes from the network or the disk: the DNS
  # answer decoder and the WAL segment decoder. Bounded in time; new inputs go to a scratch copy
  # of the corpus (the checked-in corpus is replayed by the unit tests in every build).
  echo "== test: libFuzzer (DNS answers, WAL segments)"
  CC=clang CXX=clang++ MERIDIAN_BUILD_TARGETS="dns_fuzz wal_fuzz" MERIDIAN_BUILD_DIR=build-fuzz \
    scripts/setup.sh -DMERIDIAN_UNIT_TESTS_ONLY=ON >/dev/null
  FUZZ_SECONDS=${MERIDIAN_FUZZ_SECONDS:-30}
  for f in "dns_fuzz discovery/fuzz_corpus" "wal_fuzz node/wal/fuzz_corpus"; do
    set -- $f
    scratch=$(mktemp -d)
    cp -r "$2"/. "$scratch"/
    if ! build-fuzz/bin/"$1" "$scratch" -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$PWD/build-fuzz/" >"$scratch.log" 2>&1; then
      tail -n 60 "$scratch.log"
      echo "fuzzer $1 failed; the input is in build-fuzz/"
      exit 1
    fi
    grep -E "^(stat::number_of_executed_units|Done)" "$scratch.log" || true
    rm -f "$scratch.log"
    rm -rf "$scratch"
  done
fi
echo "== test: all passed in $(( $(date +%s) - start ))s"
