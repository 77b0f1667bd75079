// ASCII string helpers on std::string_view.
//
// Debian builds abseil with ABSL_OPTION_USE_STD_STRING_VIEW=0, so absl::string_view is a type of
// its own and absl::StrCat, absl::StrSplit, absl::StripAsciiWhitespace etc. do not accept a
// std::string_view. These cover what our code needs; AbslView() converts where absl wants one.
#ifndef MERIDIAN_COMMON_STRINGS_H_
#define MERIDIAN_COMMON_STRINGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

namespace meridian {

inline absl::string_view AbslView(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Parses hexadecimal digits (no prefix, at most 16 of them), lower-case only unless
// `upper_ok`; nullopt otherwise.
inline std::optional<uint64_t> ParseHex(std::string_view text, bool upper_ok = true) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (upper_ok && c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    value = (value << 4) | static_cast<uint64_t>(digit);
  }
  return value;
}

inline std::optional<uint64_t> ParseLowerHex(std::string_view text) {
  return ParseHex(text, /*upper_ok=*/false);
}

inline bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Without leading and trailing ASCII whitespace.
inline std::string_view TrimAscii(std::string_view text) {
  while (!text.empty() && IsAsciiSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsAsciiSpace(text.back())) text.remove_suffix(1);
  return text;
}

inline char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

inline std::string ToLowerAscii(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = ToLowerAscii(c);
  return out;
}

inline bool EqualsIgnoreCaseAscii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ToLowerAscii(a[i]) != ToLowerAscii(b[i])) return false;
  }
  return true;
}

// Splits at every `separator`; "a,,b" gives {"a", "", "b"} and "" gives {""}.
inline std::vector<std::string_view> SplitView(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

}  // namespace meridian

#endif  // MERIDIAN_COMMON_STRINGS_H_
