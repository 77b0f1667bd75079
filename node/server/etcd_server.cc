#include "node/server/etcd_server.h"

#include <openssl/sha.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "node/server/errors.h"
#include "node/server/kv_apply.h"
#include "node/server/version.h"
#include "node/wal/wal.h"

namespace meridian::server {
namespace {

constexpr size_t kMaxLogBatchEntries = 2048;
constexpr size_t kMaxApplyBatchEntries = 4096;
constexpr char kMetaMemberId[] = "member_id";
constexpr char kMetaClusterId[] = "cluster_id";
constexpr char kMetaAlarmPrefix[] = "alarm/";

[[noreturn]] void Fatal(const std::string& what) {
  fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"%s\"}\n", what.c_str());
  fflush(stderr);
  std::abort();
}

uint64_t Sha1Prefix(const std::string& bytes) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  return v;
}

// etcd's member id: SHA-1 of the sorted peer URLs and the cluster token.
uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& token) {
  std::sort(peer_urls.begin(), peer_urls.end());
  std::string b;
  for (const auto& u : peer_urls) b += u;
  b += token;
  return Sha1Prefix(b);
}

// etcd's cluster id: SHA-1 of the sorted member ids, big-endian.
uint64_t ComputeClusterId(std::vector<uint64_t> ids) {
  std::sort(ids.begin(), ids.end());
  std::string b;
  for (uint64_t id : ids) mvcc::PutBigEndian64(&b, id);
  return Sha1Prefix(b);
}

std::string AlarmKey(uint64_t member, int type) {
  return absl::StrCat(kMetaAlarmPrefix, member, "/", type);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

EtcdServer::EtcdServer(const ServerConfig& config, const lease::Clock* clock,
                       metrics::Registry* metrics)
    : config_(config), clock_(clock), metrics_(metrics) {
  auto buckets = metrics::EtcdDiskDurationBuckets();
  wal_fsync_seconds_ = &metrics->histogram("etcd_disk_wal_fsync_duration_seconds",
                                           "The latency distributions of fsync called by WAL.",
                                           buckets);
  backend_commit_seconds_ = &metrics->histogram(
      "etcd_disk_backend_commit_duration_seconds",
      "The latency distributions of commit called by backend.", buckets);
  proposals_committed_ = &metrics->counter("etcd_server_proposals_committed_total",
                                           "The total number of consensus proposals committed.");
  proposals_applied_ = &metrics->counter("etcd_server_proposals_applied_total",
                                         "The total number of consensus proposals applied.");
  proposals_failed_ = &metrics->counter("etcd_server_proposals_failed_total",
                                        "The total number of failed proposals seen.");
  proposals_pending_ = &metrics->gauge("etcd_server_proposals_pending",
                                       "The current number of pending proposals to commit.");
}

absl::StatusOr<std::unique_ptr<EtcdServer>> EtcdServer::Open(const ServerConfig& config,
                                                             const lease::Clock* clock,
                                                             metrics::Registry* metrics) {
  std::unique_ptr<EtcdServer> s(new EtcdServer(config, clock, metrics));
  if (auto st = s->Init(); !st.ok()) return st;
  return s;
}

absl::Status EtcdServer::Init() {
  std::error_code ec;
  std::string member_dir = config_.data_dir + "/member";
  std::filesystem::create_directories(member_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", member_dir, ": ", ec.message()));
  std::filesystem::permissions(config_.data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);

  // The initial cluster must name this member; more members need Raft (the next issue).
  std::vector<std::string> my_peer_urls;
  std::vector<std::string> others;
  for (absl::string_view piece :
       absl::StrSplit(config_.initial_cluster, ',', absl::SkipEmpty())) {
    std::string_view entry(piece.data(), piece.size());
    auto eq = entry.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--initial-cluster: entry \"", std::string(entry), "\" is not name=url"));
    }
    std::string name(entry.substr(0, eq));
    if (name == config_.name) {
      my_peer_urls.emplace_back(entry.substr(eq + 1));
    } else {
      others.push_back(name);
    }
  }
  if (my_peer_urls.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "couldn't find local name \"", config_.name, "\" in the initial cluster configuration"));
  }
  if (!others.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--initial-cluster lists other members (", others[0],
        ", ...): this build of meridian-node runs single-member clusters only"));
  }

  mvcc::StoreOptions so;
  so.dir = member_dir + "/store";
  auto store = mvcc::Store::Open(so);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);

  // Identity: fixed at first start, as etcd fixes it at bootstrap.
  auto mid = store_->GetMeta(kMetaMemberId);
  auto cid = store_->GetMeta(kMetaClusterId);
  if (!mid.ok()) return mid.status();
  if (!cid.ok()) return cid.status();
  if (mid->has_value() && cid->has_value() && (*mid)->size() == 8 && (*cid)->size() == 8) {
    self_.id = mvcc::GetBigEndian64(**mid);
    cluster_id_ = mvcc::GetBigEndian64(**cid);
  } else {
    self_.id = ComputeMemberId(my_peer_urls, config_.initial_cluster_token);
    cluster_id_ = ComputeClusterId({self_.id});
  }
  self_.name = config_.name;
  self_.peer_urls = my_peer_urls;
  self_.client_urls = config_.advertise_client_urls;
  id_prefix_ = (self_.id & 0xffff) << 48;
  uint64_t now_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  id_counter_ = (now_ms << 8) & ((1ull << 48) - 1);

  lessor_ = std::make_unique<lease::Lessor>(clock_, config_.MinLeaseTtlSeconds());
  {
    auto leases = store_->View()->Leases();
    if (!leases.ok()) return leases.status();
    for (const auto& l : *leases) lessor_->Grant(l.id, l.ttl_seconds);
  }
  {
    auto alarms = store_->ScanMeta(kMetaAlarmPrefix);
    if (!alarms.ok()) return alarms.status();
    for (const auto& [k, v] : *alarms) {
      etcdserverpb::AlarmMember m;
      if (!m.ParseFromString(v)) return absl::DataLossError("bad alarm record");
      if (m.alarm() == etcdserverpb::NOSPACE) nospace_ = true;
      alarms_.push_back(m);
    }
  }

  mvcc::WatchHubOptions wo;
  wo.fill_header = [this](etcdserverpb::ResponseHeader* h, int64_t rev) { FillHeader(h, rev); };
  wo.fragment_bytes = config_.max_request_bytes;
  watch_hub_ = std::make_unique<mvcc::WatchHub>(store_.get(), wo);

  wal::Options wopt;
  wopt.dir = config_.wal_dir;
  std::filesystem::create_directories(config_.wal_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", config_.wal_dir, ": ", ec.message()));
  wal::Recovered rec;
  auto w = wal::Wal::Open(wopt, &rec);
  if (!w.ok()) return w.status();
  wal_ = std::move(*w);
  if (rec.tail_truncated) {
    fprintf(stderr,
            "{\"level\":\"warn\",\"msg\":\"discarded a torn or corrupt log tail\",\"detail\":\"%s\"}\n",
            rec.tail_error.c_str());
  }
  std::vector<LogEntry> entries;
  entries.reserve(rec.entries.size());
  for (auto& e : rec.entries) entries.push_back(LogEntry{e.index, 0, std::move(e.data)});
  if (auto st = Recover(std::move(entries)); !st.ok()) return st;
  last_index_ = std::max<uint64_t>(wal_->last_index(), store_->consistent_index());
  if (wal_->last_index() < store_->consistent_index()) {
    // The log was released up to the store's flushed state (or is new): start it there.
    auto st = wal_->SaveSnapshotMarker(wal::SnapshotMarker{store_->consistent_index(), 1});
    if (!st.ok()) return st;
  }
  committed_index_ = last_index_;

  if (!mid->has_value()) {
    // Persist the identity with the first batch the apply loop commits.
    mvcc::ApplyBatch b(store_.get());
    std::string v;
    mvcc::PutBigEndian64(&v, self_.id);
    b.PutMeta(kMetaMemberId, v);
    v.clear();
    mvcc::PutBigEndian64(&v, cluster_id_);
    b.PutMeta(kMetaClusterId, v);
    if (auto st = b.Commit(); !st.ok()) return st;
    if (auto st = store_->Flush(); !st.ok()) return st;
  }
  db_size_bytes_ = store_->Stats().db_size_bytes;

  metrics_->gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.").Set(1);
  metrics_->gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.").Set(1);
  metrics_->gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.")
      .Set(static_cast<double>(config_.EffectiveQuotaBytes()));
  metrics_->gauge("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.",
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

  log_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "log");
    LogLoop();
  });
  apply_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "apply");
    ApplyLoop();
  });
  completion_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "complete");
    CompletionLoop();
  });
  housekeeping_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "housekeeping");
    HousekeepingLoop();
  });
  return absl::OkStatus();
}

absl::Status EtcdServer::Recover(std::vector<LogEntry> entries) {
  uint64_t ci = store_->consistent_index();
  std::vector<LogEntry> todo;
  for (auto& e : entries) {
    if (e.index > ci) todo.push_back(std::move(e));
  }
  if (!todo.empty() && todo.front().index != ci + 1) {
    return absl::DataLossError(absl::StrCat("the log resumes at index ", todo.front().index,
                                            " but the store is at index ", ci,
                                            ": entries in between are missing"));
  }
  for (size_t i = 0; i < todo.size(); i += kMaxApplyBatchEntries) {
    size_t n = std::min(kMaxApplyBatchEntries, todo.size() - i);
    std::vector<LogEntry> chunk(std::make_move_iterator(todo.begin() + i),
                                std::make_move_iterator(todo.begin() + i + n));
    if (auto st = ApplyAndCommit(chunk, /*replay=*/true); !st.ok()) return st;
  }
  if (!todo.empty()) {
    // What was replayed is now in RocksDB's memtables only: make it durable before new work.
    if (auto st = store_->Flush(); !st.ok()) return st;
  }
  return absl::OkStatus();
}

EtcdServer::~EtcdServer() { Stop(); }

void EtcdServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(propose_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  propose_cv_.notify_all();
  apply_cv_.notify_all();
  housekeeping_cv_.notify_all();
  if (log_thread_.joinable()) log_thread_.join();
  if (apply_thread_.joinable()) apply_thread_.join();
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
    if (!st.ok()) fprintf(stderr, "flush at stop failed: %s\n", st.ToString().c_str());
  }
  watch_hub_.reset();
}

void EtcdServer::FailAll(const grpc::Status& status) {
  std::unordered_map<uint64_t, Waiter> waiters;
  {
    std::lock_guard<std::mutex> lock(propose_mu_);
    waiters.swap(waiters_);
    pending_.clear();
  }
  for (auto& [id, w] : waiters) w.done(status);
}

uint64_t EtcdServer::NextRequestId() {
  return id_prefix_ | ((id_counter_.fetch_add(1) + 1) & ((1ull << 48) - 1));
}

void EtcdServer::FillHeader(etcdserverpb::ResponseHeader* header, int64_t rev) const {
  header->set_cluster_id(cluster_id_);
  header->set_member_id(self_.id);
  header->set_revision(rev);
  header->set_raft_term(raft_term());
}

void EtcdServer::Propose(meridianpb::InternalRequest request, google::protobuf::Message* response,
                         Done done) {
  uint64_t id = NextRequestId();
  request.set_id(id);
  // Serialized here, on the caller's thread, so the size check happens before queueing and the
  // log thread only writes bytes.
  std::string data = request.SerializeAsString();
  if (data.size() > config_.max_request_bytes) {
    done(ErrRequestTooLarge());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(propose_mu_);
    if (stopping_) {
      done(ErrStopped());
      return;
    }
    if (pending_.size() >= max_pending_) {
      done(ErrTooManyRequests());
      return;
    }
    pending_.emplace_back(id, std::move(data));
    waiters_.emplace(id, Waiter{std::move(request), response, std::move(done)});
    proposals_pending_->Set(static_cast<double>(pending_.size()));
  }
  propose_cv_.notify_one();
}

void EtcdServer::LogLoop() {
  std::vector<std::pair<uint64_t, std::string>> batch;
  std::vector<wal::Entry> entries;
  while (true) {
    batch.clear();
    {
      std::unique_lock<std::mutex> lock(propose_mu_);
      propose_cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      while (!pending_.empty() && batch.size() < kMaxLogBatchEntries) {
        batch.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      proposals_pending_->Set(static_cast<double>(pending_.size()));
    }
    if (uint64_t before = release_wal_before_.exchange(0); before > 0) {
      if (auto st = wal_->ReleaseBefore(before); !st.ok()) {
        fprintf(stderr, "wal release failed: %s\n", st.ToString().c_str());
      }
    }
    entries.clear();
    LogBatch committed;
    for (auto& [id, data] : batch) {
      uint64_t index = ++last_index_;
      entries.push_back(wal::Entry{index, raft_term(), data});
      committed.entries.push_back(LogEntry{index, id, std::move(data)});
    }
    auto start = std::chrono::steady_clock::now();
    auto st = wal_->Append(std::span<const wal::Entry>(entries), nullptr);
    if (st.ok()) st = wal_->Sync();
    // Without a durable log nothing acknowledged can be promised; etcd exits here too.
    if (!st.ok()) Fatal(absl::StrCat("failed to write the log: ", st.ToString()));
    wal_fsync_seconds_->Observe(SecondsSince(start));
    committed_index_.store(last_index_);
    proposals_committed_->Inc(static_cast<double>(entries.size()));
    {
      std::unique_lock<std::mutex> lock(apply_mu_);
      // Back-pressure: the log may not run unboundedly ahead of the apply loop.
      apply_cv_.wait(lock, [&] {
        return committed_entries_ < max_committed_entries_ || stopping_;
      });
      committed_entries_ += committed.entries.size();
      committed_.push_back(std::move(committed));
    }
    apply_cv_.notify_all();
  }
}

void EtcdServer::ApplyLoop() {
  while (true) {
    std::vector<LogEntry> entries;
    {
      std::unique_lock<std::mutex> lock(apply_mu_);
      apply_cv_.wait(lock, [&] { return stopping_ || !committed_.empty(); });
      // Entries already durable in the log are applied even when stopping, so that their
      // proposers get an answer.
      if (committed_.empty()) return;
      while (!committed_.empty() && entries.size() < kMaxApplyBatchEntries) {
        for (auto& e : committed_.front().entries) entries.push_back(std::move(e));
        committed_entries_ -= committed_.front().entries.size();
        committed_.pop_front();
      }
    }
    apply_cv_.notify_all();
    if (auto st = ApplyAndCommit(entries, /*replay=*/false); !st.ok()) {
      Fatal(absl::StrCat("failed to apply committed entries: ", st.ToString()));
    }
    entries_since_flush_ += entries.size();
    if (entries_since_flush_ >= config_.snapshot_count) {
      entries_since_flush_ = 0;
      uint64_t applied = store_->consistent_index();
      if (auto st = store_->Flush(); st.ok()) {
        release_wal_before_.store(applied + 1);
      } else {
        fprintf(stderr, "store flush failed: %s\n", st.ToString().c_str());
      }
    }
  }
}

absl::Status EtcdServer::ApplyAndCommit(const std::vector<LogEntry>& entries, bool replay) {
  mvcc::ApplyBatch batch(store_.get());
  std::vector<std::pair<Done, grpc::Status>> completions;
  std::vector<std::function<void()>> after_commit;
  completions.reserve(entries.size());
  meridianpb::InternalRequest parsed;
  for (const auto& entry : entries) {
    Waiter w;
    if (!replay && entry.id != 0) {
      std::lock_guard<std::mutex> lock(propose_mu_);
      auto it = waiters_.find(entry.id);
      if (it != waiters_.end()) {
        w = std::move(it->second);
        waiters_.erase(it);
      }
    }
    const meridianpb::InternalRequest* reqp = &w.request;
    if (!w.done) {
      // No local proposer (replay, or a proposer that gave up): decode what the log holds.
      if (!parsed.ParseFromString(entry.data)) {
        return absl::DataLossError(absl::StrCat("undecodable log entry at index ", entry.index));
      }
      reqp = &parsed;
    }
    const meridianpb::InternalRequest& req = *reqp;
    grpc::Status st = ApplyEntry(&batch, req, w.response, &after_commit);
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
  batch.SetConsistentIndex(entries.back().index);
  auto start = std::chrono::steady_clock::now();
  if (auto st = batch.Commit(); !st.ok()) return st;
  backend_commit_seconds_->Observe(SecondsSince(start));
  proposals_applied_->Inc(static_cast<double>(entries.size()));
  watch_hub_->Notify(batch.events(), batch.rev());
  for (auto& fn : after_commit) fn();
  if (!completions.empty()) {
    {
      std::lock_guard<std::mutex> lock(completion_mu_);
      completion_queue_.push_back(std::move(completions));
    }
    completion_cv_.notify_one();
  }
  return absl::OkStatus();
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

grpc::Status EtcdServer::ApplyEntry(mvcc::ApplyBatch* batch,
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
  return db_size_bytes_.load() + cost_bytes < static_cast<uint64_t>(config_.EffectiveQuotaBytes());
}

void EtcdServer::RaiseNoSpace() {
  if (nospace_.load() || nospace_raising_.exchange(true)) return;
  meridianpb::InternalRequest req;
  auto* a = req.mutable_alarm();
  a->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  a->set_memberid(self_.id);
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
      std::lock_guard<std::mutex> plock(propose_mu_);
      if (stopping_) return;
    }
    auto now = steady_clock::now();
    db_size_bytes_ = store_->Stats().db_size_bytes;
    if (now - last_lease_check >= milliseconds(500)) {
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
    if (target > store_->compact_rev() && target <= store_->rev()) {
      last_compaction = now;
      meridianpb::InternalRequest req;
      req.mutable_compaction()->set_revision(target);
      Propose(std::move(req), nullptr, [](grpc::Status) {});
    }
  }
}

}  // namespace meridian::server
