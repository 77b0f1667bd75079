#include "node/mvcc/latest_cache.h"

#include <utility>

namespace meridian::mvcc {

std::optional<mvccpb::KeyValue> LatestCache::Get(std::string_view key) {
  if (auto it = young_.find(absl::string_view(key.data(), key.size())); it != young_.end()) {
    ++hits_;
    return it->second;
  }
  auto it = old_.find(absl::string_view(key.data(), key.size()));
  if (it == old_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  mvccpb::KeyValue kv = it->second;
  old_bytes_ -= EntryBytes(it->second);
  auto node = old_.extract(it);
  InsertYoung(std::move(node.key()), std::move(node.mapped()));
  return kv;
}

void LatestCache::Put(mvccpb::KeyValue kv) {
  Erase(kv.key());
  std::string key = kv.key();
  InsertYoung(std::move(key), std::move(kv));
}

void LatestCache::Erase(std::string_view key) {
  if (auto it = young_.find(absl::string_view(key.data(), key.size())); it != young_.end()) {
    young_bytes_ -= EntryBytes(it->second);
    young_.erase(it);
  }
  if (auto it = old_.find(absl::string_view(key.data(), key.size())); it != old_.end()) {
    old_bytes_ -= EntryBytes(it->second);
    old_.erase(it);
  }
}

void LatestCache::Clear() {
  young_.clear();
  old_.clear();
  young_bytes_ = old_bytes_ = 0;
}

void LatestCache::InsertYoung(std::string key, mvccpb::KeyValue kv) {
  const size_t bytes = EntryBytes(kv);
  // Records larger than a generation are not worth keeping (and would flush everything else).
  if (bytes > budget_bytes_ / 2) return;
  if (young_bytes_ + bytes > budget_bytes_ / 2) {
    old_ = std::move(young_);
    old_bytes_ = young_bytes_;
    young_ = Map();
    young_bytes_ = 0;
  }
  young_bytes_ += bytes;
  young_.emplace(std::move(key), std::move(kv));
}

}  // namespace meridian::mvcc
