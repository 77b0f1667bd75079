#include "proxy/client_stream.h"

#include "proxy/key_prefix.h"

namespace meridian::proxy {

bool ClientStream::Send(grpc::ByteBuffer msg) {
  std::unique_lock<std::mutex> lock(mu_);
  if (close_status_) return false;
  int64_t n = static_cast<int64_t>(msg.Length());
  if (writing_) {
    queued_bytes_ += n;
    queue_.push_back(std::move(msg));
    if (drain_mark_bytes_ > 0 && queued_bytes_ > drain_mark_bytes_) over_mark_ = true;
    return true;
  }
  writing_ = true;
  in_flight_ = std::move(msg);
  lock.unlock();
  StartWrite(&in_flight_);
  return true;
}

void ClientStream::ReadNext() {
  if (!closing()) StartRead(&request_);
}

bool ClientStream::TakeRequest(bool ok, google::protobuf::Message* msg) {
  if (!ok) {
    Close(grpc::Status::OK);
    return false;
  }
  if (!ParseBuffer(request_, msg)) {
    Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "meridian-proxy: malformed request"));
    return false;
  }
  return true;
}

int64_t ClientStream::queued_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_bytes_;
}

bool ClientStream::closing() {
  std::lock_guard<std::mutex> lock(mu_);
  return close_status_.has_value();
}

void ClientStream::Close(const grpc::Status& status) {
  std::unique_lock<std::mutex> lock(mu_);
  if (close_status_) return;
  close_status_ = status;
  MaybeFinishLocked(lock);
}

void ClientStream::MaybeFinishLocked(std::unique_lock<std::mutex>& lock) {
  if (finished_ || writing_ || !close_status_) return;
  finished_ = true;
  grpc::Status st = *close_status_;
  lock.unlock();
  Finish(st);
}

void ClientStream::OnWriteDone(bool ok) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!ok && !close_status_) {
    // The client is gone; what is queued cannot be delivered.
    close_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  if (close_status_ && !ok) {
    queue_.clear();
    queued_bytes_ = 0;
  }
  if (!queue_.empty()) {
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= static_cast<int64_t>(in_flight_.Length());
    bool drained = over_mark_ && queued_bytes_ <= drain_mark_bytes_ / 4;
    if (drained) over_mark_ = false;
    // More is queued behind this message: let gRPC coalesce them into fewer socket writes. The
    // last queued message goes without the hint and flushes.
    grpc::WriteOptions options;
    if (!queue_.empty()) options.set_buffer_hint();
    lock.unlock();
    StartWrite(&in_flight_, options);
    if (drained) OnDrained();
    return;
  }
  writing_ = false;
  bool drained = over_mark_;
  over_mark_ = false;
  MaybeFinishLocked(lock);
  if (lock.owns_lock()) lock.unlock();
  if (drained) OnDrained();
}

void ClientStream::OnDone() {
  OnStreamDone();
  std::shared_ptr<ClientStream> self;
  {
    std::lock_guard<std::mutex> lock(mu_);
    self = std::move(self_);
  }
  // `self` may be the last reference: the reactor goes with it.
}

}  // namespace meridian::proxy
