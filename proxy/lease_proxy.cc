#include "proxy/lease_proxy.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "proxy/client_stream.h"
#include "proxy/key_prefix.h"
#include "proxy/proxy.h"
#include "proxy/queued_call.h"
#include "spdlog/spdlog.h"

namespace meridian::proxy {

using etcdserverpb::LeaseKeepAliveRequest;
using etcdserverpb::LeaseKeepAliveResponse;

namespace {
// Client keepalive answers queued for one client stream before it is closed as too slow.
constexpr int64_t kClientQueueBytes = 4 << 20;
// Leases tracked by the proxy: bounded, idle ones are forgotten.
constexpr int64_t kIdleForgetMs = 120000;
}  // namespace

class ClientKeepAliveStream;
class UpstreamKeepAlive;

struct LeaseEntry {
  bool in_flight = false;
  int64_t sent_ms = 0;
  std::set<ClientKeepAliveStream*> waiters;
  int64_t last_used_ms = 0;
};

struct LeaseState {
  Proxy* proxy = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  // (token, lease id)
  std::map<std::pair<std::string, int64_t>, LeaseEntry> leases;
  std::map<std::string, UpstreamKeepAlive*> ups;
  std::map<std::string, const Upstream*> last_failed;
  std::set<ClientKeepAliveStream*> streams;
  int64_t live_ups = 0;
  bool stopping = false;

  void KeepAlive(ClientKeepAliveStream* s, const std::string& token, int64_t id);
  void SendUpstream(const std::string& token, int64_t id);
  void OnUpstreamResponse(UpstreamKeepAlive* up, const LeaseKeepAliveResponse& r);
  void OnUpstreamDone(UpstreamKeepAlive* up, const grpc::Status& s);
  void Forget(ClientKeepAliveStream* s);
  void Tick();
};

class UpstreamKeepAlive final
    : public QueuedClientCall<LeaseKeepAliveRequest, LeaseKeepAliveResponse> {
 public:
  UpstreamKeepAlive(LeaseState* st, std::string token, std::shared_ptr<Upstream> member)
      : st_(st), token(std::move(token)), member(std::move(member)) {}

  void Begin() {
    if (!token.empty()) ctx.AddMetadata("token", token);
    ctx.AddMetadata("hasleader", "true");
    etcdserverpb::Lease::NewStub(member->channel)->async()->LeaseKeepAlive(&ctx, this);
    StartRead(&resp_);
    StartCall();
  }

  void Write(int64_t id) {
    LeaseKeepAliveRequest req;
    req.set_id(id);
    QueuedClientCall::Write(std::move(req));
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    st_->OnUpstreamResponse(this, resp_);
    StartRead(&resp_);
  }

  void OnDone(const grpc::Status& s) override {
    CloseWrites();
    st_->OnUpstreamDone(this, s);
    delete this;
  }

  LeaseState* st_;
  const std::string token;
  const std::shared_ptr<Upstream> member;
  grpc::ClientContext ctx;
  bool closing = false;   // guarded by LeaseState::mu
  bool draining = false;  // its member left the member set (not a failure); LeaseState::mu
  int64_t idle_since_ms = 0;

 private:
  LeaseKeepAliveResponse resp_;
};

class ClientKeepAliveStream final : public ClientStream {
 public:
  ClientKeepAliveStream(LeaseState* st, grpc::GenericCallbackServerContext* ctx)
      : st_(st), ctx_(ctx) {
    token_ = AuthToken(*ctx);
    identity_ = ClientIdentity(*ctx, st_->proxy->tokens());
  }

  void Begin(std::shared_ptr<ClientKeepAliveStream> self) {
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->streams.insert(this);
    }
    Retain(std::move(self));
    ReadNext();
  }

  void OnReadDone(bool ok) override {
    LeaseKeepAliveRequest req;
    if (!TakeRequest(ok, &req)) return;
    grpc::Status st = st_->proxy->Admit(*ctx_, request_bytes(), identity_);
    if (!st.ok()) {
      Close(st);
      return;
    }
    if (queued_bytes() > kClientQueueBytes) {
      Close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                         "meridian-proxy: keepalive answers are not being read"));
      return;
    }
    st_->proxy->metrics().keepalives_in->Inc();
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->KeepAlive(this, token_, req.id());
    }
    ReadNext();
  }

  void OnCancel() override { Close(grpc::Status(grpc::StatusCode::CANCELLED, "canceled")); }

 protected:
  void OnStreamDone() override {
    std::lock_guard<std::mutex> lock(st_->mu);
    st_->Forget(this);
  }

 private:
  LeaseState* st_;
  grpc::GenericCallbackServerContext* ctx_;
  std::string token_, identity_;
};

void LeaseState::KeepAlive(ClientKeepAliveStream* s, const std::string& token, int64_t id) {
  int64_t now = SteadyNowMs();
  LeaseEntry& e = leases[{token, id}];
  e.last_used_ms = now;
  e.waiters.insert(s);
  if (e.in_flight) return;
  e.in_flight = true;
  e.sent_ms = now;
  SendUpstream(token, id);
}

void LeaseState::SendUpstream(const std::string& token, int64_t id) {
  if (stopping) return;
  UpstreamKeepAlive* up = nullptr;
  if (auto it = ups.find(token); it != ups.end()) {
    up = it->second;
  } else {
    auto member = proxy->pool()->Pick(last_failed[token]);
    if (!member) return;  // Tick() retries in-flight keepalives
    up = new UpstreamKeepAlive(this, token, member);
    ups[token] = up;
    ++live_ups;
    up->Begin();
  }
  proxy->metrics().keepalives_out->Inc();
  up->Write(id);
}

void LeaseState::OnUpstreamResponse(UpstreamKeepAlive* up, const LeaseKeepAliveResponse& r) {
  std::lock_guard<std::mutex> lock(mu);
  last_failed.erase(up->token);
  auto it = leases.find({up->token, r.id()});
  if (it == leases.end()) return;
  LeaseEntry& e = it->second;
  e.in_flight = false;
  grpc::ByteBuffer answer = SerializeToBuffer(r);
  for (ClientKeepAliveStream* s : e.waiters) s->Send(answer);
  e.waiters.clear();
  if (r.ttl() <= 0) leases.erase(it);  // not found (revoked or expired)
}

void LeaseState::OnUpstreamDone(UpstreamKeepAlive* up, const grpc::Status& s) {
  std::lock_guard<std::mutex> lock(mu);
  --live_ups;
  if (auto it = ups.find(up->token); it != ups.end() && it->second == up) ups.erase(it);
  if (!up->closing && !up->draining && !stopping) {
    spdlog::warn("upstream keepalive stream to {} ended: {}; resending elsewhere",
                 up->member->endpoint, s.error_message());
    proxy->pool()->ReportFailure(up->member.get());
    last_failed[up->token] = up->member.get();
  }
  // Keepalives are idempotent: the in-flight ones are sent again (by Tick) on a new stream.
  for (auto& [key, e] : leases) {
    if (key.first == up->token && e.in_flight) e.sent_ms = 0;
  }
  cv.notify_all();
}

void LeaseState::Forget(ClientKeepAliveStream* s) {
  for (auto& [key, e] : leases) e.waiters.erase(s);
  streams.erase(s);
}

void LeaseState::Tick() {
  int64_t now = SteadyNowMs();
  for (auto it = leases.begin(); it != leases.end();) {
    LeaseEntry& e = it->second;
    if (e.in_flight && (e.sent_ms == 0 || now - e.sent_ms > 5000)) {
      // Lost with a broken stream, or unanswered: ask again.
      if (e.waiters.empty()) {
        e.in_flight = false;
      } else {
        e.sent_ms = now;
        SendUpstream(it->first.first, it->first.second);
      }
    }
    if (!e.in_flight && e.waiters.empty() && now - e.last_used_ms > kIdleForgetMs) {
      it = leases.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [token, up] : ups) {
    bool used = false;
    for (auto& [key, e] : leases) {
      if (key.first == token && (e.in_flight || now - e.last_used_ms < 30000)) {
        used = true;
        break;
      }
    }
    if (up->closing || up->draining) continue;
    if (!used) {
      up->closing = true;
      up->ctx.TryCancel();
    } else if (!proxy->pool()->IsMember(up->member.get())) {
      // Its member left the member set: in-flight keepalives are resent on a new stream.
      spdlog::info("moving the keepalive stream off {}: no longer a member", up->member->endpoint);
      up->draining = true;
      up->ctx.TryCancel();
    }
  }
}

LeaseProxy::LeaseProxy(Proxy* proxy) : proxy_(proxy), state_(std::make_unique<LeaseState>()) {
  state_->proxy = proxy;
}

LeaseProxy::~LeaseProxy() { Stop(); }

void LeaseProxy::Start() {
  loop_ = std::thread([this] { Loop(); });
}

void LeaseProxy::Loop() { RunTicks(state_.get(), 100); }

void LeaseProxy::Stop() { StopCoalescer(state_.get(), &loop_); }

grpc::ServerGenericBidiReactor* LeaseProxy::NewStream(grpc::GenericCallbackServerContext* ctx) {
  auto s = std::make_shared<ClientKeepAliveStream>(state_.get(), ctx);
  ClientKeepAliveStream* raw = s.get();
  raw->Begin(std::move(s));
  return raw;
}

}  // namespace meridian::proxy
