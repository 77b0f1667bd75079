#include "node/raft/progress.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "node/raft/check.h"

namespace meridian::raft {

Inflights::Inflights(size_t capacity, uint64_t max_bytes)
    : capacity_(capacity), max_bytes_(max_bytes) {
  RAFT_CHECK(capacity >= 1) << "inflights capacity must be >= 1, got " << capacity;
}

void Inflights::Add(uint64_t index, uint64_t bytes) {
  RAFT_CHECK(!Full()) << "cannot add index " << index << " to full inflights (count " << count_
                      << ", bytes " << bytes_ << ")";
  if (count_ > 0) {
    uint64_t last = buffer_[(start_ + count_ - 1) % buffer_.size()].first;
    RAFT_CHECK(index > last) << "inflights index " << index << " not above last " << last;
  }
  if (count_ == buffer_.size()) {
    // Grow (doubling, capped at capacity_), unrolling the ring so start_ becomes 0.
    size_t new_size = std::min(capacity_, std::max<size_t>(1, buffer_.size() * 2));
    std::vector<std::pair<uint64_t, uint64_t>> grown(new_size);
    for (size_t i = 0; i < count_; ++i) grown[i] = buffer_[(start_ + i) % buffer_.size()];
    buffer_ = std::move(grown);
    start_ = 0;
  }
  buffer_[(start_ + count_) % buffer_.size()] = {index, bytes};
  ++count_;
  bytes_ += bytes;
}

void Inflights::FreeLE(uint64_t index) {
  while (count_ > 0 && buffer_[start_].first <= index) {
    bytes_ -= buffer_[start_].second;
    start_ = (start_ + 1) % buffer_.size();
    --count_;
  }
  if (count_ == 0) start_ = 0;
}

void Inflights::FreeFirstOne() {
  if (count_ == 0) return;
  FreeLE(buffer_[start_].first);
}

bool Inflights::Full() const {
  return count_ >= capacity_ || (max_bytes_ != 0 && bytes_ >= max_bytes_);
}

void Inflights::Reset() {
  start_ = 0;
  count_ = 0;
  bytes_ = 0;
}

const char* ProgressStateName(ProgressState s) {
  switch (s) {
    case ProgressState::kProbe:
      return "StateProbe";
    case ProgressState::kReplicate:
      return "StateReplicate";
    case ProgressState::kSnapshot:
      return "StateSnapshot";
  }
  return "?";
}

void Progress::ResetState(ProgressState s) {
  probe_sent = false;
  pending_snapshot = 0;
  state = s;
  inflights.Reset();
}

void Progress::BecomeProbe() {
  // After a snapshot the follower holds at least the snapshot; start probing right after it.
  if (state == ProgressState::kSnapshot) {
    uint64_t pending = pending_snapshot;
    ResetState(ProgressState::kProbe);
    next = std::max(match + 1, pending + 1);
  } else {
    ResetState(ProgressState::kProbe);
    next = match + 1;
  }
}

void Progress::BecomeReplicate() {
  ResetState(ProgressState::kReplicate);
  next = match + 1;
}

void Progress::BecomeSnapshot(uint64_t snapshot_index) {
  ResetState(ProgressState::kSnapshot);
  pending_snapshot = snapshot_index;
}

bool Progress::MaybeUpdate(uint64_t n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

void Progress::SentEntries(size_t entries, uint64_t bytes, uint64_t last_index) {
  switch (state) {
    case ProgressState::kReplicate:
      if (entries > 0) {
        RAFT_CHECK(last_index + 1 > next || last_index + 1 == next)
            << "sent entries up to " << last_index << " below next " << next;
        next = last_index + 1;
        inflights.Add(last_index, bytes);
      }
      break;
    case ProgressState::kProbe:
      probe_sent = true;
      break;
    case ProgressState::kSnapshot:
      RAFT_CHECK(false) << "sending append in state " << ProgressStateName(state);
  }
}

bool Progress::MaybeDecrTo(uint64_t rejected, uint64_t match_hint) {
  if (state == ProgressState::kReplicate) {
    // Appends are pipelined: a rejection at or below match answers an old message.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // Probing sends one append at a time, at next-1; any other rejection is stale.
  if (next == 0 || next - 1 != rejected) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  probe_sent = false;
  return true;
}

bool Progress::IsPaused() const {
  switch (state) {
    case ProgressState::kProbe:
      return probe_sent;
    case ProgressState::kReplicate:
      return inflights.Full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

std::string Progress::ToString() const {
  std::string out = absl::StrCat(ProgressStateName(state), " match=", match, " next=", next);
  if (is_learner) absl::StrAppend(&out, " learner");
  if (probe_sent) absl::StrAppend(&out, " paused");
  if (pending_snapshot != 0) absl::StrAppend(&out, " pendingSnap=", pending_snapshot);
  if (!recent_active) absl::StrAppend(&out, " inactive");
  if (inflights.count() > 0) absl::StrAppend(&out, " inflight=", inflights.count());
  if (inflights.Full()) absl::StrAppend(&out, "[full]");
  return out;
}

}  // namespace meridian::raft
