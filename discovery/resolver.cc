#include "discovery/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace meridian::discovery {
namespace {

constexpr int kTypeSrv = 33;
constexpr int kClassIn = 1;

std::once_flag g_library_once;
int g_library_status = ARES_SUCCESS;

bool IsIp(const std::string& s, int family) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(family, s.c_str(), buf) == 1;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct SrvQuery {
  Resolver* resolver;
  std::string name;
  absl::StatusOr<std::vector<SrvRecord>>* result;
  int* pending;
};

struct HostQuery {
  std::string host;
  absl::StatusOr<HostAddresses>* result;
  int* pending;
  const Resolver* resolver;
};

}  // namespace

absl::StatusOr<std::string> ParseDnsServer(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--discovery-dns-server \"", text, "\": ", why,
                                                   " (want ip:port, e.g. 127.0.0.1:53)"));
  };
  std::string host = text, port_text = "53";
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos) return bad("unclosed '['");
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return bad("junk after ']'");
      port_text = text.substr(close + 2);
    }
    if (!IsIp(host, AF_INET6)) return bad("not an IPv6 address");
  } else if (IsIp(text, AF_INET6)) {
    host = text;
  } else {
    auto colon = text.rfind(':');
    if (colon != std::string::npos) {
      host = text.substr(0, colon);
      port_text = text.substr(colon + 1);
    }
    if (!IsIp(host, AF_INET)) return bad("the host must be an IP address");
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port <= 0 || port > 65535) return bad("bad port");
  return IsIp(host, AF_INET6) ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::StatusOr<std::unique_ptr<Resolver>> Resolver::Create(ResolverOptions options) {
  std::call_once(g_library_once, [] { g_library_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (g_library_status != ARES_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("c-ares initialisation failed: ", ares_strerror(g_library_status)));
  }
  if (options.timeout_ms <= 0 || options.tries <= 0 || options.max_wait_ms <= 0) {
    return absl::InvalidArgumentError("resolver timeouts and tries must be positive");
  }
  std::string server;
  if (!options.dns_server.empty()) {
    auto parsed = ParseDnsServer(options.dns_server);
    if (!parsed.ok()) return parsed.status();
    server = *parsed;
  }
  std::unique_ptr<Resolver> r(new Resolver(std::move(options)));
  ares_options opts{};
  opts.timeout = r->options_.timeout_ms;
  opts.tries = r->options_.tries;
  // No search domains: the names asked for are absolute.
  opts.flags = ARES_FLAG_NOSEARCH;
  // With one server of our own there is no other server to fail over to: keep its SERVFAIL or
  // REFUSED answer, so the error says what the server said rather than "connection refused".
  if (!server.empty()) opts.flags |= ARES_FLAG_NOCHECKRESP;
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
  int rc = ares_init_options(&r->channel_, &opts, mask);
  if (rc != ARES_SUCCESS) {
    return absl::InternalError(absl::StrCat("c-ares channel: ", ares_strerror(rc)));
  }
  if (!server.empty()) {
    rc = ares_set_servers_ports_csv(r->channel_, server.c_str());
    if (rc != ARES_SUCCESS) {
      return absl::InvalidArgumentError(
          absl::StrCat("--discovery-dns-server \"", server, "\": ", ares_strerror(rc)));
    }
  }
  return r;
}

Resolver::~Resolver() {
  if (channel_ != nullptr) ares_destroy(channel_);  // pending callbacks get ARES_EDESTRUCTION
}

std::string Resolver::ServerDescription() const {
  return options_.dns_server.empty() ? "the system resolver"
                                     : absl::StrCat("DNS server ", options_.dns_server);
}

absl::Status Resolver::LookupError(const std::string& name, int ares_status) const {
  if (ares_status == ARES_ECANCELLED && cancelled_.load()) {
    return absl::CancelledError(
        absl::StrCat("DNS lookup of ", name, " canceled: the resolver is stopping"));
  }
  switch (ares_status) {
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
      return absl::DeadlineExceededError(
          absl::StrCat("no DNS answer for ", name, " from ", ServerDescription(), " in time"));
    case ARES_ECONNREFUSED:
      return absl::UnavailableError(absl::StrCat(ServerDescription(),
                                                 " refused or failed the lookup of ", name,
                                                 " (connection refused, SERVFAIL or REFUSED)"));
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
      return absl::NotFoundError(absl::StrCat("no address records (A/AAAA) for ", name));
    case ARES_EBADRESP:
    case ARES_EBADNAME:
      return absl::DataLossError(
          absl::StrCat("malformed DNS answer for ", name, ": ", ares_strerror(ares_status)));
    default:
      return absl::UnavailableError(absl::StrCat("looking up ", name, " with ", ServerDescription(),
                                                 ": ", ares_strerror(ares_status)));
  }
}

std::vector<absl::StatusOr<std::vector<SrvRecord>>> Resolver::LookupSrv(
    const std::vector<std::string>& names) {
  std::vector<absl::StatusOr<std::vector<SrvRecord>>> results(
      names.size(), absl::UnknownError("lookup did not finish"));
  int pending = static_cast<int>(names.size());
  std::vector<std::unique_ptr<SrvQuery>> queries;
  for (size_t i = 0; i < names.size(); ++i) {
    queries.push_back(std::make_unique<SrvQuery>(SrvQuery{this, names[i], &results[i], &pending}));
    ares_query(
        channel_, names[i].c_str(), kClassIn, kTypeSrv,
        [](void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
          auto* q = static_cast<SrvQuery*>(arg);
          if (abuf != nullptr && alen > 0) {
            // An answer arrived (NXDOMAIN, NODATA and SERVFAIL included): its own code says most.
            *q->result = ParseSrvAnswer(
                q->name,
                std::string_view(reinterpret_cast<const char*>(abuf), static_cast<size_t>(alen)));
          } else if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
            *q->result = absl::NotFoundError(absl::StrCat("no SRV records for ", q->name));
          } else {
            *q->result = q->resolver->LookupError(q->name, status);
          }
          --*q->pending;
        },
        queries.back().get());
  }
  RunUntilDone(&pending);
  return results;
}

std::vector<absl::StatusOr<HostAddresses>> Resolver::LookupHosts(
    const std::vector<std::string>& hosts) {
  std::vector<absl::StatusOr<HostAddresses>> results(hosts.size(),
                                                     absl::UnknownError("lookup did not finish"));
  int pending = static_cast<int>(hosts.size());
  std::vector<std::unique_ptr<HostQuery>> queries;
  for (size_t i = 0; i < hosts.size(); ++i) {
    // IP literals are their own answer (c-ares 1.18 would send them to the DNS server).
    if (IsIp(hosts[i], AF_INET) || IsIp(hosts[i], AF_INET6)) {
      char text[INET6_ADDRSTRLEN] = {};
      unsigned char raw[sizeof(in6_addr)];
      const int family = IsIp(hosts[i], AF_INET) ? AF_INET : AF_INET6;
      inet_pton(family, hosts[i].c_str(), raw);
      inet_ntop(family, raw, text, sizeof(text));
      results[i] = HostAddresses{{text}, 0};
      --pending;
      continue;
    }
    queries.push_back(
        std::make_unique<HostQuery>(HostQuery{hosts[i], &results[i], &pending, this}));
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    // ARES_AI_NOSORT: no RFC 6724 sorting, which would open a socket per address.
    hints.ai_flags = ARES_AI_NOSORT;
    ares_getaddrinfo(
        channel_, hosts[i].c_str(), nullptr, &hints,
        [](void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
          auto* q = static_cast<HostQuery*>(arg);
          if (status != ARES_SUCCESS || res == nullptr) {
            *q->result = q->resolver->LookupError(q->host, status);
          } else {
            HostAddresses out;
            bool first = true;
            for (ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
              char text[INET6_ADDRSTRLEN] = {};
              if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(sockaddr_in)) {
                inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(n->ai_addr)->sin_addr, text,
                          sizeof(text));
              } else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(sockaddr_in6)) {
                inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(n->ai_addr)->sin6_addr, text,
                          sizeof(text));
              } else {
                continue;
              }
              out.addresses.emplace_back(text);
              uint32_t ttl = n->ai_ttl > 0 ? static_cast<uint32_t>(n->ai_ttl) : 0;
              out.ttl_s = first ? ttl : std::min(out.ttl_s, ttl);
              first = false;
            }
            std::sort(out.addresses.begin(), out.addresses.end());
            out.addresses.erase(std::unique(out.addresses.begin(), out.addresses.end()),
                                out.addresses.end());
            if (out.addresses.empty()) {
              *q->result = q->resolver->LookupError(q->host, ARES_ENODATA);
            } else {
              *q->result = std::move(out);
            }
          }
          if (res != nullptr) ares_freeaddrinfo(res);
          --*q->pending;
        },
        queries.back().get());
  }
  RunUntilDone(&pending);
  return results;
}

void Resolver::RunUntilDone(const int* pending) {
  const int64_t deadline_ms = NowMs() + options_.max_wait_ms;
  while (*pending > 0) {
    // Each pass waits at most 100 ms (max_tv below), so a Cancel() is seen that soon.
    if (NowMs() >= deadline_ms || cancelled_.load()) {
      ares_cancel(channel_);  // every pending callback runs now, with ARES_ECANCELLED
      MERIDIAN_CHECK_EQ(*pending, 0) << "c-ares left lookups pending after ares_cancel";
      break;
    }
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    const int bits = ares_getsock(channel_, socks, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    nfds_t nfds = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = 0;
      if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
      if (events == 0) continue;
      fds[nfds++] = pollfd{socks[i], events, 0};
    }
    timeval max_tv{0, 100 * 1000};
    timeval tv{};
    timeval* next = ares_timeout(channel_, &max_tv, &tv);
    int wait_ms = static_cast<int>(next->tv_sec * 1000 + next->tv_usec / 1000);
    wait_ms =
        std::clamp<int>(wait_ms, 1, static_cast<int>(std::max<int64_t>(1, deadline_ms - NowMs())));
    int ready = poll(fds, nfds, wait_ms);
    if (ready <= 0) {
      ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts and retries
      continue;
    }
    for (nfds_t i = 0; i < nfds; ++i) {
      const bool readable = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
      const bool writable = (fds[i].revents & POLLOUT) != 0;
      ares_process_fd(channel_, readable ? fds[i].fd : ARES_SOCKET_BAD,
                      writable ? fds[i].fd : ARES_SOCKET_BAD);
    }
  }
}

}  // namespace meridian::discovery
