// Majority quorum math: the commit index a majority has acknowledged and election outcomes.
// Pure functions over a set of voter ids; the callers supply the per-voter facts.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"

namespace meridian::raft {

enum class VoteResult : uint8_t { kPending, kLost, kWon };
const char* VoteResultName(VoteResult r);

class MajorityConfig {
 public:
  MajorityConfig() = default;
  explicit MajorityConfig(std::vector<uint64_t> ids);  // sorted, duplicates dropped

  bool Contains(uint64_t id) const;
  void Add(uint64_t id);
  void Remove(uint64_t id);
  size_t size() const { return ids_.size(); }
  bool empty() const { return ids_.empty(); }
  const std::vector<uint64_t>& ids() const { return ids_; }  // sorted
  // Votes needed to win: floor(n/2) + 1.
  size_t QuorumSize() const { return ids_.size() / 2 + 1; }

  // The largest index that a majority of voters has acknowledged. `acked(id)` returns the
  // voter's acknowledged index, nullopt counting as 0. An empty config returns the maximum
  // uint64_t, so that combining it with a real config by min() is neutral.
  uint64_t CommittedIndex(absl::FunctionRef<std::optional<uint64_t>(uint64_t)> acked) const;

  // kWon once a majority granted, kLost once a majority can no longer be reached, kPending
  // otherwise. `vote(id)` is nullopt for a voter that has not answered. An empty config wins.
  VoteResult TallyVotes(absl::FunctionRef<std::optional<bool>(uint64_t)> vote) const;

  std::string ToString() const;  // "(1 2 3)"
  friend bool operator==(const MajorityConfig&, const MajorityConfig&) = default;

 private:
  std::vector<uint64_t> ids_;
};

inline constexpr uint64_t kNoLimitIndex = std::numeric_limits<uint64_t>::max();

}  // namespace meridian::raft
