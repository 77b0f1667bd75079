#include "bench/runner.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/strings.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace meridian::bench {
namespace {

using etcdserverpb::KV;
using etcdserverpb::Lease;
using etcdserverpb::Watch;

constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint64_t kNsPerMs = 1'000'000;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

// gRPC's monotonic clock has its own epoch, so deadlines are built from a delay.
gpr_timespec DeadlineIn(uint64_t delay_ns) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_nanos(static_cast<int64_t>(delay_ns), GPR_TIMESPAN));
}

// Completion-queue tag: a function and the object it belongs to.
struct Tag {
  void (*fn)(void* self, bool ok);
  void* self;
  void Run(bool ok) { fn(self, ok); }
};

template <auto Method, class T>
Tag MakeTag(T* self) {
  return Tag{[](void* s, bool ok) { (static_cast<T*>(s)->*Method)(ok); }, self};
}

// Error kinds: the 17 gRPC codes, then the bench's own.
constexpr int kErrWatchCanceled = 17;
constexpr int kErrLeaseExpired = 18;
constexpr int kErrStreamEnded = 19;
constexpr int kErrProtocol = 20;
constexpr int kErrorKinds = 21;

const char* ErrorKindName(int kind) {
  static constexpr const char* kNames[kErrorKinds] = {"OK",
                                                      "CANCELLED",
                                                      "UNKNOWN",
                                                      "INVALID_ARGUMENT",
                                                      "DEADLINE_EXCEEDED",
                                                      "NOT_FOUND",
                                                      "ALREADY_EXISTS",
                                                      "PERMISSION_DENIED",
                                                      "RESOURCE_EXHAUSTED",
                                                      "FAILED_PRECONDITION",
                                                      "ABORTED",
                                                      "OUT_OF_RANGE",
                                                      "UNIMPLEMENTED",
                                                      "INTERNAL",
                                                      "UNAVAILABLE",
                                                      "DATA_LOSS",
                                                      "UNAUTHENTICATED",
                                                      "WATCH_CANCELED",
                                                      "LEASE_EXPIRED",
                                                      "STREAM_ENDED",
                                                      "PROTOCOL"};
  return kind >= 0 && kind < kErrorKinds ? kNames[kind] : "?";
}

enum K8sOp { kOpCreate, kOpUpdate, kOpDelete, kOpGet, kOpListPage, kOpList, kK8sOps };
constexpr const char* kK8sOpNames[kK8sOps] = {"create", "update",    "delete",
                                              "get",    "list_page", "list"};

// Counters of one completion-queue thread. Only that thread writes them while a phase runs; the
// atomics are read by the main thread for progress and watch draining.
struct alignas(64) ThreadStats {
  LatencyHistogram latency;
  LatencyHistogram put_latency;
  std::array<uint64_t, kErrorKinds> errors{};
  std::array<uint64_t, kK8sOps> ops{};
  uint64_t ok = 0;
  uint64_t conflicts = 0;
  uint64_t last_completion_ns = 0;
  std::string first_error;
  std::atomic<uint64_t> completed{0};
  std::atomic<uint64_t> distinct_events{0};
  std::atomic<uint64_t> last_event_ns{0};

  void CountError(int kind, std::string_view message) {
    ++errors[kind];
    if (first_error.empty()) {
      first_error = absl::StrCat(ErrorKindName(kind), ": ", AbslView(message));
    }
  }
  void CountStatus(const grpc::Status& status) {
    CountError(static_cast<int>(status.error_code()), status.error_message());
  }
  // Single writer: a relaxed load + store is enough and cheaper than an atomic add.
  static void Bump(std::atomic<uint64_t>& counter, uint64_t n = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void Reset() {
    latency.Clear();
    put_latency.Clear();
    errors.fill(0);
    ops.fill(0);
    ok = conflicts = last_completion_ns = 0;
    first_error.clear();
    completed.store(0);
    distinct_events.store(0);
    last_event_ns.store(0);
  }
};

// Counts down events (clients finished, streams ready); the main thread waits on it.
class Latch {
 public:
  void Reset(int64_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    count_ = count;
  }
  void CountDown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--count_ <= 0) cv_.notify_all();
  }
  // Waits until zero or timeout_ms (< 0: no limit), calling on_tick every tick_ms. True at zero.
  bool Wait(int64_t timeout_ms, int tick_ms, const std::function<void()>& on_tick) {
    const uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : NowNs() + static_cast<uint64_t>(timeout_ms) * kNsPerMs;
    std::unique_lock<std::mutex> lock(mu_);
    while (count_ > 0) {
      if (NowNs() >= deadline) return false;
      cv_.wait_for(lock, std::chrono::milliseconds(tick_ms));
      if (on_tick && count_ > 0) {
        lock.unlock();
        on_tick();
        lock.lock();
      }
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t count_ = 0;
};

std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

struct Rng {
  uint64_t state;
  uint64_t Next() {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return Next() % n; }
};

std::string MakeValue(size_t size_bytes, uint64_t seed) {
  Rng rng{seed ^ 0x5eed};
  std::string value(size_bytes, 'v');
  for (char& c : value) c = static_cast<char>('a' + rng.Below(26));
  return value;
}

// prefix + zero-padded decimal index, written in place. With pad_right the number comes first,
// in as few digits as the key space needs, and the padding after it: random keys then differ
// from their first bytes on, like etcdctl's, instead of sharing a long zero prefix (which an LSM
// store's prefix compression makes artificially cheap).
class KeyFormatter {
 public:
  KeyFormatter(std::string prefix, size_t size_bytes, uint64_t key_space, bool pad_right)
      : prefix_(std::move(prefix)), size_(std::max(size_bytes, prefix_.size() + 1)) {
    size_t digits = 1;
    for (uint64_t v = key_space > 0 ? key_space - 1 : 0; v >= 10; v /= 10) ++digits;
    digits_end_ = pad_right ? std::min(size_, prefix_.size() + digits) : size_;
  }
  void Write(uint64_t index, std::string* key) const {
    if (key->size() != size_ || key->compare(0, prefix_.size(), prefix_) != 0) {
      *key = prefix_;
      key->resize(size_, '0');
    }
    char* p = key->data() + digits_end_;
    for (size_t i = prefix_.size(); i < digits_end_; ++i) {
      *--p = static_cast<char>('0' + index % 10);
      index /= 10;
    }
  }

 private:
  std::string prefix_;
  size_t size_;
  size_t digits_end_;  // digits occupy [prefix size, digits_end_)
};

class Engine {
 public:
  explicit Engine(const BenchOptions& options) : o_(options) {
    int threads = o_.threads;
    if (threads == 0) {
      threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 4);
    }
    o_.threads = threads;
  }
  ~Engine() { StopThreads(); }

  const BenchOptions& options() const { return o_; }
  int threads() const { return o_.threads; }
  int conns() const { return static_cast<int>(kv_.size()); }
  grpc::CompletionQueue* cq(int t) { return cqs_[t].get(); }
  ThreadStats& stats(int t) { return *stats_[t]; }
  KV::Stub* kv(int conn) { return kv_[conn % kv_.size()].get(); }
  Watch::Stub* watch(int conn) { return watch_[conn % watch_.size()].get(); }
  Lease::Stub* lease(int conn) { return lease_[conn % lease_.size()].get(); }
  int64_t preflight_revision() const { return preflight_revision_; }
  uint64_t timeout_ns() const { return static_cast<uint64_t>(o_.timeout_ms) * kNsPerMs; }

  absl::Status Connect() {
    for (int c = 0; c < o_.conns; ++c) {
      grpc::ChannelArguments args;
      // A private subchannel pool and a distinct argument give every channel its own TCP
      // connection, which is what --conns promises.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("meridian.bench.conn", c);
      args.SetMaxReceiveMessageSize(256 << 20);
      args.SetMaxSendMessageSize(64 << 20);
      // gRPC's transparent retries buffer every request for a possible resend, which costs the
      // load generator about a fifth of its CPU per request, CPU the measured server shares.
      // Neither etcd's benchmark tool nor this one wants them: a failed request is counted.
      args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
      args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
      const std::string& target = o_.endpoints[c % o_.endpoints.size()];
      auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
      channel->GetState(/*try_to_connect=*/true);  // all channels connect in parallel
      kv_.push_back(KV::NewStub(channel));
      watch_.push_back(Watch::NewStub(channel));
      lease_.push_back(Lease::NewStub(channel));
      channels_.push_back(std::move(channel));
    }
    const gpr_timespec deadline = DeadlineIn(5 * kNsPerSec);
    for (int c = 0; c < o_.conns; ++c) {
      if (!channels_[c]->WaitForConnected(deadline)) {
        return absl::UnavailableError(absl::StrCat(
            "cannot connect to ", o_.endpoints[c % o_.endpoints.size()], " within 5 s"));
      }
    }
    // One synchronous request: fails fast on a server that is not etcd-like, and gives k8s mode
    // the revision its watches start from.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(o_.timeout_ms));
    etcdserverpb::RangeRequest req;
    req.set_key(o_.key_prefix + "meridian-bench-preflight");
    etcdserverpb::RangeResponse resp;
    const grpc::Status status = kv_[0]->Range(&ctx, req, &resp);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("preflight Range on ", o_.endpoints[0],
                                                 " failed: ", status.error_message(), " (code ",
                                                 static_cast<int>(status.error_code()), ")"));
    }
    preflight_revision_ = resp.header().revision();
    return absl::OkStatus();
  }

  void StartThreads() {
    for (int t = 0; t < threads(); ++t) {
      cqs_.push_back(std::make_unique<grpc::CompletionQueue>());
      stats_.push_back(std::make_unique<ThreadStats>());
    }
    for (int t = 0; t < threads(); ++t) {
      workers_.emplace_back([cq = cqs_[t].get()] {
        void* tag;
        bool ok;
        while (cq->Next(&tag, &ok)) static_cast<Tag*>(tag)->Run(ok);
      });
    }
  }

  // Only when nothing is in flight: every client and stream has finished.
  void StopThreads() {
    for (auto& cq : cqs_) cq->Shutdown();
    for (auto& w : workers_) w.join();
    workers_.clear();
    cqs_.clear();
  }

  // Between phases (no operation in flight; the latch gave us a happens-before edge).
  void ResetStats() {
    for (auto& s : stats_) s->Reset();
  }

  uint64_t SumCompleted() const {
    uint64_t n = 0;
    for (const auto& s : stats_) n += s->completed.load(std::memory_order_relaxed);
    return n;
  }
  uint64_t SumDistinctEvents() const {
    uint64_t n = 0;
    for (const auto& s : stats_) n += s->distinct_events.load(std::memory_order_relaxed);
    return n;
  }

 private:
  BenchOptions o_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<KV::Stub>> kv_;
  std::vector<std::unique_ptr<Watch::Stub>> watch_;
  std::vector<std::unique_ptr<Lease::Stub>> lease_;
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs_;
  std::vector<std::unique_ptr<ThreadStats>> stats_;
  std::vector<std::thread> workers_;
  int64_t preflight_revision_ = 0;
};

// When a client sends and when it stops.
struct Pacing {
  uint64_t quota = UINT64_MAX;  // requests
  uint64_t end_ns = 0;          // 0: no time limit
  uint64_t interval_ns = 0;     // 0: closed loop
  uint64_t origin_ns = 0;       // first request's scheduled time
  // A late client sends its missed requests at once (true: the schedule is fixed, as in wrk2),
  // or skips them and resumes from now (false: a token bucket without burst, as in etcdctl).
  bool catch_up = true;
};

// A client with one request in flight. Subclasses start exactly one asynchronous operation in
// Issue() and call Completed() + Next() (or end the client) when it finishes. Everything after
// Start() runs on the client's completion-queue thread.
class ClientBase {
 public:
  ClientBase(Engine* engine, int index, Latch* done)
      : engine_(engine),
        index_(index),
        thread_(index % engine->threads()),
        conn_(index % engine->conns()),
        cq_(engine->cq(thread_)),
        stats_(&engine->stats(thread_)),
        done_(done),
        rng_{engine->options().seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(index)},
        start_tag_(MakeTag<&ClientBase::OnStart>(this)),
        alarm_tag_(MakeTag<&ClientBase::OnAlarm>(this)) {}
  virtual ~ClientBase() = default;
  ClientBase(const ClientBase&) = delete;
  ClientBase& operator=(const ClientBase&) = delete;

  void Start(const Pacing& pacing) {
    pacing_ = pacing;
    next_at_ns_ = pacing.origin_ns;
    // Hop onto the client's own thread before touching anything.
    alarm_.Set(cq_, gpr_inf_past(GPR_CLOCK_MONOTONIC), &start_tag_);
  }

 protected:
  virtual void Begin() { Next(); }
  virtual void Issue() = 0;
  virtual void Stop() { done_->CountDown(); }
  // Destroys the previous call's reader objects; they live in the old context's call arena.
  virtual void ResetCalls() {}

  void Next() {
    if (issued_ >= pacing_.quota) return Stop();
    const uint64_t now = NowNs();
    if (pacing_.end_ns != 0 && now >= pacing_.end_ns) return Stop();
    uint64_t at = now;
    if (pacing_.interval_ns != 0) {
      at = next_at_ns_;
      if (!pacing_.catch_up && at < now) at = now;
      if (pacing_.end_ns != 0 && at >= pacing_.end_ns) return Stop();
    }
    at = std::max(at, backoff_until_ns_);
    scheduled_ns_ = at;
    next_at_ns_ = at + pacing_.interval_ns;
    if (at > now) {
      alarm_.Set(cq_, DeadlineIn(at - now), &alarm_tag_);
      return;
    }
    ++issued_;
    Issue();
  }

  grpc::ClientContext* NewContext() {
    ResetCalls();
    ctx_.reset();
    ctx_.emplace();
    ctx_->set_deadline(DeadlineIn(engine_->timeout_ns()));
    return &*ctx_;
  }

  // Accounts a finished request: latency from its scheduled time on success.
  void Completed(const grpc::Status& status, LatencyHistogram* histogram) {
    const uint64_t now = NowNs();
    if (status.ok()) {
      histogram->Record(now - std::min(now, scheduled_ns_));
      ++stats_->ok;
      backoff_until_ns_ = 0;
    } else {
      stats_->CountStatus(status);
      // A server that refuses everything must not turn the bench into a busy loop.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        backoff_until_ns_ = now + 10 * kNsPerMs;
      }
    }
    stats_->last_completion_ns = now;
    ThreadStats::Bump(stats_->completed);
  }

  Engine* engine_;
  const int index_;
  const int thread_;
  const int conn_;
  grpc::CompletionQueue* cq_;
  ThreadStats* stats_;
  Latch* done_;
  Rng rng_;
  Pacing pacing_;
  uint64_t issued_ = 0;  // includes the request in flight
  uint64_t scheduled_ns_ = 0;
  uint64_t next_at_ns_ = 0;  // with --rate: when the next request is due
  std::optional<grpc::ClientContext> ctx_;
  grpc::Status status_;

 private:
  void OnStart(bool) { Begin(); }
  void OnAlarm(bool) {
    ++issued_;
    Issue();
  }

  uint64_t backoff_until_ns_ = 0;
  grpc::Alarm alarm_;
  Tag start_tag_;
  Tag alarm_tag_;
};

// put, range, txn-put, delete, and the putters of the watch modes.
class UnaryClient : public ClientBase {
 public:
  enum class Op { kPut, kRange, kTxnPut, kDelete, kWatchPut };

  UnaryClient(Engine* engine, int index, Latch* done, Op op, const std::string& value,
              bool sequential)
      : ClientBase(engine, index, done),
        op_(op),
        sequential_(sequential),
        keys_(engine->options().key_prefix, static_cast<size_t>(engine->options().key_size_bytes),
              engine->options().key_space, engine->options().key_pad_right),
        done_tag_(MakeTag<&UnaryClient::OnDone>(this)) {
    const BenchOptions& o = engine->options();
    clients_ = static_cast<uint64_t>(o.clients);
    key_space_ = o.key_space;
    switch (op_) {
      case Op::kPut:
        put_req_.set_value(value);
        break;
      case Op::kWatchPut:
        put_req_.set_key(absl::StrCat(o.key_prefix, "w/", index));
        val_size_ = static_cast<size_t>(o.val_size_bytes);
        break;
      case Op::kRange:
        range_req_.set_serializable(o.serializable);
        break;
      case Op::kTxnPut:
        for (int i = 0; i < o.txn_ops; ++i) {
          txn_req_.add_success()->mutable_request_put()->set_value(value);
        }
        break;
      case Op::kDelete:
        break;
    }
  }

 protected:
  void ResetCalls() override {
    put_rpc_.reset();
    range_rpc_.reset();
    txn_rpc_.reset();
    delete_rpc_.reset();
  }

  uint64_t NextKeyIndex() {
    // issued_ already counts this request.
    if (sequential_) return (static_cast<uint64_t>(index_) + (issued_ - 1) * clients_) % key_space_;
    return rng_.Below(key_space_);
  }

  void Issue() override {
    grpc::ClientContext* ctx = NewContext();
    KV::Stub* kv = engine_->kv(conn_);
    switch (op_) {
      case Op::kPut:
        keys_.Write(NextKeyIndex(), put_req_.mutable_key());
        put_rpc_ = kv->PrepareAsyncPut(ctx, put_req_, cq_);
        put_rpc_->StartCall();
        put_rpc_->Finish(&put_resp_, &status_, &done_tag_);
        break;
      case Op::kWatchPut: {
        // Putter p sends seq p, p + clients, ...; the payload carries the scheduled time.
        const uint64_t seq = static_cast<uint64_t>(index_) + (issued_ - 1) * clients_;
        EncodeWatchPayload(seq, scheduled_ns_, val_size_, put_req_.mutable_value());
        put_rpc_ = kv->PrepareAsyncPut(ctx, put_req_, cq_);
        put_rpc_->StartCall();
        put_rpc_->Finish(&put_resp_, &status_, &done_tag_);
        break;
      }
      case Op::kRange:
        keys_.Write(NextKeyIndex(), range_req_.mutable_key());
        range_rpc_ = kv->PrepareAsyncRange(ctx, range_req_, cq_);
        range_rpc_->StartCall();
        range_rpc_->Finish(&range_resp_, &status_, &done_tag_);
        break;
      case Op::kTxnPut: {
        // Sequential transactions take disjoint runs of txn_ops keys, so --total T writes
        // T * txn_ops distinct keys (how the comparison loads 1M keys quickly).
        const uint64_t ops = static_cast<uint64_t>(txn_req_.success_size());
        const uint64_t first = sequential_ ? (NextKeyIndex() * ops) % key_space_ : NextKeyIndex();
        for (int i = 0; i < txn_req_.success_size(); ++i) {
          keys_.Write((first + static_cast<uint64_t>(i)) % key_space_,
                      txn_req_.mutable_success(i)->mutable_request_put()->mutable_key());
        }
        txn_rpc_ = kv->PrepareAsyncTxn(ctx, txn_req_, cq_);
        txn_rpc_->StartCall();
        txn_rpc_->Finish(&txn_resp_, &status_, &done_tag_);
        break;
      }
      case Op::kDelete:
        keys_.Write(NextKeyIndex(), delete_req_.mutable_key());
        delete_rpc_ = kv->PrepareAsyncDeleteRange(ctx, delete_req_, cq_);
        delete_rpc_->StartCall();
        delete_rpc_->Finish(&delete_resp_, &status_, &done_tag_);
        break;
    }
  }

 private:
  void OnDone(bool) {
    Completed(status_, op_ == Op::kWatchPut ? &stats_->put_latency : &stats_->latency);
    Next();
  }

  const Op op_;
  const bool sequential_;
  const KeyFormatter keys_;
  uint64_t clients_ = 1;
  uint64_t key_space_ = 1;
  size_t val_size_ = 0;
  Tag done_tag_;
  etcdserverpb::PutRequest put_req_;
  etcdserverpb::PutResponse put_resp_;
  etcdserverpb::RangeRequest range_req_;
  etcdserverpb::RangeResponse range_resp_;
  etcdserverpb::TxnRequest txn_req_;
  etcdserverpb::TxnResponse txn_resp_;
  etcdserverpb::DeleteRangeRequest delete_req_;
  etcdserverpb::DeleteRangeResponse delete_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::PutResponse>> put_rpc_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::RangeResponse>> range_rpc_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::TxnResponse>> txn_rpc_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::DeleteRangeResponse>> delete_rpc_;
};

// Grants a lease, then sends LeaseKeepAlive requests on one stream, one at a time.
class LeaseClient : public ClientBase {
 public:
  LeaseClient(Engine* engine, int index, Latch* done)
      : ClientBase(engine, index, done),
        grant_tag_(MakeTag<&LeaseClient::OnGranted>(this)),
        stream_start_tag_(MakeTag<&LeaseClient::OnStreamStarted>(this)),
        write_tag_(MakeTag<&LeaseClient::OnWritten>(this)),
        read_tag_(MakeTag<&LeaseClient::OnRead>(this)),
        finish_tag_(MakeTag<&LeaseClient::OnFinished>(this)) {}

 protected:
  void ResetCalls() override { grant_rpc_.reset(); }

  void Begin() override {
    grant_req_.set_ttl(60);
    grant_rpc_ = engine_->lease(conn_)->PrepareAsyncLeaseGrant(NewContext(), grant_req_, cq_);
    grant_rpc_->StartCall();
    grant_rpc_->Finish(&grant_resp_, &status_, &grant_tag_);
  }

  void Issue() override {
    ka_req_.set_id(grant_resp_.id());
    stream_->Write(ka_req_, &write_tag_);
  }

  void Stop() override {
    stopping_ = true;
    stream_ctx_.TryCancel();
    stream_->Finish(&stream_status_, &finish_tag_);
  }

 private:
  void OnGranted(bool) {
    if (!status_.ok() || !grant_resp_.error().empty()) {
      if (status_.ok()) {
        stats_->CountError(kErrProtocol, absl::StrCat("LeaseGrant: ", grant_resp_.error()));
      } else {
        stats_->CountStatus(status_);
      }
      done_->CountDown();
      return;
    }
    stream_ = engine_->lease(conn_)->PrepareAsyncLeaseKeepAlive(&stream_ctx_, cq_);
    stream_->StartCall(&stream_start_tag_);
  }
  void OnStreamStarted(bool ok) {
    if (!ok) return Broken();
    Next();
  }
  void OnWritten(bool ok) {
    if (!ok) return Broken();
    stream_->Read(&ka_resp_, &read_tag_);
  }
  void OnRead(bool ok) {
    if (!ok) return Broken();
    const uint64_t now = NowNs();
    if (ka_resp_.ttl() <= 0) {
      stats_->CountError(kErrLeaseExpired, absl::StrCat("lease ", grant_resp_.id(), " expired"));
      ThreadStats::Bump(stats_->completed);
    } else {
      Completed(grpc::Status::OK, &stats_->latency);
    }
    stats_->last_completion_ns = now;
    Next();
  }
  void Broken() { stream_->Finish(&stream_status_, &finish_tag_); }
  void OnFinished(bool) {
    if (!stopping_) {
      if (stream_status_.ok()) {
        stats_->CountError(kErrStreamEnded, "server ended the LeaseKeepAlive stream");
      } else {
        stats_->CountStatus(stream_status_);
      }
    }
    done_->CountDown();
  }

  Tag grant_tag_, stream_start_tag_, write_tag_, read_tag_, finish_tag_;
  etcdserverpb::LeaseGrantRequest grant_req_;
  etcdserverpb::LeaseGrantResponse grant_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::LeaseGrantResponse>> grant_rpc_;
  grpc::ClientContext stream_ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<etcdserverpb::LeaseKeepAliveRequest,
                                                etcdserverpb::LeaseKeepAliveResponse>>
      stream_;
  etcdserverpb::LeaseKeepAliveRequest ka_req_;
  etcdserverpb::LeaseKeepAliveResponse ka_resp_;
  grpc::Status stream_status_;
  bool stopping_ = false;
};

// A Kubernetes-apiserver-like client: objects under <prefix>/registry/pods/, created, updated
// and deleted with a compare on mod_revision (as the apiserver's GuaranteedUpdate does), read by
// key, and listed in pages at one revision. Each client owns its own objects, so a failed compare
// means the object changed behind its back (e.g. left over from an earlier run): it learns the
// current mod_revision from the txn's failure branch and counts a conflict.
class K8sClient : public ClientBase {
 public:
  K8sClient(Engine* engine, int index, Latch* done, const std::string& value)
      : ClientBase(engine, index, done), done_tag_(MakeTag<&K8sClient::OnDone>(this)) {
    const BenchOptions& o = engine->options();
    const uint64_t clients = static_cast<uint64_t>(o.clients);
    const uint64_t objects =
        o.key_space / clients + (static_cast<uint64_t>(index) < o.key_space % clients ? 1 : 0);
    mod_revisions_.assign(std::max<uint64_t>(objects, 1), 0);
    mix_ = o.k8s_mix;
    list_prefix_ = o.key_prefix + "/registry/pods/";
    page_size_ = o.page_size;
    for (K8sOp op : {kOpCreate, kOpUpdate, kOpDelete}) {
      etcdserverpb::TxnRequest& txn = txns_[op];
      etcdserverpb::Compare* cmp = txn.add_compare();
      cmp->set_result(etcdserverpb::Compare::EQUAL);
      cmp->set_target(etcdserverpb::Compare::MOD);
      cmp->set_mod_revision(0);
      if (op == kOpDelete) {
        txn.add_success()->mutable_request_delete_range();
      } else {
        txn.add_success()->mutable_request_put()->set_value(value);
      }
      txn.add_failure()->mutable_request_range();
    }
    list_req_.set_range_end(PrefixEnd(list_prefix_));
    list_req_.set_limit(page_size_);
  }

 protected:
  void ResetCalls() override {
    txn_rpc_.reset();
    range_rpc_.reset();
  }

  void Issue() override {
    grpc::ClientContext* ctx = NewContext();
    KV::Stub* kv = engine_->kv(conn_);
    if (!in_list_) PickOp();
    switch (op_) {
      case kOpCreate:
      case kOpUpdate:
      case kOpDelete: {
        etcdserverpb::TxnRequest& txn = txns_[op_];
        FormatObjectKey(object_);
        txn.mutable_compare(0)->set_key(key_);
        txn.mutable_compare(0)->set_mod_revision(mod_revisions_[object_]);
        if (op_ == kOpDelete) {
          txn.mutable_success(0)->mutable_request_delete_range()->set_key(key_);
        } else {
          txn.mutable_success(0)->mutable_request_put()->set_key(key_);
        }
        txn.mutable_failure(0)->mutable_request_range()->set_key(key_);
        txn_rpc_ = kv->PrepareAsyncTxn(ctx, txn, cq_);
        txn_rpc_->StartCall();
        txn_rpc_->Finish(&txn_resp_, &status_, &done_tag_);
        break;
      }
      case kOpGet:
        FormatObjectKey(object_);
        get_req_.set_key(key_);
        range_rpc_ = kv->PrepareAsyncRange(ctx, get_req_, cq_);
        range_rpc_->StartCall();
        range_rpc_->Finish(&range_resp_, &status_, &done_tag_);
        break;
      default:  // a list page
        if (!in_list_) {
          list_req_.set_key(list_prefix_);
          list_req_.set_revision(0);
        }
        range_rpc_ = kv->PrepareAsyncRange(ctx, list_req_, cq_);
        range_rpc_->StartCall();
        range_rpc_->Finish(&range_resp_, &status_, &done_tag_);
        break;
    }
  }

 private:
  void PickOp() {
    const int r = static_cast<int>(rng_.Below(100));
    int at = mix_.create;
    K8sOp op = r < at                    ? kOpCreate
               : r < (at += mix_.update) ? kOpUpdate
               : r < (at += mix_.remove) ? kOpDelete
               : r < (at += mix_.get)    ? kOpGet
                                         : kOpListPage;
    const uint64_t n = mod_revisions_.size();
    if (op == kOpCreate && live_ == n) op = kOpUpdate;
    if ((op == kOpUpdate || op == kOpDelete || op == kOpGet) && live_ == 0) op = kOpCreate;
    op_ = op;
    if (op == kOpListPage) return;
    // Probe for an object in the right state; bounded, so a nearly full or empty set falls back
    // to any object (the compare then fails and counts as a conflict).
    const bool want_live = op != kOpCreate;
    object_ = rng_.Below(n);
    for (int tries = 0; tries < 64 && (mod_revisions_[object_] != 0) != want_live; ++tries) {
      object_ = rng_.Below(n);
    }
  }

  void FormatObjectKey(uint64_t object) {
    char buf[96];
    const int len = std::snprintf(buf, sizeof(buf), "ns-%02d/pod-%d-%" PRIu64,
                                  static_cast<int>(object % 20), index_, object);
    key_.assign(list_prefix_);
    key_.append(buf, static_cast<size_t>(len));
  }

  static int64_t FailureModRevision(const etcdserverpb::TxnResponse& resp) {
    if (resp.responses_size() == 0 || !resp.responses(0).has_response_range()) return 0;
    const auto& range = resp.responses(0).response_range();
    return range.kvs_size() == 0 ? 0 : range.kvs(0).mod_revision();
  }

  void SetModRevision(int64_t revision) {
    int64_t& slot = mod_revisions_[object_];
    if ((slot == 0) != (revision == 0)) live_ += revision == 0 ? -1 : 1;
    slot = revision;
  }

  void OnDone(bool) {
    Completed(status_, &stats_->latency);
    if (!status_.ok()) {
      in_list_ = false;
      return Next();
    }
    ++stats_->ops[op_];
    switch (op_) {
      case kOpCreate:
      case kOpUpdate:
      case kOpDelete:
        if (txn_resp_.succeeded()) {
          SetModRevision(op_ == kOpDelete ? 0 : txn_resp_.header().revision());
        } else {
          ++stats_->conflicts;
          SetModRevision(FailureModRevision(txn_resp_));
        }
        break;
      case kOpGet:
        break;
      default:
        if (!in_list_) list_req_.set_revision(range_resp_.header().revision());
        if (range_resp_.more() && range_resp_.kvs_size() > 0) {
          in_list_ = true;
          std::string next = range_resp_.kvs(range_resp_.kvs_size() - 1).key();
          next.push_back('\0');
          list_req_.set_key(std::move(next));
        } else {
          in_list_ = false;
          ++stats_->ops[kOpList];
        }
        break;
    }
    Next();
  }

  Tag done_tag_;
  K8sMix mix_;
  std::string list_prefix_;
  int page_size_ = 500;
  std::vector<int64_t> mod_revisions_;  // per object; 0: absent
  uint64_t live_ = 0;
  K8sOp op_ = kOpGet;
  uint64_t object_ = 0;
  bool in_list_ = false;
  std::string key_;
  std::array<etcdserverpb::TxnRequest, 3> txns_;
  etcdserverpb::TxnResponse txn_resp_;
  etcdserverpb::RangeRequest get_req_;
  etcdserverpb::RangeRequest list_req_;
  etcdserverpb::RangeResponse range_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::TxnResponse>> txn_rpc_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::RangeResponse>> range_rpc_;
};

// One Watch stream carrying the watchers of a WatcherSet: sends their create requests one after
// the other, then reads until canceled.
class WatchStream {
 public:
  WatchStream(Engine* engine, int index, WatcherSet* set, etcdserverpb::WatchRequest create,
              bool record_delivery, Latch* ready, Latch* done)
      : engine_(engine),
        thread_(index % engine->threads()),
        conn_(index % engine->conns()),
        stats_(&engine->stats(thread_)),
        set_(set),
        create_(std::move(create)),
        record_delivery_(record_delivery),
        ready_(ready),
        done_(done),
        start_tag_(MakeTag<&WatchStream::OnStarted>(this)),
        write_tag_(MakeTag<&WatchStream::OnWritten>(this)),
        read_tag_(MakeTag<&WatchStream::OnRead>(this)),
        finish_tag_(MakeTag<&WatchStream::OnFinished>(this)) {}

  // From the main thread; nothing else touches the stream until the start tag fires.
  void Start() {
    rpc_ = engine_->watch(conn_)->PrepareAsyncWatch(&ctx_, engine_->cq(thread_));
    rpc_->StartCall(&start_tag_);
  }
  // Thread-safe.
  void Cancel() {
    cancel_requested_.store(true);
    ctx_.TryCancel();
  }

 private:
  void OnStarted(bool ok) {
    if (!ok) {
      broken_ = true;
      MarkReady();
      return MaybeFinish();
    }
    read_pending_ = true;
    rpc_->Read(&resp_, &read_tag_);
    MaybeWrite();
  }

  void MaybeWrite() {
    if (write_pending_ || broken_ || sent_ >= set_->watchers()) return;
    write_pending_ = true;
    ++sent_;
    rpc_->Write(create_, &write_tag_);
  }

  void OnWritten(bool ok) {
    write_pending_ = false;
    if (!ok) {
      broken_ = true;
      return MaybeFinish();
    }
    MaybeWrite();
  }

  void OnRead(bool ok) {
    read_pending_ = false;
    if (!ok) {
      broken_ = true;
      MarkReady();
      return MaybeFinish();
    }
    const uint64_t now = NowNs();
    WatcherSet::ResponseResult r;
    const absl::Status status =
        set_->OnResponse(resp_, now, record_delivery_ ? &stats_->latency : nullptr, &r);
    if (!status.ok()) {
      stats_->CountError(r.canceled ? kErrWatchCanceled : kErrProtocol,
                         std::string_view(status.message().data(), status.message().size()));
    }
    if (r.new_distinct > 0) {
      ThreadStats::Bump(stats_->distinct_events, r.new_distinct);
      stats_->last_event_ns.store(now, std::memory_order_relaxed);
    } else if (!record_delivery_ && r.events > 0) {
      // Untracked watchers (k8s, idle): every event counts as progress.
      ThreadStats::Bump(stats_->distinct_events, r.events);
      stats_->last_event_ns.store(now, std::memory_order_relaxed);
    }
    if (set_->all_created()) MarkReady();
    read_pending_ = true;
    rpc_->Read(&resp_, &read_tag_);
  }

  void MaybeFinish() {
    if (finishing_ || write_pending_ || read_pending_) return;
    finishing_ = true;
    rpc_->Finish(&status_, &finish_tag_);
  }

  void OnFinished(bool) {
    if (!cancel_requested_.load()) {
      if (status_.ok()) {
        stats_->CountError(kErrStreamEnded, "server ended a Watch stream");
      } else {
        stats_->CountStatus(status_);
      }
    }
    MarkReady();
    done_->CountDown();
  }

  void MarkReady() {
    if (ready_marked_) return;
    ready_marked_ = true;
    ready_->CountDown();
  }

  Engine* engine_;
  const int thread_;
  const int conn_;
  ThreadStats* stats_;
  WatcherSet* set_;
  const etcdserverpb::WatchRequest create_;
  const bool record_delivery_;
  Latch* ready_;
  Latch* done_;
  Tag start_tag_, write_tag_, read_tag_, finish_tag_;
  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientAsyncReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      rpc_;
  etcdserverpb::WatchResponse resp_;
  grpc::Status status_;
  uint32_t sent_ = 0;
  bool write_pending_ = false;
  bool read_pending_ = false;
  bool broken_ = false;
  bool finishing_ = false;
  bool ready_marked_ = false;
  std::atomic<bool> cancel_requested_{false};
};

// Draws a progress bar on stderr.
class Progress {
 public:
  Progress(bool enabled, const char* what, uint64_t total, double duration_s, uint64_t start_ns)
      : enabled_(enabled),
        what_(what),
        total_(total),
        duration_s_(duration_s),
        start_ns_(start_ns) {}
  void Draw(uint64_t done) {
    if (!enabled_) return;
    const double elapsed_s = static_cast<double>(NowNs() - start_ns_) / kNsPerSec;
    double fraction = 0;
    if (total_ != 0 && total_ != UINT64_MAX) fraction = static_cast<double>(done) / total_;
    if (duration_s_ > 0) fraction = std::max(fraction, elapsed_s / duration_s_);
    fraction = std::clamp(fraction, 0.0, 1.0);
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    char bar[kWidth + 1];
    for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
    bar[kWidth] = '\0';
    std::fprintf(stderr, "\r%s [%s] %3.0f%% %" PRIu64 " done, %.0f/s   ", what_, bar,
                 fraction * 100, done, elapsed_s > 0 ? done / elapsed_s : 0.0);
    std::fflush(stderr);
    drawn_ = true;
  }
  void Clear() {
    if (drawn_) std::fputs("\r\033[K", stderr);
  }

 private:
  bool enabled_;
  const char* what_;
  uint64_t total_;
  double duration_s_;
  uint64_t start_ns_;
  bool drawn_ = false;
};

struct Merged {
  LatencyHistogram latency;
  LatencyHistogram put_latency;
  std::array<uint64_t, kErrorKinds> errors{};
  std::array<uint64_t, kK8sOps> ops{};
  uint64_t ok = 0;
  uint64_t conflicts = 0;
  uint64_t last_completion_ns = 0;
  uint64_t last_event_ns = 0;
  std::string first_error;
};

Merged MergeStats(Engine& engine) {
  Merged m;
  for (int t = 0; t < engine.threads(); ++t) {
    const ThreadStats& s = engine.stats(t);
    m.latency.Merge(s.latency);
    m.put_latency.Merge(s.put_latency);
    for (int i = 0; i < kErrorKinds; ++i) m.errors[i] += s.errors[i];
    for (int i = 0; i < kK8sOps; ++i) m.ops[i] += s.ops[i];
    m.ok += s.ok;
    m.conflicts += s.conflicts;
    m.last_completion_ns = std::max(m.last_completion_ns, s.last_completion_ns);
    m.last_event_ns = std::max(m.last_event_ns, s.last_event_ns.load());
    if (m.first_error.empty()) m.first_error = s.first_error;
  }
  return m;
}

void FillErrors(const Merged& m, BenchResult* r) {
  for (int i = 1; i < kErrorKinds; ++i) {
    if (m.errors[i] == 0) continue;
    r->errors_by_code[ErrorKindName(i)] = m.errors[i];
    r->errors += m.errors[i];
  }
  r->first_error = m.first_error;
}

Pacing MakePacing(int clients_count, int index, uint64_t total, double rate_per_s, bool catch_up,
                  double duration_s, uint64_t start_ns) {
  Pacing p;
  const uint64_t clients = static_cast<uint64_t>(clients_count);
  if (total != 0) {
    p.quota = total / clients + (static_cast<uint64_t>(index) < total % clients ? 1 : 0);
  }
  if (duration_s > 0) p.end_ns = start_ns + static_cast<uint64_t>(duration_s * kNsPerSec);
  if (rate_per_s > 0) {
    // Each client sends every clients/rate seconds, staggered so the sum is evenly spaced.
    const double interval = static_cast<double>(kNsPerSec) * clients / rate_per_s;
    p.interval_ns = std::max<uint64_t>(1, static_cast<uint64_t>(interval));
    p.origin_ns = start_ns + static_cast<uint64_t>(interval * index / clients);
    p.catch_up = catch_up;
  }
  return p;
}

// Runs --clients clients to completion with a progress bar; returns the phase's start time.
template <class MakeClient>
uint64_t RunClients(Engine& engine, const char* what, uint64_t total, double rate_per_s,
                    double duration_s, MakeClient make_client) {
  const BenchOptions& o = engine.options();
  Latch done;
  done.Reset(o.clients);
  std::vector<std::unique_ptr<ClientBase>> clients;
  clients.reserve(static_cast<size_t>(o.clients));
  for (int i = 0; i < o.clients; ++i) clients.push_back(make_client(i, &done));
  const uint64_t start_ns = NowNs();
  for (int i = 0; i < o.clients; ++i) {
    clients[i]->Start(
        MakePacing(o.clients, i, total, rate_per_s, o.rate_catch_up, duration_s, start_ns));
  }
  Progress progress(o.progress != 0, what, total, duration_s, start_ns);
  done.Wait(-1, 200, [&] { progress.Draw(engine.SumCompleted()); });
  progress.Clear();
  return start_ns;
}

double Seconds(uint64_t from_ns, uint64_t to_ns) {
  return to_ns > from_ns ? static_cast<double>(to_ns - from_ns) / kNsPerSec : 0.0;
}

void RunUnary(Engine& engine, BenchResult* result) {
  const BenchOptions& o = engine.options();
  const std::string value = MakeValue(static_cast<size_t>(o.val_size_bytes), o.seed);
  UnaryClient::Op op = UnaryClient::Op::kPut;
  switch (o.mode) {
    case Mode::kRange:
      op = UnaryClient::Op::kRange;
      break;
    case Mode::kTxnPut:
      op = UnaryClient::Op::kTxnPut;
      break;
    case Mode::kDelete:
      op = UnaryClient::Op::kDelete;
      break;
    default:
      break;
  }
  if (o.mode == Mode::kRange || o.mode == Mode::kDelete) {
    // Range reads and deletes need keys that exist: write the key space first (delete: only as
    // many keys as it will delete), unmeasured.
    uint64_t n = std::min<uint64_t>(o.key_space, 10'000'000);
    if (o.mode == Mode::kDelete && o.total != 0) n = std::min(n, o.total);
    const uint64_t t0 = RunClients(engine, "prefill", n, 0, 0, [&](int i, Latch* done) {
      return std::make_unique<UnaryClient>(&engine, i, done, UnaryClient::Op::kPut, value, true);
    });
    result->prefilled_keys = n;
    result->prefill_s = Seconds(t0, NowNs());
    const Merged m = MergeStats(engine);
    if (m.ok != n) {
      result->first_error =
          absl::StrCat("prefill: ", m.ok, " of ", n, " puts succeeded; ", m.first_error);
    }
    engine.ResetStats();
  }
  // Deletes walk the prefilled keys in order so that each one removes a key.
  const bool sequential = o.sequential_keys || o.mode == Mode::kDelete;
  const uint64_t start_ns =
      RunClients(engine, ModeName(o.mode).data(), o.total, o.rate_per_s, o.duration_s,
                 [&](int i, Latch* done) {
                   return std::make_unique<UnaryClient>(&engine, i, done, op, value, sequential);
                 });
  const Merged m = MergeStats(engine);
  const std::string prefill_error = result->first_error;
  FillErrors(m, result);
  if (result->first_error.empty()) result->first_error = prefill_error;
  result->requests = m.ok;
  result->elapsed_s = Seconds(start_ns, std::max(m.last_completion_ns, start_ns));
  result->qps = result->elapsed_s > 0 ? m.ok / result->elapsed_s : 0;
  result->latency = m.latency.Summary();
}

void RunLease(Engine& engine, BenchResult* result) {
  const BenchOptions& o = engine.options();
  const uint64_t start_ns = RunClients(
      engine, "lease-keepalive", o.total, o.rate_per_s, o.duration_s,
      [&](int i, Latch* done) { return std::make_unique<LeaseClient>(&engine, i, done); });
  const Merged m = MergeStats(engine);
  FillErrors(m, result);
  result->requests = m.ok;
  result->elapsed_s = Seconds(start_ns, std::max(m.last_completion_ns, start_ns));
  result->qps = result->elapsed_s > 0 ? m.ok / result->elapsed_s : 0;
  result->latency = m.latency.Summary();
}

// Watch streams for `watchers` watchers spread over `streams` streams.
struct StreamGroup {
  std::vector<std::unique_ptr<WatcherSet>> sets;
  std::vector<std::unique_ptr<WatchStream>> streams;
  Latch ready;
  Latch done;

  void Build(Engine& engine, int watchers, int stream_count, bool track, uint32_t sources,
             uint64_t puts, const etcdserverpb::WatchRequest& create) {
    ready.Reset(stream_count);
    done.Reset(stream_count);
    for (int s = 0; s < stream_count; ++s) {
      const int on_stream = watchers / stream_count + (s < watchers % stream_count ? 1 : 0);
      sets.push_back(
          std::make_unique<WatcherSet>(static_cast<uint32_t>(on_stream), track, sources, puts));
      streams.push_back(std::make_unique<WatchStream>(&engine, s, sets.back().get(), create, track,
                                                      &ready, &done));
    }
  }
  void Start() {
    for (auto& s : streams) s->Start();
  }
  void CancelAndWait() {
    for (auto& s : streams) s->Cancel();
    done.Wait(-1, 100, nullptr);
  }
  uint32_t Created() const {
    uint32_t n = 0;
    for (const auto& s : sets) n += s->created();
    return n;
  }
  WatchEventCounts Counts() const {
    WatchEventCounts c;
    for (const auto& s : sets) c.Add(s->Counts());
    return c;
  }
};

etcdserverpb::WatchRequest MakeCreate(const std::string& prefix, int64_t start_revision) {
  etcdserverpb::WatchRequest req;
  etcdserverpb::WatchCreateRequest* create = req.mutable_create_request();
  create->set_key(prefix);
  create->set_range_end(PrefixEnd(prefix));
  create->set_start_revision(start_revision);
  return req;
}

// Waits for every watcher's create response; true if all were created.
bool WaitWatchersCreated(Engine& engine, StreamGroup& group, uint64_t start_ns,
                         BenchResult* result) {
  const BenchOptions& o = engine.options();
  // Generous: a slow server may take a while for 10^5 creates, but never hang forever.
  const int64_t timeout_ms = 30000 + static_cast<int64_t>(o.watchers) / 10;
  Progress progress(o.progress != 0, "creating watchers", static_cast<uint64_t>(o.watchers), 0,
                    start_ns);
  const bool all_ready = group.ready.Wait(timeout_ms, 200, [&] { progress.Draw(group.Created()); });
  progress.Clear();
  result->watch_setup_s = Seconds(start_ns, NowNs());
  result->watchers_created = group.Created();
  return all_ready && result->watchers_created == static_cast<uint32_t>(o.watchers);
}

void RunWatch(Engine& engine, BenchResult* result) {
  const BenchOptions& o = engine.options();
  const std::string prefix = o.key_prefix + "w/";
  StreamGroup group;
  group.Build(engine, o.watchers, o.streams, true, static_cast<uint32_t>(o.clients), o.puts,
              MakeCreate(prefix, 0));
  const uint64_t setup_ns = NowNs();
  group.Start();
  if (!WaitWatchersCreated(engine, group, setup_ns, result)) {
    result->first_error = absl::StrCat("only ", result->watchers_created, " of ", o.watchers,
                                       " watchers were created");
  }

  const std::string unused_value;
  const uint64_t start_ns =
      RunClients(engine, "puts", o.puts, o.rate_per_s, 0, [&](int i, Latch* done) {
        return std::make_unique<UnaryClient>(&engine, i, done, UnaryClient::Op::kWatchPut,
                                             unused_value, true);
      });

  // Drain: until every watcher has every put, or nothing new arrived for drain_ms.
  const uint64_t expected = static_cast<uint64_t>(o.watchers) * o.puts;
  uint64_t seen = engine.SumDistinctEvents();
  uint64_t last_progress_ns = NowNs();
  while (seen < expected) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const uint64_t now_seen = engine.SumDistinctEvents();
    const uint64_t now = NowNs();
    if (now_seen != seen) {
      seen = now_seen;
      last_progress_ns = now;
    } else if (now - last_progress_ns >= static_cast<uint64_t>(o.drain_ms) * kNsPerMs) {
      break;
    }
  }
  // Late duplicates of already delivered events still get counted.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  group.CancelAndWait();

  const Merged m = MergeStats(engine);
  FillErrors(m, result);
  result->has_watch = true;
  result->watch = group.Counts();
  result->requests = m.ok;
  const double put_s = Seconds(start_ns, std::max(m.last_completion_ns, start_ns));
  result->put_qps = put_s > 0 ? m.ok / put_s : 0;
  result->put_latency = m.put_latency.Summary();
  result->elapsed_s =
      Seconds(start_ns, std::max({m.last_event_ns, m.last_completion_ns, start_ns}));
  result->events_per_s = result->elapsed_s > 0 ? result->watch.distinct / result->elapsed_s : 0;
  result->qps = result->events_per_s;
  result->latency = m.latency.Summary();
}

void RunIdleWatchers(Engine& engine, BenchResult* result) {
  const BenchOptions& o = engine.options();
  StreamGroup group;
  group.Build(engine, o.watchers, o.streams, false, 1, 0, MakeCreate(o.key_prefix + "idle/", 0));
  const uint64_t setup_ns = NowNs();
  group.Start();
  if (!WaitWatchersCreated(engine, group, setup_ns, result)) {
    result->first_error = absl::StrCat("only ", result->watchers_created, " of ", o.watchers,
                                       " watchers were created");
  }
  // Let the server settle (allocations, GC) before its memory is read.
  std::this_thread::sleep_for(std::chrono::milliseconds(o.hold_ms));
  if (o.rss_pid > 0) {
    result->server_rss_after_kb = ReadProcStatusKb(o.rss_pid, "VmRSS");
    result->server_hwm_after_kb = ReadProcStatusKb(o.rss_pid, "VmHWM");
  }
  group.CancelAndWait();
  const Merged m = MergeStats(engine);
  const std::string setup_error = result->first_error;
  FillErrors(m, result);
  if (result->first_error.empty()) result->first_error = setup_error;
  result->has_watch = true;
  result->watch = group.Counts();
  result->elapsed_s = result->watch_setup_s;
  result->requests = result->watchers_created;
  result->qps = result->watch_setup_s > 0 ? result->watchers_created / result->watch_setup_s : 0;
}

void RunK8s(Engine& engine, BenchResult* result) {
  const BenchOptions& o = engine.options();
  StreamGroup group;
  if (o.watchers > 0) {
    // Reflector-style: watch from just after the revision the run starts at.
    group.Build(engine, o.watchers, o.streams, false, 1, 0,
                MakeCreate(o.key_prefix + "/registry/pods/", engine.preflight_revision() + 1));
    const uint64_t setup_ns = NowNs();
    group.Start();
    if (!WaitWatchersCreated(engine, group, setup_ns, result)) {
      result->first_error = absl::StrCat("only ", result->watchers_created, " of ", o.watchers,
                                         " watchers were created");
    }
  }
  const std::string value = MakeValue(static_cast<size_t>(o.val_size_bytes), o.seed);
  const uint64_t start_ns = RunClients(
      engine, "k8s", o.total, o.rate_per_s, o.duration_s,
      [&](int i, Latch* done) { return std::make_unique<K8sClient>(&engine, i, done, value); });
  if (o.watchers > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    group.CancelAndWait();
  }
  const Merged m = MergeStats(engine);
  const std::string setup_error = result->first_error;
  FillErrors(m, result);
  if (result->first_error.empty()) result->first_error = setup_error;
  result->requests = m.ok;
  result->elapsed_s = Seconds(start_ns, std::max(m.last_completion_ns, start_ns));
  result->qps = result->elapsed_s > 0 ? m.ok / result->elapsed_s : 0;
  result->latency = m.latency.Summary();
  for (int i = 0; i < kK8sOps; ++i) result->ops[kK8sOpNames[i]] = m.ops[i];
  result->conflicts = m.conflicts;
  if (o.watchers > 0) {
    result->has_watch = true;
    result->watch = group.Counts();
  }
}

// Minimal JSON object builder (keys are ours; strings are escaped).
class JsonObject {
 public:
  JsonObject() : out_("{") {}
  JsonObject& Str(std::string_view key, std::string_view value) {
    Key(key);
    AppendString(value);
    return *this;
  }
  JsonObject& Uint(std::string_view key, uint64_t value) {
    Key(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonObject& Int(std::string_view key, int64_t value) {
    Key(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonObject& Num(std::string_view key, double value) {
    Key(key);
    if (!std::isfinite(value)) {
      out_ += "null";
    } else {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.6g", value);
      out_ += buf;
    }
    return *this;
  }
  JsonObject& Bool(std::string_view key, bool value) {
    Key(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  JsonObject& Raw(std::string_view key, const std::string& json) {
    Key(key);
    out_ += json;
    return *this;
  }
  std::string Close() { return out_ + "}"; }

 private:
  void Key(std::string_view key) {
    if (out_.size() > 1) out_ += ',';
    AppendString(key);
    out_ += ':';
  }
  void AppendString(std::string_view s) {
    out_ += '"';
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (u < 0x20 || u >= 0x7f) {
        // Non-ASCII bytes too: error messages may carry arbitrary bytes, JSON wants UTF-8.
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", u);
        out_ += buf;
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }
  std::string out_;
};

std::string LatencyJson(const LatencySummary& s) {
  return JsonObject()
      .Uint("count", s.count)
      .Num("mean", s.mean_ms)
      .Num("min", s.min_ms)
      .Num("p50", s.p50_ms)
      .Num("p90", s.p90_ms)
      .Num("p99", s.p99_ms)
      .Num("p99_9", s.p999_ms)
      .Num("max", s.max_ms)
      .Close();
}

}  // namespace

int64_t ReadProcStatusKb(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string want = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.compare(0, want.size(), want) != 0) continue;
    long long kb = -1;
    if (std::sscanf(line.c_str() + want.size(), "%lld", &kb) != 1) return -1;
    return kb;
  }
  return -1;
}

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options) {
  BenchOptions o = options;
  if (absl::Status s = ValidateOptions(&o); !s.ok()) return s;
  Engine engine(o);
  if (absl::Status s = engine.Connect(); !s.ok()) return s;
  engine.StartThreads();

  BenchResult result;
  result.options = engine.options();
  if (o.rss_pid > 0) result.server_rss_before_kb = ReadProcStatusKb(o.rss_pid, "VmRSS");
  switch (o.mode) {
    case Mode::kPut:
    case Mode::kRange:
    case Mode::kTxnPut:
    case Mode::kDelete:
      RunUnary(engine, &result);
      break;
    case Mode::kWatch:
    case Mode::kWatchLatency:
      RunWatch(engine, &result);
      break;
    case Mode::kLeaseKeepalive:
      RunLease(engine, &result);
      break;
    case Mode::kK8s:
      RunK8s(engine, &result);
      break;
    case Mode::kIdleWatchers:
      RunIdleWatchers(engine, &result);
      break;
  }
  engine.StopThreads();
  if (o.rss_pid > 0 && result.server_rss_after_kb < 0) {
    result.server_rss_after_kb = ReadProcStatusKb(o.rss_pid, "VmRSS");
    result.server_hwm_after_kb = ReadProcStatusKb(o.rss_pid, "VmHWM");
  }
  return result;
}

std::string ResultJson(const BenchResult& r) {
  const BenchOptions& o = r.options;
  std::string endpoints;
  for (const std::string& ep : o.endpoints) {
    if (!endpoints.empty()) endpoints += ',';
    endpoints += ep;
  }
  JsonObject errors;
  for (const auto& [code, n] : r.errors_by_code) errors.Uint(code, n);
  JsonObject json;
  json.Str("mode", ModeName(o.mode))
      .Str("endpoints", endpoints)
      .Int("conns", o.conns)
      .Int("clients", o.clients)
      .Int("threads", o.threads)
      .Uint("total", o.total)
      .Num("duration_s", o.duration_s)
      .Int("key_size", o.key_size_bytes)
      .Int("val_size", o.val_size_bytes)
      .Uint("key_space", o.key_space)
      .Bool("sequential_keys", o.sequential_keys)
      .Bool("key_pad_right", o.key_pad_right)
      .Num("rate", o.rate_per_s)
      .Bool("rate_catchup", o.rate_catch_up)
      .Str("consistency", o.serializable ? "s" : "l")
      .Num("elapsed_s", r.elapsed_s)
      .Uint("requests", r.requests)
      .Num("qps", r.qps)
      .Raw("latency_ms", LatencyJson(r.latency))
      .Uint("error_count", r.errors)
      .Raw("errors", errors.Close())
      .Str("first_error", r.first_error);
  if (r.prefilled_keys > 0) {
    json.Uint("prefilled_keys", r.prefilled_keys).Num("prefill_s", r.prefill_s);
  }
  if (r.has_watch) {
    const bool puts = o.mode == Mode::kWatch || o.mode == Mode::kWatchLatency;
    json.Raw("watch", JsonObject()
                          .Int("watchers", o.watchers)
                          .Int("streams", o.streams)
                          .Uint("puts", puts ? o.puts : 0)
                          .Uint("watchers_created", r.watchers_created)
                          .Num("setup_s", r.watch_setup_s)
                          .Uint("expected", r.watch.expected)
                          .Uint("events", r.watch.received)
                          .Uint("distinct", r.watch.distinct)
                          .Uint("lost", r.watch.lost)
                          .Uint("duplicated", r.watch.duplicated)
                          .Uint("out_of_order", r.watch.out_of_order)
                          .Uint("unexpected", r.watch.unexpected)
                          .Num("events_per_s", r.events_per_s)
                          .Num("put_qps", r.put_qps)
                          .Raw("put_latency_ms", LatencyJson(r.put_latency))
                          .Close());
  }
  if (!r.ops.empty()) {
    JsonObject ops;
    for (const auto& [name, n] : r.ops) ops.Uint(name, n);
    json.Raw("ops", ops.Close()).Uint("conflicts", r.conflicts);
  }
  if (o.rss_pid > 0) {
    json.Int("server_pid", o.rss_pid)
        .Int("server_rss_before_kb", r.server_rss_before_kb)
        .Int("server_rss_after_kb", r.server_rss_after_kb)
        .Int("server_hwm_after_kb", r.server_hwm_after_kb);
  }
  return json.Close();
}

std::string ResultText(const BenchResult& r) {
  const BenchOptions& o = r.options;
  std::string out;
  char buf[512];
  const LatencySummary& l = r.latency;
  const auto latency_line = [&](const char* what, const LatencySummary& s) {
    std::snprintf(
        buf, sizeof(buf),
        "%s ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (mean %.3f, n=%" PRIu64 ")\n",
        what, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.mean_ms, s.count);
    out += buf;
  };
  if (o.mode == Mode::kIdleWatchers) {
    std::snprintf(buf, sizeof(buf),
                  "idle-watchers: %u of %d watchers on %d streams created in %.2f s\n",
                  r.watchers_created, o.watchers, o.streams, r.watch_setup_s);
    out += buf;
  } else if (r.has_watch && o.mode != Mode::kK8s) {
    std::snprintf(buf, sizeof(buf),
                  "%s: %d watchers on %d streams, %" PRIu64
                  " puts by %d clients\n"
                  "events: %" PRIu64 " delivered, %.1f events/s; lost %" PRIu64
                  ", duplicated %" PRIu64 ", out of order %" PRIu64 ", unexpected %" PRIu64 "\n",
                  ModeName(o.mode).data(), o.watchers, o.streams, o.puts, o.clients,
                  r.watch.received, r.events_per_s, r.watch.lost, r.watch.duplicated,
                  r.watch.out_of_order, r.watch.unexpected);
    out += buf;
    latency_line("put-to-delivery latency", l);
    std::snprintf(buf, sizeof(buf), "puts: %.1f/s\n", r.put_qps);
    out += buf;
    latency_line("put latency", r.put_latency);
  } else {
    std::snprintf(buf, sizeof(buf), "%s: %" PRIu64 " requests in %.3f s, %.1f requests/s\n",
                  ModeName(o.mode).data(), r.requests, r.elapsed_s, r.qps);
    out += buf;
    latency_line("latency", l);
    if (!r.ops.empty()) {
      out += "ops:";
      for (const auto& [name, n] : r.ops) out += absl::StrCat(" ", name, "=", n);
      out += absl::StrCat(" conflicts=", r.conflicts);
      if (r.has_watch) out += absl::StrCat(" watch_events=", r.watch.received);
      out += "\n";
    }
  }
  std::snprintf(buf, sizeof(buf), "errors: %" PRIu64, r.errors);
  out += buf;
  for (const auto& [code, n] : r.errors_by_code) out += absl::StrCat(" ", code, "=", n);
  out += "\n";
  if (!r.first_error.empty()) out += absl::StrCat("first error: ", r.first_error, "\n");
  if (o.rss_pid > 0) {
    std::snprintf(buf, sizeof(buf), "server %d VmRSS: %" PRId64 " kB -> %" PRId64 " kB\n",
                  o.rss_pid, r.server_rss_before_kb, r.server_rss_after_kb);
    out += buf;
  }
  return out;
}

}  // namespace meridian::bench
