#include "node/raft/confchange.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace meridian::raft {

namespace {
constexpr uint8_t kConfChangeVersion = 1;
constexpr size_t kHeaderSizeBytes = 1 + 1 + 8;
}  // namespace

const char* ConfChangeTypeName(ConfChange::Type t) {
  switch (t) {
    case ConfChange::Type::kAddNode:
      return "add-voter";
    case ConfChange::Type::kAddLearnerNode:
      return "add-learner";
    case ConfChange::Type::kRemoveNode:
      return "remove";
  }
  return "?";
}

std::string DescribeConfChange(const ConfChange& cc) {
  return absl::StrCat(ConfChangeTypeName(cc.type), " ", cc.node_id);
}

std::string EncodeConfChange(const ConfChange& cc) {
  std::string out;
  out.reserve(kHeaderSizeBytes + cc.context.size());
  out.push_back(static_cast<char>(kConfChangeVersion));
  out.push_back(static_cast<char>(cc.type));
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((cc.node_id >> (8 * i)) & 0xff));
  out += cc.context;
  return out;
}

absl::StatusOr<ConfChange> DecodeConfChange(std::string_view data) {
  if (data.size() < kHeaderSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("conf change too short: ", data.size(), " bytes"));
  }
  if (data.size() > kMaxConfChangeSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("conf change too large: ", data.size(), " bytes"));
  }
  if (static_cast<uint8_t>(data[0]) != kConfChangeVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown conf change version ", static_cast<uint8_t>(data[0])));
  }
  uint8_t type = static_cast<uint8_t>(data[1]);
  if (type > static_cast<uint8_t>(ConfChange::Type::kRemoveNode)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown conf change type ", type));
  }
  ConfChange cc;
  cc.type = static_cast<ConfChange::Type>(type);
  for (int i = 0; i < 8; ++i) {
    cc.node_id |= static_cast<uint64_t>(static_cast<uint8_t>(data[2 + i])) << (8 * i);
  }
  cc.context.assign(data.substr(kHeaderSizeBytes));
  return cc;
}

absl::StatusOr<TrackerConfig> ApplyConfChange(const TrackerConfig& config, const ConfChange& cc) {
  if (cc.node_id == kNone) return absl::InvalidArgumentError("conf change for node id 0");
  TrackerConfig out = config;
  const uint64_t id = cc.node_id;
  switch (cc.type) {
    case ConfChange::Type::kAddNode:
      out.learners.erase(id);  // promotion, or a no-op for a new node
      out.voters.Add(id);
      break;
    case ConfChange::Type::kAddLearnerNode:
      if (out.voters.Contains(id)) {
        return absl::FailedPreconditionError(
            absl::StrCat("node ", id, " is a voter; demotion to learner is not supported"));
      }
      out.learners.insert(id);
      break;
    case ConfChange::Type::kRemoveNode:
      out.voters.Remove(id);
      out.learners.erase(id);
      if (out.voters.empty() && !config.voters.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("removing node ", id, " would leave no voters"));
      }
      break;
  }
  return out;
}

absl::StatusOr<TrackerConfig> ConfigFromConfState(const ConfState& cs) {
  TrackerConfig out;
  for (uint64_t id : cs.voters) {
    if (id == kNone) return absl::InvalidArgumentError("conf state has voter id 0");
    out.voters.Add(id);
  }
  for (uint64_t id : cs.learners) {
    if (id == kNone) return absl::InvalidArgumentError("conf state has learner id 0");
    if (out.voters.Contains(id)) {
      return absl::InvalidArgumentError(absl::StrCat("node ", id, " is voter and learner"));
    }
    out.learners.insert(id);
  }
  if (out.voters.empty() && !out.learners.empty()) {
    return absl::InvalidArgumentError("conf state has learners but no voters");
  }
  return out;
}

}  // namespace meridian::raft
