// Watch coalescing. Client watchers with the same (key, range_end, filters, prev_kv) and the
// same auth token share one upstream watcher (a "broadcast"), however many they are. All
// upstream watchers of one token travel in one upstream watch stream.
//
// Positions. A broadcast has delivered every event below `next_rev`, and keeps its latest events
// (a bounded history) so that a client asking for a revision it already passed joins by replay.
// A client that asks for an older revision than the history holds gets a private catch-up
// watcher from its revision, which merges into the broadcast as soon as their positions meet.
// A slow client's watchers are parked (their position kept) and caught up the same way once
// its stream drains, so that it never holds back anyone else and loses nothing.
//
// Fail-over. When the upstream stream breaks (member killed, lost its leader), every broadcast
// and catch-up is re-created on another member from its position: no gap, no duplicate.
#ifndef MERIDIAN_PROXY_WATCH_PROXY_H_
#define MERIDIAN_PROXY_WATCH_PROXY_H_

#include <grpcpp/generic/async_generic_service.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace meridian::proxy {

class Proxy;
struct WatchState;

class WatchProxy {
 public:
  explicit WatchProxy(Proxy* proxy);
  ~WatchProxy();
  void Start();
  void Stop();
  grpc::ServerGenericBidiReactor* NewStream(grpc::GenericCallbackServerContext* ctx);

  int64_t client_watchers() const;
  int64_t upstream_watchers() const;

 private:
  void Loop();

  Proxy* proxy_;
  std::unique_ptr<WatchState> state_;
  std::thread loop_;
};

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_WATCH_PROXY_H_
