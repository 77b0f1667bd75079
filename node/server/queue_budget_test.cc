#include "node/server/queue_budget.h"

#include <gtest/gtest.h>

namespace meridian::server {
namespace {

TEST(QueueBudgetTest, BothLimitsHold) {
  QueueBudget budget(/*max_entries=*/3, /*max_bytes=*/100);
  ASSERT_TRUE(budget.Admits(1, 40));
  budget.Add(1, 40);
  EXPECT_TRUE(budget.Admits(1, 60));
  EXPECT_FALSE(budget.Admits(1, 61)) << "bytes over the limit";
  budget.Add(1, 10);
  budget.Add(1, 10);
  EXPECT_FALSE(budget.Admits(1, 1)) << "entries over the limit";
  EXPECT_EQ(budget.entries(), 3u);
  EXPECT_EQ(budget.bytes(), 60u);
  budget.Remove(1, 40);
  EXPECT_TRUE(budget.Admits(1, 80));
  EXPECT_FALSE(budget.Admits(2, 10)) << "a batch counts all its entries";
}

TEST(QueueBudgetTest, AnEmptyQueueAdmitsOneEntryOfAnySize) {
  QueueBudget budget(2, 100);
  EXPECT_TRUE(budget.Admits(1, 1000));
  budget.Add(1, 1000);
  EXPECT_FALSE(budget.Admits(1, 1)) << "over budget until it drains";
  budget.Remove(1, 1000);
  EXPECT_TRUE(budget.Admits(5, 1000)) << "a batch from raft is never stuck behind its own size";
}

TEST(QueueBudgetTest, ClearForgetsEverything) {
  QueueBudget budget(2, 100);
  budget.Add(2, 100);
  EXPECT_FALSE(budget.Admits(1, 1));
  budget.Clear();
  EXPECT_EQ(budget.entries(), 0u);
  EXPECT_EQ(budget.bytes(), 0u);
  EXPECT_TRUE(budget.Admits(1, 1));
}

TEST(QueueBudgetDeathTest, RemovingMoreThanWasAddedAborts) {
  QueueBudget budget(2, 100);
  budget.Add(1, 10);
  EXPECT_DEATH(budget.Remove(1, 11), "removing 1 entries / 11 bytes from 1 / 10");
}

}  // namespace
}  // namespace meridian::server
