// etcd-style URLs as given to --listen-client-urls, --advertise-client-urls,
// --listen-peer-urls, --initial-advertise-peer-urls and --initial-cluster.
//
//   http://127.0.0.1:2379   https://[::1]:2379   http://node-1.example:2380   unix://localhost:1234
//
// Accepted like etcd (types.NewURLs): scheme http, https, unix or unixs (any case); for http and
// https a host and a port are required and no path is allowed. For unix and unixs the authority
// ("localhost:1234") is a socket file name, as etcd uses it; the port is optional there.
#ifndef MERIDIAN_COMMON_URL_H_
#define MERIDIAN_COMMON_URL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace meridian {

struct Url {
  enum class HostKind { kIPv4, kIPv6, kHostname, kUnspecified };

  std::string scheme;  // "http", "https", "unix" or "unixs": lower case
  std::string host;    // IPv6 without brackets; may be empty ("http://:2379" = all addresses)
  HostKind host_kind = HostKind::kUnspecified;
  bool has_port = false;
  uint16_t port = 0;  // 0 is allowed (listen on a free port)

  bool secure() const { return scheme == "https" || scheme == "unixs"; }
  bool is_unix() const { return scheme == "unix" || scheme == "unixs"; }
  // "127.0.0.1:2379", "[::1]:2379"; for unix URLs this is the socket path.
  std::string HostPort() const;
  // "http://127.0.0.1:2379": the canonical text, which parses back to the same Url.
  std::string ToString() const;

  friend bool operator==(const Url&, const Url&) = default;
};

// One URL; surrounding whitespace is ignored. InvalidArgument says what is wrong and repeats
// the input.
[[nodiscard]] absl::StatusOr<Url> ParseUrl(std::string_view text);

// A comma-separated list ("http://a:2379,http://b:2379"), in the given order (etcd sorts its
// lists; sort if that matters). Empty input or an empty element is an error.
[[nodiscard]] absl::StatusOr<std::vector<Url>> ParseUrlList(std::string_view text);

struct ClusterMemberUrls {
  std::string name;
  std::vector<Url> peer_urls;  // in the order given
};

// --initial-cluster: "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380". A name may
// appear more than once to give a member several peer URLs. Members come in order of first
// appearance. Empty elements are skipped, as etcd does; an empty result is an error, and so is
// the same URL given for two members.
[[nodiscard]] absl::StatusOr<std::vector<ClusterMemberUrls>> ParseInitialCluster(
    std::string_view text);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_URL_H_
