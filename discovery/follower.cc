#include "discovery/follower.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace meridian::discovery {

int64_t NextLookupDelayMs(const FollowerOptions& options, uint32_t ttl_s,
                          int consecutive_failures) {
  if (consecutive_failures > 0) {
    int64_t delay = options.retry_after_failure_ms;
    for (int i = 1; i < consecutive_failures && delay < options.max_refresh_ms; ++i) delay *= 2;
    return std::min(delay, options.max_refresh_ms);
  }
  return std::clamp<int64_t>(static_cast<int64_t>(ttl_s) * 1000, options.min_refresh_ms,
                             options.max_refresh_ms);
}

bool SameEndpoints(std::vector<DiscoveredEndpoint> a, std::vector<DiscoveredEndpoint> b) {
  auto key = [](const DiscoveredEndpoint& x, const DiscoveredEndpoint& y) {
    return std::tie(x.scheme, x.host, x.port) < std::tie(y.scheme, y.host, y.port);
  };
  std::sort(a.begin(), a.end(), key);
  std::sort(b.begin(), b.end(), key);
  return a == b;
}

SrvFollower::SrvFollower(FollowerOptions options)
    : options_(std::move(options)), rng_(std::random_device{}()) {}

SrvFollower::~SrvFollower() { Stop(); }

absl::Status SrvFollower::Start(Callback on_change) {
  on_change_ = std::move(on_change);
  auto resolver = Resolver::Create(options_.resolver);
  if (!resolver.ok()) return resolver.status();
  resolver_ = std::move(*resolver);
  uint32_t ttl_s = 0;
  if (auto st = LookupOnce(&ttl_s); !st.ok()) return st;
  thread_ = std::thread([this, ttl_s] { Run(ttl_s); });
  return absl::OkStatus();
}

void SrvFollower::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  // A lookup under way would otherwise run to its end (up to max_wait_ms with a silent server).
  if (resolver_ != nullptr) resolver_->Cancel();
  if (thread_.joinable()) thread_.join();
}

absl::Status SrvFollower::LookupOnce(uint32_t* ttl_s) {
  ++lookups_;
  auto found = Discover(resolver_.get(), options_.role, options_.domain, options_.suffix, &rng_);
  if (!found.ok()) {
    ++failures_;
    return absl::Status(found.status().code(),
                        absl::StrCat("--discovery-srv ", options_.domain, ": ",
                                     std::string(found.status().message())));
  }
  for (const auto& why : found->skipped) spdlog::warn("discovery: skipped {}", why);
  *ttl_s = found->ttl_s;
  const bool first = lookups_.load() == 1;
  if (first || !SameEndpoints(current_, found->endpoints)) {
    std::vector<std::string> urls;
    for (const auto& e : found->endpoints) urls.push_back(e.Url());
    spdlog::info("discovery: {} publishes {} (TTL {} s)", options_.domain, absl::StrJoin(urls, ","),
                 found->ttl_s);
    current_ = found->endpoints;
    if (!first) ++changes_;
    on_change_(current_);
  }
  return absl::OkStatus();
}

void SrvFollower::Run(uint32_t ttl_s) {
  int failures_in_a_row = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const int64_t delay_ms = NextLookupDelayMs(options_, ttl_s, failures_in_a_row);
    if (cv_.wait_for(lock, std::chrono::milliseconds(delay_ms), [&] { return stopping_; })) break;
    lock.unlock();
    absl::Status st = LookupOnce(&ttl_s);
    if (absl::IsCancelled(st)) break;  // Stop() canceled the lookup under way
    if (st.ok()) {
      if (failures_in_a_row > 0)
        spdlog::info("discovery: lookups of {} work again", options_.domain);
      failures_in_a_row = 0;
    } else {
      ++failures_in_a_row;
      spdlog::warn("discovery: {} (keeping the {} known endpoints; retry in {} ms)",
                   std::string(st.message()), current_.size(),
                   NextLookupDelayMs(options_, ttl_s, failures_in_a_row));
    }
    lock.lock();
  }
}

}  // namespace meridian::discovery
