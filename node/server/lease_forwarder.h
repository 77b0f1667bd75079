// Renews leases at the leader on behalf of a follower's keepalive streams. Only the leader's
// lessor expires leases, so a keepalive that reaches a follower must reach the leader too (etcd
// forwards it over its peer HTTP API; we use the leader's client gRPC API).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace grpc {
class Channel;
}

namespace meridian::server {

class LeaseForwarder {
 public:
  // `leader_endpoint` returns "host:port" of the current leader's client URL, or "" if unknown.
  explicit LeaseForwarder(std::function<std::string()> leader_endpoint);
  ~LeaseForwarder();  // answers what is queued with TTL 0 and joins the worker

  // Queues a renewal; `done(ttl)` runs exactly once on the worker thread (ttl 0: lease not
  // found, or the leader could not be reached). At most kMaxQueued wait; beyond that `done(0)`
  // runs at once, as for an unreachable leader.
  void Renew(int64_t lease_id, std::function<void(int64_t ttl)> done);

 private:
  static constexpr size_t kMaxQueued = 10000;
  void Run();

  std::function<std::string()> leader_endpoint_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<int64_t, std::function<void(int64_t)>>> queue_;
  bool stop_ = false;
  std::string channel_target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::thread worker_;
};

}  // namespace meridian::server
