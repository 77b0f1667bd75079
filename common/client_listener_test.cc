#include "common/client_listener.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "common/test_socket.h"
#include "gtest/gtest.h"

namespace meridian {
namespace {

using ::meridian::testing::BodyOf;
using ::meridian::testing::ConnectLoopback;
using ::meridian::testing::ReadUntilClose;
using ::meridian::testing::RoundTrip;
using ::meridian::testing::SendAll;
using ::meridian::testing::StatusOf;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kGetHealth = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
constexpr char kHealthCheck[] = "/grpc.health.v1.Health/Check";

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// A channel with its own connection: without the local pool, channels with equal arguments
// share one subchannel, and "many connections" would quietly be one.
std::shared_ptr<grpc::Channel> NewChannel(int port) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("ipv4:127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

constexpr char kEcho[] = "/meridian.test.Echo/Echo";

// Echoes kEcho's request and answers UNIMPLEMENTED for other methods the server does not know.
// (A server needs at least one service to be built; generated code is not needed for this one.)
class EchoService : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(bool echo) {
        if (echo) {
          StartRead(&message_);
        } else {
          Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method"));
        }
      }
      void OnReadDone(bool ok) override {
        if (ok) {
          StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
        } else {
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
        }
      }
      void OnDone() override { delete this; }

     private:
      grpc::ByteBuffer message_;
    };
    return new Reactor(context->method() == kEcho);
  }
};

// A unary call with raw bytes, so no generated code is needed. `response` gets the reply.
grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  std::string* response = nullptr, const std::string& request_bytes = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer reply;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &reply,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (status.ok() && response != nullptr) {
    std::vector<grpc::Slice> slices;
    if (reply.Dump(&slices).ok()) {
      response->clear();
      for (const grpc::Slice& s : slices) {
        response->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  return status;
}

class ClientListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;  // no listening port: every connection comes from the listener
    builder.RegisterCallbackGenericService(&echo_service_);
    grpc_server_ = builder.BuildAndStart();
    ASSERT_NE(grpc_server_, nullptr);
  }

  void StartListener(HttpServerOptions options = {}, bool with_grpc = true) {
    options.host = "127.0.0.1";
    listener_ = std::make_unique<ClientListener>(std::move(options),
                                                 with_grpc ? grpc_server_.get() : nullptr);
    listener_->Handle("/health", [](const HttpRequest&) {
      return HttpResponse{200, "application/json", R"({"health":"true"})"};
    });
    ASSERT_TRUE(listener_->Start().ok());
  }

  void TearDown() override {
    if (listener_ != nullptr) listener_->Stop();
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  EchoService echo_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<ClientListener> listener_;
};

TEST_F(ClientListenerTest, GrpcAndHttpShareThePort) {
  StartListener();
  std::shared_ptr<grpc::Channel> channel = NewChannel(listener_->port());

  std::string reply;
  grpc::Status status = Call(channel, kHealthCheck, &reply);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(reply, std::string("\x08\x01", 2));  // HealthCheckResponse{status: SERVING}

  status = Call(channel, kEcho, &reply, "ping");
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(reply, "ping");

  // The HTTP/2 path reaches gRPC's method dispatch.
  status = Call(channel, "/etcdserverpb.KV/Range");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();

  const std::string response = RoundTrip(listener_->port(), kGetHealth);
  EXPECT_EQ(StatusOf(response), 200);
  EXPECT_EQ(BodyOf(response), R"({"health":"true"})");
  EXPECT_EQ(StatusOf(RoundTrip(listener_->port(), "GET /metrics HTTP/1.1\r\n\r\n")), 404);
}

TEST_F(ClientListenerTest, ManyConnectionsInParallel) {
  StartListener();
  const int port = listener_->port();
  std::atomic<int> grpc_ok{0};
  std::atomic<int> http_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::shared_ptr<grpc::Channel> channel = NewChannel(port);
      for (int i = 0; i < 10; ++i) {
        const std::string request = "request " + std::to_string(i);
        std::string reply;
        if (Call(channel, kEcho, &reply, request).ok() && reply == request) ++grpc_ok;
      }
    });
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (StatusOf(RoundTrip(port, kGetHealth)) == 200) ++http_ok;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(grpc_ok.load(), 40);
  EXPECT_EQ(http_ok.load(), 40);
}

TEST_F(ClientListenerTest, StopIsPromptWithConnectionsOpen) {
  HttpServerOptions options;
  options.read_timeout_ms = 60000;
  StartListener(options);
  std::shared_ptr<grpc::Channel> channel = NewChannel(listener_->port());
  ASSERT_TRUE(Call(channel, kHealthCheck).ok());                   // an open gRPC connection
  const int idle = ConnectLoopback(listener_->port());             // undecided
  const int partial_preface = ConnectLoopback(listener_->port());  // looks like HTTP/2 so far
  const int partial_http = ConnectLoopback(listener_->port());     // HTTP/1.1 head unfinished
  ASSERT_GE(idle, 0);
  ASSERT_GE(partial_preface, 0);
  ASSERT_GE(partial_http, 0);
  ASSERT_TRUE(SendAll(partial_preface, "PRI * HTTP/2.0\r\n"));
  ASSERT_TRUE(SendAll(partial_http, "GET /health HTTP/1.1\r\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));

  const Clock::time_point start = Clock::now();
  listener_->Stop();
  EXPECT_LT(MsSince(start), 1000);
  for (int fd : {idle, partial_preface, partial_http}) {
    bool closed = false;
    ReadUntilClose(fd, 1000, &closed);
    EXPECT_TRUE(closed);
    close(fd);
  }
  // The gRPC connection belongs to the gRPC server and still works until its Shutdown().
  EXPECT_TRUE(Call(channel, kHealthCheck).ok());
}

TEST_F(ClientListenerTest, StalledPrefaceTimesOut) {
  HttpServerOptions options;
  options.read_timeout_ms = 300;
  StartListener(options);
  const int fd = ConnectLoopback(listener_->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "PRI * HTTP/2.0\r\n\r\nSM"));  // 20 of 24 preface bytes
  const Clock::time_point start = Clock::now();
  bool closed = false;
  const std::string response = ReadUntilClose(fd, 3000, &closed);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_EQ(response, "");  // not answered as HTTP/1.1: it may be a gRPC client
  EXPECT_LT(MsSince(start), 1500);
  EXPECT_EQ(StatusOf(RoundTrip(listener_->port(), kGetHealth)), 200);
}

TEST_F(ClientListenerTest, WithoutGrpcServerHttp2IsRejected) {
  StartListener({}, /*with_grpc=*/false);
  const std::string response =
      RoundTrip(listener_->port(), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 2000);
  EXPECT_EQ(StatusOf(response), 400);
  EXPECT_EQ(StatusOf(RoundTrip(listener_->port(), kGetHealth)), 200);
}

}  // namespace
}  // namespace meridian
