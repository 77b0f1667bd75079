#include "node/server/config.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <map>
#include <ostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "node/server/version.h"
#include "common/duration.h"
#include "common/flags.h"
#include "discovery/resolver.h"

namespace meridian::server {

int64_t ServerConfig::EffectiveQuotaBytes() const {
  if (quota_backend_bytes == 0) return kDefaultQuotaBytes;
  return quota_backend_bytes;
}

int64_t ServerConfig::MinLeaseTtlSeconds() const {
  uint32_t ticks = election_timeout_ms / heartbeat_interval_ms;
  double seconds = (3.0 * ticks / 2) * heartbeat_interval_ms / 1000.0;
  return static_cast<int64_t>(std::ceil(seconds));
}

namespace {

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

absl::StatusOr<ParsedFlags> ParseFlags(int argc, const char* const* argv,
                                       const std::vector<std::string>& env, std::ostream& out) {
  ParsedFlags parsed;
  ServerConfig& c = parsed.config;
  CLI::App app{"meridian-node: an etcd v3 compatible storage member"};
  app.set_help_flag("-h,--help", "print this help");
  bool version = false;
  std::string listen_client, advertise_client, listen_peer, initial_advertise_peer, listen_metrics;
  std::string quota = "0", max_request = std::to_string(c.max_request_bytes),
              max_txn_ops = std::to_string(c.max_txn_ops), snapshot_count = "100000",
              heartbeat = "100", election = "1000", progress_interval = "10m", pre_vote = "true",
              strict_reconfig = "true", catchup_entries = "5000";
  // Every flag also reads ETCD_<NAME> from the environment, as etcd does.
  const std::map<std::string, std::string> envmap = EnvironmentMap(env);
  std::map<std::string, std::string*> flags = {
      {"name", &c.name},
      {"data-dir", &c.data_dir},
      {"wal-dir", &c.wal_dir},
      {"listen-client-urls", &listen_client},
      {"advertise-client-urls", &advertise_client},
      {"listen-peer-urls", &listen_peer},
      {"initial-advertise-peer-urls", &initial_advertise_peer},
      {"initial-cluster", &c.initial_cluster},
      {"initial-cluster-token", &c.initial_cluster_token},
      {"initial-cluster-state", &c.initial_cluster_state},
      {"discovery-srv", &c.discovery_srv},
      {"discovery-srv-name", &c.discovery_srv_name},
      {"discovery-dns-server", &c.discovery_dns_server},
      {"listen-metrics-urls", &listen_metrics},
      {"quota-backend-bytes", &quota},
      {"max-request-bytes", &max_request},
      {"max-txn-ops", &max_txn_ops},
      {"auto-compaction-mode", &c.auto_compaction_mode},
      {"auto-compaction-retention", &c.auto_compaction_retention},
      {"log-level", &c.log_level},
      {"snapshot-count", &snapshot_count},
      {"heartbeat-interval", &heartbeat},
      {"election-timeout", &election},
      {"experimental-watch-progress-notify-interval", &progress_interval},
      {"pre-vote", &pre_vote},
      {"experimental-snapshot-catchup-entries", &catchup_entries},
      {"strict-reconfig-check", &strict_reconfig},
  };
  std::map<std::string, std::string> help = {
      {"name", "human-readable name for this member"},
      {"data-dir", "path to the data directory"},
      {"wal-dir", "path to the dedicated log directory"},
      {"listen-client-urls", "list of URLs to listen on for client traffic"},
      {"advertise-client-urls", "list of this member's client URLs to advertise"},
      {"listen-peer-urls", "list of URLs to listen on for peer traffic"},
      {"initial-advertise-peer-urls", "list of this member's peer URLs to advertise"},
      {"initial-cluster", "initial cluster configuration for bootstrapping"},
      {"initial-cluster-token", "initial cluster token for the cluster during bootstrap"},
      {"initial-cluster-state", "initial cluster state ('new' or 'existing')"},
      {"discovery-srv", "DNS domain used to bootstrap the initial cluster (SRV records)"},
      {"discovery-srv-name", "suffix to the DNS SRV service name queried for discovery"},
      {"discovery-dns-server",
       "DNS server (ip:port) for --discovery-srv and peer host names (default: resolv.conf)"},
      {"listen-metrics-urls", "list of URLs to listen on for /metrics and /health"},
      {"quota-backend-bytes", "raise an alarm when the backend size exceeds this (0: 2 GiB)"},
      {"max-request-bytes", "maximum client request size in bytes"},
      {"max-txn-ops", "maximum number of operations permitted in a transaction"},
      {"auto-compaction-mode", "'periodic' or 'revision'"},
      {"auto-compaction-retention", "auto compaction retention (0 disables)"},
      {"log-level", "debug, info, warn, error, panic or fatal"},
      {"snapshot-count", "number of committed entries between log truncations"},
      {"heartbeat-interval", "time (in milliseconds) of a heartbeat interval"},
      {"election-timeout", "time (in milliseconds) for an election to timeout"},
      {"experimental-watch-progress-notify-interval",
       "duration of periodic watch progress notifications"},
      {"experimental-snapshot-catchup-entries",
       "number of entries a slow follower can catch up from after a snapshot"},
      {"pre-vote",
       "enable the raft Pre-Vote algorithm to prevent disruption when a member rejoins"},
      {"strict-reconfig-check", "reject reconfiguration requests that would cause quorum loss"},
  };
  for (auto& [name, target] : flags) {
    if (auto it = envmap.find("ETCD_" + EnvName(name)); it != envmap.end()) *target = it->second;
    app.add_option("--" + name, *target, help[name]);
  }
  app.add_flag("--version", version, "print the version and exit");

  auto go_on = ParseArgs(app, GoStyleArgs(argc, argv, {"--pre-vote", "--strict-reconfig-check"}),
                         out);
  if (!go_on.ok()) return go_on.status();
  if (!*go_on) {
    parsed.exit_now = true;
    return parsed;
  }
  if (version) {
    out << "meridian-node Version: " << kServerVersion << "\nAPI version: " << kApiVersion << "\n";
    parsed.exit_now = true;
    return parsed;
  }

  auto q = ParseIntFlag("quota-backend-bytes", quota, INT64_MIN, INT64_MAX);
  auto mr = ParseIntFlag("max-request-bytes", max_request, 1, (1ll << 31) - (1 << 20));
  auto mto = ParseIntFlag("max-txn-ops", max_txn_ops, 1, 1 << 20);
  auto sc = ParseIntFlag("snapshot-count", snapshot_count, 1, INT64_MAX);
  auto hb = ParseIntFlag("heartbeat-interval", heartbeat, 1, 60000);
  auto el = ParseIntFlag("election-timeout", election, 1, 600000);
  auto ce = ParseIntFlag("experimental-snapshot-catchup-entries", catchup_entries, 1, INT64_MAX);
  for (auto* s : {&q, &mr, &mto, &sc, &hb, &el, &ce}) {
    if (!s->ok()) return s->status();
  }
  c.quota_backend_bytes = *q;
  c.max_request_bytes = static_cast<uint64_t>(*mr);
  c.max_txn_ops = static_cast<uint32_t>(*mto);
  c.snapshot_count = static_cast<uint64_t>(*sc);
  c.snapshot_catchup_entries = static_cast<uint64_t>(*ce);
  c.heartbeat_interval_ms = static_cast<uint32_t>(*hb);
  c.election_timeout_ms = static_cast<uint32_t>(*el);
  if (c.election_timeout_ms < 5 * c.heartbeat_interval_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("--election-timeout[", c.election_timeout_ms,
                     "ms] should be at least as 5 times as --heartbeat-interval[",
                     c.heartbeat_interval_ms, "ms]"));
  }
  auto parse_bool = [](const std::string& flag, const std::string& v) -> absl::StatusOr<bool> {
    if (v == "true" || v == "1" || v == "t" || v == "T" || v == "TRUE" || v == "True") return true;
    if (v == "false" || v == "0" || v == "f" || v == "F" || v == "FALSE" || v == "False") {
      return false;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("invalid boolean value \"", v, "\" for flag --", flag));
  };
  auto pv = parse_bool("pre-vote", pre_vote);
  auto sr = parse_bool("strict-reconfig-check", strict_reconfig);
  if (!pv.ok()) return pv.status();
  if (!sr.ok()) return sr.status();
  c.pre_vote = *pv;
  c.strict_reconfig_check = *sr;
  auto pi = ParseDurationMs(progress_interval);
  if (!pi.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value for --experimental-watch-progress-notify-interval: ",
                     pi.status().message()));
  }
  c.watch_progress_notify_interval_ms = static_cast<uint64_t>(*pi);
  if (!listen_client.empty()) c.listen_client_urls = SplitCommas(listen_client);
  if (!advertise_client.empty()) c.advertise_client_urls = SplitCommas(advertise_client);
  if (!listen_peer.empty()) c.listen_peer_urls = SplitCommas(listen_peer);
  if (!initial_advertise_peer.empty()) {
    c.initial_advertise_peer_urls = SplitCommas(initial_advertise_peer);
  }
  if (!listen_metrics.empty()) c.listen_metrics_urls = SplitCommas(listen_metrics);
  if (c.name.empty()) return absl::InvalidArgumentError("--name must not be empty");
  if (c.data_dir.empty()) c.data_dir = c.name + ".etcd";
  if (c.wal_dir.empty()) c.wal_dir = c.data_dir + "/member/wal";
  if (!c.discovery_srv.empty() && !c.initial_cluster.empty()) {
    return absl::InvalidArgumentError(
        "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", "
        "\"discovery\" or \"discovery-srv\"");
  }
  if (!c.discovery_dns_server.empty()) {
    auto dns = discovery::ParseDnsServer(c.discovery_dns_server);
    if (!dns.ok()) return dns.status();
    c.discovery_dns_server = *dns;
  }
  if (c.initial_cluster.empty() && c.discovery_srv.empty()) {
    for (const auto& u : c.initial_advertise_peer_urls) {
      if (!c.initial_cluster.empty()) c.initial_cluster += ",";
      c.initial_cluster += c.name + "=" + u;
    }
  }
  if (c.initial_cluster_state != "new" && c.initial_cluster_state != "existing") {
    return absl::InvalidArgumentError(absl::StrCat("invalid value \"", c.initial_cluster_state,
                                                   "\" for flag --initial-cluster-state"));
  }
  if (c.auto_compaction_mode != "periodic" && c.auto_compaction_mode != "revision") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown auto-compaction-mode \"", c.auto_compaction_mode, "\""));
  }
  static const char* kLevels[] = {"debug", "info", "warn", "error", "dpanic", "panic", "fatal"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown log level \"", c.log_level, "\""));
  }
  if (c.listen_client_urls.empty()) {
    return absl::InvalidArgumentError("--listen-client-urls must not be empty");
  }
  return parsed;
}

}  // namespace meridian::server
