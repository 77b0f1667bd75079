#include "node/raft/quorum.h"

#include <algorithm>
#include <array>
#include <functional>

namespace meridian::raft {

const char* VoteResultName(VoteResult r) {
  switch (r) {
    case VoteResult::kPending:
      return "pending";
    case VoteResult::kLost:
      return "lost";
    case VoteResult::kWon:
      return "won";
  }
  return "?";
}

MajorityConfig::MajorityConfig(std::vector<uint64_t> ids) : ids_(std::move(ids)) {
  std::sort(ids_.begin(), ids_.end());
  ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
}

bool MajorityConfig::Contains(uint64_t id) const {
  return std::binary_search(ids_.begin(), ids_.end(), id);
}

void MajorityConfig::Add(uint64_t id) {
  auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
  if (it == ids_.end() || *it != id) ids_.insert(it, id);
}

void MajorityConfig::Remove(uint64_t id) {
  auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
  if (it != ids_.end() && *it == id) ids_.erase(it);
}

uint64_t MajorityConfig::CommittedIndex(
    absl::FunctionRef<std::optional<uint64_t>(uint64_t)> acked) const {
  const size_t n = ids_.size();
  if (n == 0) return kNoLimitIndex;
  // Clusters are small; avoid a heap allocation on the leader's hot path.
  std::array<uint64_t, 16> stack;
  std::vector<uint64_t> heap;
  uint64_t* srt = stack.data();
  if (n > stack.size()) {
    heap.resize(n);
    srt = heap.data();
  }
  for (size_t i = 0; i < n; ++i) srt[i] = acked(ids_[i]).value_or(0);
  // Sorted descending, the (quorum-1)-th element is acknowledged by at least a quorum.
  const size_t q = n / 2 + 1;
  std::nth_element(srt, srt + (q - 1), srt + n, std::greater<uint64_t>());
  return srt[q - 1];
}

VoteResult MajorityConfig::TallyVotes(absl::FunctionRef<std::optional<bool>(uint64_t)> vote) const {
  if (ids_.empty()) return VoteResult::kWon;
  size_t granted = 0;
  size_t missing = 0;
  for (uint64_t id : ids_) {
    std::optional<bool> v = vote(id);
    if (!v.has_value()) {
      ++missing;
    } else if (*v) {
      ++granted;
    }
  }
  const size_t q = QuorumSize();
  if (granted >= q) return VoteResult::kWon;
  if (granted + missing >= q) return VoteResult::kPending;
  return VoteResult::kLost;
}

std::string MajorityConfig::ToString() const {
  std::string out = "(";
  for (size_t i = 0; i < ids_.size(); ++i) {
    if (i > 0) out += " ";
    out += std::to_string(ids_[i]);
  }
  out += ")";
  return out;
}

}  // namespace meridian::raft
