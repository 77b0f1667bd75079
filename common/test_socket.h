// Test-only helpers: blocking loopback client sockets with bounded waits.
#ifndef MERIDIAN_COMMON_TEST_SOCKET_H_
#define MERIDIAN_COMMON_TEST_SOCKET_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <string_view>

namespace meridian::testing {

// Connects to 127.0.0.1:port; -1 on failure.
inline int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(n);
  }
  return true;
}

// Reads until the peer closes, an error, or timeout_ms passes; returns what arrived.
inline std::string ReadUntilClose(int fd, int timeout_ms, bool* closed = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string out;
  char buf[4096];
  if (closed != nullptr) *closed = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return out;
    pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      return out;
    }
    out.append(buf, n);
  }
}

// One request on a fresh connection; the whole answer (the server closes after it).
inline std::string RoundTrip(int port, std::string_view request, int timeout_ms = 5000) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "connect failed";
  std::string response = SendAll(fd, request) ? ReadUntilClose(fd, timeout_ms) : "send failed";
  close(fd);
  return response;
}

// The status code of an HTTP/1.1 answer, or -1.
inline int StatusOf(std::string_view response) {
  if (!response.starts_with("HTTP/1.1 ") || response.size() < 12) return -1;
  return std::stoi(std::string(response.substr(9, 3)));
}

inline std::string BodyOf(std::string_view response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string_view::npos ? "" : std::string(response.substr(end + 4));
}

}  // namespace meridian::testing

#endif  // MERIDIAN_COMMON_TEST_SOCKET_H_
