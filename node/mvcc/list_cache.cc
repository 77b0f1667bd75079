#include "node/mvcc/list_cache.h"

#include <algorithm>

namespace meridian::mvcc {

std::shared_ptr<const ListCache::Entry> ListCache::Find(std::string_view start,
                                                        std::string_view end, int64_t rev) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    const Entry& e = **it;
    if (e.rev != rev || e.end != end || start < e.start) continue;
    auto found = *it;
    lru_.splice(lru_.begin(), lru_, it);
    ++hits_;
    return found;
  }
  return nullptr;
}

std::shared_ptr<const ListCache::Entry> ListCache::FindBase(std::string_view start,
                                                            std::string_view end, int64_t rev,
                                                            int64_t min_rev, int64_t max_revs) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<const Entry> best;
  for (const auto& e : lru_) {
    if (e->end != end || start < e->start || e->rev >= rev || e->rev < min_rev ||
        rev - e->rev > max_revs) {
      continue;
    }
    if (best == nullptr || e->rev > best->rev) best = e;
  }
  if (best != nullptr) ++base_hits_;
  return best;
}

std::shared_ptr<const ListCache::Entry> ListCache::Insert(std::string start, std::string end,
                                                          int64_t rev,
                                                          std::vector<std::string> keys,
                                                          int64_t compact_rev) {
  size_t key_bytes = 0;
  for (const auto& k : keys) key_bytes += k.size();
  if (!Fits(key_bytes, keys.size())) return nullptr;
  auto entry = std::make_shared<Entry>();
  entry->start = std::move(start);
  entry->end = std::move(end);
  entry->rev = rev;
  entry->keys = std::move(keys);
  entry->bytes = EntryBytes(key_bytes, entry->keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = lru_.begin(); it != lru_.end();) {
    const Entry& e = **it;
    // Below compaction nothing can read it any more; an entry this one covers is redundant.
    bool covered = e.rev == entry->rev && e.end == entry->end && entry->start <= e.start;
    if (e.rev < compact_rev || covered) {
      bytes_ -= e.bytes;
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
  bytes_ += entry->bytes;
  lru_.push_front(entry);
  EvictLocked();
  return entry;
}

void ListCache::EvictLocked() {
  while (!lru_.empty() && (lru_.size() > max_entries_ || bytes_ > max_bytes_)) {
    bytes_ -= lru_.back()->bytes;
    lru_.pop_back();
  }
}

void ListCache::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  lru_.clear();
  bytes_ = 0;
}

size_t ListCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

size_t ListCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

uint64_t ListCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

uint64_t ListCache::base_hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return base_hits_;
}

}  // namespace meridian::mvcc
