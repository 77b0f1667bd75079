#include "discovery/srv.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/url.h"

namespace meridian::discovery {
namespace {

bool Transient(const absl::Status& s) { return !s.ok() && !absl::IsNotFound(s); }

}  // namespace

std::string SrvName(std::string_view service, std::string_view suffix, std::string_view domain) {
  std::string d(domain);
  while (!d.empty() && d.back() == '.') d.pop_back();
  std::string s(service);
  if (!suffix.empty()) s += "-" + std::string(suffix);
  return absl::StrCat("_", s, "._tcp.", d);
}

void OrderByPriorityAndWeight(std::vector<SrvRecord>* records, std::mt19937_64* rng) {
  std::stable_sort(records->begin(), records->end(),
                   [](const SrvRecord& a, const SrvRecord& b) { return a.priority < b.priority; });
  std::vector<SrvRecord> out;
  out.reserve(records->size());
  for (size_t start = 0; start < records->size();) {
    size_t end = start;
    while (end < records->size() && (*records)[end].priority == (*records)[start].priority) ++end;
    // One priority: weight-0 records first, then draw by running sum (RFC 2782, "Usage rules").
    std::vector<SrvRecord> group(records->begin() + start, records->begin() + end);
    std::stable_partition(group.begin(), group.end(),
                          [](const SrvRecord& r) { return r.weight == 0; });
    while (!group.empty()) {
      uint64_t sum = 0;
      for (const auto& r : group) sum += r.weight;
      const uint64_t pick = std::uniform_int_distribution<uint64_t>(0, sum)(*rng);
      uint64_t running = 0;
      size_t chosen = group.size() - 1;
      for (size_t i = 0; i < group.size(); ++i) {
        running += group[i].weight;
        if (running >= pick) {
          chosen = i;
          break;
        }
      }
      out.push_back(std::move(group[chosen]));
      group.erase(group.begin() + static_cast<std::ptrdiff_t>(chosen));
    }
    start = end;
  }
  *records = std::move(out);
}

std::string DiscoveredEndpoint::HostPort() const { return absl::StrCat(host, ":", port); }
std::string DiscoveredEndpoint::Url() const { return absl::StrCat(scheme, "://", HostPort()); }

absl::StatusOr<Discovery> Discover(Resolver* resolver, Role role, std::string_view domain,
                                   std::string_view suffix, std::mt19937_64* rng) {
  const std::string dom(domain);
  const char* base = role == Role::kPeers ? "etcd-server" : "etcd-client";
  const std::vector<std::string> names = {SrvName(absl::StrCat(base, "-ssl"), suffix, domain),
                                          SrvName(base, suffix, domain)};
  const char* schemes[] = {"https", "http"};
  auto answers = resolver->LookupSrv(names);
  for (const auto& a : answers) {
    if (Transient(a.status())) return a.status();
  }
  Discovery out;
  bool first_ttl = true;
  auto take_ttl = [&](uint32_t ttl) {
    out.ttl_s = first_ttl ? ttl : std::min(out.ttl_s, ttl);
    first_ttl = false;
  };
  std::set<std::string> seen;  // scheme://host:port
  for (size_t i = 0; i < answers.size(); ++i) {
    if (!answers[i].ok()) continue;
    std::vector<SrvRecord> records = *answers[i];
    OrderByPriorityAndWeight(&records, rng);
    for (const auto& r : records) {
      take_ttl(r.ttl_s);
      DiscoveredEndpoint e{schemes[i], r.target, r.port, r.priority, r.weight, {}};
      if (r.target.empty()) {
        out.skipped.push_back(absl::StrCat(names[i], ": a record with target \".\" (the service ",
                                           "is declared not available here)"));
        continue;
      }
      if (r.port == 0) {
        out.skipped.push_back(absl::StrCat(names[i], ": ", r.target, " has port 0"));
        continue;
      }
      if (!seen.insert(e.Url()).second) continue;
      if (out.endpoints.size() == kMaxEndpoints) {
        out.skipped.push_back(absl::StrCat(names[i], ": ", e.HostPort(), " is past the limit of ",
                                           kMaxEndpoints, " endpoints"));
        continue;
      }
      out.endpoints.push_back(std::move(e));
    }
  }
  if (out.endpoints.empty()) {
    std::vector<std::string> why;
    for (const auto& a : answers) {
      if (!a.ok()) why.emplace_back(a.status().message());
    }
    why.insert(why.end(), out.skipped.begin(), out.skipped.end());
    return absl::NotFoundError(
        absl::StrCat("no usable SRV records for ", dom, ": ", absl::StrJoin(why, "; ")));
  }
  // Every target's addresses, all at once.
  std::vector<std::string> hosts;
  for (const auto& e : out.endpoints) hosts.push_back(e.host);
  auto resolved = resolver->LookupHosts(hosts);
  for (const auto& r : resolved) {
    if (Transient(r.status())) return r.status();
  }
  std::vector<DiscoveredEndpoint> kept;
  for (size_t i = 0; i < out.endpoints.size(); ++i) {
    if (!resolved[i].ok()) {
      out.skipped.push_back(absl::StrCat("SRV target ", out.endpoints[i].HostPort(), ": ",
                                         resolved[i].status().message()));
      continue;
    }
    take_ttl(resolved[i]->ttl_s);
    out.endpoints[i].addresses = resolved[i]->addresses;
    kept.push_back(std::move(out.endpoints[i]));
  }
  out.endpoints = std::move(kept);
  if (out.endpoints.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no SRV target of ", dom, " resolves: ", absl::StrJoin(out.skipped, "; ")));
  }
  return out;
}

absl::StatusOr<std::string> InitialClusterFromSrv(
    Resolver* resolver, std::string_view domain, std::string_view suffix, const std::string& name,
    const std::vector<std::string>& advertise_peer_urls) {
  const std::string dom(domain);
  // Where this member says it can be reached: "address:port" -> the advertised URL.
  std::map<std::string, Url> mine;
  std::vector<Url> urls;
  for (const auto& text : advertise_peer_urls) {
    auto u = ParseUrl(text);
    if (!u.ok()) return u.status();
    if (u->is_unix()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--discovery-srv needs TCP peer URLs, not ", text));
    }
    urls.push_back(*u);
  }
  std::vector<std::string> hosts;
  for (const auto& u : urls) hosts.push_back(u.host);
  auto resolved = resolver->LookupHosts(hosts);
  for (size_t i = 0; i < urls.size(); ++i) {
    if (!resolved[i].ok()) {
      return absl::Status(resolved[i].status().code(),
                          absl::StrCat("--initial-advertise-peer-urls ", urls[i].ToString(), ": ",
                                       resolved[i].status().message()));
    }
    for (const auto& a : resolved[i]->addresses) {
      mine.emplace(absl::StrCat(a, "#", urls[i].port), urls[i]);
    }
  }
  std::mt19937_64 rng(0);  // the order only names the other members, as etcd's does
  auto found = Discover(resolver, Role::kPeers, domain, suffix, &rng);
  if (!found.ok()) {
    return absl::Status(found.status().code(), absl::StrCat("--discovery-srv ", dom, ": ",
                                                            std::string(found.status().message())));
  }
  if (!found->skipped.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--discovery-srv ", dom, ": unusable SRV records (every member must see ",
                     "the same cluster): ", absl::StrJoin(found->skipped, "; ")));
  }
  std::vector<std::string> parts;
  std::vector<std::string> targets;
  int next_temp_name = 0;
  bool found_self = false;
  for (const auto& e : found->endpoints) {
    targets.push_back(e.Url());
    const Url* match = nullptr;
    for (const auto& a : e.addresses) {
      auto it = mine.find(absl::StrCat(a, "#", e.port));
      if (it != mine.end()) match = &it->second;
    }
    std::string member_name;
    if (match != nullptr) {
      if (match->scheme != e.scheme) {
        return absl::InvalidArgumentError(
            absl::StrCat("bootstrap at ", e.Url(), " from DNS for ", dom,
                         " has scheme mismatch with expected peer ", match->ToString()));
      }
      member_name = name;
      found_self = true;
    } else {
      member_name = std::to_string(next_temp_name++);
    }
    parts.push_back(absl::StrCat(member_name, "=", e.Url()));
  }
  if (!found_self) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot find local etcd member \"", name, "\" in SRV records: no target of ", dom, " (",
        absl::StrJoin(targets, ", "), ") resolves to --initial-advertise-peer-urls ",
        absl::StrJoin(advertise_peer_urls, ",")));
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace meridian::discovery
