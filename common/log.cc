#include "common/log.h"

#include "absl/strings/str_cat.h"

namespace meridian {

absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  if (name == "debug") return spdlog::level::debug;
  if (name == "info") return spdlog::level::info;
  if (name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  if (name == "dpanic" || name == "panic" || name == "fatal") return spdlog::level::critical;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level \"", std::string(name),
                   "\" (expected one of debug, info, warn, error, dpanic, panic, fatal)"));
}

absl::Status SetLogLevel(std::string_view name) {
  absl::StatusOr<spdlog::level::level_enum> level = ParseLogLevel(name);
  if (!level.ok()) return level.status();
  spdlog::set_level(*level);
  return absl::OkStatus();
}

}  // namespace meridian
