// Go-style durations ("100ms", "1h30m", "0") as etcd's flags take them.
#ifndef MERIDIAN_COMMON_DURATION_H_
#define MERIDIAN_COMMON_DURATION_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace meridian {

// Milliseconds in a Go duration; InvalidArgument names the text when it is not one.
[[nodiscard]] absl::StatusOr<int64_t> ParseDurationMs(const std::string& text);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_DURATION_H_
