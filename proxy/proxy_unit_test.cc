// Unit tests of the proxy's pure pieces: key prefixes, quotas, identities, flags, versions.
#include <map>
#include <sstream>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "proxy/config.h"
#include "proxy/key_prefix.h"
#include "proxy/proxy.h"
#include "proxy/quota.h"
#include "proxy/upstream.h"

namespace meridian::proxy {
namespace {

TEST(KeyPrefixTest, RangesStayInsideTheNamespace) {
  KeyPrefix p("ns/");
  EXPECT_EQ(p.Key("a"), "ns/a");
  EXPECT_EQ(p.RangeEnd(""), "");
  EXPECT_EQ(p.RangeEnd(std::string(1, '\0')), "ns0");  // '/' + 1
  EXPECT_EQ(p.RangeEnd("b"), "ns/b");
  EXPECT_EQ(p.Strip("ns/a"), "a");
  KeyPrefix ff(std::string("\xff\xff", 2));
  EXPECT_EQ(ff.RangeEnd(std::string(1, '\0')), std::string(1, '\0'));
  KeyPrefix mid(std::string("a\xff", 2));
  EXPECT_EQ(mid.RangeEnd(std::string(1, '\0')), "b");
}

TEST(KeyPrefixTest, TxnIsRewrittenRecursively) {
  KeyPrefix p("t/");
  etcdserverpb::TxnRequest txn;
  auto* c = txn.add_compare();
  c->set_key("k");
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key("x");
  auto* inner = txn.add_failure()->mutable_request_txn();
  inner->add_success()->mutable_request_range()->set_key("y");
  p.Apply(&txn);
  EXPECT_EQ(txn.compare(0).key(), "t/k");
  EXPECT_EQ(txn.success(0).request_put().key(), "t/x");
  EXPECT_EQ(txn.failure(0).request_txn().success(0).request_range().key(), "t/y");

  etcdserverpb::TxnResponse resp;
  auto* rr = resp.add_responses()->mutable_response_range();
  rr->add_kvs()->set_key("t/y");
  p.Unapply(&resp);
  EXPECT_EQ(resp.responses(0).response_range().kvs(0).key(), "y");
}

TEST(KeyPrefixTest, EmptyKeyIsRefusedLikeEtcd) {
  KeyPrefix p("ns/");
  etcdserverpb::PutRequest put;
  put.set_value("v");
  grpc::ByteBuffer buf = SerializeToBuffer(put);
  auto st = p.ApplyToRequest("/etcdserverpb.KV/Put", &buf);
  EXPECT_EQ(st.message(), "etcdserver: key is not provided");
  put.set_key("k");
  buf = SerializeToBuffer(put);
  ASSERT_TRUE(p.ApplyToRequest("/etcdserverpb.KV/Put", &buf).ok());
  etcdserverpb::PutRequest back;
  ASSERT_TRUE(ParseBuffer(buf, &back));
  EXPECT_EQ(back.key(), "ns/k");
  EXPECT_EQ(back.value(), "v");
}

TEST(QuotaTest, RequestsPerSecondRefillOverTime) {
  QuotaTable q({.requests_per_second = 2});
  EXPECT_TRUE(q.Admit("a", 10, 0).ok());
  EXPECT_TRUE(q.Admit("a", 10, 0).ok());
  auto st = q.Admit("a", 10, 0);
  EXPECT_TRUE(absl::IsResourceExhausted(st));
  EXPECT_NE(st.message().find("client a is over its quota of 2 requests/s"), std::string::npos);
  EXPECT_TRUE(q.Admit("b", 10, 0).ok()) << "another client is not affected";
  EXPECT_TRUE(q.Admit("a", 10, 500).ok()) << "half a second refills one request";
  EXPECT_EQ(q.rejections(), 1u);
}

TEST(QuotaTest, BytesPerSecondAndWatchers) {
  QuotaTable q({.bytes_per_second = 100, .watchers = 2});
  EXPECT_TRUE(q.Admit("a", 60, 0).ok());
  EXPECT_FALSE(q.Admit("a", 60, 0).ok());
  EXPECT_TRUE(q.Admit("a", 60, 1000).ok());
  // Bigger than a second's worth: allowed only from a full bucket.
  EXPECT_TRUE(q.Admit("c", 500, 0).ok());
  EXPECT_FALSE(q.Admit("c", 500, 100).ok());
  EXPECT_TRUE(q.AcquireWatcher("a").ok());
  EXPECT_TRUE(q.AcquireWatcher("a").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(q.AcquireWatcher("a")));
  q.ReleaseWatcher("a");
  EXPECT_TRUE(q.AcquireWatcher("a").ok());
}

TEST(QuotaTest, TableStaysBounded) {
  QuotaTable q({.requests_per_second = 1}, /*max_entries=*/100);
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(q.Admit("ip:" + std::to_string(i), 1, i * 2000).ok());
}

TEST(IdentityTest, PeerIpAndLearnedTokens) {
  EXPECT_EQ(PeerIp("ipv4:127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(PeerIp("ipv6:[::1]:5000"), "::1");
  AuthTokenCache tokens(2);
  tokens.Remember("t1", "u1");
  tokens.Remember("t2", "u2");
  tokens.Remember("t3", "u3");
  EXPECT_EQ(tokens.UserOf("t1"), "") << "evicted (bounded)";
  EXPECT_EQ(tokens.UserOf("t3"), "u3");
}

TEST(UpstreamTest, EndpointsAndVersions) {
  EXPECT_EQ(*NormalizeEndpoint("http://127.0.0.1:2379"), "127.0.0.1:2379");
  EXPECT_EQ(*NormalizeEndpoint("127.0.0.1:2379"), "127.0.0.1:2379");
  EXPECT_FALSE(NormalizeEndpoint("https://127.0.0.1:2379").ok());
  EXPECT_FALSE(NormalizeEndpoint("127.0.0.1").ok());
  EXPECT_FALSE(NormalizeEndpoint("127.0.0.1:99999").ok());
  EXPECT_TRUE(VersionAtLeast("3.5.17", 3, 5, 13));
  EXPECT_TRUE(VersionAtLeast("3.6.0", 3, 5, 13));
  EXPECT_FALSE(VersionAtLeast("3.4.23", 3, 5, 13));
  EXPECT_FALSE(VersionAtLeast("", 3, 5, 13));
}

TEST(ConfigTest, FlagsEnvironmentAndErrors) {
  std::ostringstream out;
  const char* argv[] = {"meridian-proxy", "start", "--endpoints=127.0.0.1:1,127.0.0.1:2",
                        "--quota-requests-per-second=5", "--auto-sync-interval=0"};
  auto p = ParseProxyFlags(5, argv, {"ETCD_NAMESPACE=ns/"}, out);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config.endpoints.size(), 2u);
  EXPECT_EQ(p->config.ns, "ns/");
  EXPECT_EQ(p->config.quota_requests_per_second, 5);
  EXPECT_EQ(p->config.auto_sync_interval_ms, 0);
  const char* bad[] = {"meridian-proxy", "--max-request-bytes=abc"};
  EXPECT_FALSE(ParseProxyFlags(2, bad, {}, out).ok());
  const char* unknown[] = {"meridian-proxy", "--no-such-flag=1"};
  EXPECT_FALSE(ParseProxyFlags(2, unknown, {}, out).ok());
}

TEST(UpstreamTest, ReadsPreferTheLowestPriorityAndFollowWeights) {
  auto make = [](const std::string& name, uint16_t priority, uint16_t weight) {
    auto u = std::make_shared<Upstream>();
    u->endpoint = name;
    u->priority = priority;
    u->weight = weight;
    return u;
  };
  auto light = make("light", 0, 1), heavy = make("heavy", 0, 3), backup = make("backup", 1, 100);
  std::map<std::string, int> picks;
  for (int i = 0; i < 4000; ++i) picks[PickByPriorityAndWeight({light, heavy, backup})->endpoint]++;
  EXPECT_EQ(picks["backup"], 0);  // a higher priority value is only a fallback
  EXPECT_NEAR(picks["heavy"] / 4000.0, 301.0 / 402.0, 0.01);  // weights 3:1 (+1 each)
  // Equal weights: strict round-robin.
  auto a = make("a", 0, 0), b = make("b", 0, 0);
  std::string seq;
  for (int i = 0; i < 6; ++i) seq += PickByPriorityAndWeight({a, b})->endpoint;
  EXPECT_EQ(seq, "ababab");
  // Only the fallback left.
  EXPECT_EQ(PickByPriorityAndWeight({backup})->endpoint, "backup");
  EXPECT_EQ(PickByPriorityAndWeight({}), nullptr);
}

TEST(UpstreamTest, DnsEndpointsBecomeAddressTargets) {
  std::vector<discovery::DiscoveredEndpoint> found = {
      {"http", "m1.example.com", 2379, 0, 5, {"10.0.0.1", "10.0.0.2", "fd00::1"}},
      {"http", "m2.example.com", 2379, 1, 0, {"fd00::2"}},
      {"https", "m3.example.com", 2379, 0, 0, {"10.0.0.3"}},
  };
  std::vector<std::string> skipped;
  auto targets = TargetsFromDns(found, &skipped);
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_EQ(targets[0].endpoint, "m1.example.com:2379");
  EXPECT_EQ(targets[0].dial_target, "ipv4:10.0.0.1:2379,10.0.0.2:2379");
  EXPECT_EQ(targets[0].weight, 5);
  EXPECT_EQ(targets[1].dial_target, "ipv6:[fd00::2]:2379");
  EXPECT_EQ(targets[1].priority, 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("TLS to members is not supported"), std::string::npos);
}

TEST(ConfigTest, DiscoveryFlags) {
  std::ostringstream out;
  const char* argv[] = {"meridian-proxy", "--discovery-srv=example.com",
                        "--discovery-dns-server=127.0.0.1:5353"};
  auto p = ParseProxyFlags(3, argv, {"ETCD_DISCOVERY_SRV_NAME=prod"}, out);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config.discovery_srv, "example.com");
  EXPECT_EQ(p->config.discovery_srv_name, "prod");
  EXPECT_EQ(p->config.discovery_dns_server, "127.0.0.1:5353");
  const char* bad[] = {"meridian-proxy", "--discovery-dns-server=ns1.example.com"};
  auto b = ParseProxyFlags(2, bad, {}, out);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("--discovery-dns-server"), std::string::npos);
}

}  // namespace
}  // namespace meridian::proxy
