// The watchable side of the store: routes committed events to watchers.
//
// Every watcher has `next_rev`, the next revision it must see. Synced watchers get events
// straight from the apply step (Notify). A watcher whose stream queue is full, or that asked for
// an older start revision, is unsynced: the catch-up thread feeds it from the history column
// family in bounded batches, then moves it back to the synced set. Delivery never skips a
// revision (no gap) and never repeats one (events below next_rev are dropped), a revision is
// never split across responses (unless the client asked for fragments), and a slow stream only
// ever stalls itself.
//
// Threading: Notify is called by the apply thread; Create/Cancel/RequestProgress by gRPC threads;
// the catch-up thread is internal. WatchStream::Sink callbacks run with the stream's mutex held
// and must not call back into the hub.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "etcdserverpb/rpc.pb.h"
#include "node/mvcc/store.h"

namespace meridian::mvcc {

struct WatchHubOptions {
  size_t stream_queue_bytes_max = 8u << 20;  // pending responses per stream
  size_t stream_queue_responses_max = 4096;
  size_t catchup_batch_events = 1000;  // history events read per catch-up step
  size_t fragment_bytes = (1u << 20) + (1u << 19);  // a fragmenting watcher's response size
  // Fills response headers (cluster id, member id, raft term) with the given revision.
  std::function<void(etcdserverpb::ResponseHeader*, int64_t rev)> fill_header;
};

class WatchHub;

// One client stream's outgoing queue. The transport implements Sink and drains the queue.
class WatchStream {
 public:
  class Sink {
   public:
    virtual ~Sink() = default;
    // Starts writing `msg` (which stays valid until the sink calls OnWriteDone). Called with
    // the stream mutex held, at most one write at a time; must not block or call back.
    // `more`: other responses are queued behind this one, so the transport may hold this one
    // back briefly to send them together (gRPC's buffer hint); the last one flushes.
    virtual void Write(const etcdserverpb::WatchResponse* msg, bool more) = 0;
  };
  explicit WatchStream(Sink* sink) : sink_(sink) {}
  // The sink finished the last write: starts the next one if any. Returns whether it did.
  bool OnWriteDone();
  // True while a write handed to the sink has not completed.
  bool writing() const;
  // Stops all calls to the sink (no new writes start) and drops queued responses.
  void Detach();
  // Queues a control response (created, canceled, progress); never dropped.
  void PushControl(etcdserverpb::WatchResponse resp);
  size_t queued_responses() const;

 private:
  friend class WatchHub;
  bool HasRoom(size_t bytes) const;
  void PushLocked(etcdserverpb::WatchResponse&& resp, size_t bytes);
  // Appends events for `watch_id` to its newest queued, unsent event response if there is one
  // (and it stays under `max_merged_bytes`); returns false if a new response is needed.
  bool MergeLocked(int64_t watch_id, std::vector<mvccpb::Event>& events, size_t bytes,
                   int64_t header_rev, size_t max_merged_bytes);
  void WriteNextLocked();

  mutable std::mutex mu_;
  Sink* sink_;
  bool sink_busy_ = false;
  etcdserverpb::WatchResponse in_flight_;
  std::deque<std::pair<etcdserverpb::WatchResponse, size_t>> queue_;
  // Queue position (counted from the stream's start) of each watcher's newest event response
  // that has not been written yet: a backed-up stream sends fewer, larger responses.
  std::unordered_map<int64_t, uint64_t> mergeable_;
  uint64_t popped_ = 0;  // responses taken off the queue so far
  size_t queued_bytes_ = 0;
  size_t max_bytes_ = 0;
  size_t max_responses_ = 0;
  // Hub-side bookkeeping, guarded by the hub's mutex.
  std::map<int64_t, struct Watcher*> watchers_;
  int64_t next_watch_id_ = 0;
  bool progress_pending_ = false;
};

struct Watcher {
  int64_t id = 0;
  std::shared_ptr<WatchStream> stream;
  std::string key;
  std::string end;  // etcd conventions, see KeyRange
  bool no_put = false;
  bool no_delete = false;
  bool prev_kv = false;
  bool fragment = false;
  bool progress_notify = false;
  int64_t next_rev = 0;
  bool synced = false;
};

class WatchHub {
 public:
  WatchHub(Store* store, WatchHubOptions options);
  ~WatchHub();

  std::shared_ptr<WatchStream> NewStream(WatchStream::Sink* sink);
  // Removes the stream's watchers; no callback reaches its sink afterwards.
  void CloseStream(const std::shared_ptr<WatchStream>& stream);

  // Creates a watcher and queues the "created" response (or a created+canceled response with
  // etcd's reason on error).
  void Create(const std::shared_ptr<WatchStream>& stream, const etcdserverpb::WatchCreateRequest& req);
  void Cancel(const std::shared_ptr<WatchStream>& stream, int64_t watch_id);
  // etcd 3.5's WatchProgressRequest: a stream-wide progress response (watch_id -1) once every
  // watcher on the stream is synced.
  void RequestProgress(const std::shared_ptr<WatchStream>& stream);
  // Sends a progress notification to every synced watcher that asked for progress_notify.
  void NotifyProgress();

  // Called by the apply thread after a batch with revisions up to `rev` was committed and
  // published. `events` carry prev_kv where the key had one.
  void Notify(const std::vector<mvccpb::Event>& events, int64_t rev);

  // The store jumped to revision `rev` without events (a raft snapshot was installed): every
  // synced watcher catches up from history instead, so none misses what the jump skipped.
  void Resync(int64_t rev);

  size_t watcher_count() const;
  size_t unsynced_count() const;

 private:
  void CatchupLoop();
  // Queues the responses for `w` built from `events` (already filtered to its range, with
  // prev_kv only if it asked for it; `bytes` their encoded size); returns false if the stream
  // had no room. Hub mutex held.
  bool Deliver(Watcher* w, std::vector<mvccpb::Event>&& events, size_t bytes, int64_t header_rev);
  bool Matches(const Watcher& w, const mvccpb::Event& ev) const;
  void AddSyncedLocked(Watcher* w);
  void RemoveSyncedLocked(Watcher* w);
  void RemoveLocked(Watcher* w);
  void MaybeSendProgressLocked(WatchStream* stream);
  etcdserverpb::WatchResponse NewResponse(int64_t watch_id, int64_t rev) const;

  Store* store_;
  WatchHubOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;
  int64_t notified_rev_ = 0;
  std::unordered_multimap<std::string, Watcher*> synced_by_key_;
  std::set<Watcher*> synced_ranges_;
  std::set<Watcher*> unsynced_;
  size_t watcher_count_ = 0;
  std::thread catchup_;
};

}  // namespace meridian::mvcc
