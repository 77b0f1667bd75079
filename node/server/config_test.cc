#include "node/server/config.h"

#include <gtest/gtest.h>

#include <sstream>

namespace meridian::server {
namespace {

absl::StatusOr<ParsedFlags> Parse(std::vector<std::string> args,
                                  std::vector<std::string> env = {}) {
  std::vector<const char*> argv = {"meridian-node"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out;
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), env, out);
}

TEST(ConfigTest, DefaultsAreEtcds) {
  auto p = Parse({});
  ASSERT_TRUE(p.ok()) << p.status();
  const auto& c = p->config;
  EXPECT_EQ(c.name, "default");
  EXPECT_EQ(c.data_dir, "default.etcd");
  EXPECT_EQ(c.max_request_bytes, 1572864u);
  EXPECT_EQ(c.max_txn_ops, 128u);
  EXPECT_EQ(c.EffectiveQuotaBytes(), 2ll << 30);
  EXPECT_EQ(c.initial_cluster, "default=http://localhost:2380");
  EXPECT_EQ(c.MinLeaseTtlSeconds(), 2);
}

TEST(ConfigTest, SingleAndDoubleDashAndEquals) {
  auto p = Parse({"-name", "n1", "--data-dir=/tmp/x", "--max-txn-ops", "4", "--listen-client-urls",
                  "http://127.0.0.1:1,http://127.0.0.1:2"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config.name, "n1");
  EXPECT_EQ(p->config.data_dir, "/tmp/x");
  EXPECT_EQ(p->config.max_txn_ops, 4u);
  EXPECT_EQ(p->config.listen_client_urls.size(), 2u);
}

TEST(ConfigTest, EnvironmentVariablesAndFlagsWin) {
  auto p = Parse({"--name", "flag"}, {"ETCD_NAME=env", "ETCD_QUOTA_BACKEND_BYTES=1024",
                                      "ETCD_AUTO_COMPACTION_MODE=revision", "PATH=/bin"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config.name, "flag");
  EXPECT_EQ(p->config.quota_backend_bytes, 1024);
  EXPECT_EQ(p->config.auto_compaction_mode, "revision");
}

TEST(ConfigTest, DiscoverySrvReplacesTheInitialCluster) {
  auto p = Parse({"--discovery-srv", "example.com", "--discovery-dns-server", "10.0.0.2"},
                 {"ETCD_DISCOVERY_SRV_NAME=prod"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->config.discovery_srv, "example.com");
  EXPECT_EQ(p->config.discovery_srv_name, "prod");
  EXPECT_EQ(p->config.discovery_dns_server, "10.0.0.2:53");
  EXPECT_EQ(p->config.initial_cluster, "");  // no default: DNS gives it at bootstrap
  // As etcd: only one way to bootstrap.
  auto both = Parse({"--discovery-srv", "example.com", "--initial-cluster", "a=http://h:2380"});
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().message(),
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", "
            "\"discovery\" or \"discovery-srv\"");
  EXPECT_FALSE(Parse({"--discovery-dns-server", "dns.example.com:53"}).ok());
}

TEST(ConfigTest, BadInputIsRefusedWithTheFlagNamed) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--no-such-flag"},
           {"--max-txn-ops", "zero"},
           {"--max-txn-ops", "0"},
           {"--max-request-bytes", "-5"},
           {"--initial-cluster-state", "maybe"},
           {"--auto-compaction-mode", "sometimes"},
           {"--log-level", "loud"},
           {"--heartbeat-interval", "500", "--election-timeout", "1000"},
           {"--experimental-watch-progress-notify-interval", "10 minutes"}}) {
    auto p = Parse(args);
    EXPECT_FALSE(p.ok()) << args[0];
    if (!p.ok()) EXPECT_FALSE(p.status().message().empty());
  }
  auto p = Parse({"--max-txn-ops", "zero"});
  EXPECT_NE(p.status().message().find("max-txn-ops"), absl::string_view::npos);
}

TEST(ConfigTest, Durations) {
  EXPECT_EQ(*ParseDurationMs("100ms"), 100);
  EXPECT_EQ(*ParseDurationMs("1h30m"), 5400000);
  EXPECT_EQ(*ParseDurationMs("0"), 0);
  EXPECT_FALSE(ParseDurationMs("5").ok());
  EXPECT_FALSE(ParseDurationMs("").ok());
  EXPECT_FALSE(ParseDurationMs("h").ok());
}

}  // namespace
}  // namespace meridian::server
