// --namespace: every client key lives under a fixed prefix upstream. Requests get the prefix
// added (range ends included: "\0" and a prefix+1 end stay inside the namespace) and responses
// get it removed, so a client sees only its own keys, as with `etcd grpc-proxy --namespace`.
#ifndef MERIDIAN_PROXY_KEY_PREFIX_H_
#define MERIDIAN_PROXY_KEY_PREFIX_H_

#include <grpcpp/support/byte_buffer.h>

#include <string>

#include "absl/status/status.h"
#include "etcdserverpb/rpc.pb.h"

namespace meridian::proxy {

class KeyPrefix {
 public:
  explicit KeyPrefix(std::string prefix) : prefix_(std::move(prefix)) {}
  bool empty() const { return prefix_.empty(); }
  const std::string& prefix() const { return prefix_; }

  std::string Key(const std::string& key) const { return prefix_ + key; }
  // The upstream range end for a client (key, range_end).
  std::string RangeEnd(const std::string& range_end) const;
  // Drops the prefix; keys outside the namespace (cannot come back for prefixed requests) are
  // returned unchanged.
  std::string Strip(const std::string& key) const;

  void Apply(etcdserverpb::RangeRequest* r) const;
  void Apply(etcdserverpb::PutRequest* r) const;
  void Apply(etcdserverpb::DeleteRangeRequest* r) const;
  void Apply(etcdserverpb::TxnRequest* r) const;
  void Apply(etcdserverpb::WatchCreateRequest* r) const;
  void Unapply(etcdserverpb::RangeResponse* r) const;
  void Unapply(etcdserverpb::PutResponse* r) const;
  void Unapply(etcdserverpb::DeleteRangeResponse* r) const;
  void Unapply(etcdserverpb::TxnResponse* r) const;
  void Unapply(etcdserverpb::WatchResponse* r) const;
  void Unapply(etcdserverpb::LeaseTimeToLiveResponse* r) const;

  // For the forwarder: rewrites a serialized request/response of `method` in place when the
  // method carries keys. InvalidArgument when the bytes do not parse.
  [[nodiscard]] absl::Status ApplyToRequest(const std::string& method, grpc::ByteBuffer* buf) const;
  [[nodiscard]] absl::Status UnapplyToResponse(const std::string& method,
                                               grpc::ByteBuffer* buf) const;

 private:
  std::string prefix_;
};

// Parses/serializes protobuf messages from/to gRPC byte buffers.
[[nodiscard]] bool ParseBuffer(const grpc::ByteBuffer& buf, google::protobuf::Message* msg);
grpc::ByteBuffer SerializeToBuffer(const google::protobuf::Message& msg);

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_KEY_PREFIX_H_
