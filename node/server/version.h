#pragma once
namespace meridian::server {
// The etcd version Meridian reports. The Kubernetes apiserver needs 3.5.13 or newer to use
// WatchProgressRequest, which Meridian supports.
inline constexpr char kServerVersion[] = "3.5.17";
inline constexpr char kClusterVersion[] = "3.5.0";
inline constexpr char kApiVersion[] = "3.5";
}  // namespace meridian::server
