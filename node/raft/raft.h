// The raft consensus state machine (Ongaro & Ousterhout, "In Search of an Understandable
// Consensus Algorithm", and Ongaro's dissertation for PreVote, CheckQuorum, leader transfer and
// ReadIndex). Pure: no threads, clocks, I/O or randomness of its own; time advances through
// Tick(), randomness comes from Config::random_seed, and every effect leaves through
// RawNode::GetReady() (rawnode.h, which is the interface applications use).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/raft/confchange.h"
#include "node/raft/log.h"
#include "node/raft/storage.h"
#include "node/raft/tracker.h"
#include "node/raft/types.h"

namespace meridian::raft {

struct Config {
  uint64_t id = kNone;  // this node; non-zero
  // Ticks without hearing from a leader before a follower campaigns; the actual timeout is
  // drawn uniformly from [election_ticks, 2*election_ticks) after every reset.
  uint32_t election_ticks = 10;
  uint32_t heartbeat_ticks = 1;  // leader heartbeat interval; < election_ticks
  // Last index the application applied before this restart (0 for a new node).
  uint64_t applied = 0;
  uint64_t max_size_per_msg_bytes = 1 << 20;  // entries per kApp (at least one is always sent)
  uint64_t max_committed_size_per_ready_bytes = 64 << 20;
  // Proposals are refused (ResourceExhausted) once the leader's uncommitted tail holds this much
  // payload; a single proposal above it is still accepted into an empty tail.
  uint64_t max_uncommitted_entries_size_bytes = 64 << 20;
  size_t max_inflight_msgs = 256;   // appends in flight per follower in replicate mode
  uint64_t max_inflight_bytes = 0;  // payload in flight per follower; 0 = only the count bounds
  bool check_quorum = true;
  bool pre_vote = true;
  // ReadIndex requests a leader holds at once (waiting for its first commit or a heartbeat
  // round); more are refused with ResourceExhausted.
  size_t max_pending_read_requests = 4096;
  uint64_t random_seed = 0;  // mixed with id; give each node its own stream

  [[nodiscard]] absl::Status Validate() const;
};

class Raft {
 public:
  // Restores term, vote, commit and membership from storage; aborts on an invalid config (the
  // caller validates it first, see RawNode::Create).
  Raft(const Config& config, const Storage* storage);

  // Handles a message from a peer or a local request. Errors are for local requests only
  // (proposal dropped, too many pending requests); peer messages are never an error.
  [[nodiscard]] absl::Status Step(const Message& m);
  void Tick();

  // See RawNode.
  [[nodiscard]] absl::Status Bootstrap(const std::vector<uint64_t>& voters);
  // The application applied a conf change entry: returns the membership as of that entry (for
  // the application's snapshots). Raft itself switched to it when the entry was appended.
  [[nodiscard]] absl::StatusOr<ConfState> ApplyConfChange(const ConfChange& cc);
  // The application applied a snapshot (whose membership it now has).
  void OnSnapshotApplied(const Snapshot& snapshot);
  ConfState applied_conf_state() const;

  // The application made entries up to (index, term) durable.
  void OnPersisted(uint64_t index, uint64_t term);
  void OnSnapshotPersisted(uint64_t index);
  // The application applied entries up to `index` (`payload_bytes` of payload).
  void OnApplied(uint64_t index, uint64_t payload_bytes);

  std::vector<Message> TakeMessages();
  std::vector<ReadState> TakeReadStates();
  bool HasPendingOutput() const {
    return !msgs_.empty() || !read_states_.empty() || ReadRoundDue();
  }

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t vote() const { return vote_; }
  uint64_t lead() const { return lead_; }
  Role role() const { return role_; }
  bool is_learner() const { return is_learner_; }
  uint64_t lead_transferee() const { return lead_transferee_; }
  uint64_t pending_conf_index() const { return pending_conf_index_; }
  uint32_t election_elapsed() const { return election_elapsed_; }
  uint32_t randomized_election_timeout() const { return randomized_election_timeout_; }
  size_t pending_read_requests() const { return reads_.size() + deferred_reads_.size(); }
  const RaftLog& log() const { return log_; }
  RaftLog& mutable_log() { return log_; }
  const ProgressTracker& tracker() const { return tracker_; }
  const Config& config() const { return config_; }
  SoftState soft_state() const { return SoftState{lead_, role_}; }
  HardState hard_state() const { return HardState{term_, vote_, log_.committed()}; }
  // Multi-line dump for tests and failure messages.
  std::string DebugString() const;

 private:
  enum class CampaignType { kPreElection, kElection, kTransfer };

  // A ReadIndex request waiting for a heartbeat round to confirm leadership.
  struct PendingRead {
    uint64_t index = 0;     // commit index when the request arrived
    uint64_t from = kNone;  // kNone or id_: local
    std::string context;
    uint64_t round = 0;  // 0: not yet part of a round
  };

  void Send(Message m);
  void Reset(uint64_t term);
  void BecomeFollower(uint64_t term, uint64_t lead);
  void BecomeCandidate();
  void BecomePreCandidate();
  void BecomeLeader();
  void ResetRandomizedElectionTimeout();
  uint64_t NextRandom();

  void TickElection();
  void TickHeartbeat();

  bool Promotable() const;
  void Hup(CampaignType type);
  void Campaign(CampaignType type);
  ProgressTracker::Tally Poll(uint64_t id, bool granted);
  void HandleVoteRequest(const Message& m);

  [[nodiscard]] absl::Status StepLeader(const Message& m);
  [[nodiscard]] absl::Status StepCandidate(const Message& m);
  [[nodiscard]] absl::Status StepFollower(const Message& m);

  [[nodiscard]] absl::Status ProposeAsLeader(const Message& m);
  bool AppendEntries(std::vector<Entry> entries);
  bool MaybeCommit();
  void OnCommitAdvanced();
  void BcastAppend();
  void SendAppend(uint64_t to) { MaybeSendAppend(to, /*send_if_empty=*/true); }
  bool MaybeSendAppend(uint64_t to, bool send_if_empty);
  bool MaybeSendSnapshot(uint64_t to, Progress& pr);
  void BcastHeartbeat();
  void SendTimeoutNow(uint64_t to);
  void AbortLeaderTransfer() { lead_transferee_ = kNone; }
  void HandleAppResp(const Message& m, Progress& pr);
  void HandleHeartbeatResp(const Message& m, Progress& pr);
  void HandleTransferLeader(const Message& m, Progress& pr);

  void HandleAppend(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(const Message& m);
  bool Restore(const Snapshot& snapshot);

  // Membership takes effect when a conf change entry is appended to the log (dissertation
  // §4.1), and is rolled back if the entry is truncated. conf_history_ holds the configuration
  // after each conf change entry in the log, base_conf_ the one before the first of them.
  struct ConfPoint {
    uint64_t index;
    TrackerConfig config;
  };
  const TrackerConfig& LogConfig() const {
    return conf_history_.empty() ? base_conf_ : conf_history_.back().config;
  }
  // Entries from `first_written` on were (re)written: recompute the membership from there.
  void OnLogWritten(uint64_t first_written);
  void ScanConfChanges(uint64_t lo, uint64_t hi);
  void SwitchToConfig(const TrackerConfig& config);
  void MaybeStepDownAfterRemoval();

  // ReadIndex (§6.4 of the dissertation), batched: every request that arrives before the next
  // Ready is collected shares one heartbeat round; at most one round is in flight, and requests
  // arriving meanwhile join the next round, which starts once the current one is confirmed.
  [[nodiscard]] absl::Status HandleReadRequest(const Message& m);
  void MaybeStartReadRound();
  void StartReadRound();
  bool ReadRoundDue() const;
  void ConfirmReads();
  void RespondRead(uint64_t from, const std::string& context, uint64_t index);
  void ReleaseDeferredReads();
  bool CommittedEntryInCurrentTerm() const;

  const uint64_t id_;
  const Config config_;
  RaftLog log_;
  ProgressTracker tracker_;
  TrackerConfig base_conf_;
  std::vector<ConfPoint> conf_history_;
  TrackerConfig applied_conf_;  // as of the application's applied index

  uint64_t term_ = 0;
  uint64_t vote_ = kNone;
  uint64_t lead_ = kNone;
  Role role_ = Role::kFollower;
  bool is_learner_ = false;

  uint32_t election_elapsed_ = 0;  // leader: ticks since the last CheckQuorum round
  uint32_t heartbeat_elapsed_ = 0;
  uint32_t randomized_election_timeout_ = 0;
  uint64_t rng_state_;

  uint64_t lead_transferee_ = kNone;
  // Index of the last conf change the leader appended; no new change is proposed until the
  // application has applied it (one change at a time).
  uint64_t pending_conf_index_ = 0;
  uint64_t uncommitted_size_bytes_ = 0;

  std::deque<PendingRead> reads_;
  std::vector<Message> deferred_reads_;  // waiting for the first commit of this term
  uint64_t read_round_started_ = 0;
  uint64_t read_round_confirmed_ = 0;
  bool read_round_wanted_ = false;  // start a round when the next Ready is collected

  std::vector<Message> msgs_;
  std::vector<ReadState> read_states_;
};

}  // namespace meridian::raft
