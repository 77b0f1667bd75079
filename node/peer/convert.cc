#include "node/peer/convert.h"

#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace meridian::peer {
namespace {

using raft::EntryType;
using raft::MessageType;

absl::StatusOr<EntryType> DecodeEntryType(int wire_value) {
  switch (wire_value) {
    case meridianpb::RAFT_ENTRY_NORMAL:
      return EntryType::kNormal;
    case meridianpb::RAFT_ENTRY_CONF_CHANGE:
      return EntryType::kConfChange;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown raft entry type ", wire_value));
  }
}

meridianpb::RaftEntryType EncodeEntryType(EntryType type) {
  switch (type) {
    case EntryType::kNormal:
      return meridianpb::RAFT_ENTRY_NORMAL;
    case EntryType::kConfChange:
      return meridianpb::RAFT_ENTRY_CONF_CHANGE;
  }
  return meridianpb::RAFT_ENTRY_NORMAL;  // unreachable: the switch is exhaustive
}

// `Msg` is `const raft::Message&` (copy) or `raft::Message&&` (move the byte strings out).
template <typename Msg>
void EncodeMessageImpl(Msg&& m, meridianpb::RaftMessage* out) {
  constexpr bool kMove = !std::is_lvalue_reference_v<Msg>;
  out->Clear();
  out->set_type(EncodeMessageType(m.type));
  out->set_to(m.to);
  out->set_from(m.from);
  out->set_term(m.term);
  out->set_log_term(m.log_term);
  out->set_index(m.index);
  out->mutable_entries()->Reserve(static_cast<int>(m.entries.size()));
  for (auto& e : m.entries) {
    meridianpb::RaftEntry* pe = out->add_entries();
    pe->set_index(e.index);
    pe->set_term(e.term);
    pe->set_type(EncodeEntryType(e.type));
    if constexpr (kMove) {
      pe->set_data(std::move(e.data));
    } else {
      pe->set_data(e.data);
    }
  }
  out->set_commit(m.commit);
  if (m.snapshot.has_value()) {
    meridianpb::RaftSnapshotMetadata* md = out->mutable_snapshot()->mutable_metadata();
    md->set_index(m.snapshot->metadata.index);
    md->set_term(m.snapshot->metadata.term);
    EncodeConfState(m.snapshot->metadata.conf_state, md->mutable_conf_state());
  }
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint);
  if constexpr (kMove) {
    out->set_context(std::move(m.context));
  } else {
    out->set_context(m.context);
  }
  out->set_read_round(m.read_round);
  out->set_leader_transfer(m.leader_transfer);
}

// `Pb` is `const meridianpb::RaftMessage&` (copy) or `meridianpb::RaftMessage&&` (move).
template <typename Pb>
absl::StatusOr<raft::Message> DecodeMessageImpl(Pb&& pb) {
  constexpr bool kMove = !std::is_lvalue_reference_v<Pb>;
  raft::Message m;
  absl::StatusOr<MessageType> type = DecodeMessageType(pb.type());
  if (!type.ok()) return type.status();
  m.type = *type;
  m.to = pb.to();
  m.from = pb.from();
  m.term = pb.term();
  m.log_term = pb.log_term();
  m.index = pb.index();
  m.entries.reserve(static_cast<size_t>(pb.entries_size()));
  for (int i = 0; i < pb.entries_size(); ++i) {
    const meridianpb::RaftEntry& pe = pb.entries(i);
    raft::Entry e;
    e.index = pe.index();
    e.term = pe.term();
    absl::StatusOr<EntryType> et = DecodeEntryType(pe.type());
    if (!et.ok()) return et.status();
    e.type = *et;
    if constexpr (kMove) {
      e.data = std::move(*pb.mutable_entries(i)->mutable_data());
    } else {
      e.data = pe.data();
    }
    m.entries.push_back(std::move(e));
  }
  m.commit = pb.commit();
  if (pb.has_snapshot()) {
    const meridianpb::RaftSnapshotMetadata& md = pb.snapshot().metadata();
    raft::Snapshot snap;
    snap.metadata.index = md.index();
    snap.metadata.term = md.term();
    absl::StatusOr<raft::ConfState> cs = DecodeConfState(md.conf_state());
    if (!cs.ok()) return cs.status();
    snap.metadata.conf_state = *std::move(cs);
    m.snapshot = std::move(snap);
  }
  m.reject = pb.reject();
  m.reject_hint = pb.reject_hint();
  if constexpr (kMove) {
    m.context = std::move(*pb.mutable_context());
  } else {
    m.context = pb.context();
  }
  m.read_round = pb.read_round();
  m.leader_transfer = pb.leader_transfer();
  return m;
}

// Strictly increasing and non-zero.
absl::Status CheckIdList(const google::protobuf::RepeatedField<uint64_t>& ids, const char* what) {
  uint64_t prev = 0;
  for (uint64_t id : ids) {
    if (id == raft::kNone) return absl::InvalidArgumentError(absl::StrCat(what, " contain id 0"));
    if (id <= prev) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " are not strictly increasing (", prev, " then ", id, ")"));
    }
    prev = id;
  }
  return absl::OkStatus();
}

}  // namespace

meridianpb::RaftMessageType EncodeMessageType(MessageType type) {
  switch (type) {
    case MessageType::kHup:
      return meridianpb::RAFT_MSG_HUP;
    case MessageType::kBeat:
      return meridianpb::RAFT_MSG_BEAT;
    case MessageType::kUnreachable:
      return meridianpb::RAFT_MSG_UNREACHABLE;
    case MessageType::kSnapStatus:
      return meridianpb::RAFT_MSG_SNAP_STATUS;
    case MessageType::kCheckQuorum:
      return meridianpb::RAFT_MSG_CHECK_QUORUM;
    case MessageType::kProp:
      return meridianpb::RAFT_MSG_PROP;
    case MessageType::kReadIndex:
      return meridianpb::RAFT_MSG_READ_INDEX;
    case MessageType::kTransferLeader:
      return meridianpb::RAFT_MSG_TRANSFER_LEADER;
    case MessageType::kApp:
      return meridianpb::RAFT_MSG_APP;
    case MessageType::kAppResp:
      return meridianpb::RAFT_MSG_APP_RESP;
    case MessageType::kVote:
      return meridianpb::RAFT_MSG_VOTE;
    case MessageType::kVoteResp:
      return meridianpb::RAFT_MSG_VOTE_RESP;
    case MessageType::kPreVote:
      return meridianpb::RAFT_MSG_PRE_VOTE;
    case MessageType::kPreVoteResp:
      return meridianpb::RAFT_MSG_PRE_VOTE_RESP;
    case MessageType::kSnap:
      return meridianpb::RAFT_MSG_SNAP;
    case MessageType::kHeartbeat:
      return meridianpb::RAFT_MSG_HEARTBEAT;
    case MessageType::kHeartbeatResp:
      return meridianpb::RAFT_MSG_HEARTBEAT_RESP;
    case MessageType::kTimeoutNow:
      return meridianpb::RAFT_MSG_TIMEOUT_NOW;
    case MessageType::kReadIndexResp:
      return meridianpb::RAFT_MSG_READ_INDEX_RESP;
  }
  return meridianpb::RAFT_MSG_UNSPECIFIED;  // unreachable: the switch is exhaustive
}

absl::StatusOr<MessageType> DecodeMessageType(int wire_value) {
  switch (wire_value) {
    case meridianpb::RAFT_MSG_HUP:
      return MessageType::kHup;
    case meridianpb::RAFT_MSG_BEAT:
      return MessageType::kBeat;
    case meridianpb::RAFT_MSG_UNREACHABLE:
      return MessageType::kUnreachable;
    case meridianpb::RAFT_MSG_SNAP_STATUS:
      return MessageType::kSnapStatus;
    case meridianpb::RAFT_MSG_CHECK_QUORUM:
      return MessageType::kCheckQuorum;
    case meridianpb::RAFT_MSG_PROP:
      return MessageType::kProp;
    case meridianpb::RAFT_MSG_READ_INDEX:
      return MessageType::kReadIndex;
    case meridianpb::RAFT_MSG_TRANSFER_LEADER:
      return MessageType::kTransferLeader;
    case meridianpb::RAFT_MSG_APP:
      return MessageType::kApp;
    case meridianpb::RAFT_MSG_APP_RESP:
      return MessageType::kAppResp;
    case meridianpb::RAFT_MSG_VOTE:
      return MessageType::kVote;
    case meridianpb::RAFT_MSG_VOTE_RESP:
      return MessageType::kVoteResp;
    case meridianpb::RAFT_MSG_PRE_VOTE:
      return MessageType::kPreVote;
    case meridianpb::RAFT_MSG_PRE_VOTE_RESP:
      return MessageType::kPreVoteResp;
    case meridianpb::RAFT_MSG_SNAP:
      return MessageType::kSnap;
    case meridianpb::RAFT_MSG_HEARTBEAT:
      return MessageType::kHeartbeat;
    case meridianpb::RAFT_MSG_HEARTBEAT_RESP:
      return MessageType::kHeartbeatResp;
    case meridianpb::RAFT_MSG_TIMEOUT_NOW:
      return MessageType::kTimeoutNow;
    case meridianpb::RAFT_MSG_READ_INDEX_RESP:
      return MessageType::kReadIndexResp;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown raft message type ", wire_value));
  }
}

void EncodeMessage(const raft::Message& m, meridianpb::RaftMessage* out) {
  EncodeMessageImpl(m, out);
}

void EncodeMessage(raft::Message&& m, meridianpb::RaftMessage* out) {
  EncodeMessageImpl(std::move(m), out);
}

absl::StatusOr<raft::Message> DecodeMessage(const meridianpb::RaftMessage& pb) {
  return DecodeMessageImpl(pb);
}

absl::StatusOr<raft::Message> DecodeMessage(meridianpb::RaftMessage&& pb) {
  return DecodeMessageImpl(std::move(pb));
}

void EncodeHardState(const raft::HardState& hs, meridianpb::RaftHardState* out) {
  out->set_term(hs.term);
  out->set_vote(hs.vote);
  out->set_commit(hs.commit);
}

raft::HardState DecodeHardState(const meridianpb::RaftHardState& pb) {
  return raft::HardState{pb.term(), pb.vote(), pb.commit()};
}

void EncodeConfState(const raft::ConfState& cs, meridianpb::RaftSnapshotConfState* out) {
  out->Clear();
  out->mutable_voters()->Add(cs.voters.begin(), cs.voters.end());
  out->mutable_learners()->Add(cs.learners.begin(), cs.learners.end());
}

absl::StatusOr<raft::ConfState> DecodeConfState(const meridianpb::RaftSnapshotConfState& pb) {
  if (absl::Status st = CheckIdList(pb.voters(), "voters"); !st.ok()) return st;
  if (absl::Status st = CheckIdList(pb.learners(), "learners"); !st.ok()) return st;
  raft::ConfState cs;
  cs.voters.assign(pb.voters().begin(), pb.voters().end());
  cs.learners.assign(pb.learners().begin(), pb.learners().end());
  // Both sorted: one merge pass finds any id in both lists.
  size_t i = 0, j = 0;
  while (i < cs.voters.size() && j < cs.learners.size()) {
    if (cs.voters[i] == cs.learners[j]) {
      return absl::InvalidArgumentError(
          absl::StrCat("member ", cs.voters[i], " is both a voter and a learner"));
    }
    if (cs.voters[i] < cs.learners[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return cs;
}

uint64_t ApproxMessageBytes(const raft::Message& m) {
  // Fixed fields and framing; entries at raft's own batching size (payload + 24).
  uint64_t bytes = 64 + m.context.size();
  for (const raft::Entry& e : m.entries) bytes += raft::EntrySize(e);
  if (m.snapshot.has_value()) {
    bytes += 32 + 10 * (m.snapshot->metadata.conf_state.voters.size() +
                        m.snapshot->metadata.conf_state.learners.size());
  }
  return bytes;
}

}  // namespace meridian::peer
