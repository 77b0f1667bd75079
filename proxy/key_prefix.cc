#include "proxy/key_prefix.h"

#include <grpcpp/support/slice.h>

#include <vector>

namespace meridian::proxy {

bool ParseBuffer(const grpc::ByteBuffer& buf, google::protobuf::Message* msg) {
  std::vector<grpc::Slice> slices;
  if (!buf.Dump(&slices).ok()) return false;
  if (slices.size() == 1) return msg->ParseFromArray(slices[0].begin(), slices[0].size());
  std::string flat;
  flat.reserve(buf.Length());
  for (const auto& s : slices) flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return msg->ParseFromString(flat);
}

grpc::ByteBuffer SerializeToBuffer(const google::protobuf::Message& msg) {
  std::string bytes = msg.SerializeAsString();
  grpc::Slice slice(std::move(bytes));
  return grpc::ByteBuffer(&slice, 1);
}

std::string KeyPrefix::RangeEnd(const std::string& range_end) const {
  if (range_end.empty()) return "";
  if (range_end == std::string(1, '\0')) {
    // "every key from key on" ends where the namespace ends: the prefix plus one.
    std::string end = prefix_;
    while (!end.empty()) {
      if (static_cast<unsigned char>(end.back()) < 0xff) {
        end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
        return end;
      }
      end.pop_back();
    }
    return std::string(1, '\0');  // a prefix of all 0xff bytes ends with the keyspace
  }
  return prefix_ + range_end;
}

std::string KeyPrefix::Strip(const std::string& key) const {
  if (key.compare(0, prefix_.size(), prefix_) == 0) return key.substr(prefix_.size());
  return key;
}

void KeyPrefix::Apply(etcdserverpb::RangeRequest* r) const {
  r->set_range_end(RangeEnd(r->range_end()));
  r->set_key(Key(r->key()));
}
void KeyPrefix::Apply(etcdserverpb::PutRequest* r) const { r->set_key(Key(r->key())); }
void KeyPrefix::Apply(etcdserverpb::DeleteRangeRequest* r) const {
  r->set_range_end(RangeEnd(r->range_end()));
  r->set_key(Key(r->key()));
}
void KeyPrefix::Apply(etcdserverpb::WatchCreateRequest* r) const {
  r->set_range_end(RangeEnd(r->range_end()));
  r->set_key(Key(r->key()));
}

void KeyPrefix::Apply(etcdserverpb::TxnRequest* r) const {
  for (auto& c : *r->mutable_compare()) {
    c.set_range_end(RangeEnd(c.range_end()));
    c.set_key(Key(c.key()));
  }
  for (auto* ops : {r->mutable_success(), r->mutable_failure()}) {
    for (auto& op : *ops) {
      switch (op.request_case()) {
        case etcdserverpb::RequestOp::kRequestRange: Apply(op.mutable_request_range()); break;
        case etcdserverpb::RequestOp::kRequestPut: Apply(op.mutable_request_put()); break;
        case etcdserverpb::RequestOp::kRequestDeleteRange:
          Apply(op.mutable_request_delete_range());
          break;
        case etcdserverpb::RequestOp::kRequestTxn: Apply(op.mutable_request_txn()); break;
        default: break;
      }
    }
  }
}

void KeyPrefix::Unapply(etcdserverpb::RangeResponse* r) const {
  for (auto& kv : *r->mutable_kvs()) kv.set_key(Strip(kv.key()));
}
void KeyPrefix::Unapply(etcdserverpb::PutResponse* r) const {
  if (r->has_prev_kv()) r->mutable_prev_kv()->set_key(Strip(r->prev_kv().key()));
}
void KeyPrefix::Unapply(etcdserverpb::DeleteRangeResponse* r) const {
  for (auto& kv : *r->mutable_prev_kvs()) kv.set_key(Strip(kv.key()));
}
void KeyPrefix::Unapply(etcdserverpb::TxnResponse* r) const {
  for (auto& op : *r->mutable_responses()) {
    switch (op.response_case()) {
      case etcdserverpb::ResponseOp::kResponseRange: Unapply(op.mutable_response_range()); break;
      case etcdserverpb::ResponseOp::kResponsePut: Unapply(op.mutable_response_put()); break;
      case etcdserverpb::ResponseOp::kResponseDeleteRange:
        Unapply(op.mutable_response_delete_range());
        break;
      case etcdserverpb::ResponseOp::kResponseTxn: Unapply(op.mutable_response_txn()); break;
      default: break;
    }
  }
}
void KeyPrefix::Unapply(etcdserverpb::WatchResponse* r) const {
  for (auto& ev : *r->mutable_events()) {
    ev.mutable_kv()->set_key(Strip(ev.kv().key()));
    if (ev.has_prev_kv()) ev.mutable_prev_kv()->set_key(Strip(ev.prev_kv().key()));
  }
}
void KeyPrefix::Unapply(etcdserverpb::LeaseTimeToLiveResponse* r) const {
  // Keys of other namespaces attached to the same lease are not this client's business.
  google::protobuf::RepeatedPtrField<std::string> kept;
  for (const auto& k : r->keys()) {
    if (k.compare(0, prefix_.size(), prefix_) == 0) kept.Add(k.substr(prefix_.size()));
  }
  r->mutable_keys()->Swap(&kept);
}

namespace {

template <typename Msg>
absl::Status Rewrite(grpc::ByteBuffer* buf, const std::function<void(Msg*)>& fn) {
  Msg msg;
  if (!ParseBuffer(*buf, &msg)) return absl::InvalidArgumentError("malformed request");
  fn(&msg);
  *buf = SerializeToBuffer(msg);
  return absl::OkStatus();
}

}  // namespace

absl::Status KeyPrefix::ApplyToRequest(const std::string& method, grpc::ByteBuffer* buf) const {
  using namespace etcdserverpb;
  // An empty key would become the bare prefix upstream; etcd refuses it, and so do we.
  if (method == "/etcdserverpb.KV/Range" || method == "/etcdserverpb.KV/Put" ||
      method == "/etcdserverpb.KV/DeleteRange") {
    RangeRequest probe;  // field 1 is the key in all three requests
    if (!ParseBuffer(*buf, &probe)) return absl::InvalidArgumentError("malformed request");
    if (probe.key().empty()) return absl::InvalidArgumentError("etcdserver: key is not provided");
  }
  if (method == "/etcdserverpb.KV/Range") {
    return Rewrite<RangeRequest>(buf, [this](RangeRequest* r) { Apply(r); });
  }
  if (method == "/etcdserverpb.KV/Put") {
    return Rewrite<PutRequest>(buf, [this](PutRequest* r) { Apply(r); });
  }
  if (method == "/etcdserverpb.KV/DeleteRange") {
    return Rewrite<DeleteRangeRequest>(buf, [this](DeleteRangeRequest* r) { Apply(r); });
  }
  if (method == "/etcdserverpb.KV/Txn") {
    return Rewrite<TxnRequest>(buf, [this](TxnRequest* r) { Apply(r); });
  }
  return absl::OkStatus();
}

absl::Status KeyPrefix::UnapplyToResponse(const std::string& method,
                                          grpc::ByteBuffer* buf) const {
  using namespace etcdserverpb;
  if (method == "/etcdserverpb.KV/Range") {
    return Rewrite<RangeResponse>(buf, [this](RangeResponse* r) { Unapply(r); });
  }
  if (method == "/etcdserverpb.KV/Put") {
    return Rewrite<PutResponse>(buf, [this](PutResponse* r) { Unapply(r); });
  }
  if (method == "/etcdserverpb.KV/DeleteRange") {
    return Rewrite<DeleteRangeResponse>(buf, [this](DeleteRangeResponse* r) { Unapply(r); });
  }
  if (method == "/etcdserverpb.KV/Txn") {
    return Rewrite<TxnResponse>(buf, [this](TxnResponse* r) { Unapply(r); });
  }
  if (method == "/etcdserverpb.Lease/LeaseTimeToLive") {
    return Rewrite<LeaseTimeToLiveResponse>(buf,
                                            [this](LeaseTimeToLiveResponse* r) { Unapply(r); });
  }
  return absl::OkStatus();
}

}  // namespace meridian::proxy
