#include "node/raft/storage.h"

#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::E;

// Storage holding the dummy (3, 3) and entries 4/4, 5/5, 6/6.
MemoryStorage Make() {
  MemoryStorage s;
  Snapshot snap;
  snap.metadata.index = 3;
  snap.metadata.term = 3;
  EXPECT_TRUE(s.ApplySnapshot(snap).ok());
  EXPECT_TRUE(s.Append({E(4, 4), E(5, 5), E(6, 6)}).ok());
  return s;
}

TEST(MemoryStorageTest, Term) {
  MemoryStorage s = Make();
  EXPECT_TRUE(IsCompacted(s.Term(2).status()));
  EXPECT_EQ(*s.Term(3), 3u);
  EXPECT_EQ(*s.Term(5), 5u);
  EXPECT_TRUE(IsEntryUnavailable(s.Term(7).status()));
  EXPECT_EQ(s.FirstIndex(), 4u);
  EXPECT_EQ(s.LastIndex(), 6u);
}

TEST(MemoryStorageTest, EntriesWithSizeLimit) {
  MemoryStorage s = Make();
  std::vector<Entry> out;
  EXPECT_TRUE(IsCompacted(s.Entries(3, 5, UINT64_MAX, &out)));
  ASSERT_TRUE(s.Entries(4, 7, UINT64_MAX, &out).ok());
  EXPECT_EQ(out.size(), 3u);
  ASSERT_TRUE(s.Entries(4, 7, 0, &out).ok());
  EXPECT_EQ(out.size(), 1u) << "at least one entry even over the limit";
  ASSERT_TRUE(s.Entries(4, 7, 2 * EntrySize(E(4, 4)), &out).ok());
  EXPECT_EQ(out.size(), 2u);
  ASSERT_TRUE(s.Entries(5, 5, UINT64_MAX, &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST(MemoryStorageTest, AppendOverwritesAndSkipsCompacted) {
  MemoryStorage s = Make();
  ASSERT_TRUE(s.Append({E(2, 3), E(3, 3), E(4, 4), E(5, 5)}).ok());
  EXPECT_EQ(s.LastIndex(), 5u) << "compacted part skipped, suffix after 5 dropped";
  ASSERT_TRUE(s.Append({E(5, 7), E(6, 7)}).ok());
  EXPECT_EQ(*s.Term(5), 7u);
  EXPECT_EQ(s.LastIndex(), 6u);
  ASSERT_TRUE(s.Append({E(7, 7)}).ok());
  EXPECT_EQ(s.LastIndex(), 7u);
  EXPECT_DEATH((void)s.Append({E(9, 7)}), "missing log entry \\[last: 7, append at: 9\\]");
}

TEST(MemoryStorageTest, CompactAndSnapshot) {
  MemoryStorage s = Make();
  EXPECT_TRUE(IsCompacted(s.Compact(3)));
  ASSERT_TRUE(s.Compact(5).ok());
  EXPECT_EQ(s.FirstIndex(), 6u);
  EXPECT_EQ(*s.Term(5), 5u);
  EXPECT_DEATH((void)s.Compact(9), "compact 9 is out of bound lastindex 6");

  ConfState cs{{1, 2, 3}, {}};
  MemoryStorage t = Make();
  ASSERT_TRUE(t.CreateSnapshot(5, cs, "data").ok());
  EXPECT_EQ(t.snapshot().metadata.index, 5u);
  EXPECT_EQ(t.snapshot().metadata.term, 5u);
  EXPECT_EQ(t.snapshot().metadata.conf_state, cs);
  EXPECT_EQ(t.FirstIndex(), 4u) << "creating a snapshot does not compact";
  EXPECT_FALSE(t.CreateSnapshot(5, cs, "again").ok());
  EXPECT_FALSE(t.CreateSnapshot(4, cs, "older").ok());
  EXPECT_EQ(t.GetInitialState().conf_state, cs);
}

TEST(MemoryStorageTest, ApplySnapshot) {
  MemoryStorage s;
  Snapshot snap;
  snap.metadata = {4, 4, ConfState{{1, 2}, {}}};
  ASSERT_TRUE(s.ApplySnapshot(snap).ok());
  EXPECT_EQ(s.FirstIndex(), 5u);
  EXPECT_EQ(s.LastIndex(), 4u);
  snap.metadata.index = 3;
  EXPECT_FALSE(s.ApplySnapshot(snap).ok()) << "older snapshot";
}

}  // namespace
}  // namespace meridian::raft
