// The etcd v3 gRPC services of one member, on the gRPC callback API: unary handlers never block
// a gRPC thread on the log; they finish when the apply step completes their proposal.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <memory>
#include <vector>

namespace meridian::server {

class EtcdServer;

// Creates the KV, Watch, Lease, Cluster and Maintenance services for `server`.
std::vector<std::unique_ptr<grpc::Service>> MakeServices(EtcdServer* server);

}  // namespace meridian::server
