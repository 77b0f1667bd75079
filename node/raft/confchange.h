// Membership changes, one at a time (see README.md for why this is safe): add a voter, add a
// learner, promote a learner to voter, remove a member. Validation and the resulting
// configuration are computed here; raft.cc decides when a change may be proposed and applies the
// result once the change entry is applied.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "node/raft/tracker.h"
#include "node/raft/types.h"

namespace meridian::raft {

struct ConfChange {
  enum class Type : uint8_t {
    kAddNode = 0,         // add a voter, or promote a learner to voter
    kAddLearnerNode = 1,  // add a learner (demoting a voter is not supported)
    kRemoveNode = 2,      // remove a voter or learner
  };
  Type type = Type::kAddNode;
  uint64_t node_id = kNone;
  std::string context;  // opaque to raft (e.g. the new member's peer URLs)
  friend bool operator==(const ConfChange&, const ConfChange&) = default;
};
const char* ConfChangeTypeName(ConfChange::Type t);
std::string DescribeConfChange(const ConfChange& cc);

// Upper bound on an encoded change; DecodeConfChange refuses anything larger.
inline constexpr size_t kMaxConfChangeSizeBytes = 64 * 1024;

// Entry payload of an EntryType::kConfChange entry: a version byte, the type byte, the node id as
// 8 little-endian bytes, then the context.
std::string EncodeConfChange(const ConfChange& cc);
// Never crashes and never allocates more than the input on any input.
[[nodiscard]] absl::StatusOr<ConfChange> DecodeConfChange(std::string_view data);

// Returns the configuration after `cc`. Redundant changes (adding an existing voter, removing a
// non-member) return the configuration unchanged. Errors: node id 0, demoting a voter to
// learner, and removing the last voter.
[[nodiscard]] absl::StatusOr<TrackerConfig> ApplyConfChange(const TrackerConfig& config,
                                                            const ConfChange& cc);

// The configuration a ConfState describes (voters and learners sorted, disjoint, voters
// non-empty unless both lists are empty, which means "no configuration yet").
[[nodiscard]] absl::StatusOr<TrackerConfig> ConfigFromConfState(const ConfState& cs);

}  // namespace meridian::raft
