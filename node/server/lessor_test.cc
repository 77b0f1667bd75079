#include "node/lease/lessor.h"

#include <gtest/gtest.h>

namespace meridian::lease {
namespace {

class FakeClock : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override { return now; }
  std::chrono::steady_clock::time_point now{};
};

TEST(LessorTest, GrantRenewExpire) {
  FakeClock clock;
  Lessor l(&clock, 2);
  EXPECT_EQ(l.Grant(1, 1), 2);  // raised to the minimum TTL
  EXPECT_EQ(l.Grant(2, 10), 10);
  EXPECT_TRUE(l.Exists(1));
  clock.now += std::chrono::seconds(1);
  EXPECT_EQ(l.Get(2)->remaining_seconds, 9);
  EXPECT_EQ(l.Renew(1), 2);
  clock.now += std::chrono::milliseconds(1500);
  EXPECT_TRUE(l.TakeExpired(10, std::chrono::seconds(1)).empty());
  clock.now += std::chrono::milliseconds(600);
  auto expired = l.TakeExpired(10, std::chrono::seconds(1));
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0], 1);
  // Being revoked: not handed out again until the retry time, and no longer renewable.
  EXPECT_TRUE(l.TakeExpired(10, std::chrono::seconds(1)).empty());
  EXPECT_FALSE(l.Renew(1).has_value());
  clock.now += std::chrono::seconds(2);
  EXPECT_EQ(l.TakeExpired(10, std::chrono::seconds(1)).size(), 1u);
  EXPECT_TRUE(l.Revoke(1));
  EXPECT_FALSE(l.Exists(1));
  EXPECT_FALSE(l.Revoke(1));
  EXPECT_EQ(l.Ids(), std::vector<int64_t>{2});
}

TEST(LessorTest, TakeExpiredIsBounded) {
  FakeClock clock;
  Lessor l(&clock, 1);
  for (int i = 1; i <= 100; ++i) l.Grant(i, 1);
  clock.now += std::chrono::seconds(2);
  EXPECT_EQ(l.TakeExpired(30, std::chrono::seconds(5)).size(), 30u);
  EXPECT_EQ(l.TakeExpired(100, std::chrono::seconds(5)).size(), 70u);
}

}  // namespace
}  // namespace meridian::lease
