// The Ready contract of RawNode: what is handed out when, what may be sent early, and input
// validation.
#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::E;
using testing::NewNode;
using testing::OfType;

TEST(RawNodeTest, CreateValidates) {
  MemoryStorage s;
  Config c = testing::TestConfig(1);
  c.id = 0;
  EXPECT_FALSE(RawNode::Create(c, &s).ok());
  c = testing::TestConfig(1);
  c.election_ticks = 1;
  EXPECT_FALSE(RawNode::Create(c, &s).ok());
  c = testing::TestConfig(1);
  EXPECT_FALSE(RawNode::Create(c, nullptr).ok());
  MemoryStorage bad;
  bad.SetHardState(HardState{1, 0, 5});  // commit beyond the log
  EXPECT_TRUE(absl::IsDataLoss(RawNode::Create(c, &bad).status()));
  c.applied = 3;
  EXPECT_FALSE(RawNode::Create(c, &s).ok()) << "applied beyond commit";
}

TEST(RawNodeTest, BootstrapWritesInitialMembership) {
  MemoryStorage s;
  auto node = RawNode::Create(testing::TestConfig(1), &s);
  ASSERT_TRUE(node.ok());
  RawNode& n = **node;
  ASSERT_TRUE(n.Bootstrap({1, 2, 3}).ok());
  EXPECT_FALSE(n.Bootstrap({1}).ok()) << "only once";
  ASSERT_TRUE(n.HasReady());
  Ready rd = n.GetReady();
  ASSERT_EQ(rd.entries.size(), 3u);
  EXPECT_EQ(rd.entries[0].type, EntryType::kConfChange);
  EXPECT_EQ(rd.committed_entries.size(), 3u);
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(*rd.hard_state, (HardState{1, 0, 3}));
  EXPECT_TRUE(rd.must_sync);
  ASSERT_TRUE(s.Append(rd.entries).ok());
  s.SetHardState(*rd.hard_state);
  for (const Entry& e : rd.committed_entries) {
    auto cs = n.ApplyConfChange(*DecodeConfChange(e.data));
    ASSERT_TRUE(cs.ok());
  }
  n.Advance(rd);
  EXPECT_EQ(n.conf_state(), (ConfState{{1, 2, 3}, {}}));
  EXPECT_FALSE(n.HasReady());
  // A restart from this storage has the same membership and log.
  auto again = RawNode::Create(testing::TestConfig(1), &s);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->raft().log().LastIndex(), 3u);
}

TEST(RawNodeTest, OneReadyAtATime) {
  auto n = NewNode(1, {1, 2, 3});
  ASSERT_TRUE(n->node->Campaign().ok());
  ASSERT_TRUE(n->node->HasReady());
  Ready rd = n->node->GetReady();
  EXPECT_FALSE(n->node->HasReady()) << "outstanding";
  EXPECT_DEATH(n->node->GetReady(), "GetReady called before Advance");
  // Steps between GetReady and Advance show up in the next Ready.
  Message grant;
  grant.type = MessageType::kVoteResp;
  grant.from = 2;
  grant.to = 1;
  grant.term = 1;
  ASSERT_TRUE(n->node->Step(grant).ok());
  ASSERT_TRUE(n->storage->Append(rd.entries).ok());
  n->storage->SetHardState(*rd.hard_state);
  n->node->Advance(rd);
  ASSERT_TRUE(n->node->HasReady());
  Ready next = n->node->GetReady();
  ASSERT_TRUE(next.soft_state.has_value());
  EXPECT_EQ(next.soft_state->role, Role::kLeader);
}

TEST(RawNodeTest, VotesAndAcksWaitForPersistenceLeaderAppendsMayGoEarly) {
  // A candidate's vote requests depend on its new term: not early.
  auto n = NewNode(1, {1, 2, 3});
  ASSERT_TRUE(n->node->Campaign().ok());
  Ready rd = n->node->GetReady();
  EXPECT_TRUE(rd.early_messages.empty());
  EXPECT_EQ(OfType(rd.messages, MessageType::kVote).size(), 2u);
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->vote, 1u);
  EXPECT_TRUE(rd.must_sync);
  n->storage->SetHardState(*rd.hard_state);
  n->node->Advance(rd);
  Message grant;
  grant.type = MessageType::kVoteResp;
  grant.from = 2;
  grant.to = 1;
  grant.term = 1;
  ASSERT_TRUE(n->node->Step(grant).ok());
  rd = n->node->GetReady();
  // The new leader's appends are of the durable term 1: early.
  EXPECT_EQ(OfType(rd.early_messages, MessageType::kApp).size(), 2u);
  EXPECT_TRUE(OfType(rd.messages, MessageType::kApp).empty());
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0], E(1, 1));
  ASSERT_TRUE(n->storage->Append(rd.entries).ok());
  n->node->Advance(rd);

  // A follower's acknowledgement promises durability: not early.
  auto f = NewNode(2, {1, 2, 3});
  Message app;
  app.type = MessageType::kApp;
  app.from = 1;
  app.to = 2;
  app.term = 1;
  app.entries = {E(1, 1, "x")};
  ASSERT_TRUE(f->node->Step(app).ok());
  Ready frd = f->node->GetReady();
  EXPECT_TRUE(frd.early_messages.empty());
  EXPECT_EQ(OfType(frd.messages, MessageType::kAppResp).size(), 1u);
  EXPECT_EQ(frd.entries.size(), 1u);
}

TEST(RawNodeTest, SingleVoterWithLearnerSendsNothingEarlyInANewTerm) {
  // The leader became leader in this very Ready: its term is not durable yet, so even its
  // appends to the learner must wait (a restart could otherwise reuse the term).
  auto n = NewNode(1, {1}, {}, {}, nullptr, {2});
  ASSERT_TRUE(n->node->Campaign().ok());
  Ready rd = n->node->GetReady();
  ASSERT_TRUE(rd.soft_state.has_value());
  EXPECT_EQ(rd.soft_state->role, Role::kLeader);
  EXPECT_TRUE(rd.early_messages.empty());
  EXPECT_EQ(OfType(rd.messages, MessageType::kApp).size(), 1u);
}

TEST(RawNodeTest, LeaderCommitsOnlyDurableEntries) {
  // A single voter commits its entry only once the entry is persisted (Advance).
  auto n = NewNode(1, {1});
  ASSERT_TRUE(n->node->Campaign().ok());
  Ready rd = n->node->GetReady();
  EXPECT_EQ(n->raft().log().committed(), 0u);
  EXPECT_TRUE(rd.committed_entries.empty());
  ASSERT_TRUE(n->storage->Append(rd.entries).ok());
  n->storage->SetHardState(*rd.hard_state);
  n->node->Advance(rd);
  EXPECT_EQ(n->raft().log().committed(), 1u);
  Ready next = n->node->GetReady();
  EXPECT_EQ(next.committed_entries.size(), 1u);
  ASSERT_TRUE(next.hard_state.has_value());
  EXPECT_EQ(next.hard_state->commit, 1u);
  EXPECT_FALSE(next.must_sync) << "a commit-only change needs no fsync";
}

TEST(RawNodeTest, StepRejectsMalformedAndLocalMessages) {
  auto n = NewNode(2, {1, 2, 3});
  Message m;
  m.type = MessageType::kHup;
  m.from = 1;
  m.to = 2;
  m.term = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m)));
  m.type = MessageType::kApp;
  m.to = 3;
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "wrong recipient";
  m.to = 2;
  m.from = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "no sender";
  m.from = 1;
  m.index = 5;
  m.entries = {E(7, 1)};
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "gap in entries";
  m.entries = {E(6, 2)};
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "entry term above message term";
  m.type = MessageType::kSnap;
  m.entries.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "snapshot missing";
  m.type = MessageType::kAppResp;
  m.from = 9;
  EXPECT_TRUE(absl::IsNotFound(n->node->Step(m))) << "response from a stranger";
  m.type = MessageType::kProp;
  m.from = 1;
  m.term = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->Step(m))) << "empty proposal";
  EXPECT_EQ(n->raft().term(), 0u) << "nothing got through";
}

TEST(RawNodeTest, ProposalsWithoutLeaderFail) {
  auto n = NewNode(1, {1, 2, 3});
  EXPECT_TRUE(absl::IsUnavailable(n->node->Propose("x")));
  EXPECT_TRUE(absl::IsUnavailable(n->node->TransferLeader(2)));
  EXPECT_TRUE(absl::IsInvalidArgument(n->node->ProposeConfChange(ConfChange{})));
}

TEST(RawNodeTest, SnapshotReadyHasNoCommittedEntries) {
  auto n = NewNode(2, {1, 2, 3});
  n->Drain();
  Message m;
  m.type = MessageType::kSnap;
  m.from = 1;
  m.to = 2;
  m.term = 3;
  Snapshot snap;
  snap.metadata = {20, 2, ConfState{{1, 2, 3}, {}}};
  snap.data = "image";
  m.snapshot = snap;
  ASSERT_TRUE(n->node->Step(m).ok());
  Ready rd = n->node->GetReady();
  ASSERT_TRUE(rd.snapshot.has_value());
  EXPECT_EQ(rd.snapshot->data, "image");
  EXPECT_TRUE(rd.committed_entries.empty());
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->commit, 20u);
  auto resp = OfType(rd.messages, MessageType::kAppResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_EQ(resp[0].index, 20u);
  ASSERT_TRUE(n->storage->ApplySnapshot(*rd.snapshot).ok());
  n->storage->SetHardState(*rd.hard_state);
  n->node->Advance(rd);
  EXPECT_EQ(n->raft().log().applied(), 20u);
  EXPECT_EQ(n->raft().log().FirstIndex(), 21u);
}

}  // namespace
}  // namespace meridian::raft
