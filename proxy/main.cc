// meridian-proxy: a stateless etcd v3 gRPC proxy in front of one cluster's members. Serves gRPC
// and HTTP (/health, /metrics) on --listen-addr until SIGINT/SIGTERM.
#include <grpcpp/grpcpp.h>

#include <climits>
#include <fstream>
#include <sstream>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/client_listener.h"
#include "common/dial_target.h"
#include "common/flags.h"
#include "common/process.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/url.h"
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "proxy/watch_proxy.h"
#include "spdlog/spdlog.h"

namespace {

absl::StatusOr<meridian::Url> ParseAddr(const std::string& text) {
  std::string s = text;
  if (s.find("://") == std::string::npos) s = "http://" + s;
  auto u = meridian::ParseUrl(s);
  if (!u.ok()) return u.status();
  if (u->secure() || u->is_unix()) {
    return absl::InvalidArgumentError(absl::StrCat(text, ": TLS and unix sockets are not supported"));
  }
  return u;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// TLS server credentials from the flags; clients must present a certificate signed by
// --trusted-ca-file when it is given.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const meridian::proxy::ProxyConfig& c) {
  auto cert = ReadFile(c.cert_file);
  auto key = ReadFile(c.key_file);
  if (!cert.ok()) return cert.status();
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      c.trusted_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!c.trusted_ca_file.empty()) {
    auto ca = ReadFile(c.trusted_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace meridian;
  const std::vector<std::string> env = ProcessEnvironment();
  auto parsed = proxy::ParseProxyFlags(argc, argv, env, std::cout);
  if (!parsed.ok()) return UsageError("meridian-proxy", parsed.status());
  if (parsed->exit_now) return parsed->exit_code;
  const proxy::ProxyConfig& config = parsed->config;
  (void)SetLogLevel(config.log_level);
  auto listen = ParseAddr(config.listen_addr);
  if (!listen.ok()) {
    std::cerr << "meridian-proxy: --listen-addr: " << listen.status().message() << "\n";
    return 2;
  }
  std::vector<Url> metrics_urls;
  for (const auto& a : config.metrics_addrs) {
    auto u = ParseAddr(a);
    if (!u.ok()) {
      std::cerr << "meridian-proxy: --metrics-addr: " << u.status().message() << "\n";
      return 2;
    }
    metrics_urls.push_back(*u);
  }

  PrepareServerProcess();

  SetDialDnsServer(config.discovery_dns_server);
  metrics::Registry registry;
  proxy::Proxy px(config, &registry);
  if (auto st = px.Start(); !st.ok()) {
    std::cerr << "meridian-proxy: " << st.message() << "\n";
    return 2;
  }
  registry.gauge_fn("meridian_proxy_client_watchers", "Watchers opened by clients.",
                    [&] { return static_cast<double>(px.watch()->client_watchers()); });
  registry.gauge_fn("meridian_proxy_upstream_watchers", "Watchers the proxy holds upstream.",
                    [&] { return static_cast<double>(px.watch()->upstream_watchers()); });
  registry.gauge_fn("meridian_proxy_watch_coalescing_ratio",
                    "Client watchers per upstream watcher (0 when none upstream).", [&] {
                      double up = static_cast<double>(px.watch()->upstream_watchers());
                      return up == 0 ? 0.0 : px.watch()->client_watchers() / up;
                    });
  registry.gauge_fn("meridian_proxy_quota_rejections", "Requests and watchers refused by quota.",
                    [&] { return static_cast<double>(px.quota()->rejections()); });

  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(px.service());
  const bool tls = !config.cert_file.empty();
  if (tls) {
    // TLS: gRPC listens by itself (the plain-text listener that also serves HTTP is not used).
    auto creds = TlsCredentials(config);
    if (!creds.ok()) {
      std::cerr << "meridian-proxy: " << creds.status().message() << "\n";
      return 2;
    }
    builder.AddListeningPort(listen->HostPort(), *creds);
  }
  // As etcd: gRPC takes a little more than --max-request-bytes, so that the proxy's own check
  // answers with etcd's error for requests just over the limit.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(config.max_request_bytes + 512 * 1024, INT_MAX)));
  builder.SetMaxSendMessageSize(INT_MAX);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * 60 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "meridian-proxy: failed to start the gRPC server\n";
    return 1;
  }

  auto health = [&](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "application/json";
    bool ok = px.Healthy();
    r.status = ok ? 200 : 503;
    r.body = ok ? R"({"health":"true","reason":""})"
                : R"({"health":"false","reason":"no upstream member with a leader"})";
    return r;
  };
  auto metrics_handler = [&](const HttpRequest&) {
    HttpResponse r;
    r.content_type = std::string(metrics::kContentType);
    r.body = registry.Render();
    return r;
  };
  HttpServerOptions o;
  o.host = listen->host;
  o.port = listen->port;
  ClientListener listener(o, server.get());
  listener.Handle("/health", health);
  listener.Handle("/metrics", metrics_handler);
  if (!tls) {
    if (auto st = listener.Start(); !st.ok()) {
      spdlog::critical("failed to listen on {}: {}", listen->HostPort(), st.ToString());
      return 1;
    }
  }
  std::vector<std::unique_ptr<HttpServer>> metrics_servers;
  for (const auto& u : metrics_urls) {
    HttpServerOptions mo;
    mo.host = u.host;
    mo.port = u.port;
    auto h = std::make_unique<HttpServer>(mo);
    h->Handle("/health", health);
    h->Handle("/metrics", metrics_handler);
    if (auto st = h->Start(); !st.ok()) {
      spdlog::critical("failed to listen on {}: {}", u.HostPort(), st.ToString());
      return 1;
    }
    metrics_servers.push_back(std::move(h));
  }
  spdlog::info("meridian-proxy serving {} on {} for {}", tls ? "TLS" : "plain text",
               listen->HostPort(),
               config.discovery_srv.empty()
                   ? absl::StrJoin(config.endpoints, ",")
                   : absl::StrCat("the members named by DNS SRV records of ", config.discovery_srv));

  const int sig = WaitForStopSignal();
  spdlog::info("received signal {}, shutting down", sig);
  if (!tls) listener.Stop();
  for (auto& h : metrics_servers) h->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  px.Stop();
  return 0;
}
