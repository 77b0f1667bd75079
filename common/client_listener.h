// The client port: gRPC and plain HTTP (/health, /version, /metrics) on one listening socket,
// as etcd serves them on its client URLs.
//
// Each accepted connection is classified by its first bytes (peeked, not consumed, within
// read_timeout_ms): one that starts with the HTTP/2 client preface is passed to the gRPC server,
// anything else is served as HTTP/1.1 by the HttpServer machinery with the registered handlers.
//
//   grpc::ServerBuilder builder;            // no AddListeningPort: connections come from here
//   builder.RegisterService(&kv_service);
//   std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
//   ClientListener listener({.host = "127.0.0.1", .port = 2379}, grpc_server.get());
//   listener.Handle("/health", health_handler);
//   absl::Status started = listener.Start();
//   ...
//   listener.Stop();           // first: no connection is handed to a server that is going away
//   grpc_server->Shutdown();   // closes the gRPC connections handed over earlier
//
// TLS (https/unixs URLs) is not handled here.
#ifndef MERIDIAN_COMMON_CLIENT_LISTENER_H_
#define MERIDIAN_COMMON_CLIENT_LISTENER_H_

#include <string>

#include "absl/status/status.h"
#include "common/http_server.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace meridian {

class ClientListener {
 public:
  // `grpc_server` must be started and must outlive Stop(); when null, HTTP/2 connections are
  // treated like any other bytes (and answered 400). options.http2_handoff is overwritten.
  ClientListener(HttpServerOptions options, grpc::Server* grpc_server);
  ClientListener(const ClientListener&) = delete;
  ClientListener& operator=(const ClientListener&) = delete;
  ~ClientListener() = default;  // HttpServer's destructor stops

  // See HttpServer: before Start() only.
  void Handle(std::string path, HttpHandler handler) {
    http_.Handle(std::move(path), std::move(handler));
  }
  [[nodiscard]] absl::Status Start() { return http_.Start(); }
  // Closes the listening socket and the HTTP connections; gRPC connections already handed over
  // belong to the gRPC server and end with its Shutdown().
  void Stop() { http_.Stop(); }
  int port() const { return http_.port(); }

 private:
  static HttpServerOptions WithHandoff(HttpServerOptions options, grpc::Server* grpc_server);

  HttpServer http_;
};

}  // namespace meridian

#endif  // MERIDIAN_COMMON_CLIENT_LISTENER_H_
