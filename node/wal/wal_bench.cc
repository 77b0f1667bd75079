// Append throughput with group commit: N 256-byte entries per Append, one Sync per batch.
// Run: bin/wal_bench  (writes under $TMPDIR or /tmp; each benchmark uses a fresh directory)
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "node/wal/wal.h"

namespace {

using meridian::wal::Entry;
using meridian::wal::Wal;

void BM_AppendSyncBatch(benchmark::State& state) {
  const auto batch_size = static_cast<size_t>(state.range(0));
  const char* tmp = getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/wal_bench.XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  {
    auto wal = Wal::Open({.dir = dir}, nullptr);
    if (!wal.ok()) {
      state.SkipWithError(wal.status().ToString().c_str());
      return;
    }
    std::vector<Entry> batch(batch_size);
    for (Entry& e : batch) e.data.assign(256, 'x');
    uint64_t next_index = 1;
    for (auto _ : state) {
      for (Entry& e : batch) {
        e.index = next_index++;
        e.term = 1;
      }
      if (!(*wal)->Append(batch, nullptr).ok() || !(*wal)->Sync().ok()) {
        state.SkipWithError("append/sync failed");
        break;
      }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
    state.counters["entries/s"] = benchmark::Counter(
        static_cast<double>(state.iterations() * batch_size), benchmark::Counter::kIsRate);
    state.counters["fsync_ms"] = (*wal)->last_fsync_seconds() * 1e3;
  }
  std::filesystem::remove_all(dir);
}

BENCHMARK(BM_AppendSyncBatch)->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
