// meridian-proxy acceptance (issue 5): watch coalescing N-to-1, catch-up of late joiners,
// fail-over of the upstream watch without gap or duplicate, request-size and quota limits, and
// keepalive coalescing. Runs the proxy in front of meridian-node (and, for the auth-based quota
// case, Debian's etcd, which has auth).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "harness.h"

namespace meridian::e2e {
namespace {

using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

CommandResult Curl(const std::string& url) {
  return RunCommand({"/usr/bin/curl", "-s", "--max-time", "5", url}, "", 10000);
}

// The value of an unlabeled metric line "name value"; -1 when absent.
double Metric(const std::string& base_url, const std::string& name) {
  std::string text = Curl(base_url + "/metrics").stdout_text;
  for (const auto& line : SplitLines(text)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

std::shared_ptr<grpc::Channel> Dial(const std::string& endpoint, int conn_id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(INT_MAX);
  // A distinct argument per connection id: channels do not share one TCP connection.
  args.SetInt("meridian.test.conn", conn_id);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

// One client watch stream holding many watchers; records every event revision per watch id.
class WatchStream final : public grpc::ClientBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchStream(std::shared_ptr<grpc::Channel> ch, bool require_leader) : ch_(std::move(ch)) {
    if (require_leader) ctx_.AddMetadata("hasleader", "true");
    etcdserverpb::Watch::NewStub(ch_)->async()->Watch(&ctx_, this);
    StartRead(&resp_);
    StartCall();
  }
  ~WatchStream() override {
    ctx_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [this] { return done_; });
  }

  void Create(const std::string& key, int64_t start_rev, const std::string& end = "") {
    WatchRequest r;
    auto* c = r.mutable_create_request();
    c->set_key(key);
    c->set_range_end(end);
    c->set_start_revision(start_rev);
    Write(std::move(r));
  }
  void Create(etcdserverpb::WatchCreateRequest create) {
    WatchRequest r;
    *r.mutable_create_request() = std::move(create);
    Write(std::move(r));
  }
  void RequestProgress() {
    WatchRequest r;
    r.mutable_progress_request();
    Write(std::move(r));
  }

  // A paused stream stops reading after the current response (its client is "slow").
  void Pause() {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = true;
  }
  void Unpause() {
    bool read = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      paused_ = false;
      read = read_pending_;
      read_pending_ = false;
    }
    if (read) StartRead(&resp_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      responses_.push_back(resp_);
      if (resp_.created()) {
        if (resp_.canceled()) {
          refused_.push_back(resp_.cancel_reason());
        } else {
          ++created_;
        }
      } else if (resp_.canceled()) {
        ++canceled_;
        cancel_reasons_.push_back(resp_.cancel_reason());
      } else if (resp_.watch_id() == -1) {
        progress_revs_.push_back(resp_.header().revision());
      }
      for (const auto& ev : resp_.events()) {
        events_[resp_.watch_id()].push_back(ev.kv().mod_revision());
        ++total_events_;
      }
      cv_.notify_all();
      if (paused_) {
        read_pending_ = true;
        return;
      }
    }
    StartRead(&resp_);
  }
  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!ok || q_.empty()) {
      writing_ = false;
      return;
    }
    in_flight_ = std::move(q_.front());
    q_.pop_front();
    lock.unlock();
    StartWrite(&in_flight_);
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    status_ = s;
    cv_.notify_all();
  }

  bool WaitFor(const std::function<bool()>& pred, int timeout_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), pred);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int created_ = 0;
  int canceled_ = 0;
  int64_t total_events_ = 0;
  std::vector<std::string> refused_, cancel_reasons_;
  std::vector<int64_t> progress_revs_;
  std::map<int64_t, std::vector<int64_t>> events_;
  std::vector<WatchResponse> responses_;
  bool done_ = false;
  grpc::Status status_;

 private:
  void Write(WatchRequest r) {
    std::unique_lock<std::mutex> lock(mu_);
    if (writing_) {
      q_.push_back(std::move(r));
      return;
    }
    writing_ = true;
    in_flight_ = std::move(r);
    lock.unlock();
    StartWrite(&in_flight_);
  }
  std::shared_ptr<grpc::Channel> ch_;
  grpc::ClientContext ctx_;
  WatchResponse resp_;
  WatchRequest in_flight_;
  std::deque<WatchRequest> q_;
  bool writing_ = false;
  bool paused_ = false;
  bool read_pending_ = false;
};

absl::StatusOr<int64_t> Put(etcdserverpb::KV::Stub* kv, const std::string& key,
                            const std::string& value) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  etcdserverpb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  etcdserverpb::PutResponse resp;
  auto st = kv->Put(&ctx, req, &resp);
  if (!st.ok()) return absl::UnavailableError(st.error_message());
  return resp.header().revision();
}

ServerOptions MeridianBehindProxy(std::vector<std::string> proxy_flags = {}) {
  ServerOptions o;
  o.kind = ServerKind::kMeridian;
  o.proxy = ProxyKind::kMeridian;
  o.proxy_extra_flags = std::move(proxy_flags);
  return o;
}

TEST(ProxyWatchTest, TenThousandWatchersOnOneKeyShareOneUpstreamWatcher) {
  ServerProcess server(MeridianBehindProxy());
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  const std::string node_url = absl::StrCat("http://", server.server_endpoint());
  constexpr int kConns = 20, kPerConn = 500, kPuts = 200;
  std::vector<std::unique_ptr<WatchStream>> streams;
  for (int c = 0; c < kConns; ++c) {
    streams.push_back(std::make_unique<WatchStream>(Dial(server.endpoint(), c), true));
    for (int i = 0; i < kPerConn; ++i) streams.back()->Create("k", 0);
  }
  for (auto& s : streams) {
    ASSERT_TRUE(s->WaitFor([&] { return s->created_ == kPerConn; }, 60000))
        << "created " << s->created_ << " refused " << s->refused_.size() << server.LogTail();
  }
  EXPECT_EQ(Metric(node_url, "etcd_debugging_mvcc_watcher_total"), 1);
  auto kv = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 100));
  std::vector<int64_t> revs;
  for (int i = 0; i < kPuts; ++i) {
    auto rev = Put(kv.get(), "k", absl::StrCat("v", i));
    ASSERT_TRUE(rev.ok()) << rev.status();
    revs.push_back(*rev);
  }
  for (auto& s : streams) {
    ASSERT_TRUE(s->WaitFor([&] { return s->total_events_ >= int64_t{kPerConn} * kPuts; }, 120000))
        << "events " << s->total_events_ << server.LogTail();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // anything extra would show now
  EXPECT_EQ(Metric(node_url, "etcd_debugging_mvcc_watcher_total"), 1);
  for (auto& s : streams) {
    std::lock_guard<std::mutex> lock(s->mu_);
    EXPECT_EQ(s->canceled_, 0);
    EXPECT_FALSE(s->done_) << s->status_.error_message();
    ASSERT_EQ(s->events_.size(), static_cast<size_t>(kPerConn));
    for (const auto& [id, got] : s->events_) {
      ASSERT_EQ(got, revs) << "watch " << id << ": lost, duplicated or out-of-order events";
    }
  }
  std::string proxy_url = absl::StrCat("http://127.0.0.1:", server.proxy_port());
  EXPECT_EQ(Metric(proxy_url, "meridian_proxy_client_watchers"), kConns * kPerConn);
  EXPECT_EQ(Metric(proxy_url, "meridian_proxy_upstream_watchers"), 1);
}

TEST(ProxyWatchTest, LateJoinersReceiveEveryEventFromTheirRevision) {
  // A small history so that the oldest joiner needs a private catch-up watcher.
  ServerProcess server(MeridianBehindProxy({"--watch-history-events=4"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto kv = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 1));
  std::vector<int64_t> revs;
  for (int i = 0; i < 5; ++i) revs.push_back(*Put(kv.get(), "late", "before"));
  WatchStream first(Dial(server.endpoint(), 2), false);
  first.Create("late", 0);
  ASSERT_TRUE(first.WaitFor([&] { return first.created_ == 1; }, 10000));
  for (int i = 0; i < 10; ++i) revs.push_back(*Put(kv.get(), "late", "after"));
  ASSERT_TRUE(first.WaitFor([&] { return first.total_events_ == 10; }, 10000));
  // From the history (the last 4 events), from before the history, and from before the
  // broadcast existed at all.
  std::vector<size_t> starts = {12, 7, 0};
  std::vector<std::unique_ptr<WatchStream>> late;
  for (size_t from : starts) {
    late.push_back(std::make_unique<WatchStream>(Dial(server.endpoint(), 3), false));
    late.back()->Create("late", revs[from]);
  }
  for (int i = 0; i < 5; ++i) revs.push_back(*Put(kv.get(), "late", "later"));
  for (size_t j = 0; j < starts.size(); ++j) {
    WatchStream& s = *late[j];
    std::vector<int64_t> want(revs.begin() + static_cast<long>(starts[j]), revs.end());
    ASSERT_TRUE(
        s.WaitFor([&] { return s.total_events_ >= static_cast<int64_t>(want.size()); }, 10000))
        << "from " << revs[starts[j]] << ": " << s.total_events_ << server.LogTail();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard<std::mutex> lock(s.mu_);
    EXPECT_EQ(s.events_.begin()->second, want) << "from revision " << revs[starts[j]];
  }
  // The catch-up watchers merged into the one broadcast once they caught up.
  std::string node_url = absl::StrCat("http://", server.server_endpoint());
  EXPECT_TRUE(
      WaitUntil([&] { return Metric(node_url, "etcd_debugging_mvcc_watcher_total") == 1; }, 10000))
      << Metric(node_url, "etcd_debugging_mvcc_watcher_total");
}

TEST(ProxyWatchTest, KillingTheMemberThatCarriesTheWatchLosesNothing) {
  ClusterOptions co;
  co.kind = ServerKind::kMeridian;
  Cluster cluster(co);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Diagnostics();
  OwnProxy proxy;
  ASSERT_TRUE(proxy.Start({"--endpoints=" + cluster.endpoints(), "--probe-interval=200ms"}).ok());
  ASSERT_TRUE(proxy.WaitHealthy()) << proxy.LogTail();
  const std::string& proxy_ep = proxy.endpoint();
  std::vector<std::unique_ptr<WatchStream>> streams;
  for (int c = 0; c < 4; ++c) {
    streams.push_back(std::make_unique<WatchStream>(Dial(proxy_ep, c), true));
    for (int i = 0; i < 25; ++i) streams.back()->Create("f/", 0, "f0");
  }
  for (auto& s : streams) ASSERT_TRUE(s->WaitFor([&] { return s->created_ == 25; }, 10000));
  // The member holding the upstream watcher.
  int carrier = -1;
  for (int i = 0; i < cluster.size(); ++i) {
    if (Metric(cluster.client_url(i), "etcd_debugging_mvcc_watcher_total") == 1) carrier = i;
  }
  ASSERT_GE(carrier, 0);
  auto kv = etcdserverpb::KV::NewStub(Dial(proxy_ep, 50));
  std::set<int64_t> acked;
  int64_t first_rev = 0;
  auto put_some = [&](int n, const std::string& tag) {
    for (int i = 0; i < n; ++i) {
      auto rev = Put(kv.get(), absl::StrCat("f/", tag, i % 7), "v");
      if (rev.ok()) {
        acked.insert(*rev);
        if (first_rev == 0) first_rev = *rev;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  };
  put_some(50, "a");
  cluster.Kill(carrier);
  put_some(100, "b");
  ASSERT_GT(acked.size(), 120u);
  int64_t last = *acked.rbegin();
  // What the key range really holds from the first revision on, read from a survivor.
  int survivor = (carrier + 1) % cluster.size();
  WatchStream truth(Dial(cluster.endpoint(survivor), 99), false);
  truth.Create("f/", first_rev, "f0");
  ASSERT_TRUE(truth.WaitFor(
      [&] { return !truth.events_.empty() && truth.events_.begin()->second.back() >= last; },
      10000));
  std::vector<int64_t> want;
  {
    std::lock_guard<std::mutex> lock(truth.mu_);
    want = truth.events_.begin()->second;
  }
  for (int64_t rev : acked) {
    EXPECT_TRUE(std::binary_search(want.begin(), want.end(), rev)) << "acked " << rev;
  }
  for (auto& s : streams) {
    ASSERT_TRUE(s->WaitFor(
        [&] {
          for (auto& [id, got] : s->events_) {
            if (got.empty() || got.back() < want.back()) return false;
          }
          return s->events_.size() == 25;
        },
        20000))
        << proxy.LogTail();
    std::lock_guard<std::mutex> lock(s->mu_);
    EXPECT_EQ(s->canceled_, 0);
    EXPECT_FALSE(s->done_) << s->status_.error_message();
    for (auto& [id, got] : s->events_) {
      ASSERT_EQ(got, want) << "watch " << id << ": a gap or a duplicate across the fail-over";
    }
  }
}

TEST(ProxyWatchTest, ASlowClientIsParkedAndCaughtUpWithoutStallingOthers) {
  // A tiny per-stream buffer: the slow client overflows it quickly.
  ServerProcess server(MeridianBehindProxy({"--watch-stream-buffer-bytes=65536"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  WatchStream slow(Dial(server.endpoint(), 1), false), fast(Dial(server.endpoint(), 2), false);
  slow.Create("s", 0);
  fast.Create("s", 0);
  ASSERT_TRUE(slow.WaitFor([&] { return slow.created_ == 1; }, 10000));
  ASSERT_TRUE(fast.WaitFor([&] { return fast.created_ == 1; }, 10000));
  slow.Pause();
  auto kv = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 3));
  std::vector<int64_t> revs;
  const std::string value(64 * 1024, 'v');  // 300 x 64 KiB: far beyond every buffer on the way
  for (int i = 0; i < 300; ++i) {
    auto rev = Put(kv.get(), "s", value);
    ASSERT_TRUE(rev.ok()) << rev.status();
    revs.push_back(*rev);
  }
  // The fast client is not held back by the slow one.
  ASSERT_TRUE(fast.WaitFor([&] { return fast.total_events_ == 300; }, 30000)) << fast.total_events_;
  {
    std::lock_guard<std::mutex> lock(slow.mu_);
    EXPECT_LT(slow.total_events_, 300) << "the slow client was not slow";
  }
  slow.Unpause();
  ASSERT_TRUE(slow.WaitFor([&] { return slow.total_events_ >= 300; }, 30000))
      << slow.total_events_ << server.LogTail();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::lock_guard<std::mutex> lock(slow.mu_);
  EXPECT_EQ(slow.events_.begin()->second, revs) << "the slow client lost or repeated events";
  EXPECT_EQ(slow.canceled_, 0);
  EXPECT_GE(Metric(absl::StrCat("http://127.0.0.1:", server.proxy_port()),
                   "meridian_proxy_watchers_parked_total"),
            1);
}

TEST(ProxyUpstreamTest, MembersFromTheMemberListAreUsedWithoutARestart) {
  ClusterOptions co;
  co.kind = ServerKind::kMeridian;
  Cluster cluster(co);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Diagnostics();
  // Only member 0 is given; the others are learnt from the member list.
  OwnProxy proxy;
  ASSERT_TRUE(proxy
                  .Start({"--endpoints=" + cluster.endpoint(0), "--probe-interval=200ms",
                          "--auto-sync-interval=500ms"})
                  .ok());
  ASSERT_TRUE(proxy.WaitHealthy()) << proxy.LogTail();
  const std::string& proxy_ep = proxy.endpoint();
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string log = ReadFileTail(proxy.log_path(), 65536);
        return log.find(cluster.endpoint(1) + " added") != std::string::npos &&
               log.find(cluster.endpoint(2) + " added") != std::string::npos;
      },
      10000))
      << proxy.LogTail();
  cluster.Kill(0);
  ASSERT_TRUE(cluster.WaitForLeader(10000, 0).ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Etcdctl(proxy_ep, {"put", "after", "kill"}).exit_code == 0;
      },
      15000))
      << proxy.LogTail();
  auto got = Etcdctl(proxy_ep, {"get", "after", "--print-value-only"});
  EXPECT_EQ(got.stdout_text, "kill\n");
}

TEST(ProxyWatchTest, ClientWatchIdsFragmentsAndProgressRequests) {
  ServerProcess server(MeridianBehindProxy({"--max-request-bytes=4096"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto kv = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 1));
  const std::string value(1500, 'f');
  for (const char* k : {"fr/a", "fr/b", "fr/c"}) ASSERT_TRUE(Put(kv.get(), k, value).ok());
  WatchStream s(Dial(server.endpoint(), 2), false);
  etcdserverpb::WatchCreateRequest c;
  c.set_key("fr/");
  c.set_range_end("fr0");
  c.set_watch_id(42);
  c.set_prev_kv(true);
  c.set_fragment(true);
  s.Create(c);
  c.set_watch_id(42);  // a duplicate id on the same stream is refused, as etcd does
  s.Create(c);
  ASSERT_TRUE(s.WaitFor([&] { return s.created_ == 1 && s.refused_.size() == 1; }, 10000));
  EXPECT_EQ(s.refused_[0], "mvcc: duplicate watch ID provided on the WatchStream");
  // One delete of three keys: 3 events with 1.5 KB prev_kvs each, over 4096 bytes.
  grpc::ClientContext ctx;
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("fr/");
  del.set_range_end("fr0");
  etcdserverpb::DeleteRangeResponse dresp;
  ASSERT_TRUE(kv->DeleteRange(&ctx, del, &dresp).ok());
  ASSERT_TRUE(s.WaitFor([&] { return s.total_events_ == 3; }, 10000));
  {
    std::lock_guard<std::mutex> lock(s.mu_);
    std::vector<bool> fragments;
    for (const auto& r : s.responses_) {
      if (r.events_size() == 0) continue;
      EXPECT_EQ(r.watch_id(), 42);
      EXPECT_LE(r.ByteSizeLong(), 4096u + 512u);
      fragments.push_back(r.fragment());
    }
    ASSERT_GE(fragments.size(), 2u) << "a 4.5 KB response was not fragmented";
    EXPECT_FALSE(fragments.back());
    for (size_t i = 0; i + 1 < fragments.size(); ++i) EXPECT_TRUE(fragments[i]);
  }
  // A progress request is answered (watch_id -1) at or after the latest revision.
  auto rev = Put(kv.get(), "elsewhere", "x");
  ASSERT_TRUE(rev.ok());
  s.RequestProgress();
  ASSERT_TRUE(s.WaitFor([&] { return !s.progress_revs_.empty(); }, 10000));
  EXPECT_GE(s.progress_revs_[0], *rev);
}

TEST(ProxyTest, LockThroughTheProxyInFrontOfEtcd) {
  ServerOptions o;
  o.kind = ServerKind::kEtcd;
  o.proxy = ProxyKind::kMeridian;
  ServerProcess server(o);
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto r = server.Ctl({"lock", "mylock", "echo", "locked"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_NE(r.stdout_text.find("locked"), std::string::npos) << r.stdout_text;
  auto e = server.Ctl({"elect", "--listen", "myelection"}, "", 3000);
  EXPECT_TRUE(e.timed_out) << "observe returned early: " << e.stderr_text;
}

TEST(ProxyLimitsTest, OversizeRequestsAreRefusedWithoutDisturbingOthers) {
  ServerProcess server(MeridianBehindProxy({"--max-request-bytes=4096"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto big = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 1));
  auto small = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 2));
  grpc::ClientContext ctx;
  etcdserverpb::PutRequest req;
  req.set_key("big");
  req.set_value(std::string(8192, 'x'));
  etcdserverpb::PutResponse resp;
  auto st = big->Put(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "etcdserver: request is too large");
  EXPECT_TRUE(Put(small.get(), "small", "ok").ok());
  EXPECT_TRUE(Put(big.get(), "big", "fits").ok()) << "the refused client carries on";
  // etcdctl sees etcd's message.
  auto r = server.Ctl({"put", "big", std::string(8192, 'y')});
  EXPECT_NE(r.stderr_text.find("etcdserver: request is too large"), std::string::npos)
      << r.stderr_text;
}

TEST(ProxyLimitsTest, WatcherQuotaAndPerStreamLimit) {
  ServerProcess server(MeridianBehindProxy({"--quota-watchers=3", "--max-watchers-per-stream=2"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  WatchStream a(Dial(server.endpoint(), 1), false);
  for (int i = 0; i < 3; ++i) a.Create("q", 0);
  ASSERT_TRUE(a.WaitFor([&] { return a.created_ + a.refused_.size() == 3; }, 10000));
  EXPECT_EQ(a.created_, 2);
  ASSERT_EQ(a.refused_.size(), 1u);
  EXPECT_NE(a.refused_[0].find("too many watchers on one stream"), std::string::npos);
  WatchStream b(Dial(server.endpoint(), 2), false);
  b.Create("q", 0);
  b.Create("q", 0);
  ASSERT_TRUE(b.WaitFor([&] { return b.created_ + b.refused_.size() == 2; }, 10000));
  EXPECT_EQ(b.created_, 1);
  ASSERT_EQ(b.refused_.size(), 1u);
  EXPECT_NE(b.refused_[0].find("over its quota of 3 watchers"), std::string::npos);
  // The refused stream's existing watchers keep working.
  auto kv = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 3));
  ASSERT_TRUE(Put(kv.get(), "q", "1").ok());
  EXPECT_TRUE(a.WaitFor([&] { return a.total_events_ == 2; }, 10000));
  EXPECT_TRUE(b.WaitFor([&] { return b.total_events_ == 1; }, 10000));
}

// Quotas are per client: with etcd auth, per user. Needs an upstream with auth (Debian's etcd).
TEST(ProxyLimitsTest, RequestQuotaIsPerAuthUser) {
  ServerOptions o;
  o.kind = ServerKind::kEtcd;
  o.proxy = ProxyKind::kMeridian;
  o.proxy_extra_flags = {"--quota-requests-per-second=20"};
  ServerProcess server(o);
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  const std::string ep = server.server_endpoint();
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"user", "add", "root", "--new-user-password=rootpw"},
           {"user", "add", "alice", "--new-user-password=alicepw"},
           {"user", "grant-role", "alice", "root"},
           {"auth", "enable"}}) {
    ASSERT_EQ(Etcdctl(ep, args).exit_code, 0) << absl::StrJoin(args, " ");
  }
  auto ch_alice = Dial(server.endpoint(), 1), ch_root = Dial(server.endpoint(), 2);
  auto login = [&](std::shared_ptr<grpc::Channel> ch, const std::string& user,
                   const std::string& pw) {
    grpc::ClientContext ctx;
    etcdserverpb::AuthenticateRequest req;
    req.set_name(user);
    req.set_password(pw);
    etcdserverpb::AuthenticateResponse resp;
    auto st = etcdserverpb::Auth::NewStub(ch)->Authenticate(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.token();
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // refill after the logins
  std::string alice = login(ch_alice, "alice", "alicepw");
  std::string root = login(ch_root, "root", "rootpw");
  auto range = [&](std::shared_ptr<grpc::Channel> ch, const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("token", token);
    etcdserverpb::RangeRequest req;
    req.set_key("x");
    etcdserverpb::RangeResponse resp;
    return etcdserverpb::KV::NewStub(ch)->Range(&ctx, req, &resp);
  };
  int alice_refused = 0, root_refused = 0;
  std::string message;
  for (int i = 0; i < 60; ++i) {
    auto st = range(ch_alice, alice);
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++alice_refused;
      message = st.error_message();
    } else {
      EXPECT_TRUE(st.ok()) << st.error_message();
    }
    if (i % 6 == 0) {
      auto r = range(ch_root, root);
      if (!r.ok()) ++root_refused;
    }
  }
  EXPECT_GT(alice_refused, 20);
  EXPECT_EQ(root_refused, 0) << "another user is not affected";
  EXPECT_NE(message.find("client user:alice is over its quota of 20 requests/s"), std::string::npos)
      << message;
}

// Reads a whole file ("" if it cannot).
std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// With client certificates, the quota identity is the certificate's CN.
TEST(ProxyLimitsTest, RequestQuotaIsPerTlsCommonName) {
  ServerProcess server(MeridianBehindProxy());  // the member; the TLS proxy is started below
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  OwnProxy proxy;
  const std::string d = proxy.dir();
  // A CA, a server certificate for 127.0.0.1 and two client certificates (EC keys: fast).
  const std::string script = absl::StrCat(
      "set -e; cd ", d, "\n", "k='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n",
      "openssl req -x509 $k -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca 2>/dev/null\n",
      "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext\n", "for n in server alice bob; do\n",
      "  openssl req $k -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null\n",
      "  ext=''; [ $n = server ] && ext='-extfile san.ext'\n",
      "  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt "
      "-days 2 $ext 2>/dev/null\n",
      "done\n");
  auto gen = RunCommand({"/bin/sh", "-c", script}, "", 30000);
  ASSERT_EQ(gen.exit_code, 0) << gen.stderr_text;
  auto metrics_port = PickFreePort();
  ASSERT_TRUE(metrics_port.ok());
  ASSERT_TRUE(proxy
                  .Start({"--endpoints=" + server.server_endpoint(),
                          absl::StrCat("--metrics-addr=http://127.0.0.1:", *metrics_port),
                          "--cert-file=" + d + "/server.crt", "--key-file=" + d + "/server.key",
                          "--trusted-ca-file=" + d + "/ca.crt", "--quota-requests-per-second=20"})
                  .ok());
  const std::string& ep = proxy.endpoint();
  auto tls_channel = [&](const std::string& who) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Slurp(d + "/ca.crt");
    if (!who.empty()) {
      o.pem_private_key = Slurp(d + "/" + who + ".key");
      o.pem_cert_chain = Slurp(d + "/" + who + ".crt");
    }
    grpc::ChannelArguments args;
    args.SetInt("meridian.test.conn", static_cast<int>(who.size()));
    // The first dial may land before the proxy listens: without these, gRPC's reconnect
    // backoff (1 s, 1.6 s, 2.6 s, 4.1 s, 6.6 s...) outlasts the wait below on a slow machine.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    return grpc::CreateCustomChannel(ep, grpc::SslCredentials(o), args);
  };
  auto range = [](const std::shared_ptr<grpc::Channel>& ch) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    etcdserverpb::RangeRequest req;
    req.set_key("x");
    etcdserverpb::RangeResponse resp;
    return etcdserverpb::KV::NewStub(ch)->Range(&ctx, req, &resp);
  };
  const std::string health_url = absl::StrCat("http://127.0.0.1:", *metrics_port, "/health");
  ASSERT_TRUE(WaitUntil(
      [&] { return Curl(health_url).stdout_text.find("\"health\":\"true\"") != std::string::npos; },
      30000))
      << proxy.LogTail();
  auto alice = tls_channel("alice"), bob = tls_channel("bob");
  ASSERT_TRUE(WaitUntil([&] { return range(bob).ok(); }, 15000)) << proxy.LogTail();
  // No client certificate: refused at the handshake.
  EXPECT_FALSE(range(tls_channel("")).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // full buckets again
  int alice_refused = 0, bob_refused = 0;
  std::string message;
  for (int i = 0; i < 60; ++i) {
    auto st = range(alice);
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++alice_refused;
      message = st.error_message();
    }
    if (i % 6 == 0 && !range(bob).ok()) ++bob_refused;
  }
  EXPECT_GT(alice_refused, 20);
  EXPECT_EQ(bob_refused, 0);
  EXPECT_NE(message.find("client cn:alice is over its quota"), std::string::npos) << message;
  EXPECT_NE(Curl(health_url).stdout_text.find("\"health\":\"true\""), std::string::npos);
}

TEST(ProxyLeaseTest, KeepalivesForOneLeaseAreCoalescedAndTtlsAreHonest) {
  ServerProcess server(MeridianBehindProxy());
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto ch = Dial(server.endpoint(), 1);
  auto lease = etcdserverpb::Lease::NewStub(ch);
  grpc::ClientContext gctx;
  etcdserverpb::LeaseGrantRequest greq;
  greq.set_ttl(5);
  etcdserverpb::LeaseGrantResponse gresp;
  ASSERT_TRUE(lease->LeaseGrant(&gctx, greq, &gresp).ok());
  // 50 clients keep the same lease alive at once.
  constexpr int kClients = 50;
  std::vector<std::thread> threads;
  std::atomic<int> answers{0}, bad_ttl{0}, ready{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = etcdserverpb::Lease::NewStub(Dial(server.endpoint(), 10 + c));
      grpc::ClientContext ctx;
      auto stream = stub->LeaseKeepAlive(&ctx);
      ++ready;
      while (ready.load() < kClients) std::this_thread::yield();  // ask at about the same time
      for (int i = 0; i < 3; ++i) {
        etcdserverpb::LeaseKeepAliveRequest req;
        req.set_id(gresp.id());
        if (!stream->Write(req)) return;
        etcdserverpb::LeaseKeepAliveResponse resp;
        if (!stream->Read(&resp)) return;
        ++answers;
        if (resp.ttl() < 4 || resp.ttl() > 5) ++bad_ttl;
      }
      stream->WritesDone();
      (void)stream->Finish();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(answers.load(), kClients * 3);
  EXPECT_EQ(bad_ttl.load(), 0);
  std::string url = absl::StrCat("http://127.0.0.1:", server.proxy_port());
  double in = Metric(url, "meridian_proxy_lease_keepalives_received_total");
  double out = Metric(url, "meridian_proxy_lease_keepalives_sent_total");
  EXPECT_EQ(in, kClients * 3);
  // Keepalives that arrive while one for the same lease is in flight share its answer.
  EXPECT_LT(out, in) << "keepalives were not coalesced";
  // The proxy does not keep the lease alive by itself: it expires on time.
  ASSERT_TRUE(WaitUntil(
      [&] {
        grpc::ClientContext ctx;
        etcdserverpb::LeaseTimeToLiveRequest req;
        req.set_id(gresp.id());
        etcdserverpb::LeaseTimeToLiveResponse resp;
        return lease->LeaseTimeToLive(&ctx, req, &resp).ok() && resp.ttl() == -1;
      },
      9000, 200));
}

// The serializable read cache: answers stay at most --read-cache-ttl old, linearizable reads
// never use it, and entries are keyed by the caller's auth token.
TEST(ProxyTest, ReadCacheIsBoundedInStalenessAndKeyedByToken) {
  ServerProcess server(MeridianBehindProxy({"--read-cache-ttl=1s"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  auto via = etcdserverpb::KV::NewStub(Dial(server.endpoint(), 1));
  auto direct = etcdserverpb::KV::NewStub(Dial(server.server_endpoint(), 2));
  ASSERT_TRUE(Put(direct.get(), "c", "v1").ok());
  auto get = [&](bool serializable, const std::string& token) {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("token", token);
    etcdserverpb::RangeRequest req;
    req.set_key("c");
    req.set_serializable(serializable);
    etcdserverpb::RangeResponse resp;
    auto st = via->Range(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.kvs_size() == 1 ? resp.kvs(0).value() : std::string("<none>");
  };
  const std::string url = absl::StrCat("http://127.0.0.1:", server.proxy_port());
  EXPECT_EQ(get(true, "t1"), "v1");  // miss, stored
  ASSERT_TRUE(Put(direct.get(), "c", "v2").ok());
  EXPECT_EQ(get(true, "t1"), "v1") << "served from the cache";
  EXPECT_EQ(Metric(url, "etcd_grpc_proxy_cache_hits_total"), 1);
  EXPECT_EQ(get(true, "t2"), "v2") << "another token has its own entries";
  EXPECT_EQ(get(false, "t1"), "v2") << "linearizable reads bypass the cache";
  EXPECT_EQ(Metric(url, "etcd_grpc_proxy_cache_hits_total"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_EQ(get(true, "t1"), "v2") << "an entry older than the TTL is not served";
}

TEST(ProxyTest, NamespaceIsolatesKeys) {
  ServerProcess server(MeridianBehindProxy({"--namespace=tenant-a/"}));
  ASSERT_TRUE(server.Start().ok()) << server.LogTail();
  ASSERT_EQ(server.Ctl({"put", "k", "v"}).exit_code, 0);
  auto direct = Etcdctl(server.server_endpoint(), {"get", "--prefix", ""});
  EXPECT_EQ(direct.stdout_text, "tenant-a/k\nv\n");
  EXPECT_EQ(Etcdctl(server.server_endpoint(), {"put", "other", "x"}).exit_code, 0);
  auto via = server.Ctl({"get", "--prefix", ""});
  EXPECT_EQ(via.stdout_text, "k\nv\n") << "keys outside the namespace are invisible";
  auto from_key = server.Ctl({"get", "--from-key", ""});
  EXPECT_EQ(from_key.stdout_text, "k\nv\n");
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(server.endpoint(), {"--prefix", "k"}, &watch).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(server.Ctl({"put", "k2", "v2"}).exit_code, 0);
  EXPECT_TRUE(watch.WaitForStdout(
      [](const std::string& out) { return out.find("PUT\nk2\nv2\n") != std::string::npos; }, 5000))
      << watch.Stdout();
}

}  // namespace
}  // namespace meridian::e2e
