#include "node/server/snapshot.h"

#include <map>
#include <nlohmann/json.hpp>

#include "leasepb/lease.pb.h"
#include "node/server/etcd_server.h"
#include "node/server/version.h"
#include "node/snapshot/bolt_writer.h"

namespace meridian::server {
namespace {

// etcd's revision key: 8-byte big-endian main, '_', 8-byte big-endian sub.
std::string EtcdRevisionKey(int64_t main, int64_t sub) {
  std::string k;
  mvcc::PutBigEndian64(&k, static_cast<uint64_t>(main));
  k.push_back('_');
  mvcc::PutBigEndian64(&k, static_cast<uint64_t>(sub));
  return k;
}

std::string HexId(uint64_t id) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

absl::Status WriteEtcdSnapshot(const EtcdServer& server, const mvcc::ReadView& view,
                               const std::string& path) {
  auto writer = bolt::Writer::Create(path);
  if (!writer.ok()) return writer.status();
  bolt::Writer& w = **writer;
  // Buckets in byte order, as bbolt requires.
  if (auto s = w.BeginBucket("alarm"); !s.ok()) return s;
  for (const auto& a : server.Alarms()) {
    if (auto s = w.Put(a.SerializeAsString(), ""); !s.ok()) return s;
  }
  for (const char* empty : {"auth", "authRoles", "authUsers"}) {
    if (auto s = w.BeginBucket(empty); !s.ok()) return s;
  }
  if (auto s = w.BeginBucket("cluster"); !s.ok()) return s;
  if (auto s = w.Put("clusterVersion", kClusterVersion); !s.ok()) return s;

  if (auto s = w.BeginBucket("key"); !s.ok()) return s;
  auto s = server.store()->ForEachHistory(
      view, [&](mvcc::Revision r, char type, std::string_view kv_bytes) -> absl::Status {
        if (r.main > view.rev()) return absl::OkStatus();
        std::string key = EtcdRevisionKey(r.main, r.sub);
        if (type == mvcc::kHistDelete) {
          // etcd's tombstone: the revision key marked 't', the value holding only the key.
          mvccpb::KeyValue kv;
          if (!kv.ParseFromArray(kv_bytes.data(), static_cast<int>(kv_bytes.size()))) {
            return absl::DataLossError("snapshot: undecodable history record");
          }
          mvccpb::KeyValue tomb;
          tomb.set_key(kv.key());
          key.push_back('t');
          return w.Put(key, tomb.SerializeAsString());
        }
        return w.Put(key, kv_bytes);
      });
  if (!s.ok()) return s;

  if (auto st = w.BeginBucket("lease"); !st.ok()) return st;
  auto leases = view.Leases();
  if (!leases.ok()) return leases.status();
  for (const auto& l : *leases) {
    std::string id;
    mvcc::PutBigEndian64(&id, static_cast<uint64_t>(l.id));
    leasepb::Lease pb;
    pb.set_id(l.id);
    pb.set_ttl(l.ttl_seconds);
    if (auto st = w.Put(id, pb.SerializeAsString()); !st.ok()) return st;
  }

  if (auto st = w.BeginBucket("members"); !st.ok()) return st;
  // bbolt buckets are sorted by key: members in id (hex) order.
  std::map<std::string, std::string> members;
  for (const Member& m : server.Members()) {
    nlohmann::json member = {
        {"id", m.id}, {"peerURLs", m.peer_urls}, {"name", m.name}, {"clientURLs", m.client_urls}};
    if (m.is_learner) member["isLearner"] = true;
    members[HexId(m.id)] = member.dump();
  }
  for (const auto& [k, v] : members) {
    if (auto st = w.Put(k, v); !st.ok()) return st;
  }
  if (auto st = w.BeginBucket("members_removed"); !st.ok()) return st;

  if (auto st = w.BeginBucket("meta"); !st.ok()) return st;
  std::string ci;
  mvcc::PutBigEndian64(&ci, view.consistent_index());
  if (auto st = w.Put("consistent_index", ci); !st.ok()) return st;
  if (view.compact_rev() > 0) {
    std::string rev = EtcdRevisionKey(view.compact_rev(), 0);
    if (auto st = w.Put("finishedCompactRev", rev); !st.ok()) return st;
    if (auto st = w.Put("scheduledCompactRev", rev); !st.ok()) return st;
  }
  std::string term;
  mvcc::PutBigEndian64(&term, server.raft_term());
  if (auto st = w.Put("term", term); !st.ok()) return st;
  return w.Finish();
}

}  // namespace meridian::server
