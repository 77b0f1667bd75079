// Plain message and log types of the raft core. They are ordinary C++ structs (no protobuf) so
// the core depends on nothing but absl; the peer transport maps them to its wire format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace meridian::raft {

// Node ids are non-zero; 0 means "nobody" (no leader known, no vote cast).
inline constexpr uint64_t kNone = 0;

enum class EntryType : uint8_t {
  kNormal = 0,
  kConfChange = 1,  // data is EncodeConfChange(...) (confchange.h)
};

struct Entry {
  uint64_t index = 0;
  uint64_t term = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
  friend bool operator==(const Entry&, const Entry&) = default;
};

// What must be durable before any message that depends on it leaves the node.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = kNone;
  uint64_t commit = 0;
  friend bool operator==(const HardState&, const HardState&) = default;
};

// The membership as of some log index. Both lists are sorted and disjoint.
struct ConfState {
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  friend bool operator==(const ConfState&, const ConfState&) = default;
};

struct SnapshotMetadata {
  uint64_t index = 0;  // last log index the snapshot covers
  uint64_t term = 0;   // term of that entry
  ConfState conf_state;
  friend bool operator==(const SnapshotMetadata&, const SnapshotMetadata&) = default;
};

struct Snapshot {
  SnapshotMetadata metadata;
  std::string data;  // the application's state machine image; opaque to raft
  bool empty() const { return metadata.index == 0; }
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

enum class MessageType : uint8_t {
  // Local only (never valid from the network).
  kHup,          // start an election
  kBeat,         // leader: send heartbeats
  kUnreachable,  // transport could not reach `from`
  kSnapStatus,   // transport finished (reject=false) or failed (reject=true) sending a snapshot
  kCheckQuorum,  // leader: step down unless a quorum was recently active
  // Local or forwarded by a follower to its leader (term 0 when forwarded).
  kProp,
  kReadIndex,
  kTransferLeader,
  // Peer messages.
  kApp,
  kAppResp,
  kVote,
  kVoteResp,
  kPreVote,
  kPreVoteResp,
  kSnap,
  kHeartbeat,
  kHeartbeatResp,
  kTimeoutNow,
  kReadIndexResp,
};

const char* MessageTypeName(MessageType type);
bool IsLocalMessage(MessageType type);

// One struct for every message type; the comment of each field says which types use it.
struct Message {
  MessageType type = MessageType::kApp;
  uint64_t to = kNone;
  uint64_t from = kNone;
  uint64_t term = 0;  // sender's term; 0 for local and forwarded kProp/kReadIndex
  // kApp: term of the entry at `index` (the entry preceding `entries`).
  // kVote/kPreVote: term of the candidate's last entry.
  // kAppResp with reject: term of the follower's entry at `reject_hint`.
  uint64_t log_term = 0;
  // kApp: index preceding `entries`. kAppResp: last index the follower now matches (accept) or
  // the rejected kApp's index (reject). kVote/kPreVote: candidate's last index.
  // kReadIndexResp: the read index. kTransferLeader: unused (`from` is the target).
  uint64_t index = 0;
  std::vector<Entry> entries;        // kApp, kProp
  uint64_t commit = 0;               // kApp, kHeartbeat
  std::optional<Snapshot> snapshot;  // kSnap
  bool reject = false;               // responses; kSnapStatus (failure)
  uint64_t reject_hint = 0;          // kAppResp with reject: follower's suggested probe index
  std::string context;               // kReadIndex, kReadIndexResp: the caller's request id
  // kHeartbeat/kHeartbeatResp: the leader's read-index round this heartbeat confirms.
  uint64_t read_round = 0;
  // kVote/kPreVote: the campaign was started by kTimeoutNow, so voters skip the leader lease.
  bool leader_transfer = false;
  friend bool operator==(const Message&, const Message&) = default;
};

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

// Volatile state worth telling the application about; never persisted.
struct SoftState {
  uint64_t leader = kNone;
  Role role = Role::kFollower;
  friend bool operator==(const SoftState&, const SoftState&) = default;
};

// A linearizable read may be served once the state machine has applied `index`.
struct ReadState {
  uint64_t index = 0;
  std::string context;
  friend bool operator==(const ReadState&, const ReadState&) = default;
};

// Byte size used for flow control and limits: the payload only (index/term are fixed cost).
inline uint64_t EntryPayloadSize(const Entry& e) { return e.data.size(); }
// Size used for message/Ready batching: payload plus a fixed per-entry overhead, so that empty
// entries still count against limits.
inline uint64_t EntrySize(const Entry& e) { return e.data.size() + 24; }

// Human-readable forms for tests, traces and check messages.
std::string DescribeEntry(const Entry& e);
std::string DescribeMessage(const Message& m);
std::string DescribeHardState(const HardState& hs);
std::string DescribeConfState(const ConfState& cs);

}  // namespace meridian::raft
