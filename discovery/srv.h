// etcd's DNS discovery on top of the resolver: the SRV names etcd uses, RFC 2782 ordering, the
// endpoints a domain publishes (with their addresses), and the initial cluster a member bootstraps
// from (etcd's --discovery-srv).
#ifndef MERIDIAN_DISCOVERY_SRV_H_
#define MERIDIAN_DISCOVERY_SRV_H_

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "discovery/dns_message.h"
#include "discovery/resolver.h"

namespace meridian::discovery {

// "_<service>[-<suffix>]._tcp.<domain>", as etcd builds it: SrvName("etcd-server-ssl", "prod",
// "example.com") is "_etcd-server-ssl-prod._tcp.example.com". A trailing dot on the domain is
// dropped.
std::string SrvName(std::string_view service, std::string_view suffix, std::string_view domain);

// RFC 2782 order: ascending priority; within one priority, a weighted random order (records of
// weight 0 come first in the draw, so each has a small chance of being picked early).
void OrderByPriorityAndWeight(std::vector<SrvRecord>* records, std::mt19937_64* rng);

// Which pair of services to look up.
enum class Role {
  kPeers,    // _etcd-server-ssl and _etcd-server
  kClients,  // _etcd-client-ssl and _etcd-client
};

struct DiscoveredEndpoint {
  std::string scheme;  // "https" from the -ssl service, else "http"
  std::string host;    // the SRV target, without the trailing dot
  uint16_t port = 0;
  uint16_t priority = 0;
  uint16_t weight = 0;
  std::vector<std::string> addresses;  // what `host` resolves to, sorted

  std::string HostPort() const;  // "m1.example.com:2379"
  std::string Url() const;       // "http://m1.example.com:2379"
  friend bool operator==(const DiscoveredEndpoint&, const DiscoveredEndpoint&) = default;
};

struct Discovery {
  std::vector<DiscoveredEndpoint> endpoints;  // RFC 2782 order
  uint32_t ttl_s = 0;                         // smallest TTL of every record used
  // Records that were left out, and why (a "." target, port 0, a target without addresses,
  // more than kMaxEndpoints): the caller logs them.
  std::vector<std::string> skipped;
};

inline constexpr size_t kMaxEndpoints = 64;

// Looks up both services of `role` for `domain` at once, then the addresses of every target.
// A service that does not exist (NotFound) is fine as long as the other one has records. Any
// other failure of either lookup fails the whole discovery with that error, so that a transient
// DNS problem is never mistaken for "these members are gone". Errors:
//   NotFound          neither service has a usable record (the message lists why for each);
//   Unavailable, DeadlineExceeded, DataLoss: as the resolver reports them.
[[nodiscard]] absl::StatusOr<Discovery> Discover(Resolver* resolver, Role role,
                                                 std::string_view domain, std::string_view suffix,
                                                 std::mt19937_64* rng);

// etcd's --discovery-srv for a member: "name=url,..." for --initial-cluster, built from the
// _etcd-server-ssl/_etcd-server records of `domain`. The target whose address and port match one
// of `advertise_peer_urls` (resolved the same way) is this member and gets `name`; the others are
// named "0", "1", ... in record order, as etcd names them. Unlike etcd, a target that does not
// resolve is an error rather than left out: members that saw different records would otherwise
// compute different cluster ids. Errors name the records and the advertised URLs:
//   InvalidArgument  no target matches this member ("cannot find local etcd member ..."), or a
//                    matching target's scheme differs from the advertised URL's;
//   and Discover's errors.
[[nodiscard]] absl::StatusOr<std::string> InitialClusterFromSrv(
    Resolver* resolver, std::string_view domain, std::string_view suffix, const std::string& name,
    const std::vector<std::string>& advertise_peer_urls);

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_SRV_H_
