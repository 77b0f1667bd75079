// Keeps following a domain's SRV records: the proxy's --discovery-srv. etcd resolves SRV once at
// start-up; this looks again when the records' TTL runs out, so members added to or removed from
// DNS are used or drained without a restart.
//
//   SrvFollower follower(options);
//   absl::Status st = follower.Start([&](const std::vector<DiscoveredEndpoint>& members) {...});
//
// Start() resolves once on the caller's thread and fails if that finds nothing usable; then a
// thread of its own re-resolves. The callback runs once from Start() and afterwards only when the
// set of endpoints changed (order is ignored). A failed lookup (timeout, SERVFAIL, no records at
// all) never shrinks the set: the last good answer stays in force and the lookup is retried with
// backoff, since dropping every member because DNS hiccuped would turn a DNS problem into an
// outage.
#ifndef MERIDIAN_DISCOVERY_FOLLOWER_H_
#define MERIDIAN_DISCOVERY_FOLLOWER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "discovery/srv.h"

namespace meridian::discovery {

struct FollowerOptions {
  ResolverOptions resolver;
  std::string domain;
  std::string suffix;  // --discovery-srv-name
  Role role = Role::kClients;
  // The TTL is clamped to [min, max] so that TTL 0 records do not turn into a busy loop and very
  // long ones still get checked now and then.
  int64_t min_refresh_ms = 1000;
  int64_t max_refresh_ms = 5 * 60 * 1000;
  // After a failure: this, doubling per consecutive failure, up to max_refresh_ms.
  int64_t retry_after_failure_ms = 1000;
};

// How long to wait before the next lookup: the TTL clamped to the options' bounds, or the
// backoff after `consecutive_failures` (> 0) failed lookups.
int64_t NextLookupDelayMs(const FollowerOptions& options, uint32_t ttl_s, int consecutive_failures);

// The same set of endpoints, whatever their order.
bool SameEndpoints(std::vector<DiscoveredEndpoint> a, std::vector<DiscoveredEndpoint> b);

class SrvFollower {
 public:
  using Callback = std::function<void(const std::vector<DiscoveredEndpoint>&)>;

  explicit SrvFollower(FollowerOptions options);
  ~SrvFollower();  // Stop()s
  SrvFollower(const SrvFollower&) = delete;
  SrvFollower& operator=(const SrvFollower&) = delete;

  [[nodiscard]] absl::Status Start(Callback on_change);
  void Stop();

  uint64_t lookups() const { return lookups_.load(); }
  uint64_t failures() const { return failures_.load(); }
  uint64_t changes() const { return changes_.load(); }

 private:
  // One lookup; on success the callback runs when the endpoints changed.
  absl::Status LookupOnce(uint32_t* ttl_s);
  void Run(uint32_t ttl_s);

  const FollowerOptions options_;
  Callback on_change_;
  std::unique_ptr<Resolver> resolver_;
  std::mt19937_64 rng_;
  std::vector<DiscoveredEndpoint> current_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<uint64_t> lookups_{0}, failures_{0}, changes_{0};
};

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_FOLLOWER_H_
