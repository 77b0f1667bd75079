// The raft peer transport: carries raft messages and snapshots between members over gRPC
// (api/meridian/raft.proto, service meridianpb.Peer). See README.md for the wire protocol.
//
//   std::unique_ptr<PeerTransport> t = *PeerTransport::Create(options, callbacks);  // StatusOr
//   std::unique_ptr<grpc::Server> server = *StartPeerServer({"http://0.0.0.0:2380"}, t.get());
//   t->AddPeer(2, {"http://10.0.0.2:2380"});
//   t->Send(ready.messages);              // never blocks; kSnap goes to SendSnapshot instead
//   ...
//   t->Stop(); server->Shutdown();        // in this order (inbound streams are long-lived)
//
// Outbound: one bounded queue and one writer thread per peer. The writer batches what is queued
// into MessageBatch writes on one long-lived client stream and reconnects with exponential
// backoff when the stream breaks. Nothing here ever blocks the caller or grows without bound:
// raft tolerates lost messages, so overflow and failures drop messages and report the peer
// unreachable instead.
//
// Inbound: the gRPC service hands each received message to `on_message`, and each completely
// received snapshot to `on_snapshot`, on gRPC threads.
#pragma once

#include <grpcpp/impl/codegen/service_type.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meridian/raft.pb.h"
#include "node/raft/types.h"

namespace grpc {
class Server;
class ServerBuilder;
class ServerContextBase;
}  // namespace grpc

namespace meridian::peer {

struct PeerTransportOptions {
  uint64_t self_id = 0;     // this member's id; required (non-zero)
  uint64_t cluster_id = 0;  // 0 until known (a joiner learns it with FetchClusterInfo)

  // Per-peer outbound queue; a message that does not fit is dropped and the peer reported
  // unreachable.
  size_t max_queue_msgs = 4096;
  uint64_t max_queue_bytes = 64ull << 20;
  // One MessageBatch write carries queued messages up to this size (a single larger message goes
  // alone).
  uint64_t max_batch_bytes = 4ull << 20;
  // gRPC message size limit in both directions (batches and snapshot chunks). An outbound
  // message whose size alone exceeds it is dropped. ConfigurePeerServer applies it to the server.
  uint64_t max_message_bytes = 32ull << 20;

  // Snapshot payloads travel in chunks of this size.
  uint64_t snapshot_chunk_bytes = 1ull << 20;
  // A received snapshot payload larger than this is refused (keeps a broken peer from filling
  // the disk).
  uint64_t max_snapshot_bytes = 64ull << 30;
  // Snapshots being received at once; more are refused with RESOURCE_EXHAUSTED.
  int max_inbound_snapshots = 4;
  // Inbound calls (streams, snapshots, cluster-info requests) served at once; more are refused
  // with RESOURCE_EXHAUSTED.
  int max_inbound_calls = 128;
  // Received payloads are written here (created if missing); on_snapshot hands over the file.
  std::string snapshot_dir;

  // Reconnect backoff of a peer's stream: doubles from min to max after each failed attempt and
  // returns to min once a connection has stayed up for max.
  int dial_backoff_min_ms = 100;
  int dial_backoff_max_ms = 2000;
  // A connection that does not answer a ping within keepalive_timeout_ms, sent after
  // keepalive_time_ms without traffic, is considered broken (detects half-open connections,
  // e.g. after a partition, which TCP alone notices only after many minutes).
  int keepalive_time_ms = 10000;
  int keepalive_timeout_ms = 5000;
};

// Called without any transport lock held. They must not block for long (the integration queues
// what they carry) and must not call Stop(). No callback runs after Stop() returns.
struct PeerTransportCallbacks {
  // A message from a peer (on a gRPC thread). Never a local-only type or kSnap.
  std::function<void(raft::Message)> on_message;
  // A kSnap message (snapshot metadata, empty data) once its whole payload is durably in the
  // file at `received_file_path` inside snapshot_dir. The receiver owns the file from then on.
  std::function<void(raft::Message msg, std::string received_file_path)> on_snapshot;
  // Messages to `id` were lost: a send failed, the queue overflowed or the connection broke.
  // Delivered from the transport's notifier thread; repeated reports are coalesced.
  std::function<void(uint64_t id)> on_unreachable;
  // The outcome of a SendSnapshot to `id` (also `false` for one refused). Notifier thread.
  std::function<void(uint64_t id, bool ok)> on_snapshot_status;
  // What ClusterInfo answers; UNAVAILABLE when unset.
  std::function<meridianpb::ClusterInfoResponse()> cluster_info;
};

// "http://127.0.0.1:2380" -> "127.0.0.1:2380" (also accepts a bare "host:port"). https is
// refused: peer TLS is not implemented yet.
[[nodiscard]] absl::StatusOr<std::string> PeerUrlToTarget(std::string_view url);

class PeerTransport {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<PeerTransport>> Create(
      PeerTransportOptions options, PeerTransportCallbacks callbacks);
  ~PeerTransport();  // Stop()s
  PeerTransport(const PeerTransport&) = delete;
  PeerTransport& operator=(const PeerTransport&) = delete;

  // The meridianpb.Peer service, to register on the peer port's grpc::ServerBuilder (see
  // ConfigurePeerServer). Owned by the transport: shut the server down before destroying it.
  grpc::Service* service();

  // For a joiner that learns the id after starting; also used to check inbound calls.
  void set_cluster_id(uint64_t cluster_id) { cluster_id_.store(cluster_id); }
  uint64_t cluster_id() const { return cluster_id_.load(); }
  uint64_t self_id() const { return options_.self_id; }
  const PeerTransportOptions& options() const { return options_; }

  // `urls` as in --initial-advertise-peer-urls; tried in turn on reconnects. AlreadyExists /
  // NotFound / InvalidArgument (bad or https URL, id 0 or self); FailedPrecondition after Stop.
  [[nodiscard]] absl::Status AddPeer(uint64_t id, const std::vector<std::string>& urls);
  // Changes the URLs; the current stream is closed and re-dialled to the new ones.
  [[nodiscard]] absl::Status UpdatePeer(uint64_t id, const std::vector<std::string>& urls);
  // Drops the peer's queue, stops its writer and any snapshot in flight (both joined before this
  // returns) and discards its pending reports. NotFound if unknown.
  absl::Status RemovePeer(uint64_t id);
  bool HasPeer(uint64_t id) const;

  // Queues each message for its `to`; never blocks. Dropped (and counted): messages to unknown
  // peers, to self or of local-only types, and what does not fit the peer's queue (the peer is
  // then reported unreachable). kSnap must go through SendSnapshot: one given here is dropped
  // and reported as a failed snapshot.
  void Send(std::vector<raft::Message> msgs);

  // Streams `msg` (kSnap; its snapshot data is ignored) and then the file's bytes to msg.to on a
  // thread of its own, and reports on_snapshot_status(msg.to, ok) when done. One snapshot per
  // peer at a time: another one meanwhile is refused (status false). The file is only read; the
  // caller keeps it until the status arrives.
  void SendSnapshot(raft::Message msg, std::string payload_file_path);

  // Asks each URL in turn (timeout_ms each) for the cluster id and members; the first answer
  // wins. Unavailable with every URL's error when none answers.
  [[nodiscard]] static absl::StatusOr<meridianpb::ClusterInfoResponse> FetchClusterInfo(
      const std::vector<std::string>& peer_urls, int timeout_ms);

  // Stops writers and snapshot senders, cancels outbound and inbound streams and joins every
  // thread; prompt (well under a second) even when peers are unreachable. Inbound calls are
  // refused afterwards. Idempotent.
  void Stop();

  // Counters since creation.
  uint64_t messages_sent() const { return messages_sent_.load(); }          // written to a stream
  uint64_t messages_received() const { return messages_received_.load(); }  // given to on_message
  uint64_t messages_dropped() const { return messages_dropped_.load(); }    // outbound, any reason
  uint64_t snapshots_sent() const { return snapshots_sent_.load(); }        // acknowledged
  uint64_t snapshots_received() const { return snapshots_received_.load(); }
  // Messages waiting in `id`'s queue (0 if unknown); at most max_queue_msgs.
  size_t queued_messages(uint64_t id) const;

 private:
  struct Peer;
  class Service;

  PeerTransport(PeerTransportOptions options, PeerTransportCallbacks callbacks);

  void RunWriter(const std::shared_ptr<Peer>& peer);
  void RunSnapshotSender(const std::shared_ptr<Peer>& peer, raft::Message msg, std::string path);
  // Ends a peer's threads (RemovePeer, Stop).
  void StopPeer(Peer& peer);

  // Callback delivery, always from the notifier thread so that Send() never calls back into the
  // caller.
  void NotifyUnreachable(uint64_t id);
  void NotifySnapshotStatus(uint64_t id, bool ok);
  void RunNotifier();

  // Inbound calls register their ServerContext so Stop() can cancel them. Fails with
  // UNAVAILABLE after Stop and with RESOURCE_EXHAUSTED past max_inbound_calls.
  grpc::Status BeginInbound(grpc::ServerContextBase* ctx);
  void EndInbound(grpc::ServerContextBase* ctx);

  const PeerTransportOptions options_;
  const PeerTransportCallbacks callbacks_;
  std::atomic<uint64_t> cluster_id_;
  std::unique_ptr<Service> service_;

  mutable std::mutex mu_;  // guards peers_, stopped_; taken before any Peer::mu
  std::map<uint64_t, std::shared_ptr<Peer>> peers_;
  bool stopped_ = false;

  std::mutex inbound_mu_;  // guards inbound_*
  std::condition_variable inbound_cv_;
  std::set<grpc::ServerContextBase*> inbound_calls_;
  bool inbound_closed_ = false;
  int inbound_snapshots_ = 0;

  std::mutex stop_mu_;  // serializes Stop(), so a second caller also returns only when done
  bool stop_done_ = false;

  std::mutex notify_mu_;  // guards notify_*
  std::condition_variable notify_cv_;
  std::set<uint64_t> notify_unreachable_;                     // coalesced per peer
  std::deque<std::pair<uint64_t, bool>> notify_snap_status_;  // bounded, see NotifySnapshotStatus
  bool notify_stop_ = false;
  std::thread notifier_;

  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> messages_received_{0};
  std::atomic<uint64_t> messages_dropped_{0};
  std::atomic<uint64_t> snapshots_sent_{0};
  std::atomic<uint64_t> snapshots_received_{0};
  std::atomic<uint64_t> snapshot_file_seq_{0};
};

// Registers the transport's service on `builder` and sets what the peer port needs: message
// size limit (options().max_message_bytes) and keepalive/ping policy that lets idle long-lived
// streams be probed. Use it when building the peer server yourself.
void ConfigurePeerServer(grpc::ServerBuilder* builder, PeerTransport* transport);

// Builds and starts a gRPC server serving only the peer service on `listen_addrs` (URLs like
// "http://0.0.0.0:2380" or bare "host:port"; port 0 picks a free one, reported in
// `selected_ports` in order). Call transport->Stop() before server->Shutdown(): inbound streams
// are long-lived and Shutdown() without a deadline waits for them.
[[nodiscard]] absl::StatusOr<std::unique_ptr<grpc::Server>> StartPeerServer(
    const std::vector<std::string>& listen_addrs, PeerTransport* transport,
    std::vector<int>* selected_ports = nullptr);

}  // namespace meridian::peer
