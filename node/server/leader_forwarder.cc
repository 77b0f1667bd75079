#include "node/server/leader_forwarder.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "common/dial_target.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace meridian::server {

LeaderForwarder::LeaderForwarder(std::function<std::string()> leader_endpoint)
    : leader_endpoint_(std::move(leader_endpoint)) {
  worker_ = std::thread([this] { Run(); });
}

LeaderForwarder::~LeaderForwarder() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void LeaderForwarder::Submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && queue_.size() < kMaxQueued) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job(nullptr);
}

void LeaderForwarder::RenewLease(int64_t lease_id,
                                 std::function<void(std::optional<int64_t>)> done) {
  Submit([lease_id, done = std::move(done)](const std::shared_ptr<grpc::Channel>& leader) {
    std::optional<int64_t> ttl;
    if (leader) {
      auto stub = etcdserverpb::Lease::NewStub(leader);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      auto stream = stub->LeaseKeepAlive(&ctx);
      etcdserverpb::LeaseKeepAliveRequest req;
      req.set_id(lease_id);
      etcdserverpb::LeaseKeepAliveResponse resp;
      bool answered = stream->Write(req) && stream->Read(&resp);
      stream->WritesDone();
      if (stream->Finish().ok() && answered) ttl = resp.ttl();
    }
    done(ttl);
  });
}

void LeaderForwarder::LeaseTimeToLive(
    const etcdserverpb::LeaseTimeToLiveRequest& request,
    std::function<void(std::optional<etcdserverpb::LeaseTimeToLiveResponse>)> done) {
  Submit([request, done = std::move(done)](const std::shared_ptr<grpc::Channel>& leader) {
    std::optional<etcdserverpb::LeaseTimeToLiveResponse> answer;
    if (leader) {
      auto stub = etcdserverpb::Lease::NewStub(leader);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      etcdserverpb::LeaseTimeToLiveResponse resp;
      if (stub->LeaseTimeToLive(&ctx, request, &resp).ok()) answer = std::move(resp);
    }
    done(std::move(answer));
  });
}

void LeaderForwarder::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    const bool stopping = stop_;
    lock.unlock();
    std::shared_ptr<grpc::Channel> channel;
    if (!stopping) {
      std::string target = leader_endpoint_();
      if (!target.empty()) {
        if (target != channel_target_ || !channel_) {
          channel_ = grpc::CreateChannel(DialTarget(target), grpc::InsecureChannelCredentials());
          channel_target_ = target;
        }
        channel = channel_;
      }
    }
    job(channel);
    lock.lock();
  }
}

}  // namespace meridian::server
