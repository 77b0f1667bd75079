#include "common/dial_target.h"

#include "gtest/gtest.h"

namespace meridian {
namespace {

TEST(DialTarget, NamesGoToTheDiscoveryDnsServerOnlyWhenOneIsSet) {
  SetDialDnsServer("");
  EXPECT_EQ(DialTarget("m1.example.com:2380"), "m1.example.com:2380");
  SetDialDnsServer("127.0.0.1:5353");
  EXPECT_EQ(DialTarget("m1.example.com:2380"), "dns://127.0.0.1:5353/m1.example.com:2380");
  EXPECT_EQ(DialTarget("10.0.0.1:2380"), "10.0.0.1:2380");
  EXPECT_EQ(DialTarget("[::1]:2380"), "[::1]:2380");
  EXPECT_EQ(DialTarget("localhost:2380"), "localhost:2380");
  EXPECT_EQ(DialTarget("unix:/tmp/sock"), "unix:/tmp/sock");
  EXPECT_EQ(DialTarget("ipv4:10.0.0.1:2379"), "ipv4:10.0.0.1:2379");
  SetDialDnsServer("");
}

}  // namespace
}  // namespace meridian
