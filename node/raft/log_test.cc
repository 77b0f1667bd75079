#include "node/raft/log.h"

#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::E;

TEST(RaftLogTest, FindConflict) {
  MemoryStorage s;
  RaftLog log(&s, UINT64_MAX);
  log.Append(std::vector<Entry>{E(1, 1), E(2, 2), E(3, 3)});
  struct Case {
    std::vector<Entry> ents;
    uint64_t want;
  };
  const Case cases[] = {
      {{}, 0},
      {{E(1, 1), E(2, 2), E(3, 3)}, 0},
      {{E(2, 2), E(3, 3)}, 0},
      {{E(1, 1), E(2, 2), E(3, 3), E(4, 4), E(5, 4)}, 4},
      {{E(4, 4), E(5, 4)}, 4},
      {{E(1, 4), E(2, 4)}, 1},
      {{E(2, 1), E(3, 4), E(4, 4)}, 2},
      {{E(3, 1), E(4, 2), E(5, 4), E(6, 4)}, 3},
  };
  for (const Case& c : cases) EXPECT_EQ(log.FindConflict(c.ents), c.want);
}

TEST(RaftLogTest, FindConflictByTerm) {
  MemoryStorage s;
  Snapshot snap;
  snap.metadata = {10, 3, {}};
  ASSERT_TRUE(s.ApplySnapshot(snap).ok());
  RaftLog log(&s, UINT64_MAX);
  // terms: 11:3 12:3 13:4 14:4 15:4 16:5 17:5
  log.Append(
      std::vector<Entry>{E(11, 3), E(12, 3), E(13, 4), E(14, 4), E(15, 4), E(16, 5), E(17, 5)});
  struct Case {
    uint64_t index, term, want_index, want_term;
  };
  const Case cases[] = {
      {30, 3, 30, 0},  // beyond the log: unknown
      {17, 6, 17, 5}, {17, 5, 17, 5}, {17, 4, 15, 4},
      {17, 3, 12, 3}, {17, 2, 10, 0},  // reaches the compacted prefix (snapshot term 3 > 2): 10 is
                                       // compacted-ish
      {14, 3, 12, 3}, {12, 1, 10, 0},
  };
  for (const Case& c : cases) {
    auto [idx, term] = log.FindConflictByTerm(c.index, c.term);
    // Below the snapshot index nothing is known; the search stops there.
    if (c.want_index == 10) {
      EXPECT_LE(idx, 10u) << c.index << "/" << c.term;
      continue;
    }
    EXPECT_EQ(idx, c.want_index) << c.index << "/" << c.term;
    EXPECT_EQ(term, c.want_term) << c.index << "/" << c.term;
  }
}

TEST(RaftLogTest, MaybeAppend) {
  const std::vector<Entry> prev = {E(1, 1), E(2, 2), E(3, 3)};
  struct Case {
    uint64_t index, log_term, commit;
    std::vector<Entry> ents;
    std::optional<uint64_t> want_last;
    uint64_t want_commit;
    uint64_t want_last_index;
  };
  const Case cases[] = {
      // Mismatched previous entry: nothing changes.
      {3, 2, 3, {E(4, 4)}, std::nullopt, 1, 3},
      {4, 3, 3, {E(5, 4)}, std::nullopt, 1, 3},
      // Match, nothing new: commit up to the last new index only.
      {3, 3, 3, {}, 3, 3, 3},
      {3, 3, 4, {}, 3, 3, 3},
      {3, 3, 2, {}, 3, 2, 3},
      {3, 3, 0, {}, 3, 1, 3},
      {0, 0, 3, {}, 0, 1, 3},
      // Match, append.
      {3, 3, 4, {E(4, 4)}, 4, 4, 4},
      {3, 3, 5, {E(4, 4), E(5, 4)}, 5, 5, 5},
      // Conflict: truncate from the conflict on.
      {2, 2, 3, {E(3, 4)}, 3, 3, 3},
      {1, 1, 4, {E(2, 4), E(3, 4)}, 3, 3, 3},
      // Already have them.
      {1, 1, 3, {E(2, 2)}, 2, 2, 3},
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    MemoryStorage s;
    RaftLog log(&s, UINT64_MAX);
    log.Append(prev);
    log.CommitTo(1);
    auto last = log.MaybeAppend(c.index, c.log_term, c.commit, c.ents);
    EXPECT_EQ(last, c.want_last) << "case " << i;
    EXPECT_EQ(log.committed(), c.want_commit) << "case " << i;
    EXPECT_EQ(log.LastIndex(), c.want_last_index) << "case " << i;
    if (c.want_last && !c.ents.empty()) {
      EXPECT_EQ(log.AllEntries(c.index + 1, *c.want_last + 1), c.ents) << "case " << i;
    }
  }
}

TEST(RaftLogDeathTest, ConflictWithCommittedAborts) {
  MemoryStorage s;
  RaftLog log(&s, UINT64_MAX);
  log.Append(std::vector<Entry>{E(1, 1), E(2, 2), E(3, 3)});
  log.CommitTo(3);
  std::vector<Entry> ents = {E(3, 4)};
  EXPECT_DEATH(log.MaybeAppend(2, 2, 3, ents),
               "entry 3 conflicts with committed entry \\[committed\\(3\\)\\]");
}

TEST(RaftLogDeathTest, CommitBeyondLastAborts) {
  MemoryStorage s;
  RaftLog log(&s, UINT64_MAX);
  log.Append(std::vector<Entry>{E(1, 1), E(2, 2)});
  EXPECT_DEATH(log.CommitTo(12), "tocommit\\(12\\) is out of range \\[lastIndex\\(2\\)\\]");
}

TEST(RaftLogTest, UnstableAndStable) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({E(1, 1), E(2, 1)}).ok());
  RaftLog log(&s, UINT64_MAX);
  EXPECT_EQ(log.StableLastIndex(), 2u);
  log.Append(std::vector<Entry>{E(3, 2), E(4, 2)});
  EXPECT_EQ(log.UnstableEntries().size(), 2u);
  EXPECT_EQ(log.StableLastIndex(), 2u);
  // The application persisted them.
  ASSERT_TRUE(s.Append({E(3, 2), E(4, 2)}).ok());
  log.StableTo(4, 1);  // wrong term: nothing becomes stable
  EXPECT_EQ(log.UnstableEntries().size(), 2u);
  log.StableTo(3, 2);
  EXPECT_EQ(log.UnstableEntries().size(), 1u);
  EXPECT_EQ(log.StableLastIndex(), 3u);
  log.StableTo(4, 2);
  EXPECT_TRUE(log.UnstableEntries().empty());
  EXPECT_EQ(log.LastIndex(), 4u);
  // A conflicting append truncates into the stable part.
  log.Append(std::vector<Entry>{E(3, 5)});
  EXPECT_EQ(log.LastIndex(), 3u);
  EXPECT_EQ(log.StableLastIndex(), 2u);
  EXPECT_EQ(*log.Term(3), 5u);
  EXPECT_EQ(*log.Term(2), 1u);
}

TEST(RaftLogTest, NextCommittedEntriesRespectsSizeAndApplying) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({E(1, 1, "a"), E(2, 1, "b"), E(3, 1, "c")}).ok());
  RaftLog log(&s, 2 * EntrySize(E(1, 1, "a")));
  log.Append(std::vector<Entry>{E(4, 1, "d")});
  log.CommitTo(4);
  auto first = log.NextCommittedEntries();
  ASSERT_EQ(first.size(), 2u) << "size limited";
  log.ApplyingTo(2);
  auto second = log.NextCommittedEntries();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].index, 3u);
  EXPECT_EQ(second[1].index, 4u) << "includes unstable committed entries";
  log.ApplyingTo(4);
  EXPECT_FALSE(log.HasNextCommittedEntries());
  log.AppliedTo(4);
  EXPECT_EQ(log.applied(), 4u);
}

TEST(RaftLogTest, RestoreSnapshot) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({E(1, 1), E(2, 1)}).ok());
  RaftLog log(&s, UINT64_MAX);
  Snapshot snap;
  snap.metadata = {10, 4, ConfState{{1}, {}}};
  log.Restore(snap);
  EXPECT_EQ(log.committed(), 10u);
  EXPECT_EQ(log.FirstIndex(), 11u);
  EXPECT_EQ(log.LastIndex(), 10u);
  EXPECT_EQ(*log.Term(10), 4u);
  EXPECT_FALSE(log.HasNextCommittedEntries()) << "the snapshot is applied first";
  EXPECT_EQ(log.StableLastIndex(), 0u);
  log.StableSnapTo(10);
  EXPECT_FALSE(log.UnstableSnapshot().has_value());
}

TEST(RaftLogTest, IsUpToDate) {
  MemoryStorage s;
  RaftLog log(&s, UINT64_MAX);
  log.Append(std::vector<Entry>{E(1, 1), E(2, 2), E(3, 3)});
  EXPECT_TRUE(log.IsUpToDate(2, 4)) << "higher last term wins";
  EXPECT_FALSE(log.IsUpToDate(5, 2)) << "lower last term loses regardless of length";
  EXPECT_TRUE(log.IsUpToDate(3, 3));
  EXPECT_TRUE(log.IsUpToDate(4, 3));
  EXPECT_FALSE(log.IsUpToDate(2, 3)) << "same term, shorter";
}

TEST(RaftLogDeathTest, SliceOutOfBoundsAborts) {
  MemoryStorage s;
  RaftLog log(&s, UINT64_MAX);
  log.Append(std::vector<Entry>{E(1, 1)});
  std::vector<Entry> out;
  EXPECT_DEATH((void)log.Slice(1, 5, UINT64_MAX, &out), "slice\\[1,5\\) out of bound \\[1,1\\]");
}

}  // namespace
}  // namespace meridian::raft
