// Mapping between the raft core's plain structs (node/raft/types.h) and their wire form
// (api/meridian/raft.proto). Encoding is total; decoding checks everything a hostile or buggy
// peer could get wrong that would otherwise trip an invariant check in the core.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meridian/raft.pb.h"
#include "node/raft/types.h"

namespace meridian::peer {

// All fields; a snapshot's metadata but never its data (the payload travels as SnapshotChunks).
void EncodeMessage(const raft::Message& m, meridianpb::RaftMessage* out);
// The same, moving entry data and context out of `m` instead of copying them.
void EncodeMessage(raft::Message&& m, meridianpb::RaftMessage* out);

// InvalidArgument on an unknown message or entry type, or an ill-formed membership in a
// snapshot. Does not judge whether the type may come from the network (see IsLocalMessage).
[[nodiscard]] absl::StatusOr<raft::Message> DecodeMessage(const meridianpb::RaftMessage& pb);
// The same, moving entry data and context out of `pb`.
[[nodiscard]] absl::StatusOr<raft::Message> DecodeMessage(meridianpb::RaftMessage&& pb);

void EncodeHardState(const raft::HardState& hs, meridianpb::RaftHardState* out);
raft::HardState DecodeHardState(const meridianpb::RaftHardState& pb);

void EncodeConfState(const raft::ConfState& cs, meridianpb::RaftSnapshotConfState* out);
// InvalidArgument unless both lists are strictly increasing, free of 0 and disjoint (the core
// assumes all three).
[[nodiscard]] absl::StatusOr<raft::ConfState> DecodeConfState(
    const meridianpb::RaftSnapshotConfState& pb);

meridianpb::RaftMessageType EncodeMessageType(raft::MessageType type);
[[nodiscard]] absl::StatusOr<raft::MessageType> DecodeMessageType(int wire_value);

// Roughly what `m` costs on the wire and in memory, without encoding it: used for the per-peer
// queue and batch limits, so it must be cheap rather than exact.
uint64_t ApproxMessageBytes(const raft::Message& m);

}  // namespace meridian::peer
