#include "node/lease/lessor.h"

namespace meridian::lease {

int64_t Lessor::Grant(int64_t id, int64_t ttl_seconds) {
  int64_t ttl = EffectiveTtl(ttl_seconds);
  std::lock_guard<std::mutex> lock(mu_);
  leases_[id] = Lease{ttl, clock_->Now() + std::chrono::seconds(ttl), {}};
  return ttl;
}

bool Lessor::Revoke(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  return leases_.erase(id) > 0;
}

bool Lessor::Exists(int64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return leases_.count(id) > 0;
}

std::optional<int64_t> Lessor::Renew(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  auto now = clock_->Now();
  if (it == leases_.end() || it->second.expiry <= now) return std::nullopt;
  it->second.expiry = now + std::chrono::seconds(it->second.ttl_seconds);
  return it->second.ttl_seconds;
}

void Lessor::RenewAll() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = clock_->Now();
  for (auto& [id, l] : leases_) {
    l.expiry = now + std::chrono::seconds(l.ttl_seconds);
    l.revoke_retry = {};
  }
}

std::optional<Lessor::Info> Lessor::Get(int64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  auto left = it->second.expiry - clock_->Now();
  int64_t remaining = std::chrono::duration_cast<std::chrono::seconds>(left).count();
  return Info{it->second.ttl_seconds, remaining < 0 ? 0 : remaining};
}

std::vector<int64_t> Lessor::Ids() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> ids;
  ids.reserve(leases_.size());
  for (const auto& [id, l] : leases_) ids.push_back(id);
  return ids;
}

std::vector<int64_t> Lessor::TakeExpired(size_t max, std::chrono::milliseconds retry_after) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> out;
  auto now = clock_->Now();
  // A linear scan: fine for the lease counts control planes use (thousands), and it runs at
  // most twice a second.
  for (auto& [id, l] : leases_) {
    if (out.size() >= max) break;
    if (l.expiry > now || l.revoke_retry > now) continue;
    l.revoke_retry = now + retry_after;
    out.push_back(id);
  }
  return out;
}

}  // namespace meridian::lease
