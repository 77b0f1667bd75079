// Test-only: a UDP "DNS server" on 127.0.0.1 that answers every query with reply(query) (no
// answer when reply returns ""). For the unit tests and the e2e tests of bad DNS answers.
#ifndef MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_
#define MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

namespace meridian::discovery {

// A UDP DNS server on 127.0.0.1 that answers every query with reply(query).
class FakeDnsServer {
 public:
  explicit FakeDnsServer(std::function<std::string(const std::string&)> reply)
      : reply_(std::move(reply)) {
    fd_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) abort();
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeDnsServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int queries() const { return queries_.load(); }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buf[1500];
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) continue;
      ++queries_;
      std::string out = reply_(std::string(buf, static_cast<size_t>(n)));
      if (!out.empty()) {
        sendto(fd_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    }
  }
  std::function<std::string(const std::string&)> reply_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::thread thread_;
};

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_
