// Writes a consistent copy of the store in etcd's backend layout (a bbolt file with etcd's
// buckets), so `etcdctl snapshot status` and `etcdctl snapshot restore` accept what Meridian's
// Snapshot RPC streams.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "node/mvcc/store.h"

namespace meridian::server {

class EtcdServer;

[[nodiscard]] absl::Status WriteEtcdSnapshot(const EtcdServer& server, const mvcc::ReadView& view,
                                             const std::string& path);

}  // namespace meridian::server
