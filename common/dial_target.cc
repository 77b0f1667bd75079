#include "common/dial_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <mutex>

namespace meridian {
namespace {

std::mutex g_mu;
std::string& DnsServer() {
  static std::string server;
  return server;
}

bool IsHostName(const std::string& host_port) {
  if (host_port.empty() || host_port.front() == '[') return false;  // "[::1]:2379"
  if (host_port.find("://") != std::string::npos || host_port.rfind("unix:", 0) == 0 ||
      host_port.rfind("ipv4:", 0) == 0 || host_port.rfind("ipv6:", 0) == 0) {
    return false;
  }
  const auto colon = host_port.rfind(':');
  const std::string host = host_port.substr(0, colon);
  if (host.empty() || host == "localhost") return false;
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) != 1;
}

}  // namespace

void SetDialDnsServer(const std::string& dns_server) {
  std::lock_guard<std::mutex> lock(g_mu);
  DnsServer() = dns_server;
}

std::string DialTarget(const std::string& host_port) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (DnsServer().empty() || !IsHostName(host_port)) return host_port;
  return "dns://" + DnsServer() + "/" + host_port;
}

}  // namespace meridian
