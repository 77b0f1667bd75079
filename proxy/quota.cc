#include "proxy/quota.h"

#include <grpcpp/security/auth_context.h>

#include <algorithm>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace meridian::proxy {

void AuthTokenCache::Remember(const std::string& token, const std::string& user) {
  if (token.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = map_.find(token); it != map_.end()) {
    lru_.erase(it->second);
    map_.erase(it);
  }
  lru_.emplace_front(token, user);
  map_[token] = lru_.begin();
  while (map_.size() > max_entries_) {
    map_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

std::string AuthTokenCache::UserOf(const std::string& token) {
  if (token.empty()) return "";
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = map_.find(token); it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  return "";
}

std::string AuthToken(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("token");
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string PeerIp(const std::string& peer) {
  std::string s = peer;
  if (s.rfind("ipv4:", 0) == 0) {
    s = s.substr(5);
    auto colon = s.rfind(':');
    return colon == std::string::npos ? s : s.substr(0, colon);
  }
  if (s.rfind("ipv6:", 0) == 0) {
    s = s.substr(5);
    if (!s.empty() && s[0] == '[') {
      auto close = s.find(']');
      return close == std::string::npos ? s : s.substr(1, close - 1);
    }
    return s;
  }
  if (s.rfind("fd:", 0) == 0) {
    // Connections handed to gRPC by the client listener (common/client_listener.h) are named by
    // their descriptor; the socket is live while its call runs, so ask it who is on the other end.
    int fd = -1;
    if (absl::SimpleAtoi(s.substr(3), &fd) && fd >= 0) {
      sockaddr_storage addr{};
      socklen_t len = sizeof(addr);
      char text[INET6_ADDRSTRLEN] = {0};
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        if (addr.ss_family == AF_INET &&
            inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, text,
                      sizeof(text)) != nullptr) {
          return text;
        }
        if (addr.ss_family == AF_INET6 &&
            inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, text,
                      sizeof(text)) != nullptr) {
          return text;
        }
      }
    }
  }
  return s;  // unix sockets and the like: the whole peer string
}

std::string ClientIdentity(const grpc::ServerContextBase& ctx, AuthTokenCache* tokens) {
  if (auto auth = ctx.auth_context(); auth && auth->IsPeerAuthenticated()) {
    auto cn = auth->FindPropertyValues("x509_common_name");
    if (!cn.empty()) return absl::StrCat("cn:", std::string(cn[0].data(), cn[0].size()));
  }
  if (std::string token = AuthToken(ctx); !token.empty() && tokens != nullptr) {
    if (std::string user = tokens->UserOf(token); !user.empty()) return "user:" + user;
  }
  return "ip:" + PeerIp(ctx.peer());
}

void QuotaTable::RefillLocked(Entry& e, int64_t now_ms) {
  if (e.fresh) {
    e.fresh = false;
    e.request_tokens = limits_.requests_per_second;
    e.byte_tokens = limits_.bytes_per_second;
    e.refilled_ms = now_ms;
    return;
  }
  double seconds = std::max<int64_t>(0, now_ms - e.refilled_ms) / 1000.0;
  e.refilled_ms = now_ms;
  e.request_tokens = std::min(limits_.requests_per_second,
                              e.request_tokens + seconds * limits_.requests_per_second);
  e.byte_tokens =
      std::min(limits_.bytes_per_second, e.byte_tokens + seconds * limits_.bytes_per_second);
}

QuotaTable::Entry& QuotaTable::EntryLocked(const std::string& identity, int64_t now_ms) {
  if (entries_.size() >= max_entries_ && entries_.find(identity) == entries_.end()) {
    // Drop entries that would be full again and hold no watchers: forgetting them changes
    // nothing for their clients.
    for (auto it = entries_.begin(); it != entries_.end();) {
      RefillLocked(it->second, now_ms);
      bool idle = it->second.watchers == 0 &&
                  it->second.request_tokens >= limits_.requests_per_second &&
                  it->second.byte_tokens >= limits_.bytes_per_second;
      it = idle ? entries_.erase(it) : std::next(it);
    }
  }
  Entry& e = entries_[identity];
  RefillLocked(e, now_ms);
  return e;
}

absl::Status QuotaTable::Admit(const std::string& identity, int64_t bytes, int64_t now_ms) {
  if (limits_.requests_per_second <= 0 && limits_.bytes_per_second <= 0) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = EntryLocked(identity, now_ms);
  if (limits_.requests_per_second > 0 && e.request_tokens < 1) {
    ++rejections_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("meridian-proxy: client %s is over its quota of %g requests/s", identity,
                        limits_.requests_per_second));
  }
  // A request bigger than one second of bytes passes when the bucket is full, so that the
  // largest allowed request is never refused forever.
  if (limits_.bytes_per_second > 0 && e.byte_tokens < static_cast<double>(bytes) &&
      e.byte_tokens < limits_.bytes_per_second) {
    ++rejections_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("meridian-proxy: client %s is over its quota of %g request bytes/s",
                        identity, limits_.bytes_per_second));
  }
  if (limits_.requests_per_second > 0) e.request_tokens -= 1;
  if (limits_.bytes_per_second > 0) e.byte_tokens -= static_cast<double>(bytes);
  return absl::OkStatus();
}

absl::Status QuotaTable::AcquireWatcher(const std::string& identity) {
  if (limits_.watchers <= 0) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count();
  Entry& e = EntryLocked(identity, now_ms);
  if (e.watchers >= limits_.watchers) {
    ++rejections_;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "meridian-proxy: client %s is over its quota of %d watchers", identity, limits_.watchers));
  }
  ++e.watchers;
  return absl::OkStatus();
}

void QuotaTable::ReleaseWatcher(const std::string& identity) {
  if (limits_.watchers <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(identity);
  if (it != entries_.end() && it->second.watchers > 0) --it->second.watchers;
}

uint64_t QuotaTable::rejections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rejections_;
}

}  // namespace meridian::proxy

