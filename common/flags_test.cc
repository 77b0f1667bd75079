#include "common/flags.h"

#include <sstream>

#include "gtest/gtest.h"

namespace meridian {
namespace {

TEST(Flags, GoConventionsAndEnvironment) {
  EXPECT_EQ(EnvName("listen-client-urls"), "LISTEN_CLIENT_URLS");
  auto env = EnvironmentMap({"ETCD_NAME=a=b", "NOEQUALS", "X="});
  EXPECT_EQ(env["ETCD_NAME"], "a=b");
  EXPECT_EQ(env["X"], "");
  EXPECT_EQ(env.count("NOEQUALS"), 0u);
  const char* argv[] = {"prog", "-name", "n", "--pre-vote", "--x=1"};
  EXPECT_EQ(GoStyleArgs(5, argv, {"--pre-vote"}),
            (std::vector<std::string>{"--x=1", "--pre-vote=true", "n", "--name"}));

  CLI::App app{"test"};
  std::string name;
  app.add_option("--name", name);
  std::ostringstream out;
  auto ok = ParseArgs(app, GoStyleArgs(3, argv), out);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(*ok);
  EXPECT_EQ(name, "n");
  const char* help[] = {"prog", "--help"};
  auto h = ParseArgs(app, GoStyleArgs(2, help), out);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(*h);
  EXPECT_NE(out.str().find("--name"), std::string::npos);
  const char* bad[] = {"prog", "--nope"};
  EXPECT_TRUE(absl::IsInvalidArgument(ParseArgs(app, GoStyleArgs(2, bad), out).status()));
}

TEST(Flags, IntegerValuesAreCheckedAgainstTheirRange) {
  EXPECT_EQ(*ParseIntFlag("max-txn-ops", "128", 1, 1 << 20), 128);
  auto not_int = ParseIntFlag("max-txn-ops", "zero", 1, 10);
  EXPECT_EQ(not_int.status().message(), "invalid value \"zero\" for flag --max-txn-ops: not an integer");
  auto out_of_range = ParseIntFlag("max-txn-ops", "0", 1, 10);
  EXPECT_EQ(out_of_range.status().message(),
            "invalid value \"0\" for flag --max-txn-ops: must be in [1, 10]");
}

}  // namespace
}  // namespace meridian
