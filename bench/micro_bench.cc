// Micro-benchmarks of meridian-bench's per-request and per-event work, which must stay far below
// the cost of an RPC so the tool is never the bottleneck. Run: bin/bench_micro
#include <benchmark/benchmark.h>

#include <string>

#include "bench/histogram.h"
#include "bench/watch_counter.h"

namespace meridian::bench {
namespace {

void BM_HistogramRecord(benchmark::State& state) {
  LatencyHistogram h;
  uint64_t v = 123457;
  for (auto _ : state) {
    h.Record(v);
    v = v * 6364136223846793005ULL + 1442695040888963407ULL;
    v = (v >> 40) + 1000;  // ~1 us .. 16 ms
  }
  benchmark::DoNotOptimize(h.count());
}
BENCHMARK(BM_HistogramRecord);

void BM_HistogramSummary(benchmark::State& state) {
  LatencyHistogram h;
  for (uint64_t v = 1000; v < 50'000'000; v += 997) h.Record(v);
  for (auto _ : state) benchmark::DoNotOptimize(h.Summary());
}
BENCHMARK(BM_HistogramSummary);

void BM_EncodeWatchPayload(benchmark::State& state) {
  std::string value;
  uint64_t seq = 0;
  for (auto _ : state) {
    EncodeWatchPayload(seq++, 987654321, 256, &value);
    benchmark::DoNotOptimize(value.data());
  }
}
BENCHMARK(BM_EncodeWatchPayload);

void BM_DecodeWatchPayload(benchmark::State& state) {
  std::string value;
  EncodeWatchPayload(42, 987654321, 256, &value);
  for (auto _ : state) benchmark::DoNotOptimize(DecodeWatchPayload(value));
}
BENCHMARK(BM_DecodeWatchPayload);

void BM_SequenceTrackerObserve(benchmark::State& state) {
  const uint64_t puts = 1 << 20;
  SequenceTracker t(8, puts);
  uint64_t seq = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(t.Observe(seq));
    if (++seq == puts) seq = 0;  // wraps into duplicates, which cost the same
  }
}
BENCHMARK(BM_SequenceTrackerObserve);

// One watch response with `n` events, as a watcher's stream handler sees it.
void BM_WatcherSetOnResponse(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  WatcherSet set(1, true, 1, 1 << 24);
  etcdserverpb::WatchResponse created;
  created.set_created(true);
  WatcherSet::ResponseResult r;
  (void)set.OnResponse(created, 0, nullptr, &r);
  etcdserverpb::WatchResponse resp;
  for (int i = 0; i < n; ++i) {
    mvccpb::Event* e = resp.add_events();
    e->set_type(mvccpb::Event::PUT);
    EncodeWatchPayload(static_cast<uint64_t>(i), 1000, 256, e->mutable_kv()->mutable_value());
  }
  LatencyHistogram delivery;
  for (auto _ : state) {
    r = {};
    (void)set.OnResponse(resp, 5000, &delivery, &r);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_WatcherSetOnResponse)->Arg(1)->Arg(64);

}  // namespace
}  // namespace meridian::bench

BENCHMARK_MAIN();
