// One storage member: the log (propose -> durable WAL with group commit -> apply), the MVCC
// store, watches, leases and alarms. The gRPC services (services.cc) sit on top of this.
//
// Threads: gRPC threads call Propose and read views; the log thread batches proposals into one
// WAL append + fdatasync; the apply thread applies committed entries in order, publishes a new
// read view, notifies watchers, then completes the proposals' callbacks; a housekeeping thread
// expires leases, compacts automatically and samples metrics. Raft (a later issue) replaces the
// log thread; the apply side stays as it is.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "etcdserverpb/rpc.pb.h"
#include "meridian/internal.pb.h"
#include "node/lease/lessor.h"
#include "node/mvcc/store.h"
#include "node/mvcc/watch_hub.h"
#include "node/server/config.h"

namespace meridian::wal {
class Wal;
}

namespace meridian::server {

struct Member {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
};

class EtcdServer {
 public:
  using Done = std::function<void(grpc::Status)>;

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EtcdServer>> Open(
      const ServerConfig& config, const lease::Clock* clock, metrics::Registry* metrics);
  ~EtcdServer();
  // Stops accepting proposals, fails the waiting ones, and stops all threads.
  void Stop();

  // Validated request -> log. `response` (owned by the caller until `done` runs) is filled by
  // the apply step; `done` runs exactly once, on the apply thread or on failure.
  void Propose(meridianpb::InternalRequest request, google::protobuf::Message* response, Done done);

  std::shared_ptr<const mvcc::ReadView> View() const { return store_->View(); }
  void FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const;

  mvcc::Store* store() const { return store_.get(); }
  mvcc::WatchHub* watch_hub() const { return watch_hub_.get(); }
  lease::Lessor* lessor() const { return lessor_.get(); }
  const ServerConfig& config() const { return config_; }
  const Member& self() const { return self_; }
  uint64_t cluster_id() const { return cluster_id_; }
  uint64_t raft_term() const { return 1; }
  uint64_t committed_index() const { return committed_index_.load(); }
  uint64_t applied_index() const { return store_->consistent_index(); }
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
  };
  struct LogEntry {
    uint64_t index = 0;
    uint64_t id = 0;  // proposal id; 0 when unknown (replay)
    std::string data;  // serialized meridianpb::InternalRequest
  };
  struct LogBatch {
    std::vector<LogEntry> entries;
  };

  EtcdServer(const ServerConfig& config, const lease::Clock* clock, metrics::Registry* metrics);
  [[nodiscard]] absl::Status Init();
  [[nodiscard]] absl::Status Recover(std::vector<LogEntry> entries);
  void LogLoop();
  void ApplyLoop();
  void HousekeepingLoop();
  void CompletionLoop();
  // Applies one committed entry into `batch`; `response` may be null (replay). Returns the
  // status to give the proposer.
  grpc::Status ApplyEntry(mvcc::ApplyBatch* batch, const meridianpb::InternalRequest& req,
                          google::protobuf::Message* response,
                          std::vector<std::function<void()>>* after_commit);
  [[nodiscard]] absl::Status ApplyAndCommit(const std::vector<LogEntry>& entries, bool replay);
  void FailAll(const grpc::Status& status);

  ServerConfig config_;
  const lease::Clock* clock_;
  metrics::Registry* metrics_;
  Member self_;
  uint64_t cluster_id_ = 0;

  std::unique_ptr<mvcc::Store> store_;
  std::unique_ptr<mvcc::WatchHub> watch_hub_;
  std::unique_ptr<lease::Lessor> lessor_;
  std::unique_ptr<wal::Wal> wal_;

  // Proposals waiting for the log thread.
  std::mutex propose_mu_;
  std::condition_variable propose_cv_;
  std::deque<std::pair<uint64_t, std::string>> pending_;  // request id, serialized request
  std::unordered_map<uint64_t, Waiter> waiters_;          // guarded by propose_mu_
  bool stopping_ = false;
  size_t max_pending_ = 100000;

  // Committed entries waiting for the apply thread.
  std::mutex apply_mu_;
  std::condition_variable apply_cv_;
  std::deque<LogBatch> committed_;
  size_t committed_entries_ = 0;
  size_t max_committed_entries_ = 50000;

  std::atomic<uint64_t> committed_index_{0};
  std::atomic<uint64_t> release_wal_before_{0};
  uint64_t last_index_ = 0;  // log thread only
  uint64_t entries_since_flush_ = 0;  // apply thread only

  std::atomic<uint64_t> id_counter_{0};
  uint64_t id_prefix_ = 0;

  mutable std::mutex alarm_mu_;
  std::vector<etcdserverpb::AlarmMember> alarms_;
  std::atomic<bool> nospace_{false};
  std::atomic<bool> nospace_raising_{false};
  std::atomic<uint64_t> db_size_bytes_{0};

  // Answers to proposers, handed off by the apply thread: finishing a gRPC call writes to the
  // socket, which must not hold up applying the next batch.
  std::mutex completion_mu_;
  std::condition_variable completion_cv_;
  std::deque<std::vector<std::pair<Done, grpc::Status>>> completion_queue_;
  bool completion_stop_ = false;
  std::thread completion_thread_;

  std::mutex housekeeping_mu_;
  std::condition_variable housekeeping_cv_;

  std::thread log_thread_;
  std::thread apply_thread_;
  std::thread housekeeping_thread_;

  // Metrics.
  metrics::Histogram* wal_fsync_seconds_;
  metrics::Histogram* backend_commit_seconds_;
  metrics::Counter* proposals_committed_;
  metrics::Counter* proposals_applied_;
  metrics::Counter* proposals_failed_;
  metrics::Gauge* proposals_pending_;
};

}  // namespace meridian::server
