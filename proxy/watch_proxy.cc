#include "proxy/watch_proxy.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "proxy/client_stream.h"
#include "proxy/key_prefix.h"
#include "proxy/proxy.h"
#include "proxy/queued_call.h"
#include "spdlog/spdlog.h"

namespace meridian::proxy {

using etcdserverpb::WatchCreateRequest;
using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

namespace {

constexpr char kErrDuplicateWatchId[] = "mvcc: duplicate watch ID provided on the WatchStream";
constexpr char kErrEmptyWatcherRange[] = "mvcc: watcher range is empty";
constexpr int64_t kMinBackoffMs = 100;
constexpr int64_t kMaxBackoffMs = 2000;
constexpr int64_t kHistoryBudgetBytes = 64 << 20;

struct WatchSpec {
  std::string token, key, end;
  bool prev_kv = false, no_put = false, no_delete = false;
  auto Tie() const { return std::tie(token, key, end, prev_kv, no_put, no_delete); }
  bool operator<(const WatchSpec& o) const { return Tie() < o.Tie(); }
};

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// One length-delimited field: tag, length, bytes.
void AppendField(std::string* out, int field, const std::string& bytes) {
  AppendVarint(out, (static_cast<uint64_t>(field) << 3) | 2);
  AppendVarint(out, bytes.size());
  out->append(bytes);
}

int64_t EventRev(const mvccpb::Event& ev) { return ev.kv().mod_revision(); }

}  // namespace

class ClientWatchStream;
class UpstreamStream;
struct Broadcast;

struct ClientWatcher {
  enum class State { kWaiting, kJoined, kCatchup, kParked };
  ClientWatchStream* stream = nullptr;
  int64_t id = 0;
  WatchSpec spec;
  bool progress_notify = false;
  bool fragment = false;
  State state = State::kWaiting;
  Broadcast* bcast = nullptr;  // kWaiting, kJoined
  // Joined: events below pos are filtered out. Catch-up and parked: the next revision it needs.
  int64_t pos = 0;
  bool pos_is_now = false;  // asked for "from now" and not placed yet
  UpstreamStream* catchup_up = nullptr;
  int64_t catchup_uid = 0;
  bool created_sent = false;
};

struct Broadcast {
  WatchSpec spec;
  UpstreamStream* up = nullptr;
  int64_t uid = 0;
  bool created = false;
  int64_t start_rev = 0;
  bool positioned = false;
  int64_t next_rev = 0;      // every event below has been delivered
  int64_t history_from = 0;  // history holds every event in [history_from, next_rev)
  std::deque<mvccpb::Event> history;
  int64_t history_bytes = 0;
  etcdserverpb::ResponseHeader header;
  std::set<ClientWatcher*> watchers;
  std::vector<ClientWatcher*> waiting;
};

struct Target {
  Broadcast* b = nullptr;
  ClientWatcher* w = nullptr;
};

struct WatchState {
  Proxy* proxy = nullptr;
  std::mutex mu;
  std::map<WatchSpec, std::unique_ptr<Broadcast>> broadcasts;
  std::map<std::string, UpstreamStream*> ups;
  std::map<std::string, int64_t> reconnect_at_ms;
  std::map<std::string, int64_t> backoff_ms;
  std::map<std::string, const Upstream*> last_failed;
  std::map<std::string, int64_t> known_rev;
  std::set<ClientWatchStream*> streams;
  int64_t next_uid = 1;
  int64_t client_watchers = 0;
  int64_t upstream_watchers = 0;
  int64_t live_ups = 0;
  // Watch history kept by all broadcasts together; past the budget each broadcast keeps only a
  // few events, so memory stays bounded however many keys are watched.
  int64_t total_history_bytes = 0;
  std::map<std::string, etcdserverpb::ResponseHeader> last_header;
  bool stopping = false;
  // Set when a watcher is parked or an upstream stream fails: Tick() then scans the watchers
  // until none is parked or waiting for a stream.
  bool scan_watchers = false;
  int64_t last_ready_ms = 0;
  std::condition_variable cv;

  // All below: mu held.
  UpstreamStream* UpstreamFor(const std::string& token);
  // Creates an upstream watcher for `target` on `up`; returns its id.
  int64_t SendCreate(UpstreamStream* up, const WatchSpec& spec, int64_t start_rev, Target target);
  void IssueCreate(Broadcast* b);
  void IssueCatchup(ClientWatcher* w);
  void CancelUpstream(UpstreamStream* up, int64_t uid);
  void Place(ClientWatcher* w);
  void Join(Broadcast* b, ClientWatcher* w);
  void SendCreated(ClientWatcher* w, int64_t rev, const etcdserverpb::ResponseHeader& header);
  void Remove(ClientWatcher* w);
  void DropIfEmpty(Broadcast* b);
  void EraseBroadcast(Broadcast* b);
  void OnUpstreamResponse(UpstreamStream* up, int64_t uid, WatchResponse& r);
  void OnBroadcastResponse(Broadcast* b, WatchResponse& r);
  void OnCatchupResponse(ClientWatcher* w, WatchResponse& r);
  void OnStreamProgress(UpstreamStream* up, const WatchResponse& r);
  void TryMerge(ClientWatcher* w);
  void Fail(ClientWatcher* w, const WatchResponse& r);
  void FailBroadcast(Broadcast* b, const WatchResponse& r);
  void Fanout(Broadcast* b, const WatchResponse& r);
  // Queues events for one watcher (filtered to rev >= w->pos, fragmented if asked). Parks the
  // watcher instead when its stream is over its buffer. False when parked.
  bool Deliver(ClientWatcher* w, const WatchResponse& r);
  void Park(ClientWatcher* w, int64_t from_rev);
  void RequestProgress(const std::string& token);
  void OnUpstreamDone(UpstreamStream* up, const grpc::Status& status);
  void Tick();
  etcdserverpb::ResponseHeader HeaderAt(const std::string& token,
                                        const etcdserverpb::ResponseHeader& base, int64_t rev);
  int64_t Known(const std::string& token) {
    auto it = known_rev.find(token);
    return it == known_rev.end() ? 0 : it->second;
  }
};

// ---------------------------------------------------------------------------------------------

class UpstreamStream final : public QueuedClientCall<WatchRequest, WatchResponse> {
 public:
  UpstreamStream(WatchState* st, std::string token, std::shared_ptr<Upstream> member)
      : st_(st), token(std::move(token)), member(std::move(member)) {}

  void Begin() {
    if (!token.empty()) ctx.AddMetadata("token", token);
    // The member cancels the stream when it loses its leader; we then move to another member.
    ctx.AddMetadata("hasleader", "true");
    etcdserverpb::Watch::NewStub(member->channel)->async()->Watch(&ctx, this);
    StartRead(&resp_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      int64_t uid = resp_.watch_id();
      if (resp_.created()) {
        // Creates are answered in the order they were sent; a failed create may carry -1.
        if (!awaiting_created.empty()) {
          if (uid == -1) uid = awaiting_created.front();
          auto it = std::find(awaiting_created.begin(), awaiting_created.end(), uid);
          if (it != awaiting_created.end()) awaiting_created.erase(it);
        }
      }
      st_->OnUpstreamResponse(this, uid, resp_);
    }
    resp_.Clear();
    StartRead(&resp_);
  }

  void OnDone(const grpc::Status& s) override {
    CloseWrites();
    st_->OnUpstreamDone(this, s);
    delete this;
  }

  WatchState* st_;
  const std::string token;
  const std::shared_ptr<Upstream> member;
  grpc::ClientContext ctx;
  // Guarded by WatchState::mu.
  std::map<int64_t, Target> targets;
  std::deque<int64_t> awaiting_created;
  bool progress_requested = false;
  bool closing = false;  // closed on purpose (idle, shutdown): not a member failure
  bool draining = false;  // its member left the member set: moved elsewhere, not a failure
  bool answered = false;
  int64_t idle_since_ms = 0;

 private:
  WatchResponse resp_;
};

// ---------------------------------------------------------------------------------------------

class ClientWatchStream final : public ClientStream {
 public:
  ClientWatchStream(WatchState* st, grpc::GenericCallbackServerContext* ctx)
      : st_(st), ctx_(ctx) {
    Proxy* p = st_->proxy;
    drain_mark_bytes_ = p->config().watch_stream_buffer_bytes;
    token = AuthToken(*ctx);
    identity = ClientIdentity(*ctx, p->tokens());
    auto it = ctx->client_metadata().find("hasleader");
    require_leader = it != ctx->client_metadata().end() && it->second == "true";
  }

  void Begin(std::shared_ptr<ClientWatchStream> self) {
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->streams.insert(this);
    }
    Retain(std::move(self));
    ReadNext();
  }

  void OnReadDone(bool ok) override {
    WatchRequest req;
    if (!TakeRequest(ok, &req)) return;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      Handle(req);
    }
    ReadNext();
  }

  void OnCancel() override { Close(grpc::Status(grpc::StatusCode::CANCELLED, "canceled")); }

  // Whether every watcher of this stream is placed (no parked one), for progress answers.
  bool AllPlaced() const {
    for (const auto& [id, w] : watchers) {
      if (w->state == ClientWatcher::State::kParked) return false;
    }
    return true;
  }

  void SendResponse(const WatchResponse& r) { Send(SerializeToBuffer(r)); }

  // Guarded by WatchState::mu.
  std::map<int64_t, std::unique_ptr<ClientWatcher>> watchers;
  int64_t next_id = 0;
  bool progress_pending = false;
  std::string token;
  std::string identity;
  bool require_leader = false;

 protected:
  void OnStreamDone() override {
    std::lock_guard<std::mutex> lock(st_->mu);
    std::vector<int64_t> ids;
    for (auto& [id, w] : watchers) ids.push_back(id);
    for (int64_t id : ids) st_->Remove(watchers[id].get());
    watchers.clear();
    st_->streams.erase(this);
  }

  void OnDrained() override {
    std::lock_guard<std::mutex> lock(st_->mu);
    for (auto& [id, w] : watchers) {
      if (w->state == ClientWatcher::State::kParked) st_->Place(w.get());
    }
  }

 private:
  void Handle(const WatchRequest& req) {
    Proxy* p = st_->proxy;
    switch (req.request_union_case()) {
      case WatchRequest::kCreateRequest:
        Create(req.create_request());
        break;
      case WatchRequest::kCancelRequest: {
        auto it = watchers.find(req.cancel_request().watch_id());
        if (it == watchers.end()) return;  // etcd answers nothing for an unknown id
        ClientWatcher* w = it->second.get();
        WatchResponse r;
        *r.mutable_header() = st_->HeaderAt(token, {}, st_->Known(token));
        r.set_watch_id(w->id);
        r.set_canceled(true);
        st_->Remove(w);
        watchers.erase(it);
        SendResponse(r);
        break;
      }
      case WatchRequest::kProgressRequest:
        progress_pending = true;
        st_->RequestProgress(token);
        break;
      default:
        break;
    }
    (void)p;
  }

  void Refuse(const std::string& reason) {
    WatchResponse r;
    *r.mutable_header() = st_->HeaderAt(token, {}, st_->Known(token));
    r.set_watch_id(-1);
    r.set_created(true);
    r.set_canceled(true);
    r.set_cancel_reason(reason);
    SendResponse(r);
  }

  void Create(WatchCreateRequest creq) {
    Proxy* p = st_->proxy;
    if (grpc::Status st = p->Admit(*ctx_, creq.ByteSizeLong(), identity); !st.ok()) {
      Refuse(st.error_message());
      return;
    }
    if (creq.key().empty()) creq.set_key(std::string(1, '\0'));
    const std::string& end = creq.range_end();
    if (!end.empty() && end != std::string(1, '\0') && end <= creq.key()) {
      Refuse(kErrEmptyWatcherRange);
      return;
    }
    if (creq.watch_id() != 0 && watchers.count(creq.watch_id()) > 0) {
      Refuse(kErrDuplicateWatchId);
      return;
    }
    if (p->config().max_watchers_per_stream > 0 &&
        static_cast<int64_t>(watchers.size()) >= p->config().max_watchers_per_stream) {
      p->metrics().quota_rejections->Inc();
      Refuse(absl::StrCat("meridian-proxy: too many watchers on one stream (max ",
                          p->config().max_watchers_per_stream, ")"));
      return;
    }
    if (auto st = p->quota()->AcquireWatcher(identity); !st.ok()) {
      p->metrics().quota_rejections->Inc();
      Refuse(std::string(st.message()));
      return;
    }
    if (!p->prefix().empty()) p->prefix().Apply(&creq);
    int64_t id = creq.watch_id();
    if (id == 0) {
      while (watchers.count(next_id) > 0) ++next_id;
      id = next_id++;
    }
    auto w = std::make_unique<ClientWatcher>();
    w->stream = this;
    w->id = id;
    w->spec.token = token;
    w->spec.key = creq.key();
    w->spec.end = creq.range_end();
    w->spec.prev_kv = creq.prev_kv();
    for (int f : creq.filters()) {
      if (f == WatchCreateRequest::NOPUT) w->spec.no_put = true;
      if (f == WatchCreateRequest::NODELETE) w->spec.no_delete = true;
    }
    w->progress_notify = creq.progress_notify();
    w->fragment = creq.fragment();
    w->pos = creq.start_revision() > 0 ? creq.start_revision() : 0;
    w->pos_is_now = creq.start_revision() <= 0;
    ClientWatcher* raw = w.get();
    watchers[id] = std::move(w);
    ++st_->client_watchers;
    st_->Place(raw);
  }

  WatchState* st_;
  grpc::GenericCallbackServerContext* ctx_;
};

// ---------------------------------------------------------------------------------------------

etcdserverpb::ResponseHeader WatchState::HeaderAt(const std::string& token,
                                                  const etcdserverpb::ResponseHeader& base,
                                                  int64_t rev) {
  etcdserverpb::ResponseHeader h = base;
  if (h.cluster_id() == 0) {
    // The latest header from this token's upstream carries the cluster and member ids.
    if (auto it = last_header.find(token); it != last_header.end()) h = it->second;
  }
  h.set_revision(rev);
  return h;
}

UpstreamStream* WatchState::UpstreamFor(const std::string& token) {
  if (stopping) return nullptr;
  if (auto it = ups.find(token); it != ups.end()) return it->second;
  if (auto it = reconnect_at_ms.find(token); it != reconnect_at_ms.end()) {
    if (SteadyNowMs() < it->second) return nullptr;  // Tick() reconnects when it is time
  }
  auto member = proxy->pool()->Pick(last_failed[token]);
  if (!member) return nullptr;
  auto* up = new UpstreamStream(this, token, member);
  ups[token] = up;
  ++live_ups;
  up->Begin();
  return up;
}

int64_t WatchState::SendCreate(UpstreamStream* up, const WatchSpec& spec, int64_t start_rev,
                               Target target) {
  int64_t uid = next_uid++;
  up->targets[uid] = target;
  ++upstream_watchers;
  WatchRequest req;
  auto* c = req.mutable_create_request();
  c->set_key(spec.key);
  c->set_range_end(spec.end);
  c->set_prev_kv(spec.prev_kv);
  if (spec.no_put) c->add_filters(WatchCreateRequest::NOPUT);
  if (spec.no_delete) c->add_filters(WatchCreateRequest::NODELETE);
  c->set_start_revision(start_rev);
  c->set_watch_id(uid);
  // Upstream progress notifications keep idle broadcasts' positions current.
  c->set_progress_notify(true);
  up->awaiting_created.push_back(uid);
  up->Write(std::move(req));
  return uid;
}

void WatchState::IssueCreate(Broadcast* b) {
  UpstreamStream* up = UpstreamFor(b->spec.token);
  b->up = up;
  b->created = false;
  b->uid = 0;
  if (up == nullptr) return;  // re-issued by Tick() once a stream is up
  b->uid = SendCreate(up, b->spec, b->positioned ? b->next_rev : b->start_rev, Target{b, nullptr});
}

void WatchState::IssueCatchup(ClientWatcher* w) {
  w->state = ClientWatcher::State::kCatchup;
  w->bcast = nullptr;
  UpstreamStream* up = UpstreamFor(w->spec.token);
  w->catchup_up = up;
  w->catchup_uid = 0;
  if (up == nullptr) return;
  w->catchup_uid = SendCreate(up, w->spec, w->pos, Target{nullptr, w});
}

void WatchState::CancelUpstream(UpstreamStream* up, int64_t uid) {
  if (up == nullptr || uid == 0) return;
  if (up->targets.erase(uid) > 0) --upstream_watchers;
  WatchRequest req;
  req.mutable_cancel_request()->set_watch_id(uid);
  up->Write(std::move(req));
}

void WatchState::SendCreated(ClientWatcher* w, int64_t rev,
                             const etcdserverpb::ResponseHeader& header) {
  if (w->created_sent) return;
  w->created_sent = true;
  WatchResponse r;
  *r.mutable_header() = HeaderAt(w->spec.token, header, rev);
  r.set_watch_id(w->id);
  r.set_created(true);
  w->stream->SendResponse(r);
}

void WatchState::Join(Broadcast* b, ClientWatcher* w) {
  w->state = ClientWatcher::State::kJoined;
  w->bcast = b;
  b->watchers.insert(w);
}

void WatchState::Place(ClientWatcher* w) {
  auto it = broadcasts.find(w->spec);
  if (it == broadcasts.end()) {
    auto b = std::make_unique<Broadcast>();
    b->spec = w->spec;
    if (w->pos_is_now) {
      b->start_rev = 0;
      b->waiting.push_back(w);
      w->state = ClientWatcher::State::kWaiting;
      w->bcast = b.get();
    } else {
      b->start_rev = w->pos;
      b->positioned = true;
      b->next_rev = w->pos;
      b->history_from = w->pos;
      Join(b.get(), w);
    }
    Broadcast* raw = b.get();
    broadcasts[w->spec] = std::move(b);
    IssueCreate(raw);
    // Created is answered once the upstream watcher exists (OnBroadcastResponse).
    return;
  }
  Broadcast* b = it->second.get();
  if (!b->positioned) {
    if (w->pos_is_now) {
      b->waiting.push_back(w);
      w->state = ClientWatcher::State::kWaiting;
      w->bcast = b;
    } else {
      IssueCatchup(w);  // merges once the broadcast knows where it is
    }
    return;
  }
  if (w->pos_is_now) {
    w->pos = std::max(b->next_rev, Known(w->spec.token) + 1);
    w->pos_is_now = false;
    SendCreated(w, w->pos - 1, b->header);
    Join(b, w);
    return;
  }
  if (w->pos >= b->next_rev) {
    SendCreated(w, std::max(Known(w->spec.token), w->pos - 1), b->header);
    Join(b, w);
    return;
  }
  if (w->pos >= b->history_from) {
    SendCreated(w, Known(w->spec.token), b->header);
    WatchResponse replay;
    *replay.mutable_header() = b->header;
    for (const auto& ev : b->history) {
      if (EventRev(ev) >= w->pos) *replay.add_events() = ev;
    }
    int64_t from = w->pos;
    Join(b, w);
    if (replay.events_size() > 0) {
      replay.mutable_header()->set_revision(EventRev(*replay.events().rbegin()));
      if (!Deliver(w, replay)) return;
    }
    w->pos = std::max(from, b->next_rev);
    return;
  }
  IssueCatchup(w);
}

void WatchState::Remove(ClientWatcher* w) {
  switch (w->state) {
    case ClientWatcher::State::kWaiting: {
      Broadcast* b = w->bcast;
      b->waiting.erase(std::remove(b->waiting.begin(), b->waiting.end(), w), b->waiting.end());
      DropIfEmpty(b);
      break;
    }
    case ClientWatcher::State::kJoined: {
      Broadcast* b = w->bcast;
      b->watchers.erase(w);
      DropIfEmpty(b);
      break;
    }
    case ClientWatcher::State::kCatchup:
      CancelUpstream(w->catchup_up, w->catchup_uid);
      break;
    case ClientWatcher::State::kParked:
      break;
  }
  w->bcast = nullptr;
  w->catchup_up = nullptr;
  w->catchup_uid = 0;
  --client_watchers;
  proxy->quota()->ReleaseWatcher(w->stream->identity);
}

void WatchState::DropIfEmpty(Broadcast* b) {
  if (!b->watchers.empty() || !b->waiting.empty()) return;
  CancelUpstream(b->up, b->uid);
  EraseBroadcast(b);
}

void WatchState::EraseBroadcast(Broadcast* b) {
  total_history_bytes -= b->history_bytes;
  WatchSpec spec = b->spec;  // b dies in erase
  broadcasts.erase(spec);
}

void WatchState::OnUpstreamResponse(UpstreamStream* up, int64_t uid, WatchResponse& r) {
  up->answered = true;
  backoff_ms.erase(up->token);
  last_failed.erase(up->token);
  if (r.header().revision() > 0) {
    int64_t& k = known_rev[up->token];
    k = std::max(k, r.header().revision());
    last_header[up->token] = r.header();
  }
  if (!proxy->prefix().empty()) proxy->prefix().Unapply(&r);
  if (uid == -1 && !r.created()) {
    OnStreamProgress(up, r);
    return;
  }
  auto it = up->targets.find(uid);
  if (it == up->targets.end()) return;  // canceled meanwhile
  Target t = it->second;
  if (r.canceled() && !r.created()) {
    up->targets.erase(it);
    --upstream_watchers;
  } else if (r.created() && r.canceled()) {
    up->targets.erase(it);
    --upstream_watchers;
  }
  if (t.b != nullptr) {
    OnBroadcastResponse(t.b, r);
  } else {
    OnCatchupResponse(t.w, r);
  }
}

void WatchState::FailBroadcast(Broadcast* b, const WatchResponse& r) {
  std::vector<ClientWatcher*> all(b->watchers.begin(), b->watchers.end());
  all.insert(all.end(), b->waiting.begin(), b->waiting.end());
  b->watchers.clear();
  b->waiting.clear();
  b->up = nullptr;
  b->uid = 0;
  for (ClientWatcher* w : all) {
    w->state = ClientWatcher::State::kParked;  // detached; Fail removes it
    w->bcast = nullptr;
    Fail(w, r);
  }
  EraseBroadcast(b);
}

void WatchState::Fail(ClientWatcher* w, const WatchResponse& r) {
  WatchResponse out;
  *out.mutable_header() = r.header();
  out.set_watch_id(w->id);
  out.set_created(!w->created_sent);
  out.set_canceled(true);
  out.set_compact_revision(r.compact_revision());
  out.set_cancel_reason(r.cancel_reason());
  ClientWatchStream* s = w->stream;
  if (w->state == ClientWatcher::State::kCatchup) {
    w->catchup_up = nullptr;  // the upstream watcher is already gone
    w->catchup_uid = 0;
    w->state = ClientWatcher::State::kParked;
  }
  Remove(w);
  int64_t id = w->id;
  s->watchers.erase(id);  // destroys w
  s->SendResponse(out);
}

void WatchState::OnBroadcastResponse(Broadcast* b, WatchResponse& r) {
  if (r.canceled()) {
    FailBroadcast(b, r);
    return;
  }
  if (r.created()) {
    b->created = true;
    b->header = r.header();
    if (!b->positioned) {
      b->positioned = true;
      b->next_rev = r.header().revision() + 1;
      b->history_from = b->next_rev;
    }
    std::vector<ClientWatcher*> waiting;
    waiting.swap(b->waiting);
    for (ClientWatcher* w : waiting) {
      w->pos = b->next_rev;
      w->pos_is_now = false;
      SendCreated(w, b->next_rev - 1, b->header);
      Join(b, w);
    }
    for (ClientWatcher* w : b->watchers) SendCreated(w, Known(b->spec.token), b->header);
    return;
  }
  b->header = r.header();
  if (r.events_size() == 0) {
    // A progress notification: nothing below header.revision is missing.
    b->next_rev = std::max(b->next_rev, r.header().revision() + 1);
    WatchResponse p;
    *p.mutable_header() = r.header();
    for (ClientWatcher* w : b->watchers) {
      if (!w->progress_notify) continue;
      p.set_watch_id(w->id);
      w->stream->SendResponse(p);
    }
    return;
  }
  // Drop anything already delivered (cannot happen with an exact resume; defensive).
  if (EventRev(r.events(0)) < b->next_rev) {
    WatchResponse kept;
    *kept.mutable_header() = r.header();
    for (const auto& ev : r.events()) {
      if (EventRev(ev) >= b->next_rev) *kept.add_events() = ev;
    }
    if (kept.events_size() == 0) return;
    r = std::move(kept);
  }
  b->next_rev = EventRev(*r.events().rbegin()) + 1;
  for (const auto& ev : r.events()) {
    int64_t n = static_cast<int64_t>(ev.ByteSizeLong());
    b->history_bytes += n;
    total_history_bytes += n;
    b->history.push_back(ev);
  }
  int64_t max_hist = proxy->config().watch_history_events;
  if (total_history_bytes > kHistoryBudgetBytes) max_hist = std::min<int64_t>(max_hist, 16);
  while (static_cast<int64_t>(b->history.size()) > max_hist && !b->history.empty()) {
    // Whole revisions go together: history_from must never split one.
    int64_t rev = EventRev(b->history.front());
    while (!b->history.empty() && EventRev(b->history.front()) == rev) {
      int64_t n = static_cast<int64_t>(b->history.front().ByteSizeLong());
      b->history_bytes -= n;
      total_history_bytes -= n;
      b->history.pop_front();
    }
    b->history_from = b->history.empty() ? b->next_rev : EventRev(b->history.front());
  }
  Fanout(b, r);
}

void WatchState::Fanout(Broadcast* b, const WatchResponse& r) {
  // The header and the events are encoded once and shared (reference-counted slices) by every
  // watcher's response; only the watch_id field differs.
  std::string header_bytes, events_bytes;
  AppendField(&header_bytes, 1, r.header().SerializeAsString());
  for (const auto& ev : r.events()) AppendField(&events_bytes, 11, ev.SerializeAsString());
  grpc::Slice header_slice(header_bytes), events_slice(events_bytes);
  int64_t first_rev = EventRev(r.events(0));
  size_t total = header_bytes.size() + events_bytes.size();
  uint64_t max_bytes = proxy->config().max_request_bytes;
  int64_t limit = proxy->config().watch_stream_buffer_bytes;
  std::vector<ClientWatcher*> watchers(b->watchers.begin(), b->watchers.end());
  int64_t delivered = 0;
  for (ClientWatcher* w : watchers) {
    if (w->pos > first_rev || (w->fragment && total > max_bytes)) {
      if (Deliver(w, r)) ++delivered;
      continue;
    }
    if (w->stream->queued_bytes() > limit) {
      Park(w, first_rev);
      continue;
    }
    std::string id_bytes;
    if (w->id != 0) {
      AppendVarint(&id_bytes, 2 << 3);
      AppendVarint(&id_bytes, static_cast<uint64_t>(w->id));
    }
    grpc::Slice slices[3] = {header_slice, grpc::Slice(id_bytes), events_slice};
    w->stream->Send(grpc::ByteBuffer(slices, 3));
    ++delivered;
  }
  proxy->metrics().events_delivered->Inc(static_cast<double>(delivered * r.events_size()));
}

bool WatchState::Deliver(ClientWatcher* w, const WatchResponse& r) {
  std::vector<const mvccpb::Event*> events;
  for (const auto& ev : r.events()) {
    if (EventRev(ev) >= w->pos) events.push_back(&ev);
  }
  if (events.empty()) return true;
  if (w->stream->queued_bytes() > proxy->config().watch_stream_buffer_bytes) {
    Park(w, EventRev(*events.front()));
    return false;
  }
  uint64_t max_bytes = proxy->config().max_request_bytes;
  size_t i = 0;
  while (i < events.size()) {
    WatchResponse out;
    *out.mutable_header() = r.header();
    out.set_watch_id(w->id);
    size_t bytes = 0;
    // With fragment=true a response is cut before it would exceed --max-request-bytes (each
    // piece carries at least one event); every piece but the last says fragment=true.
    while (i < events.size()) {
      size_t n = events[i]->ByteSizeLong();
      if (w->fragment && out.events_size() > 0 && bytes + n > max_bytes) break;
      *out.add_events() = *events[i];
      bytes += n;
      ++i;
    }
    if (w->fragment && i < events.size()) out.set_fragment(true);
    w->stream->SendResponse(out);
  }
  return true;
}

void WatchState::Park(ClientWatcher* w, int64_t from_rev) {
  scan_watchers = true;
  proxy->metrics().watchers_parked->Inc();
  if (w->state == ClientWatcher::State::kJoined) {
    Broadcast* b = w->bcast;
    b->watchers.erase(w);
    w->bcast = nullptr;
    w->state = ClientWatcher::State::kParked;
    w->pos = from_rev;
    DropIfEmpty(b);
  } else if (w->state == ClientWatcher::State::kCatchup) {
    CancelUpstream(w->catchup_up, w->catchup_uid);
    w->catchup_up = nullptr;
    w->catchup_uid = 0;
    w->state = ClientWatcher::State::kParked;
    w->pos = from_rev;
  }
}

void WatchState::OnCatchupResponse(ClientWatcher* w, WatchResponse& r) {
  if (r.canceled()) {
    Fail(w, r);
    return;
  }
  if (r.created()) {
    SendCreated(w, r.header().revision(), r.header());
    return;
  }
  if (r.events_size() == 0) {
    w->pos = std::max(w->pos, r.header().revision() + 1);
    if (w->progress_notify) {
      WatchResponse p;
      *p.mutable_header() = r.header();
      p.set_watch_id(w->id);
      w->stream->SendResponse(p);
    }
    TryMerge(w);
    return;
  }
  if (!Deliver(w, r)) return;  // parked
  w->pos = std::max(w->pos, EventRev(*r.events().rbegin()) + 1);
  TryMerge(w);
}

void WatchState::TryMerge(ClientWatcher* w) {
  if (w->state != ClientWatcher::State::kCatchup || w->catchup_up == nullptr) return;
  auto it = broadcasts.find(w->spec);
  if (it == broadcasts.end()) {
    // Nobody else watches this: the catch-up watcher becomes the broadcast.
    auto b = std::make_unique<Broadcast>();
    b->spec = w->spec;
    b->up = w->catchup_up;
    b->uid = w->catchup_uid;
    b->created = true;
    b->start_rev = w->pos;
    b->positioned = true;
    b->next_rev = w->pos;
    b->history_from = w->pos;
    b->header = HeaderAt(w->spec.token, {}, Known(w->spec.token));
    b->up->targets[b->uid] = Target{b.get(), nullptr};
    w->catchup_up = nullptr;
    w->catchup_uid = 0;
    Join(b.get(), w);
    broadcasts[w->spec] = std::move(b);
    return;
  }
  Broadcast* b = it->second.get();
  if (!b->positioned || w->pos < b->history_from) return;
  CancelUpstream(w->catchup_up, w->catchup_uid);
  w->catchup_up = nullptr;
  w->catchup_uid = 0;
  w->state = ClientWatcher::State::kParked;
  Place(w);
}

void WatchState::RequestProgress(const std::string& token) {
  UpstreamStream* up = UpstreamFor(token);
  if (up == nullptr || up->progress_requested) return;
  up->progress_requested = true;
  WatchRequest req;
  req.mutable_progress_request();
  up->Write(std::move(req));
}

void WatchState::OnStreamProgress(UpstreamStream* up, const WatchResponse& r) {
  up->progress_requested = false;
  int64_t rev = r.header().revision();
  // Members that answer a progress request only once every watcher on the stream is synced
  // (etcd >= 3.5.13, Meridian) tell us the position of every watcher on it.
  if (proxy->pool()->AllReachableSupportSyncedProgress()) {
    std::vector<ClientWatcher*> catchups;
    for (auto& [uid, t] : up->targets) {
      if (t.b != nullptr && t.b->positioned) t.b->next_rev = std::max(t.b->next_rev, rev + 1);
      if (t.w != nullptr) {
        t.w->pos = std::max(t.w->pos, rev + 1);
        catchups.push_back(t.w);
      }
    }
    for (ClientWatcher* w : catchups) TryMerge(w);
  }
  WatchResponse out;
  *out.mutable_header() = r.header();
  out.set_watch_id(-1);
  for (ClientWatchStream* s : streams) {
    if (!s->progress_pending || s->token != up->token) continue;
    if (!s->AllPlaced()) continue;  // Tick() asks again once its watchers are back
    s->progress_pending = false;
    s->SendResponse(out);
  }
}

void WatchState::OnUpstreamDone(UpstreamStream* up, const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu);
  scan_watchers = true;
  --live_ups;
  if (auto it = ups.find(up->token); it != ups.end() && it->second == up) ups.erase(it);
  if (!up->closing && !up->draining && !stopping) {
    spdlog::warn("upstream watch stream to {} ended: {} ({}); resuming elsewhere",
                 up->member->endpoint, status.error_message(), static_cast<int>(status.error_code()));
    proxy->pool()->ReportFailure(up->member.get());
    last_failed[up->token] = up->member.get();
    int64_t& backoff = backoff_ms[up->token];
    backoff = backoff == 0 ? kMinBackoffMs : std::min(kMaxBackoffMs, backoff * 2);
    reconnect_at_ms[up->token] = SteadyNowMs() + (up->answered ? 0 : backoff);
  }
  for (auto& [uid, t] : up->targets) {
    if (t.b != nullptr) {
      t.b->up = nullptr;
      t.b->uid = 0;
      t.b->created = false;
    } else if (t.w != nullptr) {
      t.w->catchup_up = nullptr;
      t.w->catchup_uid = 0;
    }
    --upstream_watchers;
  }
  up->targets.clear();
  cv.notify_all();
}

void WatchState::Tick() {
  int64_t now = SteadyNowMs();
  if (proxy->pool()->HasReadyMember()) last_ready_ms = now;
  // Streams on a member that left the member set (DNS, MemberList) move to another member: the
  // cancelled stream's watchers are re-created from their positions, as after a failure.
  for (auto& [token, up] : ups) {
    if (!up->draining && !up->closing && !proxy->pool()->IsMember(up->member.get())) {
      spdlog::info("moving the watch stream off {}: no longer a member", up->member->endpoint);
      up->draining = true;
      up->ctx.TryCancel();
    }
  }
  // Re-home what lost its upstream stream.
  std::set<std::string> tokens;
  for (auto& [spec, b] : broadcasts) {
    if (b->up == nullptr) tokens.insert(spec.token);
  }
  // Scanning every watcher is only needed while some are parked or lost their upstream.
  bool scan = scan_watchers;
  bool found = false;
  for (ClientWatchStream* s : streams) {
    if (s->progress_pending) tokens.insert(s->token);
    if (!scan) continue;
    for (auto& [id, w] : s->watchers) {
      if (w->state == ClientWatcher::State::kCatchup && w->catchup_up == nullptr) {
        tokens.insert(w->spec.token);
        found = true;
      }
      if (w->state == ClientWatcher::State::kParked) found = true;
      // Safety net for a drained stream whose parked watchers were not resumed.
      if (w->state == ClientWatcher::State::kParked &&
          s->queued_bytes() <= proxy->config().watch_stream_buffer_bytes / 4) {
        Place(w.get());
      }
    }
  }
  if (scan && !found) scan_watchers = false;
  for (const auto& token : tokens) {
    if (UpstreamFor(token) == nullptr) continue;
    std::vector<Broadcast*> homeless;
    for (auto& [spec, b] : broadcasts) {
      if (spec.token == token && b->up == nullptr) homeless.push_back(b.get());
    }
    for (Broadcast* b : homeless) IssueCreate(b);
    for (ClientWatchStream* s : streams) {
      for (auto& [id, w] : s->watchers) {
        if (w->state == ClientWatcher::State::kCatchup && w->catchup_up == nullptr &&
            w->spec.token == token) {
          IssueCatchup(w.get());
        }
      }
      if (s->progress_pending && s->token == token && s->AllPlaced()) RequestProgress(token);
    }
  }
  // Close idle upstream streams (their token's clients are gone).
  for (auto& [token, up] : ups) {
    if (!up->targets.empty() || up->closing) {
      up->idle_since_ms = 0;
      continue;
    }
    if (up->idle_since_ms == 0) up->idle_since_ms = now;
    if (now - up->idle_since_ms > 30000) {
      up->closing = true;
      up->ctx.TryCancel();
    }
  }
  // Require-leader streams end with etcd's error when no member has had a leader for a while.
  if (now - last_ready_ms > proxy->config().no_leader_close_ms) {
    for (ClientWatchStream* s : streams) {
      if (s->require_leader) {
        s->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader"));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

WatchProxy::WatchProxy(Proxy* proxy) : proxy_(proxy), state_(std::make_unique<WatchState>()) {
  state_->proxy = proxy;
}

WatchProxy::~WatchProxy() { Stop(); }

void WatchProxy::Start() {
  state_->last_ready_ms = SteadyNowMs();
  loop_ = std::thread([this] { Loop(); });
}

void WatchProxy::Loop() { RunTicks(state_.get(), 50); }

void WatchProxy::Stop() { StopCoalescer(state_.get(), &loop_); }

grpc::ServerGenericBidiReactor* WatchProxy::NewStream(grpc::GenericCallbackServerContext* ctx) {
  auto s = std::make_shared<ClientWatchStream>(state_.get(), ctx);
  ClientWatchStream* raw = s.get();
  raw->Begin(std::move(s));
  return raw;
}

int64_t WatchProxy::client_watchers() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->client_watchers;
}

int64_t WatchProxy::upstream_watchers() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->upstream_watchers;
}

}  // namespace meridian::proxy
