#include "node/raft/types.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "node/raft/confchange.h"

namespace meridian::raft {

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHup:
      return "MsgHup";
    case MessageType::kBeat:
      return "MsgBeat";
    case MessageType::kUnreachable:
      return "MsgUnreachable";
    case MessageType::kSnapStatus:
      return "MsgSnapStatus";
    case MessageType::kCheckQuorum:
      return "MsgCheckQuorum";
    case MessageType::kProp:
      return "MsgProp";
    case MessageType::kReadIndex:
      return "MsgReadIndex";
    case MessageType::kTransferLeader:
      return "MsgTransferLeader";
    case MessageType::kApp:
      return "MsgApp";
    case MessageType::kAppResp:
      return "MsgAppResp";
    case MessageType::kVote:
      return "MsgVote";
    case MessageType::kVoteResp:
      return "MsgVoteResp";
    case MessageType::kPreVote:
      return "MsgPreVote";
    case MessageType::kPreVoteResp:
      return "MsgPreVoteResp";
    case MessageType::kSnap:
      return "MsgSnap";
    case MessageType::kHeartbeat:
      return "MsgHeartbeat";
    case MessageType::kHeartbeatResp:
      return "MsgHeartbeatResp";
    case MessageType::kTimeoutNow:
      return "MsgTimeoutNow";
    case MessageType::kReadIndexResp:
      return "MsgReadIndexResp";
  }
  return "MsgUnknown";
}

bool IsLocalMessage(MessageType type) {
  switch (type) {
    case MessageType::kHup:
    case MessageType::kBeat:
    case MessageType::kUnreachable:
    case MessageType::kSnapStatus:
    case MessageType::kCheckQuorum:
      return true;
    default:
      return false;
  }
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "StateFollower";
    case Role::kPreCandidate:
      return "StatePreCandidate";
    case Role::kCandidate:
      return "StateCandidate";
    case Role::kLeader:
      return "StateLeader";
  }
  return "StateUnknown";
}

std::string DescribeEntry(const Entry& e) {
  std::string out = absl::StrCat(e.term, "/", e.index);
  if (e.type == EntryType::kConfChange) {
    absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
    absl::StrAppend(&out, " ConfChange(",
                    cc.ok() ? DescribeConfChange(*cc) : std::string("invalid"), ")");
  } else if (e.data.empty()) {
    absl::StrAppend(&out, " EntryNormal");
  } else if (e.data.size() <= 32) {
    absl::StrAppend(&out, " EntryNormal \"", e.data, "\"");
  } else {
    absl::StrAppend(&out, " EntryNormal (", e.data.size(), " bytes)");
  }
  return out;
}

std::string DescribeMessage(const Message& m) {
  std::string out =
      absl::StrCat(m.from, "->", m.to, " ", MessageTypeName(m.type), " Term:", m.term);
  switch (m.type) {
    case MessageType::kApp:
      absl::StrAppend(&out, " Log:", m.log_term, "/", m.index, " Commit:", m.commit);
      break;
    case MessageType::kAppResp:
      absl::StrAppend(&out, " Index:", m.index);
      if (m.reject) {
        absl::StrAppend(&out, " Rejected (Hint: ", m.reject_hint, " LogTerm: ", m.log_term, ")");
      }
      break;
    case MessageType::kVote:
    case MessageType::kPreVote:
      absl::StrAppend(&out, " Log:", m.log_term, "/", m.index);
      if (m.leader_transfer) absl::StrAppend(&out, " Transfer");
      break;
    case MessageType::kVoteResp:
    case MessageType::kPreVoteResp:
      if (m.reject) absl::StrAppend(&out, " Rejected");
      break;
    case MessageType::kHeartbeat:
      absl::StrAppend(&out, " Commit:", m.commit);
      if (m.read_round != 0) absl::StrAppend(&out, " ReadRound:", m.read_round);
      break;
    case MessageType::kHeartbeatResp:
      if (m.read_round != 0) absl::StrAppend(&out, " ReadRound:", m.read_round);
      break;
    case MessageType::kSnap:
      if (m.snapshot) {
        absl::StrAppend(&out, " Snapshot: index=", m.snapshot->metadata.index,
                        " term=", m.snapshot->metadata.term, " ",
                        DescribeConfState(m.snapshot->metadata.conf_state));
      }
      break;
    case MessageType::kReadIndex:
    case MessageType::kReadIndexResp:
      absl::StrAppend(&out, " Index:", m.index, " Context:\"", m.context, "\"");
      break;
    case MessageType::kSnapStatus:
      if (m.reject) absl::StrAppend(&out, " Rejected");
      break;
    default:
      break;
  }
  if (!m.entries.empty()) {
    std::vector<std::string> parts;
    parts.reserve(m.entries.size());
    for (const Entry& e : m.entries) parts.push_back(DescribeEntry(e));
    absl::StrAppend(&out, " Entries:[", absl::StrJoin(parts, ", "), "]");
  }
  return out;
}

std::string DescribeHardState(const HardState& hs) {
  return absl::StrCat("Term:", hs.term, " Vote:", hs.vote, " Commit:", hs.commit);
}

std::string DescribeConfState(const ConfState& cs) {
  std::string out = absl::StrCat("Voters:[", absl::StrJoin(cs.voters, " "), "]");
  if (!cs.learners.empty()) {
    absl::StrAppend(&out, " Learners:[", absl::StrJoin(cs.learners, " "), "]");
  }
  return out;
}

}  // namespace meridian::raft
