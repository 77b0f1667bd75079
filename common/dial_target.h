// gRPC dial targets for "host:port" addresses. With --discovery-dns-server set, host names are
// resolved by that DNS server, as the SRV records that named them were: gRPC's c-ares resolver
// takes the server in the target's authority ("dns://127.0.0.1:5353/m1.example.com:2380"). IP
// literals, "localhost" and targets that already carry a scheme are dialled as they are.
#ifndef MERIDIAN_COMMON_DIAL_TARGET_H_
#define MERIDIAN_COMMON_DIAL_TARGET_H_

#include <string>

namespace meridian {

// "" (the default) leaves name resolution to gRPC's default resolver. Set once at start-up,
// before any channel is created.
void SetDialDnsServer(const std::string& dns_server);
std::string DialTarget(const std::string& host_port);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_DIAL_TARGET_H_
