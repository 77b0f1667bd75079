// Model-based tests of the MVCC store: random operations run against the store and against a
// trivial in-memory model of etcd's semantics, with results compared after every step.
#include "node/mvcc/store.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/temp_dir.h"
#include "node/wal/crc32c.h"

namespace meridian::mvcc {
namespace {

using meridian::TempDir;

// The model: for every revision, the full map of live keys.
struct ModelKv {
  std::string value;
  int64_t create = 0, mod = 0, version = 0, lease = 0;
};
using ModelState = std::map<std::string, ModelKv>;

// The model's side of a put of `k` at revision `rev`.
void ModelPut(ModelState* state, const std::string& k, const std::string& v, int64_t lease,
              int64_t rev) {
  auto& kv = (*state)[k];
  if (kv.version == 0) kv.create = rev;
  kv.version++;
  kv.mod = rev;
  kv.value = v;
  kv.lease = lease;
}

struct Model {
  int64_t rev = 1;
  int64_t compact = 0;
  std::map<int64_t, ModelState> at;  // revision -> state
  Model() { at[1] = {}; }
  ModelState& Begin() {
    at[rev + 1] = at[rev];
    return at[rev + 1];
  }
};

std::unique_ptr<Store> OpenStore(const std::string& dir,
                                 uint64_t latest_cache_bytes = StoreOptions().latest_cache_bytes) {
  StoreOptions o;
  o.dir = dir;
  o.write_buffer_bytes = 1 << 20;
  o.latest_cache_bytes = latest_cache_bytes;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

void ExpectResultMatches(const absl::StatusOr<RangeResult>& r, const ModelState& state,
                         const std::string& key, const std::string& end, int64_t limit,
                         const std::string& ctx);

void ExpectRangeMatches(const ReadView& view, const ModelState& state, const std::string& key,
                        const std::string& end, int64_t rev, int64_t limit,
                        const std::string& ctx) {
  RangeOptions o;
  o.rev = rev;
  o.limit = limit;
  ExpectResultMatches(view.Range(key, end, o), state, key, end, limit, ctx);
}

void ExpectResultMatches(const absl::StatusOr<RangeResult>& r, const ModelState& state,
                         const std::string& key, const std::string& end, int64_t limit,
                         const std::string& ctx) {
  ASSERT_TRUE(r.ok()) << ctx << " " << r.status();
  KeyRange range(key, end);
  std::vector<std::pair<std::string, ModelKv>> want;
  for (const auto& [k, v] : state) {
    if (range.Contains(k)) want.emplace_back(k, v);
  }
  if (!range.single() && !range.unbounded() && end <= key) want.clear();
  ASSERT_EQ(r->count, static_cast<int64_t>(want.size())) << ctx;
  size_t n = limit > 0 ? std::min<size_t>(limit, want.size()) : want.size();
  ASSERT_EQ(r->kvs.size(), n) << ctx;
  for (size_t i = 0; i < n; ++i) {
    const auto& kv = r->kvs[i];
    EXPECT_EQ(kv.key(), want[i].first) << ctx;
    EXPECT_EQ(kv.value(), want[i].second.value) << ctx << " key " << kv.key();
    EXPECT_EQ(kv.create_revision(), want[i].second.create) << ctx << " key " << kv.key();
    EXPECT_EQ(kv.mod_revision(), want[i].second.mod) << ctx << " key " << kv.key();
    EXPECT_EQ(kv.version(), want[i].second.version) << ctx << " key " << kv.key();
    EXPECT_EQ(kv.lease(), want[i].second.lease) << ctx << " key " << kv.key();
  }
}

TEST(StoreTest, FreshStoreIsAtRevisionOne) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  EXPECT_EQ(st->rev(), 1);
  auto r = st->View()->Range("a", "", {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->count, 0);
  EXPECT_EQ(r->rev, 1);
}

TEST(StoreTest, TxnTakesOneRevisionAndSeesOwnWrites) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  ApplyBatch b(st.get());
  auto t = b.BeginTxn();
  ASSERT_TRUE(t.Put("a", "1", 0).ok());
  ASSERT_TRUE(t.Put("b", "2", 0).ok());
  auto r = t.Range("a", "c", {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->count, 2);
  EXPECT_EQ(r->rev, 2);
  auto del = t.DeleteRange("a", "");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->size(), 1u);
  EXPECT_EQ(t.End(), 2);
  ASSERT_TRUE(b.Commit().ok());
  EXPECT_EQ(st->rev(), 2);
  ASSERT_EQ(b.events().size(), 3u);
  EXPECT_EQ(b.events()[2].type(), mvccpb::Event::DELETE);
  EXPECT_EQ(b.events()[2].prev_kv().value(), "1");
  auto view = st->View();
  auto at = view->Range("", std::string(1, '\0'), {});
  ASSERT_TRUE(at.ok());
  ASSERT_EQ(at->kvs.size(), 1u);
  EXPECT_EQ(at->kvs[0].key(), "b");
}

TEST(StoreTest, CompactedAndFutureRevisionsAreRefused) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  for (int i = 0; i < 5; ++i) {
    ApplyBatch b(st.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.Put("k", std::to_string(i), 0).ok());
    t.End();
    ASSERT_TRUE(b.Commit().ok());
  }
  {
    ApplyBatch b(st.get());
    ASSERT_TRUE(b.Compact(4).ok());
    EXPECT_EQ(b.Compact(3).message(), kErrCompacted);
    EXPECT_EQ(b.Compact(100).message(), kErrFutureRev);
    ASSERT_TRUE(b.Commit().ok());
  }
  st->WaitCompacted(4);
  auto view = st->View();
  RangeOptions o;
  o.rev = 3;
  EXPECT_EQ(view->Range("k", "", o).status().message(), kErrCompacted);
  o.rev = 7;
  EXPECT_EQ(view->Range("k", "", o).status().message(), kErrFutureRev);
  o.rev = 4;
  auto r = view->Range("k", "", o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].value(), "2");
  std::vector<mvccpb::Event> evs;
  int64_t next = 0;
  EXPECT_EQ(view->ReadEvents(4, 10, &evs, &next).message(), kErrCompacted);
  ASSERT_TRUE(view->ReadEvents(5, 10, &evs, &next).ok());
  EXPECT_EQ(evs.size(), 2u);
  EXPECT_EQ(next, 7);
}

// Random puts, deletes, txns and compactions against the model; every committed revision is
// then read back at random historical revisions, before and after a reopen.
TEST(StoreTest, RandomizedAgainstModel) {
  for (uint64_t seed : {1ull, 2ull, 3ull, 4ull}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    TempDir dir;
    std::mt19937_64 rng(seed);
    auto pick_key = [&] {
      static const char* keys[] = {
          "a",   "ab",  "abc", "b", "b\xff", "c", std::string(1, '\0').c_str(),
          "d/1", "d/2", "d/3", "zz"};
      int n = static_cast<int>(sizeof(keys) / sizeof(keys[0]));
      int i = static_cast<int>(rng() % n);
      return i == 6 ? std::string(1, '\0') : std::string(keys[i]);
    };
    auto st = OpenStore(dir.path());
    Model m;
    for (int step = 0; step < 400; ++step) {
      int op = static_cast<int>(rng() % 10);
      ApplyBatch b(st.get());
      if (op < 5) {  // txn of 1-3 puts/deletes
        auto t = b.BeginTxn();
        ModelState next = m.at[m.rev];
        bool changed = false;
        int n = 1 + static_cast<int>(rng() % 3);
        for (int i = 0; i < n; ++i) {
          std::string k = pick_key();
          if (rng() % 3 != 0) {
            std::string v = "v" + std::to_string(rng() % 1000);
            int64_t lease = static_cast<int64_t>(rng() % 3);
            ASSERT_TRUE(t.Put(k, v, lease).ok());
            ModelPut(&next, k, v, lease, m.rev + 1);
            changed = true;
          } else {
            std::string end = rng() % 2 ? "" : k + "z";
            auto del = t.DeleteRange(k, end);
            ASSERT_TRUE(del.ok());
            KeyRange range(k, end);
            for (auto it = next.begin(); it != next.end();) {
              if (range.Contains(it->first)) {
                it = next.erase(it);
                changed = true;
              } else {
                ++it;
              }
            }
          }
        }
        t.End();
        if (changed) {
          m.rev++;
          m.at[m.rev] = next;
        }
      } else if (op < 6 && m.rev > m.compact + 1) {
        int64_t c = m.compact + 1 + static_cast<int64_t>(rng() % (m.rev - m.compact));
        ASSERT_TRUE(b.Compact(c).ok());
        m.compact = c;
      }
      b.SetConsistentIndex(step + 1);
      ASSERT_TRUE(b.Commit().ok());
      ASSERT_EQ(st->rev(), m.rev);
      // Read checks.
      auto view = st->View();
      for (int q = 0; q < 3; ++q) {
        int64_t rev = (rng() % 4 == 0)
                          ? 0
                          : m.compact + static_cast<int64_t>(rng() % (m.rev - m.compact + 1));
        if (rev != 0 && rev < std::max<int64_t>(m.compact, 1)) rev = 0;
        const ModelState& state = m.at[rev == 0 ? m.rev : rev];
        std::string k = pick_key();
        std::string end;
        switch (rng() % 4) {
          case 0:
            end = "";
            break;
          case 1:
            end = std::string(1, '\0');
            break;
          case 2:
            end = PrefixEnd(k);
            break;
          default:
            end = pick_key();
            break;
        }
        int64_t limit = static_cast<int64_t>(rng() % 3);
        ExpectRangeMatches(*view, state, k, end, rev, limit,
                           "step " + std::to_string(step) + " rev " + std::to_string(rev));
        if (HasFatalFailure()) return;
      }
    }
    // Reopen: everything up to the last flush survives; flush first, as the node does.
    ASSERT_TRUE(st->Flush().ok());
    st.reset();
    st = OpenStore(dir.path());
    ASSERT_EQ(st->rev(), m.rev);
    auto view = st->View();
    for (int64_t rev = std::max<int64_t>(m.compact, 1); rev <= m.rev; ++rev) {
      ExpectRangeMatches(*view, m.at[rev], std::string(1, '\0'), std::string(1, '\0'), rev, 0,
                         "reopened rev " + std::to_string(rev));
      if (HasFatalFailure()) return;
    }
  }
}

// Apply batches of several transactions, with reads inside them, against the model: a
// transaction sees the batch's earlier transactions and its own writes, whether they are still
// in the plain batch, the indexed one (after a read that iterates), the apply cache (none, one
// that keeps dropping entries, the default) or RocksDB.
class StoreBatchModelTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(StoreBatchModelTest, BatchesWithReadsAgainstModel) {
  const uint64_t cache_bytes = GetParam();
  for (uint64_t seed : {11ull, 12ull, 13ull}) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " cache " + std::to_string(cache_bytes));
    TempDir dir;
    std::mt19937_64 rng(seed);
    auto pick_key = [&] {
      static const char* keys[] = {"a", "ab", "abc", "b", "b\xff", "c", "d/1", "d/2", "zz"};
      return std::string(keys[rng() % (sizeof(keys) / sizeof(keys[0]))]);
    };
    auto pick_end = [&](const std::string& k) -> std::string {
      switch (rng() % 4) {
        case 0:
          return "";
        case 1:
          return std::string(1, '\0');
        case 2:
          return PrefixEnd(k);
        default:
          return pick_key();
      }
    };
    auto st = OpenStore(dir.path(), cache_bytes);
    Model m;
    for (int step = 0; step < 300; ++step) {
      ApplyBatch b(st.get());
      const int txns = 1 + static_cast<int>(rng() % 4);
      for (int tx = 0; tx < txns; ++tx) {
        auto t = b.BeginTxn();
        ModelState next = m.at[m.rev];
        bool changed = false;
        const int ops = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < ops; ++i) {
          const std::string ctx = "step " + std::to_string(step) + " txn " + std::to_string(tx) +
                                  " op " + std::to_string(i);
          std::string k = pick_key();
          const int kind = static_cast<int>(rng() % 6);
          if (kind < 3) {
            std::string v = "v" + std::to_string(rng() % 1000) + std::string(rng() % 64, 'x');
            int64_t lease = static_cast<int64_t>(rng() % 3);
            auto prev = t.Put(k, v, lease);
            ASSERT_TRUE(prev.ok()) << ctx;
            auto was = next.find(k);
            ASSERT_EQ(prev->has_value(), was != next.end()) << ctx << " key " << k;
            if (prev->has_value()) {
              EXPECT_EQ((*prev)->value(), was->second.value) << ctx;
              EXPECT_EQ((*prev)->version(), was->second.version) << ctx;
              EXPECT_EQ((*prev)->create_revision(), was->second.create) << ctx;
            }
            ModelPut(&next, k, v, lease, m.rev + 1);
            changed = true;
          } else if (kind == 3) {
            std::string end = pick_end(k);
            if (end == k) end.clear();
            auto del = t.DeleteRange(k, end);
            ASSERT_TRUE(del.ok()) << ctx;
            KeyRange range(k, end);
            for (auto it = next.begin(); it != next.end();) {
              if (range.Contains(it->first) && (range.single() || range.unbounded() || k < end)) {
                it = next.erase(it);
                changed = true;
              } else {
                ++it;
              }
            }
          } else {
            // A read inside the transaction: a single key (the point path) or a range (which
            // moves the batch to the indexed form).
            std::string end = kind == 4 ? std::string() : pick_end(k);
            const int64_t limit = static_cast<int64_t>(rng() % 3);
            RangeOptions o;
            o.limit = limit;
            ExpectResultMatches(t.Range(k, end, o), next, k, end, limit, ctx);
            if (HasFatalFailure()) return;
          }
        }
        t.End();
        if (changed) {
          m.rev++;
          m.at[m.rev] = next;
        }
      }
      b.SetConsistentIndex(step + 1);
      ASSERT_TRUE(b.Commit().ok());
      ASSERT_EQ(st->rev(), m.rev);
      auto view = st->View();
      ExpectRangeMatches(*view, m.at[m.rev], std::string(1, '\0'), std::string(1, '\0'), 0, 0,
                         "after step " + std::to_string(step));
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CacheSizes, StoreBatchModelTest,
                         ::testing::Values(uint64_t{0}, uint64_t{1200}, uint64_t{64} << 20));

mvccpb::KeyValue CacheRecord(int i, size_t key_bytes, size_t value_bytes) {
  mvccpb::KeyValue out;
  std::string key = absl::StrCat("key", i);
  key.resize(std::max(key.size(), key_bytes), 'k');
  out.set_key(key);
  out.set_value(std::string(value_bytes, 'v'));
  out.set_create_revision(i);
  out.set_mod_revision(i);
  out.set_version(1);
  return out;
}

// The budget is meant as memory the process pays, so the charge per entry must cover what malloc
// really hands out for it. Measured with glibc's own count of allocated bytes; the sanitizers
// replace malloc, so their builds skip it.
TEST(LatestCacheTest, ChargeCoversTheHeapItTakes) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "malloc is the sanitizer's here";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  GTEST_SKIP() << "malloc is the sanitizer's here";
#endif
#endif
  struct Shape {
    size_t key_bytes, value_bytes;
  };
  for (Shape shape : {Shape{8, 0}, Shape{16, 256}, Shape{60, 1000}, Shape{200, 10}}) {
    SCOPED_TRACE(absl::StrCat("key ", shape.key_bytes, " value ", shape.value_bytes));
    const size_t budget = 4u << 20;
    const size_t before = mallinfo2().uordblks;
    size_t heap_peak = 0, charged_at_peak = 0;
    {
      LatestCache cache(budget);
      for (int i = 0; i < 40000; ++i) {
        cache.Put(CacheRecord(i, shape.key_bytes, shape.value_bytes));
        if (i % 97 == 0) {
          const size_t heap = mallinfo2().uordblks - before;
          ASSERT_LE(heap, cache.bytes() + (64u << 10)) << "after " << i << " entries";
          if (heap > heap_peak) heap_peak = heap, charged_at_peak = cache.bytes();
        }
      }
      ASSERT_LE(cache.bytes(), budget);
    }
    // Not wildly above the truth either, or the budget would buy far fewer entries than it says.
    EXPECT_GE(heap_peak * 3, charged_at_peak);
  }
}

TEST(LatestCacheTest, StaysWithinBudgetAndKeepsRecentKeys) {
  const size_t budget = 20 * LatestCache::EntryBytes(CacheRecord(0, 8, 100));
  LatestCache cache(budget);
  auto kv = [](int i) {
    mvccpb::KeyValue out;
    char key[16];
    snprintf(key, sizeof(key), "key%05d", i);
    out.set_key(key);
    out.set_value(std::string(100, 'v'));
    out.set_version(i);
    return out;
  };
  for (int i = 0; i < 1000; ++i) {
    cache.Put(kv(i));
    ASSERT_LE(cache.bytes(), budget) << "after " << i;
    // The latest key is always there; a key touched just now survives the next rotation.
    auto got = cache.Get(kv(i).key());
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->version(), i);
  }
  EXPECT_GT(cache.size(), 5u);
  EXPECT_FALSE(cache.Get(kv(0).key()).has_value()) << "the oldest key was evicted";
  // A hit in the old generation moves the entry up, so it outlives entries not used since.
  const int survivor = 990;
  for (int i = 1000; i < 1008; ++i) {
    cache.Put(kv(i));
    ASSERT_TRUE(cache.Get(kv(survivor).key()).has_value()) << "after " << i;
  }
  cache.Erase(kv(survivor).key());
  EXPECT_FALSE(cache.Get(kv(survivor).key()).has_value());
  // A record larger than half the budget is not kept (it would push out everything else).
  mvccpb::KeyValue big = kv(5000);
  big.set_value(std::string(budget, 'b'));
  cache.Put(big);
  EXPECT_FALSE(cache.Get(big.key()).has_value());
  EXPECT_LE(cache.bytes(), budget);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

// A read released because the store reached its read index (consistent_index() >= i) reads
// View() next: that view must hold index i. Publishing the index before the view let such a read
// see the state before its index (a stale read that the cluster linearizability test caught).
TEST(StoreTest, ViewIsNeverOlderThanTheConsistentIndexSeenBeforeIt) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  std::atomic<bool> done{false};
  std::atomic<int64_t> violations{0};
  std::thread reader([&] {
    while (!done.load()) {
      const uint64_t seen = st->consistent_index();
      const auto view = st->View();
      if (view->consistent_index() < seen) violations.fetch_add(1);
    }
  });
  for (uint64_t i = 1; i <= 20000; ++i) {
    ApplyBatch b(st.get());
    b.SetConsistentIndex(i);
    ASSERT_TRUE(b.Commit().ok());
  }
  done = true;
  reader.join();
  EXPECT_EQ(violations.load(), 0);
}

TEST(StoreTest, PhysicalCompactionRemovesHistory) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  for (int i = 0; i < 50; ++i) {
    ApplyBatch b(st.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.Put("k" + std::to_string(i % 5), std::string(100, 'x'), 0).ok());
    if (i % 7 == 0) ASSERT_TRUE(t.DeleteRange("k0", "").ok());
    t.End();
    ASSERT_TRUE(b.Commit().ok());
  }
  int64_t top = st->rev();
  {
    ApplyBatch b(st.get());
    ASSERT_TRUE(b.Compact(top).ok());
    ASSERT_TRUE(b.Commit().ok());
  }
  st->WaitCompacted(top);
  {
    ApplyBatch b(st.get());  // publishes a view taken after the physical compaction
    ASSERT_TRUE(b.Commit().ok());
  }
  size_t history = 0;
  auto view = st->View();
  ASSERT_TRUE(st->ForEachHistory(*view, [&](Revision, char type, std::string_view) {
                  EXPECT_EQ(type, kHistPut);
                  ++history;
                  return absl::OkStatus();
                }).ok());
  auto live = view->Range(std::string(1, '\0'), std::string(1, '\0'), {});
  ASSERT_TRUE(live.ok());
  // Only the newest put of each live key is left.
  EXPECT_EQ(history, static_cast<size_t>(live->count));
}

// Writes `n` transactions of puts/deletes over a few keys, one lease, and a compaction.
void FillStore(Store* st, int n, uint32_t seed, uint64_t index) {
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    ApplyBatch b(st);
    auto t = b.BeginTxn();
    std::string key = "k" + std::to_string(rng() % 7);
    if (rng() % 4 == 0) {
      ASSERT_TRUE(t.DeleteRange(key, "").ok());
    } else {
      ASSERT_TRUE(t.Put(key, "v" + std::to_string(rng()), 0).ok());
    }
    if (i == 3) ASSERT_TRUE(t.PutLease(LeaseRecord{77, 30}).ok());
    t.End();
    b.SetConsistentIndex(index + i);
    ASSERT_TRUE(b.Commit().ok());
  }
  ApplyBatch c(st);
  ASSERT_TRUE(c.Compact(st->rev() / 2).ok());
  ASSERT_TRUE(c.Commit().ok());
}

// A raft snapshot ships the whole store as an image: importing it must give an identical store
// (data, history, revisions, leases, consistent index) while keeping the receiver's own keys.
TEST(StoreTest, ImageExportImportRoundTrip) {
  TempDir dir;
  auto src = OpenStore(dir.path() + "/src");
  FillStore(src.get(), 60, 1, 10);
  {
    ApplyBatch b(src.get());
    b.PutMeta("member_id", "sender");
    b.PutMeta("alarm/x", "a");
    ASSERT_TRUE(b.Commit().ok());
  }
  auto view = src->View();
  std::string image = dir.path() + "/image";
  ASSERT_TRUE(src->ExportImage(*view, image, {"member_id"}).ok());

  auto dst = OpenStore(dir.path() + "/dst");
  FillStore(dst.get(), 20, 2, 1);  // different, older contents that must disappear
  {
    // Keys, a lease and history only the receiver has, first and last in their families (the
    // import deletes a family's first-to-last range and its last key).
    ApplyBatch b(dst.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.Put("a-receiver-only", "x", 0).ok());
    ASSERT_TRUE(t.Put("z-receiver-only", "x", 99).ok());
    ASSERT_TRUE(t.PutLease(LeaseRecord{99, 30}).ok());
    t.End();
    for (int i = 0; i < 100; ++i) {  // history beyond the sender's last revision
      auto t2 = b.BeginTxn();
      ASSERT_TRUE(t2.Put("k1", std::to_string(i), 0).ok());
      t2.End();
    }
    b.PutMeta("member_id", "receiver");
    ASSERT_TRUE(b.Commit().ok());
  }
  ASSERT_GT(dst->rev(), src->rev());
  auto old_view = dst->View();
  ASSERT_TRUE(dst->ImportImage(image, {"member_id"}).ok());
  // Nothing of the import is left beside the store's own files.
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/dst")) {
    EXPECT_EQ(e.path().filename().string().find("image-import"), std::string::npos) << e.path();
  }
  auto history = [](Store* st) {
    std::vector<std::string> out;
    EXPECT_TRUE(st->ForEachHistory(*st->View(), [&](Revision r, char type, std::string_view bytes) {
                    out.push_back(
                        absl::StrCat(r.main, ".", r.sub, std::string(1, type), std::string(bytes)));
                    return absl::OkStatus();
                  }).ok());
    return out;
  };
  EXPECT_EQ(history(dst.get()), history(src.get()));
  EXPECT_EQ(dst->rev(), src->rev());
  EXPECT_EQ(dst->compact_rev(), src->compact_rev());
  EXPECT_EQ(dst->consistent_index(), src->consistent_index());
  auto a = src->View();
  auto b = dst->View();
  auto all = std::string(1, '\0');
  auto ra = a->Range("", all, {});
  auto rb = b->Range("", all, {});
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(ra->kvs.size(), rb->kvs.size());
  for (size_t i = 0; i < ra->kvs.size(); ++i) {
    EXPECT_EQ(ra->kvs[i].SerializeAsString(), rb->kvs[i].SerializeAsString());
  }
  auto ha = a->HashKV(a->rev());
  auto hb = b->HashKV(b->rev());
  ASSERT_TRUE(ha.ok() && hb.ok());
  EXPECT_EQ(*ha, *hb);
  auto leases = b->Leases();
  ASSERT_TRUE(leases.ok());
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].id, 77);
  EXPECT_EQ(dst->GetMeta("member_id")->value_or(""), "receiver");
  EXPECT_EQ(dst->GetMeta("alarm/x")->value_or(""), "a");
  // Importing again over the imported store changes nothing.
  ASSERT_TRUE(dst->ImportImage(image, {"member_id"}).ok());
  EXPECT_EQ(history(dst.get()), history(src.get()));
  EXPECT_EQ(dst->rev(), src->rev());
  EXPECT_EQ(dst->GetMeta("member_id")->value_or(""), "receiver");
  // A view taken before the import still reads the old data.
  EXPECT_NE(old_view->rev(), 0);
  EXPECT_TRUE(old_view->Range("", all, {}).ok());

  // Survives a reopen (the import was flushed).
  b.reset();
  a.reset();
  old_view.reset();
  view.reset();
  dst.reset();
  auto reopened = OpenStore(dir.path() + "/dst");
  EXPECT_EQ(reopened->rev(), src->rev());
  EXPECT_EQ(reopened->consistent_index(), src->consistent_index());
}

TEST(StoreTest, CorruptImageIsRefusedAndLeavesTheStoreAlone) {
  TempDir dir;
  auto src = OpenStore(dir.path() + "/src");
  FillStore(src.get(), 10, 3, 1);
  std::string image = dir.path() + "/image";
  ASSERT_TRUE(src->ExportImage(*src->View(), image, {}).ok());
  auto dst = OpenStore(dir.path() + "/dst");
  FillStore(dst.get(), 5, 4, 1);
  int64_t rev = dst->rev();
  // Flip one byte in the middle, then truncate: both refused.
  std::string bytes;
  {
    std::ifstream in(image, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x40;
  std::ofstream(image + ".flip", std::ios::binary) << flipped;
  std::ofstream(image + ".cut", std::ios::binary) << bytes.substr(0, bytes.size() - 7);
  std::ofstream(image + ".junk", std::ios::binary) << "not an image at all";
  // Records out of order, under a good checksum: refused too (by the SST writer).
  auto record = [](uint8_t cf, std::string_view k, std::string_view v) {
    std::string r(1, static_cast<char>(cf));
    for (uint32_t len : {static_cast<uint32_t>(k.size()), static_cast<uint32_t>(v.size())}) {
      for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
    }
    return r + std::string(k) + std::string(v);
  };
  std::string unordered =
      absl::StrCat("MERIDIAN-STORE-IMAGE-1\n", record(1, "b", "x"), record(1, "a", "x"));
  const uint32_t crc = wal::Crc32cExtend(0, unordered.data(), unordered.size());
  std::string crc_bytes;
  for (int i = 0; i < 4; ++i) crc_bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  unordered += record(0xff, "", crc_bytes);
  std::ofstream(image + ".unordered", std::ios::binary) << unordered;
  auto before = dst->View()->Range("", std::string(1, '\0'), {});
  ASSERT_TRUE(before.ok());
  for (const char* suffix : {".flip", ".cut", ".junk", ".unordered"}) {
    auto st = dst->ImportImage(image + suffix, {});
    EXPECT_FALSE(st.ok()) << suffix;
    EXPECT_EQ(dst->rev(), rev) << suffix;
    auto after = dst->View()->Range("", std::string(1, '\0'), {});
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->kvs.size(), before->kvs.size()) << suffix;
  }
  EXPECT_FALSE(dst->ImportImage(dir.path() + "/missing", {}).ok());
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/dst")) {
    EXPECT_EQ(e.path().filename().string().find("image-import"), std::string::npos) << e.path();
  }
}

// Kubernetes-style paginated lists (first page at the current revision, the next pages at the
// revision it saw, each starting after the previous page's last key), interleaved with writes
// and compactions, against the model. Later pages come from the list cache.
TEST(StoreTest, PaginatedListsAgainstModel) {
  for (uint64_t seed : {11ull, 12ull, 13ull}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    TempDir dir;
    std::mt19937_64 rng(seed);
    auto st = OpenStore(dir.path());
    Model m;
    uint64_t index = 0;
    auto write_step = [&] {
      ApplyBatch b(st.get());
      auto t = b.BeginTxn();
      ModelState next = m.at[m.rev];
      bool changed = false;
      const int n = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < n; ++i) {
        char key[16];
        std::snprintf(key, sizeof(key), "%s/%03d", rng() % 8 == 0 ? "q" : "p",
                      static_cast<int>(rng() % 120));
        if (rng() % 4 != 0) {
          std::string v = "v" + std::to_string(rng() % 1000);
          ASSERT_TRUE(t.Put(key, v, 0).ok());
          ModelPut(&next, key, v, 0, m.rev + 1);
          changed = true;
        } else {
          auto del = t.DeleteRange(key, "");
          ASSERT_TRUE(del.ok());
          if (!del->empty()) changed = true;  // deleting nothing takes no revision
          next.erase(key);
        }
      }
      t.End();
      if (changed) {
        m.rev++;
        m.at[m.rev] = next;
      }
      if (rng() % 25 == 0 && m.rev > m.compact + 10) {
        int64_t c = m.rev - static_cast<int64_t>(rng() % 10);
        ASSERT_TRUE(b.Compact(c).ok());
        m.compact = c;
      }
      b.SetConsistentIndex(++index);
      ASSERT_TRUE(b.Commit().ok());
    };
    for (int i = 0; i < 100; ++i) {
      write_step();
      if (HasFatalFailure()) return;
    }
    int pages = 0;
    for (int list = 0; list < 60; ++list) {
      const int64_t limit = 1 + static_cast<int64_t>(rng() % 25);
      const std::string end = PrefixEnd("p/");
      std::string start = "p/";
      int64_t rev = 0;  // the first page reads the current revision
      while (true) {
        RangeOptions o;
        o.rev = rev;
        o.limit = limit + 1;  // as the server asks: one more tells whether there is more
        o.keys_only = rng() % 4 == 0;
        auto r = st->View()->Range(start, end, o);
        if (rev != 0 && rev < m.compact) {
          ASSERT_FALSE(r.ok());
          EXPECT_EQ(r.status().message(), kErrCompacted);
          break;
        }
        ASSERT_TRUE(r.ok()) << r.status();
        if (rev == 0) rev = r->rev;
        const ModelState& state = m.at[rev];
        std::vector<std::pair<std::string, ModelKv>> want;
        for (auto it = state.lower_bound(start); it != state.end() && it->first < end; ++it) {
          want.push_back(*it);
        }
        const std::string ctx =
            "list " + std::to_string(list) + " at rev " + std::to_string(rev) + " from " + start;
        ASSERT_EQ(r->count, static_cast<int64_t>(want.size())) << ctx;
        ASSERT_EQ(r->kvs.size(), std::min<size_t>(want.size(), limit + 1)) << ctx;
        for (size_t i = 0; i < r->kvs.size(); ++i) {
          const auto& kv = r->kvs[i];
          ASSERT_EQ(kv.key(), want[i].first) << ctx;
          EXPECT_EQ(kv.value(), o.keys_only ? "" : want[i].second.value) << ctx;
          EXPECT_EQ(kv.mod_revision(), want[i].second.mod) << ctx;
          EXPECT_EQ(kv.create_revision(), want[i].second.create) << ctx;
          EXPECT_EQ(kv.version(), want[i].second.version) << ctx;
        }
        ++pages;
        if (static_cast<int64_t>(want.size()) <= limit) break;
        start = r->kvs[limit - 1].key() + std::string(1, '\0');
        // Writes (and now and then a compaction) between pages.
        const int writes = static_cast<int>(rng() % 3);
        for (int w = 0; w < writes; ++w) {
          write_step();
          if (HasFatalFailure()) return;
        }
      }
    }
    ASSERT_NE(st->list_cache(), nullptr);
    EXPECT_GT(st->list_cache()->hits(), static_cast<uint64_t>(pages / 4))
        << "later pages should come from the cache (" << pages << " pages)";
    EXPECT_GT(st->list_cache()->base_hits(), 20u)
        << "first pages should start from an earlier list's keys and the history since";
  }
}

TEST(ListCacheTest, FindsEntriesThatCoverTheRangeAndEvictsByCountAndBytes) {
  ListCache cache(/*max_entries=*/2, /*max_bytes=*/1 << 20);
  cache.Insert("a", "z", 7, {"a", "b", "c"}, 0);
  EXPECT_NE(cache.Find("a", "z", 7), nullptr);
  EXPECT_NE(cache.Find("b", "z", 7), nullptr) << "a later start is covered";
  EXPECT_EQ(cache.Find("0", "z", 7), nullptr) << "an earlier start is not";
  EXPECT_EQ(cache.Find("a", "y", 7), nullptr) << "another end is another range";
  EXPECT_EQ(cache.Find("a", "z", 8), nullptr) << "another revision is another range";
  cache.Insert("a", "z", 8, {"a"}, 0);
  cache.Insert("a", "z", 9, {"a"}, 0);
  EXPECT_EQ(cache.entries(), 2u);
  EXPECT_EQ(cache.Find("a", "z", 7), nullptr) << "the least recently used went first";
  // Compaction drops what nobody can read any more.
  cache.Insert("a", "z", 10, {"a"}, /*compact_rev=*/9);
  EXPECT_EQ(cache.Find("a", "z", 8), nullptr);
  EXPECT_NE(cache.Find("a", "z", 9), nullptr);
  cache.Clear();
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);

  ListCache small(/*max_entries=*/100, /*max_bytes=*/64 << 10);
  std::vector<std::string> big(1000, std::string(100, 'k'));  // ~100 KiB: over a quarter
  small.Insert("a", "z", 1, big, 0);
  EXPECT_EQ(small.entries(), 0u) << "an entry over a quarter of the budget is not kept";
  for (int rev = 1; rev <= 50; ++rev) {
    small.Insert("a", "z", rev, std::vector<std::string>(100, std::string(50, 'k')), 0);
    EXPECT_LE(small.bytes(), size_t{64} << 10);
  }
  EXPECT_LT(small.entries(), 50u);
}

// A range that many deleted keys follow must not step over their tombstones looking for the
// next live key past its end (a list after a mass delete took 0.1 s per page this way).
TEST(StoreTest, RangesDoNotWalkTheTombstonesPastTheirEnd) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  constexpr int kDeleted = 5000;
  {
    ApplyBatch b(st.get());
    for (const char* k : {"a/1", "a/2", "a/3"}) {
      auto t = b.BeginTxn();
      ASSERT_TRUE(t.Put(k, "v", 0).ok());
      t.End();
    }
    for (int i = 0; i < kDeleted; ++i) {
      auto t = b.BeginTxn();
      char key[16];
      std::snprintf(key, sizeof(key), "b/%05d", i);
      ASSERT_TRUE(t.Put(key, "v", 0).ok());
      t.End();
    }
    b.SetConsistentIndex(1);
    ASSERT_TRUE(b.Commit().ok());
  }
  const int64_t before_delete = st->rev();
  {
    ApplyBatch b(st.get());
    auto t = b.BeginTxn();
    ASSERT_TRUE(t.DeleteRange("b/", PrefixEnd("b/")).ok());
    t.End();
    b.SetConsistentIndex(2);
    ASSERT_TRUE(b.Commit().ok());
  }
  // Physical compaction turns the superseded index entries into RocksDB deletes as well.
  {
    ApplyBatch b(st.get());
    ASSERT_TRUE(b.Compact(before_delete).ok());
    b.SetConsistentIndex(3);
    ASSERT_TRUE(b.Commit().ok());
  }
  st->WaitCompacted(before_delete);
  ASSERT_TRUE(st->Flush().ok());
  auto view = st->View();
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  for (int64_t rev : {int64_t{0}, before_delete}) {
    for (const std::string end : {PrefixEnd("a/"), std::string("a/3")}) {
      SCOPED_TRACE("rev " + std::to_string(rev) + " end " + end);
      rocksdb::get_perf_context()->Reset();
      RangeOptions o;
      o.rev = rev;
      auto r = view->Range("a/", end, o);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->count, end == "a/3" ? 2 : 3);
      EXPECT_LT(rocksdb::get_perf_context()->internal_delete_skipped_count, 100u);
    }
  }
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
}

// Readers paging through a range while the apply side writes (TSan runs this suite): within one
// list, every page is at the first page's revision, so each page's count is the first count
// minus the keys already returned, and keys only go up.
TEST(StoreTest, ConcurrentPaginatedListsStayConsistent) {
  TempDir dir;
  auto st = OpenStore(dir.path());
  std::atomic<bool> done{false};
  std::atomic<int> lists{0};
  std::thread writer([&] {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 300; ++i) {
      ApplyBatch b(st.get());
      for (int j = 0; j < 5; ++j) {
        auto t = b.BeginTxn();
        char key[16];
        std::snprintf(key, sizeof(key), "p/%03d", static_cast<int>(rng() % 200));
        if (rng() % 4 == 0) {
          ASSERT_TRUE(t.DeleteRange(key, "").ok());
        } else {
          ASSERT_TRUE(t.Put(key, "v", 0).ok());
        }
        t.End();
      }
      b.SetConsistentIndex(static_cast<uint64_t>(i) + 1);
      ASSERT_TRUE(b.Commit().ok());
    }
    done = true;
  });
  auto reader = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    const std::string end = PrefixEnd("p/");
    for (int n = 0; n < 2000 && !done.load(); ++n) {
      const int64_t limit = 1 + static_cast<int64_t>(rng() % 30);
      std::string start = "p/", last;
      int64_t rev = 0, first_count = -1, returned = 0;
      while (true) {
        RangeOptions o;
        o.rev = rev;
        o.limit = limit + 1;
        auto r = st->View()->Range(start, end, o);
        ASSERT_TRUE(r.ok()) << r.status();
        if (rev == 0) {
          rev = r->rev;
          first_count = r->count;
        }
        ASSERT_EQ(r->count, first_count - returned) << "rev " << rev;
        const size_t page = std::min<size_t>(r->kvs.size(), static_cast<size_t>(limit));
        for (size_t i = 0; i < page; ++i) {
          ASSERT_GT(r->kvs[i].key(), last);
          last = r->kvs[i].key();
        }
        returned += static_cast<int64_t>(page);
        if (r->count <= limit) break;
        start = last + std::string(1, '\0');
      }
      ++lists;
    }
  };
  std::thread r1(reader, 1), r2(reader, 2);
  writer.join();
  r1.join();
  r2.join();
  EXPECT_GT(lists.load(), 0);
}

}  // namespace
}  // namespace meridian::mvcc

namespace meridian::mvcc {
namespace {
long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Installing a snapshot must not need the image in memory: a follower far behind gets a store
// image as large as the backend quota. (Reading it whole and writing it as one batch, as this
// once did, raised the peak RSS by 2.8x the image: 1,144 MiB for a 414 MiB image.)
TEST(StoreTest, ImportStreamsTheImage) {
  TempDir dir;
  auto src = OpenStore(dir.path() + "/src");
  const std::string value(4096, 'v');
  for (int b = 0; b < 16; ++b) {
    ApplyBatch batch(src.get());
    for (int i = 0; i < 1000; ++i) {
      auto t = batch.BeginTxn();
      ASSERT_TRUE(t.Put("key" + std::to_string(b * 1000 + i), value, 0).ok());
      t.End();
    }
    batch.SetConsistentIndex(b + 1);
    ASSERT_TRUE(batch.Commit().ok());
  }
  const std::string image = dir.path() + "/image";
  ASSERT_TRUE(src->ExportImage(*src->View(), image, {}).ok());
  const int64_t rev = src->rev();
  src.reset();
  const long image_kb = static_cast<long>(std::filesystem::file_size(image) >> 10);
  ASSERT_GT(image_kb, 100 << 10);
  auto dst = OpenStore(dir.path() + "/dst");
  // Resets the peak to the current RSS (Linux 4.0 and later).
  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const long before_kb = PeakRssKb();
  ASSERT_TRUE(dst->ImportImage(image, {}).ok());
  const long grown_kb = PeakRssKb() - before_kb;
  EXPECT_LT(grown_kb, image_kb / 2) << "image " << image_kb << " KiB";
  EXPECT_EQ(dst->rev(), rev);
  auto all = dst->View()->Range("key", "kez", RangeOptions{.count_only = true});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->count, 16000);
}
}  // namespace
}  // namespace meridian::mvcc
