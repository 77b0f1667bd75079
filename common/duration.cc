#include "common/duration.h"

#include <cctype>
#include <map>

#include "absl/strings/str_cat.h"

namespace meridian {

absl::StatusOr<int64_t> ParseDurationMs(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty duration");
  static const std::map<std::string, double> kUnitMs = {{"ns", 1e-6},  {"us", 1e-3}, {"µs", 1e-3},
                                                        {"ms", 1},     {"s", 1000},  {"m", 60000},
                                                        {"h", 3600000}};
  double total = 0;
  size_t i = 0;
  if (text == "0") return 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (start == i)
      return absl::InvalidArgumentError(absl::StrCat("invalid duration \"", text, "\""));
    double n = std::stod(text.substr(start, i - start));
    size_t ustart = i;
    while (i < text.size() && !isdigit(static_cast<unsigned char>(text[i])) && text[i] != '.') ++i;
    auto unit = kUnitMs.find(text.substr(ustart, i - ustart));
    if (unit == kUnitMs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("invalid duration \"", text, "\" (unit)"));
    }
    total += n * unit->second;
  }
  if (total > 1e15) return absl::InvalidArgumentError(absl::StrCat("duration too large: ", text));
  return static_cast<int64_t>(total);
}

}  // namespace meridian
