// Crash test: clients make puts while the server is SIGKILLed at random moments. After each
// restart every acknowledged put must be there with its value, and the revision must not have
// gone backwards. Unacknowledged puts (timeouts, broken connections) may or may not have
// happened, and are not checked.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "harness.h"

namespace meridian::e2e {
namespace {

constexpr int kWriters = 8;
constexpr int kKills = 5;
constexpr int kPutTimeoutMs = 2000;

struct Acked {
  std::mutex mu;
  std::map<std::string, std::string> kv;  // key -> acknowledged value
  int64_t max_rev = 0;
  int64_t acks = 0;
};

void Writer(const std::string& endpoint, int id, std::atomic<bool>* stop, Acked* acked) {
  auto channel = grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  auto kv = etcdserverpb::KV::NewStub(channel);
  for (int seq = 0; !stop->load(); ++seq) {
    etcdserverpb::PutRequest req;
    req.set_key(absl::StrCat("crash/", id, "/", seq % 50));  // overwrites too, not only inserts
    req.set_value(absl::StrCat("w", id, "-", seq));
    etcdserverpb::PutResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(kPutTimeoutMs));
    if (kv->Put(&ctx, req, &resp).ok()) {
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->kv[req.key()] = req.value();
      acked->max_rev = std::max(acked->max_rev, resp.header().revision());
      acked->acks++;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

TEST(CrashTest, AcknowledgedPutsSurviveKillNine) {
  if (ServerKindFromEnv() != ServerKind::kMeridian) GTEST_SKIP() << "meridian-only test";
  ServerProcess server(ServerOptions{.kind = ServerKind::kMeridian, .name = "crash-node"});
  ASSERT_TRUE(server.Start().ok());
  std::mt19937 rng(20261121);
  Acked acked;
  int64_t acks_before = 0;
  for (int round = 0; round < kKills; ++round) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back(Writer, server.endpoint(), w, &stop, &acked);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 800));
    server.Kill();  // SIGKILL while puts are in flight
    stop = true;
    for (auto& t : writers) t.join();
    ASSERT_TRUE(server.Restart().ok()) << server.LogTail();

    auto channel = grpc::CreateChannel(server.endpoint(), grpc::InsecureChannelCredentials());
    auto kv = etcdserverpb::KV::NewStub(channel);
    etcdserverpb::RangeRequest req;
    req.set_key("crash/");
    req.set_range_end("crash0");
    etcdserverpb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ASSERT_TRUE(kv->Range(&ctx, req, &resp).ok());
    std::map<std::string, std::string> present;
    for (const auto& item : resp.kvs()) present[item.key()] = item.value();
    std::lock_guard<std::mutex> lock(acked.mu);
    EXPECT_GE(resp.header().revision(), acked.max_rev) << "revision went backwards, round " << round;
    // A key's newest acknowledged value must be there, unless a later unacknowledged put of
    // the same key (same writer, later seq) landed: values are "w<id>-<seq>", so compare seq.
    for (const auto& [k, v] : acked.kv) {
      auto it = present.find(k);
      ASSERT_NE(it, present.end()) << "acknowledged key lost: " << k << " round " << round;
      int64_t want = std::stoll(v.substr(v.find('-') + 1));
      int64_t got = std::stoll(it->second.substr(it->second.find('-') + 1));
      EXPECT_GE(got, want) << "acknowledged value lost for " << k << " round " << round;
    }
    EXPECT_GT(acked.acks, acks_before) << "no put was acknowledged in round " << round;
    acks_before = acked.acks;
  }
  RecordProperty("acknowledged_puts", static_cast<int>(acked.acks));
  std::printf("acknowledged puts: %lld over %d kills\n", static_cast<long long>(acked.acks), kKills);
}

}  // namespace
}  // namespace meridian::e2e
