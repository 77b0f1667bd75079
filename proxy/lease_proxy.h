// Lease keepalive coalescing. Keepalives for one lease from any number of client streams travel
// in one upstream LeaseKeepAlive stream (one per auth token), and at most one keepalive per lease
// is in flight upstream: clients asking while one is in flight share its answer.
//
// TTLs stay honest. The proxy never renews a lease on its own: a lease is renewed upstream only
// because a client asked, so it expires on time when its clients stop. Every answer is the
// member's answer to a renewal sent at most one upstream round trip before the client asked;
// nothing is served from a cache, so a revoked lease is reported at once.
#ifndef MERIDIAN_PROXY_LEASE_PROXY_H_
#define MERIDIAN_PROXY_LEASE_PROXY_H_

#include <grpcpp/generic/async_generic_service.h>

#include <memory>
#include <thread>

namespace meridian::proxy {

class Proxy;
struct LeaseState;

class LeaseProxy {
 public:
  explicit LeaseProxy(Proxy* proxy);
  ~LeaseProxy();
  void Start();
  void Stop();
  grpc::ServerGenericBidiReactor* NewStream(grpc::GenericCallbackServerContext* ctx);

 private:
  void Loop();
  Proxy* proxy_;
  std::unique_ptr<LeaseState> state_;
  std::thread loop_;
};

}  // namespace meridian::proxy

#endif  // MERIDIAN_PROXY_LEASE_PROXY_H_
