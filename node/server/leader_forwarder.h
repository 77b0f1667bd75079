// Runs requests at the leader on behalf of a follower: lease keepalives and time-to-live queries
// (only the leader's lessor expires leases and sees every keepalive, so a keepalive that reaches a
// follower must reach the leader too, and only the leader knows how long a lease has left) and
// member promotion (only the leader knows whether a learner caught up). etcd forwards these over
// its peer HTTP API; we use the leader's client gRPC API. One worker thread, a bounded queue.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace grpc {
class Channel;
}

namespace etcdserverpb {
class LeaseTimeToLiveRequest;
class LeaseTimeToLiveResponse;
}  // namespace etcdserverpb

namespace meridian::server {

class LeaderForwarder {
 public:
  using Job = std::function<void(const std::shared_ptr<grpc::Channel>& leader)>;

  // `leader_endpoint` returns "host:port" of the current leader's client URL, or "" if unknown.
  explicit LeaderForwarder(std::function<std::string()> leader_endpoint);
  ~LeaderForwarder();  // runs what is queued with a null channel, then joins the worker

  // Runs `job` exactly once on the worker, with a channel to the current leader (null when the
  // leader is unknown or the forwarder is stopping). At most kMaxQueued jobs wait; beyond that
  // the job runs at once with a null channel.
  void Submit(Job job);

  // Renews a lease at the leader; `done` runs exactly once with the leader's TTL (0: the leader
  // does not have the lease), or nullopt when the leader could not be asked.
  void RenewLease(int64_t lease_id, std::function<void(std::optional<int64_t> ttl)> done);

  // Asks the leader for a lease's time to live; `done` runs exactly once with the leader's
  // answer, or nullopt when the leader could not be asked.
  void LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& request,
      std::function<void(std::optional<etcdserverpb::LeaseTimeToLiveResponse>)> done);

 private:
  static constexpr size_t kMaxQueued = 10000;
  void Run();

  std::function<std::string()> leader_endpoint_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  std::string channel_target_;  // worker thread only
  std::shared_ptr<grpc::Channel> channel_;
  std::thread worker_;
};

}  // namespace meridian::server
