// Decoding of the DNS answers discovery asks for: SRV records with their TTLs.
//
// c-ares 1.18 (Debian 12) delivers the raw answer of a query; its own ares_parse_srv_reply drops
// the TTL, which the proxy needs to know when to look again. So the record framing is decoded
// here, and names (with their compression pointers and loop checks) by c-ares' ares_expand_name.
// Every input is untrusted: any byte string yields records or a clear error, never a crash
// (fuzzed by dns_fuzz.cc, replayed in discovery_test).
#ifndef MERIDIAN_DISCOVERY_DNS_MESSAGE_H_
#define MERIDIAN_DISCOVERY_DNS_MESSAGE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace meridian::discovery {

struct SrvRecord {
  std::string target;  // host name without the trailing dot ("m1.example.com"); "" for "."
  uint16_t port = 0;
  uint16_t priority = 0;
  uint16_t weight = 0;
  uint32_t ttl_s = 0;

  friend bool operator==(const SrvRecord&, const SrvRecord&) = default;
};

// Limits on what one answer may carry, far above any real cluster's records.
inline constexpr size_t kMaxDnsMessageBytes = 65535;
inline constexpr size_t kMaxRecordsPerAnswer = 1024;

// The SRV records answering `question` (compared case-insensitively, after following CNAMEs in
// the answer section) in the DNS message `message`. Errors:
//   NotFound     NXDOMAIN, or no SRV record for the name (NODATA);
//   Unavailable  SERVFAIL or REFUSED;
//   DataLoss     a malformed message (truncated, bad names or lengths, too many records);
//   Internal     any other response code.
// The message says which name and why. Records are returned as they are, "." targets and port 0
// included: what to make of them is the caller's decision (see srv.h).
[[nodiscard]] absl::StatusOr<std::vector<SrvRecord>> ParseSrvAnswer(std::string_view question,
                                                                    std::string_view message);

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_DNS_MESSAGE_H_
