#include "node/server/lease_forwarder.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "etcdserverpb/rpc.grpc.pb.h"

namespace meridian::server {

LeaseForwarder::LeaseForwarder(std::function<std::string()> leader_endpoint)
    : leader_endpoint_(std::move(leader_endpoint)) {
  worker_ = std::thread([this] { Run(); });
}

LeaseForwarder::~LeaseForwarder() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void LeaseForwarder::Renew(int64_t lease_id, std::function<void(int64_t)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && queue_.size() < kMaxQueued) {
      queue_.emplace_back(lease_id, std::move(done));
      cv_.notify_one();
      return;
    }
  }
  done(0);
}

void LeaseForwarder::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    auto [id, done] = std::move(queue_.front());
    queue_.pop_front();
    if (stop_) {
      lock.unlock();
      done(0);
      lock.lock();
      continue;
    }
    lock.unlock();
    int64_t ttl = 0;
    std::string target = leader_endpoint_();
    if (!target.empty()) {
      if (target != channel_target_ || !channel_) {
        channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
        channel_target_ = target;
      }
      auto stub = etcdserverpb::Lease::NewStub(channel_);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      auto stream = stub->LeaseKeepAlive(&ctx);
      etcdserverpb::LeaseKeepAliveRequest req;
      req.set_id(id);
      etcdserverpb::LeaseKeepAliveResponse resp;
      if (stream->Write(req) && stream->Read(&resp)) ttl = resp.ttl();
      stream->WritesDone();
      (void)stream->Finish();
    }
    done(ttl);
    lock.lock();
  }
}

}  // namespace meridian::server
