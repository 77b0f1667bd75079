#include "common/check.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/log.h"
#include "gtest/gtest.h"

namespace meridian {
namespace {

TEST(CheckTest, PassingChecksDoNothing) {
  int evaluations = 0;
  auto count = [&] { return ++evaluations; };
  MERIDIAN_CHECK(count() == 1) << "not printed";
  MERIDIAN_CHECK_EQ(count(), 2);  // each side evaluated exactly once
  MERIDIAN_CHECK_LT(size_t{1}, 2);
  MERIDIAN_CHECK_GE(-1, -1);
  MERIDIAN_CHECK_NE(std::string("a"), "b");
  MERIDIAN_CHECKF(evaluations == 2, "evaluations=%d", evaluations);
  MERIDIAN_CHECK_OK(absl::OkStatus());
  EXPECT_EQ(evaluations, 2);
}

TEST(CheckDeathTest, FailuresPrintLocationConditionAndValues) {
  const int size = 3;
  const int index = 7;
  EXPECT_DEATH(MERIDIAN_CHECK(index < size) << "index=" << index << " size=" << size,
               "check_test.cc:[0-9]+: CHECK failed: index < size: index=7 size=3");
  EXPECT_DEATH(MERIDIAN_CHECK_EQ(index, size), "CHECK failed: index == size \\(7 vs. 3\\)");
  // Signed/unsigned compare by value: -1 is not >= 0u.
  EXPECT_DEATH(MERIDIAN_CHECK_GE(-1, 0u), "-1 >= 0u \\(-1 vs. 0\\)");
  EXPECT_DEATH(MERIDIAN_CHECKF(index < size, "index=%d size=%d", index, size),
               "CHECK failed: index < size: index=7 size=3");
  EXPECT_DEATH(MERIDIAN_CHECK_OK(absl::NotFoundError("no such key")),
               "is OK: NOT_FOUND: no such key");
}

TEST(LogTest, LevelsUseEtcdNames) {
  for (const char* name : {"debug", "info", "warn", "error", "panic", "fatal", "dpanic"}) {
    EXPECT_TRUE(ParseLogLevel(name).ok()) << name;
  }
  EXPECT_EQ(*ParseLogLevel("warn"), spdlog::level::warn);
  EXPECT_EQ(*ParseLogLevel("fatal"), spdlog::level::critical);
  const spdlog::level::level_enum before = spdlog::get_level();
  absl::Status bad = SetLogLevel("verbose");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("verbose"), std::string::npos);
  EXPECT_EQ(spdlog::get_level(), before);
  ASSERT_TRUE(SetLogLevel("error").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::err);
  spdlog::set_level(before);
}

}  // namespace
}  // namespace meridian
