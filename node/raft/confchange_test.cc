#include "node/raft/confchange.h"

#include "gtest/gtest.h"

namespace meridian::raft {
namespace {

TrackerConfig Cfg(std::vector<uint64_t> voters, std::set<uint64_t> learners = {}) {
  TrackerConfig c;
  c.voters = MajorityConfig(std::move(voters));
  c.learners = std::move(learners);
  return c;
}

ConfChange CC(ConfChange::Type t, uint64_t id) { return ConfChange{t, id, ""}; }

TEST(ConfChangeTest, AddPromoteRemove) {
  TrackerConfig c = Cfg({1, 2, 3});
  auto r = ApplyConfChange(c, CC(ConfChange::Type::kAddLearnerNode, 4));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, Cfg({1, 2, 3}, {4}));
  r = ApplyConfChange(*r, CC(ConfChange::Type::kAddNode, 4));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, Cfg({1, 2, 3, 4})) << "promotion moves the learner to the voters";
  r = ApplyConfChange(*r, CC(ConfChange::Type::kRemoveNode, 1));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, Cfg({2, 3, 4}));
  r = ApplyConfChange(*r, CC(ConfChange::Type::kAddNode, 5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, Cfg({2, 3, 4, 5}));
}

TEST(ConfChangeTest, RedundantChangesAreNoOps) {
  TrackerConfig c = Cfg({1, 2, 3}, {4});
  EXPECT_EQ(*ApplyConfChange(c, CC(ConfChange::Type::kAddNode, 2)), c);
  EXPECT_EQ(*ApplyConfChange(c, CC(ConfChange::Type::kAddLearnerNode, 4)), c);
  EXPECT_EQ(*ApplyConfChange(c, CC(ConfChange::Type::kRemoveNode, 9)), c);
  EXPECT_EQ(*ApplyConfChange(c, CC(ConfChange::Type::kRemoveNode, 4)), Cfg({1, 2, 3}));
}

TEST(ConfChangeTest, Refusals) {
  TrackerConfig c = Cfg({1, 2});
  EXPECT_FALSE(ApplyConfChange(c, CC(ConfChange::Type::kAddNode, 0)).ok());
  EXPECT_FALSE(ApplyConfChange(c, CC(ConfChange::Type::kAddLearnerNode, 1)).ok())
      << "demotion is not supported";
  auto one = ApplyConfChange(c, CC(ConfChange::Type::kRemoveNode, 1));
  ASSERT_TRUE(one.ok());
  auto none = ApplyConfChange(*one, CC(ConfChange::Type::kRemoveNode, 2));
  EXPECT_FALSE(none.ok()) << "the last voter cannot be removed";
  // Bootstrapping from nothing works.
  auto first = ApplyConfChange(TrackerConfig{}, CC(ConfChange::Type::kAddNode, 1));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, Cfg({1}));
}

TEST(ConfChangeTest, EncodeDecodeRoundTrip) {
  ConfChange cc{ConfChange::Type::kAddLearnerNode, 0x0102030405060708ull, "peer-url"};
  std::string data = EncodeConfChange(cc);
  auto back = DecodeConfChange(data);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, cc);
}

TEST(ConfChangeTest, DecodeRejectsGarbage) {
  EXPECT_FALSE(DecodeConfChange("").ok());
  EXPECT_FALSE(DecodeConfChange("short").ok());
  std::string data = EncodeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 3, ""});
  std::string bad_version = data;
  bad_version[0] = 9;
  EXPECT_FALSE(DecodeConfChange(bad_version).ok());
  std::string bad_type = data;
  bad_type[1] = 7;
  EXPECT_FALSE(DecodeConfChange(bad_type).ok());
  EXPECT_FALSE(DecodeConfChange(std::string(kMaxConfChangeSizeBytes + 1, '\x01')).ok());
  // Every prefix and every single-byte corruption decodes or fails cleanly.
  for (size_t i = 0; i <= data.size(); ++i) (void)DecodeConfChange(data.substr(0, i));
  for (size_t i = 0; i < data.size(); ++i) {
    for (int b = 0; b < 256; ++b) {
      std::string d = data;
      d[i] = static_cast<char>(b);
      (void)DecodeConfChange(d);
    }
  }
}

TEST(ConfChangeTest, ConfigFromConfState) {
  auto c = ConfigFromConfState(ConfState{{3, 1, 2}, {5}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, Cfg({1, 2, 3}, {5}));
  EXPECT_TRUE(ConfigFromConfState(ConfState{}).ok());
  EXPECT_FALSE(ConfigFromConfState(ConfState{{1, 2}, {2}}).ok()) << "voter and learner";
  EXPECT_FALSE(ConfigFromConfState(ConfState{{}, {2}}).ok()) << "learners without voters";
  EXPECT_FALSE(ConfigFromConfState(ConfState{{0}, {}}).ok());
}

}  // namespace
}  // namespace meridian::raft
