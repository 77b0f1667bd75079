#include "node/raft/raft.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/raft/check.h"

namespace meridian::raft {

absl::Status Config::Validate() const {
  if (id == kNone) return absl::InvalidArgumentError("id must not be 0");
  if (heartbeat_ticks == 0) return absl::InvalidArgumentError("heartbeat_ticks must be > 0");
  if (election_ticks <= heartbeat_ticks) {
    return absl::InvalidArgumentError(absl::StrCat("election_ticks (", election_ticks,
                                                   ") must be greater than heartbeat_ticks (",
                                                   heartbeat_ticks, ")"));
  }
  if (max_inflight_msgs == 0) return absl::InvalidArgumentError("max_inflight_msgs must be > 0");
  if (max_size_per_msg_bytes == 0) {
    return absl::InvalidArgumentError("max_size_per_msg_bytes must be > 0");
  }
  if (max_committed_size_per_ready_bytes == 0) {
    return absl::InvalidArgumentError("max_committed_size_per_ready_bytes must be > 0");
  }
  if (max_uncommitted_entries_size_bytes == 0) {
    return absl::InvalidArgumentError("max_uncommitted_entries_size_bytes must be > 0");
  }
  if (max_pending_read_requests == 0) {
    return absl::InvalidArgumentError("max_pending_read_requests must be > 0");
  }
  return absl::OkStatus();
}

Raft::Raft(const Config& config, const Storage* storage)
    : id_(config.id),
      config_(config),
      log_(storage, config.max_committed_size_per_ready_bytes),
      tracker_(config.max_inflight_msgs, config.max_inflight_bytes),
      rng_state_(config.random_seed ^ (config.id * 0x9E3779B97F4A7C15ull)) {
  absl::Status valid = config.Validate();
  RAFT_CHECK(valid.ok()) << "invalid config: " << valid;
  InitialState st = storage->GetInitialState();
  absl::StatusOr<TrackerConfig> cfg = ConfigFromConfState(st.conf_state);
  RAFT_CHECK(cfg.ok()) << "invalid conf state in storage " << DescribeConfState(st.conf_state)
                       << ": " << cfg.status();
  base_conf_ = *cfg;
  ScanConfChanges(log_.FirstIndex(), log_.LastIndex() + 1);
  tracker_.SetConfig(LogConfig(), log_.LastIndex() + 1);
  const Progress* self = tracker_.Get(id_);
  is_learner_ = self != nullptr && self->is_learner;

  const HardState& hs = st.hard_state;
  if (hs != HardState{}) {
    RAFT_CHECK(hs.commit >= log_.committed() && hs.commit <= log_.LastIndex())
        << id_ << " state.commit " << hs.commit << " is out of range [" << log_.committed() << ", "
        << log_.LastIndex() << "]";
    log_.CommitTo(hs.commit);
    term_ = hs.term;
    vote_ = hs.vote;
  }
  if (config.applied > 0) log_.AppliedTo(config.applied);
  applied_conf_ = base_conf_;
  for (const ConfPoint& p : conf_history_) {
    if (p.index <= log_.applied()) applied_conf_ = p.config;
  }
  BecomeFollower(term_, kNone);
}

void Raft::ScanConfChanges(uint64_t lo, uint64_t hi) {
  std::vector<Entry> page;
  while (lo < hi) {
    absl::Status s = log_.Slice(lo, hi, config_.max_committed_size_per_ready_bytes, &page);
    RAFT_CHECK(s.ok()) << id_ << " cannot scan entries [" << lo << ", " << hi << "): " << s;
    for (const Entry& e : page) {
      if (e.type != EntryType::kConfChange) continue;
      // A change that does not decode or apply is a no-op on every node alike (they all see the
      // same entry on top of the same configuration).
      absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
      if (!cc.ok()) continue;
      absl::StatusOr<TrackerConfig> next = raft::ApplyConfChange(LogConfig(), *cc);
      if (!next.ok()) continue;
      conf_history_.push_back(ConfPoint{e.index, std::move(*next)});
    }
    lo += page.size();
  }
}

void Raft::OnLogWritten(uint64_t first_written) {
  if (first_written == 0) return;
  while (!conf_history_.empty() && conf_history_.back().index >= first_written) {
    conf_history_.pop_back();  // truncated
  }
  ScanConfChanges(first_written, log_.LastIndex() + 1);
  if (!(LogConfig() == tracker_.config())) SwitchToConfig(LogConfig());
}

uint64_t Raft::NextRandom() {
  // splitmix64: small, fast and good enough to spread election timeouts.
  uint64_t z = (rng_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void Raft::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      config_.election_ticks + static_cast<uint32_t>(NextRandom() % config_.election_ticks);
}

void Raft::Send(Message m) {
  if (m.from == kNone) m.from = id_;
  switch (m.type) {
    case MessageType::kVote:
    case MessageType::kVoteResp:
    case MessageType::kPreVote:
    case MessageType::kPreVoteResp:
      // Votes carry the term of the election they are about, not necessarily ours: PreVote
      // requests are for term+1, and vote responses echo the request's term.
      RAFT_CHECK(m.term != 0) << "term should be set when sending " << MessageTypeName(m.type);
      break;
    case MessageType::kProp:
    case MessageType::kReadIndex:
      // Forwarded to the leader as if they were local requests there.
      m.term = 0;
      break;
    default:
      RAFT_CHECK(m.term == 0) << "term should not be set when sending " << MessageTypeName(m.type)
                              << " (was " << m.term << ")";
      m.term = term_;
  }
  msgs_.push_back(std::move(m));
}

std::vector<Message> Raft::TakeMessages() {
  StartReadRound();
  return std::exchange(msgs_, {});
}
std::vector<ReadState> Raft::TakeReadStates() { return std::exchange(read_states_, {}); }

void Raft::Reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = kNone;
    // Acknowledgements queued in the old term could describe entries that a newer leader has
    // replaced before they were persisted; they are useless to anyone now, so drop them.
    std::erase_if(msgs_, [term](const Message& m) {
      return m.type == MessageType::kAppResp && m.term < term;
    });
  }
  lead_ = kNone;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  tracker_.ResetVotes();
  const uint64_t last = log_.LastIndex();
  for (auto& [id, pr] : tracker_.progress()) {
    const bool learner = pr.is_learner;
    pr = Progress(tracker_.max_inflight(), tracker_.max_inflight_bytes());
    pr.next = last + 1;
    pr.is_learner = learner;
    // The leader counts only its durable entries towards commit (they become durable in
    // OnPersisted), so that a commit index never outruns a durable quorum.
    if (id == id_) pr.match = log_.StableLastIndex();
  }
  pending_conf_index_ = 0;
  uncommitted_size_bytes_ = 0;
  reads_.clear();
  deferred_reads_.clear();
  read_round_started_ = 0;
  read_round_confirmed_ = 0;
  read_round_wanted_ = false;
}

void Raft::BecomeFollower(uint64_t term, uint64_t lead) {
  Reset(term);
  lead_ = lead;
  role_ = Role::kFollower;
}

void Raft::BecomeCandidate() {
  RAFT_CHECK(role_ != Role::kLeader) << id_ << " invalid transition [leader -> candidate]";
  Reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Raft::BecomePreCandidate() {
  RAFT_CHECK(role_ != Role::kLeader) << id_ << " invalid transition [leader -> pre-candidate]";
  // Neither the term nor the vote changes: a pre-election disturbs nobody if it fails.
  tracker_.ResetVotes();
  lead_ = kNone;
  role_ = Role::kPreCandidate;
}

void Raft::BecomeLeader() {
  RAFT_CHECK(role_ != Role::kFollower) << id_ << " invalid transition [follower -> leader]";
  Reset(term_);
  lead_ = id_;
  role_ = Role::kLeader;
  if (Progress* self = tracker_.Get(id_)) {
    self->BecomeReplicate();
    self->recent_active = true;
  }
  bool ok = AppendEntries({Entry{}});
  RAFT_CHECK(ok) << id_ << " empty entry was dropped";
  // Refuse conf changes until everything up to and including the empty entry of this term is
  // applied: any change already in the log is then applied, and the new leader has committed an
  // entry of its own term first, which one-at-a-time membership changes need (README.md).
  pending_conf_index_ = log_.LastIndex();
}

void Raft::Tick() {
  if (role_ == Role::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void Raft::TickElection() {
  ++election_elapsed_;
  if (Promotable() && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    Message hup;
    hup.type = MessageType::kHup;
    hup.from = id_;
    (void)Step(hup);
  }
}

void Raft::TickHeartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    if (config_.check_quorum) {
      Message m;
      m.type = MessageType::kCheckQuorum;
      m.from = id_;
      (void)Step(m);
    }
    // A transfer that did not finish within an election timeout is abandoned (the target is
    // probably down), so the leader accepts proposals again.
    if (role_ == Role::kLeader && lead_transferee_ != kNone) AbortLeaderTransfer();
  }
  if (role_ != Role::kLeader) return;
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    BcastHeartbeat();
  }
}

bool Raft::Promotable() const {
  const Progress* pr = tracker_.Get(id_);
  return pr != nullptr && !pr->is_learner && !log_.UnstableSnapshot().has_value();
}

void Raft::Hup(CampaignType type) {
  if (role_ == Role::kLeader) return;
  if (!Promotable()) return;
  Campaign(type);
}

ProgressTracker::Tally Raft::Poll(uint64_t id, bool granted) {
  tracker_.RecordVote(id, granted);
  return tracker_.TallyVotes();
}

void Raft::Campaign(CampaignType type) {
  uint64_t term;
  MessageType vote_type;
  if (type == CampaignType::kPreElection) {
    BecomePreCandidate();
    vote_type = MessageType::kPreVote;
    term = term_ + 1;  // a pre-vote asks "would you vote for me in the next term?"
  } else {
    BecomeCandidate();
    vote_type = MessageType::kVote;
    term = term_;
  }
  if (Poll(id_, true).result == VoteResult::kWon) {
    // A single-voter cluster wins at once.
    if (type == CampaignType::kPreElection) {
      Campaign(CampaignType::kElection);
    } else {
      BecomeLeader();
      BcastAppend();
    }
    return;
  }
  for (uint64_t id : tracker_.config().voters.ids()) {
    if (id == id_) continue;
    Message m;
    m.type = vote_type;
    m.to = id;
    m.term = term;
    m.index = log_.LastIndex();
    m.log_term = log_.LastTerm();
    m.leader_transfer = type == CampaignType::kTransfer;
    Send(std::move(m));
  }
}

absl::Status Raft::Step(const Message& m) {
  if (m.term == 0) {
    // Local message, or a proposal/read forwarded by a follower.
  } else if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      // Leader lease (§4.2.3 of the dissertation): while we hear from a leader, a candidate
      // is most likely a node that was partitioned away; ignoring it keeps it from disrupting
      // the cluster. A transfer's campaign was asked for by the leader itself.
      const bool in_lease =
          config_.check_quorum && lead_ != kNone && election_elapsed_ < config_.election_ticks;
      if (in_lease && !m.leader_transfer) return absl::OkStatus();
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote never changes our term.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // Granted pre-votes carry the future term we asked about; we move to it only once a
      // quorum grants.
    } else {
      const bool from_leader = m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
                               m.type == MessageType::kSnap;
      BecomeFollower(m.term, from_leader ? m.from : kNone);
    }
  } else if (m.term < term_) {
    if ((config_.check_quorum || config_.pre_vote) &&
        (m.type == MessageType::kHeartbeat || m.type == MessageType::kApp)) {
      // A stale leader. With CheckQuorum/PreVote we do not advance our term on votes we
      // ignore, so a node that got ahead during a partition must tell the old leader about
      // its term this way, or neither could make progress.
      Message resp;
      resp.type = MessageType::kAppResp;
      resp.to = m.from;
      Send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      // Tell the pre-candidate our term so it can catch up.
      Message resp;
      resp.type = MessageType::kPreVoteResp;
      resp.to = m.from;
      resp.term = term_;
      resp.reject = true;
      Send(std::move(resp));
    }
    return absl::OkStatus();
  }

  switch (m.type) {
    case MessageType::kHup:
      Hup(config_.pre_vote ? CampaignType::kPreElection : CampaignType::kElection);
      return absl::OkStatus();
    case MessageType::kVote:
    case MessageType::kPreVote:
      HandleVoteRequest(m);
      return absl::OkStatus();
    default:
      break;
  }
  switch (role_) {
    case Role::kLeader:
      return StepLeader(m);
    case Role::kCandidate:
    case Role::kPreCandidate:
      return StepCandidate(m);
    case Role::kFollower:
      return StepFollower(m);
  }
  return absl::OkStatus();
}

void Raft::HandleVoteRequest(const Message& m) {
  // We can vote if this repeats the vote we cast, if we have neither voted nor seen a leader in
  // this term, or if it is a pre-vote for a later term.
  const bool can_vote = vote_ == m.from || (vote_ == kNone && lead_ == kNone) ||
                        (m.type == MessageType::kPreVote && m.term > term_);
  const MessageType resp_type =
      m.type == MessageType::kVote ? MessageType::kVoteResp : MessageType::kPreVoteResp;
  Message resp;
  resp.type = resp_type;
  resp.to = m.from;
  // Learners vote too: one may have been promoted without knowing it yet, and the candidate
  // asking knows better.
  if (can_vote && log_.IsUpToDate(m.index, m.log_term)) {
    // Echo the request's term: for a pre-vote it is ahead of ours, and the candidate ignores
    // responses from older terms.
    resp.term = m.term;
    Send(std::move(resp));
    if (m.type == MessageType::kVote) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.term = term_;
    resp.reject = true;
    Send(std::move(resp));
  }
}

absl::Status Raft::StepLeader(const Message& m) {
  switch (m.type) {
    case MessageType::kBeat:
      BcastHeartbeat();
      return absl::OkStatus();
    case MessageType::kCheckQuorum:
      if (!tracker_.QuorumActive()) {
        BecomeFollower(term_, kNone);
        return absl::OkStatus();
      }
      for (auto& [id, pr] : tracker_.progress()) {
        if (id != id_) pr.recent_active = false;
      }
      return absl::OkStatus();
    case MessageType::kProp:
      return ProposeAsLeader(m);
    case MessageType::kReadIndex:
      if (tracker_.IsSingleVoter() && tracker_.IsVoter(id_)) {
        RespondRead(m.from, m.context, log_.committed());
        return absl::OkStatus();
      }
      // Until the leader commits an entry of its own term it does not know the commit index
      // (entries of earlier terms may be committed without its knowledge), §6.4.
      if (!CommittedEntryInCurrentTerm()) {
        if (pending_read_requests() >= config_.max_pending_read_requests) {
          return absl::ResourceExhaustedError("too many pending read requests");
        }
        deferred_reads_.push_back(m);
        return absl::OkStatus();
      }
      return HandleReadRequest(m);
    default:
      break;
  }

  Progress* pr = tracker_.Get(m.from);
  if (pr == nullptr) return absl::OkStatus();  // not (or no longer) a member
  switch (m.type) {
    case MessageType::kAppResp:
      HandleAppResp(m, *pr);
      break;
    case MessageType::kHeartbeatResp:
      HandleHeartbeatResp(m, *pr);
      break;
    case MessageType::kSnapStatus:
      if (pr->state != ProgressState::kSnapshot) break;
      if (m.reject) pr->pending_snapshot = 0;
      pr->BecomeProbe();
      // Success: wait for the follower's kAppResp before probing. Failure: wait for the next
      // heartbeat response before trying again.
      pr->probe_sent = true;
      break;
    case MessageType::kUnreachable:
      // Appends in flight were probably lost; go back to probing.
      if (pr->state == ProgressState::kReplicate) pr->BecomeProbe();
      break;
    case MessageType::kTransferLeader:
      HandleTransferLeader(m, *pr);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

absl::Status Raft::ProposeAsLeader(const Message& m) {
  RAFT_CHECK(!m.entries.empty()) << id_ << " stepped empty kProp";
  if (tracker_.Get(id_) == nullptr) {
    return absl::UnavailableError("proposal dropped: this leader was removed from the cluster");
  }
  if (lead_transferee_ != kNone) {
    return absl::UnavailableError(absl::StrCat("proposal dropped: leadership transfer to ",
                                               lead_transferee_, " in progress"));
  }
  uint64_t conf_index = 0;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    if (m.entries[i].type != EntryType::kConfChange) continue;
    if (pending_conf_index_ > log_.applied() || conf_index != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("conf change refused: possible unapplied conf change at index ",
                       pending_conf_index_, " (applied to ", log_.applied(), ")"));
    }
    absl::StatusOr<ConfChange> cc = DecodeConfChange(m.entries[i].data);
    if (!cc.ok()) return cc.status();
    absl::StatusOr<TrackerConfig> next = raft::ApplyConfChange(LogConfig(), *cc);
    if (!next.ok()) return next.status();
    conf_index = log_.LastIndex() + i + 1;
  }
  std::vector<Entry> entries = m.entries;
  if (!AppendEntries(std::move(entries))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("proposal dropped: uncommitted log tail would exceed ",
                     config_.max_uncommitted_entries_size_bytes, " bytes"));
  }
  if (conf_index != 0) pending_conf_index_ = conf_index;
  BcastAppend();
  return absl::OkStatus();
}

bool Raft::AppendEntries(std::vector<Entry> entries) {
  const uint64_t last = log_.LastIndex();
  uint64_t size = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    entries[i].term = term_;
    entries[i].index = last + 1 + i;
    size += EntryPayloadSize(entries[i]);
  }
  // An empty tail accepts any single proposal so that a large one is not refused forever.
  if (uncommitted_size_bytes_ > 0 && size > 0 &&
      uncommitted_size_bytes_ + size > config_.max_uncommitted_entries_size_bytes) {
    return false;
  }
  uncommitted_size_bytes_ += size;
  log_.Append(entries);
  OnLogWritten(entries.front().index);
  // No self-acknowledgement here: the leader's own entries count towards commit once they are
  // durable (OnPersisted).
  return true;
}

bool Raft::MaybeCommit() { return log_.MaybeCommit(tracker_.Committed(), term_); }

void Raft::OnCommitAdvanced() {
  ReleaseDeferredReads();
  BcastAppend();
  MaybeStepDownAfterRemoval();
}

void Raft::BcastAppend() {
  for (auto& [id, pr] : tracker_.progress()) {
    if (id != id_) SendAppend(id);
  }
}

bool Raft::MaybeSendAppend(uint64_t to, bool send_if_empty) {
  Progress* pr = tracker_.Get(to);
  RAFT_CHECK(pr != nullptr) << "no progress for " << to;
  if (pr->IsPaused()) return false;
  const uint64_t prev_index = pr->next - 1;
  absl::StatusOr<uint64_t> prev_term = log_.Term(prev_index);
  std::vector<Entry> entries;
  absl::Status es;
  if (prev_term.ok()) es = log_.EntriesFrom(pr->next, config_.max_size_per_msg_bytes, &entries);
  if (!prev_term.ok() || !es.ok()) {
    absl::Status err = prev_term.ok() ? es : prev_term.status();
    RAFT_CHECK(IsCompacted(err)) << id_ << " cannot send append to " << to << " at next "
                                 << pr->next << " (last index " << log_.LastIndex() << "): " << err;
    return MaybeSendSnapshot(to, *pr);
  }
  if (entries.empty() && !send_if_empty) return false;
  uint64_t bytes = 0;
  for (const Entry& e : entries) bytes += EntryPayloadSize(e);
  pr->SentEntries(entries.size(), bytes, entries.empty() ? prev_index : entries.back().index);
  Message m;
  m.type = MessageType::kApp;
  m.to = to;
  m.index = prev_index;
  m.log_term = *prev_term;
  m.entries = std::move(entries);
  m.commit = log_.committed();
  Send(std::move(m));
  return true;
}

bool Raft::MaybeSendSnapshot(uint64_t to, Progress& pr) {
  // Snapshots are expensive; send one only to a follower known to be alive.
  if (!pr.recent_active) return false;
  absl::StatusOr<Snapshot> snap = log_.GetSnapshot();
  if (!snap.ok()) {
    RAFT_CHECK(IsSnapshotTemporarilyUnavailable(snap.status()))
        << id_ << " failed to get snapshot for " << to << ": " << snap.status();
    return false;
  }
  RAFT_CHECK(!snap->empty()) << id_ << " needs a non-empty snapshot to catch up " << to << " (next "
                             << pr.next << ", first index " << log_.FirstIndex() << ")";
  // A follower refuses a snapshot whose membership excludes it (it was added after the
  // snapshot was taken); wait until the application takes a newer one instead of sending it
  // again and again.
  const ConfState& cs = snap->metadata.conf_state;
  if (std::count(cs.voters.begin(), cs.voters.end(), to) == 0 &&
      std::count(cs.learners.begin(), cs.learners.end(), to) == 0) {
    return false;
  }
  pr.BecomeSnapshot(snap->metadata.index);
  Message m;
  m.type = MessageType::kSnap;
  m.to = to;
  m.snapshot = std::move(*snap);
  Send(std::move(m));
  return true;
}

void Raft::BcastHeartbeat() {
  for (const auto& [id, pr] : tracker_.progress()) {
    if (id == id_) continue;
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = id;
    // A follower's log may diverge beyond match, so it must not commit past it.
    m.commit = std::min(pr.match, log_.committed());
    m.read_round = read_round_started_;
    Send(std::move(m));
  }
}

void Raft::SendTimeoutNow(uint64_t to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  Send(std::move(m));
}

void Raft::HandleAppResp(const Message& m, Progress& pr) {
  pr.recent_active = true;
  if (m.reject) {
    // Fast backtracking: the follower told us its term at reject_hint; every index of ours
    // whose term is above that cannot match, so skip to the last one whose term is not.
    uint64_t next_probe = m.reject_hint;
    if (m.log_term > 0) next_probe = log_.FindConflictByTerm(m.reject_hint, m.log_term).first;
    if (pr.MaybeDecrTo(m.index, next_probe)) {
      if (pr.state == ProgressState::kReplicate) pr.BecomeProbe();
      SendAppend(m.from);
    }
    return;
  }
  if (!pr.MaybeUpdate(m.index) && !(pr.match == m.index && pr.state == ProgressState::kProbe)) {
    return;
  }
  switch (pr.state) {
    case ProgressState::kProbe:
      pr.BecomeReplicate();
      break;
    case ProgressState::kSnapshot:
      if (pr.match + 1 >= log_.FirstIndex()) {
        // Caught up by the snapshot (or otherwise): resume from the log.
        pr.BecomeProbe();
        pr.BecomeReplicate();
      }
      break;
    case ProgressState::kReplicate:
      pr.inflights.FreeLE(m.index);
      break;
  }
  if (MaybeCommit()) {
    OnCommitAdvanced();
  }
  // Flow control may have opened up: send what we can, but no empty appends.
  while (MaybeSendAppend(m.from, /*send_if_empty=*/false)) {
  }
  if (m.from == lead_transferee_ && pr.match == log_.LastIndex()) SendTimeoutNow(m.from);
}

void Raft::HandleHeartbeatResp(const Message& m, Progress& pr) {
  pr.recent_active = true;
  pr.probe_sent = false;
  // The follower is alive but acknowledgements stopped: the appends filling the window may be
  // lost. Free one slot so the next append (which the follower rejects if it has a gap) gets
  // replication going again.
  if (pr.state == ProgressState::kReplicate && pr.inflights.Full()) pr.inflights.FreeFirstOne();
  if (pr.match < log_.LastIndex() || pr.state == ProgressState::kProbe) SendAppend(m.from);
  if (m.read_round > pr.read_round_acked) {
    pr.read_round_acked = m.read_round;
    ConfirmReads();
  }
}

void Raft::HandleTransferLeader(const Message& m, Progress& pr) {
  const uint64_t target = m.from;
  if (pr.is_learner) return;
  if (lead_transferee_ != kNone) {
    if (lead_transferee_ == target) return;  // already in progress
    AbortLeaderTransfer();
  }
  if (target == id_) return;
  // The transfer must finish within an election timeout (TickHeartbeat).
  election_elapsed_ = 0;
  lead_transferee_ = target;
  if (pr.match == log_.LastIndex()) {
    SendTimeoutNow(target);
  } else {
    SendAppend(target);
  }
}

absl::Status Raft::StepCandidate(const Message& m) {
  const MessageType my_resp =
      role_ == Role::kPreCandidate ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  switch (m.type) {
    case MessageType::kProp:
      return absl::UnavailableError("proposal dropped: no leader");
    case MessageType::kReadIndex:
      return absl::UnavailableError("read index dropped: no leader");
    case MessageType::kTransferLeader:
      return absl::UnavailableError("transfer dropped: no leader");
    case MessageType::kApp:
      BecomeFollower(m.term, m.from);  // a leader of our term exists
      HandleAppend(m);
      break;
    case MessageType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HandleHeartbeat(m);
      break;
    case MessageType::kSnap:
      BecomeFollower(m.term, m.from);
      HandleSnapshot(m);
      break;
    default:
      if (m.type != my_resp) break;
      switch (Poll(m.from, !m.reject).result) {
        case VoteResult::kWon:
          if (role_ == Role::kPreCandidate) {
            Campaign(CampaignType::kElection);
          } else {
            BecomeLeader();
            BcastAppend();
          }
          break;
        case VoteResult::kLost:
          // A rejection from a higher term already made us a follower at that term.
          BecomeFollower(term_, kNone);
          break;
        case VoteResult::kPending:
          break;
      }
  }
  return absl::OkStatus();
}

absl::Status Raft::StepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::kProp:
    case MessageType::kReadIndex:
    case MessageType::kTransferLeader: {
      if (lead_ == kNone) {
        return absl::UnavailableError(
            absl::StrCat(MessageTypeName(m.type), " dropped: no leader at term ", term_));
      }
      Message fwd = m;
      fwd.to = lead_;
      fwd.term = 0;
      Send(std::move(fwd));
      break;
    }
    case MessageType::kApp:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleAppend(m);
      break;
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleHeartbeat(m);
      break;
    case MessageType::kSnap:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleSnapshot(m);
      break;
    case MessageType::kTimeoutNow:
      // The leader asked us to take over: campaign now, skipping PreVote (the leader is
      // handing over, so there is nobody to protect).
      Hup(CampaignType::kTransfer);
      break;
    case MessageType::kReadIndexResp:
      read_states_.push_back(ReadState{m.index, m.context});
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

void Raft::HandleAppend(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (m.index < log_.committed()) {
    // Everything up to our commit index is in the leader's log too (leader completeness).
    resp.index = log_.committed();
    Send(std::move(resp));
    return;
  }
  uint64_t first_written = 0;
  if (std::optional<uint64_t> last_new =
          log_.MaybeAppend(m.index, m.log_term, m.commit, m.entries, &first_written)) {
    OnLogWritten(first_written);
    resp.index = *last_new;
    Send(std::move(resp));
    return;
  }
  // Reject, and tell the leader where to probe next: the last entry of ours at or before
  // m.index whose term is <= m.log_term (the leader's entries before m.index have terms <=
  // m.log_term, so no later index can match).
  const uint64_t hint_index = std::min(m.index, log_.LastIndex());
  auto [index, term] = log_.FindConflictByTerm(hint_index, m.log_term);
  resp.index = m.index;
  resp.reject = true;
  resp.reject_hint = index;
  resp.log_term = term;
  Send(std::move(resp));
}

void Raft::HandleHeartbeat(const Message& m) {
  log_.CommitTo(m.commit);
  Message resp;
  resp.type = MessageType::kHeartbeatResp;
  resp.to = m.from;
  resp.read_round = m.read_round;
  Send(std::move(resp));
}

void Raft::HandleSnapshot(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (m.snapshot && Restore(*m.snapshot)) {
    resp.index = log_.LastIndex();
  } else {
    resp.index = log_.committed();
  }
  Send(std::move(resp));
}

bool Raft::Restore(const Snapshot& snapshot) {
  const SnapshotMetadata& md = snapshot.metadata;
  if (md.index <= log_.committed()) return false;
  if (role_ != Role::kFollower) return false;  // only followers take snapshots
  const ConfState& cs = md.conf_state;
  const bool member = std::count(cs.voters.begin(), cs.voters.end(), id_) > 0 ||
                      std::count(cs.learners.begin(), cs.learners.end(), id_) > 0;
  if (!member) return false;  // a leader never sends us a snapshot that excludes us
  if (log_.MatchTerm(md.index, md.term)) {
    // We have the snapshot's last entry, so we have everything before it: just commit.
    log_.CommitTo(md.index);
    return false;
  }
  absl::StatusOr<TrackerConfig> cfg = ConfigFromConfState(cs);
  RAFT_CHECK(cfg.ok()) << id_ << " unable to restore config " << DescribeConfState(cs) << ": "
                       << cfg.status();
  log_.Restore(snapshot);
  base_conf_ = *cfg;
  conf_history_.clear();
  tracker_ = ProgressTracker(config_.max_inflight_msgs, config_.max_inflight_bytes);
  tracker_.SetConfig(*cfg, log_.LastIndex() + 1);
  const Progress* self = tracker_.Get(id_);
  is_learner_ = self != nullptr && self->is_learner;
  return true;
}

absl::Status Raft::Bootstrap(const std::vector<uint64_t>& voters) {
  if (voters.empty()) return absl::InvalidArgumentError("must provide at least one voter");
  if (log_.LastIndex() != 0 || term_ != 0) {
    return absl::FailedPreconditionError("can't bootstrap a non-empty storage");
  }
  // The initial membership is written as committed conf change entries at term 1, so that a
  // node added later learns it from the log like any other change.
  BecomeFollower(1, kNone);
  std::vector<Entry> entries;
  for (size_t i = 0; i < voters.size(); ++i) {
    ConfChange cc;
    cc.type = ConfChange::Type::kAddNode;
    cc.node_id = voters[i];
    entries.push_back(Entry{i + 1, 1, EntryType::kConfChange, EncodeConfChange(cc)});
  }
  log_.Append(entries);
  log_.CommitTo(entries.size());
  OnLogWritten(1);  // in effect now; the application applies them like any committed entries
  return absl::OkStatus();
}

absl::StatusOr<ConfState> Raft::ApplyConfChange(const ConfChange& cc) {
  absl::StatusOr<TrackerConfig> cfg = raft::ApplyConfChange(applied_conf_, cc);
  if (!cfg.ok()) return cfg.status();
  applied_conf_ = std::move(*cfg);
  return applied_conf_state();
}

void Raft::OnSnapshotApplied(const Snapshot& snapshot) {
  absl::StatusOr<TrackerConfig> cfg = ConfigFromConfState(snapshot.metadata.conf_state);
  RAFT_CHECK(cfg.ok()) << cfg.status();
  applied_conf_ = std::move(*cfg);
}

ConfState Raft::applied_conf_state() const {
  ConfState cs;
  cs.voters = applied_conf_.voters.ids();
  cs.learners.assign(applied_conf_.learners.begin(), applied_conf_.learners.end());
  return cs;
}

void Raft::SwitchToConfig(const TrackerConfig& config) {
  tracker_.SetConfig(config, log_.LastIndex() + 1);
  const Progress* self = tracker_.Get(id_);
  is_learner_ = self != nullptr && self->is_learner;
  if (role_ != Role::kLeader) return;
  if (lead_transferee_ != kNone && !tracker_.IsVoter(lead_transferee_)) AbortLeaderTransfer();
  // The quorum changed: commit and confirmed reads may move. (A leader switches only when it
  // appends a change itself, and broadcasts that entry right after, which also probes new
  // members.)
  if (MaybeCommit()) OnCommitAdvanced();
  if (role_ == Role::kLeader) ConfirmReads();
  MaybeStepDownAfterRemoval();
}

void Raft::MaybeStepDownAfterRemoval() {
  // A leader that appended its own removal keeps replicating (without counting itself) until
  // the change commits, then steps down (dissertation §4.2.2); the others elect a new leader.
  if (role_ != Role::kLeader || tracker_.IsVoter(id_)) return;
  if (!conf_history_.empty() && log_.committed() < conf_history_.back().index) return;
  BecomeFollower(term_, kNone);
}

void Raft::OnPersisted(uint64_t index, uint64_t term) {
  log_.StableTo(index, term);
  if (role_ != Role::kLeader) return;
  Progress* self = tracker_.Get(id_);
  if (self != nullptr && self->MaybeUpdate(log_.StableLastIndex()) && MaybeCommit()) {
    OnCommitAdvanced();
  }
}

void Raft::OnSnapshotPersisted(uint64_t index) { log_.StableSnapTo(index); }

void Raft::OnApplied(uint64_t index, uint64_t payload_bytes) {
  log_.AppliedTo(index);
  // Committed changes are never truncated: fold them into the base to bound the history.
  size_t fold = 0;
  while (fold < conf_history_.size() && conf_history_[fold].index <= log_.committed()) ++fold;
  if (fold > 0) {
    base_conf_ = conf_history_[fold - 1].config;
    conf_history_.erase(conf_history_.begin(),
                        conf_history_.begin() + static_cast<ptrdiff_t>(fold));
  }
  if (role_ == Role::kLeader) {
    uncommitted_size_bytes_ =
        payload_bytes >= uncommitted_size_bytes_ ? 0 : uncommitted_size_bytes_ - payload_bytes;
  }
}

bool Raft::CommittedEntryInCurrentTerm() const {
  return log_.TermOrZero(log_.committed()) == term_;
}

absl::Status Raft::HandleReadRequest(const Message& m) {
  if (tracker_.IsSingleVoter() && tracker_.IsVoter(id_)) {
    RespondRead(m.from, m.context, log_.committed());
    return absl::OkStatus();
  }
  if (pending_read_requests() >= config_.max_pending_read_requests) {
    return absl::ResourceExhaustedError("too many pending read requests");
  }
  reads_.push_back(PendingRead{log_.committed(), m.from, m.context, 0});
  MaybeStartReadRound();
  return absl::OkStatus();
}

void Raft::MaybeStartReadRound() {
  // Started when the messages are collected for the next Ready, so that every request that
  // arrives before then joins the same round.
  read_round_wanted_ = true;
}

bool Raft::ReadRoundDue() const {
  return read_round_wanted_ && role_ == Role::kLeader &&
         read_round_started_ == read_round_confirmed_ &&  // no round in flight
         !reads_.empty() && reads_.back().round == 0;     // somebody waiting
}

void Raft::StartReadRound() {
  if (!ReadRoundDue()) return;
  read_round_wanted_ = false;
  ++read_round_started_;
  for (auto it = reads_.rbegin(); it != reads_.rend() && it->round == 0; ++it) {
    it->round = read_round_started_;
  }
  BcastHeartbeat();
  ConfirmReads();  // a quorum of one (only possible with learners) confirms at once
}

void Raft::ConfirmReads() {
  if (role_ != Role::kLeader || read_round_started_ == read_round_confirmed_) return;
  const uint64_t confirmed =
      std::min(read_round_started_, tracker_.ConfirmedReadRound(id_, read_round_started_));
  if (confirmed <= read_round_confirmed_) return;
  read_round_confirmed_ = confirmed;
  while (!reads_.empty() && reads_.front().round != 0 && reads_.front().round <= confirmed) {
    RespondRead(reads_.front().from, reads_.front().context, reads_.front().index);
    reads_.pop_front();
  }
  MaybeStartReadRound();
}

void Raft::RespondRead(uint64_t from, const std::string& context, uint64_t index) {
  if (from == kNone || from == id_) {
    read_states_.push_back(ReadState{index, context});
    return;
  }
  Message m;
  m.type = MessageType::kReadIndexResp;
  m.to = from;
  m.index = index;
  m.context = context;
  Send(std::move(m));
}

void Raft::ReleaseDeferredReads() {
  if (deferred_reads_.empty() || !CommittedEntryInCurrentTerm()) return;
  std::vector<Message> deferred = std::exchange(deferred_reads_, {});
  for (const Message& m : deferred) (void)HandleReadRequest(m);
}

std::string Raft::DebugString() const {
  std::string out = absl::StrCat("node ", id_, " ", RoleName(role_), " term=", term_,
                                 " vote=", vote_, " lead=", lead_, " ", log_.ToString(),
                                 " last=", log_.LastIndex(), " ", tracker_.config().ToString());
  if (role_ == Role::kLeader) {
    for (const auto& [id, pr] : tracker_.progress()) {
      absl::StrAppend(&out, "\n  ", id, ": ", pr.ToString());
    }
  }
  return out;
}

}  // namespace meridian::raft
