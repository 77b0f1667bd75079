#include "common/http_server.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "common/metrics.h"
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

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

constexpr std::string_view kGetHealth = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    server_ = std::make_unique<HttpServer>(std::move(options));
    server_->Handle("/health", [this](const HttpRequest& request) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_query_ = request.query;
      }
      std::optional<std::string> serializable = request.QueryParam("serializable");
      return HttpResponse{200, "application/json",
                          serializable.value_or("") == "true" ? R"({"health":"true","s":1})"
                                                              : R"({"health":"true"})"};
    });
    server_->Handle("/metrics", [this](const HttpRequest&) {
      return HttpResponse{200, std::string(metrics::kContentType), registry_.Render()};
    });
    server_->Handle("/throw",
                    [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("boom"); });
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  std::unique_ptr<HttpServer> server_;
  metrics::Registry registry_;
  std::mutex mu_;
  std::string last_query_;  // guarded by mu_: the handlers run on several worker threads
};

TEST_F(HttpServerTest, ServesGet) {
  StartServer();
  const std::string response = RoundTrip(server_->port(), kGetHealth);
  EXPECT_EQ(response,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 17\r\n"
            "Connection: close\r\n"
            "\r\n"
            R"({"health":"true"})");
}

TEST_F(HttpServerTest, HeadHasLengthButNoBody) {
  StartServer();
  const std::string response =
      RoundTrip(server_->port(), "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(response), 200);
  EXPECT_NE(response.find("Content-Length: 17\r\n"), std::string::npos);
  EXPECT_EQ(BodyOf(response), "");
}

TEST_F(HttpServerTest, PassesQueryString) {
  StartServer();
  const std::string response =
      RoundTrip(server_->port(), "GET /health?serializable=true HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(StatusOf(response), 200);
  EXPECT_EQ(BodyOf(response), R"({"health":"true","s":1})");
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(last_query_, "serializable=true");
}

TEST_F(HttpServerTest, ServesMetrics) {
  StartServer();
  registry_.counter("requests_total", "Requests.").Inc(3);
  const std::string response =
      RoundTrip(server_->port(), "GET /metrics HTTP/1.0\r\n\r\n");  // HTTP/1.0, no Host: fine
  EXPECT_EQ(StatusOf(response), 200);
  EXPECT_NE(response.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_EQ(BodyOf(response),
            "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 3\n");
}

TEST_F(HttpServerTest, UnknownPathAndMethod) {
  StartServer();
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), "GET /nope HTTP/1.1\r\n\r\n")), 404);
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), "GET /health/ HTTP/1.1\r\n\r\n")), 404);
  const std::string post = RoundTrip(server_->port(),
                                     "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                     "\r\nhello");
  EXPECT_EQ(StatusOf(post), 405);
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), "DELETE /health HTTP/1.1\r\n\r\n")), 405);
}

TEST_F(HttpServerTest, HandlerExceptionIs500) {
  StartServer();
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), "GET /throw HTTP/1.1\r\n\r\n")), 500);
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
}

TEST_F(HttpServerTest, MalformedRequestsGet400) {
  StartServer();
  const std::vector<std::string> garbage = {
      "hello\r\n\r\n",
      "GET /health\r\n\r\n",
      "GET /health HTTP/1.1 extra\r\n\r\n",
      "GET  /health HTTP/1.1\r\n\r\n",
      "GET /health HTTP/2.0\r\n\r\n",
      "GET /health FTP/1.1\r\n\r\n",
      "GET health HTTP/1.1\r\n\r\n",
      "G(T /health HTTP/1.1\r\n\r\n",
      "GET /health HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET /health HTTP/1.1\r\nX: a\x01z\r\n\r\n",
      std::string("GET /he\0lth HTTP/1.1\r\n\r\n", 24),
      // The start of a TLS ClientHello: rejected at once, without waiting for a head to end.
      std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
      std::string("\0\0\0\0", 4),
  };
  for (const std::string& request : garbage) {
    const std::string response = RoundTrip(server_->port(), request, /*timeout_ms=*/2000);
    EXPECT_EQ(StatusOf(response), 400) << "request: " << request << "\nresponse: " << response;
  }
  // Still healthy afterwards.
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
}

TEST_F(HttpServerTest, BareLineFeedsAccepted) {
  StartServer();
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), "GET /health HTTP/1.1\nHost: x\n\n")), 200);
}

TEST_F(HttpServerTest, HeadSizeLimit) {
  StartServer();
  // Exactly 8 KiB of head is accepted...
  const std::string prefix = "GET /health HTTP/1.1\r\nX-Pad: ";
  const std::string suffix = "\r\n\r\n";
  const std::string at_limit =
      prefix + std::string(8192 - prefix.size() - suffix.size(), 'a') + suffix;
  ASSERT_EQ(at_limit.size(), 8192u);
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), at_limit)), 200);
  // ...one byte more is not, and neither is a never-ending header.
  const std::string over = prefix + std::string(8193 - prefix.size() - suffix.size(), 'a') + suffix;
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), over)), 431);
  const std::string huge = prefix + std::string(100000, 'a');
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), huge)), 431);
}

TEST_F(HttpServerTest, SlowClientTimesOutWithoutBlockingOthers) {
  HttpServerOptions options;
  options.read_timeout_ms = 2000;
  options.worker_threads = 1;
  StartServer(options);
  // More stalled clients than workers.
  std::vector<int> slow;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < 5; ++i) {
    const int fd = ConnectLoopback(server_->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "GET /health HTTP/1.1\r\nHost: x\r\n"));  // no end of head
    slow.push_back(fd);
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
  }
  // Well before the slow clients' deadline: they held nothing up.
  EXPECT_LT(MsSince(start), 1500) << "other clients were held up by the slow ones";
  for (int fd : slow) {
    bool closed = false;
    const std::string response = ReadUntilClose(fd, 5000, &closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(StatusOf(response), 408) << response;
    close(fd);
  }
  EXPECT_GE(MsSince(start), 1900);
  EXPECT_LT(MsSince(start), 5000);
}

TEST_F(HttpServerTest, TricklingDoesNotExtendTheDeadline) {
  HttpServerOptions options;
  options.read_timeout_ms = 300;
  StartServer(options);
  const int fd = ConnectLoopback(server_->port());
  ASSERT_GE(fd, 0);
  const Clock::time_point start = Clock::now();
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    closed = !SendAll(fd, "X");
    pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 50) > 0) break;  // the server answered (408) or closed
  }
  const std::string response = ReadUntilClose(fd, 2000, &closed);
  close(fd);
  EXPECT_EQ(StatusOf(response), 408);
  EXPECT_LT(MsSince(start), 1500);
}

TEST_F(HttpServerTest, ClientsThatVanishAreHarmless) {
  StartServer();
  for (int i = 0; i < 20; ++i) {
    const int fd = ConnectLoopback(server_->port());
    ASSERT_GE(fd, 0);
    if (i % 2 == 0) SendAll(fd, "GET /hea");
    close(fd);
  }
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
}

TEST_F(HttpServerTest, ConnectionLimit) {
  HttpServerOptions options;
  options.max_connections = 2;
  StartServer(options);
  const int a = ConnectLoopback(server_->port());
  const int b = ConnectLoopback(server_->port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // Let the server accept both before the third arrives.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 503);
  close(a);
  close(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
}

TEST_F(HttpServerTest, ManyParallelClients) {
  StartServer();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (StatusOf(RoundTrip(server_->port(), kGetHealth)) == 200) ++ok;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 200);
}

TEST_F(HttpServerTest, RandomBytesNeverCrash) {
  StartServer();
  std::mt19937 rng(12345);
  for (int i = 0; i < 100; ++i) {
    std::string junk(rng() % 300, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (i % 3 == 0) junk += "\r\n\r\n";
    const int fd = ConnectLoopback(server_->port());
    ASSERT_GE(fd, 0);
    SendAll(fd, junk);
    shutdown(fd, SHUT_WR);
    ReadUntilClose(fd, 2000);
    close(fd);
  }
  EXPECT_EQ(StatusOf(RoundTrip(server_->port(), kGetHealth)), 200);
}

TEST_F(HttpServerTest, StopIsPromptWithOpenConnections) {
  HttpServerOptions options;
  options.read_timeout_ms = 60000;
  StartServer(options);
  std::vector<int> idle;
  for (int i = 0; i < 10; ++i) {
    const int fd = ConnectLoopback(server_->port());
    ASSERT_GE(fd, 0);
    if (i % 2 == 0) SendAll(fd, "GET /health HTTP/1.1\r\n");
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const Clock::time_point start = Clock::now();
  server_->Stop();
  EXPECT_LT(MsSince(start), 1000);
  for (int fd : idle) {
    bool closed = false;
    ReadUntilClose(fd, 1000, &closed);
    EXPECT_TRUE(closed) << "connection left open after Stop()";
    close(fd);
  }
  EXPECT_LT(ConnectLoopback(server_->port()), 0) << "still listening after Stop()";
  server_->Stop();  // idempotent
}

TEST(HttpServerStartTest, BindFailureIsAnError) {
  HttpServer first({.host = "127.0.0.1", .port = 0});
  ASSERT_TRUE(first.Start().ok());
  HttpServer second({.host = "127.0.0.1", .port = first.port()});
  const absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  HttpServer bad_host({.host = "no such host.invalid", .port = 0});
  EXPECT_FALSE(bad_host.Start().ok());
}

TEST(HttpParseTest, ParsesRequestHead) {
  absl::StatusOr<HttpRequest> request = ParseHttpRequestHead(
      "GET /health?serializable=true&x=a%20b+c HTTP/1.1\r\nHost: localhost:2379\r\n"
      "User-Agent:  curl/7.88 \r\n\r\n");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->method, "GET");
  EXPECT_EQ(request->path, "/health");
  EXPECT_EQ(request->query, "serializable=true&x=a%20b+c");
  EXPECT_EQ(request->version, "HTTP/1.1");
  ASSERT_NE(request->Header("HOST"), nullptr);
  EXPECT_EQ(*request->Header("host"), "localhost:2379");
  EXPECT_EQ(*request->Header("user-agent"), "curl/7.88");
  EXPECT_EQ(request->Header("missing"), nullptr);
  EXPECT_EQ(request->QueryParam("serializable"), "true");
  EXPECT_EQ(request->QueryParam("x"), "a b c");
  EXPECT_EQ(request->QueryParam("nope"), std::nullopt);

  absl::StatusOr<HttpRequest> absolute =
      ParseHttpRequestHead("GET http://127.0.0.1:2379/version?x HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(absolute.ok()) << absolute.status();
  EXPECT_EQ(absolute->path, "/version");
  EXPECT_EQ(absolute->QueryParam("x"), "");

  absl::StatusOr<HttpRequest> bare = ParseHttpRequestHead("GET http://host?q=1 HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->path, "/");
  EXPECT_EQ(bare->query, "q=1");

  EXPECT_FALSE(ParseHttpRequestHead("GET / HTTP/1.1\r\n").ok());  // unterminated
  EXPECT_FALSE(ParseHttpRequestHead("").ok());
  EXPECT_FALSE(ParseHttpRequestHead("GET / HTTP/1.1\r\n\r\nextra").ok());
}

TEST(HttpParseTest, SerializesResponses) {
  HttpResponse response{404, "text/plain", "nope"};
  response.headers = {{"X-Etcd-Cluster-Id", "cdf818194e3a8c32"},
                      {"Bad\r\nInjected", "x"},
                      {"X-Value", "a\r\nInjected: y"},
                      {"Content-Length", "99"}};
  EXPECT_EQ(SerializeHttpResponse(response, false),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            "X-Etcd-Cluster-Id: cdf818194e3a8c32\r\nContent-Length: 4\r\nConnection: close\r\n"
            "\r\nnope");
  EXPECT_EQ(SerializeHttpResponse(HttpResponse{200, "", "abc"}, true),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
}

}  // namespace
}  // namespace meridian
