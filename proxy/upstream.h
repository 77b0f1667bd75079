// The upstream pool: the members of one etcd cluster that the proxy forwards to.
//
// Each member gets one gRPC channel. A prober thread asks every member for Maintenance.Status
// every probe interval; a member that answers and knows a leader is "ready". Requests that need
// a leader go to the leader when it is ready, else to another ready member (which forwards), so
// nothing is sent to a member that would only answer "no leader". With auto-sync on, MemberList
// replaces the member set, so members added to or removed from the cluster are used or drained
// without a restart. A removed member's channel lives on while calls still hold it.
#ifndef MERIDIAN_PROXY_UPSTREAM_H_
#define MERIDIAN_PROXY_UPSTREAM_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meridian::proxy {

// One member as the pool sees it. Shared by the calls that use it.
struct Upstream {
  std::string endpoint;  // "127.0.0.1:2379" (or the SRV target "m1.example.com:2379")
  std::string dial_target;  // what the channel dials ("ipv4:10.0.0.1:2379" for SRV targets)
  std::shared_ptr<grpc::Channel> channel;
  // From SRV records: reads prefer the lowest priority among ready members and spread over it in
  // proportion to weight. 0/0 for --endpoints and MemberList members.
  uint16_t priority = 0;
  uint16_t weight = 0;
  int64_t current_weight = 0;  // smooth weighted round-robin state, under the pool's lock
  // Filled by the prober (read under the pool's lock via Snapshot()).
  uint64_t member_id = 0;
  uint64_t leader_id = 0;
  std::string version;  // etcd server version from Status, e.g. "3.4.23"
  bool reachable = false;
  int consecutive_failures = 0;
};

// One member to use, as --endpoints, MemberList or DNS name it.
struct UpstreamTarget {
  std::string endpoint;     // "host:port"
  std::string dial_target;  // "" = DialTarget(endpoint)
  uint16_t priority = 0;
  uint16_t weight = 0;
};

struct UpstreamInfo {
  std::string endpoint;
  uint64_t member_id = 0;
  uint64_t leader_id = 0;
  std::string version;
  bool reachable = false;
};

class UpstreamPool {
 public:
  struct Options {
    std::vector<std::string> endpoints;  // host:port (http:// prefixes are stripped)
    int probe_interval_ms = 1000;
    int probe_timeout_ms = 1000;
    int auto_sync_interval_ms = 30000;  // 0: keep --endpoints as given
  };

  explicit UpstreamPool(Options options);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // Validates the endpoints, creates the channels, probes once synchronously and starts the
  // prober thread. Fails only for malformed endpoints; unreachable members are retried. With
  // members already given by SetMembers (DNS discovery), options.endpoints is not used.
  [[nodiscard]] absl::Status Start();
  // Replaces the member set (DNS discovery, MemberList sync): members that stay keep their
  // channel and state, new ones are probed at once, and removed ones are drained (calls in flight
  // finish; the watch and lease proxies move their streams off them).
  void SetMembers(const std::vector<UpstreamTarget>& targets, const std::string& source);
  // False once `upstream` has been removed from the member set.
  bool IsMember(const Upstream* upstream);
  void Stop();

  // The member to send a request to: the ready leader, else a ready member, else (nothing is
  // ready) the member that failed least recently, so that the caller gets the member's own error.
  // `avoid` is skipped when another choice exists (retries, stream fail-over). Never null once
  // started.
  std::shared_ptr<Upstream> Pick(const Upstream* avoid = nullptr);
  // Reads that any member can serve: ready members of the lowest priority, smooth weighted
  // round-robin by weight (plain round-robin when the weights are equal).
  std::shared_ptr<Upstream> PickAny(const Upstream* avoid = nullptr);

  // True when some member answered its last probe and knows a leader.
  bool HasReadyMember();
  // True when some member is reachable and every reachable one runs etcd >= 3.5.13 (or
  // Meridian): their watch progress answers wait until every watcher is synced.
  bool AllReachableSupportSyncedProgress();
  // Marks a member as failed right away (a call to it broke), ahead of the next probe.
  void ReportFailure(const Upstream* upstream);
  std::vector<UpstreamInfo> Snapshot();
  // Channel to every endpoint as gRPC creates them; used by the pool and by tests.
  static std::shared_ptr<grpc::Channel> MakeChannel(const std::string& dial_target);

 private:
  void ProbeLoop();
  void ProbeAll();
  void SyncMembers();
  std::shared_ptr<Upstream> PickLocked(const Upstream* avoid, bool round_robin);
  std::vector<std::shared_ptr<Upstream>> ReplaceLocked(const std::vector<UpstreamTarget>& targets,
                                                       const std::string& source);

  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Upstream>> members_;
  bool stopping_ = false;
  std::thread prober_;
  bool probe_now_ = false;  // SetMembers asks the prober for a round now
  int64_t last_sync_ms_ = 0;
};

// "http://h:p" or "h:p" -> "h:p"; error for anything else (https is refused: no TLS upstream).
[[nodiscard]] absl::StatusOr<std::string> NormalizeEndpoint(const std::string& text);

// Among `candidates`: those with the lowest priority, then smooth weighted round-robin by weight
// (each call moves their current_weight; call under the pool's lock). Null for no candidates.
std::shared_ptr<Upstream> PickByPriorityAndWeight(std::vector<std::shared_ptr<Upstream>> candidates);

// Whether an etcd version string is at least major.minor.patch.
bool VersionAtLeast(const std::string& version, int major, int minor, int patch);

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_UPSTREAM_H_
