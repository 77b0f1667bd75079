#include "common/client_listener.h"

#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>

#include <utility>

namespace meridian {

#ifndef GPR_SUPPORT_CHANNELS_FROM_FD
#error "gRPC on this platform cannot take connections from file descriptors"
#endif

ClientListener::ClientListener(HttpServerOptions options, grpc::Server* grpc_server)
    : http_(WithHandoff(std::move(options), grpc_server)) {}

HttpServerOptions ClientListener::WithHandoff(HttpServerOptions options,
                                              grpc::Server* grpc_server) {
  options.http2_handoff = nullptr;
  if (grpc_server != nullptr) {
    // gRPC takes the socket over, preface still unread, and closes it when done.
    options.http2_handoff = [grpc_server](int fd) {
      grpc::AddInsecureChannelFromFd(grpc_server, fd);
    };
  }
  return options;
}

}  // namespace meridian
