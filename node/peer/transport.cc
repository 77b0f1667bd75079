#include "node/peer/transport.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dial_target.h"
#include "common/strings.h"
#include "common/url.h"
#include "meridian/raft.grpc.pb.h"
#include "node/peer/convert.h"

namespace meridian::peer {
namespace {

constexpr char kClusterIdHeader[] = "x-meridian-cluster-id";
constexpr char kFromHeader[] = "x-meridian-from";
constexpr char kClusterIdMismatch[] = "cluster ID mismatch";

// How long one TCP connect may take before the attempt counts as failed (gRPC's default is 20 s;
// shorter lets a member with several URLs move on to the next one sooner).
constexpr int kConnectTimeoutMs = 5000;
// Headroom over max_message_bytes for the framing around payloads (batch and chunk envelopes).
constexpr uint64_t kMessageSlackBytes = 64 << 10;
// Snapshot outcomes waiting for the notifier; one per SendSnapshot call, so only a runaway caller
// reaches this.
constexpr size_t kMaxPendingSnapshotStatuses = 1024;
// Prefix of payloads being received; such files left by a crash are removed at Create.
constexpr char kPartialPrefix[] = "partial-";

std::string Hex16(uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kDigits[v & 0xf];
    v >>= 4;
  }
  return out;
}

std::optional<uint64_t> HeaderHex(const grpc::ServerContextBase& ctx, const char* name) {
  auto it = ctx.client_metadata().find(name);
  if (it == ctx.client_metadata().end()) return std::nullopt;
  return meridian::ParseHex(std::string_view(it->second.data(), it->second.size()));
}

int ClampToInt(uint64_t v) { return static_cast<int>(std::min<uint64_t>(v, INT_MAX)); }

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const PeerTransportOptions& o) {
  grpc::ChannelArguments args;
  // gRPC's own reconnect backoff would otherwise keep a restarted peer unreachable for up to
  // two minutes whatever our backoff says.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, o.dial_backoff_min_ms);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, o.dial_backoff_max_ms);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kConnectTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
  // Streams between two followers can sit idle; keep probing them anyway.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Each channel keeps its own connection and backoff state (several transports may live in one
  // process, e.g. in tests, and must not share a connection to the same address).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(ClampToInt(o.max_message_bytes + kMessageSlackBytes));
  args.SetMaxSendMessageSize(ClampToInt(o.max_message_bytes + kMessageSlackBytes));
  return grpc::CreateCustomChannel(DialTarget(target), grpc::InsecureChannelCredentials(), args);
}

void AddCallMetadata(grpc::ClientContext* ctx, uint64_t cluster_id, uint64_t from) {
  ctx->AddMetadata(kClusterIdHeader, Hex16(cluster_id));
  ctx->AddMetadata(kFromHeader, Hex16(from));
}

absl::StatusOr<std::vector<std::string>> UrlsToTargets(const std::vector<std::string>& urls) {
  if (urls.empty()) return absl::InvalidArgumentError("no peer URLs given");
  std::vector<std::string> targets;
  for (const std::string& url : urls) {
    absl::StatusOr<std::string> t = PeerUrlToTarget(url);
    if (!t.ok()) return t.status();
    targets.push_back(*std::move(t));
  }
  return targets;
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

absl::StatusOr<std::string> PeerUrlToTarget(std::string_view url) {
  if (url.find("://") == std::string_view::npos) {
    // A bare "host:port".
    if (url.empty() || url.find(':') == std::string_view::npos || url.find('/') != url.npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer address is neither a URL nor host:port: \"", std::string(url), "\""));
    }
    return std::string(url);
  }
  absl::StatusOr<Url> parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.status();
  if (parsed->secure()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer TLS is not supported yet; use an http:// peer URL: \"", std::string(url), "\""));
  }
  if (parsed->is_unix()) return absl::StrCat("unix:", parsed->HostPort());
  return parsed->HostPort();
}

// ------------------------------------------------------------------------------------------
// Per-peer state.

struct PeerTransport::Peer {
  explicit Peer(uint64_t peer_id) : id(peer_id) {}

  struct Queued {
    raft::Message msg;
    uint64_t bytes;
  };

  const uint64_t id;
  std::thread writer;  // set before the Peer is published in peers_, joined by StopPeer

  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  std::vector<std::string> targets;
  std::vector<std::shared_ptr<grpc::Channel>> channels;  // one per target
  size_t target_index = 0;                               // the one dialled next
  uint64_t targets_gen = 0;                              // bumped by UpdatePeer
  std::deque<Queued> queue;
  uint64_t queue_bytes = 0;
  bool overflow_reported = false;  // one unreachable report per overflow episode
  bool stop = false;
  grpc::ClientContext* stream_ctx = nullptr;  // the writer's live call, for cancellation
  bool snapshot_in_flight = false;
  grpc::ClientContext* snapshot_ctx = nullptr;
  std::thread snapshot_thread;
};

// ------------------------------------------------------------------------------------------
// Inbound service, on gRPC's callback API. The synchronous API would bring its own thread pool,
// and with the epoll poller those threads poll every connection of the process, the client
// port's included, handing each client request over to a callback thread: measured on two
// cores, that hand-over cost the client path about a quarter of its CPU per request.

namespace {

// A reactor that finishes at once with `status`.
template <typename Req>
class RefusedReader final : public grpc::ServerReadReactor<Req> {
 public:
  explicit RefusedReader(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

// Runs a blocking body for a client-streaming call on a thread of its own, fed by the reactor:
// for the rare calls that write files (snapshots), so that no gRPC thread waits on the disk.
// The object goes when both the body's thread and gRPC are done with it.
template <typename Req>
class ThreadedReader final : public grpc::ServerReadReactor<Req> {
 public:
  using Body = std::function<grpc::Status(ThreadedReader*)>;
  explicit ThreadedReader(Body body) {
    std::thread([this, body = std::move(body)]() mutable {
      grpc::Status st = body(this);
      body = nullptr;  // releases what the body holds (its admission) before the call ends
      this->Finish(st);
      Release();
    }).detach();
  }
  // Blocks until the next message (true) or the end or cancellation of the stream (false).
  bool Read(Req* msg) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_done_ = false;
    }
    this->StartRead(msg);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return read_done_; });
    return read_ok_;
  }
  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    read_ok_ = ok;
    read_done_ = true;
    cv_.notify_all();
  }
  void OnDone() override { Release(); }

 private:
  void Release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool read_done_ = false;
  bool read_ok_ = false;
  std::atomic<int> refs_{2};  // the body's thread and gRPC
};

}  // namespace

class PeerTransport::Service final : public meridianpb::Peer::CallbackService {
 public:
  explicit Service(PeerTransport* t) : t_(t) {}

  grpc::ServerReadReactor<meridianpb::MessageBatch>* Stream(
      grpc::CallbackServerContext* ctx, meridianpb::StreamSummary* summary) override {
    return new StreamReader(this, ctx, summary);
  }

  grpc::ServerReadReactor<meridianpb::SnapshotChunk>* SendSnapshot(
      grpc::CallbackServerContext* ctx, meridianpb::SnapshotAck* ack) override {
    auto call = std::make_shared<InboundCall>(t_, ctx);
    if (!call->status.ok()) return new RefusedReader<meridianpb::SnapshotChunk>(call->status);
    auto slot = std::make_shared<SnapshotSlot>(t_);
    if (!slot->admitted) {
      return new RefusedReader<meridianpb::SnapshotChunk>(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many snapshots being received"));
    }
    return new ThreadedReader<meridianpb::SnapshotChunk>(
        [this, ctx, ack, call, slot](ThreadedReader<meridianpb::SnapshotChunk>* reader) {
          return ReceiveSnapshot(*ctx, reader, ack);
        });
  }

  grpc::ServerUnaryReactor* ClusterInfo(grpc::CallbackServerContext* ctx,
                                        const meridianpb::ClusterInfoRequest*,
                                        meridianpb::ClusterInfoResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    InboundCall call(t_, ctx);
    if (!call.status.ok()) {
      reactor->Finish(call.status);
    } else if (!t_->callbacks_.cluster_info) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "cluster info not available"));
    } else {
      *resp = t_->callbacks_.cluster_info();
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  // The body of SendSnapshot, on the call's own thread (it writes and syncs a file).
  grpc::Status ReceiveSnapshot(const grpc::CallbackServerContext& ctx,
                               ThreadedReader<meridianpb::SnapshotChunk>* reader,
                               meridianpb::SnapshotAck* ack) {
    uint64_t from = 0;
    if (grpc::Status st = CheckCaller(ctx, &from); !st.ok()) return st;

    meridianpb::SnapshotChunk chunk;
    if (!reader->Read(&chunk)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "snapshot stream ended before its start");
    }
    if (!chunk.has_message()) return Invalid(from, "first snapshot chunk has no message");
    absl::StatusOr<raft::Message> m = DecodeMessage(std::move(*chunk.mutable_message()));
    if (!m.ok()) return Invalid(from, std::string(m.status().message()));
    if (m->type != raft::MessageType::kSnap || !m->snapshot.has_value()) {
      return Invalid(from, "first snapshot chunk does not carry a snapshot message");
    }
    if (m->from != from) return Invalid(from, "snapshot message sender differs from the caller");
    if (m->to != t_->options_.self_id) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("snapshot for member ", absl::Hex(m->to),
                                       " delivered to member ", absl::Hex(t_->options_.self_id)));
    }
    const uint64_t total = chunk.total_bytes();
    if (total > t_->options_.max_snapshot_bytes) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("snapshot of ", total, " bytes exceeds the limit of ",
                                       t_->options_.max_snapshot_bytes));
    }

    const std::string& dir = t_->options_.snapshot_dir;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const uint64_t seq = t_->snapshot_file_seq_.fetch_add(1);
    const uint64_t nonce = static_cast<uint64_t>(
        std::chrono::system_clock::now().time_since_epoch() / std::chrono::microseconds(1));
    const std::string name =
        absl::StrCat(Hex16(from), "-", Hex16(m->snapshot->metadata.term), "-",
                     Hex16(m->snapshot->metadata.index), "-", nonce, "-", seq, ".snap");
    const std::string partial_path = absl::StrCat(dir, "/", kPartialPrefix, name);
    const std::string final_path = absl::StrCat(dir, "/", name);
    PartialFile file(partial_path);
    if (file.fd < 0) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("cannot create ", partial_path, ": ", std::strerror(errno)));
    }

    uint64_t received = 0;
    while (true) {
      const std::string& data = chunk.data();
      if (data.size() > total - received) {
        return Invalid(from,
                       absl::StrCat("snapshot payload exceeds the announced ", total, " bytes"));
      }
      if (!WriteAll(file.fd, data.data(), data.size())) {
        return grpc::Status(grpc::StatusCode::INTERNAL,
                            absl::StrCat("writing ", partial_path, ": ", std::strerror(errno)));
      }
      received += data.size();
      if (chunk.done()) break;
      if (!reader->Read(&chunk)) {
        return grpc::Status(
            grpc::StatusCode::CANCELLED,
            absl::StrCat("snapshot stream ended after ", received, " of ", total, " bytes"));
      }
      if (chunk.has_message()) return Invalid(from, "snapshot message repeated in a later chunk");
    }
    if (received != total) {
      return Invalid(from,
                     absl::StrCat("snapshot ended after ", received, " of ", total, " bytes"));
    }
    // Durable before raft hears of it: the node may persist state that depends on the file.
    if (::fdatasync(file.fd) != 0 || ::close(file.fd) != 0) {
      file.fd = -1;
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("syncing ", partial_path, ": ", std::strerror(errno)));
    }
    file.fd = -1;
    if (::rename(partial_path.c_str(), final_path.c_str()) != 0) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("renaming ", partial_path, ": ", std::strerror(errno)));
    }
    file.keep = true;
    FsyncDir(dir);
    t_->snapshots_received_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("peer: received snapshot from {:x} (term {}, index {}, {} bytes) into {}", from,
                 m->snapshot->metadata.term, m->snapshot->metadata.index, received, final_path);
    if (t_->callbacks_.on_snapshot) {
      t_->callbacks_.on_snapshot(*std::move(m), final_path);
    } else {
      std::filesystem::remove(final_path, ec);
    }
    ack->set_bytes_received(received);
    return grpc::Status::OK;
  }

 private:
  // Registers the call for cancellation by Stop() for as long as it is served.
  struct InboundCall {
    InboundCall(PeerTransport* t, grpc::ServerContextBase* c) : t(t), ctx(c) {
      status = t->BeginInbound(ctx);
    }
    ~InboundCall() {
      if (status.ok()) t->EndInbound(ctx);
    }
    InboundCall(const InboundCall&) = delete;
    InboundCall& operator=(const InboundCall&) = delete;
    PeerTransport* t;
    grpc::ServerContextBase* ctx;
    grpc::Status status;
  };

  struct SnapshotSlot {
    explicit SnapshotSlot(PeerTransport* t) : t(t) {
      std::lock_guard<std::mutex> lock(t->inbound_mu_);
      if (t->inbound_snapshots_ < t->options_.max_inbound_snapshots) {
        ++t->inbound_snapshots_;
        admitted = true;
      }
    }
    ~SnapshotSlot() {
      if (!admitted) return;
      std::lock_guard<std::mutex> lock(t->inbound_mu_);
      --t->inbound_snapshots_;
    }
    PeerTransport* t;
    bool admitted = false;
  };

  // The file being received; removed unless `keep` (set once renamed into place).
  struct PartialFile {
    explicit PartialFile(const std::string& p) : path(p) {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    ~PartialFile() {
      if (fd >= 0) ::close(fd);
      if (!keep) ::unlink(path.c_str());
    }
    std::string path;
    int fd = -1;
    bool keep = false;
  };

  static grpc::Status Invalid(uint64_t from, const std::string& what) {
    spdlog::warn("peer: rejecting call from {:x}: {}", from, what);
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, what);
  }

  // Cluster id and sender from the metadata.
  grpc::Status CheckCaller(const grpc::ServerContextBase& ctx, uint64_t* from) const {
    std::optional<uint64_t> cluster = HeaderHex(ctx, kClusterIdHeader);
    std::optional<uint64_t> sender = HeaderHex(ctx, kFromHeader);
    if (!cluster.has_value() || !sender.has_value() || *sender == raft::kNone) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("missing or malformed ", kClusterIdHeader, " or ",
                                       kFromHeader, " metadata"));
    }
    const uint64_t ours = t_->cluster_id();
    if (*cluster != ours) {
      spdlog::warn("peer: refusing member {:x} of cluster {:x} (this is cluster {:x})", *sender,
                   *cluster, ours);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, kClusterIdMismatch);
    }
    *from = *sender;
    return grpc::Status::OK;
  }

  // One inbound raft stream: each batch is checked and delivered from OnReadDone (delivery only
  // queues the messages for the raft thread), then the next read starts.
  class StreamReader final : public grpc::ServerReadReactor<meridianpb::MessageBatch> {
   public:
    StreamReader(Service* svc, grpc::CallbackServerContext* ctx, meridianpb::StreamSummary* summary)
        : svc_(svc), ctx_(ctx), summary_(summary), call_(svc->t_, ctx) {
      if (!call_.status.ok()) {
        Finish(call_.status);
        return;
      }
      if (grpc::Status st = svc_->CheckCaller(*ctx_, &from_); !st.ok()) {
        Finish(st);
        return;
      }
      StartRead(&batch_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) {
        if (ctx_->IsCancelled()) {
          Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
        } else {
          summary_->set_messages_received(received_);
          Finish(grpc::Status::OK);
        }
        return;
      }
      if (grpc::Status st = svc_->Deliver(&batch_, from_, &received_); !st.ok()) {
        Finish(st);
        return;
      }
      StartRead(&batch_);
    }
    void OnDone() override { delete this; }

   private:
    Service* const svc_;
    grpc::CallbackServerContext* const ctx_;
    meridianpb::StreamSummary* const summary_;
    InboundCall call_;
    uint64_t from_ = 0;
    uint64_t received_ = 0;
    meridianpb::MessageBatch batch_;
  };

  // Checks every message of a batch from `from` and hands it to raft.
  grpc::Status Deliver(meridianpb::MessageBatch* batch, uint64_t from, uint64_t* received) {
    const uint64_t self = t_->options_.self_id;
    for (meridianpb::RaftMessage& pb : *batch->mutable_messages()) {
      absl::StatusOr<raft::Message> m = DecodeMessage(std::move(pb));
      if (!m.ok()) return Invalid(from, std::string(m.status().message()));
      if (raft::IsLocalMessage(m->type)) {
        return Invalid(from, absl::StrCat("local-only message type ",
                                          raft::MessageTypeName(m->type), " from the network"));
      }
      if (m->type == raft::MessageType::kSnap) {
        return Invalid(from, "snapshot message on a stream (snapshots use SendSnapshot)");
      }
      // A follower forwards proposals and read requests to its leader as they came, keeping
      // the original sender (the leader answers a read to whoever asked), so those may pass
      // through another member's stream. Every other message comes from its sender.
      const bool forwarded = m->type == raft::MessageType::kProp ||
                             m->type == raft::MessageType::kReadIndex ||
                             m->type == raft::MessageType::kTransferLeader;
      if (m->from != from && !forwarded) {
        return Invalid(from, absl::StrCat("message from ", absl::Hex(m->from), " on the stream of ",
                                          absl::Hex(from)));
      }
      if (m->to != self) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("message for member ", absl::Hex(m->to),
                                         " delivered to member ", absl::Hex(self)));
      }
      ++*received;
      t_->messages_received_.fetch_add(1, std::memory_order_relaxed);
      if (t_->callbacks_.on_message) t_->callbacks_.on_message(*std::move(m));
    }
    return grpc::Status::OK;
  }

  PeerTransport* const t_;
};

// ------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PeerTransport>> PeerTransport::Create(
    PeerTransportOptions options, PeerTransportCallbacks callbacks) {
  if (options.self_id == raft::kNone) return absl::InvalidArgumentError("self_id must be non-zero");
  if (options.max_queue_msgs == 0 || options.max_queue_bytes == 0 || options.max_batch_bytes == 0 ||
      options.max_message_bytes == 0 || options.snapshot_chunk_bytes == 0 ||
      options.max_inbound_snapshots <= 0 || options.max_inbound_calls < 8) {
    return absl::InvalidArgumentError(
        "peer transport limits must be positive (and max_inbound_calls at least 8)");
  }
  if (options.snapshot_chunk_bytes > options.max_message_bytes) {
    return absl::InvalidArgumentError("snapshot_chunk_bytes exceeds max_message_bytes");
  }
  if (options.dial_backoff_min_ms <= 0 ||
      options.dial_backoff_max_ms < options.dial_backoff_min_ms) {
    return absl::InvalidArgumentError("need 0 < dial_backoff_min_ms <= dial_backoff_max_ms");
  }
  if (options.keepalive_time_ms <= 0 || options.keepalive_timeout_ms <= 0) {
    return absl::InvalidArgumentError("keepalive times must be positive");
  }
  if (options.snapshot_dir.empty()) return absl::InvalidArgumentError("snapshot_dir is required");
  std::error_code ec;
  std::filesystem::create_directories(options.snapshot_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create snapshot dir ", options.snapshot_dir, ": ", ec.message()));
  }
  // Payloads whose reception a crash interrupted are useless: nobody was told of them.
  for (const auto& entry : std::filesystem::directory_iterator(options.snapshot_dir, ec)) {
    if (entry.path().filename().string().rfind(kPartialPrefix, 0) == 0) {
      std::error_code ignored;
      std::filesystem::remove(entry.path(), ignored);
    }
  }
  return std::unique_ptr<PeerTransport>(
      new PeerTransport(std::move(options), std::move(callbacks)));
}

PeerTransport::PeerTransport(PeerTransportOptions options, PeerTransportCallbacks callbacks)
    : options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      cluster_id_(options_.cluster_id),
      service_(std::make_unique<Service>(this)) {
  notifier_ = std::thread([this] { RunNotifier(); });
}

PeerTransport::~PeerTransport() { Stop(); }

grpc::Service* PeerTransport::service() { return service_.get(); }

absl::Status PeerTransport::AddPeer(uint64_t id, const std::vector<std::string>& urls) {
  if (id == raft::kNone || id == options_.self_id) {
    return absl::InvalidArgumentError(absl::StrCat("cannot add peer ", absl::Hex(id)));
  }
  absl::StatusOr<std::vector<std::string>> targets = UrlsToTargets(urls);
  if (!targets.ok()) return targets.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return absl::FailedPreconditionError("peer transport stopped");
  if (peers_.count(id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("peer ", absl::Hex(id), " already added"));
  }
  auto peer = std::make_shared<Peer>(id);
  for (const std::string& target : *targets)
    peer->channels.push_back(MakeChannel(target, options_));
  peer->targets = *std::move(targets);
  peer->writer = std::thread([this, peer] { RunWriter(peer); });
  peers_.emplace(id, std::move(peer));
  return absl::OkStatus();
}

absl::Status PeerTransport::UpdatePeer(uint64_t id, const std::vector<std::string>& urls) {
  absl::StatusOr<std::vector<std::string>> targets = UrlsToTargets(urls);
  if (!targets.ok()) return targets.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(id);
  if (it == peers_.end()) return absl::NotFoundError(absl::StrCat("unknown peer ", absl::Hex(id)));
  Peer& p = *it->second;
  std::lock_guard<std::mutex> peer_lock(p.mu);
  if (p.targets == *targets) return absl::OkStatus();
  p.channels.clear();
  for (const std::string& target : *targets) p.channels.push_back(MakeChannel(target, options_));
  p.targets = *std::move(targets);
  p.target_index = 0;
  ++p.targets_gen;
  // The writer notices the new generation and re-dials without reporting a failure.
  if (p.stream_ctx != nullptr) p.stream_ctx->TryCancel();
  p.cv.notify_all();
  return absl::OkStatus();
}

absl::Status PeerTransport::RemovePeer(uint64_t id) {
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(id);
    if (it == peers_.end())
      return absl::NotFoundError(absl::StrCat("unknown peer ", absl::Hex(id)));
    peer = std::move(it->second);
    peers_.erase(it);
  }
  StopPeer(*peer);
  std::lock_guard<std::mutex> lock(notify_mu_);
  notify_unreachable_.erase(id);
  std::erase_if(notify_snap_status_, [id](const auto& s) { return s.first == id; });
  return absl::OkStatus();
}

bool PeerTransport::HasPeer(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return peers_.count(id) != 0;
}

size_t PeerTransport::queued_messages(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(id);
  if (it == peers_.end()) return 0;
  std::lock_guard<std::mutex> peer_lock(it->second->mu);
  return it->second->queue.size();
}

void PeerTransport::StopPeer(Peer& p) {
  std::thread snapshot_thread;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.stop = true;
    if (p.stream_ctx != nullptr) p.stream_ctx->TryCancel();
    if (p.snapshot_ctx != nullptr) p.snapshot_ctx->TryCancel();
    messages_dropped_.fetch_add(p.queue.size(), std::memory_order_relaxed);
    p.queue.clear();
    p.queue_bytes = 0;
    snapshot_thread = std::move(p.snapshot_thread);
  }
  p.cv.notify_all();
  if (p.writer.joinable()) p.writer.join();
  if (snapshot_thread.joinable()) snapshot_thread.join();
}

void PeerTransport::Send(std::vector<raft::Message> msgs) {
  std::vector<Peer*> woken;
  std::lock_guard<std::mutex> lock(mu_);
  for (raft::Message& m : msgs) {
    auto it = peers_.find(m.to);
    if (it == peers_.end() || raft::IsLocalMessage(m.type)) {
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (m.type == raft::MessageType::kSnap) {
      spdlog::error("peer: kSnap to {:x} given to Send; snapshots go through SendSnapshot", m.to);
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      NotifySnapshotStatus(m.to, false);
      continue;
    }
    const uint64_t bytes = ApproxMessageBytes(m);
    if (bytes > options_.max_message_bytes) {
      spdlog::error("peer: dropping {} to {:x}: {} bytes exceed max_message_bytes {}",
                    raft::MessageTypeName(m.type), m.to, bytes, options_.max_message_bytes);
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      NotifyUnreachable(m.to);
      continue;
    }
    Peer& p = *it->second;
    std::lock_guard<std::mutex> peer_lock(p.mu);
    if (p.stop) {
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (p.queue.size() >= options_.max_queue_msgs ||
        p.queue_bytes + bytes > options_.max_queue_bytes) {
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      if (!p.overflow_reported) {
        p.overflow_reported = true;
        spdlog::warn("peer: queue to {:x} full ({} messages, {} bytes); dropping", p.id,
                     p.queue.size(), p.queue_bytes);
        NotifyUnreachable(p.id);
      }
      continue;
    }
    p.queue.push_back(Peer::Queued{std::move(m), bytes});
    p.queue_bytes += bytes;
    if (std::find(woken.begin(), woken.end(), &p) == woken.end()) woken.push_back(&p);
  }
  // Still under mu_, so no Peer in `woken` can have been removed.
  for (Peer* p : woken) p->cv.notify_one();
}

void PeerTransport::RunWriter(const std::shared_ptr<Peer>& peer) {
  Peer& p = *peer;
  using Clock = std::chrono::steady_clock;
  int backoff_ms = options_.dial_backoff_min_ms;
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<meridianpb::Peer::Stub> stub;
  std::unique_ptr<grpc::ClientWriter<meridianpb::MessageBatch>> stream;
  meridianpb::StreamSummary summary;
  uint64_t stream_gen = 0;
  Clock::time_point connected_at;
  bool reported_down = false;  // logged the current outage already
  std::string target;

  // Ends the call; ctx stays registered for cancellation until Finish returns.
  auto close_stream = [&](bool cancel) -> grpc::Status {
    if (cancel) ctx->TryCancel();
    grpc::Status st = stream->Finish();
    {
      std::lock_guard<std::mutex> lock(p.mu);
      p.stream_ctx = nullptr;
    }
    stream.reset();
    stub.reset();
    ctx.reset();
    return st;
  };

  std::vector<Peer::Queued> batch;
  meridianpb::MessageBatch batch_pb;
  while (true) {
    uint64_t gen = 0;
    std::shared_ptr<grpc::Channel> channel;
    bool redial = false;
    batch.clear();
    {
      std::unique_lock<std::mutex> lock(p.mu);
      p.cv.wait(lock, [&] {
        return p.stop || !p.queue.empty() || (stream != nullptr && p.targets_gen != stream_gen);
      });
      if (p.stop) break;
      if (stream != nullptr && p.targets_gen != stream_gen) {
        redial = true;
      } else {
        if (stream == nullptr) {
          gen = p.targets_gen;
          channel = p.channels[p.target_index % p.channels.size()];
          target = p.targets[p.target_index % p.targets.size()];
          ctx = std::make_unique<grpc::ClientContext>();
          AddCallMetadata(ctx.get(), cluster_id(), options_.self_id);
          // Headers go out with the first batch, so opening the stream never blocks here.
          ctx->set_initial_metadata_corked(true);
          p.stream_ctx = ctx.get();
        }
        uint64_t batch_bytes = 0;
        while (!p.queue.empty() &&
               (batch.empty() || batch_bytes + p.queue.front().bytes <= options_.max_batch_bytes)) {
          batch_bytes += p.queue.front().bytes;
          p.queue_bytes -= p.queue.front().bytes;
          batch.push_back(std::move(p.queue.front()));
          p.queue.pop_front();
        }
        p.overflow_reported = false;
      }
    }
    if (redial) {
      close_stream(/*cancel=*/true);
      continue;
    }
    if (stream == nullptr) {
      stub = meridianpb::Peer::NewStub(channel);
      stream = stub->Stream(ctx.get(), &summary);
      stream_gen = gen;
      connected_at = Clock::now();
    }

    batch_pb.Clear();
    for (Peer::Queued& q : batch) EncodeMessage(std::move(q.msg), batch_pb.add_messages());
    if (stream->Write(batch_pb)) {
      messages_sent_.fetch_add(batch.size(), std::memory_order_relaxed);
      // Logged only once the stream has lasted: a refused stream may accept its first write.
      if (reported_down && Clock::now() - connected_at >= std::chrono::seconds(1)) {
        spdlog::info("peer: stream to {:x} at {} is up", p.id, target);
        reported_down = false;
      }
      continue;
    }

    // The stream is broken (or cancelled by Stop/RemovePeer/UpdatePeer).
    const grpc::Status st = close_stream(/*cancel=*/false);
    size_t dropped = batch.size();
    bool stopping = false;
    bool updated = false;
    {
      std::lock_guard<std::mutex> lock(p.mu);
      stopping = p.stop;
      updated = p.targets_gen != stream_gen;
      if (!stopping && !updated) {
        // What waited behind the failed batch is stale by the time we are back; raft resends.
        dropped += p.queue.size();
        p.queue.clear();
        p.queue_bytes = 0;
        p.overflow_reported = false;
        ++p.target_index;  // try the peer's next URL
      }
    }
    messages_dropped_.fetch_add(dropped, std::memory_order_relaxed);
    if (stopping) break;
    if (updated) continue;  // re-dial the new URLs at once
    NotifyUnreachable(p.id);
    if (!reported_down) {
      spdlog::warn("peer: stream to {:x} at {} failed: {} ({}); dropped {} messages", p.id, target,
                   static_cast<int>(st.error_code()), st.error_message(), dropped);
      reported_down = true;
    }
    if (Clock::now() - connected_at >= std::chrono::milliseconds(options_.dial_backoff_max_ms)) {
      backoff_ms = options_.dial_backoff_min_ms;  // it was a healthy connection
    }
    {
      std::unique_lock<std::mutex> lock(p.mu);
      // New URLs (UpdatePeer) are worth dialling at once.
      p.cv.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                    [&] { return p.stop || p.targets_gen != stream_gen; });
      if (p.stop) break;
    }
    backoff_ms = std::min(backoff_ms * 2, options_.dial_backoff_max_ms);
  }
  if (stream != nullptr) close_stream(/*cancel=*/true);
}

void PeerTransport::SendSnapshot(raft::Message msg, std::string payload_file_path) {
  const uint64_t id = msg.to;
  if (msg.type != raft::MessageType::kSnap || !msg.snapshot.has_value()) {
    spdlog::error("peer: SendSnapshot to {:x} needs a kSnap message with a snapshot", id);
    NotifySnapshotStatus(id, false);
    return;
  }
  std::thread previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) {
      NotifySnapshotStatus(id, false);
      return;
    }
    std::shared_ptr<Peer> peer = it->second;
    std::lock_guard<std::mutex> peer_lock(peer->mu);
    if (peer->stop || peer->snapshot_in_flight) {
      spdlog::warn("peer: refusing a second snapshot to {:x} while one is in flight", id);
      NotifySnapshotStatus(id, false);
      return;
    }
    peer->snapshot_in_flight = true;
    // The previous sender has finished (snapshot_in_flight was false) but is not yet joined.
    previous = std::move(peer->snapshot_thread);
    msg.snapshot->data.clear();
    peer->snapshot_thread = std::thread(
        [this, peer, m = std::move(msg), path = std::move(payload_file_path)]() mutable {
          RunSnapshotSender(peer, std::move(m), std::move(path));
        });
  }
  if (previous.joinable()) previous.join();
}

void PeerTransport::RunSnapshotSender(const std::shared_ptr<Peer>& peer, raft::Message msg,
                                      std::string path) {
  Peer& p = *peer;
  const auto started = std::chrono::steady_clock::now();
  std::string error;
  uint64_t sent = 0;
  bool stopped = false;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat sb;
  if (fd < 0 || ::fstat(fd, &sb) != 0) {
    error = absl::StrCat("cannot open ", path, ": ", std::strerror(errno));
  } else {
    const uint64_t total = static_cast<uint64_t>(sb.st_size);
    grpc::ClientContext ctx;
    std::string target;
    AddCallMetadata(&ctx, cluster_id(), options_.self_id);
    {
      std::lock_guard<std::mutex> lock(p.mu);
      stopped = p.stop;
      target = p.targets[p.target_index % p.targets.size()];
      p.snapshot_ctx = &ctx;
    }
    if (!stopped) {
      // A connection of its own (channels do not share connections, see MakeChannel): megabytes
      // of payload on the message stream's connection would delay heartbeats behind them.
      auto stub = meridianpb::Peer::NewStub(MakeChannel(target, options_));
      meridianpb::SnapshotAck ack;
      auto writer = stub->SendSnapshot(&ctx, &ack);
      meridianpb::SnapshotChunk chunk;
      EncodeMessage(std::move(msg), chunk.mutable_message());
      chunk.set_total_bytes(total);
      chunk.set_done(total == 0);
      bool ok = writer->Write(chunk);
      std::string buf;
      while (ok && sent < total) {
        const uint64_t want = std::min<uint64_t>(options_.snapshot_chunk_bytes, total - sent);
        buf.resize(want);
        ssize_t n;
        do {
          n = ::pread(fd, buf.data(), want, static_cast<off_t>(sent));
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
          error = absl::StrCat("reading ", path, " at ", sent, ": ",
                               n == 0 ? "file shrank" : std::strerror(errno));
          ctx.TryCancel();
          ok = false;
          break;
        }
        buf.resize(static_cast<size_t>(n));
        sent += static_cast<uint64_t>(n);
        chunk.Clear();
        chunk.set_data(std::move(buf));
        buf = std::string();
        chunk.set_done(sent == total);
        ok = writer->Write(chunk);
      }
      if (ok) writer->WritesDone();
      grpc::Status st = writer->Finish();
      if (error.empty()) {
        if (!st.ok()) {
          error = absl::StrCat("rpc failed: ", static_cast<int>(st.error_code()), " ",
                               st.error_message());
        } else if (ack.bytes_received() != total) {
          error =
              absl::StrCat("receiver acknowledged ", ack.bytes_received(), " of ", total, " bytes");
        }
      }
    }
    std::lock_guard<std::mutex> lock(p.mu);
    p.snapshot_ctx = nullptr;
    stopped = p.stop;
  }
  if (fd >= 0) ::close(fd);
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.snapshot_in_flight = false;
    stopped = p.stop;
  }
  if (stopped) return;  // removed or shutting down: nobody wants the outcome
  const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - started)
                              .count();
  if (error.empty()) {
    snapshots_sent_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("peer: sent snapshot ({} bytes) to {:x} in {} ms", sent, p.id, elapsed_ms);
  } else {
    spdlog::warn("peer: snapshot to {:x} failed after {} ms: {}", p.id, elapsed_ms, error);
  }
  NotifySnapshotStatus(p.id, error.empty());
}

void PeerTransport::NotifyUnreachable(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    if (notify_stop_) return;
    notify_unreachable_.insert(id);
  }
  notify_cv_.notify_one();
}

void PeerTransport::NotifySnapshotStatus(uint64_t id, bool ok) {
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    if (notify_stop_) return;
    if (notify_snap_status_.size() >= kMaxPendingSnapshotStatuses) {
      spdlog::error("peer: dropping snapshot status for {:x}: {} already pending", id,
                    notify_snap_status_.size());
      return;
    }
    notify_snap_status_.emplace_back(id, ok);
  }
  notify_cv_.notify_one();
}

void PeerTransport::RunNotifier() {
  std::unique_lock<std::mutex> lock(notify_mu_);
  while (true) {
    notify_cv_.wait(lock, [&] {
      return notify_stop_ || !notify_unreachable_.empty() || !notify_snap_status_.empty();
    });
    if (notify_stop_) return;
    std::set<uint64_t> unreachable = std::move(notify_unreachable_);
    notify_unreachable_.clear();
    std::deque<std::pair<uint64_t, bool>> statuses = std::move(notify_snap_status_);
    notify_snap_status_.clear();
    lock.unlock();
    for (uint64_t id : unreachable) {
      if (callbacks_.on_unreachable) callbacks_.on_unreachable(id);
    }
    for (const auto& [id, ok] : statuses) {
      if (callbacks_.on_snapshot_status) callbacks_.on_snapshot_status(id, ok);
    }
    lock.lock();
  }
}

grpc::Status PeerTransport::BeginInbound(grpc::ServerContextBase* ctx) {
  std::lock_guard<std::mutex> lock(inbound_mu_);
  if (inbound_closed_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "peer transport stopped");
  if (inbound_calls_.size() >= static_cast<size_t>(options_.max_inbound_calls)) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("more than ", options_.max_inbound_calls, " inbound peer calls at once"));
  }
  inbound_calls_.insert(ctx);
  return grpc::Status::OK;
}

void PeerTransport::EndInbound(grpc::ServerContextBase* ctx) {
  std::lock_guard<std::mutex> lock(inbound_mu_);
  inbound_calls_.erase(ctx);
  if (inbound_calls_.empty()) inbound_cv_.notify_all();
}

void PeerTransport::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  if (stop_done_) return;
  std::map<uint64_t, std::shared_ptr<Peer>> peers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    peers = std::move(peers_);
    peers_.clear();
  }
  for (auto& [id, peer] : peers) StopPeer(*peer);
  {
    std::unique_lock<std::mutex> lock(inbound_mu_);
    inbound_closed_ = true;
    for (grpc::ServerContextBase* ctx : inbound_calls_) ctx->TryCancel();
    inbound_cv_.wait(lock, [&] { return inbound_calls_.empty(); });
  }
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_stop_ = true;
  }
  notify_cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
  stop_done_ = true;
}

absl::StatusOr<meridianpb::ClusterInfoResponse> PeerTransport::FetchClusterInfo(
    const std::vector<std::string>& peer_urls, int timeout_ms) {
  if (peer_urls.empty()) return absl::InvalidArgumentError("no peer URLs to ask for cluster info");
  std::vector<std::string> errors;
  for (const std::string& url : peer_urls) {
    absl::StatusOr<std::string> target = PeerUrlToTarget(url);
    if (!target.ok()) {
      errors.push_back(absl::StrCat(url, ": ", target.status().message()));
      continue;
    }
    auto stub = meridianpb::Peer::NewStub(
        grpc::CreateChannel(DialTarget(*target), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    // A joiner does not know the cluster id yet; the server does not check it for this call.
    AddCallMetadata(&ctx, 0, 0);
    meridianpb::ClusterInfoResponse resp;
    grpc::Status st = stub->ClusterInfo(&ctx, meridianpb::ClusterInfoRequest(), &resp);
    if (st.ok()) return resp;
    errors.push_back(absl::StrCat(url, ": ", st.error_message()));
  }
  return absl::UnavailableError(
      absl::StrCat("no peer answered with cluster info: ", absl::StrJoin(errors, "; ")));
}

// ------------------------------------------------------------------------------------------

void ConfigurePeerServer(grpc::ServerBuilder* builder, PeerTransport* transport) {
  const PeerTransportOptions& o = transport->options();
  builder->RegisterService(transport->service());
  builder->SetMaxReceiveMessageSize(ClampToInt(o.max_message_bytes + kMessageSlackBytes));
  // Inbound streams send nothing back until they end, so to gRPC's ping-abuse policy every
  // keepalive ping of the sender looks unsolicited; accept them rather than GOAWAY the sender.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  // And probe senders ourselves, so that a vanished sender's stream (and its server thread) does
  // not linger.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartPeerServer(
    const std::vector<std::string>& listen_addrs, PeerTransport* transport,
    std::vector<int>* selected_ports) {
  if (listen_addrs.empty()) return absl::InvalidArgumentError("no peer listen addresses");
  grpc::ServerBuilder builder;
  // AddListeningPort keeps a pointer to each port slot until BuildAndStart.
  auto ports = std::make_unique<int[]>(listen_addrs.size());
  for (size_t i = 0; i < listen_addrs.size(); ++i) {
    absl::StatusOr<std::string> target = PeerUrlToTarget(listen_addrs[i]);
    if (!target.ok()) return target.status();
    if (target->rfind(':', 0) == 0) *target = "[::]" + *target;  // "http://:2380": all addresses
    builder.AddListeningPort(*target, grpc::InsecureServerCredentials(), &ports[i]);
  }
  ConfigurePeerServer(&builder, transport);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot start the peer server on ", absl::StrJoin(listen_addrs, ", ")));
  }
  for (size_t i = 0; i < listen_addrs.size(); ++i) {
    if (ports[i] == 0) {
      server->Shutdown(std::chrono::system_clock::now());
      return absl::UnavailableError(absl::StrCat("cannot listen on ", listen_addrs[i]));
    }
  }
  if (selected_ports != nullptr)
    selected_ports->assign(ports.get(), ports.get() + listen_addrs.size());
  return server;
}

}  // namespace meridian::peer
