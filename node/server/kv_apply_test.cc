// etcd's KV semantics on the store: txn validation, compares, nested txns, range options.
#include "node/server/kv_apply.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/temp_dir.h"

namespace meridian::server {
namespace {

class KvApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mvcc::StoreOptions o;
    o.dir = dir_.path();
    store_ = std::move(*mvcc::Store::Open(o));
  }
  void TearDown() override { store_.reset(); }
  grpc::Status Txn(const etcdserverpb::TxnRequest& r, etcdserverpb::TxnResponse* resp) {
    mvcc::ApplyBatch b(store_.get());
    auto t = b.BeginTxn();
    ApplyContext ctx{&t, [](int64_t id) { return id == 7; }};
    auto st = ApplyTxn(ctx, r, resp);
    resp->mutable_header()->set_revision(t.End());
    EXPECT_TRUE(b.Commit().ok());
    return st;
  }
  void Put(const std::string& k, const std::string& v) {
    etcdserverpb::TxnRequest r;
    auto* p = r.add_success()->mutable_request_put();
    p->set_key(k);
    p->set_value(v);
    etcdserverpb::TxnResponse resp;
    ASSERT_TRUE(Txn(r, &resp).ok());
  }
  TempDir dir_{"kvapply"};
  std::unique_ptr<mvcc::Store> store_;
};

TEST_F(KvApplyTest, CheckTxnLimitsAndDuplicates) {
  etcdserverpb::TxnRequest r;
  for (int i = 0; i < 5; ++i)
    r.add_success()->mutable_request_put()->set_key("k" + std::to_string(i));
  EXPECT_EQ(CheckTxn(r, 4).error_message(), "etcdserver: too many operations in txn request");
  EXPECT_TRUE(CheckTxn(r, 5).ok());
  r.add_success()->mutable_request_put()->set_key("k1");
  EXPECT_EQ(CheckTxn(r, 128).error_message(), "etcdserver: duplicate key given in txn request");
  etcdserverpb::TxnRequest d;
  d.add_success()->mutable_request_put()->set_key("a/1");
  auto* del = d.add_success()->mutable_request_delete_range();
  del->set_key("a/");
  del->set_range_end("a0");
  EXPECT_EQ(CheckTxn(d, 128).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  etcdserverpb::TxnRequest e;
  e.add_compare();
  EXPECT_EQ(CheckTxn(e, 128).error_message(), "etcdserver: key is not provided");
  // The two branches of a nested txn may write the same key.
  etcdserverpb::TxnRequest n;
  auto* nt = n.add_success()->mutable_request_txn();
  nt->add_success()->mutable_request_put()->set_key("x");
  nt->add_failure()->mutable_request_put()->set_key("x");
  EXPECT_TRUE(CheckTxn(n, 128).ok());
  n.add_success()->mutable_request_put()->set_key("x");
  EXPECT_FALSE(CheckTxn(n, 128).ok());
}

TEST_F(KvApplyTest, ComparesAndBranches) {
  Put("a", "1");
  etcdserverpb::TxnRequest r;
  auto* c = r.add_compare();
  c->set_key("a");
  c->set_target(etcdserverpb::Compare::VALUE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_value("1");
  auto* p = r.add_success()->mutable_request_put();
  p->set_key("b");
  p->set_value("yes");
  r.add_failure()->mutable_request_range()->set_key("a");
  etcdserverpb::TxnResponse resp;
  ASSERT_TRUE(Txn(r, &resp).ok());
  EXPECT_TRUE(resp.succeeded());
  EXPECT_EQ(resp.header().revision(), 3);
  // Same txn again: the compare still holds (value unchanged).
  c->set_value("2");
  etcdserverpb::TxnResponse resp2;
  ASSERT_TRUE(Txn(r, &resp2).ok());
  EXPECT_FALSE(resp2.succeeded());
  EXPECT_EQ(resp2.header().revision(), 3);  // read-only branch: no new revision
  ASSERT_EQ(resp2.responses_size(), 1);
  EXPECT_EQ(resp2.responses(0).response_range().kvs(0).value(), "1");
}

TEST_F(KvApplyTest, CompareOnMissingKeyAndRanges) {
  Put("p/1", "x");
  Put("p/2", "x");
  etcdserverpb::TxnRequest r;
  auto* c = r.add_compare();
  c->set_key("missing");
  c->set_target(etcdserverpb::Compare::VALUE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_value("");
  etcdserverpb::TxnResponse resp;
  ASSERT_TRUE(Txn(r, &resp).ok());
  EXPECT_FALSE(resp.succeeded());  // a missing key's value compares false, even with ""
  c->set_target(etcdserverpb::Compare::CREATE);
  c->set_create_revision(0);
  etcdserverpb::TxnResponse resp2;
  ASSERT_TRUE(Txn(r, &resp2).ok());
  EXPECT_TRUE(resp2.succeeded());  // a missing key has create_revision 0
  etcdserverpb::TxnRequest rr;
  auto* rc = rr.add_compare();
  rc->set_key("p/");
  rc->set_range_end("p0");
  rc->set_target(etcdserverpb::Compare::VALUE);
  rc->set_result(etcdserverpb::Compare::EQUAL);
  rc->set_value("x");
  etcdserverpb::TxnResponse resp3;
  ASSERT_TRUE(Txn(rr, &resp3).ok());
  EXPECT_TRUE(resp3.succeeded());
}

TEST_F(KvApplyTest, NestedComparesSeeTheStateBeforeTheTxn) {
  etcdserverpb::TxnRequest r;
  auto* p = r.add_success()->mutable_request_put();
  p->set_key("k");
  p->set_value("new");
  auto* nested = r.add_success()->mutable_request_txn();
  auto* c = nested->add_compare();
  c->set_key("k");
  c->set_target(etcdserverpb::Compare::VERSION);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_version(0);  // true before the outer put
  nested->add_success()->mutable_request_range()->set_key("k");
  etcdserverpb::TxnResponse resp;
  ASSERT_TRUE(Txn(r, &resp).ok());
  ASSERT_EQ(resp.responses_size(), 2);
  const auto& nr = resp.responses(1).response_txn();
  EXPECT_TRUE(nr.succeeded());
  // ... while its reads see the outer put.
  EXPECT_EQ(nr.responses(0).response_range().kvs(0).value(), "new");
}

TEST_F(KvApplyTest, FailingPrecheckChangesNothing) {
  etcdserverpb::TxnRequest r;
  auto* p = r.add_success()->mutable_request_put();
  p->set_key("a");
  p->set_value("1");
  auto* q = r.add_success()->mutable_request_put();
  q->set_key("b");
  q->set_lease(99);  // no such lease
  etcdserverpb::TxnResponse resp;
  EXPECT_EQ(Txn(r, &resp).error_message(), "etcdserver: requested lease not found");
  EXPECT_EQ(store_->rev(), 1);
  q->set_lease(7);
  etcdserverpb::TxnResponse ok;
  EXPECT_TRUE(Txn(r, &ok).ok());
  EXPECT_EQ(store_->rev(), 2);
}

TEST_F(KvApplyTest, RangeSortLimitAndFilters) {
  Put("c", "1");
  Put("a", "3");
  Put("b", "2");
  Put("a", "4");
  auto view = store_->View();
  etcdserverpb::RangeRequest r;
  r.set_key("a");
  r.set_range_end("z");
  r.set_limit(2);
  etcdserverpb::RangeResponse resp;
  ASSERT_TRUE(DoRange(*view, r, &resp).ok());
  EXPECT_EQ(resp.kvs_size(), 2);
  EXPECT_TRUE(resp.more());
  EXPECT_EQ(resp.count(), 3);
  r.set_limit(0);
  r.set_sort_target(etcdserverpb::RangeRequest::VALUE);
  r.set_sort_order(etcdserverpb::RangeRequest::DESCEND);
  etcdserverpb::RangeResponse sorted;
  ASSERT_TRUE(DoRange(*view, r, &sorted).ok());
  ASSERT_EQ(sorted.kvs_size(), 3);
  EXPECT_EQ(sorted.kvs(0).key(), "a");
  EXPECT_EQ(sorted.kvs(2).key(), "c");
  etcdserverpb::RangeRequest f;
  f.set_key("a");
  f.set_range_end("z");
  f.set_min_mod_revision(4);
  etcdserverpb::RangeResponse filtered;
  ASSERT_TRUE(DoRange(*view, f, &filtered).ok());
  EXPECT_EQ(filtered.kvs_size(), 2);  // b@4, a@5
  EXPECT_EQ(filtered.count(), 3);     // count is before filtering, as in etcd
  f.set_revision(100);
  etcdserverpb::RangeResponse future;
  EXPECT_EQ(DoRange(*view, f, &future).error_message(),
            "etcdserver: mvcc: required revision is a future revision");
}

}  // namespace
}  // namespace meridian::server
