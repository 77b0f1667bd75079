// The leader's (and a candidate's) bookkeeping for the whole membership: the configuration
// (voters and learners), one Progress per member and the votes of the running election.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "node/raft/progress.h"
#include "node/raft/quorum.h"
#include "node/raft/types.h"

namespace meridian::raft {

struct TrackerConfig {
  MajorityConfig voters;
  std::set<uint64_t> learners;   // disjoint from voters
  std::string ToString() const;  // "voters=(1 2 3) learners=(4)"
  friend bool operator==(const TrackerConfig&, const TrackerConfig&) = default;
};

class ProgressTracker {
 public:
  ProgressTracker(size_t max_inflight, uint64_t max_inflight_bytes)
      : max_inflight_(max_inflight), max_inflight_bytes_(max_inflight_bytes) {}

  const TrackerConfig& config() const { return config_; }
  // Ordered by id so iteration (and so the order of sent messages) is deterministic.
  std::map<uint64_t, Progress>& progress() { return progress_; }
  const std::map<uint64_t, Progress>& progress() const { return progress_; }
  Progress* Get(uint64_t id);
  const Progress* Get(uint64_t id) const;

  // Installs a new membership. Members keep their Progress; new ones start probing at
  // `next_index` with match 0; removed ones are dropped.
  void SetConfig(const TrackerConfig& config, uint64_t next_index);
  ConfState GetConfState() const;

  bool IsVoter(uint64_t id) const { return config_.voters.Contains(id); }
  // The cluster has exactly one voter (the caller checks it is itself).
  bool IsSingleVoter() const { return config_.voters.size() == 1; }
  // Largest index durably replicated on a quorum of voters.
  uint64_t Committed() const;
  // Whether a quorum of voters was recently active (every voter's recent_active flag).
  bool QuorumActive() const;
  // Largest read-index round confirmed by a quorum, counting `self` as confirming `own_round`.
  uint64_t ConfirmedReadRound(uint64_t self, uint64_t own_round) const;

  void ResetVotes() { votes_.clear(); }
  void RecordVote(uint64_t id, bool granted);  // the first answer of each voter counts
  struct Tally {
    size_t granted = 0;
    size_t rejected = 0;
    VoteResult result = VoteResult::kPending;
  };
  Tally TallyVotes() const;

  size_t max_inflight() const { return max_inflight_; }
  uint64_t max_inflight_bytes() const { return max_inflight_bytes_; }

 private:
  size_t max_inflight_;
  uint64_t max_inflight_bytes_;
  TrackerConfig config_;
  std::map<uint64_t, Progress> progress_;
  std::map<uint64_t, bool> votes_;
};

}  // namespace meridian::raft
