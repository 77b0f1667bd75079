#include "proxy/proxy.h"

#include <grpcpp/generic/generic_stub.h>

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <mutex>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.pb.h"
#include "proxy/lease_proxy.h"
#include "proxy/watch_proxy.h"
#include "spdlog/spdlog.h"

namespace meridian::proxy {

int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void CopyClientMetadata(const grpc::ServerContextBase& from, grpc::ClientContext* to) {
  for (const auto& [k, v] : from.client_metadata()) {
    std::string key(k.data(), k.size());
    if (key.empty() || key[0] == ':' || key.rfind("grpc-", 0) == 0 || key == "content-type" ||
        key == "user-agent" || key == "te" || key == "host") {
      continue;
    }
    to->AddMetadata(key, std::string(v.data(), v.size()));
  }
}

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

struct MethodInfo {
  bool streaming = false;
  // A read that may go to any member and may be retried on another after UNAVAILABLE.
  bool read = false;
};

const std::map<std::string, MethodInfo>& Methods() {
  static const auto* methods = new std::map<std::string, MethodInfo>{
      {"/etcdserverpb.KV/Range", {false, true}},
      {"/etcdserverpb.KV/Put", {}},
      {"/etcdserverpb.KV/DeleteRange", {}},
      {"/etcdserverpb.KV/Txn", {}},
      {"/etcdserverpb.KV/Compact", {}},
      {"/etcdserverpb.Lease/LeaseGrant", {}},
      {"/etcdserverpb.Lease/LeaseRevoke", {}},
      {"/etcdserverpb.Lease/LeaseTimeToLive", {false, true}},
      {"/etcdserverpb.Lease/LeaseLeases", {false, true}},
      {"/etcdserverpb.Cluster/MemberAdd", {}},
      {"/etcdserverpb.Cluster/MemberRemove", {}},
      {"/etcdserverpb.Cluster/MemberUpdate", {}},
      {"/etcdserverpb.Cluster/MemberList", {false, true}},
      {"/etcdserverpb.Cluster/MemberPromote", {}},
      {"/etcdserverpb.Maintenance/Alarm", {}},
      {"/etcdserverpb.Maintenance/Status", {}},
      {"/etcdserverpb.Maintenance/Defragment", {}},
      {"/etcdserverpb.Maintenance/Hash", {}},
      {"/etcdserverpb.Maintenance/HashKV", {}},
      {"/etcdserverpb.Maintenance/Snapshot", {true, false}},
      {"/etcdserverpb.Maintenance/MoveLeader", {}},
      {"/etcdserverpb.Maintenance/Downgrade", {}},
      {"/v3electionpb.Election/Observe", {true, false}},
      {"/v3electionpb.Election/Campaign", {}},
      {"/v3electionpb.Election/Proclaim", {}},
      {"/v3electionpb.Election/Leader", {false, true}},
      {"/v3electionpb.Election/Resign", {}},
      {"/v3lockpb.Lock/Lock", {}},
      {"/v3lockpb.Lock/Unlock", {}},
      {"/etcdserverpb.Auth/AuthEnable", {}},
      {"/etcdserverpb.Auth/AuthDisable", {}},
      {"/etcdserverpb.Auth/AuthStatus", {false, true}},
      {"/etcdserverpb.Auth/Authenticate", {}},
      {"/etcdserverpb.Auth/UserAdd", {}},
      {"/etcdserverpb.Auth/UserGet", {false, true}},
      {"/etcdserverpb.Auth/UserList", {false, true}},
      {"/etcdserverpb.Auth/UserDelete", {}},
      {"/etcdserverpb.Auth/UserChangePassword", {}},
      {"/etcdserverpb.Auth/UserGrantRole", {}},
      {"/etcdserverpb.Auth/UserRevokeRole", {}},
      {"/etcdserverpb.Auth/RoleAdd", {}},
      {"/etcdserverpb.Auth/RoleGet", {false, true}},
      {"/etcdserverpb.Auth/RoleList", {false, true}},
      {"/etcdserverpb.Auth/RoleDelete", {}},
      {"/etcdserverpb.Auth/RoleGrantPermission", {}},
      {"/etcdserverpb.Auth/RoleRevokePermission", {}},
  };
  return *methods;
}

}  // namespace

// Serializable range answers, keyed by the caller's auth token and the exact request bytes, for
// at most ttl_ms. Bounded by entry count (oldest dropped first).
class ReadCache {
 public:
  ReadCache(int64_t ttl_ms, size_t max_entries) : ttl_ms_(ttl_ms), max_entries_(max_entries) {}
  bool enabled() const { return ttl_ms_ > 0 && max_entries_ > 0; }

  bool Get(const std::string& key, grpc::ByteBuffer* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    if (SteadyNowMs() - it->second.stored_ms > ttl_ms_) return false;
    *out = it->second.response;
    return true;
  }
  void Put(const std::string& key, const grpc::ByteBuffer& resp) {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t now = SteadyNowMs();
    map_[key] = {resp, now};
    order_.emplace_back(key, now);
    while (map_.size() > max_entries_ || (!order_.empty() && now - order_.front().second > ttl_ms_)) {
      auto it = map_.find(order_.front().first);
      if (it != map_.end() && it->second.stored_ms == order_.front().second) map_.erase(it);
      order_.pop_front();
    }
    while (order_.size() > 4 * max_entries_ + 16) order_.pop_front();
  }

 private:
  struct Entry {
    grpc::ByteBuffer response;
    int64_t stored_ms;
  };
  int64_t ttl_ms_;
  size_t max_entries_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
  std::deque<std::pair<std::string, int64_t>> order_;
};

namespace {

std::string FlattenBuffer(const grpc::ByteBuffer& buf) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buf.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// One unary call forwarded to a member. Reads may be retried on another member after
// UNAVAILABLE; writes never are (the first attempt may have been applied).
class UnaryCall final : public grpc::ServerGenericBidiReactor {
 public:
  UnaryCall(Proxy* proxy, grpc::GenericCallbackServerContext* ctx, const MethodInfo& info)
      : proxy_(proxy), ctx_(ctx), info_(info) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "meridian-proxy: no request message"));
      return;
    }
    identity_ = ClientIdentity(*ctx_, proxy_->tokens());
    grpc::Status st = proxy_->Admit(*ctx_, req_.Length(), identity_);
    if (!st.ok()) {
      Finish(st);
      return;
    }
    const std::string& method = ctx_->method();
    if (!proxy_->prefix().empty()) {
      auto s = proxy_->prefix().ApplyToRequest(method, &req_);
      if (!s.ok()) {
        Finish(ToGrpc(s));
        return;
      }
    }
    if (method == "/etcdserverpb.KV/Range" && proxy_->read_cache()->enabled()) {
      etcdserverpb::RangeRequest range;
      if (ParseBuffer(req_, &range) && range.serializable()) {
        cache_key_ = absl::StrCat(AuthToken(*ctx_).size(), ":", AuthToken(*ctx_), FlattenBuffer(req_));
        if (proxy_->read_cache()->Get(cache_key_, &resp_)) {
          proxy_->metrics().cache_hits->Inc();
          Reply();
          return;
        }
        proxy_->metrics().cache_misses->Inc();
      }
    }
    if (method == "/etcdserverpb.Auth/Authenticate") {
      etcdserverpb::AuthenticateRequest auth;
      if (ParseBuffer(req_, &auth)) auth_user_ = auth.name();
    }
    Send(nullptr);
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (cctx_) cctx_->TryCancel();
  }

  void OnDone() override { delete this; }

 private:
  void Send(const Upstream* avoid) {
    upstream_ = info_.read ? proxy_->pool()->PickAny(avoid) : proxy_->pool()->Pick(avoid);
    if (!upstream_) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "meridian-proxy: no upstream member"));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      cctx_ = grpc::ClientContext::FromCallbackServerContext(*ctx_);
      CopyClientMetadata(*ctx_, cctx_.get());
    }
    ++attempts_;
    grpc::GenericStub stub(upstream_->channel);
    stub.UnaryCall(cctx_.get(), ctx_->method(), grpc::StubOptions(), &req_, &resp_,
                   [this](grpc::Status s) { OnUpstreamDone(std::move(s)); });
  }

  void OnUpstreamDone(grpc::Status s) {
    if (!s.ok() && s.error_code() == grpc::StatusCode::UNAVAILABLE && info_.read &&
        attempts_ < 3 && !ctx_->IsCancelled()) {
      proxy_->pool()->ReportFailure(upstream_.get());
      proxy_->metrics().upstream_retries->Inc();
      resp_.Clear();
      Send(upstream_.get());
      return;
    }
    if (!s.ok()) {
      Finish(s);
      return;
    }
    const std::string& method = ctx_->method();
    if (!auth_user_.empty()) {
      etcdserverpb::AuthenticateResponse auth;
      if (ParseBuffer(resp_, &auth)) proxy_->tokens()->Remember(auth.token(), auth_user_);
    }
    if (!proxy_->prefix().empty()) {
      auto st = proxy_->prefix().UnapplyToResponse(method, &resp_);
      if (!st.ok()) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "meridian-proxy: malformed response"));
        return;
      }
    }
    if (!cache_key_.empty()) proxy_->read_cache()->Put(cache_key_, resp_);
    Reply();
  }

  void Reply() { StartWriteAndFinish(&resp_, grpc::WriteOptions(), grpc::Status::OK); }

  Proxy* proxy_;
  grpc::GenericCallbackServerContext* ctx_;
  MethodInfo info_;
  grpc::ByteBuffer req_, resp_;
  std::string identity_, cache_key_, auth_user_;
  std::shared_ptr<Upstream> upstream_;
  std::mutex mu_;
  std::unique_ptr<grpc::ClientContext> cctx_;
  int attempts_ = 0;
};

// A streaming call piped to one member message by message, with flow control in both
// directions (one message in flight each way). Used for Snapshot, Observe and methods this
// proxy does not know.
class Pipe final : public grpc::ServerGenericBidiReactor {
 public:
  Pipe(Proxy* proxy, grpc::GenericCallbackServerContext* ctx) : proxy_(proxy), ctx_(ctx) {
    identity_ = ClientIdentity(*ctx_, proxy_->tokens());
    upstream_ = proxy_->pool()->Pick();
    if (!upstream_) {
      up_done_ = true;
      refs_ = 1;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "meridian-proxy: no upstream member"));
      return;
    }
    cctx_ = grpc::ClientContext::FromCallbackServerContext(*ctx_);
    CopyClientMetadata(*ctx_, cctx_.get());
    up_.pipe = this;
    grpc::GenericStub stub(upstream_->channel);
    stub.PrepareBidiStreamingCall(cctx_.get(), ctx_->method(), grpc::StubOptions(), &up_);
    up_.StartRead(&from_up_);
    up_.StartCall();
    StartRead(&from_client_);
  }

  // Client -> proxy.
  void OnReadDone(bool ok) override {
    if (!ok) {
      up_.StartWritesDone();
      return;
    }
    grpc::Status st = proxy_->Admit(*ctx_, from_client_.Length(), identity_);
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!final_status_) final_status_ = st;
      cctx_->TryCancel();
      return;
    }
    up_.StartWrite(&from_client_);
  }
  void OnUpWriteDone(bool ok) {
    if (ok) StartRead(&from_client_);
  }
  // Upstream -> proxy -> client.
  void OnUpReadDone(bool ok) {
    if (!ok) return;  // the status follows in OnUpDone
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = true;
    }
    StartWrite(&from_up_);
  }
  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      finish = up_done_;
    }
    if (!ok) cctx_->TryCancel();
    if (finish) {
      MaybeFinish();
    } else if (ok) {
      up_.StartRead(&from_up_);
    }
  }
  void OnUpDone(const grpc::Status& s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      up_done_ = true;
      if (!final_status_) final_status_ = s;
    }
    MaybeFinish();
    Unref();
  }
  void OnCancel() override {
    if (cctx_) cctx_->TryCancel();
  }
  void OnDone() override { Unref(); }

 private:
  struct Up : grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
    Pipe* pipe = nullptr;
    void OnReadDone(bool ok) override { pipe->OnUpReadDone(ok); }
    void OnWriteDone(bool ok) override { pipe->OnUpWriteDone(ok); }
    void OnDone(const grpc::Status& s) override { pipe->OnUpDone(s); }
  };

  void MaybeFinish() {
    grpc::Status st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || writing_ || !up_done_) return;
      finished_ = true;
      st = *final_status_;
    }
    Finish(st);
  }
  void Unref() {
    bool last;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  Proxy* proxy_;
  grpc::GenericCallbackServerContext* ctx_;
  std::string identity_;
  std::shared_ptr<Upstream> upstream_;
  std::unique_ptr<grpc::ClientContext> cctx_;
  Up up_;
  grpc::ByteBuffer from_client_, from_up_;
  std::mutex mu_;
  bool writing_ = false;
  bool up_done_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> final_status_;
  int refs_ = 2;  // the server reactor and the upstream reactor
};

class Refuse final : public grpc::ServerGenericBidiReactor {
 public:
  explicit Refuse(grpc::Status st) { Finish(st); }
  void OnDone() override { delete this; }
};

}  // namespace

class Proxy::Service final : public grpc::CallbackGenericService {
 public:
  explicit Service(Proxy* proxy) : proxy_(proxy) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    const std::string& method = ctx->method();
    proxy_->metrics().requests->Inc();
    if (method == "/etcdserverpb.Watch/Watch") return proxy_->watch()->NewStream(ctx);
    if (method == "/etcdserverpb.Lease/LeaseKeepAlive") return proxy_->lease()->NewStream(ctx);
    auto it = Methods().find(method);
    if (it != Methods().end() && !it->second.streaming) {
      return new UnaryCall(proxy_, ctx, it->second);
    }
    if (method.empty() || method[0] != '/') {
      return new Refuse(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method"));
    }
    // Known streams, and services this proxy has no table entry for (Auth, Lock, Election and
    // anything newer): a message pipe works for unary and streaming calls alike.
    return new Pipe(proxy_, ctx);
  }

 private:
  Proxy* proxy_;
};

Proxy::Proxy(ProxyConfig config, metrics::Registry* registry)
    : config_(std::move(config)),
      registry_(registry),
      // With DNS discovery, DNS alone says who the members are: no MemberList sync.
      pool_(UpstreamPool::Options{
          config_.endpoints, static_cast<int>(config_.probe_interval_ms), 1000,
          config_.discovery_srv.empty() ? static_cast<int>(config_.auto_sync_interval_ms) : 0}),
      prefix_(config_.ns),
      quota_(QuotaTable::Limits{config_.quota_requests_per_second, config_.quota_bytes_per_second,
                                config_.quota_watchers}) {
  auto& r = *registry_;
  metrics_.requests = &r.counter("meridian_proxy_calls_total", "Client calls accepted.");
  metrics_.request_too_large = &r.counter(
      "meridian_proxy_request_too_large_total", "Requests refused for --max-request-bytes.");
  metrics_.quota_rejections =
      &r.counter("meridian_proxy_quota_rejections_total", "Requests and watchers over a quota.");
  metrics_.cache_hits =
      &r.counter("etcd_grpc_proxy_cache_hits_total", "Serializable ranges served from the cache.");
  metrics_.cache_misses = &r.counter("etcd_grpc_proxy_cache_misses_total",
                                     "Serializable ranges the cache could not serve.");
  metrics_.keepalives_in = &r.counter("meridian_proxy_lease_keepalives_received_total",
                                      "Lease keepalive requests from clients.");
  metrics_.keepalives_out = &r.counter("meridian_proxy_lease_keepalives_sent_total",
                                       "Lease keepalive requests sent upstream.");
  metrics_.events_delivered = &r.counter("meridian_proxy_watch_events_delivered_total",
                                         "Watch events written to client watchers.");
  metrics_.upstream_retries = &r.counter("meridian_proxy_upstream_retries_total",
                                         "Reads retried on another member after UNAVAILABLE.");
  metrics_.watchers_parked =
      &r.counter("meridian_proxy_watchers_parked_total",
                 "Client watchers parked because their stream's buffer was full (caught up later).");
  read_cache_ = std::make_unique<ReadCache>(config_.read_cache_ttl_ms,
                                            static_cast<size_t>(config_.read_cache_entries));
  watch_ = std::make_unique<WatchProxy>(this);
  lease_ = std::make_unique<LeaseProxy>(this);
  service_ = std::make_unique<Service>(this);
  r.gauge_fn("meridian_proxy_upstream_members_ready", "Members that answered and know a leader.",
             [this] {
               double n = 0;
               for (const auto& m : pool_.Snapshot()) n += (m.reachable && m.leader_id != 0);
               return n;
             });
}

Proxy::~Proxy() { Stop(); }

std::vector<UpstreamTarget> TargetsFromDns(const std::vector<discovery::DiscoveredEndpoint>& found,
                                           std::vector<std::string>* skipped) {
  std::vector<UpstreamTarget> out;
  for (const auto& e : found) {
    if (e.scheme != "http") {
      skipped->push_back(absl::StrCat(e.Url(), ": TLS to members is not supported"));
      continue;
    }
    std::vector<std::string> v4, v6;
    for (const auto& a : e.addresses) {
      (a.find(':') == std::string::npos ? v4 : v6).push_back(a);
    }
    std::string dial;
    if (!v4.empty()) {
      for (const auto& a : v4) absl::StrAppend(&dial, dial.empty() ? "ipv4:" : ",", a, ":", e.port);
    } else {
      for (const auto& a : v6) {
        absl::StrAppend(&dial, dial.empty() ? "ipv6:" : ",", "[", a, "]:", e.port);
      }
    }
    if (dial.empty()) continue;  // Discover() only returns targets that resolved
    out.push_back(UpstreamTarget{e.HostPort(), dial, e.priority, e.weight});
  }
  return out;
}

absl::Status Proxy::Start() {
  if (!config_.discovery_srv.empty()) {
    discovery::FollowerOptions fo;
    fo.resolver.dns_server = config_.discovery_dns_server;
    fo.domain = config_.discovery_srv;
    fo.suffix = config_.discovery_srv_name;
    fo.role = discovery::Role::kClients;
    follower_ = std::make_unique<discovery::SrvFollower>(fo);
    auto st = follower_->Start([this](const std::vector<discovery::DiscoveredEndpoint>& found) {
      std::vector<std::string> skipped;
      auto targets = TargetsFromDns(found, &skipped);
      for (const auto& why : skipped) spdlog::warn("discovery: skipped {}", why);
      if (targets.empty()) {
        spdlog::warn("discovery: {} publishes no plain-text client endpoint; keeping the members "
                     "known so far", config_.discovery_srv);
        return;
      }
      pool_.SetMembers(targets, "DNS");
    });
    if (!st.ok()) return st;
    if (pool_.Snapshot().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--discovery-srv ", config_.discovery_srv,
          ": only TLS client endpoints (_etcd-client-ssl) are published, and meridian-proxy does "
          "not dial members over TLS"));
    }
    auto& r = *registry_;
    r.gauge_fn("meridian_proxy_discovery_lookups", "DNS SRV lookups of --discovery-srv.",
               [this] { return static_cast<double>(follower_->lookups()); });
    r.gauge_fn("meridian_proxy_discovery_failures", "DNS SRV lookups that failed.",
               [this] { return static_cast<double>(follower_->failures()); });
    r.gauge_fn("meridian_proxy_discovery_changes", "Member set changes found in DNS.",
               [this] { return static_cast<double>(follower_->changes()); });
  }
  auto st = pool_.Start();
  if (!st.ok()) return st;
  watch_->Start();
  lease_->Start();
  return absl::OkStatus();
}

void Proxy::Stop() {
  if (follower_) follower_->Stop();
  if (watch_) watch_->Stop();
  if (lease_) lease_->Stop();
  pool_.Stop();
}

grpc::CallbackGenericService* Proxy::service() { return service_.get(); }

bool Proxy::Healthy() { return pool_.HasReadyMember(); }

grpc::Status Proxy::Admit(const grpc::ServerContextBase& ctx, size_t bytes,
                          const std::string& identity) {
  if (bytes > config_.max_request_bytes) {
    metrics_.request_too_large->Inc();
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "etcdserver: request is too large");
  }
  if (quota_.enabled()) {
    auto st = quota_.Admit(identity, static_cast<int64_t>(bytes), SteadyNowMs());
    if (!st.ok()) {
      metrics_.quota_rejections->Inc();
      return ToGrpc(st);
    }
  }
  return grpc::Status::OK;
}

}  // namespace meridian::proxy
