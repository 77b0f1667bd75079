#include "node/server/errors.h"

#include <string>

#include "node/mvcc/store.h"

namespace meridian::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  if (s.message() == mvcc::kErrCompacted) return ErrCompacted();
  if (s.message() == mvcc::kErrFutureRev) return ErrFutureRev();
  auto code = static_cast<grpc::StatusCode>(static_cast<int>(s.code()));
  return grpc::Status(code, std::string(s.message()));
}

}  // namespace meridian::server
