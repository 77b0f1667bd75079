// meridian-node as a process: flags, HTTP endpoints and metric names, leases across kill -9,
// and garbage on the gRPC wire. Runs against etcd too where the behaviour is etcd's.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "harness.h"

namespace meridian::e2e {
namespace {

CommandResult Curl(const std::string& url) {
  return RunCommand({"/usr/bin/curl", "-s", "-i", "--max-time", "5", url}, "", 10000);
}

TEST(NodeFlagsTest, UnknownOrMalformedFlagExitsWithTwo) {
  if (ServerKindFromEnv() != ServerKind::kMeridian) GTEST_SKIP() << "meridian's own exit codes";
  const std::string bin = ServerBinary(ServerKind::kMeridian);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {bin, "--no-such-flag"},
           {bin, "--max-txn-ops=many"},
           {bin, "--quota-backend-bytes", "12abc"},
           {bin, "--listen-client-urls", "http://127.0.0.1"}}) {
    CommandResult r = RunCommand(args, "", 10000);
    EXPECT_EQ(r.exit_code, 2) << args[1] << ": " << r.stderr_text;
    EXPECT_FALSE(r.stderr_text.empty()) << args[1];
  }
  CommandResult help = RunCommand({bin, "--help"}, "", 10000);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.stdout_text.find("--quota-backend-bytes"), std::string::npos);
}

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ServerKindFromEnv() != ServerKind::kMeridian) GTEST_SKIP() << "meridian-only";
    server_ = std::make_unique<ServerProcess>(ServerOptions{.kind = ServerKind::kMeridian});
    ASSERT_TRUE(server_->Start().ok());
  }
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(NodeTest, HttpEndpointsOnClientAndMetricsPorts) {
  for (uint16_t port : {server_->client_port(), server_->metrics_port()}) {
    std::string base = absl::StrCat("http://127.0.0.1:", port);
    CommandResult health = Curl(base + "/health");
    EXPECT_NE(health.stdout_text.find("200 OK"), std::string::npos) << health.stdout_text;
    EXPECT_NE(health.stdout_text.find("{\"health\":\"true\",\"reason\":\"\"}"), std::string::npos);
    CommandResult version = Curl(base + "/version");
    EXPECT_NE(version.stdout_text.find("\"etcdserver\":\"3.5."), std::string::npos)
        << version.stdout_text;
    ASSERT_EQ(server_->Ctl({"put", "m", "1"}).exit_code, 0);
    CommandResult metrics = Curl(base + "/metrics");
    for (const char* name :
         {"etcd_server_has_leader 1", "etcd_mvcc_db_total_size_in_bytes",
          "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}",
          "etcd_disk_backend_commit_duration_seconds_count", "etcd_debugging_mvcc_keys_total",
          "etcd_debugging_mvcc_watcher_total", "etcd_server_proposals_committed_total",
          "etcd_server_quota_backend_bytes"}) {
      EXPECT_NE(metrics.stdout_text.find(name), std::string::npos) << name;
    }
    EXPECT_EQ(Curl(base + "/nope").stdout_text.find("404"), 9u);
  }
}

TEST_F(NodeTest, LeasesSurviveKillNine) {
  CommandResult grant = server_->Ctl({"lease", "grant", "600"});
  ASSERT_EQ(grant.exit_code, 0) << grant.stderr_text;
  // "lease <hex id> granted with TTL(600s)"
  std::string id = grant.stdout_text.substr(6, grant.stdout_text.find(' ', 6) - 6);
  ASSERT_EQ(server_->Ctl({"put", "leased", "v", "--lease", id}).exit_code, 0);
  server_->Kill();
  ASSERT_TRUE(server_->Restart().ok());
  CommandResult ttl = server_->Ctl({"lease", "timetolive", id, "--keys"});
  EXPECT_NE(ttl.stdout_text.find("granted with TTL(600s)"), std::string::npos) << ttl.stdout_text;
  EXPECT_NE(ttl.stdout_text.find("attached keys([leased])"), std::string::npos) << ttl.stdout_text;
  ASSERT_EQ(server_->Ctl({"lease", "revoke", id}).exit_code, 0);
  EXPECT_EQ(server_->Ctl({"get", "leased"}).stdout_text, "");
}

double MetricValue(const std::string& text, const std::string& name) {
  size_t pos = 0;
  while ((pos = text.find(name + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + name.size() + 1));
    pos += name.size();
  }
  return -1;
}

// Group commit: concurrent puts share fsyncs, so there are fewer WAL fsyncs than puts.
TEST_F(NodeTest, ConcurrentPutsShareFsyncs) {
  std::string url = absl::StrCat("http://127.0.0.1:", server_->metrics_port(), "/metrics");
  auto fsyncs = [&] {
    return MetricValue(Curl(url).stdout_text, "etcd_disk_wal_fsync_duration_seconds_count");
  };
  double before = fsyncs();
  ASSERT_GE(before, 0);
  constexpr int kThreads = 16, kPuts = 50;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto channel = grpc::CreateChannel(server_->endpoint(), grpc::InsecureChannelCredentials());
      auto kv = etcdserverpb::KV::NewStub(channel);
      for (int i = 0; i < kPuts; ++i) {
        etcdserverpb::PutRequest req;
        req.set_key(absl::StrCat("gc/", t, "/", i));
        req.set_value("v");
        etcdserverpb::PutResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        if (kv->Put(&ctx, req, &resp).ok()) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(ok.load(), kThreads * kPuts);
  double used = fsyncs() - before;
  EXPECT_GT(used, 0);
  EXPECT_LT(used, kThreads * kPuts) << "every put had its own fsync";
  std::printf("%d concurrent puts took %.0f WAL fsyncs\n", kThreads * kPuts, used);
}

// Random bytes as the request message of every unary method and as watch/keepalive stream
// messages: the server answers with errors (or treats them as what they decode to) and keeps
// serving; it never crashes.
TEST_F(NodeTest, GarbageRequestsDoNotCrash) {
  auto channel = grpc::CreateChannel(server_->endpoint(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  const char* methods[] = {
      "/etcdserverpb.KV/Range",           "/etcdserverpb.KV/Put",
      "/etcdserverpb.KV/DeleteRange",     "/etcdserverpb.KV/Txn",
      "/etcdserverpb.KV/Compact",         "/etcdserverpb.Lease/LeaseGrant",
      "/etcdserverpb.Lease/LeaseRevoke",  "/etcdserverpb.Lease/LeaseTimeToLive",
      "/etcdserverpb.Maintenance/Status", "/etcdserverpb.Maintenance/Alarm",
      "/etcdserverpb.Maintenance/HashKV", "/etcdserverpb.Cluster/MemberList"};
  std::mt19937_64 rng(7);
  int answered = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    // Mostly keep it plausible protobuf: a small field tag first.
    if (!bytes.empty() && rng() % 2) bytes[0] = static_cast<char>((1 + rng() % 12) << 3 | (rng() % 3));
    grpc::ByteBuffer req, resp;
    grpc::Slice slice(bytes);
    req = grpc::ByteBuffer(&slice, 1);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&ctx, methods[i % std::size(methods)], grpc::StubOptions(), &req, &resp,
                   [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     done = true;
                     cv.notify_all();
                   });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
        status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      ++answered;
    }
  }
  EXPECT_EQ(answered, 600);
  EXPECT_TRUE(server_->Running());
  EXPECT_EQ(server_->Ctl({"endpoint", "health"}).exit_code, 0);
}

}  // namespace
}  // namespace meridian::e2e
