// One storage member: raft (node/raft) over the WAL and the peer transport, the MVCC store,
// watches, leases, alarms and the membership. The gRPC services (services.cc) sit on top.
//
// Threads:
// - gRPC threads call Propose / ReadIndex / the membership calls and read published views;
// - the raft thread owns the RawNode, its MemoryStorage and the WAL: it ticks, steps peer
//   messages, turns proposals into log entries and carries out each Ready (WAL append + one
//   fdatasync for the whole Ready = group commit, send, hand committed entries to apply);
// - the apply thread applies committed entries in batches, publishes a new read view, notifies
//   watchers, completes reads whose read index it reached, and queues the proposers' answers;
// - the completion thread finishes gRPC calls (writing to sockets must not hold up applying);
// - the housekeeping thread expires leases (leader only), compacts automatically, times out
//   requests and samples metrics;
// - a snapshot thread writes store images for followers that need a snapshot.
#pragma once

#include <grpcpp/support/status.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "etcdserverpb/rpc.pb.h"
#include "meridian/internal.pb.h"
#include "node/lease/lessor.h"
#include "node/mvcc/store.h"
#include "node/mvcc/watch_hub.h"
#include "node/raft/rawnode.h"
#include "node/server/config.h"
#include "node/server/leader_forwarder.h"
#include "node/server/queue_budget.h"

namespace meridian::wal {
class Wal;
}
namespace meridian::peer {
class PeerTransport;
}
namespace grpc {
class Service;
}

namespace meridian::server {

struct Member {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool is_learner = false;
};

// etcd's member id: SHA-1 of the sorted peer URLs and the cluster token (plus, for members added
// at runtime, the time).
uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& salt);
// etcd's cluster id: SHA-1 of the sorted member ids, big-endian.
uint64_t ComputeClusterId(std::vector<uint64_t> ids);

class EtcdServer {
 public:
  using Done = std::function<void(grpc::Status)>;

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EtcdServer>> Open(const ServerConfig& config,
                                                                        const lease::Clock* clock,
                                                                        metrics::Registry* metrics);
  ~EtcdServer();
  // Stops accepting work, fails the waiting requests, and stops all threads.
  void Stop();

  // The raft peer transport; its service is served on --listen-peer-urls.
  peer::PeerTransport* transport() const { return transport_.get(); }

  // Validated request -> log. `response` (owned by the caller until `done` runs) is filled by
  // the apply step; `done` runs exactly once.
  void Propose(meridianpb::InternalRequest request, google::protobuf::Message* response, Done done);
  // Linearizable read barrier: `done` runs (OK) once this member applied everything committed
  // when the read arrived, confirmed by a quorum (raft ReadIndex); or with etcd's no-leader /
  // timeout / learner errors.
  void ReadIndex(Done done);

  // Membership (the Cluster service). `done` runs once the change is applied here.
  void AddMember(std::vector<std::string> peer_urls, bool is_learner,
                 etcdserverpb::MemberAddResponse* resp, Done done);
  void RemoveMember(uint64_t id, etcdserverpb::MemberRemoveResponse* resp, Done done);
  void UpdateMember(uint64_t id, std::vector<std::string> peer_urls,
                    etcdserverpb::MemberUpdateResponse* resp, Done done);
  void PromoteMember(uint64_t id, etcdserverpb::MemberPromoteResponse* resp, Done done);
  void MoveLeader(uint64_t target, Done done);

  std::shared_ptr<const mvcc::ReadView> View() const { return store_->View(); }
  void FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const;

  mvcc::Store* store() const { return store_.get(); }
  mvcc::WatchHub* watch_hub() const { return watch_hub_.get(); }
  lease::Lessor* lessor() const { return lessor_.get(); }
  LeaderForwarder* leader_forwarder() const { return leader_forwarder_.get(); }
  const ServerConfig& config() const { return config_; }
  uint64_t id() const { return self_id_; }
  const std::string& name() const { return config_.name; }
  uint64_t cluster_id() const { return cluster_id_.load(); }
  uint64_t raft_term() const { return term_.load(); }
  uint64_t leader() const { return leader_.load(); }
  bool is_leader() const { return leader_.load() == self_id_; }
  bool is_learner() const;
  // Joined: a leader is known and this member's name and client URLs are in the membership.
  bool Ready() const;
  uint64_t committed_index() const { return committed_index_.load(); }
  uint64_t applied_index() const { return store_->consistent_index(); }
  std::vector<Member> Members() const;
  // The members as etcd's protobuf records (MemberList and membership change responses).
  void FillMembers(google::protobuf::RepeatedPtrField<etcdserverpb::Member>* out) const;
  std::optional<Member> FindMember(uint64_t id) const;
  uint64_t NextRequestId();
  std::vector<etcdserverpb::AlarmMember> Alarms() const;
  bool NoSpaceAlarmed() const;
  // The quota check etcd makes before proposing a write of `cost_bytes`.
  bool QuotaAvailable(size_t cost_bytes) const;
  // Raises the NOSPACE alarm through the log (once).
  void RaiseNoSpace();

 private:
  struct Waiter {
    // The proposal itself, kept so the apply step need not decode what it proposed.
    meridianpb::InternalRequest request;
    google::protobuf::Message* response = nullptr;
    Done done;
    std::chrono::steady_clock::time_point deadline;
  };
  struct ReadWaiter {
    Done done;
    std::chrono::steady_clock::time_point deadline;
  };
  // A committed entry on its way to the apply thread.
  struct ApplyEntry {
    raft::Entry entry;
    // Conf change entries: the membership after it (as raft computed it), or why it was void.
    std::optional<raft::ConfState> conf_state;
  };
  struct ConfWaiter {
    google::protobuf::Message* response = nullptr;
    Done done;
    std::chrono::steady_clock::time_point deadline;
  };
  // What a membership change does, for etcd's checks of it (ValidateConfigurationChange).
  enum class MembershipChange { kAdd, kAddLearner, kPromote, kRemove, kUpdate };
  // A membership change on its way through the leader's raft thread, which checks and proposes
  // them one at a time (see RaftLoop).
  struct PendingConfChange {
    MembershipChange kind = MembershipChange::kAdd;
    uint64_t member_id = 0;
    std::vector<std::string> peer_urls;  // what an add or an update claims
    raft::ConfChange cc;                 // all kinds but an update
    std::string update_data;  // an update: its serialized InternalRequest (a normal entry)
    uint64_t request_id = 0;  // its waiter: in conf_waiters_ (an update: in waiters_)
  };

  EtcdServer(const ServerConfig& config, const lease::Clock* clock, metrics::Registry* metrics);
  [[nodiscard]] absl::Status Init();
  // With --discovery-srv on a new member, *initial_members is replaced by what DNS publishes.
  [[nodiscard]] absl::Status InitIdentity(std::vector<Member>* initial_members,
                                          bool* bootstrap_new);
  [[nodiscard]] absl::Status LoadMembership();
  [[nodiscard]] absl::Status LoadLeasesAndAlarms();
  void SyncPeers();

  void RaftLoop();
  void HandleReady(raft::Ready rd);
  void SendMessages(std::vector<raft::Message> msgs);
  [[nodiscard]] absl::Status InstallSnapshot(const raft::Snapshot& snap);
  void CompactRaftMemory(uint64_t applied);
  void ReleaseWal(uint64_t index, uint64_t term);
  void SnapshotLoop();

  void ApplyLoop();
  void HousekeepingLoop();
  void ExpireRequests(std::chrono::steady_clock::time_point now);
  void CheckStillMember();
  void CompletionLoop();
  // Applies one committed normal entry into `batch`; `response` may be null. Returns the status
  // to give the proposer.
  grpc::Status ApplyRequest(mvcc::ApplyBatch* batch, const meridianpb::InternalRequest& req,
                            google::protobuf::Message* response,
                            std::vector<std::function<void()>>* after_commit);
  void ApplyConfEntry(mvcc::ApplyBatch* batch, const ApplyEntry& e,
                      std::vector<std::pair<Done, grpc::Status>>* completions);
  [[nodiscard]] absl::Status ApplyEntries(std::vector<ApplyEntry> entries);
  void CompleteReads(uint64_t applied);
  void FailAll(const grpc::Status& status);
  void Complete(std::vector<std::pair<Done, grpc::Status>> completions);
  // Runs a Cluster call at the leader (for a follower that received it) and answers with its
  // status; the call fills the caller's response.
  void ForwardToLeader(
      Done done,
      std::function<grpc::Status(etcdserverpb::Cluster::Stub*, grpc::ClientContext*)> call);
  void ProposeConfChange(MembershipChange kind, raft::ConfChange cc, etcdserverpb::Member member,
                         google::protobuf::Message* response, Done done);
  // etcd's checks of a membership change against the member records as they are now: an added
  // member's ID and URLs are new and learners stay within the limit; a promoted, removed or
  // updated member exists; an update takes no other member's URL.
  grpc::Status CheckMembershipChange(MembershipChange kind, uint64_t member_id,
                                     const std::vector<std::string>& peer_urls) const;
  // Raft thread: checks one queued membership change again and proposes it, or answers its
  // waiter with the reason it was refused.
  void ProposeMembershipChange(PendingConfChange pc);
  // Registers the waiter of a membership change (an update's in waiters_, with `update`, its
  // request) and queues the change for the raft thread, or answers `done` at once when stopping
  // or when kMaxPendingMembershipChanges are queued.
  void QueueMembershipChange(PendingConfChange pc, google::protobuf::Message* response,
                             meridianpb::InternalRequest update, Done done);
  // Whether the change's caller still waits (waiters_mu_ held).
  bool MembershipChangeWaiting(const PendingConfChange& pc) const;
  // Answers the waiter of a queued membership change with `status` (if it is still waiting).
  void FailMembershipChange(const PendingConfChange& pc, const grpc::Status& status);
  std::chrono::steady_clock::time_point RequestDeadline() const;

  ServerConfig config_;
  const lease::Clock* clock_;
  metrics::Registry* metrics_;
  uint64_t self_id_ = 0;
  std::atomic<uint64_t> cluster_id_{0};

  std::unique_ptr<mvcc::Store> store_;
  std::unique_ptr<mvcc::WatchHub> watch_hub_;
  std::unique_ptr<lease::Lessor> lessor_;
  std::unique_ptr<wal::Wal> wal_;
  std::unique_ptr<peer::PeerTransport> transport_;
  std::unique_ptr<LeaderForwarder> leader_forwarder_;

  // Raft thread only.
  raft::MemoryStorage raft_storage_;
  std::unique_ptr<raft::RawNode> node_;
  std::map<uint64_t, raft::ConfState> conf_at_;         // membership after each recent conf change
  raft::ConfState base_conf_;                           // membership before conf_at_'s first entry
  std::map<uint64_t, std::string> received_snapshots_;  // snapshot index -> image file
  uint64_t read_seq_ = 0;
  std::map<std::string, std::vector<ReadWaiter>> reads_in_flight_;  // read ctx -> waiters

  // Inputs of the raft thread.
  std::mutex raft_mu_;
  std::condition_variable raft_cv_;
  std::deque<std::pair<uint64_t, std::string>> pending_;  // request id, serialized request
  std::deque<raft::Message> inbox_;
  std::vector<std::pair<raft::Message, std::string>> snapshot_inbox_;
  std::vector<uint64_t> unreachable_;
  std::vector<std::pair<uint64_t, bool>> snapshot_status_;
  std::vector<ReadWaiter> new_reads_;
  std::vector<PendingConfChange> new_conf_changes_;
  // Membership changes queued or waiting on the raft thread (bounded by
  // kMaxPendingMembershipChanges).
  std::atomic<size_t> membership_changes_queued_{0};
  std::vector<uint64_t> transfer_requests_;
  uint64_t store_flushed_index_ = 0;  // set by apply, consumed by raft (raft_mu_)
  uint64_t store_flushed_term_ = 0;
  // Set under raft_mu_; read by every thread (their wait predicates lock their own mutexes, and
  // Stop() takes each of those before notifying, so no wakeup is lost).
  std::atomic<bool> stopping_{false};
  static constexpr size_t kMaxPending = 100000;
  // Raft refuses proposals past its 64 MiB of uncommitted entries anyway, so queueing more than
  // that for it only holds memory while the raft thread is busy (a slow fsync).
  static constexpr size_t kMaxPendingBytes = 64 << 20;
  QueueBudget pending_budget_{kMaxPending, kMaxPendingBytes};  // raft_mu_
  // Peer messages waiting for the raft thread (our leaders keep at most 8 MiB of appends in
  // flight to one follower; the byte bound also holds for a peer that does not).
  QueueBudget inbox_budget_{20000, 256 << 20};  // raft_mu_

  // Waiters, guarded by waiters_mu_.
  std::mutex waiters_mu_;
  std::unordered_map<uint64_t, Waiter> waiters_;
  std::unordered_map<uint64_t, ConfWaiter> conf_waiters_;
  std::multimap<uint64_t, ReadWaiter> reads_by_index_;  // read index -> waiters

  // Committed entries waiting for the apply thread.
  std::mutex apply_mu_;
  std::condition_variable apply_cv_;
  std::deque<std::vector<ApplyEntry>> committed_;
  // Raft waits while the apply thread is this far behind (entries, bytes of entry data).
  QueueBudget committed_budget_{50000, 256 << 20};
  bool apply_busy_ = false;
  uint64_t entries_since_flush_ = 0;  // apply thread only
  uint64_t applied_term_ = 0;         // apply thread only: term of the last applied entry

  // Published raft status.
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> committed_index_{0};
  // This member is the only voter (and so its own leader): a linearizable read needs no round.
  std::atomic<bool> sole_voter_{false};

  // Membership, guarded by members_mu_.
  mutable std::mutex members_mu_;
  std::map<uint64_t, Member> members_;
  bool removed_ = false;
  std::mutex peers_mu_;  // guards peer_urls_: what the transport was told
  std::map<uint64_t, std::vector<std::string>> peer_urls_;

  std::atomic<uint64_t> id_counter_{0};
  uint64_t id_prefix_ = 0;

  mutable std::mutex alarm_mu_;
  std::vector<etcdserverpb::AlarmMember> alarms_;
  std::atomic<bool> nospace_{false};
  std::atomic<bool> nospace_raising_{false};
  // Sampled by housekeeping; QuotaAvailable re-reads it before refusing a write.
  mutable std::atomic<uint64_t> db_size_bytes_{0};

  // Answers to proposers, handed off by the apply thread.
  std::mutex completion_mu_;
  std::condition_variable completion_cv_;
  std::deque<std::vector<std::pair<Done, grpc::Status>>> completion_queue_;
  bool completion_stop_ = false;
  std::thread completion_thread_;

  // Store images to send to followers (raft thread -> snapshot thread).
  std::mutex snap_mu_;
  std::condition_variable snap_cv_;
  std::deque<raft::Message> snapshots_to_send_;
  std::map<uint64_t, std::string> sent_images_;  // peer -> image file being sent
  bool snap_stop_ = false;
  std::thread snapshot_thread_;

  std::mutex housekeeping_mu_;
  std::condition_variable housekeeping_cv_;

  // Reads released by a read index run on these threads (a large range must not hold up the
  // completion thread or the apply thread).
  std::mutex read_pool_mu_;
  std::condition_variable read_pool_cv_;
  std::deque<Done> read_pool_queue_;
  bool read_pool_stop_ = false;
  std::vector<std::thread> read_pool_;
  void ReadPoolLoop();

  // MoveLeader waits for the transfer on a thread of its own (joined at Stop).
  struct MoveLeaderWait {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> finished;
  };
  std::mutex move_leader_mu_;
  std::vector<MoveLeaderWait> move_leader_threads_;  // at most kMaxMoveLeaderWaits
  static constexpr size_t kMaxMoveLeaderWaits = 8;

  std::thread raft_thread_;
  std::thread apply_thread_;
  std::thread housekeeping_thread_;

  // Metrics.
  metrics::Histogram* wal_fsync_seconds_;
  metrics::Histogram* backend_commit_seconds_;
  metrics::Counter* proposals_committed_;
  metrics::Counter* proposals_applied_;
  metrics::Counter* proposals_failed_;
  metrics::Gauge* proposals_pending_;
  metrics::Gauge* has_leader_;
  metrics::Gauge* is_leader_;
  metrics::Counter* leader_changes_;
};

}  // namespace meridian::server
