// The keys of a range at one revision, kept for the later pages of a paginated list.
//
// A Kubernetes list reads a range in pages of `limit` keys, each page at the revision the first
// page saw, and every page must also say how many keys are left (etcd's `count`). Without this
// cache each page scans the whole rest of the range again, stepping over every version of every
// key in the LSM tree; with it, the first page's scan records the range's keys and each later
// page reads only its own `limit` keys. What a range holds at a given revision never changes,
// so an entry stays valid until compaction passes its revision (reads below the compaction
// revision fail before they get here); a store image replacing the data clears the cache.
//
// Bounded by entry count and by bytes; the least recently used entry goes first. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace meridian::mvcc {

class ListCache {
 public:
  struct Entry {
    std::string start;  // the range the keys were read from: [start, end) at rev
    std::string end;
    int64_t rev = 0;
    std::vector<std::string> keys;  // ascending: the keys alive at rev
    size_t bytes = 0;
  };

  ListCache(size_t max_entries, size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // An entry that holds every key of [start, end) at rev: same end and revision, and a start at
  // or before `start`. Null when there is none.
  std::shared_ptr<const Entry> Find(std::string_view start, std::string_view end, int64_t rev);

  // The newest entry for the same end with a start at or before `start`, at a revision in
  // [min_rev, rev) and at most `max_revs` before `rev`: a base that the history since brings up
  // to `rev`. Null when there is none.
  std::shared_ptr<const Entry> FindBase(std::string_view start, std::string_view end, int64_t rev,
                                        int64_t min_rev, int64_t max_revs);

  // Keeps the keys of [start, end) at rev, and returns the entry (null when it is too large to
  // keep). Entries below `compact_rev` are dropped on the way.
  std::shared_ptr<const Entry> Insert(std::string start, std::string end, int64_t rev,
                                      std::vector<std::string> keys, int64_t compact_rev);

  // Whether an entry of this many key bytes may be kept at all (so a scan need not collect
  // keys it could not keep).
  bool Fits(size_t key_bytes, size_t keys) const {
    return EntryBytes(key_bytes, keys) <= max_bytes_ / 4;
  }

  void Clear();
  size_t entries() const;
  size_t bytes() const;
  uint64_t hits() const;       // Find found an entry
  uint64_t base_hits() const;  // FindBase found one

  // An upper bound of the heap an entry takes: each key's string object, its heap block (keys
  // past the small-string size) with allocator rounding, and the entry itself.
  static size_t EntryBytes(size_t key_bytes, size_t keys) {
    return key_bytes + key_bytes / 4 + keys * (sizeof(std::string) + 16) + 256;
  }

 private:
  void EvictLocked();

  const size_t max_entries_;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<const Entry>> lru_;  // most recently used first
  size_t bytes_ = 0;
  uint64_t hits_ = 0;
  uint64_t base_hits_ = 0;
};

}  // namespace meridian::mvcc
