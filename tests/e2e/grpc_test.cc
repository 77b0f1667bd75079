// gRPC-level e2e checks for requests etcdctl 3.4 cannot send: empty keys, count_only, min/max
// revision filters, nested txns, and Watch with client watch ids, progress requests, filters,
// cancellation and fragmentation. Runs against meridian-node or etcd like the etcdctl suite.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "harness.h"
#include "test_util.h"

namespace meridian::e2e {
namespace {

using etcdserverpb::DeleteRangeRequest;
using etcdserverpb::DeleteRangeResponse;
using etcdserverpb::PutRequest;
using etcdserverpb::PutResponse;
using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;
using etcdserverpb::TxnRequest;
using etcdserverpb::TxnResponse;
using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

constexpr int kRpcTimeoutMs = 10000;

// etcd splits a fragment-enabled watch response once it exceeds --max-request-bytes plus its
// fixed 512 KiB gRPC overhead allowance.
constexpr size_t kMaxRequestBytes = 100000;
constexpr size_t kFragmentLimitBytes = kMaxRequestBytes + 512 * 1024;
struct GrpcFlags {
  static std::vector<std::string> Flags() {
    return {absl::StrCat("--max-request-bytes=", kMaxRequestBytes)};
  }
};

class GrpcTest : public ServerSuite<GrpcFlags> {
 protected:
  void SetUp() override {
    ServerSuite<GrpcFlags>::SetUp();
    if (HasFatalFailure()) return;
    channel_ = grpc::CreateChannel(server().endpoint(), grpc::InsecureChannelCredentials());
    kv_ = etcdserverpb::KV::NewStub(channel_);
    watch_ = etcdserverpb::Watch::NewStub(channel_);
  }

  static void SetDeadline(grpc::ClientContext* ctx, int timeout_ms = kRpcTimeoutMs) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  }

  grpc::Status Put(const std::string& key, const std::string& value, PutResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    PutRequest req;
    req.set_key(key);
    req.set_value(value);
    return kv_->Put(&ctx, req, resp);
  }
  int64_t MustPut(const std::string& key, const std::string& value) {
    PutResponse resp;
    grpc::Status s = Put(key, value, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.header().revision();
  }
  grpc::Status Range(const RangeRequest& req, RangeResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return kv_->Range(&ctx, req, resp);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch_;
};

std::string PrefixEnd(std::string prefix) {
  prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

TEST_F(GrpcTest, EmptyKeyIsInvalidArgument) {
  PutResponse resp;
  grpc::Status s = Put("", "v", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "etcdserver: key is not provided");
  RangeRequest rreq;
  RangeResponse rresp;
  s = Range(rreq, &rresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "etcdserver: key is not provided");
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  DeleteRangeRequest dreq;
  DeleteRangeResponse dresp;
  s = kv_->DeleteRange(&ctx, dreq, &dresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "etcdserver: key is not provided");
}

// More payload than raft's uncommitted-bytes budget (64 MiB) passes through, one put at a time:
// the budget is released as entries are applied (a regression once leaked it, and puts then
// failed with "too many requests").
TEST_F(GrpcTest, PayloadBeyondTheUncommittedBudgetKeepsFlowing) {
  const std::string value(90000, 'x');
  for (int i = 0; i < 900; ++i) {
    PutResponse resp;
    grpc::Status s = Put(absl::StrCat("big/", i % 10), value, &resp);
    ASSERT_TRUE(s.ok()) << "put " << i << ": " << s.error_message();
  }
}

TEST_F(GrpcTest, CountOnlyKeysOnlyAndRevisionFilters) {
  const int64_t r1 = MustPut("gf/a", "1");
  const int64_t r2 = MustPut("gf/b", "2");
  const int64_t r3 = MustPut("gf/c", "3");
  const int64_t r4 = MustPut("gf/a", "4");  // a: create r1, mod r4
  RangeRequest req;
  req.set_key("gf/");
  req.set_range_end(PrefixEnd("gf/"));
  req.set_count_only(true);
  RangeResponse resp;
  ASSERT_TRUE(Range(req, &resp).ok());
  EXPECT_EQ(resp.count(), 3);
  EXPECT_EQ(resp.kvs_size(), 0);
  EXPECT_FALSE(resp.more());
  EXPECT_EQ(resp.header().revision(), r4);

  req.set_count_only(false);
  req.set_keys_only(true);
  req.set_limit(2);
  ASSERT_TRUE(Range(req, &resp).ok());
  ASSERT_EQ(resp.kvs_size(), 2);
  EXPECT_EQ(resp.kvs(0).key(), "gf/a");
  EXPECT_EQ(resp.kvs(0).value(), "");
  EXPECT_EQ(resp.kvs(0).mod_revision(), r4);
  EXPECT_TRUE(resp.more());
  EXPECT_EQ(resp.count(), 3);

  auto keys = [&](const RangeRequest& r) {
    RangeResponse out;
    grpc::Status s = Range(r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::string joined;
    for (const auto& kv : out.kvs()) absl::StrAppend(&joined, kv.key(), ",");
    return joined;
  };
  RangeRequest f;
  f.set_key("gf/");
  f.set_range_end(PrefixEnd("gf/"));
  f.set_min_mod_revision(r3);
  EXPECT_EQ(keys(f), "gf/a,gf/c,");
  f.set_min_mod_revision(0);
  f.set_max_mod_revision(r3);
  EXPECT_EQ(keys(f), "gf/b,gf/c,");
  f.set_max_mod_revision(0);
  f.set_min_create_revision(r2);
  EXPECT_EQ(keys(f), "gf/b,gf/c,");
  f.set_min_create_revision(0);
  f.set_max_create_revision(r1);
  EXPECT_EQ(keys(f), "gf/a,");
  f.set_max_create_revision(r2);
  f.set_min_create_revision(r2);
  EXPECT_EQ(keys(f), "gf/b,");
  // Filters apply to the state at the requested revision.
  RangeRequest old = f;
  old.set_min_create_revision(0);
  old.set_max_create_revision(0);
  old.set_revision(r3);
  old.set_max_mod_revision(r1);
  EXPECT_EQ(keys(old), "gf/a,");
}

TEST_F(GrpcTest, NestedTxnAndErrorCodes) {
  MustPut("gt/a", "1");
  TxnRequest req;
  auto* cmp = req.add_compare();
  cmp->set_key("gt/a");
  cmp->set_target(etcdserverpb::Compare::VALUE);
  cmp->set_result(etcdserverpb::Compare::EQUAL);
  cmp->set_value("1");
  TxnRequest* inner = req.add_success()->mutable_request_txn();
  auto* inner_cmp = inner->add_compare();
  inner_cmp->set_key("gt/missing");
  inner_cmp->set_target(etcdserverpb::Compare::CREATE);
  inner_cmp->set_result(etcdserverpb::Compare::EQUAL);
  inner_cmp->set_create_revision(0);
  auto* put = inner->add_success()->mutable_request_put();
  put->set_key("gt/b");
  put->set_value("nested");
  TxnResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status s = kv_->Txn(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resp.succeeded());
  ASSERT_EQ(resp.responses_size(), 1);
  ASSERT_TRUE(resp.responses(0).has_response_txn());
  EXPECT_TRUE(resp.responses(0).response_txn().succeeded());
  RangeRequest get;
  get.set_key("gt/b");
  RangeResponse got;
  ASSERT_TRUE(Range(get, &got).ok());
  ASSERT_EQ(got.kvs_size(), 1);
  EXPECT_EQ(got.kvs(0).value(), "nested");
  EXPECT_EQ(got.kvs(0).mod_revision(), resp.header().revision());

  RangeRequest future;
  future.set_key("gt/a");
  future.set_revision(resp.header().revision() + 100);
  s = Range(future, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(s.error_message(), "etcdserver: mvcc: required revision is a future revision");

  PutRequest with_lease;
  with_lease.set_key("gt/c");
  with_lease.set_lease(0x1234abcd);
  PutResponse presp;
  grpc::ClientContext lctx;
  SetDeadline(&lctx);
  s = kv_->Put(&lctx, with_lease, &presp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "etcdserver: requested lease not found");
}

// A synchronous bidi Watch stream with a hard deadline, so a missing response fails the test
// instead of hanging it.
class WatchStream {
 public:
  explicit WatchStream(etcdserverpb::Watch::Stub* stub, int timeout_ms = 15000) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    stream_ = stub->Watch(&ctx_);
  }
  ~WatchStream() { ctx_.TryCancel(); }
  bool Send(const WatchRequest& req) { return stream_->Write(req); }
  bool Read(WatchResponse* resp) { return stream_->Read(resp); }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<WatchRequest, WatchResponse>> stream_;
};

TEST_F(GrpcTest, WatchClientIdsProgressFiltersAndCancel) {
  const int64_t start = MustPut("gw/seed", "0") + 1;
  WatchStream stream(watch_.get());
  WatchRequest create;
  auto* c = create.mutable_create_request();
  c->set_key("gw/k");
  c->set_start_revision(start);
  c->set_watch_id(42);
  ASSERT_TRUE(stream.Send(create));
  WatchResponse resp;
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_TRUE(resp.created()) << resp.ShortDebugString();
  EXPECT_EQ(resp.watch_id(), 42) << resp.ShortDebugString();
  EXPECT_EQ(resp.events_size(), 0);

  // Reusing a live id on the same stream is refused: created+canceled, watch_id -1.
  ASSERT_TRUE(stream.Send(create));
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_EQ(resp.watch_id(), -1) << resp.ShortDebugString();
  EXPECT_TRUE(resp.created());
  EXPECT_TRUE(resp.canceled());
  EXPECT_EQ(resp.cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");

  // A second watcher that ignores PUTs (server-side filter), with prev_kv.
  WatchRequest create2;
  auto* c2 = create2.mutable_create_request();
  c2->set_key("gw/");
  c2->set_range_end(PrefixEnd("gw/"));
  c2->set_start_revision(start);
  c2->set_watch_id(7);
  c2->set_prev_kv(true);
  c2->add_filters(etcdserverpb::WatchCreateRequest::NOPUT);
  ASSERT_TRUE(stream.Send(create2));
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_TRUE(resp.created());
  EXPECT_EQ(resp.watch_id(), 7);

  const int64_t put_rev = MustPut("gw/k", "v1");
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_EQ(resp.watch_id(), 42);
  ASSERT_EQ(resp.events_size(), 1);
  EXPECT_EQ(resp.events(0).type(), mvccpb::Event::PUT);
  EXPECT_EQ(resp.events(0).kv().mod_revision(), put_rev);

  grpc::ClientContext dctx;
  SetDeadline(&dctx);
  DeleteRangeRequest del;
  del.set_key("gw/k");
  DeleteRangeResponse dresp;
  ASSERT_TRUE(kv_->DeleteRange(&dctx, del, &dresp).ok());
  // Both watchers see the delete; order between watchers is not defined.
  bool saw42 = false, saw7 = false;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(stream.Read(&resp));
    ASSERT_EQ(resp.events_size(), 1);
    EXPECT_EQ(resp.events(0).type(), mvccpb::Event::DELETE);
    EXPECT_EQ(resp.events(0).kv().mod_revision(), dresp.header().revision());
    if (resp.watch_id() == 7) {
      saw7 = true;
      ASSERT_TRUE(resp.events(0).has_prev_kv());
      EXPECT_EQ(resp.events(0).prev_kv().value(), "v1");
    } else {
      EXPECT_EQ(resp.watch_id(), 42);
      saw42 = true;
    }
  }
  EXPECT_TRUE(saw42 && saw7);

  // Progress request: an event-less response carrying the current revision.
  WatchRequest progress;
  progress.mutable_progress_request();
  ASSERT_TRUE(stream.Send(progress));
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_EQ(resp.events_size(), 0);
  EXPECT_FALSE(resp.created());
  EXPECT_FALSE(resp.canceled());
  EXPECT_EQ(resp.header().revision(), dresp.header().revision());
  EXPECT_EQ(resp.watch_id(), -1) << "progress responses are not tied to one watcher";

  WatchRequest cancel;
  cancel.mutable_cancel_request()->set_watch_id(42);
  ASSERT_TRUE(stream.Send(cancel));
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_TRUE(resp.canceled());
  EXPECT_EQ(resp.watch_id(), 42);
}

TEST_F(GrpcTest, WatchCompactedRevision) {
  int64_t rev = 0;
  for (int i = 0; i < 3; ++i) rev = MustPut("gc/k", absl::StrCat(i));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  etcdserverpb::CompactionRequest creq;
  creq.set_revision(rev);
  etcdserverpb::CompactionResponse cresp;
  ASSERT_TRUE(kv_->Compact(&ctx, creq, &cresp).ok());
  WatchStream stream(watch_.get());
  WatchRequest create;
  create.mutable_create_request()->set_key("gc/k");
  create.mutable_create_request()->set_start_revision(rev - 1);
  ASSERT_TRUE(stream.Send(create));
  WatchResponse resp;
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_TRUE(resp.created());
  ASSERT_TRUE(stream.Read(&resp));
  EXPECT_TRUE(resp.canceled());
  EXPECT_EQ(resp.compact_revision(), rev);
  // etcd 3.4 leaves cancel_reason empty and the header revision 0 here.
  EXPECT_EQ(resp.header().revision(), 0) << resp.ShortDebugString();
}

TEST_F(GrpcTest, WatchFragmentsLargeRevisions) {
  // 8 values of 90000 bytes, then one DeleteRange of all of them: a single revision whose 8
  // DELETE events with prev_kv add up to ~720 KB, more than the fragment limit, although the
  // request itself is tiny. With fragment=true it must arrive in several pieces.
  constexpr size_t kValueBytes = 90000;
  static_assert(8 * kValueBytes > kFragmentLimitBytes && kValueBytes < kMaxRequestBytes - 1000);
  for (int i = 0; i < 8; ++i) {
    MustPut(absl::StrCat("gfr/", i), std::string(kValueBytes, static_cast<char>('a' + i)));
  }
  RangeRequest probe;
  probe.set_key("gfr/0");
  RangeResponse probe_resp;
  ASSERT_TRUE(Range(probe, &probe_resp).ok());
  // Start at the next revision so the events take the live path. (etcd 3.4 sends history that
  // races with the "created" response unfragmented.)
  WatchStream stream(watch_.get());
  WatchRequest create;
  create.mutable_create_request()->set_key("gfr/");
  create.mutable_create_request()->set_range_end(PrefixEnd("gfr/"));
  create.mutable_create_request()->set_start_revision(probe_resp.header().revision() + 1);
  create.mutable_create_request()->set_prev_kv(true);
  create.mutable_create_request()->set_fragment(true);
  ASSERT_TRUE(stream.Send(create));
  WatchResponse resp;
  ASSERT_TRUE(stream.Read(&resp));
  ASSERT_TRUE(resp.created()) << resp.ShortDebugString();
  const int64_t watch_id = resp.watch_id();

  grpc::ClientContext dctx;
  SetDeadline(&dctx);
  DeleteRangeRequest del;
  del.set_key("gfr/");
  del.set_range_end(PrefixEnd("gfr/"));
  DeleteRangeResponse dresp;
  ASSERT_TRUE(kv_->DeleteRange(&dctx, del, &dresp).ok());
  ASSERT_EQ(dresp.deleted(), 8);

  int events = 0, responses = 0, fragments = 0;
  while (events < 8 && responses < 20) {
    ASSERT_TRUE(stream.Read(&resp)) << "after " << events << " events";
    ++responses;
    EXPECT_EQ(resp.watch_id(), watch_id);
    if (resp.fragment()) ++fragments;
    EXPECT_LT(resp.ByteSizeLong(), kFragmentLimitBytes) << "a piece is larger than the limit";
    for (const auto& ev : resp.events()) {
      EXPECT_EQ(ev.type(), mvccpb::Event::DELETE);
      EXPECT_EQ(ev.kv().mod_revision(), dresp.header().revision());
      EXPECT_EQ(ev.prev_kv().value().size(), kValueBytes);
    }
    events += resp.events_size();
  }
  EXPECT_EQ(events, 8);
  EXPECT_GE(responses, 2);
  EXPECT_EQ(fragments, responses - 1) << "all pieces but the last carry fragment=true";
  EXPECT_FALSE(resp.fragment()) << "the last piece must not be marked as a fragment";
}

}  // namespace
}  // namespace meridian::e2e
