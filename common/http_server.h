// A small HTTP/1.1 server for operational endpoints (/health, /version, /metrics): GET and HEAD
// only, one request per connection (answers carry "Connection: close").
//
// One I/O thread accepts connections and reads request heads with poll(), so a client that
// sends its request slowly holds no thread; a bounded pool of worker threads runs the handlers
// and writes the answers. Everything read from the network is bounded: the request head by
// max_header_bytes and read_timeout_ms (counted from accept, so trickling bytes does not extend
// it), open connections by max_connections, waiting requests by max_queued_requests.
//
//   HttpServer server({.host = "127.0.0.1", .port = 0});
//   server.Handle("/health", [](const HttpRequest& req) {
//     return HttpResponse{200, "application/json", R"({"health":"true"})"};
//   });
//   absl::Status started = server.Start();   // then server.port()
//   ...
//   server.Stop();                            // also done by the destructor
#ifndef MERIDIAN_COMMON_HTTP_SERVER_H_
#define MERIDIAN_COMMON_HTTP_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meridian {

struct HttpRequest {
  std::string method;   // "GET" or "HEAD" by the time a handler sees it
  std::string target;   // as sent, e.g. "/health?serializable=true"
  std::string path;     // "/health"
  std::string query;    // "serializable=true": raw, without the '?'
  std::string version;  // "HTTP/1.1"
  // Header names are lower-cased; values have surrounding whitespace removed. In request order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string peer;  // "127.0.0.1:54321"; empty when unknown

  // The first header called `name` (any case), or nullptr.
  const std::string* Header(std::string_view name) const;
  // The first query parameter called `name`, percent-decoded ('+' is a space); nullopt if absent.
  // "?serializable" without '=' yields "".
  std::optional<std::string> QueryParam(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Extra headers. Content-Length and Connection are always set by the server; entries whose
  // name or value could break the header block (CR, LF, ':' in names) are dropped.
  std::vector<std::pair<std::string, std::string>> headers = {};
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // IPv4/IPv6 literal or name; "" or "0.0.0.0" for all
  int port = 0;                    // 0 picks a free port; see HttpServer::port()
  size_t max_header_bytes = 8 * 1024;
  int read_timeout_ms = 5000;   // from accept until the request head is complete
  int write_timeout_ms = 5000;  // for writing the answer
  int worker_threads = 2;
  size_t max_queued_requests = 64;  // beyond this, answers 503 at once
  size_t max_connections = 256;     // connections still sending their request; beyond, 503
  // When set, a connection whose first bytes are the HTTP/2 client preface is passed to this
  // function, which takes ownership of the (non-blocking) socket, with the preface still unread.
  // ClientListener uses it to feed gRPC. Runs on the I/O thread: it must not block.
  std::function<void(int fd)> http2_handoff = nullptr;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // Stop()

  // Serves GET and HEAD on exactly `path` (no prefix matching; the query string is not part of
  // it). Must be called before Start(); a later registration for the same path replaces it.
  void Handle(std::string path, HttpHandler handler);

  // Binds, listens and starts the threads. Fails (and may be retried) if binding fails.
  [[nodiscard]] absl::Status Start();

  // Closes the listening socket and every connection not yet answered, waits for handlers that
  // are running, and joins all threads. Idempotent; the server cannot be started again.
  void Stop();

  // The bound port (the chosen one when options.port was 0); 0 before Start().
  int port() const { return port_; }

 private:
  struct Connection;
  struct Job;

  void IoLoop();
  void WorkerLoop();
  // These leave conn.fd at -1 once the connection has left the I/O thread's hands (closed,
  // queued for a worker, or handed off).
  void OnReadable(Connection& conn);
  void DispatchHead(Connection& conn, size_t head_end);
  // Queues for a worker, or answers 503 and closes when the queue is full.
  void Enqueue(std::unique_ptr<Job> job);
  void ServeJob(Job& job);
  // Best-effort immediate answer from the I/O thread (503, 408): never blocks.
  static void SendNow(int fd, int status, const char* reason_body);

  const HttpServerOptions options_;
  std::map<std::string, HttpHandler, std::less<>> handlers_;  // read-only once started
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd; readable once Stop() begins, which wakes every poll()
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
  std::atomic<bool> stopping_{false};
  std::thread io_thread_;
  std::vector<std::thread> workers_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::unique_ptr<Job>> queue_;  // guarded by queue_mu_
  bool queue_closed_ = false;               // guarded by queue_mu_
};

// Exposed for tests. Parses a request head: the request line and header lines up to and
// including the empty line. InvalidArgument (with the reason) for anything malformed.
[[nodiscard]] absl::StatusOr<HttpRequest> ParseHttpRequestHead(std::string_view head);

// The bytes sent for `response`; without the body for HEAD (Content-Length still the body's).
std::string SerializeHttpResponse(const HttpResponse& response, bool head_only);

// "OK", "Not Found", ...; "Unknown" for codes it does not know.
const char* HttpReasonPhrase(int status);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_HTTP_SERVER_H_
