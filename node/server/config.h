// The node's configuration: etcd's flag names, defaults and ETCD_* environment variables.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/duration.h"

namespace meridian::server {

struct ServerConfig {
  std::string name = "default";
  std::string data_dir;  // default: "<name>.etcd"
  std::string wal_dir;   // default: "<data-dir>/member/wal"
  std::vector<std::string> listen_client_urls = {"http://localhost:2379"};
  std::vector<std::string> advertise_client_urls = {"http://localhost:2379"};
  std::vector<std::string> listen_peer_urls = {"http://localhost:2380"};
  std::vector<std::string> initial_advertise_peer_urls = {"http://localhost:2380"};
  std::string initial_cluster;  // default: "<name>=<initial-advertise-peer-urls>"
  std::string initial_cluster_token = "etcd-cluster";
  std::string initial_cluster_state = "new";
  // etcd's --discovery-srv / --discovery-srv-name: the initial cluster comes from the domain's
  // _etcd-server(-ssl)._tcp SRV records instead of --initial-cluster.
  std::string discovery_srv;
  std::string discovery_srv_name;
  // Ours: the DNS server ("ip:port") for --discovery-srv and for dialling peers by host name.
  std::string discovery_dns_server;
  // Set by main when discovery_srv is: resolves --initial-cluster. Called only when the member is
  // bootstrapped (no identity in the data dir yet), as etcd resolves only then.
  std::function<absl::StatusOr<std::string>()> discover_initial_cluster;
  std::vector<std::string> listen_metrics_urls;
  int64_t quota_backend_bytes = 0;  // 0: etcd's default (2 GiB); negative: no quota
  uint64_t max_request_bytes = 1572864;
  uint32_t max_txn_ops = 128;
  std::string auto_compaction_mode = "periodic";
  std::string auto_compaction_retention = "0";
  std::string log_level = "info";
  uint64_t snapshot_count = 100000;
  uint32_t heartbeat_interval_ms = 100;
  uint32_t election_timeout_ms = 1000;
  uint64_t watch_progress_notify_interval_ms = 10 * 60 * 1000;
  bool pre_vote = true;
  // Entries a leader keeps behind its latest snapshot for slow followers (etcd 3.5's
  // --experimental-snapshot-catchup-entries).
  uint64_t snapshot_catchup_entries = 5000;
  bool strict_reconfig_check = true;

  int64_t EffectiveQuotaBytes() const;
  // Minimum lease TTL etcd derives from the election timeout: ceil(1.5 * election timeout).
  int64_t MinLeaseTtlSeconds() const;
};

inline constexpr int64_t kDefaultQuotaBytes = 2ll << 30;

struct ParsedFlags {
  ServerConfig config;
  bool exit_now = false;  // --help or --version was answered
  int exit_code = 0;
};

// Parses argv (single- or double-dash long flags, as Go's flag package accepts) and ETCD_*
// variables from `env` (flags win). Errors say which flag and why; the caller exits with 2.
[[nodiscard]] absl::StatusOr<ParsedFlags> ParseFlags(int argc, const char* const* argv,
                                                     const std::vector<std::string>& env,
                                                     std::ostream& out);

}  // namespace meridian::server
