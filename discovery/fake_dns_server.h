// Test-only: a UDP "DNS server" on 127.0.0.1 that answers every query with reply(query) (no
// answer when reply returns ""). For the unit tests and the e2e tests of bad DNS answers.
#ifndef MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_
#define MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace meridian::discovery {

// A DNS server on 127.0.0.1 (UDP and TCP, one port) that answers every query with reply(query).
// A UDP answer over 512 bytes is sent truncated (TC set, no records), so that the resolver asks
// again over TCP, as real servers make it.
class FakeDnsServer {
 public:
  explicit FakeDnsServer(std::function<std::string(const std::string&)> reply)
      : reply_(std::move(reply)) {
    for (int attempt = 0; attempt < 20 && port_ == 0; ++attempt) {
      udp_ = socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (bind(udp_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) abort();
      socklen_t len = sizeof(addr);
      getsockname(udp_, reinterpret_cast<sockaddr*>(&addr), &len);
      tcp_ = socket(AF_INET, SOCK_STREAM, 0);
      int one = 1;
      setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (bind(tcp_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          listen(tcp_, 8) == 0) {
        port_ = ntohs(addr.sin_port);
      } else {  // the TCP port of that number is taken: try another pair
        close(udp_);
        close(tcp_);
      }
    }
    if (port_ == 0) abort();
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeDnsServer() {
    stop_ = true;
    thread_.join();
    for (int c : conns_) close(c);
    close(udp_);
    close(tcp_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int queries() const { return queries_.load(); }

 private:
  // Header and question only, with TC set: what a server sends when the answer does not fit.
  static std::string Truncated(const std::string& answer) {
    size_t end = 12;
    while (end < answer.size() && answer[end] != 0)
      end += 1 + static_cast<unsigned char>(answer[end]);
    end = std::min(answer.size(), end + 1 + 4);
    std::string out = answer.substr(0, end);
    out[2] = static_cast<char>(out[2] | 0x02);
    for (int i = 6; i < 12; ++i) out[static_cast<size_t>(i)] = 0;
    return out;
  }

  void Serve() {
    while (!stop_) {
      std::vector<pollfd> fds = {{udp_, POLLIN, 0}, {tcp_, POLLIN, 0}};
      for (int c : conns_) fds.push_back({c, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        char buf[1500];
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        ssize_t n = recvfrom(udp_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0) {
          ++queries_;
          std::string out = reply_(std::string(buf, static_cast<size_t>(n)));
          if (out.size() > 512) out = Truncated(out);
          if (!out.empty()) {
            sendto(udp_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
          }
        }
      }
      if (fds[1].revents & POLLIN) {
        int c = accept(tcp_, nullptr, nullptr);
        if (c >= 0) conns_.push_back(c);
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const int c = fds[i].fd;
        unsigned char head[2];
        std::string query;
        bool ok = recv(c, head, 2, MSG_WAITALL) == 2;
        if (ok) {
          query.resize((head[0] << 8) | head[1]);
          ok = recv(c, query.data(), query.size(), MSG_WAITALL) ==
               static_cast<ssize_t>(query.size());
        }
        if (!ok) {
          close(c);
          conns_.erase(std::find(conns_.begin(), conns_.end(), c));
          continue;
        }
        ++queries_;
        std::string out = reply_(query);
        std::string framed = {static_cast<char>(out.size() >> 8),
                              static_cast<char>(out.size() & 0xff)};
        framed += out;
        if (!out.empty()) send(c, framed.data(), framed.size(), MSG_NOSIGNAL);
      }
    }
  }

  std::function<std::string(const std::string&)> reply_;
  int udp_ = -1;
  int tcp_ = -1;
  uint16_t port_ = 0;
  std::vector<int> conns_;  // accepted TCP connections; only the server thread touches them
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::thread thread_;
};

}  // namespace meridian::discovery

#endif  // MERIDIAN_DISCOVERY_FAKE_DNS_SERVER_H_
