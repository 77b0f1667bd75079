// The client side of a proxied bidirectional stream (Watch, LeaseKeepAlive): an unbounded
// number of producers queue whole messages, and the reactor writes them one at a time. The queue
// is bounded in bytes by the owner, who asks queued_bytes() before Send() and decides what to do
// with a slow client (park its watchers, or close it); Send() itself never blocks.
#ifndef MERIDIAN_PROXY_CLIENT_STREAM_H_
#define MERIDIAN_PROXY_CLIENT_STREAM_H_

#include <grpcpp/generic/async_generic_service.h>
#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

namespace meridian::proxy {

class ClientStream : public grpc::ServerGenericBidiReactor {
 public:
  ClientStream() = default;
  ~ClientStream() override = default;

  // Queues one message; false once the stream is closing.
  bool Send(grpc::ByteBuffer msg);
  int64_t queued_bytes();
  // Ends the stream with `status` once the queued messages are written. Idempotent.
  void Close(const grpc::Status& status);
  bool closing();

  void OnWriteDone(bool ok) final;
  void OnDone() final;

 protected:
  // Reading: ReadNext() asks for the next client message; OnReadDone then calls TakeRequest(),
  // which parses it into `msg`, or closes the stream (client done: OK; bytes that do not parse:
  // INVALID_ARGUMENT) and returns false.
  void ReadNext();
  [[nodiscard]] bool TakeRequest(bool ok, google::protobuf::Message* msg);
  size_t request_bytes() const { return request_.Length(); }

  // Keeps the reactor alive until gRPC is done with it (and the owner drops its references).
  void Retain(std::shared_ptr<ClientStream> self) { self_ = std::move(self); }
  // Called once, when gRPC is done with the call: the owner must drop its references.
  virtual void OnStreamDone() {}
  // Called (without locks held) when the queue fell to a quarter of `drain_mark_bytes_` after
  // having exceeded it, so that parked work can resume.
  virtual void OnDrained() {}
  int64_t drain_mark_bytes_ = 0;

 private:
  void MaybeFinishLocked(std::unique_lock<std::mutex>& lock);

  std::mutex mu_;
  std::deque<grpc::ByteBuffer> queue_;
  int64_t queued_bytes_ = 0;
  bool writing_ = false;
  bool over_mark_ = false;
  std::optional<grpc::Status> close_status_;
  bool finished_ = false;
  grpc::ByteBuffer in_flight_;
  grpc::ByteBuffer request_;
  std::shared_ptr<ClientStream> self_;
};

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_CLIENT_STREAM_H_
