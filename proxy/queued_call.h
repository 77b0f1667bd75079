// The upstream side of a coalesced stream (Watch, LeaseKeepAlive): a client bidi reactor whose
// Write() may be called from any thread at any time. gRPC allows one write in flight, so the
// rest wait in order; after the stream fails, writes are dropped (the owner re-sends what matters
// on a new stream).
#ifndef MERIDIAN_PROXY_QUEUED_CALL_H_
#define MERIDIAN_PROXY_QUEUED_CALL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

namespace meridian::proxy {

template <typename Request, typename Response>
class QueuedClientCall : public grpc::ClientBidiReactor<Request, Response> {
 public:
  void Write(Request req) {
    std::unique_lock<std::mutex> lock(wmu_);
    if (writes_closed_) return;
    if (writing_) {
      wq_.push_back(std::move(req));
      return;
    }
    writing_ = true;
    in_flight_ = std::move(req);
    lock.unlock();
    this->StartWrite(&in_flight_);
  }

  void OnWriteDone(bool ok) final {
    std::unique_lock<std::mutex> lock(wmu_);
    if (!ok) writes_closed_ = true;
    if (writes_closed_ || wq_.empty()) {
      writing_ = false;
      wq_.clear();
      return;
    }
    in_flight_ = std::move(wq_.front());
    wq_.pop_front();
    lock.unlock();
    this->StartWrite(&in_flight_);
  }

 protected:
  // From OnDone: nothing more may be written.
  void CloseWrites() {
    std::lock_guard<std::mutex> lock(wmu_);
    writes_closed_ = true;
    wq_.clear();
  }

 private:
  std::mutex wmu_;
  std::deque<Request> wq_;
  Request in_flight_;
  bool writing_ = false;
  bool writes_closed_ = false;
};

// The background loop and shutdown shared by the watch and lease coalescers. `State` has `mu`,
// `cv`, `stopping`, `ups` (token -> upstream call with `closing` and `ctx`), `live_ups` and
// `Tick()`, which runs under `mu` every period_ms.
template <typename State>
void RunTicks(State* st, int period_ms) {
  std::unique_lock<std::mutex> lock(st->mu);
  while (!st->stopping) {
    st->cv.wait_for(lock, std::chrono::milliseconds(period_ms));
    if (st->stopping) break;
    st->Tick();
  }
}

// Cancels every upstream call, stops the loop and waits (bounded) until gRPC is done with the
// calls, which reference `st`.
template <typename State>
void StopCoalescer(State* st, std::thread* loop) {
  {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->stopping) return;
    st->stopping = true;
    for (auto& [token, up] : st->ups) {
      up->closing = true;
      up->ctx.TryCancel();
    }
  }
  st->cv.notify_all();
  if (loop->joinable()) loop->join();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait_for(lock, std::chrono::seconds(5), [st] { return st->live_ups == 0; });
}

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_QUEUED_CALL_H_
