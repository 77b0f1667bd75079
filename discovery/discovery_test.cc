#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "discovery/dns_message.h"
#include "discovery/fake_dns_server.h"
#include "discovery/follower.h"
#include "discovery/resolver.h"
#include "discovery/srv.h"
#include "gtest/gtest.h"

namespace meridian::discovery {
namespace {

// ---- A DNS message builder for the tests ----

void Put16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}
void Put32(std::string* out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v >> 16));
  Put16(out, static_cast<uint16_t>(v & 0xffff));
}
std::string EncodeName(const std::string& name) {
  std::string out;
  std::stringstream ss(name);
  std::string label;
  while (std::getline(ss, label, '.')) {
    if (label.empty()) continue;
    out.push_back(static_cast<char>(label.size()));
    out += label;
  }
  out.push_back('\0');
  return out;
}

struct Rr {
  std::string owner_wire;  // encoded owner name (may be a pointer)
  uint16_t type;
  uint32_t ttl;
  std::string rdata;
};

std::string SrvRdata(uint16_t priority, uint16_t weight, uint16_t port, const std::string& target) {
  std::string r;
  Put16(&r, priority);
  Put16(&r, weight);
  Put16(&r, port);
  r += EncodeName(target);
  return r;
}

std::string Message(const std::string& question, uint16_t rcode, const std::vector<Rr>& answers,
                    uint16_t id = 0x1234, uint16_t qtype = 33) {
  std::string m;
  Put16(&m, id);
  Put16(&m, static_cast<uint16_t>(0x8180 | rcode));  // QR, RD, RA
  Put16(&m, 1);
  Put16(&m, static_cast<uint16_t>(answers.size()));
  Put16(&m, 0);
  Put16(&m, 0);
  m += EncodeName(question);
  Put16(&m, qtype);
  Put16(&m, 1);
  for (const auto& a : answers) {
    m += a.owner_wire;
    Put16(&m, a.type);
    Put16(&m, 1);
    Put32(&m, a.ttl);
    Put16(&m, static_cast<uint16_t>(a.rdata.size()));
    m += a.rdata;
  }
  return m;
}

const std::string kQ = "_etcd-client._tcp.example.com";
// The question's name starts right after the 12-byte header: a pointer to it is 0xc00c.
const std::string kPtrToQuestion = std::string("\xc0\x0c", 2);

TEST(SrvName, FollowsEtcd) {
  EXPECT_EQ(SrvName("etcd-server-ssl", "", "example.com"), "_etcd-server-ssl._tcp.example.com");
  EXPECT_EQ(SrvName("etcd-client", "prod", "example.com."), "_etcd-client-prod._tcp.example.com");
}

TEST(ParseSrvAnswer, RecordsWithTtlsAndCompressedNames) {
  auto m = Message(kQ, 0,
                   {{kPtrToQuestion, 33, 60, SrvRdata(0, 5, 2379, "m1.example.com")},
                    {EncodeName("_ETCD-CLIENT._tcp.Example.com."), 33, 30,
                     SrvRdata(1, 0, 2479, "M2.example.com")},
                    {EncodeName("other.example.com"), 33, 5, SrvRdata(0, 0, 1, "x")}});
  auto r = ParseSrvAnswer(kQ, m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);  // the record of another name is not ours
  EXPECT_EQ((*r)[0], (SrvRecord{"m1.example.com", 2379, 0, 5, 60}));
  EXPECT_EQ((*r)[1], (SrvRecord{"m2.example.com", 2479, 1, 0, 30}));
}

TEST(ParseSrvAnswer, FollowsCnameChains) {
  auto m = Message(kQ, 0,
                   {{kPtrToQuestion, 5, 60, EncodeName("alias.example.net")},
                    {EncodeName("alias.example.net"), 33, 10, SrvRdata(0, 0, 2379, "m1.x")}});
  auto r = ParseSrvAnswer(kQ, m);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].target, "m1.x");
}

TEST(ParseSrvAnswer, ResponseCodesAndEmptyAnswers) {
  auto nx = ParseSrvAnswer(kQ, Message(kQ, 3, {}));
  EXPECT_TRUE(absl::IsNotFound(nx.status())) << nx.status();
  EXPECT_NE(nx.status().message().find("NXDOMAIN"), std::string::npos);
  auto servfail = ParseSrvAnswer(kQ, Message(kQ, 2, {}));
  EXPECT_TRUE(absl::IsUnavailable(servfail.status())) << servfail.status();
  EXPECT_NE(servfail.status().message().find("SERVFAIL"), std::string::npos);
  auto refused = ParseSrvAnswer(kQ, Message(kQ, 5, {}));
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  auto nodata = ParseSrvAnswer(kQ, Message(kQ, 0, {}));
  EXPECT_TRUE(absl::IsNotFound(nodata.status())) << nodata.status();
  EXPECT_EQ(nodata.status().message(), "no SRV records for " + kQ);
  auto other = ParseSrvAnswer(kQ, Message(kQ, 4, {}));
  EXPECT_TRUE(absl::IsInternal(other.status())) << other.status();
}

TEST(ParseSrvAnswer, DotTargetAndHighBitTtl) {
  auto r = ParseSrvAnswer(
      kQ, Message(kQ, 0, {{kPtrToQuestion, 33, 0x80000001u, SrvRdata(0, 0, 0, ".")}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].target, "");
  EXPECT_EQ((*r)[0].ttl_s, 0u);  // RFC 2181: the top bit set means 0
}

TEST(ParseSrvAnswer, MalformedMessagesAreDataLoss) {
  const std::string good =
      Message(kQ, 0, {{kPtrToQuestion, 33, 60, SrvRdata(0, 5, 2379, "m1.example.com")}});
  // Every truncation of a good message.
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = ParseSrvAnswer(kQ, good.substr(0, n));
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << n << ": " << r.status();
  }
  // A query, not a response.
  std::string query = good;
  query[2] = static_cast<char>(query[2] & 0x7f);
  EXPECT_TRUE(absl::IsDataLoss(ParseSrvAnswer(kQ, query).status()));
  // A name that points at itself.
  std::string loop = Message(kQ, 0, {{std::string("\xc0\x1e", 2), 33, 60, SrvRdata(0, 0, 1, "a")}});
  loop[0x1e] = static_cast<char>(0xc0);
  loop[0x1f] = 0x1e;
  EXPECT_TRUE(absl::IsDataLoss(ParseSrvAnswer(kQ, loop).status()));
  // rdata shorter than an SRV record, and an SRV record whose length hides trailing bytes.
  EXPECT_TRUE(absl::IsDataLoss(
      ParseSrvAnswer(kQ, Message(kQ, 0, {{kPtrToQuestion, 33, 1, std::string(5, 'x')}})).status()));
  EXPECT_TRUE(absl::IsDataLoss(
      ParseSrvAnswer(kQ, Message(kQ, 0, {{kPtrToQuestion, 33, 1, SrvRdata(0, 0, 1, "a") + "zz"}}))
          .status()));
  // More answers than the limit.
  std::string many = good;
  many[6] = static_cast<char>(0xff);
  EXPECT_TRUE(absl::IsDataLoss(ParseSrvAnswer(kQ, many).status()));
}

// Seeds of the fuzz corpus, then many seeded random mutations of them: nothing may crash (the
// sanitizer builds run this too).
std::vector<std::string> Seeds() {
  return {
      Message(kQ, 0,
              {{kPtrToQuestion, 33, 60, SrvRdata(0, 5, 2379, "m1.example.com")},
               {kPtrToQuestion, 33, 60, SrvRdata(1, 5, 2379, "m2.example.com")}}),
      Message(kQ, 0,
              {{kPtrToQuestion, 5, 60, EncodeName("alias.example.net")},
               {EncodeName("alias.example.net"), 33, 10, SrvRdata(0, 0, 2379, "m1.x")}}),
      Message(kQ, 3, {}),
      Message(kQ, 0, {{kPtrToQuestion, 33, 0, SrvRdata(0, 0, 0, ".")}}),
  };
}

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> out;
  DIR* dir = opendir(MERIDIAN_DNS_FUZZ_CORPUS_DIR);
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(std::string(MERIDIAN_DNS_FUZZ_CORPUS_DIR) + "/" + e->d_name, std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  closedir(dir);
  return out;
}

TEST(ParseSrvAnswer, FuzzCorpusAndMutationsNeverCrash) {
  std::vector<std::string> inputs = Seeds();
  auto corpus = CorpusFiles();
  EXPECT_GE(corpus.size(), 4u) << "fuzz corpus missing at " << MERIDIAN_DNS_FUZZ_CORPUS_DIR;
  inputs.insert(inputs.end(), corpus.begin(), corpus.end());
  std::mt19937_64 rng(42);
  size_t parsed_ok = 0, total = 0;
  for (const auto& seed : inputs) {
    auto r = ParseSrvAnswer(kQ, seed);
    parsed_ok += r.ok();
    ++total;
    for (int i = 0; i < 3000; ++i) {
      std::string m = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t at = rng() % m.size();
        switch (rng() % 4) {
          case 0:
            m[at] = static_cast<char>(rng());
            break;
          case 1:
            m.resize(at);
            break;
          case 2:
            m.insert(at, 1, static_cast<char>(rng()));
            break;
          default:
            m[at] = static_cast<char>(m[at] ^ (1 << (rng() % 8)));
            break;
        }
      }
      auto mr = ParseSrvAnswer(kQ, m);
      if (mr.ok()) {
        ++parsed_ok;
        for (const auto& rec : *mr) EXPECT_LE(rec.target.size(), 255u);
      } else {
        EXPECT_FALSE(mr.status().message().empty());
      }
      ++total;
    }
  }
  // Both outcomes are exercised, so the loop tests the decoder and not just its first check.
  EXPECT_GT(parsed_ok, 0u);
  EXPECT_LT(parsed_ok, total);
}

TEST(OrderByPriorityAndWeight, PriorityFirstThenWeightedDraw) {
  std::mt19937_64 rng(7);
  int first_heavy = 0, first_zero = 0;
  const int kRounds = 4000;
  for (int i = 0; i < kRounds; ++i) {
    std::vector<SrvRecord> records = {{"backup", 1, 5, 100, 0},
                                      {"light", 1, 0, 1, 0},
                                      {"heavy", 1, 0, 3, 0},
                                      {"zero", 1, 0, 0, 0}};
    OrderByPriorityAndWeight(&records, &rng);
    ASSERT_EQ(records.size(), 4u);
    EXPECT_EQ(records.back().target, "backup");  // priority 5 after every priority 0 record
    first_heavy += records[0].target == "heavy";
    first_zero += records[0].target == "zero";
  }
  // Draw over [0, 4]: "zero" wins on 0 (1/5), "light" on 1 (1/5), "heavy" on 2..4 (3/5).
  EXPECT_NEAR(first_heavy / double(kRounds), 0.6, 0.05);
  EXPECT_NEAR(first_zero / double(kRounds), 0.2, 0.05);
}

TEST(Follower, LookupDelayFollowsTtlWithinBoundsAndBacksOff) {
  FollowerOptions o;
  o.min_refresh_ms = 1000;
  o.max_refresh_ms = 60000;
  o.retry_after_failure_ms = 500;
  EXPECT_EQ(NextLookupDelayMs(o, 0, 0), 1000);
  EXPECT_EQ(NextLookupDelayMs(o, 30, 0), 30000);
  EXPECT_EQ(NextLookupDelayMs(o, 86400, 0), 60000);
  EXPECT_EQ(NextLookupDelayMs(o, 30, 1), 500);
  EXPECT_EQ(NextLookupDelayMs(o, 30, 2), 1000);
  EXPECT_EQ(NextLookupDelayMs(o, 30, 4), 4000);
  EXPECT_EQ(NextLookupDelayMs(o, 30, 100), 60000);
}

TEST(Follower, SameEndpointsIgnoresOrder) {
  DiscoveredEndpoint a{"http", "a", 1, 0, 0, {"10.0.0.1"}};
  DiscoveredEndpoint b{"http", "b", 1, 0, 0, {"10.0.0.2"}};
  EXPECT_TRUE(SameEndpoints({a, b}, {b, a}));
  DiscoveredEndpoint b2 = b;
  b2.addresses = {"10.0.0.3"};
  EXPECT_FALSE(SameEndpoints({a, b}, {a, b2}));  // a new address is a change
  EXPECT_FALSE(SameEndpoints({a, b}, {a}));
}

TEST(Resolver, DnsServerFlagIsChecked) {
  EXPECT_EQ(*ParseDnsServer("127.0.0.1:5353"), "127.0.0.1:5353");
  EXPECT_EQ(*ParseDnsServer("10.0.0.2"), "10.0.0.2:53");
  EXPECT_EQ(*ParseDnsServer("[::1]:53"), "[::1]:53");
  EXPECT_EQ(*ParseDnsServer("::1"), "[::1]:53");
  for (const char* bad :
       {"", "dns.example.com:53", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "127.0.0.1:x"}) {
    auto r = ParseDnsServer(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad;
    EXPECT_NE(r.status().message().find("--discovery-dns-server"), std::string::npos);
  }
  EXPECT_FALSE(Resolver::Create({.dns_server = "nope:53"}).ok());
}

uint16_t QueryId(const std::string& q) {
  return static_cast<uint16_t>((static_cast<unsigned char>(q[0]) << 8) |
                               static_cast<unsigned char>(q[1]));
}

// The type asked for (the 2 bytes before the question's class, at the end of a plain query).
uint16_t QueryType(const std::string& q) {
  return static_cast<uint16_t>((static_cast<unsigned char>(q[q.size() - 4]) << 8) |
                               static_cast<unsigned char>(q[q.size() - 3]));
}

// The question name as it was asked, so that an answer's owner matches it.
std::string QuestionName(const std::string& q) {
  std::string name;
  for (size_t i = 12; i < q.size() && q[i] != 0; i += 1 + static_cast<unsigned char>(q[i])) {
    if (!name.empty()) name += ".";
    name += q.substr(i + 1, static_cast<unsigned char>(q[i]));
  }
  return name;
}

ResolverOptions Fast(const std::string& server) {
  return {.dns_server = server, .timeout_ms = 100, .tries = 2, .max_wait_ms = 3000};
}

TEST(Resolver, AnswersNxdomainAndServfailFromARealExchange) {
  FakeDnsServer dns([](const std::string& q) {
    std::string name = q.find("missing") != std::string::npos ? "_etcd-client._tcp.missing.test"
                                                              : "_etcd-client._tcp.good.test";
    if (q.find("broken") != std::string::npos) {
      return Message("_etcd-client._tcp.broken.test", 2, {}, QueryId(q));
    }
    if (q.find("missing") != std::string::npos) return Message(name, 3, {}, QueryId(q));
    return Message(name, 0, {{kPtrToQuestion, 33, 7, SrvRdata(0, 1, 2379, "m1.good.test")}},
                   QueryId(q));
  });
  auto resolver = Resolver::Create(Fast(dns.address()));
  ASSERT_TRUE(resolver.ok()) << resolver.status();
  auto r = (*resolver)->LookupSrv({"_etcd-client._tcp.good.test", "_etcd-client._tcp.missing.test",
                                   "_etcd-client._tcp.broken.test"});
  ASSERT_EQ(r.size(), 3u);
  ASSERT_TRUE(r[0].ok()) << r[0].status();
  EXPECT_EQ((*r[0])[0], (SrvRecord{"m1.good.test", 2379, 0, 1, 7}));
  EXPECT_TRUE(absl::IsNotFound(r[1].status())) << r[1].status();
  EXPECT_TRUE(absl::IsUnavailable(r[2].status())) << r[2].status();
}

TEST(Resolver, SilenceAndGarbageTimeOutWithinTheBound) {
  for (bool garbage : {false, true}) {
    FakeDnsServer dns([&](const std::string& q) {
      if (!garbage) return std::string();
      std::string junk = q.substr(0, 2) + std::string("\x81\x80\xff\xff\x00", 5);
      return junk;
    });
    auto resolver = Resolver::Create(Fast(dns.address()));
    ASSERT_TRUE(resolver.ok());
    auto start = std::chrono::steady_clock::now();
    auto r = (*resolver)->LookupSrv({"_etcd-client._tcp.x.test"});
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    EXPECT_FALSE(r[0].ok());
    EXPECT_TRUE(absl::IsDeadlineExceeded(r[0].status()) || absl::IsDataLoss(r[0].status()))
        << r[0].status();
    EXPECT_NE(r[0].status().message().find("_etcd-client._tcp.x.test"), std::string::npos);
    EXPECT_LE(ms, 3500);
    EXPECT_GE(dns.queries(), 1);
  }
}

// Cancel() from another thread ends a lookup that a silent server would hold for max_wait_ms,
// and every later lookup of that resolver, with Cancelled.
TEST(Resolver, CancelEndsALookupUnderWay) {
  FakeDnsServer dns([](const std::string&) { return std::string(); });  // never answers
  auto resolver = Resolver::Create(
      {.dns_server = dns.address(), .timeout_ms = 5000, .tries = 3, .max_wait_ms = 60000});
  ASSERT_TRUE(resolver.ok());
  std::vector<absl::StatusOr<std::vector<SrvRecord>>> result;
  std::thread lookup([&] { result = (*resolver)->LookupSrv({"_etcd-client._tcp.c.test"}); });
  for (int i = 0; i < 500 && dns.queries() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(dns.queries(), 1);
  const auto start = std::chrono::steady_clock::now();
  (*resolver)->Cancel();
  lookup.join();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  ASSERT_EQ(result.size(), 1u);
  EXPECT_TRUE(absl::IsCancelled(result[0].status())) << result[0].status();
  EXPECT_NE(result[0].status().message().find("_etcd-client._tcp.c.test"), std::string::npos);
  EXPECT_LT(ms, 10000) << "a 60 s lookup bound was waited out";
  auto again = (*resolver)->LookupHosts({"m1.c.test"});
  EXPECT_TRUE(absl::IsCancelled(again[0].status())) << again[0].status();
}

TEST(Resolver, HostsAndLiterals) {
  FakeDnsServer dns([](const std::string& q) {
    const uint16_t qtype = QueryType(q);
    std::string name = q.find("m1") != std::string::npos ? "m1.good.test" : "nope.good.test";
    if (name == "nope.good.test") return Message(name, 3, {}, QueryId(q), qtype);
    if (qtype == 1) {
      return Message(name, 0, {{kPtrToQuestion, 1, 9, std::string("\x0a\x00\x00\x07", 4)}},
                     QueryId(q), qtype);
    }
    return Message(name, 0, {}, QueryId(q), qtype);  // no AAAA
  });
  auto resolver = Resolver::Create(Fast(dns.address()));
  ASSERT_TRUE(resolver.ok());
  auto r = (*resolver)->LookupHosts({"m1.good.test", "127.0.0.5", "nope.good.test"});
  ASSERT_TRUE(r[0].ok()) << r[0].status();
  EXPECT_EQ(r[0]->addresses, std::vector<std::string>{"10.0.0.7"});
  EXPECT_EQ(r[0]->ttl_s, 9u);
  ASSERT_TRUE(r[1].ok()) << r[1].status();
  EXPECT_EQ(r[1]->addresses, std::vector<std::string>{"127.0.0.5"});
  EXPECT_TRUE(absl::IsNotFound(r[2].status())) << r[2].status();
}

// The follower against a DNS server whose records change: TTL 0 records are looked up again at
// min_refresh_ms; a silent server (failed lookups) keeps the last set; a change is reported once.
TEST(Follower, FollowsChangingRecordsAndKeepsTheLastSetWhileDnsFails) {
  std::atomic<int> version{1};
  FakeDnsServer dns([&](const std::string& q) -> std::string {
    const int v = version.load();
    if (v == 3) return "";  // silence: every lookup times out
    const uint16_t qtype = QueryType(q);
    const uint16_t id = QueryId(q);
    const std::string name = QuestionName(q);
    if (qtype == 33 && name == "_etcd-client._tcp.f.test") {
      std::vector<Rr> answers;
      if (v != 4) answers.push_back({kPtrToQuestion, 33, 0, SrvRdata(0, 0, 2379, "m1.f.test")});
      if (v >= 2) answers.push_back({kPtrToQuestion, 33, 0, SrvRdata(0, 0, 2379, "m2.f.test")});
      return Message(name, 0, answers, id, qtype);
    }
    if (qtype == 1 && (name == "m1.f.test" || name == "m2.f.test")) {
      std::string ip = name == "m1.f.test" ? std::string("\x0a\x00\x00\x01", 4)
                                           : std::string("\x0a\x00\x00\x02", 4);
      return Message(name, 0, {{kPtrToQuestion, 1, 0, ip}}, id, qtype);
    }
    if (qtype == 28 && (name == "m1.f.test" || name == "m2.f.test")) {
      return Message(name, 0, {}, id, qtype);
    }
    return Message(name, 3, {}, id, qtype);
  });
  FollowerOptions o;
  o.resolver = {.dns_server = dns.address(), .timeout_ms = 50, .tries = 1, .max_wait_ms = 1000};
  o.domain = "f.test";
  o.min_refresh_ms = 20;
  o.retry_after_failure_ms = 20;
  o.max_refresh_ms = 100;
  std::mutex mu;
  std::vector<std::vector<std::string>> seen;
  SrvFollower follower(o);
  ASSERT_TRUE(follower
                  .Start([&](const std::vector<DiscoveredEndpoint>& eps) {
                    std::vector<std::string> hosts;
                    for (const auto& e : eps) hosts.push_back(e.host + "@" + e.addresses[0]);
                    std::sort(hosts.begin(), hosts.end());
                    std::lock_guard<std::mutex> lock(mu);
                    seen.push_back(hosts);
                  })
                  .ok());
  auto wait_for = [&](size_t n) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (seen.size() >= n) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(wait_for(1));
  version = 2;
  ASSERT_TRUE(wait_for(2));
  version = 3;
  const uint64_t failures_before = follower.failures();
  for (int i = 0; i < 300 && follower.failures() < failures_before + 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(follower.failures(), failures_before + 3);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen.size(), 2u);  // failures report nothing: the last set stays
  }
  version = 4;
  ASSERT_TRUE(wait_for(3));
  follower.Stop();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], (std::vector<std::string>{"m1.f.test@10.0.0.1"}));
  EXPECT_EQ(seen[1], (std::vector<std::string>{"m1.f.test@10.0.0.1", "m2.f.test@10.0.0.2"}));
  EXPECT_EQ(seen[2], (std::vector<std::string>{"m2.f.test@10.0.0.2"}));
  EXPECT_EQ(follower.changes(), 2u);
}

// Stop() while a lookup waits on a server that went silent returns without waiting out the
// lookup's bound (max_wait_ms): the proxy's shutdown goes through here.
TEST(Follower, StopDoesNotWaitOutASilentDnsServer) {
  std::atomic<bool> silent{false};
  FakeDnsServer dns([&](const std::string& q) -> std::string {
    if (silent.load()) return "";
    const uint16_t qtype = QueryType(q);
    const std::string name = QuestionName(q);
    if (qtype == 33 && name == "_etcd-client._tcp.s.test") {
      return Message(name, 0, {{kPtrToQuestion, 33, 0, SrvRdata(0, 0, 2379, "m1.s.test")}},
                     QueryId(q), qtype);
    }
    if (qtype == 1 && name == "m1.s.test") {
      return Message(name, 0, {{kPtrToQuestion, 1, 0, std::string("\x0a\x00\x00\x01", 4)}},
                     QueryId(q), qtype);
    }
    return Message(name, 0, {}, QueryId(q), qtype);
  });
  FollowerOptions o;
  o.resolver = {.dns_server = dns.address(), .timeout_ms = 5000, .tries = 3, .max_wait_ms = 60000};
  o.domain = "s.test";
  o.min_refresh_ms = 20;
  o.max_refresh_ms = 20;
  SrvFollower follower(o);
  ASSERT_TRUE(follower.Start([](const std::vector<DiscoveredEndpoint>&) {}).ok());
  silent = true;
  const int queries_before = dns.queries();
  for (int i = 0; i < 500 && dns.queries() == queries_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(dns.queries(), queries_before) << "no lookup reached the silent server";
  const auto start = std::chrono::steady_clock::now();
  follower.Stop();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  EXPECT_LT(ms, 10000) << "Stop waited out a 60 s lookup bound";
}

// More SRV targets than kMaxEndpoints: the first kMaxEndpoints are used, the rest are reported as
// skipped (never silently dropped, never an unbounded fan-out of address lookups).
TEST(Discover, TargetsPastTheLimitAreSkippedAndReported) {
  FakeDnsServer dns([](const std::string& q) -> std::string {
    const uint16_t qtype = QueryType(q);
    const std::string name = QuestionName(q);
    if (qtype == 33 && name == "_etcd-client._tcp.many.test") {
      std::vector<Rr> answers;
      for (size_t i = 0; i < kMaxEndpoints + 6; ++i) {
        answers.push_back(
            {kPtrToQuestion, 33, 60, SrvRdata(0, 0, 2379, "t" + std::to_string(i) + ".many.test")});
      }
      return Message(name, 0, answers, QueryId(q), qtype);
    }
    if (qtype == 1 && name.find(".many.test") != std::string::npos) {
      return Message(name, 0, {{kPtrToQuestion, 1, 60, std::string("\x0a\x00\x00\x01", 4)}},
                     QueryId(q), qtype);
    }
    if (qtype == 28) return Message(name, 0, {}, QueryId(q), qtype);
    return Message(name, 3, {}, QueryId(q), qtype);
  });
  auto resolver = Resolver::Create(
      {.dns_server = dns.address(), .timeout_ms = 500, .tries = 2, .max_wait_ms = 5000});
  ASSERT_TRUE(resolver.ok());
  std::mt19937_64 rng(1);
  auto found = Discover(resolver->get(), Role::kClients, "many.test", "", &rng);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->endpoints.size(), kMaxEndpoints);
  ASSERT_EQ(found->skipped.size(), 6u);
  EXPECT_NE(found->skipped[0].find("past the limit of 64 endpoints"), std::string::npos)
      << found->skipped[0];
}

}  // namespace
}  // namespace meridian::discovery
