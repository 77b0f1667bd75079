#include "proxy/config.h"

#include <CLI/CLI.hpp>
#include <climits>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/duration.h"
#include "common/flags.h"
#include "common/log.h"
#include "discovery/resolver.h"

namespace meridian::proxy {
namespace {

absl::StatusOr<double> ParseRate(const std::string& flag, const std::string& v) {
  double d = 0;
  if (!absl::SimpleAtod(v, &d) || !(d >= 0) || d > 1e15) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value \"", v, "\" for flag --", flag, ": want a number >= 0"));
  }
  return d;
}

absl::StatusOr<int64_t> ParseDuration(const std::string& flag, const std::string& v) {
  auto ms = ParseDurationMs(v);
  if (!ms.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value for --", flag, ": ", ms.status().message()));
  }
  return *ms;
}

}  // namespace

absl::StatusOr<ParsedProxyFlags> ParseProxyFlags(int argc, const char* const* argv,
                                                 const std::vector<std::string>& env,
                                                 std::ostream& out) {
  ParsedProxyFlags parsed;
  ProxyConfig& c = parsed.config;
  CLI::App app{"meridian-proxy: a stateless etcd v3 gRPC proxy that coalesces watches and leases"};
  app.set_help_flag("-h,--help", "print this help");
  bool version = false;
  std::string endpoints = "127.0.0.1:2379", metrics_addr, max_request = "1572864",
              auto_sync = "30s", probe = "1s", qrps = "0", qbps = "0", qwatchers = "0",
              max_per_stream = "10000", buffer = std::to_string(c.watch_stream_buffer_bytes),
              history = std::to_string(c.watch_history_events), no_leader = "5s",
              cache_ttl = "0", cache_entries = "10000";
  std::map<std::string, std::pair<std::string*, std::string>> flags = {
      {"endpoints", {&endpoints, "comma-separated upstream member client addresses"}},
      {"listen-addr", {&c.listen_addr, "address to serve gRPC, /health and /metrics on"}},
      {"metrics-addr", {&metrics_addr, "extra address(es) for /health and /metrics (http://h:p)"}},
      {"namespace", {&c.ns, "string that prefixes every client key (isolation)"}},
      {"max-request-bytes", {&max_request, "maximum client request size in bytes"}},
      {"auto-sync-interval",
       {&auto_sync, "how often the member list refreshes the upstreams (0 disables)"}},
      {"probe-interval", {&probe, "how often every upstream member is health-checked"}},
      {"quota-requests-per-second", {&qrps, "per-client request rate limit (0: none)"}},
      {"quota-bytes-per-second", {&qbps, "per-client request byte rate limit (0: none)"}},
      {"quota-watchers", {&qwatchers, "per-client limit on open watchers (0: none)"}},
      {"max-watchers-per-stream", {&max_per_stream, "watchers one watch stream may hold"}},
      {"watch-stream-buffer-bytes",
       {&buffer, "responses queued per slow client watch stream before it is parked"}},
      {"watch-history-events", {&history, "events each coalesced watch keeps for late joiners"}},
      {"no-leader-close-after",
       {&no_leader, "close require-leader watch streams after this long without a leader"}},
      {"read-cache-ttl", {&cache_ttl, "reuse serializable range responses this long (0: off)"}},
      {"read-cache-entries", {&cache_entries, "bound on cached serializable range responses"}},
      {"log-level", {&c.log_level, "debug, info, warn, error, panic or fatal"}},
      {"discovery-srv",
       {&c.discovery_srv, "domain whose SRV records name the members (followed as they change)"}},
      {"discovery-srv-name", {&c.discovery_srv_name, "suffix to the SRV service name"}},
      {"discovery-dns-server",
       {&c.discovery_dns_server, "DNS server (ip:port) for --discovery-srv (default: resolv.conf)"}},
      {"cert-file", {&c.cert_file, "TLS certificate served to clients (PEM)"}},
      {"key-file", {&c.key_file, "TLS key of --cert-file (PEM)"}},
      {"trusted-ca-file",
       {&c.trusted_ca_file, "CA (PEM) that must have signed every client's certificate"}},
  };
  const std::map<std::string, std::string> envmap = EnvironmentMap(env);
  for (auto& [name, target] : flags) {
    for (const std::string prefix : {"ETCD_", "MERIDIAN_PROXY_"}) {
      if (auto it = envmap.find(prefix + EnvName(name)); it != envmap.end()) {
        *target.first = it->second;
      }
    }
    app.add_option("--" + name, *target.first, target.second);
  }
  app.add_flag("--version", version, "print the version and exit");
  std::vector<std::string> args = GoStyleArgs(argc, argv);
  // `meridian-proxy start ...` reads like `etcd grpc-proxy start ...`.
  if (!args.empty() && args.back() == "start") args.pop_back();
  auto go_on = ParseArgs(app, std::move(args), out);
  if (!go_on.ok()) return go_on.status();
  if (!*go_on) {
    parsed.exit_now = true;
    return parsed;
  }
  if (version) {
    out << "meridian-proxy Version: 3.5.17\n";
    parsed.exit_now = true;
    return parsed;
  }
  auto mr = ParseIntFlag("max-request-bytes", max_request, 1, (1ll << 31) - (1 << 20));
  auto qw = ParseIntFlag("quota-watchers", qwatchers, 0, INT64_MAX);
  auto mps = ParseIntFlag("max-watchers-per-stream", max_per_stream, 0, INT64_MAX);
  auto buf = ParseIntFlag("watch-stream-buffer-bytes", buffer, 64 << 10, 1ll << 40);
  auto hist = ParseIntFlag("watch-history-events", history, 0, 1 << 24);
  auto ce = ParseIntFlag("read-cache-entries", cache_entries, 0, 1 << 24);
  auto as = ParseDuration("auto-sync-interval", auto_sync);
  auto pi = ParseDuration("probe-interval", probe);
  auto nl = ParseDuration("no-leader-close-after", no_leader);
  auto ct = ParseDuration("read-cache-ttl", cache_ttl);
  for (auto* s : {&mr, &qw, &mps, &buf, &hist, &ce, &as, &pi, &nl, &ct}) {
    if (!s->ok()) return s->status();
  }
  auto rps = ParseRate("quota-requests-per-second", qrps);
  auto bps = ParseRate("quota-bytes-per-second", qbps);
  if (!rps.ok()) return rps.status();
  if (!bps.ok()) return bps.status();
  c.max_request_bytes = static_cast<uint64_t>(*mr);
  c.quota_watchers = *qw;
  c.max_watchers_per_stream = *mps;
  c.watch_stream_buffer_bytes = *buf;
  c.watch_history_events = *hist;
  c.read_cache_entries = *ce;
  c.auto_sync_interval_ms = *as;
  c.probe_interval_ms = *pi;
  c.no_leader_close_ms = *nl;
  c.read_cache_ttl_ms = *ct;
  c.quota_requests_per_second = *rps;
  c.quota_bytes_per_second = *bps;
  if (c.probe_interval_ms < 10) {
    return absl::InvalidArgumentError("--probe-interval must be at least 10ms");
  }
  c.endpoints.clear();
  for (auto e : absl::StrSplit(endpoints, ',', absl::SkipWhitespace())) {
    c.endpoints.emplace_back(e);
  }
  if (c.endpoints.empty()) return absl::InvalidArgumentError("--endpoints must not be empty");
  if (!c.discovery_dns_server.empty()) {
    auto dns = discovery::ParseDnsServer(c.discovery_dns_server);
    if (!dns.ok()) return dns.status();
    c.discovery_dns_server = *dns;
  }
  c.metrics_addrs.clear();
  for (auto e : absl::StrSplit(metrics_addr, ',', absl::SkipWhitespace())) {
    c.metrics_addrs.emplace_back(e);
  }
  if (c.cert_file.empty() != c.key_file.empty()) {
    return absl::InvalidArgumentError("--cert-file and --key-file go together");
  }
  if (!c.trusted_ca_file.empty() && c.cert_file.empty()) {
    return absl::InvalidArgumentError("--trusted-ca-file needs --cert-file and --key-file");
  }
  if (!ParseLogLevel(c.log_level).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown log level \"", c.log_level, "\""));
  }
  return parsed;
}

}  // namespace meridian::proxy
