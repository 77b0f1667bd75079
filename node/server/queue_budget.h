// The bound of a queue between two of the node's threads, in entries and in bytes.
//
// A count alone does not bound memory: one proposal may be up to --max-request-bytes (1.5 MiB by
// default), so 100,000 queued proposals could hold 150 GB while the raft thread waits out a slow
// fsync. Both limits hold at once, except that an empty queue admits any one entry: a request
// the size checks already let through is never refused for its size alone.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>

namespace meridian::server {

class QueueBudget {
 public:
  QueueBudget(size_t max_entries, size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // Whether `entries` more entries of `bytes` in all fit now.
  [[nodiscard]] bool Admits(size_t entries, size_t bytes) const {
    if (entries_ == 0) return true;
    return entries_ + entries <= max_entries_ && bytes_ + bytes <= max_bytes_;
  }
  void Add(size_t entries, size_t bytes) {
    entries_ += entries;
    bytes_ += bytes;
  }
  void Remove(size_t entries, size_t bytes) {
    if (entries > entries_ || bytes > bytes_) {
      fprintf(stderr, "queue budget: removing %zu entries / %zu bytes from %zu / %zu\n", entries,
              bytes, entries_, bytes_);
      std::abort();
    }
    entries_ -= entries;
    bytes_ -= bytes;
  }
  void Clear() { entries_ = bytes_ = 0; }

  size_t entries() const { return entries_; }
  size_t bytes() const { return bytes_; }

 private:
  size_t max_entries_;
  size_t max_bytes_;
  size_t entries_ = 0;
  size_t bytes_ = 0;
};

}  // namespace meridian::server
