// etcd's KV semantics on top of the MVCC store: Range options (sorting, filters, limit/more),
// Put/DeleteRange/Txn validation and application. Shared by the read path (on a ReadView) and
// the apply step (on a WriteTxn).
#pragma once

#include <grpcpp/support/status.h>

#include <algorithm>
#include <functional>

#include "etcdserverpb/rpc.pb.h"
#include "node/mvcc/store.h"
#include "node/server/errors.h"

namespace meridian::server {

// Validation done before a request is proposed (etcd's checkPutRequest and friends).
grpc::Status CheckRange(const etcdserverpb::RangeRequest& r);
grpc::Status CheckPut(const etcdserverpb::PutRequest& r);
grpc::Status CheckDeleteRange(const etcdserverpb::DeleteRangeRequest& r);
grpc::Status CheckTxn(const etcdserverpb::TxnRequest& r, uint32_t max_txn_ops);
bool TxnHasPuts(const etcdserverpb::TxnRequest& r);
bool TxnIsReadOnly(const etcdserverpb::TxnRequest& r);

// Range with every RangeRequest option. Reader is mvcc::ReadView or mvcc::WriteTxn.
template <typename Reader>
grpc::Status DoRange(Reader& reader, const etcdserverpb::RangeRequest& r,
                     etcdserverpb::RangeResponse* resp) {
  int64_t limit = r.limit();
  const bool fetch_all = r.sort_order() != etcdserverpb::RangeRequest::NONE ||
                         r.min_mod_revision() != 0 || r.max_mod_revision() != 0 ||
                         r.min_create_revision() != 0 || r.max_create_revision() != 0;
  if (fetch_all) limit = 0;
  if (limit > 0) limit++;  // one extra tells whether there is more
  mvcc::RangeOptions opts;
  opts.rev = r.revision();
  opts.limit = limit;
  opts.count_only = r.count_only();
  opts.keys_only = r.keys_only();
  auto rr = reader.Range(r.key(), r.range_end(), opts);
  if (!rr.ok()) return ToGrpc(rr.status());
  auto& kvs = rr->kvs;
  auto prune = [&](auto drop) {
    kvs.erase(std::remove_if(kvs.begin(), kvs.end(), drop), kvs.end());
  };
  if (r.max_mod_revision() != 0)
    prune([&](const auto& kv) { return kv.mod_revision() > r.max_mod_revision(); });
  if (r.min_mod_revision() != 0)
    prune([&](const auto& kv) { return kv.mod_revision() < r.min_mod_revision(); });
  if (r.max_create_revision() != 0)
    prune([&](const auto& kv) { return kv.create_revision() > r.max_create_revision(); });
  if (r.min_create_revision() != 0)
    prune([&](const auto& kv) { return kv.create_revision() < r.min_create_revision(); });
  auto order = r.sort_order();
  // Results come sorted by key; other targets sort ascending unless told otherwise (etcd).
  if (r.sort_target() != etcdserverpb::RangeRequest::KEY &&
      order == etcdserverpb::RangeRequest::NONE) {
    order = etcdserverpb::RangeRequest::ASCEND;
  }
  if (order != etcdserverpb::RangeRequest::NONE) {
    std::function<bool(const mvccpb::KeyValue&, const mvccpb::KeyValue&)> less;
    switch (r.sort_target()) {
      case etcdserverpb::RangeRequest::KEY:
        less = [](const auto& a, const auto& b) { return a.key() < b.key(); };
        break;
      case etcdserverpb::RangeRequest::VERSION:
        less = [](const auto& a, const auto& b) { return a.version() < b.version(); };
        break;
      case etcdserverpb::RangeRequest::CREATE:
        less = [](const auto& a, const auto& b) {
          return a.create_revision() < b.create_revision();
        };
        break;
      case etcdserverpb::RangeRequest::MOD:
        less = [](const auto& a, const auto& b) { return a.mod_revision() < b.mod_revision(); };
        break;
      case etcdserverpb::RangeRequest::VALUE:
        less = [](const auto& a, const auto& b) { return a.value() < b.value(); };
        break;
      default:
        break;
    }
    if (less) {
      // Stable, so ties keep key order, as Go's sort does for the small inputs etcd sorts.
      if (order == etcdserverpb::RangeRequest::DESCEND) {
        std::stable_sort(kvs.begin(), kvs.end(),
                         [&](const auto& a, const auto& b) { return less(b, a); });
      } else {
        std::stable_sort(kvs.begin(), kvs.end(), less);
      }
    }
  }
  if (r.limit() > 0 && static_cast<int64_t>(kvs.size()) > r.limit()) {
    kvs.resize(r.limit());
    resp->set_more(true);
  }
  resp->mutable_header()->set_revision(rr->rev);
  resp->set_count(rr->count);
  for (auto& kv : kvs) *resp->add_kvs() = std::move(kv);
  return grpc::Status::OK;
}

// Application of writes inside one store transaction. `lease_exists` answers whether a lease
// is granted (the lessor's view at this point of the log).
struct ApplyContext {
  mvcc::WriteTxn* txn;
  std::function<bool(int64_t)> lease_exists;
};

grpc::Status ApplyPut(ApplyContext& ctx, const etcdserverpb::PutRequest& r,
                      etcdserverpb::PutResponse* resp);
grpc::Status ApplyDeleteRange(ApplyContext& ctx, const etcdserverpb::DeleteRangeRequest& r,
                              etcdserverpb::DeleteRangeResponse* resp);
grpc::Status ApplyTxn(ApplyContext& ctx, const etcdserverpb::TxnRequest& r,
                      etcdserverpb::TxnResponse* resp);

}  // namespace meridian::server
