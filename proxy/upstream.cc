#include "proxy/upstream.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/dial_target.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace meridian::proxy {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::string> NormalizeEndpoint(const std::string& text) {
  std::string s = text;
  if (absl::StartsWithIgnoreCase(s, "http://")) s = s.substr(7);
  if (absl::StartsWithIgnoreCase(s, "https://") || absl::StartsWithIgnoreCase(s, "unix")) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint ", text, ": only plain-text TCP upstreams are supported"));
  }
  while (!s.empty() && s.back() == '/') s.pop_back();
  auto colon = s.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(s.substr(colon + 1), &port) || port <= 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint \"", text, "\": want host:port or http://host:port"));
  }
  return s;
}

bool VersionAtLeast(const std::string& version, int major, int minor, int patch) {
  std::vector<std::string> parts = absl::StrSplit(version, '.');
  int v[3] = {0, 0, 0};
  for (size_t i = 0; i < 3 && i < parts.size(); ++i) {
    std::string digits;
    for (char c : parts[i]) {
      if (!isdigit(static_cast<unsigned char>(c))) break;
      digits.push_back(c);
    }
    if (!absl::SimpleAtoi(digits, &v[i])) return false;
  }
  int want[3] = {major, minor, patch};
  for (int i = 0; i < 3; ++i) {
    if (v[i] != want[i]) return v[i] > want[i];
  }
  return true;
}

std::shared_ptr<grpc::Channel> UpstreamPool::MakeChannel(const std::string& dial_target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(INT_MAX);
  args.SetMaxSendMessageSize(INT_MAX);
  // A member that stops answering (paused, partitioned) is noticed by keepalive pings even while
  // only long-lived watch streams are open.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect quickly after a member restarts.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Each member its own connection even when two endpoints resolve alike.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(dial_target, grpc::InsecureChannelCredentials(), args);
}

UpstreamPool::UpstreamPool(Options options) : options_(std::move(options)) {}

UpstreamPool::~UpstreamPool() { Stop(); }

absl::Status UpstreamPool::Start() {
  bool have_members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    have_members = !members_.empty();
  }
  if (!have_members) {
    if (options_.endpoints.empty()) return absl::InvalidArgumentError("no --endpoints given");
    std::vector<UpstreamTarget> targets;
    for (const auto& e : options_.endpoints) {
      auto norm = NormalizeEndpoint(e);
      if (!norm.ok()) return norm.status();
      targets.push_back(UpstreamTarget{*norm, "", 0, 0});
    }
    std::lock_guard<std::mutex> lock(mu_);
    ReplaceLocked(targets, "--endpoints");
  }
  ProbeAll();
  last_sync_ms_ = NowMs();
  prober_ = std::thread([this] { ProbeLoop(); });
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Upstream>> UpstreamPool::ReplaceLocked(
    const std::vector<UpstreamTarget>& targets, const std::string& source) {
  std::vector<std::shared_ptr<Upstream>> next, added;
  for (const auto& t : targets) {
    const std::string dial = t.dial_target.empty() ? DialTarget(t.endpoint) : t.dial_target;
    if (std::any_of(next.begin(), next.end(), [&](const auto& m) { return m->dial_target == dial; })) {
      continue;
    }
    auto it = std::find_if(members_.begin(), members_.end(), [&](const auto& m) {
      return m->endpoint == t.endpoint && m->dial_target == dial;
    });
    if (it != members_.end()) {
      (*it)->priority = t.priority;
      (*it)->weight = t.weight;
      next.push_back(*it);
      continue;
    }
    auto m = std::make_shared<Upstream>();
    m->endpoint = t.endpoint;
    m->dial_target = dial;
    m->channel = MakeChannel(dial);
    m->priority = t.priority;
    m->weight = t.weight;
    if (!members_.empty()) {
      spdlog::info("upstream {} added from {} (dialled at {})", t.endpoint, source, dial);
    }
    next.push_back(m);
    added.push_back(std::move(m));
  }
  for (const auto& m : members_) {
    if (std::none_of(next.begin(), next.end(), [&](const auto& n) { return n == m; })) {
      spdlog::info("upstream {} is gone from {}; draining it (was dialled at {})", m->endpoint,
                   source, m->dial_target);
    }
  }
  members_ = std::move(next);
  return added;
}

void UpstreamPool::SetMembers(const std::vector<UpstreamTarget>& targets,
                              const std::string& source) {
  if (targets.empty()) return;  // never drop every member: keep what we have
  {
    std::lock_guard<std::mutex> lock(mu_);
    ReplaceLocked(targets, source);
    // New members are probed now rather than at the next interval, so they take traffic at once;
    // by the prober, so that the caller does not wait for it and probes never run twice at once.
    probe_now_ = true;
  }
  cv_.notify_all();
}

bool UpstreamPool::IsMember(const Upstream* upstream) {
  std::lock_guard<std::mutex> lock(mu_);
  return std::any_of(members_.begin(), members_.end(),
                     [&](const auto& m) { return m.get() == upstream; });
}

void UpstreamPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (prober_.joinable()) prober_.join();
}

void UpstreamPool::ProbeLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(options_.probe_interval_ms),
                 [&] { return stopping_ || probe_now_; });
    if (stopping_) break;
    probe_now_ = false;
    lock.unlock();
    ProbeAll();
    if (options_.auto_sync_interval_ms > 0 &&
        NowMs() - last_sync_ms_ >= options_.auto_sync_interval_ms) {
      SyncMembers();
      last_sync_ms_ = NowMs();
    }
    lock.lock();
  }
}

void UpstreamPool::ProbeAll() {
  std::vector<std::shared_ptr<Upstream>> members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    members = members_;
  }
  // Probes run concurrently (bounded by the member count) so that one member that times out
  // does not delay what is known about the others.
  struct Probe {
    grpc::ClientContext ctx;
    etcdserverpb::StatusRequest req;
    etcdserverpb::StatusResponse resp;
    grpc::Status status;
    bool done = false;
  };
  std::vector<std::unique_ptr<Probe>> probes;
  std::mutex done_mu;
  std::condition_variable done_cv;
  for (auto& m : members) {
    auto p = std::make_unique<Probe>();
    p->ctx.set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(options_.probe_timeout_ms));
    auto stub = etcdserverpb::Maintenance::NewStub(m->channel);
    Probe* raw = p.get();
    stub->async()->Status(&raw->ctx, &raw->req, &raw->resp, [raw, &done_mu, &done_cv](grpc::Status s) {
      std::lock_guard<std::mutex> lock(done_mu);
      raw->status = std::move(s);
      raw->done = true;
      done_cv.notify_all();
    });
    probes.push_back(std::move(p));
  }
  {
    std::unique_lock<std::mutex> lock(done_mu);
    done_cv.wait(lock, [&] {
      return std::all_of(probes.begin(), probes.end(), [](const auto& p) { return p->done; });
    });
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < members.size(); ++i) {
    Upstream& m = *members[i];
    const Probe& p = *probes[i];
    bool was = m.reachable && m.leader_id != 0;
    if (p.status.ok()) {
      m.reachable = true;
      m.consecutive_failures = 0;
      m.member_id = p.resp.header().member_id();
      m.leader_id = p.resp.leader();
      m.version = p.resp.version();
    } else {
      m.reachable = false;
      ++m.consecutive_failures;
    }
    bool now = m.reachable && m.leader_id != 0;
    if (was != now) {
      spdlog::info("upstream {} is {}", m.endpoint,
                   now ? "ready" : (m.reachable ? "up without a leader" : "unreachable"));
    }
  }
}

void UpstreamPool::SyncMembers() {
  auto u = Pick();
  if (!u) return;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(options_.probe_timeout_ms));
  etcdserverpb::MemberListRequest req;
  etcdserverpb::MemberListResponse resp;
  auto st = etcdserverpb::Cluster::NewStub(u->channel)->MemberList(&ctx, req, &resp);
  if (!st.ok()) return;
  std::vector<std::string> endpoints;
  for (const auto& m : resp.members()) {
    if (m.islearner()) continue;  // learners serve no linearizable reads or writes
    for (const auto& url : m.clienturls()) {
      auto norm = NormalizeEndpoint(url);
      if (norm.ok()) endpoints.push_back(*norm);
      break;  // one URL per member
    }
  }
  if (endpoints.empty()) return;  // members that have not published URLs yet: keep what we have
  std::vector<UpstreamTarget> targets;
  for (const auto& e : endpoints) targets.push_back(UpstreamTarget{e, "", 0, 0});
  std::lock_guard<std::mutex> lock(mu_);
  ReplaceLocked(targets, "the member list");
}

std::shared_ptr<Upstream> UpstreamPool::PickLocked(const Upstream* avoid, bool round_robin) {
  if (members_.empty()) return nullptr;
  auto ready = [](const Upstream& m) { return m.reachable && m.leader_id != 0; };
  std::vector<std::shared_ptr<Upstream>> candidates;
  for (const auto& m : members_) {
    if (ready(*m) && m.get() != avoid) candidates.push_back(m);
  }
  if (candidates.empty()) {
    for (const auto& m : members_) {
      if (ready(*m)) candidates.push_back(m);
    }
  }
  if (!candidates.empty()) {
    // Writes go to the leader whatever its priority: another member would only forward them.
    if (!round_robin) {
      for (const auto& m : candidates) {
        if (m->member_id == m->leader_id) return m;
      }
    }
    if (!round_robin) {
      uint16_t best = UINT16_MAX;
      for (const auto& m : candidates) best = std::min(best, m->priority);
      for (const auto& m : candidates) {
        if (m->priority == best) return m;
      }
    }
    return PickByPriorityAndWeight(std::move(candidates));
  }
  // Nothing ready: the member that failed fewest times in a row, preferring not `avoid`.
  std::shared_ptr<Upstream> best;
  for (const auto& m : members_) {
    if (m.get() == avoid && members_.size() > 1) continue;
    if (!best || m->consecutive_failures < best->consecutive_failures) best = m;
  }
  return best;
}

std::shared_ptr<Upstream> PickByPriorityAndWeight(
    std::vector<std::shared_ptr<Upstream>> candidates) {
  // The lowest priority (SRV) among the candidates...
  uint16_t best = UINT16_MAX;
  for (const auto& m : candidates) best = std::min(best, m->priority);
  std::erase_if(candidates, [&](const auto& m) { return m->priority != best; });
  // ...then smooth weighted round-robin: every pick adds each candidate's weight to its current
  // weight and takes the largest, which then pays back the total. A weight of 0 keeps a small
  // share (RFC 2782: "a very small chance of being selected"); equal weights give round-robin.
  int64_t total = 0;
  std::shared_ptr<Upstream> chosen;
  for (const auto& m : candidates) {
    const int64_t effective = 100 * static_cast<int64_t>(m->weight) + 1;
    m->current_weight += effective;
    total += effective;
    if (!chosen || m->current_weight > chosen->current_weight) chosen = m;
  }
  if (chosen) chosen->current_weight -= total;
  return chosen;
}

std::shared_ptr<Upstream> UpstreamPool::Pick(const Upstream* avoid) {
  std::lock_guard<std::mutex> lock(mu_);
  return PickLocked(avoid, false);
}

std::shared_ptr<Upstream> UpstreamPool::PickAny(const Upstream* avoid) {
  std::lock_guard<std::mutex> lock(mu_);
  return PickLocked(avoid, true);
}

bool UpstreamPool::HasReadyMember() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::any_of(members_.begin(), members_.end(),
                     [](const auto& m) { return m->reachable && m->leader_id != 0; });
}

bool UpstreamPool::AllReachableSupportSyncedProgress() {
  std::lock_guard<std::mutex> lock(mu_);
  bool any = false;
  for (const auto& m : members_) {
    if (!m->reachable) continue;
    any = true;
    if (!VersionAtLeast(m->version, 3, 5, 13)) return false;
  }
  return any;
}

void UpstreamPool::ReportFailure(const Upstream* upstream) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& m : members_) {
    if (m.get() == upstream) {
      m->reachable = false;
      ++m->consecutive_failures;
    }
  }
}

std::vector<UpstreamInfo> UpstreamPool::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<UpstreamInfo> out;
  for (const auto& m : members_) {
    out.push_back({m->endpoint, m->member_id, m->leader_id, m->version, m->reachable});
  }
  return out;
}

}  // namespace meridian::proxy
