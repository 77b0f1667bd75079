#include "node/raft/rawnode.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "node/raft/check.h"

namespace meridian::raft {

absl::StatusOr<std::unique_ptr<RawNode>> RawNode::Create(const Config& config,
                                                         const Storage* storage) {
  if (storage == nullptr) return absl::InvalidArgumentError("storage must not be null");
  absl::Status valid = config.Validate();
  if (!valid.ok()) return valid;
  InitialState st = storage->GetInitialState();
  absl::StatusOr<TrackerConfig> cfg = ConfigFromConfState(st.conf_state);
  if (!cfg.ok()) return cfg.status();
  const uint64_t first = storage->FirstIndex();
  const uint64_t last = storage->LastIndex();
  if (st.hard_state.commit < first - 1 || st.hard_state.commit > last) {
    return absl::DataLossError(absl::StrCat("hard state commit ", st.hard_state.commit,
                                            " out of range [", first - 1, ", ", last, "]"));
  }
  if (config.applied != 0 &&
      (config.applied < first - 1 || config.applied > st.hard_state.commit)) {
    return absl::InvalidArgumentError(absl::StrCat("applied ", config.applied, " out of range [",
                                                   first - 1, ", ", st.hard_state.commit, "]"));
  }
  return std::unique_ptr<RawNode>(new RawNode(config, storage));
}

RawNode::RawNode(const Config& config, const Storage* storage)
    : raft_(config, storage), prev_soft_(raft_.soft_state()), prev_hard_(raft_.hard_state()) {}

absl::Status RawNode::Bootstrap(const std::vector<uint64_t>& voters) {
  return raft_.Bootstrap(voters);
}

void RawNode::Tick() { raft_.Tick(); }

absl::Status RawNode::Campaign() {
  Message m;
  m.type = MessageType::kHup;
  m.from = raft_.id();
  return raft_.Step(m);
}

absl::Status RawNode::Propose(std::string data) {
  Message m;
  m.type = MessageType::kProp;
  m.from = raft_.id();
  m.entries.push_back(Entry{0, 0, EntryType::kNormal, std::move(data)});
  return raft_.Step(m);
}

absl::Status RawNode::ProposeConfChange(const ConfChange& cc) {
  if (cc.node_id == kNone) return absl::InvalidArgumentError("conf change for node id 0");
  std::string data = EncodeConfChange(cc);
  if (data.size() > kMaxConfChangeSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("conf change of ", data.size(), " bytes exceeds ", kMaxConfChangeSizeBytes));
  }
  Message m;
  m.type = MessageType::kProp;
  m.from = raft_.id();
  m.entries.push_back(Entry{0, 0, EntryType::kConfChange, std::move(data)});
  return raft_.Step(m);
}

absl::StatusOr<ConfState> RawNode::ApplyConfChange(const ConfChange& cc) {
  return raft_.ApplyConfChange(cc);
}

absl::Status ValidatePeerMessage(const Message& m, uint64_t self) {
  if (IsLocalMessage(m.type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("local message ", MessageTypeName(m.type), " received from the network"));
  }
  if (m.from == kNone) return absl::InvalidArgumentError("message from node 0");
  if (m.to != self) {
    return absl::InvalidArgumentError(absl::StrCat("message for ", m.to, " delivered to ", self));
  }
  const bool forwarded = m.type == MessageType::kProp || m.type == MessageType::kReadIndex;
  if (forwarded != (m.term == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(MessageTypeName(m.type), " with term ", m.term));
  }
  switch (m.type) {
    case MessageType::kProp:
      if (m.entries.empty()) return absl::InvalidArgumentError("empty proposal");
      break;
    case MessageType::kApp: {
      uint64_t prev_term = m.log_term;
      for (size_t i = 0; i < m.entries.size(); ++i) {
        const Entry& e = m.entries[i];
        if (e.index != m.index + 1 + i) {
          return absl::InvalidArgumentError(
              absl::StrCat("append entry ", i, " has index ", e.index, ", want ", m.index + 1 + i));
        }
        if (e.term < prev_term || e.term > m.term) {
          return absl::InvalidArgumentError(absl::StrCat("append entry ", e.index, " has term ",
                                                         e.term, " outside [", prev_term, ", ",
                                                         m.term, "]"));
        }
        prev_term = e.term;
      }
      if (m.log_term > m.term) {
        return absl::InvalidArgumentError(
            absl::StrCat("append log term ", m.log_term, " above message term ", m.term));
      }
      break;
    }
    case MessageType::kSnap: {
      if (!m.snapshot || m.snapshot->empty()) {
        return absl::InvalidArgumentError("snapshot message without snapshot");
      }
      absl::StatusOr<TrackerConfig> cfg = ConfigFromConfState(m.snapshot->metadata.conf_state);
      if (!cfg.ok()) return cfg.status();
      break;
    }
    default:
      if (!m.entries.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(MessageTypeName(m.type), " must not carry entries"));
      }
  }
  return absl::OkStatus();
}

absl::Status RawNode::Step(const Message& m) {
  absl::Status valid = ValidatePeerMessage(m, raft_.id());
  if (!valid.ok()) return valid;
  const bool response = m.type == MessageType::kAppResp || m.type == MessageType::kVoteResp ||
                        m.type == MessageType::kPreVoteResp ||
                        m.type == MessageType::kHeartbeatResp;
  if (response && raft_.tracker().Get(m.from) == nullptr) {
    return absl::NotFoundError(absl::StrCat("response from non-member ", m.from));
  }
  return raft_.Step(m);
}

absl::Status RawNode::ReadIndex(std::string context) {
  Message m;
  m.type = MessageType::kReadIndex;
  m.context = std::move(context);
  return raft_.Step(m);
}

absl::Status RawNode::TransferLeader(uint64_t transferee) {
  if (transferee == kNone) return absl::InvalidArgumentError("transfer to node 0");
  Message m;
  m.type = MessageType::kTransferLeader;
  m.from = transferee;  // by convention the target travels in `from`
  return raft_.Step(m);
}

void RawNode::ReportUnreachable(uint64_t id) {
  Message m;
  m.type = MessageType::kUnreachable;
  m.from = id;
  (void)raft_.Step(m);
}

void RawNode::ReportSnapshot(uint64_t id, bool ok) {
  Message m;
  m.type = MessageType::kSnapStatus;
  m.from = id;
  m.reject = !ok;
  (void)raft_.Step(m);
}

bool RawNode::HasReady() const {
  if (ready_outstanding_) return false;
  const RaftLog& log = raft_.log();
  return raft_.soft_state() != prev_soft_ || raft_.hard_state() != prev_hard_ ||
         !log.UnstableEntries().empty() || log.UnstableSnapshot().has_value() ||
         log.HasNextCommittedEntries() || raft_.HasPendingOutput();
}

Ready RawNode::GetReady() {
  RAFT_CHECK(!ready_outstanding_) << "GetReady called before Advance of the previous Ready";
  Ready rd;
  const SoftState soft = raft_.soft_state();
  if (soft != prev_soft_) {
    rd.soft_state = soft;
    prev_soft_ = soft;
  }
  const HardState hard = raft_.hard_state();
  if (hard != prev_hard_) rd.hard_state = hard;
  RaftLog& log = raft_.mutable_log();
  rd.entries = log.UnstableEntries();
  rd.snapshot = log.UnstableSnapshot();
  rd.committed_entries = log.NextCommittedEntries();
  if (!rd.committed_entries.empty()) log.ApplyingTo(rd.committed_entries.back().index);
  for (Message& m : raft_.TakeMessages()) {
    const bool leader_type = m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
                             m.type == MessageType::kSnap || m.type == MessageType::kTimeoutNow;
    if (leader_type && m.term == prev_hard_.term) {
      rd.early_messages.push_back(std::move(m));
    } else {
      rd.messages.push_back(std::move(m));
    }
  }
  rd.read_states = raft_.TakeReadStates();
  rd.must_sync = !rd.entries.empty() || rd.snapshot.has_value() ||
                 (rd.hard_state && (rd.hard_state->term != prev_hard_.term ||
                                    rd.hard_state->vote != prev_hard_.vote));
  ready_outstanding_ = true;
  return rd;
}

void RawNode::Advance(const Ready& rd) {
  RAFT_CHECK(ready_outstanding_) << "Advance without an outstanding Ready";
  ready_outstanding_ = false;
  if (rd.hard_state) prev_hard_ = *rd.hard_state;
  if (rd.snapshot) {
    raft_.OnSnapshotPersisted(rd.snapshot->metadata.index);
    raft_.OnSnapshotApplied(*rd.snapshot);
    if (rd.snapshot->metadata.index > raft_.log().applied()) {
      raft_.OnApplied(rd.snapshot->metadata.index, 0);
    }
  }
  if (!rd.entries.empty()) raft_.OnPersisted(rd.entries.back().index, rd.entries.back().term);
  if (!rd.committed_entries.empty()) {
    uint64_t bytes = 0;
    for (const Entry& e : rd.committed_entries) bytes += EntryPayloadSize(e);
    raft_.OnApplied(rd.committed_entries.back().index, bytes);
  }
}

}  // namespace meridian::raft
