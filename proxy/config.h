// meridian-proxy's flags. Names follow `etcd grpc-proxy start` where etcd has the flag.
#ifndef MERIDIAN_PROXY_CONFIG_H_
#define MERIDIAN_PROXY_CONFIG_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace meridian::proxy {

struct ProxyConfig {
  std::vector<std::string> endpoints = {"127.0.0.1:2379"};
  std::string listen_addr = "127.0.0.1:23790";  // gRPC plus /health, /metrics (HTTP/1.1)
  std::vector<std::string> metrics_addrs;        // extra HTTP listeners, "http://host:port"
  std::string ns;                                // --namespace: key prefix for every client key
  uint64_t max_request_bytes = 1536 * 1024;      // etcd's default --max-request-bytes
  int64_t auto_sync_interval_ms = 30000;         // MemberList sync; 0 = off
  int64_t probe_interval_ms = 1000;              // Status probe of every member
  // Per-client quotas (0 = unlimited). The client is the TLS CN, else the auth user, else the
  // peer IP address.
  double quota_requests_per_second = 0;
  double quota_bytes_per_second = 0;
  int64_t quota_watchers = 0;
  int64_t max_watchers_per_stream = 10000;
  // Bytes of responses queued for one client watch stream before its watchers are parked and
  // later caught up from the upstream's history (a slow client never stalls the others).
  int64_t watch_stream_buffer_bytes = 16 << 20;
  // Events each coalesced watch keeps, so that clients asking for a slightly older revision join
  // without a private catch-up watcher.
  int64_t watch_history_events = 1024;
  // Watch streams that require a leader are closed with "etcdserver: no leader" when no member
  // has had a leader for this long.
  int64_t no_leader_close_ms = 5000;
  // Serializable range responses are reused for this long, per client identity (0 = no cache).
  int64_t read_cache_ttl_ms = 0;
  int64_t read_cache_entries = 10000;
  // --discovery-srv: the members are the domain's _etcd-client(-ssl)._tcp SRV targets, looked up
  // again as their TTL runs out (replaces --endpoints and MemberList sync).
  std::string discovery_srv;
  std::string discovery_srv_name;    // suffix of the service name (etcd's --discovery-srv-name)
  std::string discovery_dns_server;  // ours: "ip:port" of the DNS server to ask
  std::string log_level = "info";
  // Client-facing TLS. With a certificate, gRPC is served over TLS on --listen-addr (HTTP
  // endpoints then only on --metrics-addr); with a trusted CA too, clients must present a
  // certificate it signed, and its CN becomes their identity for quotas.
  std::string cert_file;
  std::string key_file;
  std::string trusted_ca_file;
};

struct ParsedProxyFlags {
  ProxyConfig config;
  bool exit_now = false;  // --help / --version printed
  int exit_code = 0;
};

// Flags and ETCD_* / MERIDIAN_PROXY_* environment variables (flags win). Errors are
// InvalidArgument with a message meant for the operator.
[[nodiscard]] absl::StatusOr<ParsedProxyFlags> ParseProxyFlags(int argc, const char* const* argv,
                                                               const std::vector<std::string>& env,
                                                               std::ostream& out);

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_CONFIG_H_
