#include "common/url.h"

#include "gtest/gtest.h"

namespace meridian {
namespace {

// The message of a parse failure, or "" if it parsed.
std::string ErrorOf(std::string_view text) {
  absl::StatusOr<Url> url = ParseUrl(text);
  if (url.ok()) return "";
  EXPECT_EQ(url.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(url.status().message());
}

TEST(UrlTest, ParsesIPv4) {
  absl::StatusOr<Url> url = ParseUrl("http://127.0.0.1:2379");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->scheme, "http");
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->host_kind, Url::HostKind::kIPv4);
  EXPECT_TRUE(url->has_port);
  EXPECT_EQ(url->port, 2379);
  EXPECT_FALSE(url->secure());
  EXPECT_EQ(url->HostPort(), "127.0.0.1:2379");
  EXPECT_EQ(url->ToString(), "http://127.0.0.1:2379");
}

TEST(UrlTest, ParsesIPv6HostnameAndSchemes) {
  absl::StatusOr<Url> v6 = ParseUrl(" HTTPS://[::1]:2380 ");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->scheme, "https");
  EXPECT_TRUE(v6->secure());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->host_kind, Url::HostKind::kIPv6);
  EXPECT_EQ(v6->HostPort(), "[::1]:2380");
  EXPECT_EQ(v6->ToString(), "https://[::1]:2380");

  absl::StatusOr<Url> zone = ParseUrl("http://[fe80::1%25eth0]:2379");
  ASSERT_TRUE(zone.ok()) << zone.status();
  EXPECT_EQ(zone->host, "fe80::1%eth0");
  EXPECT_EQ(zone->ToString(), "http://[fe80::1%25eth0]:2379");

  absl::StatusOr<Url> name = ParseUrl("http://node-1.example.com:2380");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->host, "node-1.example.com");
  EXPECT_EQ(name->host_kind, Url::HostKind::kHostname);

  absl::StatusOr<Url> any = ParseUrl("http://:0");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->host, "");
  EXPECT_EQ(any->host_kind, Url::HostKind::kUnspecified);
  EXPECT_EQ(any->port, 0);

  absl::StatusOr<Url> unix_url = ParseUrl("unix://localhost:1234");
  ASSERT_TRUE(unix_url.ok()) << unix_url.status();
  EXPECT_TRUE(unix_url->is_unix());
  EXPECT_EQ(unix_url->HostPort(), "localhost:1234");  // the socket file etcd would create
  EXPECT_TRUE(ParseUrl("unixs://sock").ok());
  EXPECT_EQ(ParseUrl("http://[::1]:65535")->port, 65535);
}

TEST(UrlTest, RoundTrips) {
  for (const char* text : {"http://127.0.0.1:2379", "https://[2001:db8::1]:443", "http://a.b:1",
                           "unix://localhost:1234", "http://:2379"}) {
    absl::StatusOr<Url> url = ParseUrl(text);
    ASSERT_TRUE(url.ok()) << text << ": " << url.status();
    EXPECT_EQ(url->ToString(), text);
    EXPECT_EQ(*ParseUrl(url->ToString()), *url);
  }
}

TEST(UrlTest, RejectsBadInputWithClearMessages) {
  EXPECT_EQ(ErrorOf(""), "invalid URL: empty");
  EXPECT_EQ(ErrorOf("   "), "invalid URL: empty");
  EXPECT_EQ(ErrorOf("127.0.0.1:2379"),
            "invalid URL \"127.0.0.1:2379\": no scheme (expected http://, https://, unix:// or "
            "unixs://)");
  EXPECT_EQ(ErrorOf("ftp://a:1"),
            "invalid URL \"ftp://a:1\": scheme \"ftp\" is not one of http, https, unix, unixs");
  EXPECT_EQ(ErrorOf("http://127.0.0.1"),
            "invalid URL \"http://127.0.0.1\": missing port (expected host:port)");
  EXPECT_EQ(ErrorOf("http://127.0.0.1:"),
            "invalid URL \"http://127.0.0.1:\": missing port after ':'");
  EXPECT_EQ(ErrorOf("http://127.0.0.1:65536"),
            "invalid URL \"http://127.0.0.1:65536\": port 65536 out of range (0-65535)");
  EXPECT_EQ(ErrorOf("http://127.0.0.1:99999999999999999999"),
            "invalid URL \"http://127.0.0.1:99999999999999999999\": port 99999999999999999999 out "
            "of range (0-65535)");
  EXPECT_EQ(ErrorOf("http://h:-1"), "invalid URL \"http://h:-1\": port \"-1\" is not a number");
  EXPECT_EQ(ErrorOf("http://h:12ab"),
            "invalid URL \"http://h:12ab\": port \"12ab\" is not a number");
  EXPECT_EQ(ErrorOf("http://127.0.0.1:2379/v3"),
            "invalid URL \"http://127.0.0.1:2379/v3\": must not contain a path, query or fragment");
  EXPECT_NE(ErrorOf("http://127.0.0.1:2379/"), "");
  EXPECT_NE(ErrorOf("unix:///tmp/etcd.sock").find("must not contain a path"), std::string::npos);
  EXPECT_EQ(ErrorOf("http://"), "invalid URL \"http://\": no host");
  EXPECT_NE(ErrorOf("http://::1:2379").find("too many colons"), std::string::npos);
  EXPECT_NE(ErrorOf("http://[::1:2379").find("without ']'"), std::string::npos);
  EXPECT_NE(ErrorOf("http://[::1]").find("missing port"), std::string::npos);
  EXPECT_NE(ErrorOf("http://[::1]x:1").find("after ']'"), std::string::npos);
  EXPECT_NE(ErrorOf("http://[zz::1]:1").find("bad IPv6 address"), std::string::npos);
  EXPECT_NE(ErrorOf("http://256.0.0.1:1").find("bad IPv4 address \"256.0.0.1\""),
            std::string::npos);
  EXPECT_NE(ErrorOf("http://bad host:1").find("space or control"), std::string::npos);
  EXPECT_NE(ErrorOf("http://ex$mple:1").find("bad host name"), std::string::npos);
  EXPECT_NE(ErrorOf("http://-lead.example:1").find("bad host name"), std::string::npos);
  EXPECT_NE(ErrorOf("http://user@h:1").find("user info"), std::string::npos);
}

TEST(UrlTest, ParsesLists) {
  absl::StatusOr<std::vector<Url>> urls = ParseUrlList("http://127.0.0.1:2379, http://[::1]:22379");
  ASSERT_TRUE(urls.ok()) << urls.status();
  ASSERT_EQ(urls->size(), 2u);
  EXPECT_EQ((*urls)[0].port, 2379);
  EXPECT_EQ((*urls)[1].host, "::1");

  EXPECT_EQ(ParseUrlList("").status().message(), "empty URL list");
  EXPECT_EQ(ParseUrlList("http://a:1,,http://b:2").status().message(),
            "URL list \"http://a:1,,http://b:2\": element 2 is empty");
  EXPECT_FALSE(ParseUrlList("http://a:1,").ok());
  EXPECT_EQ(ParseUrlList("http://a:1,http://b").status().message(),
            "invalid URL \"http://b\": missing port (expected host:port)");
}

TEST(UrlTest, ParsesInitialCluster) {
  absl::StatusOr<std::vector<ClusterMemberUrls>> cluster = ParseInitialCluster(
      "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra0=http://10.0.2.10:2380,");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ(cluster->size(), 2u);
  EXPECT_EQ((*cluster)[0].name, "infra0");
  ASSERT_EQ((*cluster)[0].peer_urls.size(), 2u);
  EXPECT_EQ((*cluster)[0].peer_urls[1].ToString(), "http://10.0.2.10:2380");
  EXPECT_EQ((*cluster)[1].name, "infra1");

  EXPECT_EQ(ParseInitialCluster("").status().message(), "initial cluster is empty");
  EXPECT_EQ(ParseInitialCluster("infra0").status().message(),
            "initial cluster entry \"infra0\" is not name=URL");
  EXPECT_EQ(ParseInitialCluster("=http://a:1").status().message(),
            "initial cluster entry \"=http://a:1\" has an empty name");
  EXPECT_EQ(ParseInitialCluster("n1=http://a").status().message(),
            "initial cluster member \"n1\": invalid URL \"http://a\": missing port (expected "
            "host:port)");
  EXPECT_EQ(ParseInitialCluster("n1=http://a:1,n2=http://a:1").status().message(),
            "initial cluster: URL http://a:1 given for both \"n1\" and \"n2\"");
}

}  // namespace
}  // namespace meridian
