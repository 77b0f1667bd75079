// In-memory lease table: which leases exist, their TTLs and when they expire.
//
// The set of leases changes only through the apply step (Grant/Revoke), so it is the same on
// every member that applied the same log. Expiry times are local wall-clock state: Renew moves
// them, and the server turns expired leases into revoke proposals through the log, so a lease is
// only ever revoked by the log. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace meridian::lease {

// Monotonic time source, injected so tests control expiry.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point Now() const = 0;
};

class SystemClock : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::now();
  }
};

// etcd's upper bound on a lease TTL, in seconds.
inline constexpr int64_t kMaxLeaseTtlSeconds = 9000000000;

class Lessor {
 public:
  Lessor(const Clock* clock, int64_t min_ttl_seconds)
      : clock_(clock), min_ttl_seconds_(min_ttl_seconds) {}

  // Returns the effective TTL (raised to the minimum).
  int64_t Grant(int64_t id, int64_t ttl_seconds);
  bool Revoke(int64_t id);
  bool Exists(int64_t id) const;
  int64_t EffectiveTtl(int64_t ttl_seconds) const {
    return ttl_seconds < min_ttl_seconds_ ? min_ttl_seconds_ : ttl_seconds;
  }

  // Extends the lease by its TTL; returns the TTL, or nullopt if it does not exist or has
  // already expired (a revoke is on its way).
  std::optional<int64_t> Renew(int64_t id);

  // A new leader does not know when the old one last saw keepalives: like etcd's Promote, it
  // gives every lease its full TTL again.
  void RenewAll();

  struct Info {
    int64_t granted_ttl_seconds = 0;
    int64_t remaining_seconds = 0;
  };
  std::optional<Info> Get(int64_t id) const;
  std::vector<int64_t> Ids() const;

  // Leases past their expiry that are not already being revoked, at most `max`; they are marked
  // as being revoked until `retry_after` passes (in case the revoke proposal fails).
  std::vector<int64_t> TakeExpired(size_t max, std::chrono::milliseconds retry_after);

 private:
  struct Lease {
    int64_t ttl_seconds = 0;
    std::chrono::steady_clock::time_point expiry;
    std::chrono::steady_clock::time_point revoke_retry;  // epoch when not being revoked
  };
  const Clock* clock_;
  int64_t min_ttl_seconds_;
  mutable std::mutex mu_;
  std::map<int64_t, Lease> leases_;
};

}  // namespace meridian::lease
