// The application's handle on a raft node, in the spirit of etcd's RawNode. Single-threaded and
// pure: the caller drives it with Tick(), Step() for peer messages and the request methods, and
// carries out its effects by processing Ready structs:
//
//   while (node.HasReady()) {
//     Ready rd = node.GetReady();
//     send(rd.early_messages);                     // optional shortcut, see below
//     persist(rd.snapshot, rd.entries, rd.hard_state);   // fsync if rd.must_sync
//     storage.ApplySnapshot / Append / SetHardState;     // mirror what is now durable
//     send(rd.messages);
//     apply(rd.snapshot); apply(rd.committed_entries);   // ApplyConfChange for conf changes
//     serve(rd.read_states) once applied >= index;
//     node.Advance(rd);
//   }
//
// Only one Ready may be outstanding; Step/Tick/requests may be called between GetReady and
// Advance (their effects show up in the next Ready).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/raft/confchange.h"
#include "node/raft/raft.h"
#include "node/raft/storage.h"
#include "node/raft/types.h"

namespace meridian::raft {

struct Ready {
  // Leader and role, when they changed since the last Ready. Volatile; nothing to persist.
  std::optional<SoftState> soft_state;

  // Term, vote and commit, when they changed. Must be durable before `messages` are sent: a
  // vote or a term must never be forgotten after another node heard about it.
  std::optional<HardState> hard_state;

  // A snapshot received from the leader. Persist it (replacing the whole log) before
  // `entries`, before sending `messages`, and apply it to the state machine before
  // `committed_entries` of later Readys (this Ready never has committed entries when it has a
  // snapshot).
  std::optional<Snapshot> snapshot;

  // Log entries to append durably (overwriting any existing suffix from entries[0].index on)
  // before sending `messages`: acknowledgements in `messages` promise they are durable.
  std::vector<Entry> entries;

  // Entries known committed, to apply in order. They may include entries from `entries` of
  // this same Ready, so apply only after persisting those.
  std::vector<Entry> committed_entries;

  // Messages a leader may send before (or while) persisting this Ready: kApp, kHeartbeat,
  // kSnap and kTimeoutNow of a term that is already durable. The leader does not count its own
  // unpersisted entries towards commit (it acknowledges them to itself in Advance), so
  // replicating them early is safe (dissertation §10.2.1), and the commit index they carry is
  // backed by a durable quorum. Sending them after persisting is also correct.
  std::vector<Message> early_messages;

  // Everything else: send only after `snapshot`, `entries` and `hard_state` are durable.
  std::vector<Message> messages;

  // Results of ReadIndex requests: serve each read once the state machine applied its index.
  std::vector<ReadState> read_states;

  // Whether persisting needs an fsync (entries, term or vote changed, or a snapshot). A
  // commit-only hard state change may be written lazily: commit is recoverable from peers.
  bool must_sync = false;
};

class RawNode {
 public:
  // Validates `config` and restores the node from `storage` (hard state, membership of the last
  // snapshot, log). `storage` must outlive the node.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RawNode>> Create(const Config& config,
                                                                       const Storage* storage);

  // Starts a brand-new cluster member: writes the initial membership as committed conf change
  // entries (indexes 1..n, term 1). Only on empty storage; nodes joining an existing cluster
  // start empty instead and learn everything from the leader.
  [[nodiscard]] absl::Status Bootstrap(const std::vector<uint64_t>& voters);

  // Advances logical time by one tick (election and heartbeat timeouts count ticks).
  void Tick();
  // Campaigns now instead of waiting for the election timeout.
  [[nodiscard]] absl::Status Campaign();

  // Proposes data to be appended to the log. Unavailable when there is no leader or a leader
  // transfer is in progress; ResourceExhausted when the uncommitted tail is full. Success does
  // not mean the entry will commit: the application matches committed entries to proposals.
  [[nodiscard]] absl::Status Propose(std::string data);
  // Proposes a membership change. Refused (FailedPrecondition) at the leader while a previous
  // change is not yet applied there, or before the leader applied its first entry of the term.
  [[nodiscard]] absl::Status ProposeConfChange(const ConfChange& cc);
  // Call when applying a committed conf change entry. Returns the membership as of that entry
  // (what a snapshot taken at that index must record), or an error (membership unchanged) for
  // a change that is invalid on top of the previous one; every node sees the same sequence, so
  // all agree. Raft itself already uses the new membership: it takes effect when the entry is
  // appended to the log (README.md explains why).
  [[nodiscard]] absl::StatusOr<ConfState> ApplyConfChange(const ConfChange& cc);

  // Handles a message from a peer. InvalidArgument for malformed or local-only messages;
  // NotFound for responses from non-members; forwarded requests may return the same errors as
  // the local methods (the transport can ignore them).
  [[nodiscard]] absl::Status Step(const Message& m);

  // Requests a linearizable read: a ReadState with `context` appears in a later Ready once the
  // leader confirmed its leadership; serve the read when applied >= its index. Requests are
  // dropped without an answer when leadership changes; callers retry on a timeout.
  [[nodiscard]] absl::Status ReadIndex(std::string context);
  // Asks the leader to hand leadership to `transferee` (a voter).
  [[nodiscard]] absl::Status TransferLeader(uint64_t transferee);
  // Transport feedback.
  void ReportUnreachable(uint64_t id);
  void ReportSnapshot(uint64_t id, bool ok);

  bool HasReady() const;
  Ready GetReady();
  void Advance(const Ready& rd);

  const Raft& raft() const { return raft_; }
  // The membership in effect: that of the last conf change entry in the log.
  ConfState conf_state() const { return raft_.tracker().GetConfState(); }
  // The membership as of the applied index.
  ConfState applied_conf_state() const { return raft_.applied_conf_state(); }

 private:
  RawNode(const Config& config, const Storage* storage);

  Raft raft_;
  SoftState prev_soft_;
  HardState prev_hard_;  // as of the last Advance: what the application has made durable
  bool ready_outstanding_ = false;
};

// Checks a message from the network before it reaches the state machine.
[[nodiscard]] absl::Status ValidatePeerMessage(const Message& m, uint64_t self);

}  // namespace meridian::raft
