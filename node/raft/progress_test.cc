#include "node/raft/progress.h"

#include "gtest/gtest.h"
#include "node/raft/tracker.h"

namespace meridian::raft {
namespace {

TEST(InflightsTest, AddAndFree) {
  Inflights in(10, 0);
  for (uint64_t i = 0; i < 5; ++i) in.Add(i, 1);
  EXPECT_EQ(in.count(), 5u);
  EXPECT_FALSE(in.Full());
  for (uint64_t i = 5; i < 10; ++i) in.Add(i, 1);
  EXPECT_TRUE(in.Full());
  in.FreeLE(4);
  EXPECT_EQ(in.count(), 5u);
  EXPECT_FALSE(in.Full());
  // Wrap around the ring.
  for (uint64_t i = 10; i < 15; ++i) in.Add(i, 1);
  EXPECT_TRUE(in.Full());
  in.FreeLE(8);
  EXPECT_EQ(in.count(), 6u);
  in.FreeLE(100);
  EXPECT_EQ(in.count(), 0u);
  EXPECT_EQ(in.bytes(), 0u);
}

TEST(InflightsTest, FreeFirstOne) {
  Inflights in(10, 0);
  for (uint64_t i = 0; i < 10; ++i) in.Add(i, 1);
  in.FreeFirstOne();
  EXPECT_EQ(in.count(), 9u);
  in.FreeLE(3);
  EXPECT_EQ(in.count(), 6u);
}

TEST(InflightsTest, ByteLimit) {
  Inflights in(10, 100);
  in.Add(1, 60);
  EXPECT_FALSE(in.Full());
  in.Add(2, 40);
  EXPECT_TRUE(in.Full()) << "100 bytes in flight reach the limit";
  in.FreeLE(1);
  EXPECT_FALSE(in.Full());
  EXPECT_EQ(in.bytes(), 40u);
}

TEST(InflightsDeathTest, AddToFullAborts) {
  Inflights in(2, 0);
  in.Add(1, 0);
  in.Add(2, 0);
  EXPECT_DEATH(in.Add(3, 0), "full inflights");
}

TEST(InflightsDeathTest, NonIncreasingIndexAborts) {
  Inflights in(4, 0);
  in.Add(5, 0);
  EXPECT_DEATH(in.Add(5, 0), "inflights index 5 not above last 5");
}

TEST(ProgressTest, MaybeUpdate) {
  Progress p(10, 0);
  p.match = 3;
  p.next = 5;
  EXPECT_FALSE(p.MaybeUpdate(2));
  EXPECT_EQ(p.next, 5u);
  EXPECT_TRUE(p.MaybeUpdate(4));
  EXPECT_EQ(p.match, 4u);
  EXPECT_EQ(p.next, 5u);
  EXPECT_TRUE(p.MaybeUpdate(7));
  EXPECT_EQ(p.next, 8u);
}

TEST(ProgressTest, MaybeDecrTo) {
  struct Case {
    ProgressState state;
    uint64_t match, next, rejected, hint;
    bool want;
    uint64_t want_next;
  };
  const Case cases[] = {
      // Replicate: stale rejections (at or below match) are ignored, otherwise next = match+1.
      {ProgressState::kReplicate, 5, 10, 5, 5, false, 10},
      {ProgressState::kReplicate, 5, 10, 4, 4, false, 10},
      {ProgressState::kReplicate, 5, 10, 9, 9, true, 6},
      // Probe: only a rejection of next-1 counts.
      {ProgressState::kProbe, 0, 0, 0, 0, false, 0},
      {ProgressState::kProbe, 0, 10, 5, 5, false, 10},
      {ProgressState::kProbe, 0, 10, 9, 9, true, 9},
      {ProgressState::kProbe, 0, 2, 1, 1, true, 1},
      {ProgressState::kProbe, 0, 1, 0, 0, true, 1},
      // The hint lets the leader skip: next = hint+1.
      {ProgressState::kProbe, 0, 10, 9, 2, true, 3},
      {ProgressState::kProbe, 0, 10, 9, 0, true, 1},
      // Never below match+1.
      {ProgressState::kProbe, 4, 10, 9, 2, true, 5},
  };
  for (const Case& c : cases) {
    Progress p(10, 0);
    p.state = c.state;
    p.match = c.match;
    p.next = c.next;
    p.probe_sent = true;
    EXPECT_EQ(p.MaybeDecrTo(c.rejected, c.hint), c.want)
        << ProgressStateName(c.state) << " rejected " << c.rejected;
    EXPECT_EQ(p.next, c.want_next) << ProgressStateName(c.state) << " rejected " << c.rejected;
    if (c.want && c.state == ProgressState::kProbe) {
      EXPECT_FALSE(p.probe_sent);
    }
  }
}

TEST(ProgressTest, IsPaused) {
  Progress p(2, 0);
  p.state = ProgressState::kProbe;
  EXPECT_FALSE(p.IsPaused());
  p.SentEntries(1, 10, 1);
  EXPECT_TRUE(p.IsPaused()) << "probe waits for an answer";
  p.BecomeReplicate();
  EXPECT_FALSE(p.IsPaused());
  p.SentEntries(1, 10, 1);
  p.SentEntries(1, 10, 2);
  EXPECT_TRUE(p.IsPaused()) << "inflight window full";
  p.inflights.FreeLE(1);
  EXPECT_FALSE(p.IsPaused());
  p.BecomeSnapshot(10);
  EXPECT_TRUE(p.IsPaused());
}

TEST(ProgressTest, StateTransitions) {
  Progress p(10, 0);
  p.match = 4;
  p.next = 9;
  p.BecomeReplicate();
  EXPECT_EQ(p.next, 5u);
  p.SentEntries(3, 30, 7);
  EXPECT_EQ(p.next, 8u);
  EXPECT_EQ(p.inflights.count(), 1u);
  p.BecomeSnapshot(20);
  EXPECT_EQ(p.pending_snapshot, 20u);
  EXPECT_EQ(p.inflights.count(), 0u);
  p.BecomeProbe();
  EXPECT_EQ(p.next, 21u) << "probing resumes after the snapshot";
  EXPECT_EQ(p.pending_snapshot, 0u);
  p.BecomeProbe();
  EXPECT_EQ(p.next, 5u);
}

TEST(ProgressTrackerTest, CommittedAndQuorumActive) {
  ProgressTracker t(4, 0);
  TrackerConfig cfg;
  cfg.voters = MajorityConfig({1, 2, 3});
  cfg.learners = {4};
  t.SetConfig(cfg, 11);
  ASSERT_EQ(t.progress().size(), 4u);
  EXPECT_TRUE(t.Get(4)->is_learner);
  EXPECT_EQ(t.Get(2)->next, 11u);
  t.Get(1)->match = 10;
  t.Get(2)->match = 8;
  t.Get(4)->match = 10;  // learners do not count
  EXPECT_EQ(t.Committed(), 8u);
  for (auto& [id, pr] : t.progress()) pr.recent_active = false;
  t.Get(1)->recent_active = true;
  t.Get(4)->recent_active = true;
  EXPECT_FALSE(t.QuorumActive());
  t.Get(3)->recent_active = true;
  EXPECT_TRUE(t.QuorumActive());
  EXPECT_EQ(t.GetConfState(), (ConfState{{1, 2, 3}, {4}}));
}

TEST(ProgressTrackerTest, Votes) {
  ProgressTracker t(4, 0);
  TrackerConfig cfg;
  cfg.voters = MajorityConfig({1, 2, 3, 4, 5});
  t.SetConfig(cfg, 1);
  t.RecordVote(1, true);
  t.RecordVote(2, false);
  t.RecordVote(2, true);  // only the first answer counts
  auto tally = t.TallyVotes();
  EXPECT_EQ(tally.granted, 1u);
  EXPECT_EQ(tally.rejected, 1u);
  EXPECT_EQ(tally.result, VoteResult::kPending);
  t.RecordVote(3, false);
  t.RecordVote(4, false);
  EXPECT_EQ(t.TallyVotes().result, VoteResult::kLost);
}

}  // namespace
}  // namespace meridian::raft
