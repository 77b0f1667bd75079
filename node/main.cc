// meridian-node: one etcd v3 compatible storage member. Parses etcd's flags, opens the member,
// serves gRPC and HTTP on the client URLs and HTTP on the metrics URLs until SIGINT/SIGTERM.
#include <grpcpp/grpcpp.h>

#include <climits>
#include <cstdio>
#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/client_listener.h"
#include "common/dial_target.h"
#include "common/flags.h"
#include "common/http_server.h"
#include "common/metrics.h"
#include "common/process.h"
#include "common/url.h"
#include "discovery/srv.h"
#include "node/peer/transport.h"
#include "node/server/config.h"
#include "node/server/etcd_server.h"
#include "node/server/services.h"
#include "node/server/version.h"

namespace {

void LogJson(const char* level, const std::string& msg) {
  fprintf(stderr, "{\"level\":\"%s\",\"msg\":\"%s\"}\n", level, msg.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace meridian;
  const std::vector<std::string> env = ProcessEnvironment();
  auto parsed = server::ParseFlags(argc, argv, env, std::cout);
  if (!parsed.ok()) return UsageError("meridian-node", parsed.status());
  if (parsed->exit_now) return parsed->exit_code;
  server::ServerConfig& config = parsed->config;
  SetDialDnsServer(config.discovery_dns_server);
  if (!config.discovery_srv.empty()) {
    config.discover_initial_cluster = [&config]() -> absl::StatusOr<std::string> {
      discovery::ResolverOptions ro;
      ro.dns_server = config.discovery_dns_server;
      auto resolver = discovery::Resolver::Create(ro);
      if (!resolver.ok()) return resolver.status();
      return discovery::InitialClusterFromSrv(resolver->get(), config.discovery_srv,
                                              config.discovery_srv_name, config.name,
                                              config.initial_advertise_peer_urls);
    };
  }

  std::vector<Url> client_urls, metrics_urls;
  for (const auto* list : {&config.listen_client_urls, &config.listen_metrics_urls}) {
    for (const auto& text : *list) {
      auto u = ParseUrl(text);
      if (!u.ok()) {
        std::cerr << "meridian-node: " << u.status().message() << "\n";
        return 2;
      }
      if (u->secure() || u->is_unix()) {
        std::cerr << "meridian-node: " << text
                  << ": TLS and unix-socket listeners are not supported by this build\n";
        return 2;
      }
      (list == &config.listen_client_urls ? client_urls : metrics_urls).push_back(*u);
    }
  }

  PrepareServerProcess();
  metrics::Registry registry;
  lease::SystemClock clock;
  auto opened = server::EtcdServer::Open(config, &clock, &registry);
  if (!opened.ok()) {
    LogJson("fatal", absl::StrCat("failed to start: ", opened.status().ToString()));
    return 1;
  }
  std::unique_ptr<server::EtcdServer> etcd = std::move(*opened);
  auto peer_server = peer::StartPeerServer(config.listen_peer_urls, etcd->transport());
  if (!peer_server.ok()) {
    LogJson("fatal", absl::StrCat("failed to listen for peers on ",
                                  absl::StrJoin(config.listen_peer_urls, ","), ": ",
                                  peer_server.status().ToString()));
    etcd->Stop();
    return 1;
  }
  auto services = server::MakeServices(etcd.get());

  grpc::ServerBuilder builder;
  for (auto& s : services) builder.RegisterService(s.get());
  // etcd lets gRPC take a little more than --max-request-bytes so that its own check gives the
  // etcd error for requests just over the limit.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(config.max_request_bytes + 512 * 1024, INT_MAX)));
  builder.SetMaxSendMessageSize(INT_MAX);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * 60 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  // Channelz bookkeeping is work on every call, and nothing here serves the channelz service.
  builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server) {
    LogJson("fatal", "failed to start the gRPC server");
    return 1;
  }

  // etcd 3.5's /health: unhealthy (503) while an alarm is raised.
  auto health = [&](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "application/json";
    std::string reason;
    for (const auto& a : etcd->Alarms()) {
      reason = absl::StrCat("ALARM ", etcdserverpb::AlarmType_Name(a.alarm()));
    }
    if (reason.empty() && etcd->leader() == 0) reason = "RAFT NO LEADER";
    r.status = reason.empty() ? 200 : 503;
    r.body = absl::StrCat("{\"health\":\"", reason.empty() ? "true" : "false", "\",\"reason\":\"",
                          reason, "\"}");
    return r;
  };
  auto version = [&](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "application/json";
    r.body = absl::StrCat("{\"etcdserver\":\"", server::kServerVersion, "\",\"etcdcluster\":\"",
                          server::kClusterVersion, "\"}");
    return r;
  };
  auto metrics_handler = [&](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = registry.Render();
    return r;
  };

  // Metrics and health on --listen-metrics-urls come up at once, so that monitoring sees a
  // member that has not joined (e.g. one without a leader).
  std::vector<std::unique_ptr<HttpServer>> metrics_servers;
  for (const auto& u : metrics_urls) {
    HttpServerOptions o;
    o.host = u.host;
    o.port = u.port;
    auto h = std::make_unique<HttpServer>(o);
    h->Handle("/health", health);
    h->Handle("/version", version);
    h->Handle("/metrics", metrics_handler);
    if (auto st = h->Start(); !st.ok()) {
      LogJson("fatal", absl::StrCat("failed to listen on ", u.HostPort(), ": ", st.ToString()));
      return 1;
    }
    metrics_servers.push_back(std::move(h));
  }

  // Like etcd, serve clients only once this member has joined the cluster: it knows a leader
  // and has published its name and client URLs through the log. Until then a client's
  // connection waits (the port is not open yet) instead of getting "no leader".
  while (!etcd->Ready()) {
    if (const int sig = WaitForStopSignal(20); sig != 0) {
      LogJson("info", absl::StrCat("received signal ", sig, " before serving, shutting down"));
      for (auto& h : metrics_servers) h->Stop();
      etcd->Stop();
      (*peer_server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
      return 0;
    }
  }
  std::vector<std::unique_ptr<ClientListener>> client_listeners;
  for (const auto& u : client_urls) {
    HttpServerOptions o;
    o.host = u.host;
    o.port = u.port;
    auto l = std::make_unique<ClientListener>(o, grpc_server.get());
    l->Handle("/health", health);
    l->Handle("/version", version);
    l->Handle("/metrics", metrics_handler);
    if (auto st = l->Start(); !st.ok()) {
      LogJson("fatal", absl::StrCat("failed to listen on ", u.HostPort(), ": ", st.ToString()));
      return 1;
    }
    LogJson("info", absl::StrCat("serving client traffic insecurely; this is strongly "
                                 "discouraged! address ",
                                 u.HostPort()));
    client_listeners.push_back(std::move(l));
  }
  LogJson("info", absl::StrCat("ready to serve client requests; member ", etcd->name(), " version ",
                               server::kServerVersion));

  const int sig = WaitForStopSignal();
  LogJson("info", absl::StrCat("received signal ", sig, ", shutting down"));
  for (auto& l : client_listeners) l->Stop();
  for (auto& h : metrics_servers) h->Stop();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  etcd->Stop();  // stops the transport first: peer streams are long-lived
  (*peer_server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}
