#include "common/url.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/strings.h"

namespace meridian {
namespace {

absl::Status Bad(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid URL \"", AbslView(text), "\": ", AbslView(why)));
}

bool IsIPv4(const std::string& host) {
  in_addr addr;
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

// "fe80::1%eth0" is accepted: the zone is checked for plain characters only.
bool IsIPv6(const std::string& host) {
  const size_t percent = host.find('%');
  const std::string address = host.substr(0, percent);
  if (percent != std::string::npos) {
    const std::string_view zone = std::string_view(host).substr(percent + 1);
    if (zone.empty() || !std::all_of(zone.begin(), zone.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                 c == '.';
        })) {
      return false;
    }
  }
  in6_addr addr;
  return inet_pton(AF_INET6, address.c_str(), &addr) == 1;
}

// RFC 1123 names, permitting '_' as Go's resolver does.
bool IsHostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  if (host.back() == '.') host.remove_suffix(1);  // fully qualified "example.com."
  for (std::string_view label : SplitView(host, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        return false;
      }
    }
  }
  return true;
}

bool ParsePort(std::string_view text, uint16_t& port, std::string& why) {
  if (text.empty()) {
    why = "missing port after ':'";
    return false;
  }
  if (!std::all_of(text.begin(), text.end(),
                   [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
    why = absl::StrCat("port \"", AbslView(text), "\" is not a number");
    return false;
  }
  // Digits only, so a long string is simply too big; bound before converting.
  if (text.size() > 5 || std::stoi(std::string(text)) > 65535) {
    why = absl::StrCat("port ", AbslView(text), " out of range (0-65535)");
    return false;
  }
  port = static_cast<uint16_t>(std::stoi(std::string(text)));
  return true;
}

}  // namespace

std::string Url::HostPort() const {
  if (is_unix()) return host;
  const std::string bracketed = host_kind == HostKind::kIPv6 ? absl::StrCat("[", host, "]") : host;
  return has_port ? absl::StrCat(bracketed, ":", port) : bracketed;
}

std::string Url::ToString() const {
  if (is_unix()) return absl::StrCat(scheme, "://", host);
  // In URL text an IPv6 zone's '%' is escaped as "%25" (RFC 6874).
  std::string host_port = HostPort();
  if (host_kind == HostKind::kIPv6) host_port = absl::StrReplaceAll(host_port, {{"%", "%25"}});
  return absl::StrCat(scheme, "://", host_port);
}

absl::StatusOr<Url> ParseUrl(std::string_view input) {
  const std::string_view text = TrimAscii(input);
  if (text.empty()) return absl::InvalidArgumentError("invalid URL: empty");
  const size_t separator = text.find("://");
  if (separator == std::string_view::npos) {
    return Bad(text, "no scheme (expected http://, https://, unix:// or unixs://)");
  }
  Url url;
  url.scheme = ToLowerAscii(text.substr(0, separator));
  if (url.scheme != "http" && url.scheme != "https" && url.scheme != "unix" &&
      url.scheme != "unixs") {
    return Bad(text,
               absl::StrCat("scheme \"", url.scheme, "\" is not one of http, https, unix, unixs"));
  }
  const std::string_view rest = text.substr(separator + 3);
  const size_t authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  if (authority_end != std::string_view::npos) {
    return Bad(text, url.is_unix() ? "must not contain a path (for unix URLs the socket name is "
                                     "the authority, e.g. unix://localhost:1234)"
                                   : "must not contain a path, query or fragment");
  }
  if (authority.empty()) return Bad(text, "no host");
  if (authority.find('@') != std::string_view::npos) return Bad(text, "user info is not allowed");
  for (char c : authority) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return Bad(text, "space or control character in host");
  }

  if (url.is_unix()) {
    url.host = std::string(authority);
    url.host_kind = Url::HostKind::kHostname;
    return url;
  }

  std::string_view port_text;
  bool has_colon = false;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return Bad(text, "'[' without ']' around IPv6 address");
    url.host = absl::StrReplaceAll(AbslView(authority.substr(1, close - 1)), {{"%25", "%"}});
    if (!IsIPv6(url.host)) return Bad(text, absl::StrCat("bad IPv6 address \"", url.host, "\""));
    url.host_kind = Url::HostKind::kIPv6;
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Bad(text, "unexpected text after ']'");
      has_colon = true;
      port_text = after.substr(1);
    }
  } else {
    const size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':', colon + 1) != std::string_view::npos) {
        return Bad(text, "too many colons (write IPv6 addresses in brackets: [::1]:2379)");
      }
      has_colon = true;
      port_text = authority.substr(colon + 1);
    }
    url.host = std::string(authority.substr(0, colon));
    const bool looks_numeric =
        !url.host.empty() && std::all_of(url.host.begin(), url.host.end(), [](char c) {
          return absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.';
        });
    if (url.host.empty()) {
      url.host_kind = Url::HostKind::kUnspecified;
    } else if (looks_numeric) {
      if (!IsIPv4(url.host)) return Bad(text, absl::StrCat("bad IPv4 address \"", url.host, "\""));
      url.host_kind = Url::HostKind::kIPv4;
    } else if (IsHostname(url.host)) {
      url.host_kind = Url::HostKind::kHostname;
    } else {
      return Bad(text, absl::StrCat("bad host name \"", url.host, "\""));
    }
  }
  if (!has_colon) return Bad(text, "missing port (expected host:port)");
  std::string why;
  if (!ParsePort(port_text, url.port, why)) return Bad(text, why);
  url.has_port = true;
  return url;
}

absl::StatusOr<std::vector<Url>> ParseUrlList(std::string_view text) {
  if (TrimAscii(text).empty()) {
    return absl::InvalidArgumentError("empty URL list");
  }
  std::vector<Url> urls;
  int position = 0;
  for (std::string_view element : SplitView(text, ',')) {
    ++position;
    if (TrimAscii(element).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("URL list \"", AbslView(text), "\": element ", position, " is empty"));
    }
    absl::StatusOr<Url> url = ParseUrl(element);
    if (!url.ok()) return url.status();
    urls.push_back(*std::move(url));
  }
  return urls;
}

absl::StatusOr<std::vector<ClusterMemberUrls>> ParseInitialCluster(std::string_view text) {
  std::vector<ClusterMemberUrls> members;
  std::map<std::string, std::string> owner_by_url;  // to reject a URL given twice
  for (std::string_view element : SplitView(text, ',')) {
    element = TrimAscii(element);
    if (element.empty()) continue;
    const size_t equals = element.find('=');
    if (equals == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("initial cluster entry \"", AbslView(element), "\" is not name=URL"));
    }
    const std::string name(TrimAscii(element.substr(0, equals)));
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("initial cluster entry \"", AbslView(element), "\" has an empty name"));
    }
    absl::StatusOr<Url> url = ParseUrl(element.substr(equals + 1));
    if (!url.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("initial cluster member \"", name, "\": ", url.status().message()));
    }
    const std::string canonical = url->ToString();
    auto [owner, inserted] = owner_by_url.emplace(canonical, name);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("initial cluster: URL ", canonical,
                                                     " given for both \"", owner->second,
                                                     "\" and \"", name, "\""));
    }
    auto member = std::find_if(members.begin(), members.end(),
                               [&](const ClusterMemberUrls& m) { return m.name == name; });
    if (member == members.end()) {
      members.push_back(ClusterMemberUrls{name, {}});
      member = members.end() - 1;
    }
    member->peer_urls.push_back(*std::move(url));
  }
  if (members.empty()) return absl::InvalidArgumentError("initial cluster is empty");
  return members;
}

}  // namespace meridian
