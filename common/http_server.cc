#include "common/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/strings.h"
#include "spdlog/spdlog.h"

namespace meridian {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// A connection that has sent only part of the HTTP/2 preface is looked at again after this
// long: the bytes are peeked, not consumed, so poll() would otherwise report it in a busy loop.
constexpr auto kPrefaceRecheck = std::chrono::milliseconds(5);
// Errors such as EMFILE leave the listening socket readable; back off instead of spinning.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
constexpr int kMaxAcceptsPerWakeup = 64;
constexpr int kListenBacklog = 128;
// After answering a request that came with more data than its head, that data is drained
// (bounded) before closing: closing with unread input sends a reset, which can destroy the
// answer before the client has read it.
constexpr size_t kMaxDrainBytes = 64 * 1024;
constexpr auto kMaxDrainTime = std::chrono::milliseconds(200);

bool IsTokenChar(unsigned char c) {
  if (absl::ascii_isalnum(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsToken(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return IsTokenChar(static_cast<unsigned char>(c));
  });
}

// Control characters other than tab; bytes >= 0x80 (obs-text) are allowed in values.
bool HasControlChar(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t') || c == 0x7f;
  });
}

absl::Status Malformed(const char* why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", why));
}

// Index just past the empty line ending a request head ("\r\n\r\n", or bare "\n\n" from lenient
// clients), searching from `from`; npos when not there yet.
size_t FindHeadEnd(std::string_view buffer, size_t from) {
  for (size_t i = buffer.find('\n', from); i != std::string_view::npos;
       i = buffer.find('\n', i + 1)) {
    if (i + 1 < buffer.size() && buffer[i + 1] == '\n') return i + 2;
    if (i + 2 < buffer.size() && buffer[i + 1] == '\r' && buffer[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

// False once the bytes so far cannot begin a request line, so that binary junk (a TLS hello, a
// port scanner) is answered at once instead of holding a slot until the read timeout.
bool CouldBeRequestLine(std::string_view buffer) {
  if (buffer.starts_with("\r\n")) {
    buffer.remove_prefix(2);
  } else if (buffer.starts_with("\n")) {
    buffer.remove_prefix(1);
  }
  // No method is this long; the cap also keeps the rescans on every read cheap.
  constexpr size_t kMaxMethodBytes = 32;
  for (size_t i = 0; i < buffer.size(); ++i) {
    if (buffer[i] == ' ') return i > 0;
    if (i >= kMaxMethodBytes || !IsTokenChar(static_cast<unsigned char>(buffer[i]))) return false;
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Form decoding: '+' is a space, %XX a byte; a malformed escape is kept as is (as browsers do).
std::string QueryUnescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 &&
               HexValue(text[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string FormatPeer(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &in.sin_addr, host, sizeof(host));
    return absl::StrCat(host, ":", ntohs(in.sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(in6.sin6_port));
  }
  return "";
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  // Round up so that a wait never ends just before the deadline and spins.
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
}

HttpResponse TextResponse(int status, std::string body) {
  return HttpResponse{status, "text/plain; charset=utf-8", std::move(body)};
}

}  // namespace

const std::string* HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCaseAscii(key, name)) return &value;
  }
  return nullptr;
}

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const size_t eq = pair.find('=');
    const std::string_view key = pair.substr(0, eq);
    if (QueryUnescape(key) != name) continue;
    return eq == std::string_view::npos ? std::string() : QueryUnescape(pair.substr(eq + 1));
  }
  return std::nullopt;
}

absl::StatusOr<HttpRequest> ParseHttpRequestHead(std::string_view head) {
  size_t pos = 0;
  auto next_line = [&](std::string_view& line) {
    const size_t newline = head.find('\n', pos);
    if (newline == std::string_view::npos) return false;
    line = head.substr(pos, newline - pos);
    pos = newline + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return true;
  };

  std::string_view line;
  if (!next_line(line)) return Malformed("no request line");
  // RFC 9112 section 2.2: an empty line before the request line is to be ignored.
  if (line.empty() && !next_line(line)) return Malformed("no request line");

  const size_t first_space = line.find(' ');
  const size_t second_space =
      first_space == std::string_view::npos ? first_space : line.find(' ', first_space + 1);
  if (second_space == std::string_view::npos ||
      line.find(' ', second_space + 1) != std::string_view::npos) {
    return Malformed("request line is not \"METHOD TARGET VERSION\"");
  }
  HttpRequest request;
  const std::string_view method = line.substr(0, first_space);
  const std::string_view target = line.substr(first_space + 1, second_space - first_space - 1);
  const std::string_view version = line.substr(second_space + 1);
  if (!IsToken(method)) return Malformed("bad method");
  if (target.empty() || HasControlChar(target)) return Malformed("bad request target");
  if (version.size() != 8 || !version.starts_with("HTTP/1.") || !absl::ascii_isdigit(version[7])) {
    return Malformed("unsupported HTTP version");
  }

  std::string_view path_and_query = target;
  if (target.starts_with("http://") || target.starts_with("https://")) {
    // Absolute form (sent to proxies): the path starts after the authority.
    const size_t authority = target.find("//") + 2;
    const size_t slash = target.find_first_of("/?", authority);
    path_and_query = slash == std::string_view::npos ? std::string_view() : target.substr(slash);
  } else if (target != "*" && !target.starts_with("/")) {
    return Malformed("request target must start with '/'");
  }
  path_and_query = path_and_query.substr(0, path_and_query.find('#'));
  const size_t question = path_and_query.find('?');
  request.path = std::string(path_and_query.substr(0, question));
  if (request.path.empty()) request.path = "/";
  if (question != std::string_view::npos) {
    request.query = std::string(path_and_query.substr(question + 1));
  }
  request.method = std::string(method);
  request.target = std::string(target);
  request.version = std::string(version);

  while (true) {
    if (!next_line(line)) return Malformed("request head does not end with an empty line");
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      return Malformed("obsolete header line folding");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Malformed("header line without ':'");
    const std::string_view name = line.substr(0, colon);
    if (!IsToken(name)) return Malformed("bad header name");
    const std::string_view value = TrimAscii(line.substr(colon + 1));
    if (HasControlChar(value)) return Malformed("control character in header value");
    request.headers.emplace_back(ToLowerAscii(name), std::string(value));
  }
  if (pos != head.size()) return Malformed("data after the request head");
  return request;
}

const char* HttpReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
  }
  return "Unknown";
}

std::string SerializeHttpResponse(const HttpResponse& response, bool head_only) {
  const int status = response.status >= 100 && response.status <= 999 ? response.status : 500;
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", HttpReasonPhrase(status), "\r\n");
  auto safe_value = [](std::string_view value) {
    return value.find_first_of("\r\n") == std::string_view::npos && !HasControlChar(value);
  };
  if (!response.content_type.empty() && safe_value(response.content_type)) {
    absl::StrAppend(&out, "Content-Type: ", response.content_type, "\r\n");
  }
  for (const auto& [name, value] : response.headers) {
    if (!IsToken(name) || !safe_value(value) || EqualsIgnoreCaseAscii(name, "content-length") ||
        EqualsIgnoreCaseAscii(name, "connection") ||
        EqualsIgnoreCaseAscii(name, "transfer-encoding")) {
      continue;
    }
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  }
  absl::StrAppend(&out, "Content-Length: ", response.body.size(), "\r\nConnection: close\r\n\r\n");
  if (!head_only) out += response.body;
  return out;
}

struct HttpServer::Connection {
  int fd = -1;  // -1 once closed or passed on
  std::string peer;
  bool sniffing = false;  // still deciding between HTTP/2 hand-off and HTTP/1.1
  Clock::time_point deadline;
  Clock::time_point recheck_at;
  std::string buffer;
};

struct HttpServer::Job {
  int fd = -1;
  std::optional<HttpRequest> request;  // when unset, error_response is the answer
  HttpResponse error_response;
  bool unread_input = false;
};

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string path, HttpHandler handler) {
  MERIDIAN_CHECK(!started_) << "HttpServer::Handle(" << path << ") after Start()";
  MERIDIAN_CHECK(handler != nullptr) << "null handler for " << path;
  handlers_[std::move(path)] = std::move(handler);
}

absl::Status HttpServer::Start() {
  MERIDIAN_CHECK(!started_ && !stopped_) << "HttpServer::Start() called twice";
  if (options_.worker_threads < 1 || options_.max_queued_requests < 1 ||
      options_.max_connections < 1 || options_.max_header_bytes < 64 ||
      options_.read_timeout_ms < 1 || options_.write_timeout_ms < 1 || options_.port < 0 ||
      options_.port > 65535) {
    return absl::InvalidArgumentError("HttpServer: bad options");
  }

  std::string host = options_.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const std::string port = std::to_string(options_.port);
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &addresses);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve listen host \"", options_.host, "\": ", gai_strerror(rc)));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* ai = addresses; ai != nullptr; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, kListenBacklog) == 0) break;
    last_error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(addresses);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", last_error));
  }
  sockaddr_storage bound = {};
  socklen_t bound_len = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("getsockname: ", error));
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("eventfd: ", error));
  }
  listen_fd_ = fd;
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6&>(bound).sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in&>(bound).sin_port);
  started_ = true;
  io_thread_ = std::thread([this] { IoLoop(); });
  for (int i = 0; i < options_.worker_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  const uint64_t one = 1;
  // The eventfd stays readable from now on, so every poll() in every thread returns.
  [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
  io_thread_.join();  // closes the listening socket and unanswered connections
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_closed_ = true;
  }
  queue_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  close(wake_fd_);
  wake_fd_ = -1;
}

void HttpServer::SendNow(int fd, int status, const char* reason_body) {
  const std::string bytes =
      SerializeHttpResponse(TextResponse(status, absl::StrCat(reason_body, "\n")), false);
  [[maybe_unused]] ssize_t sent = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void HttpServer::IoLoop() {
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<pollfd> poll_fds;
  std::vector<Connection*> polled;
  Clock::time_point accept_resume_at;

  while (!stopping_.load()) {
    Clock::time_point now = Clock::now();
    poll_fds.clear();
    polled.clear();
    poll_fds.push_back({wake_fd_, POLLIN, 0});
    const bool poll_listener = now >= accept_resume_at;
    Clock::time_point wake_at = now + std::chrono::seconds(1);
    if (poll_listener) {
      poll_fds.push_back({listen_fd_, POLLIN, 0});
    } else {
      wake_at = std::min(wake_at, accept_resume_at);
    }
    for (const auto& conn : connections) {
      wake_at = std::min(wake_at, conn->deadline);
      if (conn->sniffing && conn->recheck_at > now) {
        wake_at = std::min(wake_at, conn->recheck_at);
        continue;
      }
      poll_fds.push_back({conn->fd, POLLIN, 0});
      polled.push_back(conn.get());
    }

    const int ready = poll(poll_fds.data(), poll_fds.size(), RemainingMs(wake_at));
    if (ready < 0 && errno != EINTR) {
      spdlog::error("http server: poll: {}", std::strerror(errno));
      break;
    }
    if (stopping_.load()) break;

    const size_t first_conn = poll_listener ? 2 : 1;
    for (size_t i = 0; i < polled.size(); ++i) {
      if (ready > 0 && poll_fds[first_conn + i].revents != 0) OnReadable(*polled[i]);
    }

    if (poll_listener && ready > 0 && (poll_fds[1].revents & POLLIN) != 0) {
      for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
        sockaddr_storage addr = {};
        socklen_t addr_len = sizeof(addr);
        const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &addr_len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK) {
            spdlog::warn("http server: accept: {}", std::strerror(errno));
            accept_resume_at = Clock::now() + kAcceptBackoff;
          }
          break;
        }
        if (connections.size() >= options_.max_connections) {
          SendNow(fd, 503, "too many connections");
          close(fd);
          continue;
        }
        // Answers are small and written at once; gRPC connections want it too.
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        auto conn = std::make_unique<Connection>();
        conn->fd = fd;
        conn->peer = FormatPeer(addr);
        conn->sniffing = options_.http2_handoff != nullptr;
        conn->deadline = Clock::now() + std::chrono::milliseconds(options_.read_timeout_ms);
        connections.push_back(std::move(conn));
      }
    }

    now = Clock::now();
    for (const auto& conn : connections) {
      if (conn->fd >= 0 && now >= conn->deadline) {
        // Silence for clients that never started an HTTP/1 request (they may speak HTTP/2).
        if (!conn->sniffing) SendNow(conn->fd, 408, "request head not received in time");
        close(conn->fd);
        conn->fd = -1;
      }
    }
    std::erase_if(connections, [](const auto& conn) { return conn->fd < 0; });
  }

  for (const auto& conn : connections) close(conn->fd);
  close(listen_fd_);
  listen_fd_ = -1;
}

void HttpServer::OnReadable(Connection& conn) {
  if (conn.sniffing) {
    char peeked[kHttp2Preface.size()];
    const ssize_t n = recv(conn.fd, peeked, sizeof(peeked), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {  // closed before saying anything, or failed
      close(conn.fd);
      conn.fd = -1;
      return;
    }
    if (kHttp2Preface.starts_with(std::string_view(peeked, n))) {
      if (static_cast<size_t>(n) < kHttp2Preface.size()) {
        conn.recheck_at = Clock::now() + kPrefaceRecheck;
        return;
      }
      const int fd = conn.fd;
      conn.fd = -1;
      options_.http2_handoff(fd);
      return;
    }
    conn.sniffing = false;
  }

  char chunk[4096];
  while (true) {
    // One byte past the limit tells "exactly at the limit" from "over it".
    const size_t room = options_.max_header_bytes + 1 - conn.buffer.size();
    const ssize_t n = recv(conn.fd, chunk, std::min(room, sizeof(chunk)), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {  // the client gave up (or failed) before finishing its request
      close(conn.fd);
      conn.fd = -1;
      return;
    }
    const size_t old_size = conn.buffer.size();
    conn.buffer.append(chunk, n);
    const size_t head_end = FindHeadEnd(conn.buffer, old_size >= 2 ? old_size - 2 : 0);
    if (head_end != std::string::npos && head_end <= options_.max_header_bytes) {
      DispatchHead(conn, head_end);
      return;
    }
    const bool too_big = conn.buffer.size() > options_.max_header_bytes;
    if (too_big || !CouldBeRequestLine(conn.buffer)) {
      auto job = std::make_unique<Job>();
      job->fd = conn.fd;
      job->error_response =
          too_big ? TextResponse(431, absl::StrCat("request head larger than ",
                                                   options_.max_header_bytes, " bytes\n"))
                  : TextResponse(400, "malformed HTTP request: not a request line\n");
      job->unread_input = true;
      conn.fd = -1;
      Enqueue(std::move(job));
      return;
    }
  }
}

void HttpServer::DispatchHead(Connection& conn, size_t head_end) {
  auto job = std::make_unique<Job>();
  job->fd = conn.fd;
  conn.fd = -1;
  absl::StatusOr<HttpRequest> request =
      ParseHttpRequestHead(std::string_view(conn.buffer).substr(0, head_end));
  job->unread_input = conn.buffer.size() > head_end;
  if (request.ok()) {
    request->peer = std::move(conn.peer);
    const std::string* content_length = request->Header("content-length");
    if ((content_length != nullptr && *content_length != "0") ||
        request->Header("transfer-encoding") != nullptr) {
      job->unread_input = true;
    }
    job->request = *std::move(request);
  } else {
    job->error_response = TextResponse(400, std::string(request.status().message()) + "\n");
  }
  Enqueue(std::move(job));
}

void HttpServer::Enqueue(std::unique_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (queue_.size() < options_.max_queued_requests) {
      queue_.push_back(std::move(job));
      queue_cv_.notify_one();
      return;
    }
  }
  SendNow(job->fd, 503, "server busy");
  close(job->fd);
}

void HttpServer::WorkerLoop() {
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return queue_closed_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (stopping_.load()) {
      close(job->fd);
      continue;
    }
    ServeJob(*job);
  }
}

void HttpServer::ServeJob(Job& job) {
  HttpResponse response;
  bool head_only = false;
  if (!job.request.has_value()) {
    response = std::move(job.error_response);
  } else {
    const HttpRequest& request = *job.request;
    head_only = request.method == "HEAD";
    auto handler = handlers_.find(request.path);
    if (handler == handlers_.end()) {
      response = TextResponse(404, "404 page not found\n");
    } else if (request.method != "GET" && request.method != "HEAD") {
      response = TextResponse(405, "method not allowed\n");
      response.headers.emplace_back("Allow", "GET, HEAD");
    } else {
      try {
        response = handler->second(request);
      } catch (const std::exception& e) {
        spdlog::error("http handler for {} threw: {}", request.path, e.what());
        response = TextResponse(500, "internal error\n");
      } catch (...) {
        spdlog::error("http handler for {} threw", request.path);
        response = TextResponse(500, "internal error\n");
      }
    }
  }

  const std::string bytes = SerializeHttpResponse(response, head_only);
  const Clock::time_point write_deadline =
      Clock::now() + std::chrono::milliseconds(options_.write_timeout_ms);
  size_t written = 0;
  bool ok = true;
  while (ok && written < bytes.size()) {
    const ssize_t n = send(job.fd, bytes.data() + written, bytes.size() - written, MSG_NOSIGNAL);
    if (n > 0) {
      written += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd fds[2] = {{job.fd, POLLOUT, 0}, {wake_fd_, POLLIN, 0}};
      const int timeout_ms = RemainingMs(write_deadline);
      ok = timeout_ms > 0 && poll(fds, 2, timeout_ms) > 0 && fds[1].revents == 0;
      continue;
    }
    ok = false;
  }

  if (ok && job.unread_input) {
    shutdown(job.fd, SHUT_WR);
    const Clock::time_point drain_deadline = Clock::now() + kMaxDrainTime;
    size_t drained = 0;
    char scratch[4096];
    while (drained < kMaxDrainBytes) {
      const ssize_t n = recv(job.fd, scratch, sizeof(scratch), 0);
      if (n > 0) {
        drained += n;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd fds[2] = {{job.fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        const int timeout_ms = RemainingMs(drain_deadline);
        if (timeout_ms > 0 && poll(fds, 2, timeout_ms) > 0 && fds[1].revents == 0) continue;
      }
      break;  // end of stream, error, timeout or stopping
    }
  }
  close(job.fd);
}

}  // namespace meridian
