// A bounded cache of the latest key-values the store holds, for the apply thread.
//
// Every put has to know the key's current record (its create revision, version and lease, and
// the previous value for prev_kv and watch events). Looking that up in RocksDB is a memtable
// skiplist search with a cache miss per level, the largest single cost of applying a put. Keys
// written recently are written again soon in the workloads this store serves (Kubernetes
// objects, leases, locks), so the apply thread keeps them here.
//
// Bounded in bytes with two generations: lookups and writes go to the young one; a hit in the
// old one moves the entry up; when the young one is full it becomes the old one and the old one
// is dropped. That is an LRU approximation at O(1) per operation, and the two together never
// hold more than the budget (by the estimate EntryBytes gives).
//
// The cache only ever holds what the committed store holds: the store fills it from committed
// reads and from a batch's writes after that batch committed, and clears it when it replaces its
// contents (a snapshot image). Not thread-safe: the apply thread owns it (see Store).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "mvccpb/kv.pb.h"

namespace meridian::mvcc {

class LatestCache {
 public:
  explicit LatestCache(size_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // The cached record of `key`, if any (a copy: the caller owns it).
  std::optional<mvccpb::KeyValue> Get(std::string_view key);
  // Records `kv` as the latest record of kv.key().
  void Put(mvccpb::KeyValue kv);
  // Forgets `key` (it was deleted).
  void Erase(std::string_view key);
  void Clear();

  size_t size() const { return young_.size() + old_.size(); }
  size_t bytes() const { return young_bytes_ + old_bytes_; }
  size_t budget_bytes() const { return budget_bytes_; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

  // What one entry is charged: an upper bound on the heap it really takes, so that the budget is
  // what the process pays (a charge of key and value sizes plus a constant was about 1.5x short).
  // - its map slot, at the lowest load a flat_hash_map reaches after growing (7/16);
  // - the map's own copy of the key;
  // - the record's key and value, each a heap std::string (protobuf) with its buffer;
  // each heap block rounded up as an allocator does (size classes at most 25% apart, plus a
  // header). LatestCacheTest.ChargeCoversTheHeapItTakes measures it against malloc's own count.
  static size_t EntryBytes(const mvccpb::KeyValue& kv) {
    return kSlotBytes + StringBytes(kv.key().size()) + 2 * HeapBlockBytes(sizeof(std::string)) +
           StringBytes(kv.key().size()) + StringBytes(kv.value().size());
  }

 private:
  using Map = absl::flat_hash_map<std::string, mvccpb::KeyValue>;
  static constexpr size_t kSlotBytes = (sizeof(Map::value_type) + 1) * 16 / 7;
  static constexpr size_t HeapBlockBytes(size_t n) { return n == 0 ? 0 : n + n / 4 + 16; }
  // A std::string's buffer is on the heap past its in-place capacity (15 with libstdc++).
  static constexpr size_t StringBytes(size_t n) { return n <= 15 ? 0 : HeapBlockBytes(n + 1); }

  void InsertYoung(std::string key, mvccpb::KeyValue kv);

  const size_t budget_bytes_;
  Map young_;
  Map old_;
  size_t young_bytes_ = 0;
  size_t old_bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace meridian::mvcc
