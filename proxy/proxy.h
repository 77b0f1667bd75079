// meridian-proxy's gRPC front: one generic service that takes every method of every etcd v3
// service. Watch and LeaseKeepAlive are coalesced (watch_proxy.h, lease_proxy.h); everything
// else is forwarded byte for byte to a member chosen by the upstream pool, after the request-size
// limit and the client's quota are checked.
#ifndef MERIDIAN_PROXY_PROXY_H_
#define MERIDIAN_PROXY_PROXY_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/metrics.h"
#include "proxy/config.h"
#include "proxy/key_prefix.h"
#include "proxy/quota.h"
#include "discovery/follower.h"
#include "proxy/upstream.h"

namespace meridian::proxy {

class WatchProxy;
class LeaseProxy;
class ReadCache;

struct ProxyMetrics {
  metrics::Counter* requests = nullptr;
  metrics::Counter* request_too_large = nullptr;
  metrics::Counter* quota_rejections = nullptr;
  metrics::Counter* cache_hits = nullptr;
  metrics::Counter* cache_misses = nullptr;
  metrics::Counter* keepalives_in = nullptr;
  metrics::Counter* keepalives_out = nullptr;
  metrics::Counter* events_delivered = nullptr;
  metrics::Counter* upstream_retries = nullptr;
  metrics::Counter* watchers_parked = nullptr;
};

class Proxy {
 public:
  Proxy(ProxyConfig config, metrics::Registry* registry);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  [[nodiscard]] absl::Status Start();
  // Stops background work; call after the gRPC server has shut down.
  void Stop();
  grpc::CallbackGenericService* service();
  // A member with a leader answered its last probe.
  bool Healthy();

  const ProxyConfig& config() const { return config_; }
  UpstreamPool* pool() { return &pool_; }
  const KeyPrefix& prefix() const { return prefix_; }
  AuthTokenCache* tokens() { return &tokens_; }
  QuotaTable* quota() { return &quota_; }
  ProxyMetrics& metrics() { return metrics_; }
  ReadCache* read_cache() { return read_cache_.get(); }
  WatchProxy* watch() { return watch_.get(); }
  LeaseProxy* lease() { return lease_.get(); }

  // The request-size limit, then the per-client quota, for one request message of `bytes`.
  // Returns etcd's error for an oversize request and RESOURCE_EXHAUSTED over quota.
  grpc::Status Admit(const grpc::ServerContextBase& ctx, size_t bytes,
                     const std::string& identity);

 private:
  class Service;

  ProxyConfig config_;
  metrics::Registry* registry_;
  ProxyMetrics metrics_;
  UpstreamPool pool_;
  KeyPrefix prefix_;
  AuthTokenCache tokens_;
  QuotaTable quota_;
  std::unique_ptr<ReadCache> read_cache_;
  std::unique_ptr<WatchProxy> watch_;
  std::unique_ptr<LeaseProxy> lease_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<discovery::SrvFollower> follower_;  // with --discovery-srv
};

// The upstream members for what DNS publishes: plain-text (http) endpoints only, since the proxy
// does not dial members over TLS; each dialled at its resolved addresses (IPv4 when it has any),
// so that the DNS server that named them is also the one that located them.
std::vector<UpstreamTarget> TargetsFromDns(const std::vector<discovery::DiscoveredEndpoint>& found,
                                           std::vector<std::string>* skipped);

// Copies a client's request metadata (auth token, require-leader, ...) onto an upstream call,
// leaving out what gRPC sets itself.
void CopyClientMetadata(const grpc::ServerContextBase& from, grpc::ClientContext* to);
int64_t SteadyNowMs();

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_PROXY_H_
