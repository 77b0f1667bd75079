// Micro-benchmarks of the MVCC hot paths: put (batched, as the apply loop does), range at the
// current and at an old revision, and watch fan-out from one apply step to many watchers.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "common/temp_dir.h"
#include "node/mvcc/watch_hub.h"

namespace meridian::mvcc {
namespace {

struct Fixture {
  Fixture() {
    StoreOptions o;
    o.dir = dir.path();
    store = std::move(*Store::Open(o));
  }
  ~Fixture() { store.reset(); }
  void Fill(int keys, int value_bytes) {
    std::string value(value_bytes, 'v');
    for (int i = 0; i < keys;) {
      ApplyBatch b(store.get());
      for (int j = 0; j < 1000 && i < keys; ++j, ++i) {
        auto t = b.BeginTxn();
        char key[32];
        snprintf(key, sizeof(key), "key/%08d", i);
        (void)t.Put(key, value, 0);
        t.End();
      }
      (void)b.Commit();
    }
  }
  TempDir dir{"mvccbench"};
  std::unique_ptr<Store> store;
};

// Puts per second with `range(0)` puts per apply batch, 256-byte values over 100k keys, in key
// order (range(1) == 0) or scattered (1: as 100 clients writing random keys do, so that every
// put's lookup and memtable insert land somewhere new).
void BM_PutBatched(benchmark::State& state) {
  Fixture f;
  std::string value(256, 'v');
  const bool scattered = state.range(1) != 0;
  uint64_t n = 0;
  for (auto _ : state) {
    ApplyBatch b(f.store.get());
    for (int j = 0; j < state.range(0); ++j) {
      auto t = b.BeginTxn();
      char key[32];
      // 2654435761 is coprime with 100000: n * it mod 100000 visits every key once per cycle.
      const uint64_t k = (scattered ? n * 2654435761u : n) % 100000;
      ++n;
      snprintf(key, sizeof(key), "key/%08llu", static_cast<unsigned long long>(k));
      benchmark::DoNotOptimize(t.Put(key, value, 0));
      t.End();
    }
    benchmark::DoNotOptimize(b.Commit());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PutBatched)->Args({1, 0})->Args({16, 0})->Args({256, 0})->Args({16, 1});

// Single-key reads at the current revision (the common linearizable Get).
void BM_RangeSingleKeyCurrent(benchmark::State& state) {
  Fixture f;
  f.Fill(100000, 256);
  auto view = f.store->View();
  uint64_t n = 0;
  for (auto _ : state) {
    char key[32];
    snprintf(key, sizeof(key), "key/%08llu",
             static_cast<unsigned long long>((n++ * 7919) % 100000));
    benchmark::DoNotOptimize(view->Range(key, "", RangeOptions{}));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RangeSingleKeyCurrent);

// A 100-key prefix page, current revision and an older one (through the index).
void BM_RangePage(benchmark::State& state) {
  Fixture f;
  f.Fill(100000, 256);
  int64_t old_rev = f.store->rev() / 2;
  f.Fill(100000, 256);  // every key has a second version
  auto view = f.store->View();
  RangeOptions o;
  o.limit = 100;
  o.rev = state.range(0) ? old_rev : 0;
  uint64_t n = 0;
  for (auto _ : state) {
    char key[32];
    snprintf(key, sizeof(key), "key/%08llu", static_cast<unsigned long long>((n++ * 7919) % 99000));
    benchmark::DoNotOptimize(view->Range(key, std::string(1, '\0'), o));
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
BENCHMARK(BM_RangePage)->Arg(0)->Arg(1)->ArgName("historical");

class CountingSink : public WatchStream::Sink {
 public:
  void Write(const etcdserverpb::WatchResponse*, bool) override { ++writes; }
  uint64_t writes = 0;
};

// One put delivered to `range(0)` watchers of the same key, each on its own stream.
void BM_WatchFanOut(benchmark::State& state) {
  Fixture f;
  WatchHubOptions wo;
  WatchHub hub(f.store.get(), wo);
  std::vector<std::unique_ptr<CountingSink>> sinks;
  std::vector<std::shared_ptr<WatchStream>> streams;
  etcdserverpb::WatchCreateRequest req;
  req.set_key("hot");
  for (int i = 0; i < state.range(0); ++i) {
    sinks.push_back(std::make_unique<CountingSink>());
    streams.push_back(hub.NewStream(sinks.back().get()));
    hub.Create(streams.back(), req);
    streams.back()->OnWriteDone();  // the "created" response is written
  }
  for (auto _ : state) {
    ApplyBatch b(f.store.get());
    auto t = b.BeginTxn();
    (void)t.Put("hot", "value", 0);
    t.End();
    (void)b.Commit();
    hub.Notify(b.events(), b.rev());
    state.PauseTiming();
    for (auto& s : streams) s->OnWriteDone();  // drain, as the transport would
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  for (auto& s : streams) hub.CloseStream(s);
}
BENCHMARK(BM_WatchFanOut)->Arg(1000)->Arg(10000);

}  // namespace
}  // namespace meridian::mvcc

BENCHMARK_MAIN();
