#include "node/server/kv_apply.h"

#include <set>
#include <vector>

#include "node/mvcc/keys.h"

namespace meridian::server {

grpc::Status CheckRange(const etcdserverpb::RangeRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  return grpc::Status::OK;
}

grpc::Status CheckPut(const etcdserverpb::PutRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  if (r.ignore_value() && !r.value().empty()) return ErrValueProvided();
  if (r.ignore_lease() && r.lease() != 0) return ErrLeaseProvided();
  return grpc::Status::OK;
}

grpc::Status CheckDeleteRange(const etcdserverpb::DeleteRangeRequest& r) {
  if (r.key().empty()) return ErrEmptyKey();
  return grpc::Status::OK;
}

namespace {

grpc::Status CheckRequestOp(const etcdserverpb::RequestOp& op, uint32_t max_txn_ops) {
  switch (op.request_case()) {
    case etcdserverpb::RequestOp::kRequestRange:
      return CheckRange(op.request_range());
    case etcdserverpb::RequestOp::kRequestPut:
      return CheckPut(op.request_put());
    case etcdserverpb::RequestOp::kRequestDeleteRange:
      return CheckDeleteRange(op.request_delete_range());
    case etcdserverpb::RequestOp::kRequestTxn:
      return CheckTxn(op.request_txn(), max_txn_ops);
    default:
      return grpc::Status::OK;  // etcd ignores an empty op
  }
}

// Keys a branch writes: puts must be unique and must not fall inside a deleted range (etcd's
// checkIntervals).
struct Writes {
  std::set<std::string> puts;
  std::vector<std::pair<std::string, std::string>> deletes;  // key, range_end
};

bool InDeletes(const Writes& w, const std::string& key) {
  for (const auto& [k, e] : w.deletes) {
    if (mvcc::KeyRange(k, e).Contains(key)) return true;
  }
  return false;
}

grpc::Status CollectWrites(const google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops,
                           Writes* out) {
  Writes nested_union;
  for (const auto& op : ops) {
    if (op.has_request_txn()) {
      Writes s, f;
      auto st = CollectWrites(op.request_txn().success(), &s);
      if (!st.ok()) return st;
      st = CollectWrites(op.request_txn().failure(), &f);
      if (!st.ok()) return st;
      // Only one nested branch runs, so the two may write the same keys.
      for (auto* b : {&s, &f}) {
        for (const auto& k : b->puts) {
          if (out->puts.count(k) > 0) return ErrDuplicateKey();
          nested_union.puts.insert(k);
        }
        for (const auto& d : b->deletes) nested_union.deletes.push_back(d);
      }
    }
  }
  for (const auto& op : ops) {
    if (op.has_request_put()) {
      const auto& k = op.request_put().key();
      if (!out->puts.insert(k).second || nested_union.puts.count(k) > 0) return ErrDuplicateKey();
    } else if (op.has_request_delete_range()) {
      const auto& d = op.request_delete_range();
      out->deletes.emplace_back(d.key(), d.range_end());
    }
  }
  for (const auto& k : out->puts) {
    if (InDeletes(*out, k) || InDeletes(nested_union, k)) return ErrDuplicateKey();
  }
  for (const auto& k : nested_union.puts) {
    if (InDeletes(*out, k)) return ErrDuplicateKey();
    out->puts.insert(k);
  }
  for (const auto& d : nested_union.deletes) out->deletes.push_back(d);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status CheckTxn(const etcdserverpb::TxnRequest& r, uint32_t max_txn_ops) {
  int64_t opc = std::max({r.compare_size(), r.success_size(), r.failure_size()});
  if (opc > static_cast<int64_t>(max_txn_ops)) return ErrTooManyOps();
  for (const auto& c : r.compare()) {
    if (c.key().empty()) return ErrEmptyKey();
  }
  for (const auto* branch : {&r.success(), &r.failure()}) {
    for (const auto& op : *branch) {
      auto st = CheckRequestOp(op, max_txn_ops);
      if (!st.ok()) return st;
    }
    Writes w;
    auto st = CollectWrites(*branch, &w);
    if (!st.ok()) return st;
  }
  return grpc::Status::OK;
}

bool TxnHasPuts(const etcdserverpb::TxnRequest& r) {
  for (const auto* branch : {&r.success(), &r.failure()}) {
    for (const auto& op : *branch) {
      if (op.has_request_put()) return true;
      if (op.has_request_txn() && TxnHasPuts(op.request_txn())) return true;
    }
  }
  return false;
}

bool TxnIsReadOnly(const etcdserverpb::TxnRequest& r) {
  for (const auto* branch : {&r.success(), &r.failure()}) {
    for (const auto& op : *branch) {
      if (op.has_request_put() || op.has_request_delete_range()) return false;
      if (op.has_request_txn() && !TxnIsReadOnly(op.request_txn())) return false;
    }
  }
  return true;
}

namespace {

template <typename T>
bool CompareInt(etcdserverpb::Compare::CompareResult result, T a, T b) {
  switch (result) {
    case etcdserverpb::Compare::EQUAL:
      return a == b;
    case etcdserverpb::Compare::GREATER:
      return a > b;
    case etcdserverpb::Compare::LESS:
      return a < b;
    case etcdserverpb::Compare::NOT_EQUAL:
      return a != b;
    default:
      return false;
  }
}

bool CompareKv(const etcdserverpb::Compare& c, const mvccpb::KeyValue& kv) {
  switch (c.target()) {
    case etcdserverpb::Compare::VALUE:
      return CompareInt(c.result(), kv.value(), c.value());
    case etcdserverpb::Compare::CREATE:
      return CompareInt(c.result(), kv.create_revision(), c.create_revision());
    case etcdserverpb::Compare::MOD:
      return CompareInt(c.result(), kv.mod_revision(), c.mod_revision());
    case etcdserverpb::Compare::VERSION:
      return CompareInt(c.result(), kv.version(), c.version());
    case etcdserverpb::Compare::LEASE:
      return CompareInt(c.result(), kv.lease(), c.lease());
    default:
      return false;
  }
}

absl::StatusOr<bool> EvalCompare(mvcc::WriteTxn& txn, const etcdserverpb::Compare& c) {
  auto rr = txn.Range(c.key(), c.range_end(), mvcc::RangeOptions{});
  if (!rr.ok()) return rr.status();
  if (rr->kvs.empty()) {
    // A missing key has no value to compare (nil and "" are the same on the wire).
    if (c.target() == etcdserverpb::Compare::VALUE) return false;
    return CompareKv(c, mvccpb::KeyValue());
  }
  for (const auto& kv : rr->kvs) {
    if (!CompareKv(c, kv)) return false;
  }
  return true;
}

// Every compare of the txn, nested ones included, is evaluated against the state before any op
// runs (etcd's compareToPath): one bool per txn on the chosen path, in depth-first order.
absl::Status ComputePath(mvcc::WriteTxn& txn, const etcdserverpb::TxnRequest& r,
                         std::vector<bool>* path) {
  bool success = true;
  for (const auto& c : r.compare()) {
    auto ok = EvalCompare(txn, c);
    if (!ok.ok()) return ok.status();
    if (!*ok) {
      success = false;
      break;
    }
  }
  path->push_back(success);
  for (const auto& op : success ? r.success() : r.failure()) {
    if (op.has_request_txn()) {
      auto s = ComputePath(txn, op.request_txn(), path);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// Checks that need the store, made along the path before any op runs, so that a failing txn
// changes nothing (etcd's checkRequests).
grpc::Status PrecheckPath(ApplyContext& ctx, const etcdserverpb::TxnRequest& r,
                          const std::vector<bool>& path, size_t* pos) {
  const auto& ops = path[(*pos)++] ? r.success() : r.failure();
  for (const auto& op : ops) {
    if (op.has_request_range() && op.request_range().revision() != 0) {
      auto& rr_req = op.request_range();
      mvcc::RangeOptions o;
      o.rev = rr_req.revision();
      o.count_only = true;
      auto rr = ctx.txn->Range(rr_req.key(), rr_req.range_end(), o);
      if (!rr.ok()) return ToGrpc(rr.status());
    } else if (op.has_request_put()) {
      auto& p = op.request_put();
      if (p.ignore_value() || p.ignore_lease()) {
        auto rr = ctx.txn->Range(p.key(), "", mvcc::RangeOptions{});
        if (!rr.ok()) return ToGrpc(rr.status());
        if (rr->kvs.empty()) return ErrKeyNotFound();
      }
      if (!p.ignore_lease() && p.lease() != 0 && !ctx.lease_exists(p.lease())) {
        return ErrLeaseNotFound();
      }
    } else if (op.has_request_txn()) {
      auto st = PrecheckPath(ctx, op.request_txn(), path, pos);
      if (!st.ok()) return st;
    }
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ApplyPut(ApplyContext& ctx, const etcdserverpb::PutRequest& r,
                      etcdserverpb::PutResponse* resp) {
  std::optional<mvccpb::KeyValue> prev;
  if (r.ignore_value() || r.ignore_lease() || r.prev_kv()) {
    auto rr = ctx.txn->Range(r.key(), "", mvcc::RangeOptions{});
    if (!rr.ok()) return ToGrpc(rr.status());
    if (!rr->kvs.empty()) prev = std::move(rr->kvs[0]);
  }
  if ((r.ignore_value() || r.ignore_lease()) && !prev) return ErrKeyNotFound();
  const std::string& value = r.ignore_value() ? prev->value() : r.value();
  int64_t lease = r.ignore_lease() ? prev->lease() : r.lease();
  if (!r.ignore_lease() && lease != 0 && !ctx.lease_exists(lease)) return ErrLeaseNotFound();
  auto put = ctx.txn->Put(r.key(), value, lease);
  if (!put.ok()) return ToGrpc(put.status());
  if (resp != nullptr) {
    if (r.prev_kv() && prev) *resp->mutable_prev_kv() = std::move(*prev);
    resp->mutable_header()->set_revision(ctx.txn->write_rev());
  }
  return grpc::Status::OK;
}

grpc::Status ApplyDeleteRange(ApplyContext& ctx, const etcdserverpb::DeleteRangeRequest& r,
                              etcdserverpb::DeleteRangeResponse* resp) {
  auto deleted = ctx.txn->DeleteRange(r.key(), r.range_end());
  if (!deleted.ok()) return ToGrpc(deleted.status());
  if (resp != nullptr) {
    resp->set_deleted(static_cast<int64_t>(deleted->size()));
    if (r.prev_kv()) {
      for (auto& kv : *deleted) *resp->add_prev_kvs() = std::move(kv);
    }
    resp->mutable_header()->set_revision(ctx.txn->changed() ? ctx.txn->write_rev()
                                                            : ctx.txn->write_rev() - 1);
  }
  return grpc::Status::OK;
}

namespace {

grpc::Status ApplyAlongPath(ApplyContext& ctx, const etcdserverpb::TxnRequest& r,
                            const std::vector<bool>& path, size_t* pos,
                            etcdserverpb::TxnResponse* resp) {
  bool success = path[(*pos)++];
  resp->set_succeeded(success);
  resp->mutable_header();  // nested txn responses carry an empty header, as in etcd
  for (const auto& op : success ? r.success() : r.failure()) {
    auto* out = resp->add_responses();
    grpc::Status st;
    switch (op.request_case()) {
      case etcdserverpb::RequestOp::kRequestRange:
        st = DoRange(*ctx.txn, op.request_range(), out->mutable_response_range());
        break;
      case etcdserverpb::RequestOp::kRequestPut:
        st = ApplyPut(ctx, op.request_put(), out->mutable_response_put());
        break;
      case etcdserverpb::RequestOp::kRequestDeleteRange:
        st = ApplyDeleteRange(ctx, op.request_delete_range(), out->mutable_response_delete_range());
        break;
      case etcdserverpb::RequestOp::kRequestTxn:
        st = ApplyAlongPath(ctx, op.request_txn(), path, pos, out->mutable_response_txn());
        break;
      default:
        break;
    }
    if (!st.ok()) return st;
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ApplyTxn(ApplyContext& ctx, const etcdserverpb::TxnRequest& r,
                      etcdserverpb::TxnResponse* resp) {
  std::vector<bool> path;
  if (auto s = ComputePath(*ctx.txn, r, &path); !s.ok()) return ToGrpc(s);
  size_t pos = 0;
  if (auto st = PrecheckPath(ctx, r, path, &pos); !st.ok()) return st;
  etcdserverpb::TxnResponse scratch;
  pos = 0;
  return ApplyAlongPath(ctx, r, path, &pos, resp != nullptr ? resp : &scratch);
}

}  // namespace meridian::server
