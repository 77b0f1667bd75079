#include "node/server/services.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "node/server/errors.h"
#include "node/server/etcd_server.h"
#include "node/server/kv_apply.h"
#include "node/server/snapshot.h"
#include "node/server/version.h"

namespace meridian::server {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

// Proposes `req` and finishes `reactor` when it is applied.
ServerUnaryReactor* ProposeAndFinish(EtcdServer* s, CallbackServerContext* ctx,
                                     meridianpb::InternalRequest req,
                                     google::protobuf::Message* resp) {
  auto* reactor = ctx->DefaultReactor();
  s->Propose(std::move(req), resp, [reactor](grpc::Status st) { reactor->Finish(st); });
  return reactor;
}

ServerUnaryReactor* FinishNow(CallbackServerContext* ctx, const grpc::Status& st) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(st);
  return reactor;
}

// ------------------------------------------------------------------------------------------

class KvService final : public etcdserverpb::KV::CallbackService {
 public:
  explicit KvService(EtcdServer* s) : s_(s) {}

  ServerUnaryReactor* Range(CallbackServerContext* ctx, const etcdserverpb::RangeRequest* req,
                            etcdserverpb::RangeResponse* resp) override {
    auto st = CheckRange(*req);
    if (!st.ok()) return FinishNow(ctx, st);
    if (req->serializable()) {
      // Member-local: whatever this member has applied.
      auto view = s_->View();
      st = DoRange(*view, *req, resp);
      if (st.ok()) s_->FillHeader(resp->mutable_header(), resp->header().revision());
      return FinishNow(ctx, st);
    }
    // Linearizable: wait until this member applied everything committed when the read arrived
    // (raft ReadIndex, confirmed by a quorum), then read.
    auto* reactor = ctx->DefaultReactor();
    EtcdServer* s = s_;
    s_->ReadIndex([s, req, resp, reactor](grpc::Status st) {
      if (st.ok()) {
        auto view = s->View();
        st = DoRange(*view, *req, resp);
        if (st.ok()) s->FillHeader(resp->mutable_header(), resp->header().revision());
      }
      reactor->Finish(st);
    });
    return reactor;
  }

  ServerUnaryReactor* Put(CallbackServerContext* ctx, const etcdserverpb::PutRequest* req,
                          etcdserverpb::PutResponse* resp) override {
    auto st = CheckPut(*req);
    if (!st.ok()) return FinishNow(ctx, st);
    if (!s_->QuotaAvailable(req->ByteSizeLong())) {
      s_->RaiseNoSpace();
      return FinishNow(ctx, ErrNoSpace());
    }
    meridianpb::InternalRequest ir;
    *ir.mutable_put() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  ServerUnaryReactor* DeleteRange(CallbackServerContext* ctx,
                                  const etcdserverpb::DeleteRangeRequest* req,
                                  etcdserverpb::DeleteRangeResponse* resp) override {
    auto st = CheckDeleteRange(*req);
    if (!st.ok()) return FinishNow(ctx, st);
    meridianpb::InternalRequest ir;
    *ir.mutable_delete_range() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  ServerUnaryReactor* Txn(CallbackServerContext* ctx, const etcdserverpb::TxnRequest* req,
                          etcdserverpb::TxnResponse* resp) override {
    auto st = CheckTxn(*req, s_->config().max_txn_ops);
    if (!st.ok()) return FinishNow(ctx, st);
    if (TxnHasPuts(*req) && !s_->QuotaAvailable(req->ByteSizeLong())) {
      s_->RaiseNoSpace();
      return FinishNow(ctx, ErrNoSpace());
    }
    // Read-only txns go through the log too: their compares and reads then see one state.
    meridianpb::InternalRequest ir;
    *ir.mutable_txn() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  ServerUnaryReactor* Compact(CallbackServerContext* ctx,
                              const etcdserverpb::CompactionRequest* req,
                              etcdserverpb::CompactionResponse* resp) override {
    meridianpb::InternalRequest ir;
    *ir.mutable_compaction() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

 private:
  EtcdServer* s_;
};

// ------------------------------------------------------------------------------------------

class WatchReactor final
    : public grpc::ServerBidiReactor<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>,
      public mvcc::WatchStream::Sink {
 public:
  explicit WatchReactor(EtcdServer* s) : s_(s) {
    stream_ = s_->watch_hub()->NewStream(this);
    StartRead(&req_);
  }

  void Write(const etcdserverpb::WatchResponse* msg, bool more) override {
    grpc::WriteOptions options;
    if (more) options.set_buffer_hint();  // fewer socket writes under fan-out
    StartWrite(msg, options);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Close();
      return;
    }
    auto* hub = s_->watch_hub();
    switch (req_.request_union_case()) {
      case etcdserverpb::WatchRequest::kCreateRequest:
        hub->Create(stream_, req_.create_request());
        break;
      case etcdserverpb::WatchRequest::kCancelRequest:
        hub->Cancel(stream_, req_.cancel_request().watch_id());
        break;
      case etcdserverpb::WatchRequest::kProgressRequest:
        hub->RequestProgress(stream_);
        break;
      default:
        break;
    }
    StartRead(&req_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Close();
    }
    stream_->OnWriteDone();
    MaybeFinish();
  }

  void OnDone() override { delete this; }

 private:
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    s_->watch_hub()->CloseStream(stream_);
    MaybeFinish();
  }

  void MaybeFinish() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_ || finished_ || stream_->writing()) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  EtcdServer* s_;
  std::shared_ptr<mvcc::WatchStream> stream_;
  etcdserverpb::WatchRequest req_;
  std::mutex mu_;
  bool closed_ = false;
  bool finished_ = false;
};

class WatchService final : public etcdserverpb::Watch::CallbackService {
 public:
  explicit WatchService(EtcdServer* s) : s_(s) {}
  grpc::ServerBidiReactor<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>* Watch(
      CallbackServerContext*) override {
    return new WatchReactor(s_);
  }

 private:
  EtcdServer* s_;
};

// ------------------------------------------------------------------------------------------

class KeepAliveReactor final
    : public grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                                     etcdserverpb::LeaseKeepAliveResponse> {
 public:
  explicit KeepAliveReactor(EtcdServer* s) : s_(s) { StartRead(&req_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      MaybeFinishLocked();
      return;
    }
    etcdserverpb::LeaseKeepAliveResponse resp;
    if (!s_->is_leader() && s_->leader() != 0) {
      // Only the leader's lessor counts (it expires leases): renew there.
      int64_t id = req_.id();
      {
        // Counted before the renewal is queued: the reactor must outlive its answer.
        std::lock_guard<std::mutex> lock(mu_);
        ++forwarding_;
      }
      s_->leader_forwarder()->RenewLease(id, [this, id](std::optional<int64_t> leader_ttl) {
        etcdserverpb::LeaseKeepAliveResponse r;
        r.set_id(id);
        // TTL 0 tells a client its lease is gone for good, so it is sent only when the leader
        // said so; if the leader could not be asked, this member's own table answers and the
        // client's next keepalive tries the leader again.
        auto local = s_->lessor()->Renew(id);
        r.set_ttl(leader_ttl ? *leader_ttl : local.value_or(0));
        s_->FillHeader(r.mutable_header(), s_->store()->rev());
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.size() >= kMaxQueued) queue_.pop_front();
        queue_.push_back(std::move(r));
        if (!writing_ && !finished_) WriteNextLocked();
        --forwarding_;
        MaybeFinishLocked();
      });
      StartRead(&req_);
      return;
    }
    auto ttl = s_->lessor()->Renew(req_.id());
    resp.set_id(req_.id());
    resp.set_ttl(ttl.value_or(0));  // etcd answers TTL 0 for a lease it doesn't have
    s_->FillHeader(resp.mutable_header(), s_->store()->rev());
    {
      std::lock_guard<std::mutex> lock(mu_);
      // A client that sends faster than it reads gets its oldest answers dropped: keepalive
      // answers are idempotent and only the newest matters.
      if (queue_.size() >= kMaxQueued) queue_.pop_front();
      queue_.push_back(std::move(resp));
      if (!writing_) WriteNextLocked();
    }
    StartRead(&req_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) closed_ = true;
    if (!closed_) WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  static constexpr size_t kMaxQueued = 1024;
  void WriteNextLocked() {
    if (queue_.empty()) return;
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&in_flight_);
  }
  void MaybeFinishLocked() {
    if (closed_ && !writing_ && !finished_ && forwarding_ == 0) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  EtcdServer* s_;
  etcdserverpb::LeaseKeepAliveRequest req_;
  etcdserverpb::LeaseKeepAliveResponse in_flight_;
  std::deque<etcdserverpb::LeaseKeepAliveResponse> queue_;
  std::mutex mu_;
  bool writing_ = false;
  bool closed_ = false;
  bool finished_ = false;
  int forwarding_ = 0;  // renewals sent to the leader, not yet answered
};

class LeaseService final : public etcdserverpb::Lease::CallbackService {
 public:
  explicit LeaseService(EtcdServer* s) : s_(s) {}

  ServerUnaryReactor* LeaseGrant(CallbackServerContext* ctx,
                                 const etcdserverpb::LeaseGrantRequest* req,
                                 etcdserverpb::LeaseGrantResponse* resp) override {
    if (req->ttl() > lease::kMaxLeaseTtlSeconds) return FinishNow(ctx, ErrLeaseTTLTooLarge());
    if (!s_->QuotaAvailable(req->ByteSizeLong())) {
      s_->RaiseNoSpace();
      return FinishNow(ctx, ErrNoSpace());
    }
    meridianpb::InternalRequest ir;
    *ir.mutable_lease_grant() = *req;
    if (req->id() == 0) {
      ir.mutable_lease_grant()->set_id(static_cast<int64_t>(s_->NextRequestId() & INT64_MAX));
    }
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  ServerUnaryReactor* LeaseRevoke(CallbackServerContext* ctx,
                                  const etcdserverpb::LeaseRevokeRequest* req,
                                  etcdserverpb::LeaseRevokeResponse* resp) override {
    if (!s_->lessor()->Exists(req->id())) return FinishNow(ctx, ErrLeaseNotFound());
    meridianpb::InternalRequest ir;
    *ir.mutable_lease_revoke() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                          etcdserverpb::LeaseKeepAliveResponse>*
  LeaseKeepAlive(CallbackServerContext*) override {
    return new KeepAliveReactor(s_);
  }

  ServerUnaryReactor* LeaseTimeToLive(CallbackServerContext* ctx,
                                      const etcdserverpb::LeaseTimeToLiveRequest* req,
                                      etcdserverpb::LeaseTimeToLiveResponse* resp) override {
    if (!s_->is_leader() && s_->leader() != 0) {
      // Only the leader sees every keepalive, so only it knows how long a lease has left (a
      // follower's table counts down from the grant). etcd forwards too, and answers "request
      // timed out" when the leader cannot be asked.
      auto* reactor = ctx->DefaultReactor();
      s_->leader_forwarder()->LeaseTimeToLive(
          *req, [reactor, resp](std::optional<etcdserverpb::LeaseTimeToLiveResponse> answer) {
            if (!answer) {
              reactor->Finish(ErrTimeout());
              return;
            }
            *resp = std::move(*answer);
            reactor->Finish(grpc::Status::OK);
          });
      return reactor;
    }
    auto view = s_->View();
    resp->set_id(req->id());
    auto info = s_->lessor()->Get(req->id());
    if (!info) {
      resp->set_ttl(-1);  // etcd's answer for a lease it doesn't have
    } else {
      resp->set_ttl(info->remaining_seconds);
      resp->set_grantedttl(info->granted_ttl_seconds);
      if (req->keys()) {
        auto keys = view->LeaseKeys(req->id());
        if (!keys.ok()) return FinishNow(ctx, ToGrpc(keys.status()));
        for (auto& k : *keys) resp->add_keys(std::move(k));
      }
    }
    s_->FillHeader(resp->mutable_header(), view->rev());
    return FinishNow(ctx, grpc::Status::OK);
  }

  ServerUnaryReactor* LeaseLeases(CallbackServerContext* ctx,
                                  const etcdserverpb::LeaseLeasesRequest*,
                                  etcdserverpb::LeaseLeasesResponse* resp) override {
    for (int64_t id : s_->lessor()->Ids()) resp->add_leases()->set_id(id);
    s_->FillHeader(resp->mutable_header(), s_->store()->rev());
    return FinishNow(ctx, grpc::Status::OK);
  }

 private:
  EtcdServer* s_;
};

// ------------------------------------------------------------------------------------------

class ClusterService final : public etcdserverpb::Cluster::CallbackService {
 public:
  explicit ClusterService(EtcdServer* s) : s_(s) {}

  ServerUnaryReactor* MemberList(CallbackServerContext* ctx, const etcdserverpb::MemberListRequest*,
                                 etcdserverpb::MemberListResponse* resp) override {
    s_->FillMembers(resp->mutable_members());
    s_->FillHeader(resp->mutable_header(), 0);  // etcd's member list header has no revision
    return FinishNow(ctx, grpc::Status::OK);
  }

  ServerUnaryReactor* MemberAdd(CallbackServerContext* ctx,
                                const etcdserverpb::MemberAddRequest* req,
                                etcdserverpb::MemberAddResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    s_->AddMember({req->peerurls().begin(), req->peerurls().end()}, req->islearner(), resp,
                  [reactor](grpc::Status st) { reactor->Finish(st); });
    return reactor;
  }

  ServerUnaryReactor* MemberRemove(CallbackServerContext* ctx,
                                   const etcdserverpb::MemberRemoveRequest* req,
                                   etcdserverpb::MemberRemoveResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    s_->RemoveMember(req->id(), resp, [reactor](grpc::Status st) { reactor->Finish(st); });
    return reactor;
  }

  ServerUnaryReactor* MemberUpdate(CallbackServerContext* ctx,
                                   const etcdserverpb::MemberUpdateRequest* req,
                                   etcdserverpb::MemberUpdateResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    s_->UpdateMember(req->id(), {req->peerurls().begin(), req->peerurls().end()}, resp,
                     [reactor](grpc::Status st) { reactor->Finish(st); });
    return reactor;
  }

  ServerUnaryReactor* MemberPromote(CallbackServerContext* ctx,
                                    const etcdserverpb::MemberPromoteRequest* req,
                                    etcdserverpb::MemberPromoteResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    s_->PromoteMember(req->id(), resp, [reactor](grpc::Status st) { reactor->Finish(st); });
    return reactor;
  }

 private:
  EtcdServer* s_;
};

// ------------------------------------------------------------------------------------------

// Writes a snapshot of the current view to a file on its own thread (it can take a while), then
// streams the file in chunks followed by its SHA-256, as etcd's Snapshot RPC does.
class SnapshotReactor final : public grpc::ServerWriteReactor<etcdserverpb::SnapshotResponse> {
 public:
  SnapshotReactor(EtcdServer* s, std::string path) : s_(s), path_(std::move(path)) {
    writer_ = std::thread([this] {
      auto st = WriteEtcdSnapshot(*s_, *s_->View(), path_);
      if (!st.ok()) {
        Finish(ToGrpc(st));
        return;
      }
      file_.open(path_, std::ios::binary);
      std::error_code ec;
      remaining_ = std::filesystem::file_size(path_, ec);
      if (!sha_ || EVP_DigestInit_ex(sha_.get(), EVP_sha256(), nullptr) != 1) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "snapshot: cannot start SHA-256"));
        return;
      }
      if (!file_ || ec) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "snapshot: cannot read the snapshot file"));
        return;
      }
      Next();
    });
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "snapshot: client went away"));
      return;
    }
    if (done_) {
      Finish(grpc::Status::OK);
      return;
    }
    Next();
  }
  void OnDone() override {
    if (writer_.joinable()) writer_.join();
    file_.close();
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    delete this;
  }

 private:
  void Next() {
    resp_.Clear();
    s_->FillHeader(resp_.mutable_header(), s_->store()->rev());
    if (remaining_ == 0) {
      unsigned char digest[SHA256_DIGEST_LENGTH];
      unsigned int digest_len = 0;
      if (EVP_DigestFinal_ex(sha_.get(), digest, &digest_len) != 1 ||
          digest_len != sizeof(digest)) {
        Finish(grpc::Status(grpc::StatusCode::INTERNAL, "snapshot: SHA-256 failed"));
        return;
      }
      resp_.set_blob(reinterpret_cast<char*>(digest), sizeof(digest));
      resp_.set_remaining_bytes(0);
      resp_.set_version(kClusterVersion);
      done_ = true;
      StartWrite(&resp_);
      return;
    }
    std::string buf(std::min<uint64_t>(remaining_, kChunkBytes), '\0');
    file_.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (!file_) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "snapshot: short read"));
      return;
    }
    if (EVP_DigestUpdate(sha_.get(), buf.data(), buf.size()) != 1) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, "snapshot: SHA-256 failed"));
      return;
    }
    remaining_ -= buf.size();
    resp_.set_remaining_bytes(remaining_ + SHA256_DIGEST_LENGTH);
    resp_.set_blob(std::move(buf));
    StartWrite(&resp_);
  }
  static constexpr uint64_t kChunkBytes = 32 * 1024;
  EtcdServer* s_;
  std::string path_;
  std::thread writer_;
  std::ifstream file_;
  uint64_t remaining_ = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha_{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  etcdserverpb::SnapshotResponse resp_;
  bool done_ = false;
};

class MaintenanceService final : public etcdserverpb::Maintenance::CallbackService {
 public:
  explicit MaintenanceService(EtcdServer* s) : s_(s) {}
  ~MaintenanceService() override {
    {
      std::lock_guard<std::mutex> lock(defrag_mu_);
      defrag_stop_ = true;
    }
    defrag_cv_.notify_all();
    if (defrag_thread_.joinable()) defrag_thread_.join();
  }

  ServerUnaryReactor* Alarm(CallbackServerContext* ctx, const etcdserverpb::AlarmRequest* req,
                            etcdserverpb::AlarmResponse* resp) override {
    meridianpb::InternalRequest ir;
    *ir.mutable_alarm() = *req;
    return ProposeAndFinish(s_, ctx, std::move(ir), resp);
  }

  ServerUnaryReactor* Status(CallbackServerContext* ctx, const etcdserverpb::StatusRequest*,
                             etcdserverpb::StatusResponse* resp) override {
    auto stats = s_->store()->Stats();
    resp->set_version(kServerVersion);
    resp->set_dbsize(static_cast<int64_t>(stats.db_size_bytes));
    resp->set_dbsizeinuse(static_cast<int64_t>(stats.db_size_in_use_bytes));
    resp->set_leader(s_->leader());
    resp->set_raftindex(s_->committed_index());
    resp->set_raftterm(s_->raft_term());
    resp->set_raftappliedindex(s_->applied_index());
    resp->set_islearner(s_->is_learner());
    for (const auto& a : s_->Alarms()) {
      resp->add_errors(absl::StrCat(
          "memberID:", a.memberid(), " alarm:", etcdserverpb::AlarmType_Name(a.alarm()),
          " "));  // etcd prints the proto text form, trailing space included
    }
    s_->FillHeader(resp->mutable_header(), s_->store()->rev());
    return FinishNow(ctx, grpc::Status::OK);
  }

  ServerUnaryReactor* Defragment(CallbackServerContext* ctx, const etcdserverpb::DefragmentRequest*,
                                 etcdserverpb::DefragmentResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    // Rewriting every file takes a while: do it off the gRPC threads, one at a time. Requests
    // that arrive during a defragmentation wait for the next one (bounded by the client count).
    std::lock_guard<std::mutex> lock(defrag_mu_);
    defrag_waiting_.emplace_back(reactor, resp);
    if (!defrag_thread_.joinable()) {
      defrag_thread_ = std::thread([this] { DefragLoop(); });
    }
    defrag_cv_.notify_one();
    return reactor;
  }

  ServerUnaryReactor* Hash(CallbackServerContext* ctx, const etcdserverpb::HashRequest*,
                           etcdserverpb::HashResponse* resp) override {
    auto view = s_->View();
    auto h = view->HashKV(view->rev());
    if (!h.ok()) return FinishNow(ctx, ToGrpc(h.status()));
    resp->set_hash(*h);
    s_->FillHeader(resp->mutable_header(), view->rev());
    return FinishNow(ctx, grpc::Status::OK);
  }

  ServerUnaryReactor* HashKV(CallbackServerContext* ctx, const etcdserverpb::HashKVRequest* req,
                             etcdserverpb::HashKVResponse* resp) override {
    auto view = s_->View();
    int64_t rev = req->revision() == 0 ? view->rev() : req->revision();
    auto h = view->HashKV(rev);
    if (!h.ok()) return FinishNow(ctx, ToGrpc(h.status()));
    resp->set_hash(*h);
    // etcd reports -1 until the first compaction.
    resp->set_compact_revision(view->compact_rev() > 0 ? view->compact_rev() : -1);
    resp->set_hash_revision(rev);
    s_->FillHeader(resp->mutable_header(), view->rev());
    return FinishNow(ctx, grpc::Status::OK);
  }

  grpc::ServerWriteReactor<etcdserverpb::SnapshotResponse>* Snapshot(
      CallbackServerContext* ctx, const etcdserverpb::SnapshotRequest*) override {
    std::string path =
        absl::StrCat(s_->config().data_dir, "/member/snapshot-", s_->NextRequestId(), ".db.tmp");
    return new SnapshotReactor(s_, path);
  }

  ServerUnaryReactor* MoveLeader(CallbackServerContext* ctx,
                                 const etcdserverpb::MoveLeaderRequest* req,
                                 etcdserverpb::MoveLeaderResponse* resp) override {
    s_->FillHeader(resp->mutable_header(), s_->store()->rev());
    auto* reactor = ctx->DefaultReactor();
    s_->MoveLeader(req->targetid(), [reactor](grpc::Status st) { reactor->Finish(st); });
    return reactor;
  }

 private:
  void DefragLoop() {
    std::unique_lock<std::mutex> lock(defrag_mu_);
    while (true) {
      defrag_cv_.wait(lock, [&] { return defrag_stop_ || !defrag_waiting_.empty(); });
      if (defrag_waiting_.empty()) return;
      auto waiting = std::move(defrag_waiting_);
      defrag_waiting_.clear();
      lock.unlock();
      grpc::Status st = defrag_stop_ ? ErrStopped() : ToGrpc(s_->store()->Defragment());
      for (auto& [reactor, resp] : waiting) {
        s_->FillHeader(resp->mutable_header(), s_->store()->rev());
        reactor->Finish(st);
      }
      lock.lock();
    }
  }

  EtcdServer* s_;
  std::mutex defrag_mu_;
  std::condition_variable defrag_cv_;
  std::vector<std::pair<ServerUnaryReactor*, etcdserverpb::DefragmentResponse*>> defrag_waiting_;
  bool defrag_stop_ = false;
  std::thread defrag_thread_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::Service>> MakeServices(EtcdServer* server) {
  std::vector<std::unique_ptr<grpc::Service>> out;
  out.push_back(std::make_unique<KvService>(server));
  out.push_back(std::make_unique<WatchService>(server));
  out.push_back(std::make_unique<LeaseService>(server));
  out.push_back(std::make_unique<ClusterService>(server));
  out.push_back(std::make_unique<MaintenanceService>(server));
  return out;
}

}  // namespace meridian::server
