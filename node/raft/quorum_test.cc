#include "node/raft/quorum.h"

#include <map>

#include "gtest/gtest.h"

namespace meridian::raft {
namespace {

uint64_t Committed(const std::vector<uint64_t>& ids, const std::map<uint64_t, uint64_t>& acked) {
  return MajorityConfig(ids).CommittedIndex([&](uint64_t id) -> std::optional<uint64_t> {
    auto it = acked.find(id);
    if (it == acked.end()) return std::nullopt;
    return it->second;
  });
}

TEST(QuorumTest, CommittedIndex) {
  EXPECT_EQ(Committed({}, {}), kNoLimitIndex) << "empty config is neutral for min()";
  EXPECT_EQ(Committed({1}, {{1, 7}}), 7u);
  EXPECT_EQ(Committed({1}, {}), 0u);
  EXPECT_EQ(Committed({1, 2}, {{1, 7}, {2, 5}}), 5u) << "two voters need both";
  EXPECT_EQ(Committed({1, 2, 3}, {{1, 7}, {2, 5}, {3, 2}}), 5u);
  EXPECT_EQ(Committed({1, 2, 3}, {{1, 7}}), 0u) << "missing acks count as 0";
  EXPECT_EQ(Committed({1, 2, 3}, {{1, 7}, {3, 9}}), 7u);
  EXPECT_EQ(Committed({1, 2, 3, 4}, {{1, 7}, {2, 8}, {3, 2}, {4, 1}}), 2u)
      << "four voters need three";
  EXPECT_EQ(Committed({1, 2, 3, 4, 5}, {{1, 9}, {2, 8}, {3, 7}, {4, 1}, {5, 1}}), 7u);
  EXPECT_EQ(Committed({1, 2, 3, 4, 5}, {{1, 9}, {2, 8}, {4, 1}, {5, 1}}), 1u);
  // Acks from non-voters do not count.
  EXPECT_EQ(Committed({1, 2, 3}, {{1, 9}, {4, 9}, {5, 9}}), 0u);
}

TEST(QuorumTest, CommittedIndexLargeConfig) {
  std::vector<uint64_t> ids;
  std::map<uint64_t, uint64_t> acked;
  for (uint64_t i = 1; i <= 21; ++i) {
    ids.push_back(i);
    acked[i] = i * 10;
  }
  // 11 of 21 must have it: the 11th largest is 110.
  EXPECT_EQ(Committed(ids, acked), 110u);
}

VoteResult Tally(const std::vector<uint64_t>& ids, const std::map<uint64_t, bool>& votes) {
  return MajorityConfig(ids).TallyVotes([&](uint64_t id) -> std::optional<bool> {
    auto it = votes.find(id);
    if (it == votes.end()) return std::nullopt;
    return it->second;
  });
}

TEST(QuorumTest, VoteResult) {
  EXPECT_EQ(Tally({}, {}), VoteResult::kWon);
  EXPECT_EQ(Tally({1}, {}), VoteResult::kPending);
  EXPECT_EQ(Tally({1}, {{1, true}}), VoteResult::kWon);
  EXPECT_EQ(Tally({1}, {{1, false}}), VoteResult::kLost);
  EXPECT_EQ(Tally({1, 2}, {{1, true}}), VoteResult::kPending);
  EXPECT_EQ(Tally({1, 2}, {{1, true}, {2, false}}), VoteResult::kLost);
  EXPECT_EQ(Tally({1, 2, 3}, {{1, true}, {2, true}}), VoteResult::kWon);
  EXPECT_EQ(Tally({1, 2, 3}, {{1, true}, {2, false}}), VoteResult::kPending);
  EXPECT_EQ(Tally({1, 2, 3}, {{2, false}, {3, false}}), VoteResult::kLost);
  EXPECT_EQ(Tally({1, 2, 3, 4}, {{1, true}, {2, true}, {3, false}}), VoteResult::kPending);
  EXPECT_EQ(Tally({1, 2, 3, 4}, {{1, true}, {2, false}, {3, false}}), VoteResult::kLost);
  EXPECT_EQ(Tally({1, 2, 3, 4, 5}, {{1, true}, {2, true}, {3, true}}), VoteResult::kWon);
  // Votes of non-members are ignored.
  EXPECT_EQ(Tally({1, 2, 3}, {{1, true}, {7, true}}), VoteResult::kPending);
}

TEST(QuorumTest, ConfigEditing) {
  MajorityConfig c({3, 1, 2, 2});
  EXPECT_EQ(c.ToString(), "(1 2 3)");
  EXPECT_EQ(c.QuorumSize(), 2u);
  c.Add(4);
  c.Add(4);
  EXPECT_EQ(c.size(), 4u);
  EXPECT_EQ(c.QuorumSize(), 3u);
  c.Remove(1);
  c.Remove(9);
  EXPECT_EQ(c.ToString(), "(2 3 4)");
  EXPECT_TRUE(c.Contains(2));
  EXPECT_FALSE(c.Contains(1));
}

}  // namespace
}  // namespace meridian::raft
