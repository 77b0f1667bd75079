// Logging: spdlog's default logger (spdlog::info(...), spdlog::warn(...), fmt-style arguments),
// plus etcd's --log-level names.
#ifndef MERIDIAN_COMMON_LOG_H_
#define MERIDIAN_COMMON_LOG_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spdlog/spdlog.h"

namespace meridian {

// Maps etcd's --log-level values (debug, info, warn, error, panic, fatal; also zap's dpanic)
// to spdlog levels. panic, dpanic and fatal map to critical: the level only filters, the caller
// decides whether to abort.
[[nodiscard]] absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

// Sets the level of spdlog's default logger; InvalidArgument for an unknown name (the level is
// left unchanged then).
[[nodiscard]] absl::Status SetLogLevel(std::string_view name);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_LOG_H_
