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

  // What one entry is charged: its key twice (map key and record), value, and the fixed
  // overhead of the map slot, the record and the heap blocks.
  static size_t EntryBytes(const mvccpb::KeyValue& kv) {
    return 2 * kv.key().size() + kv.value().size() + kEntryOverheadBytes;
  }
  static constexpr size_t kEntryOverheadBytes = 160;

 private:
  using Map = absl::flat_hash_map<std::string, mvccpb::KeyValue>;
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
