// meridian-bench's watch accounting against an in-process fake etcd (KV + Watch) on 127.0.0.1
// that deliberately drops, duplicates or reorders one event of one watcher.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/options.h"
#include "bench/runner.h"
#include "bench/watch_counter.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace meridian::bench {
namespace {

using etcdserverpb::KV;
using etcdserverpb::Watch;

enum class Fault { kNone, kDrop, kDuplicate, kReorder };

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kNone:
      return "none";
    case Fault::kDrop:
      return "drop";
    case Fault::kDuplicate:
      return "duplicate";
    case Fault::kReorder:
      return "reorder";
  }
  return "?";
}

// Shared by the fake services: the event log and the fault to inject.
struct FakeState {
  std::mutex mu;
  std::condition_variable cv;
  int64_t revision = 1;
  std::vector<mvccpb::KeyValue> log;  // every put, in revision order
  int64_t next_watch_id = 0;
  bool fault_assigned = false;  // the fault hits the first watcher created only
  bool shutdown = false;
  Fault fault = Fault::kNone;
  size_t fault_at = 3;         // index of the faulted event among the watcher's events
  int first_put_delay_ms = 0;  // a one-off stall of the first Put
};

class FakeKv final : public KV::Service {
 public:
  explicit FakeKv(FakeState* state) : s_(state) {}
  grpc::Status Range(grpc::ServerContext*, const etcdserverpb::RangeRequest*,
                     etcdserverpb::RangeResponse* resp) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    resp->mutable_header()->set_revision(s_->revision);
    return grpc::Status::OK;
  }
  grpc::Status Put(grpc::ServerContext*, const etcdserverpb::PutRequest* req,
                   etcdserverpb::PutResponse* resp) override {
    if (stalled_.exchange(true) == false && s_->first_put_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(s_->first_put_delay_ms));
    }
    std::lock_guard<std::mutex> lock(s_->mu);
    mvccpb::KeyValue kv;
    kv.set_key(req->key());
    kv.set_value(req->value());
    kv.set_mod_revision(++s_->revision);
    s_->log.push_back(std::move(kv));
    resp->mutable_header()->set_revision(s_->revision);
    s_->cv.notify_all();
    return grpc::Status::OK;
  }

 private:
  FakeState* s_;
  std::atomic<bool> stalled_{false};
};

class FakeWatch final : public Watch::Service {
 public:
  explicit FakeWatch(FakeState* state) : s_(state) {}

  grpc::Status Watch(grpc::ServerContext* ctx,
                     grpc::ServerReaderWriter<etcdserverpb::WatchResponse,
                                              etcdserverpb::WatchRequest>* stream) override {
    std::deque<etcdserverpb::WatchRequest> creates;
    bool reader_done = false;
    std::thread reader([&] {
      etcdserverpb::WatchRequest req;
      while (stream->Read(&req)) {
        std::lock_guard<std::mutex> lock(s_->mu);
        if (req.has_create_request()) creates.push_back(req);
        s_->cv.notify_all();
      }
      std::lock_guard<std::mutex> lock(s_->mu);
      reader_done = true;
      s_->cv.notify_all();
    });

    struct Watcher {
      int64_t id;
      size_t next;      // next log index to send
      size_t seen = 0;  // events considered so far
      bool faulted;
      std::optional<mvccpb::KeyValue> held;  // reordering: sent after the next event of its key
    };
    std::vector<Watcher> watchers;
    bool stream_ok = true;
    while (stream_ok) {
      std::vector<etcdserverpb::WatchResponse> out;
      {
        std::unique_lock<std::mutex> lock(s_->mu);
        s_->cv.wait_for(lock, std::chrono::milliseconds(20));
        if (reader_done || s_->shutdown || ctx->IsCancelled()) break;
        while (!creates.empty()) {
          creates.pop_front();
          Watcher w{s_->next_watch_id++, s_->log.size(), 0, false, std::nullopt};
          if (s_->fault != Fault::kNone && !s_->fault_assigned) {
            s_->fault_assigned = true;
            w.faulted = true;
          }
          watchers.push_back(w);
          etcdserverpb::WatchResponse created;
          created.set_watch_id(w.id);
          created.set_created(true);
          out.push_back(std::move(created));
        }
        for (Watcher& w : watchers) {
          while (w.next < s_->log.size()) {
            const mvccpb::KeyValue& kv = s_->log[w.next++];
            const size_t k = w.seen++;
            if (w.faulted && k == s_->fault_at) {
              if (s_->fault == Fault::kDrop) continue;
              if (s_->fault == Fault::kReorder) {
                w.held = kv;
                continue;
              }
              if (s_->fault == Fault::kDuplicate) out.push_back(Response(w.id, kv));
            }
            out.push_back(Response(w.id, kv));
            if (w.held && w.held->key() == kv.key()) {
              out.push_back(Response(w.id, *w.held));
              w.held.reset();
            }
          }
        }
      }
      for (const auto& r : out) {
        if (!stream->Write(r)) {
          stream_ok = false;
          break;
        }
      }
    }
    ctx->TryCancel();  // unblocks the reader
    reader.join();
    return grpc::Status::OK;
  }

 private:
  static etcdserverpb::WatchResponse Response(int64_t id, const mvccpb::KeyValue& kv) {
    etcdserverpb::WatchResponse r;
    r.set_watch_id(id);
    mvccpb::Event* e = r.add_events();
    e->set_type(mvccpb::Event::PUT);
    *e->mutable_kv() = kv;
    return r;
  }
  FakeState* s_;
};

class FakeEtcd {
 public:
  explicit FakeEtcd(Fault fault, int first_put_delay_ms = 0) : kv_(&state_), watch_(&state_) {
    state_.fault = fault;
    state_.first_put_delay_ms = first_put_delay_ms;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&kv_);
    builder.RegisterService(&watch_);
    server_ = builder.BuildAndStart();
  }
  ~FakeEtcd() {
    {
      std::lock_guard<std::mutex> lock(state_.mu);
      state_.shutdown = true;
      state_.cv.notify_all();
    }
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  FakeState state_;
  FakeKv kv_;
  FakeWatch watch_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

struct Expected {
  uint64_t lost, duplicated, out_of_order;
};

Expected ExpectedFor(Fault f) {
  return {f == Fault::kDrop ? 1u : 0u, f == Fault::kDuplicate ? 1u : 0u,
          f == Fault::kReorder ? 1u : 0u};
}

class WatchFaultTest : public ::testing::TestWithParam<Fault> {};

// The counting library fed by a plain synchronous client.
TEST_P(WatchFaultTest, WatcherSetCountsTheFault) {
  const Fault fault = GetParam();
  FakeEtcd server(fault);
  ASSERT_TRUE(server.ok());
  auto channel = grpc::CreateChannel(server.endpoint(), grpc::InsecureChannelCredentials());
  auto kv = KV::NewStub(channel);
  auto watch = Watch::NewStub(channel);

  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto stream = watch->Watch(&watch_ctx);
  etcdserverpb::WatchRequest create;
  create.mutable_create_request()->set_key("w/");
  create.mutable_create_request()->set_range_end("w0");
  ASSERT_TRUE(stream->Write(create));

  constexpr uint64_t kPuts = 10;
  WatcherSet set(1, true, 1, kPuts);
  LatencyHistogram delivery;
  etcdserverpb::WatchResponse resp;
  WatcherSet::ResponseResult r;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(set.OnResponse(resp, 0, &delivery, &r).ok());
  ASSERT_TRUE(set.all_created());

  for (uint64_t seq = 0; seq < kPuts; ++seq) {
    grpc::ClientContext ctx;
    etcdserverpb::PutRequest put;
    put.set_key("w/0");
    EncodeWatchPayload(seq, 1, 40, put.mutable_value());
    etcdserverpb::PutResponse put_resp;
    ASSERT_TRUE(kv->Put(&ctx, put, &put_resp).ok());
  }
  // Every fault leaves seq kPuts-1 as the last event delivered.
  bool saw_last = false;
  while (!saw_last && stream->Read(&resp)) {
    r = {};
    ASSERT_TRUE(set.OnResponse(resp, 2, &delivery, &r).ok());
    for (const auto& e : resp.events()) {
      if (DecodeWatchPayload(e.kv().value())->seq == kPuts - 1) saw_last = true;
    }
  }
  ASSERT_TRUE(saw_last);
  watch_ctx.TryCancel();
  while (stream->Read(&resp)) {
  }
  (void)stream->Finish();

  const WatchEventCounts c = set.Counts();
  const Expected want = ExpectedFor(fault);
  EXPECT_EQ(c.lost, want.lost) << FaultName(fault);
  EXPECT_EQ(c.duplicated, want.duplicated) << FaultName(fault);
  EXPECT_EQ(c.out_of_order, want.out_of_order) << FaultName(fault);
  EXPECT_EQ(c.unexpected, 0u);
  EXPECT_EQ(c.received, kPuts - want.lost + want.duplicated);
}

// meridian-bench's watch mode end to end: several watchers on two streams and two putters; the
// fault hits one event of one watcher, so the totals show exactly one.
TEST_P(WatchFaultTest, WatchModeReportsExactlyOne) {
  const Fault fault = GetParam();
  FakeEtcd server(fault);
  ASSERT_TRUE(server.ok());
  BenchOptions o;
  o.mode = Mode::kWatch;
  o.endpoints = {server.endpoint()};
  o.conns = 2;
  o.clients = 2;
  o.watchers = 4;
  o.streams = 2;
  o.puts = 20;
  o.val_size_bytes = 40;
  o.drain_ms = 500;
  o.progress = 0;
  o.threads = 2;
  absl::StatusOr<BenchResult> result = RunBench(o);
  ASSERT_TRUE(result.ok()) << result.status();
  const Expected want = ExpectedFor(fault);
  EXPECT_TRUE(result->has_watch);
  EXPECT_EQ(result->watchers_created, 4u);
  EXPECT_EQ(result->requests, 20u);
  EXPECT_EQ(result->errors, 0u) << result->first_error;
  EXPECT_EQ(result->watch.expected, 80u);
  EXPECT_EQ(result->watch.lost, want.lost) << FaultName(fault);
  EXPECT_EQ(result->watch.duplicated, want.duplicated) << FaultName(fault);
  EXPECT_EQ(result->watch.out_of_order, want.out_of_order) << FaultName(fault);
  EXPECT_EQ(result->watch.unexpected, 0u);
  EXPECT_EQ(result->latency.count, 80u - want.lost + want.duplicated);
  EXPECT_GT(result->events_per_s, 0);
  // The JSON line carries the same figures.
  const std::string json = ResultJson(*result);
  EXPECT_NE(json.find("\"lost\":" + std::to_string(want.lost)), std::string::npos) << json;
  EXPECT_NE(json.find("\"duplicated\":" + std::to_string(want.duplicated)), std::string::npos);
  EXPECT_NE(json.find("\"out_of_order\":" + std::to_string(want.out_of_order)), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Faults, WatchFaultTest,
                         ::testing::Values(Fault::kNone, Fault::kDrop, Fault::kDuplicate,
                                           Fault::kReorder),
                         [](const auto& info) { return std::string(FaultName(info.param)); });

TEST(RunBenchTest, UnreachableServerIsAnError) {
  BenchOptions o;
  o.mode = Mode::kPut;
  // Port 1 on loopback: nothing listens there in a test environment.
  o.endpoints = {"127.0.0.1:1"};
  o.total = 1;
  o.progress = 0;
  absl::StatusOr<BenchResult> result = RunBench(o);
  EXPECT_FALSE(result.ok());
}

TEST(RunBenchTest, PutModeAgainstFakeCountsRequests) {
  FakeEtcd server(Fault::kNone);
  ASSERT_TRUE(server.ok());
  BenchOptions o;
  o.mode = Mode::kPut;
  o.endpoints = {server.endpoint()};
  o.clients = 3;
  o.conns = 2;
  o.total = 100;
  o.key_space = 10;
  o.progress = 0;
  absl::StatusOr<BenchResult> result = RunBench(o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->requests, 100u);
  EXPECT_EQ(result->errors, 0u);
  EXPECT_EQ(result->latency.count, 100u);
  EXPECT_GT(result->qps, 0);
}

TEST(RunBenchTest, RateLimitsOpenLoop) {
  FakeEtcd server(Fault::kNone);
  ASSERT_TRUE(server.ok());
  BenchOptions o;
  o.mode = Mode::kPut;
  o.endpoints = {server.endpoint()};
  o.clients = 4;
  o.total = 50;
  o.rate_per_s = 100;  // 50 requests at 100/s: about half a second
  o.progress = 0;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<BenchResult> result = RunBench(o);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->requests, 50u);
  EXPECT_GE(seconds, 0.45);
  EXPECT_LT(result->qps, 125);
}

// After a 300 ms stall of the first request, a catching-up client sends the missed requests at
// once and keeps the schedule; one that does not catch up shifts its schedule by the stall.
TEST(RunBenchTest, RateCatchUpKeepsTheSchedule) {
  double elapsed_s[2];
  double mean_ms[2];
  for (bool catch_up : {true, false}) {
    FakeEtcd server(Fault::kNone, 300);
    ASSERT_TRUE(server.ok());
    BenchOptions o;
    o.mode = Mode::kPut;
    o.endpoints = {server.endpoint()};
    o.clients = 1;
    o.total = 60;
    o.rate_per_s = 100;  // 0.6 s of schedule
    o.rate_catch_up = catch_up;
    o.progress = 0;
    absl::StatusOr<BenchResult> result = RunBench(o);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->requests, 60u);
    elapsed_s[catch_up] = result->elapsed_s;
    mean_ms[catch_up] = result->latency.mean_ms;
  }
  EXPECT_LT(elapsed_s[true], 0.75);   // ~0.6 s: the stall was absorbed
  EXPECT_GT(elapsed_s[false], 0.85);  // ~0.9 s: the schedule moved by the stall
  // Catching up, the requests queued behind the stall count their wait as latency.
  EXPECT_GT(mean_ms[true], 5 * mean_ms[false]);
}

}  // namespace
}  // namespace meridian::bench
