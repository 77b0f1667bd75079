#include "node/raft/log.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "node/raft/check.h"

namespace meridian::raft {

RaftLog::RaftLog(const Storage* storage, uint64_t max_applying_size_bytes)
    : storage_(storage), max_applying_size_bytes_(max_applying_size_bytes) {
  RAFT_CHECK(storage != nullptr) << "storage must not be nil";
  const uint64_t first = storage_->FirstIndex();
  const uint64_t last = storage_->LastIndex();
  unstable_offset_ = last + 1;
  // The application has applied at least the snapshot; raft never hands out compacted entries.
  committed_ = first - 1;
  applying_ = first - 1;
  applied_ = first - 1;
}

uint64_t RaftLog::FirstIndex() const {
  if (unstable_snapshot_) return unstable_snapshot_->metadata.index + 1;
  return storage_->FirstIndex();
}

uint64_t RaftLog::LastIndex() const {
  if (!unstable_entries_.empty()) return unstable_offset_ + unstable_entries_.size() - 1;
  if (unstable_snapshot_) return unstable_snapshot_->metadata.index;
  return storage_->LastIndex();
}

uint64_t RaftLog::LastTerm() const {
  absl::StatusOr<uint64_t> t = Term(LastIndex());
  RAFT_CHECK(t.ok()) << "unexpected error getting the last term (index " << LastIndex()
                     << "): " << t.status();
  return *t;
}

std::optional<uint64_t> RaftLog::UnstableTerm(uint64_t index) const {
  if (index < unstable_offset_) {
    if (unstable_snapshot_ && unstable_snapshot_->metadata.index == index) {
      return unstable_snapshot_->metadata.term;
    }
    return std::nullopt;
  }
  if (index - unstable_offset_ >= unstable_entries_.size()) return std::nullopt;
  return unstable_entries_[index - unstable_offset_].term;
}

absl::StatusOr<uint64_t> RaftLog::Term(uint64_t index) const {
  const uint64_t dummy = FirstIndex() - 1;
  if (index < dummy) return CompactedError();
  if (index > LastIndex()) return UnavailableError();
  if (std::optional<uint64_t> t = UnstableTerm(index)) return *t;
  absl::StatusOr<uint64_t> t = storage_->Term(index);
  if (t.ok() || IsCompacted(t.status()) || IsEntryUnavailable(t.status())) return t;
  RAFT_CHECK(false) << "storage Term(" << index << ") failed: " << t.status();
  return t;
}

uint64_t RaftLog::TermOrZero(uint64_t index) const {
  absl::StatusOr<uint64_t> t = Term(index);
  return t.ok() ? *t : 0;
}

bool RaftLog::MatchTerm(uint64_t index, uint64_t term) const {
  absl::StatusOr<uint64_t> t = Term(index);
  return t.ok() && *t == term;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  const uint64_t our_term = LastTerm();
  return last_term > our_term || (last_term == our_term && last_index >= LastIndex());
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t index, uint64_t log_term, uint64_t commit,
                                             std::span<const Entry> entries,
                                             uint64_t* first_written) {
  if (first_written != nullptr) *first_written = 0;
  if (!MatchTerm(index, log_term)) return std::nullopt;
  const uint64_t last_new = index + entries.size();
  const uint64_t conflict = FindConflict(entries);
  if (first_written != nullptr) *first_written = conflict;
  if (conflict != 0) {
    RAFT_CHECK(conflict > committed_)
        << "entry " << conflict << " conflicts with committed entry [committed(" << committed_
        << ")]";
    Append(entries.subspan(conflict - (index + 1)));
  }
  CommitTo(std::min(commit, last_new));
  return last_new;
}

uint64_t RaftLog::Append(std::span<const Entry> entries) {
  if (entries.empty()) return LastIndex();
  const uint64_t after = entries.front().index - 1;
  RAFT_CHECK(after >= committed_) << "after(" << after << ") is out of range [committed("
                                  << committed_ << ")]";
  TruncateAndAppendUnstable(entries);
  return LastIndex();
}

void RaftLog::TruncateAndAppendUnstable(std::span<const Entry> entries) {
  const uint64_t first = entries.front().index;
  for (size_t i = 1; i < entries.size(); ++i) {
    RAFT_CHECK(entries[i].index == first + i)
        << "non-contiguous entries: index " << entries[i].index << " at position " << i
        << " after first " << first;
  }
  RAFT_CHECK(first <= LastIndex() + 1)
      << "append at " << first << " leaves a gap after last index " << LastIndex();
  if (first == unstable_offset_ + unstable_entries_.size()) {
    unstable_entries_.insert(unstable_entries_.end(), entries.begin(), entries.end());
  } else if (first <= unstable_offset_) {
    // Replaces all unstable entries (and, logically, the stable ones from `first` on: the
    // application overwrites them when it persists this batch).
    unstable_offset_ = first;
    unstable_entries_.assign(entries.begin(), entries.end());
  } else {
    unstable_entries_.resize(first - unstable_offset_);
    unstable_entries_.insert(unstable_entries_.end(), entries.begin(), entries.end());
  }
}

uint64_t RaftLog::FindConflict(std::span<const Entry> entries) const {
  for (const Entry& e : entries) {
    if (!MatchTerm(e.index, e.term)) return e.index;
  }
  return 0;
}

std::pair<uint64_t, uint64_t> RaftLog::FindConflictByTerm(uint64_t index, uint64_t term) const {
  for (;;) {
    absl::StatusOr<uint64_t> t = Term(index);
    if (!t.ok()) return {index, 0};
    if (*t <= term) return {index, *t};
    if (index == 0) return {0, 0};
    --index;
  }
}

void RaftLog::CommitTo(uint64_t index) {
  if (committed_ >= index) return;  // never decrease commit
  RAFT_CHECK(index <= LastIndex())
      << "tocommit(" << index << ") is out of range [lastIndex(" << LastIndex()
      << ")]. Was the raft log corrupted, truncated, or lost?";
  committed_ = index;
}

bool RaftLog::MaybeCommit(uint64_t index, uint64_t term) {
  if (index > committed_ && TermOrZero(index) == term) {
    CommitTo(index);
    return true;
  }
  return false;
}

void RaftLog::AppliedTo(uint64_t index) {
  if (index == 0) return;
  RAFT_CHECK(index <= committed_ && index >= applied_)
      << "applied(" << index << ") is out of range [prevApplied(" << applied_ << "), committed("
      << committed_ << ")]";
  applied_ = index;
  applying_ = std::max(applying_, index);
}

void RaftLog::ApplyingTo(uint64_t index) {
  RAFT_CHECK(index <= committed_ && index >= applying_)
      << "applying(" << index << ") is out of range [prevApplying(" << applying_ << "), committed("
      << committed_ << ")]";
  applying_ = index;
}

void RaftLog::StableTo(uint64_t index, uint64_t term) {
  std::optional<uint64_t> t = UnstableTerm(index);
  if (!t || *t != term || index < unstable_offset_) return;
  unstable_entries_.erase(
      unstable_entries_.begin(),
      unstable_entries_.begin() + static_cast<ptrdiff_t>(index - unstable_offset_ + 1));
  unstable_offset_ = index + 1;
}

void RaftLog::StableSnapTo(uint64_t index) {
  if (unstable_snapshot_ && unstable_snapshot_->metadata.index == index) {
    unstable_snapshot_.reset();
  }
}

uint64_t RaftLog::StableLastIndex() const {
  if (unstable_snapshot_) return 0;
  return unstable_offset_ - 1;
}

void RaftLog::Restore(const Snapshot& snapshot) {
  committed_ = snapshot.metadata.index;
  unstable_offset_ = snapshot.metadata.index + 1;
  unstable_entries_.clear();
  unstable_snapshot_ = snapshot;
}

absl::Status RaftLog::Slice(uint64_t lo, uint64_t hi, uint64_t max_size_bytes,
                            std::vector<Entry>* out) const {
  out->clear();
  RAFT_CHECK(lo <= hi) << "invalid slice " << lo << " > " << hi;
  if (lo == hi) return absl::OkStatus();
  const uint64_t first = FirstIndex();
  if (lo < first) return CompactedError();
  RAFT_CHECK(hi <= LastIndex() + 1)
      << "slice[" << lo << "," << hi << ") out of bound [" << first << "," << LastIndex() << "]";
  uint64_t total = 0;
  if (lo < unstable_offset_) {
    const uint64_t storage_hi = std::min(hi, unstable_offset_);
    absl::Status s = storage_->Entries(lo, storage_hi, max_size_bytes, out);
    if (IsCompacted(s)) return s;
    RAFT_CHECK(s.ok()) << "storage entries [" << lo << ", " << storage_hi << ") unavailable: " << s;
    if (out->size() < storage_hi - lo) return absl::OkStatus();  // size limit reached
    for (const Entry& e : *out) total += EntrySize(e);
  }
  if (hi > unstable_offset_) {
    for (uint64_t i = std::max(lo, unstable_offset_); i < hi; ++i) {
      const Entry& e = unstable_entries_[i - unstable_offset_];
      total += EntrySize(e);
      if (!out->empty() && total > max_size_bytes) break;
      out->push_back(e);
    }
  }
  return absl::OkStatus();
}

absl::Status RaftLog::EntriesFrom(uint64_t lo, uint64_t max_size_bytes,
                                  std::vector<Entry>* out) const {
  out->clear();
  if (lo > LastIndex()) return absl::OkStatus();
  return Slice(lo, LastIndex() + 1, max_size_bytes, out);
}

std::vector<Entry> RaftLog::AllEntries(uint64_t lo, uint64_t hi) const {
  std::vector<Entry> out;
  absl::Status s = Slice(lo, hi, UINT64_MAX, &out);
  RAFT_CHECK(s.ok()) << "entries [" << lo << ", " << hi << "): " << s;
  return out;
}

bool RaftLog::HasNextCommittedEntries() const {
  if (unstable_snapshot_) return false;
  return committed_ > std::max(applying_, FirstIndex() - 1);
}

std::vector<Entry> RaftLog::NextCommittedEntries() const {
  std::vector<Entry> out;
  if (!HasNextCommittedEntries()) return out;
  const uint64_t lo = std::max(applying_ + 1, FirstIndex());
  absl::Status s = Slice(lo, committed_ + 1, max_applying_size_bytes_, &out);
  RAFT_CHECK(s.ok()) << "unexpected error getting unapplied entries [" << lo << ", "
                     << committed_ + 1 << "): " << s;
  return out;
}

absl::StatusOr<Snapshot> RaftLog::GetSnapshot() const {
  if (unstable_snapshot_) return *unstable_snapshot_;
  return storage_->GetSnapshot();
}

std::string RaftLog::ToString() const {
  return absl::StrCat("committed=", committed_, " applied=", applied_, " applying=", applying_,
                      " unstable.offset=", unstable_offset_,
                      " len(unstable)=", unstable_entries_.size());
}

}  // namespace meridian::raft
