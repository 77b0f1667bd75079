#include "node/raft/tracker.h"

#include "absl/strings/str_cat.h"

namespace meridian::raft {

std::string TrackerConfig::ToString() const {
  std::string out = absl::StrCat("voters=", voters.ToString());
  if (!learners.empty()) {
    out += " learners=(";
    bool first = true;
    for (uint64_t id : learners) {
      if (!first) out += " ";
      first = false;
      absl::StrAppend(&out, id);
    }
    out += ")";
  }
  return out;
}

Progress* ProgressTracker::Get(uint64_t id) {
  auto it = progress_.find(id);
  return it == progress_.end() ? nullptr : &it->second;
}

const Progress* ProgressTracker::Get(uint64_t id) const {
  auto it = progress_.find(id);
  return it == progress_.end() ? nullptr : &it->second;
}

void ProgressTracker::SetConfig(const TrackerConfig& config, uint64_t next_index) {
  config_ = config;
  auto add = [&](uint64_t id, bool learner) {
    auto it = progress_.find(id);
    if (it == progress_.end()) {
      it = progress_.emplace(id, Progress(max_inflight_, max_inflight_bytes_)).first;
      it->second.next = next_index;
      // A new member is given a grace period before CheckQuorum counts it as inactive.
      it->second.recent_active = true;
    }
    it->second.is_learner = learner;
  };
  for (uint64_t id : config_.voters.ids()) add(id, false);
  for (uint64_t id : config_.learners) add(id, true);
  for (auto it = progress_.begin(); it != progress_.end();) {
    if (!config_.voters.Contains(it->first) && config_.learners.count(it->first) == 0) {
      it = progress_.erase(it);
    } else {
      ++it;
    }
  }
}

ConfState ProgressTracker::GetConfState() const {
  ConfState cs;
  cs.voters = config_.voters.ids();
  cs.learners.assign(config_.learners.begin(), config_.learners.end());
  return cs;
}

uint64_t ProgressTracker::Committed() const {
  return config_.voters.CommittedIndex([this](uint64_t id) -> std::optional<uint64_t> {
    const Progress* pr = Get(id);
    if (pr == nullptr) return std::nullopt;
    return pr->match;
  });
}

bool ProgressTracker::QuorumActive() const {
  VoteResult r = config_.voters.TallyVotes([this](uint64_t id) -> std::optional<bool> {
    const Progress* pr = Get(id);
    if (pr == nullptr) return std::nullopt;
    return pr->recent_active;
  });
  return r == VoteResult::kWon;
}

uint64_t ProgressTracker::ConfirmedReadRound(uint64_t self, uint64_t own_round) const {
  return config_.voters.CommittedIndex([&](uint64_t id) -> std::optional<uint64_t> {
    if (id == self) return own_round;
    const Progress* pr = Get(id);
    if (pr == nullptr) return std::nullopt;
    return pr->read_round_acked;
  });
}

void ProgressTracker::RecordVote(uint64_t id, bool granted) { votes_.emplace(id, granted); }

ProgressTracker::Tally ProgressTracker::TallyVotes() const {
  Tally t;
  for (const auto& [id, granted] : votes_) {
    if (!config_.voters.Contains(id)) continue;
    if (granted) {
      ++t.granted;
    } else {
      ++t.rejected;
    }
  }
  t.result = config_.voters.TallyVotes([this](uint64_t id) -> std::optional<bool> {
    auto it = votes_.find(id);
    if (it == votes_.end()) return std::nullopt;
    return it->second;
  });
  return t;
}

}  // namespace meridian::raft
