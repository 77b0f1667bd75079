// Per-client limits: requests per second, request bytes per second (token buckets refilled
// continuously, one second of burst) and concurrently open watchers.
//
// The client is identified by, in order: the CN of its TLS certificate, the etcd auth user
// behind its token (learned from Authenticate answers that pass through this proxy, or read from
// nothing else), else the IP address it connects from. The table is bounded: idle
// entries are dropped when it grows past max_entries.
#ifndef MERIDIAN_PROXY_QUOTA_H_
#define MERIDIAN_PROXY_QUOTA_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"

namespace meridian::proxy {

// token -> user, learned from Authenticate. Bounded LRU.
class AuthTokenCache {
 public:
  explicit AuthTokenCache(size_t max_entries = 100000) : max_entries_(max_entries) {}
  void Remember(const std::string& token, const std::string& user);
  // The user for `token` as an Authenticate answer through this proxy told it, else "". Token
  // contents are not trusted (a JWT's claims are not verified here), so an unknown token falls
  // back to the client's address.
  std::string UserOf(const std::string& token);

 private:
  size_t max_entries_;
  std::mutex mu_;
  std::list<std::pair<std::string, std::string>> lru_;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> map_;
};

// "cn:<CN>", "user:<name>" or "ip:<address>".
std::string ClientIdentity(const grpc::ServerContextBase& ctx, AuthTokenCache* tokens);
// The "token" metadata of a call ("" without one).
std::string AuthToken(const grpc::ServerContextBase& ctx);
// "ipv4:127.0.0.1:5000" -> "127.0.0.1"; "ipv6:[::1]:5000" -> "::1".
std::string PeerIp(const std::string& grpc_peer);

class QuotaTable {
 public:
  struct Limits {
    double requests_per_second = 0;  // 0: unlimited
    double bytes_per_second = 0;
    int64_t watchers = 0;
  };
  QuotaTable(Limits limits, size_t max_entries = 100000)
      : limits_(limits), max_entries_(max_entries) {}

  bool enabled() const {
    return limits_.requests_per_second > 0 || limits_.bytes_per_second > 0 || limits_.watchers > 0;
  }
  // One request of `bytes` at `now_ms` (a steady clock); RESOURCE_EXHAUSTED when over.
  [[nodiscard]] absl::Status Admit(const std::string& identity, int64_t bytes, int64_t now_ms);
  [[nodiscard]] absl::Status AcquireWatcher(const std::string& identity);
  void ReleaseWatcher(const std::string& identity);
  uint64_t rejections() const;

 private:
  struct Entry {
    double request_tokens = 0;
    double byte_tokens = 0;
    int64_t refilled_ms = 0;
    int64_t watchers = 0;
    bool fresh = true;
  };
  Entry& EntryLocked(const std::string& identity, int64_t now_ms);
  void RefillLocked(Entry& e, int64_t now_ms);

  Limits limits_;
  size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  uint64_t rejections_ = 0;
};

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_QUOTA_H_
