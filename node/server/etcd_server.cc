#include "node/server/etcd_server.h"

#include <grpcpp/grpcpp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "node/peer/convert.h"
#include "node/peer/transport.h"
#include "node/raft/confchange.h"
#include "node/server/errors.h"
#include "node/server/kv_apply.h"
#include "node/server/version.h"
#include "node/wal/wal.h"

namespace meridian::server {
namespace {

constexpr size_t kMaxProposalsPerLoop = 4096;
constexpr size_t kMaxApplyBatchEntries = 4096;

// Bytes of entry data in a batch of committed entries (what the apply queue's budget counts).
template <typename ApplyEntries>
size_t EntriesBytes(const ApplyEntries& entries) {
  size_t bytes = 0;
  for (const auto& e : entries) bytes += e.entry.data.size();
  return bytes;
}
// How often (in applied entries) raft's in-memory log drops what is applied, past the catch-up
// tail.
constexpr uint64_t kRaftCompactEveryEntries = 1000;
constexpr char kMetaMemberId[] = "member_id";
constexpr char kMetaClusterId[] = "cluster_id";
constexpr char kMetaAlarmPrefix[] = "alarm/";
constexpr char kMetaMemberPrefix[] = "member/";
constexpr char kMetaConfState[] = "raft_conf_state";
constexpr char kMetaAppliedTerm[] = "raft_applied_term";
// Log entries carry their raft type as a leading byte in the WAL.
constexpr char kWalNormal = 0;
constexpr char kWalConfChange = 1;

[[noreturn]] void Fatal(const std::string& what) {
  fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"%s\"}\n", what.c_str());
  fflush(stderr);
  std::abort();
}

void LogJson(const char* level, const std::string& msg) {
  fprintf(stderr, "{\"level\":\"%s\",\"msg\":\"%s\"}\n", level, msg.c_str());
}

uint64_t Sha1Prefix(const std::string& bytes) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  return v;
}

std::string AlarmKey(uint64_t member, int type) {
  return absl::StrCat(kMetaAlarmPrefix, member, "/", type);
}

std::string MemberKey(uint64_t id) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return absl::StrCat(kMetaMemberPrefix, buf);
}

std::string Hex(uint64_t id) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(id));
  return buf;
}

// The proposal id is InternalRequest field 1 (a varint), which protobuf serializes first.
uint64_t PeekRequestId(const std::string& data) {
  if (data.empty() || data[0] != 0x08) return 0;
  uint64_t v = 0;
  for (size_t i = 1; i < data.size() && i < 11; ++i) {
    uint8_t b = static_cast<uint8_t>(data[i]);
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * (i - 1));
    if ((b & 0x80) == 0) return v;
  }
  return 0;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

etcdserverpb::Member ToProto(const Member& m) {
  etcdserverpb::Member out;
  out.set_id(m.id);
  out.set_name(m.name);
  for (const auto& u : m.peer_urls) out.add_peerurls(u);
  for (const auto& u : m.client_urls) out.add_clienturls(u);
  out.set_islearner(m.is_learner);
  return out;
}

Member FromProto(const etcdserverpb::Member& p) {
  Member m;
  m.id = p.id();
  m.name = p.name();
  m.peer_urls.assign(p.peerurls().begin(), p.peerurls().end());
  m.client_urls.assign(p.clienturls().begin(), p.clienturls().end());
  m.is_learner = p.islearner();
  return m;
}

std::string EncodeConfState(const raft::ConfState& cs) {
  meridianpb::RaftConfState p;
  for (uint64_t v : cs.voters) p.add_voters(v);
  for (uint64_t l : cs.learners) p.add_learners(l);
  return p.SerializeAsString();
}

raft::ConfState DecodeConfState(const std::string& bytes) {
  meridianpb::RaftConfState p;
  raft::ConfState cs;
  if (!p.ParseFromString(bytes)) return cs;
  cs.voters.assign(p.voters().begin(), p.voters().end());
  cs.learners.assign(p.learners().begin(), p.learners().end());
  return cs;
}

wal::Entry ToWal(const raft::Entry& e) {
  std::string data;
  data.reserve(e.data.size() + 1);
  data.push_back(e.type == raft::EntryType::kConfChange ? kWalConfChange : kWalNormal);
  data.append(e.data);
  return wal::Entry{e.index, e.term, std::move(data)};
}

absl::StatusOr<raft::Entry> FromWal(wal::Entry e) {
  raft::Entry out;
  out.index = e.index;
  out.term = e.term;
  if (e.data.empty()) {
    return absl::DataLossError(absl::StrCat("log entry ", e.index, " has no type byte"));
  }
  if (e.data[0] == kWalConfChange) {
    out.type = raft::EntryType::kConfChange;
  } else if (e.data[0] != kWalNormal) {
    return absl::DataLossError(absl::StrCat("log entry ", e.index, " has an unknown type"));
  }
  out.data = e.data.substr(1);
  return out;
}

}  // namespace

uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& salt) {
  std::sort(peer_urls.begin(), peer_urls.end());
  std::string b;
  for (const auto& u : peer_urls) b += u;
  b += salt;
  return Sha1Prefix(b);
}

uint64_t ComputeClusterId(std::vector<uint64_t> ids) {
  std::sort(ids.begin(), ids.end());
  std::string b;
  for (uint64_t id : ids) mvcc::PutBigEndian64(&b, id);
  return Sha1Prefix(b);
}

EtcdServer::EtcdServer(const ServerConfig& config, const lease::Clock* clock,
                       metrics::Registry* metrics)
    : config_(config), clock_(clock), metrics_(metrics) {
  auto buckets = metrics::EtcdDiskDurationBuckets();
  wal_fsync_seconds_ =
      &metrics->histogram("etcd_disk_wal_fsync_duration_seconds",
                          "The latency distributions of fsync called by WAL.", buckets);
  backend_commit_seconds_ =
      &metrics->histogram("etcd_disk_backend_commit_duration_seconds",
                          "The latency distributions of commit called by backend.", buckets);
  proposals_committed_ = &metrics->counter("etcd_server_proposals_committed_total",
                                           "The total number of consensus proposals committed.");
  proposals_applied_ = &metrics->counter("etcd_server_proposals_applied_total",
                                         "The total number of consensus proposals applied.");
  proposals_failed_ = &metrics->counter("etcd_server_proposals_failed_total",
                                        "The total number of failed proposals seen.");
  proposals_pending_ = &metrics->gauge("etcd_server_proposals_pending",
                                       "The current number of pending proposals to commit.");
  has_leader_ = &metrics->gauge("etcd_server_has_leader",
                                "Whether or not a leader exists. 1 is existence, 0 is not.");
  is_leader_ = &metrics->gauge("etcd_server_is_leader",
                               "Whether or not this member is a leader. 1 if is, 0 otherwise.");
  leader_changes_ = &metrics->counter("etcd_server_leader_changes_seen_total",
                                      "The number of leader changes seen.");
}

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Open(const ServerConfig& config,
                                                             const lease::Clock* clock,
                                                             metrics::Registry* metrics) {
  std::unique_ptr<EtcdServer> s(new EtcdServer(config, clock, metrics));
  if (auto st = s->Init(); !st.ok()) {
    s->Stop();
    return st;
  }
  return s;
}

std::chrono::steady_clock::time_point EtcdServer::RequestDeadline() const {
  // etcd's ReqTimeout: 5 s plus two election timeouts.
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(5000) +
         std::chrono::milliseconds(2 * config_.election_timeout_ms);
}

// Parses --initial-cluster into members (a name may repeat for several peer URLs).
static absl::StatusOr<std::vector<Member>> ParseInitialMembers(const ServerConfig& config) {
  std::vector<Member> out;
  for (absl::string_view piece : absl::StrSplit(config.initial_cluster, ',', absl::SkipEmpty())) {
    std::string entry(piece.data(), piece.size());
    auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: entry \"", entry, "\" is not name=url"));
    }
    std::string name = entry.substr(0, eq);
    std::string url = entry.substr(eq + 1);
    if (auto t = peer::PeerUrlToTarget(url); !t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--initial-cluster: ", t.status().message()));
    }
    auto it = std::find_if(out.begin(), out.end(), [&](const Member& m) { return m.name == name; });
    if (it == out.end()) {
      out.push_back(Member{0, name, {url}, {}, false});
    } else {
      it->peer_urls.push_back(url);
    }
  }
  for (auto& m : out) m.id = ComputeMemberId(m.peer_urls, config.initial_cluster_token);
  return out;
}

absl::Status EtcdServer::InitIdentity(std::vector<Member>* initial_members, bool* bootstrap_new) {
  *bootstrap_new = false;
  auto mid = store_->GetMeta(kMetaMemberId);
  auto cid = store_->GetMeta(kMetaClusterId);
  if (!mid.ok()) return mid.status();
  if (!cid.ok()) return cid.status();
  if (mid->has_value() && cid->has_value() && (*mid)->size() == 8 && (*cid)->size() == 8) {
    // Identity is fixed at the first start, as etcd fixes it at bootstrap.
    self_id_ = mvcc::GetBigEndian64(**mid);
    cluster_id_ = mvcc::GetBigEndian64(**cid);
    return LoadMembership();
  }
  // A new member with --discovery-srv: the initial cluster comes from DNS, now and only now.
  if (config_.discover_initial_cluster) {
    auto cluster = config_.discover_initial_cluster();
    if (!cluster.ok()) return cluster.status();
    LogJson("info", absl::StrCat("initial cluster from the DNS SRV records of ",
                                 config_.discovery_srv, ": ", *cluster));
    ServerConfig from_dns = config_;
    from_dns.initial_cluster = *cluster;
    auto parsed = ParseInitialMembers(from_dns);
    if (!parsed.ok()) return parsed.status();
    *initial_members = std::move(*parsed);  // the bootstrap's voters, too
  }
  const std::vector<Member>& initial = *initial_members;
  auto me = std::find_if(initial.begin(), initial.end(),
                         [&](const Member& m) { return m.name == config_.name; });
  if (me == initial.end()) {
    return absl::InvalidArgumentError(absl::StrCat("couldn't find local name \"", config_.name,
                                                   "\" in the initial cluster configuration"));
  }
  std::vector<Member> members;
  if (config_.initial_cluster_state == "existing") {
    // Joining: the cluster (which already added us with MemberAdd) tells us its id and our id.
    std::vector<std::string> urls;
    for (const auto& m : initial) {
      if (m.name == config_.name) continue;
      urls.insert(urls.end(), m.peer_urls.begin(), m.peer_urls.end());
    }
    if (urls.empty()) {
      return absl::InvalidArgumentError(
          "--initial-cluster-state existing needs the other members in --initial-cluster");
    }
    auto info = peer::PeerTransport::FetchClusterInfo(urls, 3000);
    if (!info.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot fetch the cluster's members from its peers: ", info.status().message()));
    }
    cluster_id_ = info->cluster_id();
    std::vector<std::string> mine = me->peer_urls;
    std::sort(mine.begin(), mine.end());
    for (const auto& p : info->members()) {
      Member m;
      m.id = p.id();
      m.name = p.name();
      m.peer_urls.assign(p.peer_urls().begin(), p.peer_urls().end());
      m.client_urls.assign(p.client_urls().begin(), p.client_urls().end());
      m.is_learner = p.is_learner();
      std::vector<std::string> theirs = m.peer_urls;
      std::sort(theirs.begin(), theirs.end());
      if (theirs == mine) self_id_ = m.id;
      members.push_back(std::move(m));
    }
    if (self_id_ == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("this member's peer URLs (", absl::StrJoin(mine, ","),
                       ") are not in the cluster's member list: add it with 'member add' first"));
    }
  } else if (config_.initial_cluster_state == "new") {
    members = initial;
    self_id_ = me->id;
    std::vector<uint64_t> ids;
    for (const auto& m : members) ids.push_back(m.id);
    cluster_id_ = ComputeClusterId(ids);
    *bootstrap_new = true;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster-state must be 'new' or 'existing', not '",
                     config_.initial_cluster_state, "'"));
  }
  // Persist identity and the members we know of before anything else happens.
  mvcc::ApplyBatch b(store_.get());
  std::string v;
  mvcc::PutBigEndian64(&v, self_id_);
  b.PutMeta(kMetaMemberId, v);
  v.clear();
  mvcc::PutBigEndian64(&v, cluster_id_.load());
  b.PutMeta(kMetaClusterId, v);
  // Client URLs (ours included) become known through the log: see the publish step in
  // HousekeepingLoop; every member must learn them the same way.
  for (auto& m : members) b.PutMeta(MemberKey(m.id), ToProto(m).SerializeAsString());
  if (auto st = b.Commit(); !st.ok()) return st;
  if (auto st = store_->Flush(); !st.ok()) return st;
  return LoadMembership();
}

// The lease table and the alarms, as the store holds them (at start-up, and after a snapshot
// replaced the store).
absl::Status EtcdServer::LoadLeasesAndAlarms() {
  auto leases = store_->View()->Leases();
  if (!leases.ok()) return leases.status();
  for (int64_t id : lessor_->Ids()) lessor_->Revoke(id);
  for (const auto& l : *leases) lessor_->Grant(l.id, l.ttl_seconds);
  auto records = store_->ScanMeta(kMetaAlarmPrefix);
  if (!records.ok()) return records.status();
  std::vector<etcdserverpb::AlarmMember> alarms;
  bool nospace = false;
  for (const auto& [k, v] : *records) {
    etcdserverpb::AlarmMember m;
    if (!m.ParseFromString(v)) return absl::DataLossError(absl::StrCat("bad alarm record ", k));
    nospace |= m.alarm() == etcdserverpb::NOSPACE;
    alarms.push_back(std::move(m));
  }
  std::lock_guard<std::mutex> lock(alarm_mu_);
  alarms_ = std::move(alarms);
  nospace_ = nospace;
  return absl::OkStatus();
}

absl::Status EtcdServer::LoadMembership() {
  auto recs = store_->ScanMeta(kMetaMemberPrefix);
  if (!recs.ok()) return recs.status();
  std::lock_guard<std::mutex> lock(members_mu_);
  members_.clear();
  for (const auto& [k, v] : *recs) {
    etcdserverpb::Member p;
    if (!p.ParseFromString(v)) return absl::DataLossError(absl::StrCat("bad member record ", k));
    members_[p.id()] = FromProto(p);
  }
  return absl::OkStatus();
}

void EtcdServer::SyncPeers() {
  if (!transport_) return;
  std::map<uint64_t, Member> members;
  {
    std::lock_guard<std::mutex> lock(members_mu_);
    members = members_;
  }
  std::lock_guard<std::mutex> lock(peers_mu_);
  for (const auto& [id, m] : members) {
    if (id == self_id_) continue;
    auto known = peer_urls_.find(id);
    if (known != peer_urls_.end()) {
      if (known->second != m.peer_urls) {
        (void)transport_->UpdatePeer(id, m.peer_urls);
        known->second = m.peer_urls;
      }
    } else if (auto st = transport_->AddPeer(id, m.peer_urls); st.ok()) {
      peer_urls_[id] = m.peer_urls;
    } else {
      LogJson("warn", absl::StrCat("cannot add peer ", Hex(id), ": ", st.ToString()));
    }
  }
  for (auto it = peer_urls_.begin(); it != peer_urls_.end();) {
    if (members.count(it->first) == 0) {
      (void)transport_->RemovePeer(it->first);
      it = peer_urls_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<Member> EtcdServer::Members() const {
  std::lock_guard<std::mutex> lock(members_mu_);
  std::vector<Member> out;
  for (const auto& [id, m] : members_) out.push_back(m);
  return out;
}

std::optional<Member> EtcdServer::FindMember(uint64_t id) const {
  std::lock_guard<std::mutex> lock(members_mu_);
  auto it = members_.find(id);
  if (it == members_.end()) return std::nullopt;
  return it->second;
}

bool EtcdServer::is_learner() const {
  std::lock_guard<std::mutex> lock(members_mu_);
  auto it = members_.find(self_id_);
  return it != members_.end() && it->second.is_learner;
}

bool EtcdServer::Ready() const {
  if (leader_.load() == raft::kNone) return false;
  std::lock_guard<std::mutex> lock(members_mu_);
  auto it = members_.find(self_id_);
  return it != members_.end() && it->second.name == config_.name &&
         it->second.client_urls == config_.advertise_client_urls;
}

void EtcdServer::FillMembers(google::protobuf::RepeatedPtrField<etcdserverpb::Member>* out) const {
  for (const auto& m : Members()) *out->Add() = ToProto(m);
}

absl::Status EtcdServer::Init() {
  std::error_code ec;
  std::string member_dir = config_.data_dir + "/member";
  std::filesystem::create_directories(member_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", member_dir, ": ", ec.message()));
  std::filesystem::permissions(config_.data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);

  auto initial = ParseInitialMembers(config_);
  if (!initial.ok()) return initial.status();

  mvcc::StoreOptions so;
  so.dir = member_dir + "/store";
  auto store = mvcc::Store::Open(so);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);

  bool bootstrap_new = false;
  if (auto st = InitIdentity(&*initial, &bootstrap_new); !st.ok()) return st;
  id_prefix_ = (self_id_ & 0xffff) << 48;
  uint64_t now_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count());
  id_counter_ = (now_ms << 8) & ((1ull << 48) - 1);

  lessor_ = std::make_unique<lease::Lessor>(clock_, config_.MinLeaseTtlSeconds());
  leader_forwarder_ = std::make_unique<LeaderForwarder>([this]() -> std::string {
    auto m = FindMember(leader_.load());
    if (!m || m->client_urls.empty()) return "";
    auto t = peer::PeerUrlToTarget(m->client_urls[0]);
    return t.ok() ? *t : "";
  });
  if (auto st = LoadLeasesAndAlarms(); !st.ok()) return st;

  mvcc::WatchHubOptions wo;
  wo.fill_header = [this](etcdserverpb::ResponseHeader* h, int64_t rev) { FillHeader(h, rev); };
  wo.fragment_bytes = config_.max_request_bytes;
  watch_hub_ = std::make_unique<mvcc::WatchHub>(store_.get(), wo);

  // The log.
  wal::Options wopt;
  wopt.dir = config_.wal_dir;
  std::filesystem::create_directories(config_.wal_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", config_.wal_dir, ": ", ec.message()));
  wal::Recovered rec;
  auto w = wal::Wal::Open(wopt, &rec);
  if (!w.ok()) return w.status();
  wal_ = std::move(*w);
  if (rec.tail_truncated) {
    LogJson("warn", absl::StrCat("discarded a torn or corrupt log tail: ", rec.tail_error));
  }

  // Raft's view of the durable state: the store is the state-machine snapshot (at its
  // consistent index, with the membership stored next to it), the WAL holds what follows.
  const uint64_t ci = store_->consistent_index();
  uint64_t ci_term = 0;
  raft::ConfState cs;
  if (auto t = store_->GetMeta(kMetaAppliedTerm); t.ok() && t->has_value() && (*t)->size() == 8) {
    ci_term = mvcc::GetBigEndian64(**t);
  }
  if (auto c = store_->GetMeta(kMetaConfState); c.ok() && c->has_value()) {
    cs = DecodeConfState(**c);
  }
  if (ci > 0) {
    raft::Snapshot snap;
    snap.metadata.index = ci;
    snap.metadata.term = ci_term;
    snap.metadata.conf_state = cs;
    if (auto st = raft_storage_.ApplySnapshot(snap); !st.ok()) return st;
  }
  base_conf_ = cs;
  std::vector<raft::Entry> entries;
  for (auto& e : rec.entries) {
    if (e.index <= ci) continue;
    auto re = FromWal(std::move(e));
    if (!re.ok()) return re.status();
    if (!entries.empty() && re->index != entries.back().index + 1) {
      return absl::DataLossError(absl::StrCat("log gap after index ", entries.back().index));
    }
    entries.push_back(std::move(*re));
  }
  if (!entries.empty() && entries.front().index != ci + 1) {
    return absl::DataLossError(absl::StrCat("the log resumes at index ", entries.front().index,
                                            " but the store is at index ", ci,
                                            ": entries in between are missing"));
  }
  if (!entries.empty()) {
    if (auto st = raft_storage_.Append(entries); !st.ok()) return st;
  }
  raft::HardState hs{rec.hard_state.term, rec.hard_state.vote, rec.hard_state.commit};
  // The commit index is written lazily; what the store applied was certainly committed.
  hs.commit = std::max(hs.commit, ci);
  hs.commit = std::min(hs.commit, raft_storage_.LastIndex());
  hs.term = std::max(hs.term, ci_term);
  raft_storage_.SetHardState(hs);
  applied_term_ = ci_term;

  raft::Config rc;
  rc.id = self_id_;
  uint32_t hb = std::max<uint32_t>(config_.heartbeat_interval_ms, 1);
  rc.heartbeat_ticks = 1;
  rc.election_ticks = std::max<uint32_t>(config_.election_timeout_ms / hb, 2);
  rc.applied = ci;
  rc.pre_vote = config_.pre_vote;
  rc.check_quorum = true;
  rc.random_seed = self_id_ ^ static_cast<uint64_t>(now_ms);
  // Bytes of appends in flight per follower (the count alone lets 256 large batches pile up for
  // a follower that stopped answering).
  rc.max_inflight_bytes = 8ull << 20;
  auto node = raft::RawNode::Create(rc, &raft_storage_);
  if (!node.ok()) return node.status();
  node_ = std::move(*node);
  // A brand-new member bootstraps whenever its log is empty, also when an earlier start stored
  // its (deterministic) identity and died before the bootstrap entries reached the log.
  const bool fresh = ci == 0 && raft_storage_.LastIndex() == 0 && hs.term == 0;
  if (fresh && (bootstrap_new || config_.initial_cluster_state == "new")) {
    std::vector<uint64_t> voters;
    for (const auto& m : *initial) voters.push_back(m.id);
    if (auto st = node_->Bootstrap(voters); !st.ok()) return st;
  }
  term_ = hs.term;
  committed_index_ = hs.commit;

  // Store images of an earlier run (sent or received, complete or not) are of no use now.
  for (const char* dir : {"/snap-in", ""}) {
    std::error_code ignored;
    for (const auto& e : std::filesystem::directory_iterator(member_dir + dir, ignored)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("snap-out-", 0) == 0 || std::string(dir) == "/snap-in") {
        std::filesystem::remove_all(e.path(), ignored);
      }
    }
  }

  // The peer transport.
  peer::PeerTransportOptions po;
  po.self_id = self_id_;
  po.cluster_id = cluster_id_.load();
  po.snapshot_dir = member_dir + "/snap-in";
  // A dead peer's queue fills with whatever raft still sends it: keep that small, and redial
  // quickly so a restarted member rejoins within a few heartbeats.
  po.max_queue_bytes = 16ull << 20;
  po.dial_backoff_max_ms = 500;
  peer::PeerTransportCallbacks cb;
  cb.on_message = [this](raft::Message m) {
    {
      std::lock_guard<std::mutex> lock(raft_mu_);
      size_t bytes = m.context.size();
      for (const auto& e : m.entries) bytes += e.data.size();
      // Raft tolerates loss, so a message past the bound is dropped: memory stays bounded while
      // the raft thread is busy.
      if (!inbox_budget_.Admits(1, bytes)) return;
      inbox_budget_.Add(1, bytes);
      inbox_.push_back(std::move(m));
    }
    raft_cv_.notify_one();
  };
  cb.on_snapshot = [this](raft::Message m, std::string path) {
    {
      std::lock_guard<std::mutex> lock(raft_mu_);
      snapshot_inbox_.emplace_back(std::move(m), std::move(path));
    }
    raft_cv_.notify_one();
  };
  cb.on_unreachable = [this](uint64_t id) {
    {
      std::lock_guard<std::mutex> lock(raft_mu_);
      if (unreachable_.size() < 1024) unreachable_.push_back(id);
    }
    raft_cv_.notify_one();
  };
  cb.on_snapshot_status = [this](uint64_t id, bool ok) {
    {
      std::lock_guard<std::mutex> lock(raft_mu_);
      snapshot_status_.emplace_back(id, ok);
    }
    raft_cv_.notify_one();
  };
  cb.cluster_info = [this] {
    meridianpb::ClusterInfoResponse r;
    r.set_cluster_id(cluster_id_.load());
    for (const auto& m : Members()) {
      auto* p = r.add_members();
      p->set_id(m.id);
      p->set_name(m.name);
      for (const auto& u : m.peer_urls) p->add_peer_urls(u);
      for (const auto& u : m.client_urls) p->add_client_urls(u);
      p->set_is_learner(m.is_learner);
    }
    return r;
  };
  auto transport = peer::PeerTransport::Create(po, cb);
  if (!transport.ok()) return transport.status();
  transport_ = std::move(*transport);
  SyncPeers();

  db_size_bytes_ = store_->Stats().db_size_bytes;
  has_leader_->Set(0);
  is_leader_->Set(0);
  metrics_->gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.")
      .Set(static_cast<double>(config_.EffectiveQuotaBytes()));
  metrics_
      ->gauge("etcd_server_version",
              "Which version is running. 1 for 'server_version' label with current version.",
              {{"server_version", kServerVersion}})
      .Set(1);
  metrics_->gauge_fn("etcd_mvcc_db_total_size_in_bytes",
                     "Total size of the underlying database physically allocated in bytes.",
                     [this] { return static_cast<double>(db_size_bytes_.load()); });
  metrics_->gauge_fn("etcd_mvcc_db_total_size_in_use_in_bytes",
                     "Total size of the underlying database logically in use in bytes.",
                     [this] { return static_cast<double>(store_->Stats().db_size_in_use_bytes); });
  metrics_->gauge_fn("etcd_debugging_mvcc_keys_total", "Total number of keys.",
                     [this] { return static_cast<double>(store_->Stats().keys_total); });
  metrics_->gauge_fn("etcd_debugging_mvcc_watcher_total", "Total number of watchers.",
                     [this] { return static_cast<double>(watch_hub_->watcher_count()); });
  metrics_->gauge_fn("etcd_debugging_mvcc_slow_watcher_total",
                     "Total number of unsynced slow watchers.",
                     [this] { return static_cast<double>(watch_hub_->unsynced_count()); });
  metrics_->gauge_fn("etcd_debugging_mvcc_current_revision", "The current revision of store.",
                     [this] { return static_cast<double>(store_->rev()); });
  metrics_->gauge_fn("etcd_debugging_mvcc_compact_revision",
                     "The revision of the last compaction in store.",
                     [this] { return static_cast<double>(store_->compact_rev()); });
  metrics_->gauge_fn("etcd_server_leases_total", "The number of leases granted.",
                     [this] { return static_cast<double>(lessor_->Ids().size()); });
  metrics_->gauge_fn("etcd_server_id", "Server or member ID in hexadecimal format.",
                     [] { return 1.0; });

  raft_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "raft");
    RaftLoop();
  });
  apply_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "apply");
    ApplyLoop();
  });
  completion_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "complete");
    CompletionLoop();
  });
  for (int i = 0; i < 2; ++i) {
    read_pool_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "read");
      ReadPoolLoop();
    });
  }
  snapshot_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "snapshot");
    SnapshotLoop();
  });
  housekeeping_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "housekeeping");
    HousekeepingLoop();
  });
  return absl::OkStatus();
}

EtcdServer::~EtcdServer() { Stop(); }

void EtcdServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(raft_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  raft_cv_.notify_all();
  { std::lock_guard<std::mutex> lock(housekeeping_mu_); }
  housekeeping_cv_.notify_all();
  // The raft thread may wait for the apply thread (back-pressure, snapshot install).
  { std::lock_guard<std::mutex> lock(apply_mu_); }
  apply_cv_.notify_all();
  if (transport_) transport_->Stop();
  if (raft_thread_.joinable()) raft_thread_.join();
  leader_forwarder_.reset();
  {
    std::vector<MoveLeaderWait> waits;
    {
      std::lock_guard<std::mutex> lock(move_leader_mu_);
      waits.swap(move_leader_threads_);
    }
    for (auto& w : waits) w.thread.join();
  }
  { std::lock_guard<std::mutex> lock(apply_mu_); }
  apply_cv_.notify_all();
  if (apply_thread_.joinable()) apply_thread_.join();
  {
    std::lock_guard<std::mutex> lock(read_pool_mu_);
    read_pool_stop_ = true;
  }
  read_pool_cv_.notify_all();
  for (auto& t : read_pool_) t.join();
  read_pool_.clear();
  {
    std::lock_guard<std::mutex> lock(snap_mu_);
    snap_stop_ = true;
  }
  snap_cv_.notify_all();
  if (snapshot_thread_.joinable()) snapshot_thread_.join();
  {
    // The apply thread is gone: the queue only drains from here on.
    std::lock_guard<std::mutex> lock(completion_mu_);
    completion_stop_ = true;
  }
  completion_cv_.notify_all();
  if (completion_thread_.joinable()) completion_thread_.join();
  if (housekeeping_thread_.joinable()) housekeeping_thread_.join();
  FailAll(ErrStopped());
  if (store_) {
    // A clean stop leaves nothing to replay.
    auto st = store_->Flush();
    if (!st.ok()) LogJson("warn", absl::StrCat("flush at stop failed: ", st.ToString()));
  }
  watch_hub_.reset();
}

void EtcdServer::FailAll(const grpc::Status& status) {
  std::unordered_map<uint64_t, Waiter> waiters;
  std::unordered_map<uint64_t, ConfWaiter> conf_waiters;
  std::multimap<uint64_t, ReadWaiter> reads;
  std::vector<ReadWaiter> new_reads;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    waiters.swap(waiters_);
    conf_waiters.swap(conf_waiters_);
    reads.swap(reads_by_index_);
  }
  {
    std::lock_guard<std::mutex> lock(raft_mu_);
    pending_.clear();
    pending_budget_.Clear();
    new_reads.swap(new_reads_);
  }
  for (auto& [id, w] : waiters) w.done(status);
  for (auto& [id, w] : conf_waiters) w.done(status);
  for (auto& [i, r] : reads) r.done(status);
  for (auto& r : new_reads) r.done(status);
  for (auto& [ctx, list] : reads_in_flight_) {
    for (auto& r : list) r.done(status);
  }
  reads_in_flight_.clear();
}

uint64_t EtcdServer::NextRequestId() {
  return id_prefix_ | ((id_counter_.fetch_add(1) + 1) & ((1ull << 48) - 1));
}

void EtcdServer::FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const {
  header->set_cluster_id(cluster_id_.load());
  header->set_member_id(self_id_);
  header->set_revision(rev);
  header->set_raft_term(raft_term());
}

// ---------------------------------------------------------------------------------------------
// Requests

void EtcdServer::Propose(meridianpb::InternalRequest request, google::protobuf::Message* response,
                         Done done) {
  uint64_t id = NextRequestId();
  request.set_id(id);
  // Serialized here, on the caller's thread, so the size check happens before queueing and the
  // raft thread only moves bytes.
  std::string data = request.SerializeAsString();
  if (data.size() > config_.max_request_bytes) {
    done(ErrRequestTooLarge());
    return;
  }
  if (leader_.load() == raft::kNone) {
    done(ErrNoLeader());
    return;
  }
  if (is_learner() && !request.has_member_attributes()) {
    done(ErrNotSupportedForLearner());  // etcd: a learner serves serializable reads only
    return;
  }
  {
    std::lock_guard<std::mutex> wl(waiters_mu_);
    std::lock_guard<std::mutex> lock(raft_mu_);
    if (stopping_) {
      done(ErrStopped());
      return;
    }
    if (!pending_budget_.Admits(1, data.size())) {
      done(ErrTooManyRequests());
      return;
    }
    pending_budget_.Add(1, data.size());
    pending_.emplace_back(id, std::move(data));
    waiters_.emplace(id, Waiter{std::move(request), response, std::move(done), RequestDeadline()});
    proposals_pending_->Set(static_cast<double>(pending_.size()));
  }
  raft_cv_.notify_one();
}

void EtcdServer::ReadIndex(Done done) {
  if (is_learner()) {
    done(ErrNotSupportedForLearner());
    return;
  }
  if (leader_.load() == raft::kNone) {
    done(ErrNoLeader());
    return;
  }
  if (sole_voter_.load() && leader_.load() == self_id_) {
    // Nobody else can lead, so the read index is simply the commit index: no heartbeat round.
    // (After a restart, committed entries may still be on their way to the store.)
    const uint64_t index = committed_index_.load();
    if (store_->consistent_index() >= index) {
      done(grpc::Status::OK);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(waiters_mu_);
      // The apply thread publishes its index before it takes this lock to release reads.
      if (store_->consistent_index() < index) {
        reads_by_index_.emplace(index, ReadWaiter{std::move(done), RequestDeadline()});
        return;
      }
    }
    done(grpc::Status::OK);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(raft_mu_);
    if (stopping_) {
      done(ErrStopped());
      return;
    }
    if (new_reads_.size() >= kMaxPending) {
      done(ErrTooManyRequests());
      return;
    }
    new_reads_.push_back(ReadWaiter{std::move(done), RequestDeadline()});
  }
  raft_cv_.notify_one();
}

// ---------------------------------------------------------------------------------------------
// Membership

// Membership changes queued for the raft thread at most; more get "too many requests".
constexpr size_t kMaxPendingMembershipChanges = 64;

void EtcdServer::ProposeConfChange(MembershipChange kind, raft::ConfChange cc,
                                   etcdserverpb::Member member, google::protobuf::Message* response,
                                   Done done) {
  if (leader_.load() == raft::kNone) {
    done(ErrNoLeader());
    return;
  }
  uint64_t id = NextRequestId();
  PendingConfChange pc;
  pc.kind = kind;
  pc.member_id = cc.node_id;
  pc.peer_urls.assign(member.peerurls().begin(), member.peerurls().end());
  pc.request_id = id;
  meridianpb::ConfChangeContext ctx;
  ctx.set_request_id(id);
  *ctx.mutable_member() = std::move(member);
  cc.context = ctx.SerializeAsString();
  pc.cc = std::move(cc);
  QueueMembershipChange(std::move(pc), response, meridianpb::InternalRequest(), std::move(done));
}

void EtcdServer::QueueMembershipChange(PendingConfChange pc, google::protobuf::Message* response,
                                       meridianpb::InternalRequest update, Done done) {
  {
    std::lock_guard<std::mutex> wl(waiters_mu_);
    std::lock_guard<std::mutex> lock(raft_mu_);
    if (stopping_) {
      done(ErrStopped());
      return;
    }
    if (membership_changes_queued_.load() >= kMaxPendingMembershipChanges) {
      done(ErrTooManyRequests());
      return;
    }
    ++membership_changes_queued_;
    if (pc.kind == MembershipChange::kUpdate) {
      waiters_.emplace(pc.request_id,
                       Waiter{std::move(update), response, std::move(done), RequestDeadline()});
    } else {
      conf_waiters_.emplace(pc.request_id,
                            ConfWaiter{response, std::move(done), RequestDeadline()});
    }
    new_conf_changes_.push_back(std::move(pc));
  }
  raft_cv_.notify_one();
}

bool EtcdServer::MembershipChangeWaiting(const PendingConfChange& pc) const {
  return pc.kind == MembershipChange::kUpdate ? waiters_.count(pc.request_id) != 0
                                              : conf_waiters_.count(pc.request_id) != 0;
}

grpc::Status EtcdServer::CheckMembershipChange(MembershipChange kind, uint64_t member_id,
                                               const std::vector<std::string>& peer_urls) const {
  std::lock_guard<std::mutex> lock(members_mu_);
  auto target = members_.find(member_id);
  switch (kind) {
    case MembershipChange::kAdd:
    case MembershipChange::kAddLearner:
      if (target != members_.end()) return ErrMemberExist();
      break;
    case MembershipChange::kPromote:
      if (target == members_.end()) return ErrMemberNotFound();
      if (!target->second.is_learner) return ErrMemberNotLearner();
      return grpc::Status::OK;
    case MembershipChange::kRemove:
      return target == members_.end() ? ErrMemberNotFound() : grpc::Status::OK;
    case MembershipChange::kUpdate:
      if (target == members_.end()) return ErrMemberNotFound();
      break;
  }
  int learners = 0;
  for (const auto& [id, m] : members_) {
    learners += m.is_learner ? 1 : 0;
    if (id == member_id) continue;  // an update may keep its own URLs
    for (const auto& u : m.peer_urls) {
      if (std::find(peer_urls.begin(), peer_urls.end(), u) != peer_urls.end()) {
        return ErrPeerURLExist();
      }
    }
  }
  // etcd's default --experimental-max-learners is 1.
  if (kind == MembershipChange::kAddLearner && learners >= 1) return ErrTooManyLearners();
  return grpc::Status::OK;
}

void EtcdServer::FailMembershipChange(const PendingConfChange& pc, const grpc::Status& status) {
  Done done;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    if (pc.kind == MembershipChange::kUpdate) {
      if (auto it = waiters_.find(pc.request_id); it != waiters_.end()) {
        done = std::move(it->second.done);
        waiters_.erase(it);
      }
    } else if (auto it = conf_waiters_.find(pc.request_id); it != conf_waiters_.end()) {
      done = std::move(it->second.done);
      conf_waiters_.erase(it);
    }
  }
  if (done) Complete({{std::move(done), status}});
}

void EtcdServer::ProposeMembershipChange(PendingConfChange pc) {
  {
    // A waiter that timed out meanwhile was answered already: its change is dropped.
    std::lock_guard<std::mutex> lock(waiters_mu_);
    if (!MembershipChangeWaiting(pc)) return;
  }
  if (!is_leader()) {
    FailMembershipChange(pc,
                         node_->raft().lead() == raft::kNone ? ErrNoLeader() : ErrLeaderChanged());
    return;
  }
  if (grpc::Status gs = CheckMembershipChange(pc.kind, pc.member_id, pc.peer_urls); !gs.ok()) {
    FailMembershipChange(pc, gs);
    return;
  }
  if (pc.kind == MembershipChange::kUpdate) {
    // An update changes no raft configuration: it is a normal entry, applied like any other.
    if (auto st = node_->Propose(std::move(pc.update_data)); !st.ok()) {
      FailMembershipChange(
          pc, absl::IsResourceExhausted(st) ? ErrTooManyRequests() : ErrLeaderChanged());
    }
    return;
  }
  if (pc.kind == MembershipChange::kPromote) {
    // etcd refuses a learner that is not caught up (90% of the leader's log).
    const auto* pr = node_->raft().tracker().Get(pc.member_id);
    if (pr == nullptr ||
        static_cast<double>(pr->match) < 0.9 * static_cast<double>(raft_storage_.LastIndex())) {
      FailMembershipChange(pc, ErrLearnerNotReady());
      return;
    }
  }
  if (config_.strict_reconfig_check) {
    // etcd's --strict-reconfig-check: refuse a change after which the members that are up
    // (recently heard from) would not form a quorum.
    const auto& tr = node_->raft().tracker();
    auto cs = node_->conf_state();
    std::vector<uint64_t> voters = cs.voters;
    bool add_voter = pc.cc.type == raft::ConfChange::Type::kAddNode;
    if (add_voter && std::find(voters.begin(), voters.end(), pc.member_id) == voters.end()) {
      voters.push_back(pc.member_id);
    }
    if (pc.cc.type == raft::ConfChange::Type::kRemoveNode) {
      voters.erase(std::remove(voters.begin(), voters.end(), pc.member_id), voters.end());
    }
    size_t active = 0;
    for (uint64_t v : voters) {
      const auto* pr = tr.Get(v);
      if (v == self_id_ || (pr != nullptr && pr->recent_active)) ++active;
    }
    // A new voter is not up yet: it counts only once it has started. A single member may
    // always grow (it cannot serve anything meanwhile anyway, as in etcd).
    if (cs.voters.size() > 1 && !voters.empty() && active < voters.size() / 2 + 1) {
      FailMembershipChange(pc, ErrUnhealthy());
      return;
    }
  }
  if (auto st = node_->ProposeConfChange(pc.cc); !st.ok()) {
    FailMembershipChange(pc, node_->raft().lead() == raft::kNone
                                 ? ErrNoLeader()
                                 : grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                                absl::StrCat("etcdserver: ", st.message())));
  }
}

void EtcdServer::ForwardToLeader(
    Done done,
    std::function<grpc::Status(etcdserverpb::Cluster::Stub*, grpc::ClientContext*)> call) {
  if (leader_.load() == raft::kNone) {
    done(ErrNoLeader());
    return;
  }
  leader_forwarder_->Submit([done = std::move(done),
                             call = std::move(call)](const std::shared_ptr<grpc::Channel>& leader) {
    if (!leader) {
      done(ErrNoLeader());
      return;
    }
    auto stub = etcdserverpb::Cluster::NewStub(leader);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    done(call(stub.get(), &ctx));
  });
}

void EtcdServer::AddMember(std::vector<std::string> peer_urls, bool is_learner,
                           etcdserverpb::MemberAddResponse* resp, Done done) {
  if (!is_leader()) {
    // The leader checks against the membership it is about to change (duplicate URLs, learner
    // count, --strict-reconfig-check): forward, as etcd does.
    etcdserverpb::MemberAddRequest req;
    for (const auto& u : peer_urls) req.add_peerurls(u);
    req.set_islearner(is_learner);
    ForwardToLeader(std::move(done),
                    [req, resp](etcdserverpb::Cluster::Stub* stub, grpc::ClientContext* ctx) {
                      return stub->MemberAdd(ctx, req, resp);
                    });
    return;
  }
  if (peer_urls.empty()) {
    done(ErrMemberBadURLs());
    return;
  }
  for (const auto& u : peer_urls) {
    if (!peer::PeerUrlToTarget(u).ok()) {
      done(ErrMemberBadURLs());
      return;
    }
  }
  Member m;
  m.peer_urls = peer_urls;
  m.is_learner = is_learner;
  // etcd: SHA-1 of the peer URLs, the cluster name and the time.
  m.id = ComputeMemberId(peer_urls,
                         absl::StrCat(config_.initial_cluster_token,
                                      std::chrono::system_clock::now().time_since_epoch().count()));
  const auto kind = is_learner ? MembershipChange::kAddLearner : MembershipChange::kAdd;
  // Checked here to answer early, and again on the raft thread, where changes are serialized.
  if (grpc::Status gs = CheckMembershipChange(kind, m.id, peer_urls); !gs.ok()) {
    done(gs);
    return;
  }
  raft::ConfChange cc;
  cc.type = is_learner ? raft::ConfChange::Type::kAddLearnerNode : raft::ConfChange::Type::kAddNode;
  cc.node_id = m.id;
  ProposeConfChange(kind, std::move(cc), ToProto(m), resp, std::move(done));
}

void EtcdServer::RemoveMember(uint64_t id, etcdserverpb::MemberRemoveResponse* resp, Done done) {
  if (!is_leader()) {
    etcdserverpb::MemberRemoveRequest req;
    req.set_id(id);
    ForwardToLeader(std::move(done),
                    [req, resp](etcdserverpb::Cluster::Stub* stub, grpc::ClientContext* ctx) {
                      return stub->MemberRemove(ctx, req, resp);
                    });
    return;
  }
  if (grpc::Status gs = CheckMembershipChange(MembershipChange::kRemove, id, {}); !gs.ok()) {
    done(gs);
    return;
  }
  raft::ConfChange cc;
  cc.type = raft::ConfChange::Type::kRemoveNode;
  cc.node_id = id;
  etcdserverpb::Member m;
  m.set_id(id);
  ProposeConfChange(MembershipChange::kRemove, std::move(cc), std::move(m), resp, std::move(done));
}

void EtcdServer::PromoteMember(uint64_t id, etcdserverpb::MemberPromoteResponse* resp, Done done) {
  auto m = FindMember(id);
  if (!m) {
    done(ErrMemberNotFound());
    return;
  }
  if (!m->is_learner) {
    done(ErrMemberNotLearner());
    return;
  }
  if (!is_leader()) {
    // Only the leader knows how far the learner got: ask it, as etcd does.
    etcdserverpb::MemberPromoteRequest req;
    req.set_id(id);
    ForwardToLeader(std::move(done),
                    [req, resp](etcdserverpb::Cluster::Stub* stub, grpc::ClientContext* ctx) {
                      return stub->MemberPromote(ctx, req, resp);
                    });
    return;
  }
  raft::ConfChange cc;
  cc.type = raft::ConfChange::Type::kAddNode;
  cc.node_id = id;
  m->is_learner = false;
  // The readiness check runs on the raft thread, where the progress tracker lives.
  ProposeConfChange(MembershipChange::kPromote, std::move(cc), ToProto(*m), resp, std::move(done));
}

void EtcdServer::UpdateMember(uint64_t id, std::vector<std::string> peer_urls,
                              etcdserverpb::MemberUpdateResponse* resp, Done done) {
  for (const auto& u : peer_urls) {
    if (!peer::PeerUrlToTarget(u).ok()) {
      done(ErrMemberBadURLs());
      return;
    }
  }
  if (!is_leader()) {
    // Updates take the leader's one-at-a-time path too, so an update and an add cannot both
    // claim a URL.
    etcdserverpb::MemberUpdateRequest req;
    req.set_id(id);
    for (const auto& u : peer_urls) req.add_peerurls(u);
    ForwardToLeader(std::move(done),
                    [req, resp](etcdserverpb::Cluster::Stub* stub, grpc::ClientContext* ctx) {
                      return stub->MemberUpdate(ctx, req, resp);
                    });
    return;
  }
  if (grpc::Status gs = CheckMembershipChange(MembershipChange::kUpdate, id, peer_urls); !gs.ok()) {
    done(gs);
    return;
  }
  meridianpb::InternalRequest req;
  const uint64_t request_id = NextRequestId();
  req.set_id(request_id);
  auto* u = req.mutable_member_update();
  u->set_id(id);
  for (const auto& url : peer_urls) u->add_peerurls(url);
  PendingConfChange pc;
  pc.kind = MembershipChange::kUpdate;
  pc.member_id = id;
  pc.peer_urls = std::move(peer_urls);
  pc.update_data = req.SerializeAsString();
  pc.request_id = request_id;
  QueueMembershipChange(std::move(pc), resp, std::move(req), std::move(done));
}

void EtcdServer::MoveLeader(uint64_t target, Done done) {
  if (!is_leader()) {
    done(ErrNotLeader());
    return;
  }
  auto m = FindMember(target);
  if (!m || m->is_learner) {
    done(ErrBadLeaderTransferee());
    return;
  }
  if (target == self_id_) {
    done(grpc::Status::OK);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(raft_mu_);
    transfer_requests_.push_back(target);
  }
  raft_cv_.notify_one();
  // Wait (off the gRPC thread) for the leadership to move, as etcd does.
  std::lock_guard<std::mutex> lock(move_leader_mu_);
  for (auto it = move_leader_threads_.begin(); it != move_leader_threads_.end();) {
    if (it->finished->load()) {
      it->thread.join();
      it = move_leader_threads_.erase(it);
    } else {
      ++it;
    }
  }
  if (move_leader_threads_.size() >= kMaxMoveLeaderWaits) {
    done(ErrTooManyRequests());
    return;
  }
  auto finished = std::make_shared<std::atomic<bool>>(false);
  MoveLeaderWait wait;
  wait.finished = finished;
  wait.thread = std::thread([this, target, finished, done = std::move(done)] {
    struct MarkFinished {
      std::atomic<bool>* flag;
      ~MarkFinished() { flag->store(true); }
    } mark{finished.get()};
    auto deadline =
        std::chrono::steady_clock::now() +
        std::chrono::milliseconds(std::max<uint32_t>(config_.election_timeout_ms, 100) * 5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (leader_.load() == target) {
        done(grpc::Status::OK);
        return;
      }
      {
        std::lock_guard<std::mutex> lock(raft_mu_);
        if (stopping_) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    done(ErrTimeoutLeaderTransfer());
  });
  move_leader_threads_.push_back(std::move(wait));
}

// ---------------------------------------------------------------------------------------------
// The raft thread

void EtcdServer::RaftLoop() {
  using clock = std::chrono::steady_clock;
  const auto tick = std::chrono::milliseconds(std::max<uint32_t>(config_.heartbeat_interval_ms, 1));
  auto next_tick = clock::now() + tick;
  bool campaigned = false;
  std::deque<std::pair<uint64_t, std::string>> proposals;
  std::deque<raft::Message> inbox;
  std::vector<std::pair<raft::Message, std::string>> snaps;
  std::vector<uint64_t> unreachable;
  std::vector<std::pair<uint64_t, bool>> snap_status;
  std::vector<ReadWaiter> reads;
  std::vector<PendingConfChange> confs;
  std::deque<PendingConfChange> conf_queue;  // waiting for the apply thread (below)
  uint64_t conf_barrier = 0;
  std::vector<uint64_t> transfers;
  uint64_t flushed = 0;
  uint64_t flushed_term = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(raft_mu_);
      // A queued membership change waits for the apply thread, which does not signal this
      // thread: look again every millisecond meanwhile.
      const auto wake = conf_queue.empty()
                            ? next_tick
                            : std::min(next_tick, clock::now() + std::chrono::milliseconds(1));
      raft_cv_.wait_until(lock, wake, [&] {
        return stopping_ || !pending_.empty() || !inbox_.empty() || !snapshot_inbox_.empty() ||
               !unreachable_.empty() || !snapshot_status_.empty() || !new_reads_.empty() ||
               !new_conf_changes_.empty() || !transfer_requests_.empty() ||
               store_flushed_index_ != 0;
      });
      if (stopping_) return;
      size_t n = std::min(pending_.size(), kMaxProposalsPerLoop);
      for (size_t i = 0; i < n; ++i) {
        pending_budget_.Remove(1, pending_.front().second.size());
        proposals.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      proposals_pending_->Set(static_cast<double>(pending_.size()));
      inbox.swap(inbox_);
      inbox_budget_.Clear();
      snaps.swap(snapshot_inbox_);
      unreachable.swap(unreachable_);
      snap_status.swap(snapshot_status_);
      reads.swap(new_reads_);
      confs.swap(new_conf_changes_);
      transfers.swap(transfer_requests_);
      flushed = std::exchange(store_flushed_index_, 0);
      flushed_term = store_flushed_term_;
    }
    auto now = clock::now();
    if (now >= next_tick) {
      node_->Tick();
      next_tick += tick;
      if (next_tick < now) next_tick = now + tick;  // fell behind (e.g. a long fsync)
    }
    if (!campaigned) {
      // A single voter need not wait an election timeout to lead.
      campaigned = true;
      auto cs = node_->conf_state();
      if (cs.voters.size() == 1 && cs.voters[0] == self_id_) (void)node_->Campaign();
    }
    for (auto& m : inbox) (void)node_->Step(m);
    inbox.clear();
    for (auto& [m, path] : snaps) {
      uint64_t index = m.snapshot ? m.snapshot->metadata.index : 0;
      auto old = received_snapshots_.find(index);
      if (old != received_snapshots_.end()) std::filesystem::remove(old->second);
      received_snapshots_[index] = path;
      (void)node_->Step(m);
    }
    snaps.clear();
    for (uint64_t id : unreachable) node_->ReportUnreachable(id);
    unreachable.clear();
    for (auto [id, ok] : snap_status) {
      node_->ReportSnapshot(id, ok);
      std::lock_guard<std::mutex> lock(snap_mu_);
      if (auto it = sent_images_.find(id); it != sent_images_.end()) {
        std::filesystem::remove(it->second);
        sent_images_.erase(it);
      }
    }
    snap_status.clear();
    if (!proposals.empty()) {
      std::vector<std::pair<Done, grpc::Status>> failed;
      for (auto& [id, data] : proposals) {
        auto st = node_->Propose(std::move(data));
        if (st.ok()) continue;
        grpc::Status gs = absl::IsResourceExhausted(st)         ? ErrTooManyRequests()
                          : node_->raft().lead() == raft::kNone ? ErrNoLeader()
                                                                : ErrLeaderChanged();
        std::lock_guard<std::mutex> lock(waiters_mu_);
        if (auto it = waiters_.find(id); it != waiters_.end()) {
          failed.emplace_back(std::move(it->second.done), gs);
          waiters_.erase(it);
        }
      }
      proposals.clear();
      if (!failed.empty()) Complete(std::move(failed));
    }
    // Membership changes go one at a time, and each is checked against a membership with every
    // entry before it applied: two adds claiming one URL (or the last learner slot) cannot both
    // pass, and raft never takes a change the membership records would refuse. The wait is for
    // the apply thread to reach the log's end as it was when the change came up; later entries
    // are this leader's normal proposals, and every membership change comes through here.
    for (auto& pc : confs) conf_queue.push_back(std::move(pc));
    if (!conf_queue.empty()) {
      // Changes whose callers timed out (e.g. while no quorum let the log apply) leave.
      std::lock_guard<std::mutex> lock(waiters_mu_);
      membership_changes_queued_ -= std::erase_if(
          conf_queue, [&](const PendingConfChange& pc) { return !MembershipChangeWaiting(pc); });
    }
    while (!conf_queue.empty()) {
      if (conf_barrier == 0) conf_barrier = node_->raft().log().LastIndex();
      if (is_leader() && store_->consistent_index() < conf_barrier) break;
      conf_barrier = 0;
      PendingConfChange pc = std::move(conf_queue.front());
      conf_queue.pop_front();
      --membership_changes_queued_;
      ProposeMembershipChange(std::move(pc));
    }
    confs.clear();
    if (!reads.empty()) {
      std::string ctx(8, '\0');
      uint64_t seq = ++read_seq_;
      for (int i = 0; i < 8; ++i) ctx[i] = static_cast<char>((seq >> (8 * i)) & 0xff);
      auto st = node_->ReadIndex(ctx);
      if (st.ok()) {
        auto& list = reads_in_flight_[ctx];
        for (auto& r : reads) list.push_back(std::move(r));
      } else {
        std::vector<std::pair<Done, grpc::Status>> failed;
        grpc::Status gs = node_->raft().lead() == raft::kNone ? ErrNoLeader() : ErrTimeout();
        for (auto& r : reads) failed.emplace_back(std::move(r.done), gs);
        Complete(std::move(failed));
      }
      reads.clear();
    }
    for (uint64_t target : transfers) (void)node_->TransferLeader(target);
    transfers.clear();
    // Reads whose round was lost (leadership changed): etcd answers them with a timeout.
    if (!reads_in_flight_.empty()) {
      std::vector<std::pair<Done, grpc::Status>> expired;
      for (auto it = reads_in_flight_.begin(); it != reads_in_flight_.end();) {
        auto& list = it->second;
        for (auto r = list.begin(); r != list.end();) {
          if (r->deadline <= now) {
            expired.emplace_back(std::move(r->done), ErrTimeout());
            r = list.erase(r);
          } else {
            ++r;
          }
        }
        it = list.empty() ? reads_in_flight_.erase(it) : std::next(it);
      }
      if (!expired.empty()) Complete(std::move(expired));
    }
    while (node_->HasReady()) HandleReady(node_->GetReady());
    if (flushed != 0) ReleaseWal(flushed, flushed_term);
    if (uint64_t applied = store_->consistent_index();
        applied >= raft_storage_.snapshot().metadata.index +
                       std::min<uint64_t>(kRaftCompactEveryEntries, config_.snapshot_count)) {
      CompactRaftMemory(applied);
    }
  }
}

void EtcdServer::SendMessages(std::vector<raft::Message> msgs) {
  std::vector<raft::Message> normal;
  normal.reserve(msgs.size());
  for (auto& m : msgs) {
    if (m.type == raft::MessageType::kSnap) {
      {
        std::lock_guard<std::mutex> lock(snap_mu_);
        snapshots_to_send_.push_back(std::move(m));
      }
      snap_cv_.notify_one();
    } else {
      normal.push_back(std::move(m));
    }
  }
  if (!normal.empty()) transport_->Send(std::move(normal));
}

void EtcdServer::HandleReady(raft::Ready rd) {
  if (rd.soft_state) {
    uint64_t old = leader_.exchange(rd.soft_state->leader);
    if (old != rd.soft_state->leader) {
      if (rd.soft_state->leader != raft::kNone) leader_changes_->Inc();
      LogJson("info", absl::StrCat("raft: ", Hex(self_id_), " sees leader ",
                                   Hex(rd.soft_state->leader), " at term ", node_->raft().term()));
      if (rd.soft_state->leader == self_id_) lessor_->RenewAll();
    }
    has_leader_->Set(rd.soft_state->leader != raft::kNone ? 1 : 0);
    is_leader_->Set(rd.soft_state->leader == self_id_ ? 1 : 0);
  }
  term_ = node_->raft().term();
  SendMessages(std::move(rd.early_messages));

  if (rd.snapshot) {
    if (auto st = InstallSnapshot(*rd.snapshot); !st.ok()) {
      if (absl::IsCancelled(st)) return;  // stopping: nothing of this Ready is acknowledged
      Fatal(absl::StrCat("failed to install a snapshot: ", st.ToString()));
    }
  }
  if (!rd.entries.empty() || rd.hard_state) {
    std::vector<wal::Entry> entries;
    entries.reserve(rd.entries.size());
    for (const auto& e : rd.entries) entries.push_back(ToWal(e));
    wal::HardState hs;
    if (rd.hard_state)
      hs = wal::HardState{rd.hard_state->term, rd.hard_state->vote, rd.hard_state->commit};
    auto start = std::chrono::steady_clock::now();
    auto st = wal_->Append(std::span<const wal::Entry>(entries), rd.hard_state ? &hs : nullptr);
    if (st.ok() && rd.must_sync) st = wal_->Sync();
    // Without a durable log nothing acknowledged can be promised; etcd exits here too.
    if (!st.ok()) Fatal(absl::StrCat("failed to write the log: ", st.ToString()));
    if (rd.must_sync) wal_fsync_seconds_->Observe(SecondsSince(start));
    if (!rd.entries.empty()) {
      if (auto s2 = raft_storage_.Append(rd.entries); !s2.ok()) {
        Fatal(absl::StrCat("raft storage append: ", s2.ToString()));
      }
    }
    if (rd.hard_state) {
      raft_storage_.SetHardState(*rd.hard_state);
      committed_index_ = rd.hard_state->commit;
    }
  }
  SendMessages(std::move(rd.messages));

  std::vector<ApplyEntry> batch;
  batch.reserve(rd.committed_entries.size());
  for (const auto& e : rd.committed_entries) {
    ApplyEntry ae;
    if (e.type == raft::EntryType::kConfChange) {
      auto cc = raft::DecodeConfChange(e.data);
      if (cc.ok()) {
        auto cs = node_->ApplyConfChange(*cc);
        if (cs.ok()) {
          ae.conf_state = *cs;
          conf_at_[e.index] = *cs;
        }
      }
    }
    batch.push_back(std::move(ae));
  }
  if (!rd.read_states.empty()) {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    for (auto& rs : rd.read_states) {
      auto it = reads_in_flight_.find(rs.context);
      if (it == reads_in_flight_.end()) continue;
      for (auto& r : it->second) reads_by_index_.emplace(rs.index, std::move(r));
      reads_in_flight_.erase(it);
    }
  }
  {
    // Membership takes effect when appended, so this follows every Ready.
    // A new leader knows the commit index only once it committed an entry of its own term
    // (raft §6.4); until then reads take the regular path, which waits for that.
    auto cs = node_->conf_state();
    const auto& r = node_->raft();
    sole_voter_ = cs.voters.size() == 1 && cs.voters[0] == self_id_ &&
                  r.log().TermOrZero(r.log().committed()) == r.term();
  }
  // Advance reads the committed entries (their payload sizes release raft's uncommitted-bytes
  // budget), so they move to the apply thread only afterwards.
  node_->Advance(rd);
  if (!batch.empty()) {
    for (size_t i = 0; i < batch.size(); ++i) batch[i].entry = std::move(rd.committed_entries[i]);
    proposals_committed_->Inc(static_cast<double>(batch.size()));
    const size_t bytes = EntriesBytes(batch);
    {
      std::unique_lock<std::mutex> lock(apply_mu_);
      // Back-pressure: raft may not run unboundedly ahead of the apply loop.
      apply_cv_.wait(lock,
                     [&] { return committed_budget_.Admits(batch.size(), bytes) || stopping_; });
      committed_budget_.Add(batch.size(), bytes);
      committed_.push_back(std::move(batch));
    }
    apply_cv_.notify_all();
  }
  if (!rd.read_states.empty()) CompleteReads(store_->consistent_index());
}

// Raft's in-memory log keeps only a catch-up tail behind the applied index: everything applied
// is in the store, which is what a follower that needs older entries gets (as a store image).
// This bounds the memory the log takes to the catch-up tail plus what is not applied yet,
// instead of everything since the last store flush.
void EtcdServer::CompactRaftMemory(uint64_t applied) {
  if (applied <= raft_storage_.snapshot().metadata.index || applied > raft_storage_.LastIndex()) {
    return;
  }
  raft::ConfState cs = base_conf_;
  for (auto it = conf_at_.begin(); it != conf_at_.end() && it->first <= applied; ++it) {
    cs = it->second;
  }
  if (auto st = raft_storage_.CreateSnapshot(applied, cs, ""); !st.ok()) return;
  // Forget conf history the snapshot covers.
  while (!conf_at_.empty() && conf_at_.begin()->first <= applied) {
    base_conf_ = conf_at_.begin()->second;
    conf_at_.erase(conf_at_.begin());
  }
  if (applied > config_.snapshot_catchup_entries) {
    uint64_t compact = applied - config_.snapshot_catchup_entries;
    if (compact > raft_storage_.FirstIndex()) (void)raft_storage_.Compact(compact);
  }
}

// The store was flushed up to (index, term): the WAL before it is no longer needed to recover.
void EtcdServer::ReleaseWal(uint64_t index, uint64_t term) {
  if (auto st = wal_->SaveSnapshotMarker(wal::SnapshotMarker{index, term}); !st.ok()) {
    LogJson("warn", absl::StrCat("wal snapshot marker failed: ", st.ToString()));
    return;
  }
  if (auto st = wal_->ReleaseBefore(index + 1); !st.ok()) {
    LogJson("warn", absl::StrCat("wal release failed: ", st.ToString()));
  }
}

absl::Status EtcdServer::InstallSnapshot(const raft::Snapshot& snap) {
  const uint64_t index = snap.metadata.index;
  auto it = received_snapshots_.find(index);
  if (it == received_snapshots_.end()) {
    return absl::InternalError(absl::StrCat("no store image for snapshot ", index));
  }
  std::string path = it->second;
  received_snapshots_.erase(it);
  // Everything handed to the apply thread must be applied first: the image replaces it.
  {
    std::unique_lock<std::mutex> lock(apply_mu_);
    apply_cv_.wait(lock, [&] { return (committed_.empty() && !apply_busy_) || stopping_; });
    if (stopping_) return absl::CancelledError("stopping");
    apply_busy_ = true;
  }
  absl::Status st = store_->ImportImage(path, {kMetaMemberId});
  std::filesystem::remove(path);
  {
    std::lock_guard<std::mutex> lock(apply_mu_);
    apply_busy_ = false;
  }
  apply_cv_.notify_all();
  if (!st.ok()) return st;
  LogJson("info", absl::StrCat("installed a snapshot at index ", index, "; store at index ",
                               store_->consistent_index(), ", revision ", store_->rev()));
  // The image is at least as new as the snapshot (the leader wrote it later).
  if (auto s = wal_->SaveSnapshotMarker(wal::SnapshotMarker{index, snap.metadata.term}); !s.ok()) {
    return s;
  }
  raft::Snapshot meta = snap;
  meta.data.clear();
  if (auto s = raft_storage_.ApplySnapshot(meta); !s.ok()) return s;
  base_conf_ = snap.metadata.conf_state;
  conf_at_.clear();
  // The apply thread is idle (it waits for this Ready's entries): safe to set its term here.
  if (auto t = store_->GetMeta(kMetaAppliedTerm); t.ok() && t->has_value() && (*t)->size() == 8) {
    applied_term_ = mvcc::GetBigEndian64(**t);
  }
  // Everything derived from the store follows it.
  if (auto s = LoadLeasesAndAlarms(); !s.ok()) return s;
  if (auto s = LoadMembership(); !s.ok()) return s;
  SyncPeers();
  watch_hub_->Resync(store_->rev());
  CompleteReads(store_->consistent_index());
  return absl::OkStatus();
}

void EtcdServer::SnapshotLoop() {
  while (true) {
    raft::Message m;
    {
      std::unique_lock<std::mutex> lock(snap_mu_);
      snap_cv_.wait(lock, [&] { return snap_stop_ || !snapshots_to_send_.empty(); });
      if (snap_stop_) return;
      m = std::move(snapshots_to_send_.front());
      snapshots_to_send_.pop_front();
      if (sent_images_.count(m.to) != 0) {
        // An image is already on its way to this follower; raft asks again if that one fails.
        continue;
      }
    }
    std::string path = absl::StrCat(config_.data_dir, "/member/snap-out-", Hex(m.to), "-",
                                    NextRequestId(), ".img");
    auto view = store_->View();
    // The image is newer than the snapshot raft asked for: describe the image itself (its index,
    // that entry's term and the membership stored with it), so that the follower's raft log,
    // WAL and store all agree on where it stands.
    {
      auto term = store_->GetMeta(kMetaAppliedTerm, *view);
      auto conf = store_->GetMeta(kMetaConfState, *view);
      if (view->consistent_index() > m.snapshot->metadata.index && term.ok() && term->has_value() &&
          (*term)->size() == 8 && conf.ok() && conf->has_value()) {
        m.snapshot->metadata.index = view->consistent_index();
        m.snapshot->metadata.term = mvcc::GetBigEndian64(**term);
        m.snapshot->metadata.conf_state = DecodeConfState(**conf);
      }
    }
    auto st = store_->ExportImage(*view, path, {kMetaMemberId});
    if (!st.ok()) {
      LogJson("warn", absl::StrCat("cannot write a snapshot for ", Hex(m.to), ": ", st.ToString()));
      std::filesystem::remove(path);
      {
        std::lock_guard<std::mutex> rl(raft_mu_);
        snapshot_status_.emplace_back(m.to, false);
      }
      raft_cv_.notify_one();
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(snap_mu_);
      sent_images_[m.to] = path;
    }
    m.snapshot->data.clear();
    transport_->SendSnapshot(std::move(m), path);
  }
}

// ---------------------------------------------------------------------------------------------
// The apply thread

void EtcdServer::ApplyLoop() {
  while (true) {
    std::vector<ApplyEntry> entries;
    {
      std::unique_lock<std::mutex> lock(apply_mu_);
      apply_cv_.wait(lock, [&] { return stopping_ || (!committed_.empty() && !apply_busy_); });
      // Entries already committed are applied even when stopping, so that their proposers get
      // an answer.
      if (committed_.empty() || apply_busy_) return;
      while (!committed_.empty() && entries.size() < kMaxApplyBatchEntries) {
        committed_budget_.Remove(committed_.front().size(), EntriesBytes(committed_.front()));
        for (auto& e : committed_.front()) entries.push_back(std::move(e));
        committed_.pop_front();
      }
      apply_busy_ = true;
    }
    apply_cv_.notify_all();
    size_t n = entries.size();
    if (auto st = ApplyEntries(std::move(entries)); !st.ok()) {
      Fatal(absl::StrCat("failed to apply committed entries: ", st.ToString()));
    }
    {
      std::lock_guard<std::mutex> lock(apply_mu_);
      apply_busy_ = false;
    }
    apply_cv_.notify_all();
    entries_since_flush_ += n;
    if (entries_since_flush_ >= config_.snapshot_count) {
      entries_since_flush_ = 0;
      uint64_t applied = store_->consistent_index();
      uint64_t term = applied_term_;
      if (auto st = store_->Flush(); st.ok()) {
        {
          std::lock_guard<std::mutex> lock(raft_mu_);
          store_flushed_index_ = applied;
          store_flushed_term_ = term;
        }
        raft_cv_.notify_one();
      } else {
        LogJson("warn", absl::StrCat("store flush failed: ", st.ToString()));
      }
    }
  }
}

void EtcdServer::Complete(std::vector<std::pair<Done, grpc::Status>> completions) {
  if (completions.empty()) return;
  {
    std::lock_guard<std::mutex> lock(completion_mu_);
    if (!completion_stop_) {
      completion_queue_.push_back(std::move(completions));
      completions.clear();
    }
  }
  completion_cv_.notify_one();
  // After stop nobody drains the queue: answer here.
  for (auto& [done, st] : completions) done(st);
}

void EtcdServer::CompleteReads(uint64_t applied) {
  std::vector<Done> ready;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    auto end = reads_by_index_.upper_bound(applied);
    for (auto it = reads_by_index_.begin(); it != end; ++it) {
      ready.push_back(std::move(it->second.done));
    }
    reads_by_index_.erase(reads_by_index_.begin(), end);
  }
  if (ready.empty()) return;
  {
    std::lock_guard<std::mutex> lock(read_pool_mu_);
    if (!read_pool_stop_) {
      for (auto& d : ready) read_pool_queue_.push_back(std::move(d));
      ready.clear();
    }
  }
  read_pool_cv_.notify_all();
  for (auto& d : ready) d(grpc::Status::OK);  // after stop: nobody drains the pool
}

void EtcdServer::ReadPoolLoop() {
  std::unique_lock<std::mutex> lock(read_pool_mu_);
  while (true) {
    read_pool_cv_.wait(lock, [&] { return read_pool_stop_ || !read_pool_queue_.empty(); });
    if (read_pool_queue_.empty()) return;
    Done d = std::move(read_pool_queue_.front());
    read_pool_queue_.pop_front();
    lock.unlock();
    d(grpc::Status::OK);
    lock.lock();
  }
}

absl::Status EtcdServer::ApplyEntries(std::vector<ApplyEntry> entries) {
  const uint64_t ci = store_->consistent_index();
  mvcc::ApplyBatch batch(store_.get());
  std::vector<std::pair<Done, grpc::Status>> completions;
  std::vector<std::function<void()>> after_commit;
  completions.reserve(entries.size());
  meridianpb::InternalRequest parsed;
  const raft::Entry* last = nullptr;
  for (const auto& ae : entries) {
    const raft::Entry& entry = ae.entry;
    // Already in the store (it came with a snapshot image newer than the snapshot index).
    if (entry.index <= ci) continue;
    last = &entry;
    if (entry.type == raft::EntryType::kConfChange) {
      ApplyConfEntry(&batch, ae, &completions);
      continue;
    }
    if (entry.data.empty()) continue;  // a new leader's empty entry
    Waiter w;
    if (uint64_t id = PeekRequestId(entry.data); id != 0) {
      std::lock_guard<std::mutex> lock(waiters_mu_);
      auto it = waiters_.find(id);
      if (it != waiters_.end()) {
        w = std::move(it->second);
        waiters_.erase(it);
      }
    }
    const meridianpb::InternalRequest* reqp = &w.request;
    if (!w.done) {
      // No local proposer (another member's entry, or one whose proposer gave up): decode it.
      if (!parsed.ParseFromString(entry.data)) {
        return absl::DataLossError(absl::StrCat("undecodable log entry at index ", entry.index));
      }
      reqp = &parsed;
    }
    const meridianpb::InternalRequest& req = *reqp;
    grpc::Status st = ApplyRequest(&batch, req, w.response, &after_commit);
    if (!st.ok()) proposals_failed_->Inc();
    if (w.done && st.ok() && req.has_compaction() && req.compaction().physical()) {
      // etcd's physical compaction answers once the compacted entries are gone from disk.
      int64_t rev = req.compaction().revision();
      after_commit.push_back([this, rev, done = std::move(w.done)] {
        store_->OnCompacted(rev, [done] { done(grpc::Status::OK); });
      });
      continue;
    }
    if (w.done) completions.emplace_back(std::move(w.done), st);
  }
  if (last == nullptr) return absl::OkStatus();
  batch.SetConsistentIndex(last->index);
  applied_term_ = last->term;
  std::string term;
  mvcc::PutBigEndian64(&term, last->term);
  batch.PutMeta(kMetaAppliedTerm, term);
  auto start = std::chrono::steady_clock::now();
  if (auto st = batch.Commit(); !st.ok()) return st;
  backend_commit_seconds_->Observe(SecondsSince(start));
  proposals_applied_->Inc(static_cast<double>(entries.size()));
  watch_hub_->Notify(batch.events(), batch.rev());
  for (auto& fn : after_commit) fn();
  Complete(std::move(completions));
  CompleteReads(last->index);
  return absl::OkStatus();
}

void EtcdServer::ApplyConfEntry(mvcc::ApplyBatch* batch, const ApplyEntry& ae,
                                std::vector<std::pair<Done, grpc::Status>>* completions) {
  auto cc = raft::DecodeConfChange(ae.entry.data);
  meridianpb::ConfChangeContext ctx;
  if (cc.ok() && !cc->context.empty()) (void)ctx.ParseFromString(cc->context);
  ConfWaiter waiter;
  if (ctx.request_id() != 0) {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    if (auto it = conf_waiters_.find(ctx.request_id()); it != conf_waiters_.end()) {
      waiter = std::move(it->second);
      conf_waiters_.erase(it);
    }
  }
  if (!cc.ok() || !ae.conf_state) {
    if (waiter.done) {
      completions->emplace_back(std::move(waiter.done),
                                grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                             "etcdserver: invalid membership change"));
    }
    return;
  }
  // The member records as they are after this change.
  std::map<uint64_t, Member> members;
  {
    std::lock_guard<std::mutex> lock(members_mu_);
    members = members_;
  }
  const uint64_t id = cc->node_id;
  bool removed_self = false;
  switch (cc->type) {
    case raft::ConfChange::Type::kAddNode:
    case raft::ConfChange::Type::kAddLearnerNode: {
      Member m;
      if (auto it = members.find(id); it != members.end()) m = it->second;
      if (ctx.has_member() && ctx.member().peerurls_size() > 0) {
        Member from = FromProto(ctx.member());
        m.peer_urls = from.peer_urls;
        if (m.name.empty()) m.name = from.name;
      }
      m.id = id;
      m.is_learner = cc->type == raft::ConfChange::Type::kAddLearnerNode;
      members[id] = m;
      batch->PutMeta(MemberKey(id), ToProto(m).SerializeAsString());
      break;
    }
    case raft::ConfChange::Type::kRemoveNode:
      members.erase(id);
      batch->DeleteMeta(MemberKey(id));
      removed_self = id == self_id_;
      break;
  }
  batch->PutMeta(kMetaConfState, EncodeConfState(*ae.conf_state));
  {
    std::lock_guard<std::mutex> lock(members_mu_);
    members_ = members;
    if (removed_self) removed_ = true;
  }
  SyncPeers();
  if (waiter.done) {
    if (auto* r = dynamic_cast<etcdserverpb::MemberAddResponse*>(waiter.response)) {
      *r->mutable_member() = ToProto(members[id]);
      FillMembers(r->mutable_members());
      FillHeader(r->mutable_header(), 0);
    } else if (auto* r = dynamic_cast<etcdserverpb::MemberRemoveResponse*>(waiter.response)) {
      FillMembers(r->mutable_members());
      FillHeader(r->mutable_header(), 0);
    } else if (auto* r = dynamic_cast<etcdserverpb::MemberPromoteResponse*>(waiter.response)) {
      FillMembers(r->mutable_members());
      FillHeader(r->mutable_header(), 0);
    }
    completions->emplace_back(std::move(waiter.done), grpc::Status::OK);
  }
  if (removed_self) {
    // etcd stops a member removed from the cluster.
    LogJson("warn", "this member was removed from the cluster; shutting down");
    kill(getpid(), SIGTERM);
  }
}

void EtcdServer::CompletionLoop() {
  while (true) {
    std::vector<std::pair<Done, grpc::Status>> batch;
    {
      std::unique_lock<std::mutex> lock(completion_mu_);
      completion_cv_.wait(lock, [&] { return completion_stop_ || !completion_queue_.empty(); });
      if (completion_queue_.empty()) return;
      batch = std::move(completion_queue_.front());
      completion_queue_.pop_front();
    }
    for (auto& [done, st] : batch) done(st);
  }
}

grpc::Status EtcdServer::ApplyRequest(mvcc::ApplyBatch* batch,
                                      const meridianpb::InternalRequest& req,
                                      google::protobuf::Message* response,
                                      std::vector<std::function<void()>>* after_commit) {
  ApplyContext ctx;
  auto lease_exists = [this](int64_t id) { return lessor_->Exists(id); };
  const bool nospace = nospace_.load();
  switch (req.op_case()) {
    case meridianpb::InternalRequest::kPut: {
      if (nospace) return ErrNoSpace();
      auto txn = batch->BeginTxn();
      ctx = ApplyContext{&txn, lease_exists};
      auto* resp = static_cast<etcdserverpb::PutResponse*>(response);
      auto st = ApplyPut(ctx, req.put(), resp);
      int64_t rev = txn.End();
      if (resp) FillHeader(resp->mutable_header(), rev);
      return st;
    }
    case meridianpb::InternalRequest::kDeleteRange: {
      auto txn = batch->BeginTxn();
      ctx = ApplyContext{&txn, lease_exists};
      auto* resp = static_cast<etcdserverpb::DeleteRangeResponse*>(response);
      auto st = ApplyDeleteRange(ctx, req.delete_range(), resp);
      int64_t rev = txn.End();
      if (resp) FillHeader(resp->mutable_header(), rev);
      return st;
    }
    case meridianpb::InternalRequest::kTxn: {
      if (nospace && TxnHasPuts(req.txn())) return ErrNoSpace();
      auto txn = batch->BeginTxn();
      ctx = ApplyContext{&txn, lease_exists};
      auto* resp = static_cast<etcdserverpb::TxnResponse*>(response);
      auto st = ApplyTxn(ctx, req.txn(), resp);
      if (!st.ok() && txn.changed()) {
        // Prechecks make this unreachable; a partly applied txn must never be committed.
        Fatal(absl::StrCat("txn failed after writing: ", st.error_message()));
      }
      int64_t rev = txn.End();
      if (resp) FillHeader(resp->mutable_header(), rev);
      return st;
    }
    case meridianpb::InternalRequest::kCompaction: {
      auto* resp = static_cast<etcdserverpb::CompactionResponse*>(response);
      int64_t rev = req.compaction().revision();
      auto s = batch->Compact(rev);
      if (!s.ok()) return ToGrpc(s);
      if (resp) FillHeader(resp->mutable_header(), batch->rev());
      return grpc::Status::OK;
    }
    case meridianpb::InternalRequest::kLeaseGrant: {
      if (nospace) return ErrNoSpace();
      const auto& g = req.lease_grant();
      if (lessor_->Exists(g.id())) return ErrLeaseExist();
      int64_t ttl = lessor_->EffectiveTtl(g.ttl());
      auto txn = batch->BeginTxn();
      auto s = txn.PutLease(mvcc::LeaseRecord{g.id(), ttl});
      txn.End();
      if (!s.ok()) return ToGrpc(s);
      lessor_->Grant(g.id(), ttl);
      if (auto* resp = static_cast<etcdserverpb::LeaseGrantResponse*>(response)) {
        resp->set_id(g.id());
        resp->set_ttl(ttl);
        FillHeader(resp->mutable_header(), batch->rev());
      }
      return grpc::Status::OK;
    }
    case meridianpb::InternalRequest::kLeaseRevoke: {
      int64_t id = req.lease_revoke().id();
      if (!lessor_->Exists(id)) return ErrLeaseNotFound();
      auto txn = batch->BeginTxn();
      auto keys = txn.LeaseKeys(id);
      if (!keys.ok()) {
        txn.End();
        return ToGrpc(keys.status());
      }
      for (const auto& k : *keys) {
        auto d = txn.DeleteRange(k, "");
        if (!d.ok()) Fatal(absl::StrCat("lease revoke: ", d.status().ToString()));
      }
      auto s = txn.DeleteLease(id);
      int64_t rev = txn.End();
      if (!s.ok()) Fatal(absl::StrCat("lease revoke: ", s.ToString()));
      lessor_->Revoke(id);
      if (auto* resp = static_cast<etcdserverpb::LeaseRevokeResponse*>(response)) {
        FillHeader(resp->mutable_header(), rev);
      }
      return grpc::Status::OK;
    }
    case meridianpb::InternalRequest::kAlarm: {
      const auto& a = req.alarm();
      auto* resp = static_cast<etcdserverpb::AlarmResponse*>(response);
      std::lock_guard<std::mutex> lock(alarm_mu_);
      auto find = [&](uint64_t member, etcdserverpb::AlarmType type) {
        return std::find_if(alarms_.begin(), alarms_.end(), [&](const auto& m) {
          return m.memberid() == member && m.alarm() == type;
        });
      };
      switch (a.action()) {
        case etcdserverpb::AlarmRequest::GET:
          if (resp) {
            for (const auto& m : alarms_) *resp->add_alarms() = m;
          }
          break;
        case etcdserverpb::AlarmRequest::ACTIVATE: {
          if (a.alarm() == etcdserverpb::NONE) break;
          if (find(a.memberid(), a.alarm()) != alarms_.end()) break;
          etcdserverpb::AlarmMember m;
          m.set_memberid(a.memberid());
          m.set_alarm(a.alarm());
          alarms_.push_back(m);
          batch->PutMeta(AlarmKey(m.memberid(), m.alarm()), m.SerializeAsString());
          if (m.alarm() == etcdserverpb::NOSPACE) nospace_ = true;
          if (resp) *resp->add_alarms() = m;
          break;
        }
        case etcdserverpb::AlarmRequest::DEACTIVATE: {
          auto it = find(a.memberid(), a.alarm());
          if (it == alarms_.end()) break;
          if (resp) *resp->add_alarms() = *it;
          batch->DeleteMeta(AlarmKey(it->memberid(), it->alarm()));
          alarms_.erase(it);
          bool any_nospace = std::any_of(alarms_.begin(), alarms_.end(), [](const auto& m) {
            return m.alarm() == etcdserverpb::NOSPACE;
          });
          nospace_ = any_nospace;
          if (!any_nospace) nospace_raising_ = false;
          break;
        }
        default:
          break;
      }
      // No header: etcd (3.4, Debian's) answers alarms without one.
      return grpc::Status::OK;
    }
    case meridianpb::InternalRequest::kMemberUpdate: {
      const auto& u = req.member_update();
      {
        std::lock_guard<std::mutex> lock(members_mu_);
        auto it = members_.find(u.id());
        if (it == members_.end()) return ErrMemberNotFound();
        // The leader checked this against the membership before proposing it; an entry from a
        // member that did not (an older version) is checked here, the same on every member.
        for (const auto& [id, m] : members_) {
          if (id == u.id()) continue;
          for (const auto& url : m.peer_urls) {
            if (std::find(u.peerurls().begin(), u.peerurls().end(), url) != u.peerurls().end()) {
              return ErrPeerURLExist();
            }
          }
        }
        it->second.peer_urls.assign(u.peerurls().begin(), u.peerurls().end());
        batch->PutMeta(MemberKey(u.id()), ToProto(it->second).SerializeAsString());
      }
      after_commit->push_back([this] { SyncPeers(); });
      if (auto* resp = static_cast<etcdserverpb::MemberUpdateResponse*>(response)) {
        FillMembers(resp->mutable_members());
        FillHeader(resp->mutable_header(), 0);
      }
      return grpc::Status::OK;
    }
    case meridianpb::InternalRequest::kMemberAttributes: {
      const auto& a = req.member_attributes();
      std::lock_guard<std::mutex> lock(members_mu_);
      auto it = members_.find(a.id());
      if (it == members_.end()) return ErrMemberNotFound();
      it->second.name = a.name();
      it->second.client_urls.assign(a.clienturls().begin(), a.clienturls().end());
      batch->PutMeta(MemberKey(a.id()), ToProto(it->second).SerializeAsString());
      return grpc::Status::OK;
    }
    default:
      return grpc::Status(grpc::StatusCode::INTERNAL, "unknown log entry");
  }
}

std::vector<etcdserverpb::AlarmMember> EtcdServer::Alarms() const {
  std::lock_guard<std::mutex> lock(alarm_mu_);
  return alarms_;
}

bool EtcdServer::NoSpaceAlarmed() const { return nospace_.load(); }

bool EtcdServer::QuotaAvailable(size_t cost_bytes) const {
  if (config_.quota_backend_bytes < 0 || cost_bytes == 0) return true;
  const auto quota = static_cast<uint64_t>(config_.EffectiveQuotaBytes());
  if (db_size_bytes_.load() + cost_bytes < quota) return true;
  // The sample may predate a compaction and defragmentation that just freed space (a client
  // that defragments, disarms and writes at once must not be refused): look again.
  db_size_bytes_ = store_->Stats().db_size_bytes;
  return db_size_bytes_.load() + cost_bytes < quota;
}

void EtcdServer::RaiseNoSpace() {
  if (nospace_.load() || nospace_raising_.exchange(true)) return;
  meridianpb::InternalRequest req;
  auto* a = req.mutable_alarm();
  a->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  a->set_memberid(self_id_);
  a->set_alarm(etcdserverpb::NOSPACE);
  Propose(std::move(req), nullptr, [this](grpc::Status st) {
    if (!st.ok()) nospace_raising_ = false;
  });
}

void EtcdServer::HousekeepingLoop() {
  using namespace std::chrono;
  auto last_lease_check = steady_clock::now();
  auto last_progress = steady_clock::now();
  auto last_compaction = steady_clock::now();
  auto last_publish = steady_clock::now() - seconds(10);
  steady_clock::time_point leaderless_since{};
  auto last_membership_check = steady_clock::now();
  // Periodic auto-compaction: (time, revision) samples; compact to the newest sample older
  // than the retention.
  std::deque<std::pair<steady_clock::time_point, int64_t>> samples;
  int64_t retention_ms = 0;
  int64_t retention_revs = 0;
  if (config_.auto_compaction_mode == "periodic") {
    auto ms = ParseDurationMs(config_.auto_compaction_retention);
    if (ms.ok()) {
      retention_ms = *ms;
    } else {
      // A bare number means hours (etcd).
      try {
        retention_ms = static_cast<int64_t>(std::stod(config_.auto_compaction_retention) * 3600000);
      } catch (...) {
        retention_ms = 0;
      }
    }
  } else {
    try {
      retention_revs = std::stoll(config_.auto_compaction_retention);
    } catch (...) {
      retention_revs = 0;
    }
  }
  std::unique_lock<std::mutex> lock(housekeeping_mu_);
  while (true) {
    housekeeping_cv_.wait_for(lock, milliseconds(100));
    {
      std::lock_guard<std::mutex> plock(raft_mu_);
      if (stopping_) return;
    }
    auto now = steady_clock::now();
    ExpireRequests(now);
    // A member removed from the cluster may never see its removal commit (the leader stops
    // replicating to it first): when it has had no leader for a while, it asks the others
    // whether it is still a member, and stops if not, as etcd does.
    if (leader() == raft::kNone) {
      if (leaderless_since == steady_clock::time_point{}) leaderless_since = now;
      if (now - leaderless_since >= milliseconds(3 * config_.election_timeout_ms) &&
          now - last_membership_check >= seconds(2)) {
        last_membership_check = now;
        CheckStillMember();
      }
    } else {
      leaderless_since = {};
    }
    // Publish this member's name and client URLs through the log until they are there.
    if (leader() != raft::kNone && now - last_publish >= seconds(1)) {
      auto me = FindMember(self_id_);
      if (me && (me->name != config_.name || me->client_urls != config_.advertise_client_urls)) {
        last_publish = now;
        meridianpb::InternalRequest req;
        auto* a = req.mutable_member_attributes();
        a->set_id(self_id_);
        a->set_name(config_.name);
        for (const auto& u : config_.advertise_client_urls) a->add_clienturls(u);
        Propose(std::move(req), nullptr, [](grpc::Status) {});
      }
    }
    db_size_bytes_ = store_->Stats().db_size_bytes;
    // Only the leader expires leases (its revoke goes through the log to everyone).
    if (is_leader() && now - last_lease_check >= milliseconds(500)) {
      last_lease_check = now;
      for (int64_t id : lessor_->TakeExpired(1000, seconds(3))) {
        meridianpb::InternalRequest req;
        req.mutable_lease_revoke()->set_id(id);
        Propose(std::move(req), nullptr, [](grpc::Status) {});
      }
    }
    if (config_.watch_progress_notify_interval_ms > 0 &&
        now - last_progress >= milliseconds(config_.watch_progress_notify_interval_ms)) {
      last_progress = now;
      watch_hub_->NotifyProgress();
    }
    int64_t target = 0;
    if (retention_ms > 0) {
      int64_t sample_every_ms = std::max<int64_t>(retention_ms / 10, 1000);
      if (samples.empty() || now - samples.back().first >= milliseconds(sample_every_ms)) {
        samples.emplace_back(now, store_->rev());
      }
      while (samples.size() > 1 && now - samples[1].first >= milliseconds(retention_ms)) {
        samples.pop_front();
      }
      if (now - samples.front().first >= milliseconds(retention_ms) &&
          now - last_compaction >= milliseconds(std::min<int64_t>(retention_ms, 3600000))) {
        target = samples.front().second;
      }
    } else if (retention_revs > 0 && now - last_compaction >= minutes(5)) {
      target = store_->rev() - retention_revs;
    }
    if (is_leader() && target > store_->compact_rev() && target <= store_->rev()) {
      last_compaction = now;
      meridianpb::InternalRequest req;
      req.mutable_compaction()->set_revision(target);
      Propose(std::move(req), nullptr, [](grpc::Status) {});
    }
  }
}

void EtcdServer::CheckStillMember() {
  std::vector<std::string> urls;
  for (const auto& m : Members()) {
    if (m.id == self_id_) continue;
    urls.insert(urls.end(), m.peer_urls.begin(), m.peer_urls.end());
  }
  if (urls.empty()) return;
  auto info = peer::PeerTransport::FetchClusterInfo(urls, 1000);
  if (!info.ok() || info->cluster_id() != cluster_id_.load() || info->members_size() == 0) return;
  for (const auto& m : info->members()) {
    if (m.id() == self_id_) return;
  }
  {
    std::lock_guard<std::mutex> lock(members_mu_);
    if (removed_) return;
    removed_ = true;
  }
  LogJson("warn", "this member was removed from the cluster; shutting down");
  kill(getpid(), SIGTERM);
}

// Requests whose entry never came back (lost with a leader change) get etcd's timeout.
void EtcdServer::ExpireRequests(std::chrono::steady_clock::time_point now) {
  std::vector<std::pair<Done, grpc::Status>> expired;
  {
    std::lock_guard<std::mutex> lock(waiters_mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.deadline <= now) {
        expired.emplace_back(std::move(it->second.done), ErrTimeout());
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = conf_waiters_.begin(); it != conf_waiters_.end();) {
      if (it->second.deadline <= now) {
        expired.emplace_back(std::move(it->second.done), ErrTimeout());
        it = conf_waiters_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = reads_by_index_.begin(); it != reads_by_index_.end();) {
      if (it->second.deadline <= now) {
        expired.emplace_back(std::move(it->second.done), ErrTimeout());
        it = reads_by_index_.erase(it);
      } else {
        ++it;
      }
    }
  }
  Complete(std::move(expired));
}
}  // namespace meridian::server
