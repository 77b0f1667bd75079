// Asynchronous DNS lookups with c-ares: SRV records (decoded by dns_message.h, with TTLs) and
// host addresses (A and AAAA at once, through ares_getaddrinfo, which also reads /etc/hosts and
// takes IP literals).
//
//   auto resolver = *Resolver::Create({.dns_server = "127.0.0.1:5353"});
//   auto srv = resolver->LookupSrv({"_etcd-client._tcp.example.com", "_etcd-client-ssl._tcp..."});
//   auto hosts = resolver->LookupHosts({"m1.example.com", "m2.example.com"});
//
// Every lookup of one call is in flight at once on the channel, and the call returns when the last
// one has finished; a call never takes longer than Options::max_wait_ms. One Resolver is used by
// one thread at a time (each component owns its own); only Cancel() may come from another thread.
#ifndef MERIDIAN_DISCOVERY_RESOLVER_H_
#define MERIDIAN_DISCOVERY_RESOLVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "discovery/dns_message.h"

struct ares_channeldata;

namespace meridian::discovery {

struct ResolverOptions {
  // "ip:port", "[ipv6]:port" or a bare IP (port 53): --discovery-dns-server. Empty: the servers
  // of /etc/resolv.conf.
  std::string dns_server;
  // c-ares' per-try timeout (it doubles on each retry) and tries per server.
  int timeout_ms = 500;
  int tries = 3;
  // Upper bound of one LookupSrv/LookupHosts call; what is still pending then is cancelled and
  // reported as DeadlineExceeded.
  int max_wait_ms = 10000;
};

struct HostAddresses {
  std::vector<std::string> addresses;  // "10.0.0.1", "fd00::1": sorted, no duplicates
  uint32_t ttl_s = 0;                  // smallest TTL of the records (0 for literals and hosts)
};

// Checks and normalises a --discovery-dns-server value to c-ares' "ip:port" form.
[[nodiscard]] absl::StatusOr<std::string> ParseDnsServer(const std::string& text);

class Resolver {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Resolver>> Create(ResolverOptions options);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // One result per name, in order. Errors are those of ParseSrvAnswer, plus DeadlineExceeded
  // (no answer in time) and Unavailable (the server cannot be reached), each naming the server.
  std::vector<absl::StatusOr<std::vector<SrvRecord>>> LookupSrv(
      const std::vector<std::string>& names);
  // One result per host, in order: NotFound when the name has no address.
  std::vector<absl::StatusOr<HostAddresses>> LookupHosts(const std::vector<std::string>& hosts);

  // From any thread: the lookup under way (within about 100 ms) and every later one end with
  // Cancelled, so that a component stopping does not wait out a DNS server that is down.
  void Cancel() { cancelled_.store(true); }

  const ResolverOptions& options() const { return options_; }
  // "127.0.0.1:5353" or "the system resolver", for messages.
  std::string ServerDescription() const;

 private:
  explicit Resolver(ResolverOptions options) : options_(std::move(options)) {}
  // Drives the channel until *pending reaches 0 (callbacks decrement it).
  void RunUntilDone(const int* pending);
  absl::Status LookupError(const std::string& name, int ares_status) const;

  ResolverOptions options_;
  ares_channeldata* channel_ = nullptr;
  std::atomic<bool> cancelled_{false};
};

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_RESOLVER_H_
