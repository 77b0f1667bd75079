#include "node/raft/storage.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "node/raft/check.h"

namespace meridian::raft {

namespace {
constexpr char kCompacted[] = "requested index is unavailable due to compaction";
constexpr char kUnavailable[] = "requested entry at index is unavailable";
constexpr char kSnapTemp[] = "snapshot is temporarily unavailable";
}  // namespace

absl::Status CompactedError() { return absl::OutOfRangeError(kCompacted); }
absl::Status UnavailableError() { return absl::OutOfRangeError(kUnavailable); }
absl::Status SnapshotOutOfDateError() {
  return absl::FailedPreconditionError("requested index is older than the existing snapshot");
}
absl::Status SnapshotTemporarilyUnavailableError() { return absl::UnavailableError(kSnapTemp); }
bool IsCompacted(const absl::Status& s) {
  return absl::IsOutOfRange(s) && s.message() == kCompacted;
}
bool IsEntryUnavailable(const absl::Status& s) {
  return absl::IsOutOfRange(s) && s.message() == kUnavailable;
}
bool IsSnapshotTemporarilyUnavailable(const absl::Status& s) {
  return absl::IsUnavailable(s) && s.message() == kSnapTemp;
}

MemoryStorage::MemoryStorage() { entries_.push_back(Entry{}); }

InitialState MemoryStorage::GetInitialState() const {
  return InitialState{hard_state_, snapshot_.metadata.conf_state};
}

absl::Status MemoryStorage::Entries(uint64_t lo, uint64_t hi, uint64_t max_size_bytes,
                                    std::vector<Entry>* out) const {
  out->clear();
  if (lo <= offset()) return CompactedError();
  RAFT_CHECK(lo <= hi) << "entries [" << lo << ", " << hi << ") inverted";
  RAFT_CHECK(hi <= LastIndex() + 1)
      << "entries hi " << hi << " out of bound lastindex " << LastIndex();
  uint64_t total = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = entries_[i - offset()];
    total += EntrySize(e);
    if (!out->empty() && total > max_size_bytes) break;
    out->push_back(e);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MemoryStorage::Term(uint64_t index) const {
  if (index < offset()) return CompactedError();
  if (index - offset() >= entries_.size()) return UnavailableError();
  return entries_[index - offset()].term;
}

uint64_t MemoryStorage::FirstIndex() const { return offset() + 1; }
uint64_t MemoryStorage::LastIndex() const { return offset() + entries_.size() - 1; }

absl::StatusOr<Snapshot> MemoryStorage::GetSnapshot() const { return snapshot_; }

void MemoryStorage::SetInitialConfState(const ConfState& cs) {
  RAFT_CHECK(snapshot_.empty()) << "storage already has a snapshot at " << snapshot_.metadata.index;
  snapshot_.metadata.conf_state = cs;
}

absl::Status MemoryStorage::ApplySnapshot(const Snapshot& snapshot) {
  if (snapshot.metadata.index <= snapshot_.metadata.index) return SnapshotOutOfDateError();
  snapshot_ = snapshot;
  entries_.clear();
  entries_.push_back(
      Entry{snapshot.metadata.index, snapshot.metadata.term, EntryType::kNormal, ""});
  return absl::OkStatus();
}

absl::Status MemoryStorage::CreateSnapshot(uint64_t index, const ConfState& conf_state,
                                           std::string data) {
  if (index <= snapshot_.metadata.index) return SnapshotOutOfDateError();
  RAFT_CHECK(index <= LastIndex())
      << "snapshot " << index << " is out of bound lastindex " << LastIndex();
  RAFT_CHECK(index >= offset()) << "snapshot " << index << " precedes compacted index " << offset();
  snapshot_.metadata.index = index;
  snapshot_.metadata.term = entries_[index - offset()].term;
  snapshot_.metadata.conf_state = conf_state;
  snapshot_.data = std::move(data);
  return absl::OkStatus();
}

absl::Status MemoryStorage::Compact(uint64_t compact_index) {
  if (compact_index <= offset()) return CompactedError();
  RAFT_CHECK(compact_index <= LastIndex())
      << "compact " << compact_index << " is out of bound lastindex " << LastIndex();
  const uint64_t drop = compact_index - offset();
  entries_[drop].data.clear();  // becomes the dummy
  entries_[drop].type = EntryType::kNormal;
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<ptrdiff_t>(drop));
  return absl::OkStatus();
}

absl::Status MemoryStorage::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return absl::OkStatus();
  for (size_t i = 1; i < entries.size(); ++i) {
    RAFT_CHECK(entries[i].index == entries[i - 1].index + 1)
        << "non-contiguous append: " << entries[i - 1].index << " then " << entries[i].index;
  }
  const uint64_t first = FirstIndex();
  const uint64_t last = entries.back().index;
  if (last < first) return absl::OkStatus();  // all compacted already
  size_t skip = entries.front().index < first ? first - entries.front().index : 0;
  const uint64_t start = entries[skip].index;
  RAFT_CHECK(start <= LastIndex() + 1)
      << "missing log entry [last: " << LastIndex() << ", append at: " << start << "]";
  entries_.resize(start - offset());  // truncate the overlapped suffix
  entries_.insert(entries_.end(), entries.begin() + static_cast<ptrdiff_t>(skip), entries.end());
  return absl::OkStatus();
}

}  // namespace meridian::raft
