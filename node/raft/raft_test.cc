// Scenario tests of the features beyond the basic algorithm: PreVote, CheckQuorum and the
// leader lease, leader transfer, snapshots, ReadIndex (§6.4 of the dissertation, and §8 of the
// paper for client interaction), flow control, and membership changes (§6).
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::E;
using testing::Network;
using testing::NewNode;
using testing::OfType;
using testing::TestNode;

Message Heartbeat(uint64_t from, uint64_t to, uint64_t term) {
  Message m;
  m.type = MessageType::kHeartbeat;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

void PreVoteAndCheckQuorum(Config& c) {
  c.pre_vote = true;
  c.check_quorum = true;
}

// PreVote (dissertation §9.6): a node that cannot win does not disturb the cluster's term.
TEST(PreVoteTest, PartitionedNodeDoesNotBumpTerm) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  const uint64_t term = net[1].raft().term();
  net.Isolate(3);
  for (int i = 0; i < 100; ++i) net.Tick(3);
  EXPECT_EQ(net[3].raft().term(), term) << "pre-votes never change the term";
  EXPECT_EQ(net[3].raft().role(), Role::kPreCandidate);
  // Rejoining does not depose the leader.
  net.Recover();
  net.TickAll(3);
  EXPECT_EQ(net[1].raft().role(), Role::kLeader);
  EXPECT_EQ(net[1].raft().term(), term);
  EXPECT_EQ(net[3].raft().lead(), 1u);
}

TEST(PreVoteTest, WinsThenRunsRealElection) {
  Network net(3, PreVoteAndCheckQuorum);
  ASSERT_TRUE(net[1].node->Campaign().ok());
  auto msgs = net[1].Drain();
  EXPECT_EQ(net[1].raft().role(), Role::kPreCandidate);
  EXPECT_EQ(net[1].raft().term(), 0u);
  auto pre = OfType(msgs, MessageType::kPreVote);
  ASSERT_EQ(pre.size(), 2u);
  EXPECT_EQ(pre[0].term, 1u) << "asks about the next term";
  net.Send(msgs);
  EXPECT_EQ(net[1].raft().role(), Role::kLeader);
  EXPECT_EQ(net[1].raft().term(), 1u);
}

TEST(PreVoteTest, LessUpToDateCandidateIsRefused) {
  auto n = NewNode(2, {1, 2, 3}, {E(1, 1), E(2, 2)}, HardState{2, 0, 0}, PreVoteAndCheckQuorum);
  n->Drain();
  Message pv;
  pv.type = MessageType::kPreVote;
  pv.from = 1;
  pv.to = 2;
  pv.term = 3;
  pv.index = 1;
  pv.log_term = 1;
  ASSERT_TRUE(n->node->Step(pv).ok());
  auto resp = OfType(n->Drain(), MessageType::kPreVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_TRUE(resp[0].reject);
  EXPECT_EQ(n->raft().term(), 2u);
  EXPECT_EQ(n->raft().vote(), kNone) << "pre-votes are not recorded";
}

// CheckQuorum: a leader that stops hearing from a quorum steps down after an election timeout.
TEST(CheckQuorumTest, LeaderStepsDownWithoutQuorum) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  net.Isolate(1);
  for (int i = 0; i < 10; ++i) net.Tick(1);
  EXPECT_EQ(net[1].raft().role(), Role::kLeader) << "one timeout: nobody was marked inactive yet";
  for (int i = 0; i < 10; ++i) net.Tick(1);
  EXPECT_EQ(net[1].raft().role(), Role::kFollower);
}

TEST(CheckQuorumTest, LeaderStaysWithQuorum) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(3);
  net.TickAll(50);
  EXPECT_EQ(net[1].raft().role(), Role::kLeader);
}

// Leader lease (dissertation §4.2.3): a follower that heard from its leader within the election
// timeout ignores vote requests, so a removed or partitioned node cannot depose a live leader.
TEST(CheckQuorumTest, FollowerIgnoresVotesInLease) {
  auto n = NewNode(2, {1, 2, 3}, {}, {}, PreVoteAndCheckQuorum);
  n->Drain();
  ASSERT_TRUE(n->node->Step(Heartbeat(1, 2, 1)).ok());
  n->Drain();
  ASSERT_EQ(n->raft().lead(), 1u);
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = 3;
  vote.to = 2;
  vote.term = 2;
  vote.index = 10;
  vote.log_term = 5;
  ASSERT_TRUE(n->node->Step(vote).ok());
  EXPECT_TRUE(n->Drain().empty()) << "ignored, not even rejected";
  EXPECT_EQ(n->raft().term(), 1u);
  // A campaign forced by leader transfer is not subject to the lease.
  vote.leader_transfer = true;
  ASSERT_TRUE(n->node->Step(vote).ok());
  auto resp = OfType(n->Drain(), MessageType::kVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(n->raft().term(), 2u);
  // After the lease expires, votes are considered again.
  auto m = NewNode(2, {1, 2, 3}, {}, {}, PreVoteAndCheckQuorum);
  ASSERT_TRUE(m->node->Step(Heartbeat(1, 2, 1)).ok());
  for (int i = 0; i < 10; ++i) m->node->Tick();
  m->Drain();
  vote.leader_transfer = false;
  ASSERT_TRUE(m->node->Step(vote).ok());
  EXPECT_EQ(OfType(m->Drain(), MessageType::kVoteResp).size(), 1u);
}

// A node whose term ran ahead during a partition gets the stale leader to step down (or itself
// to rejoin) instead of being stuck forever.
TEST(CheckQuorumTest, StaleLeaderLearnsHigherTerm) {
  Network net(3, [](Config& c) { c.check_quorum = true; });
  net.Campaign(1);
  net.Isolate(3);
  for (int i = 0; i < 50; ++i) net.Tick(3);  // node 3 campaigns repeatedly: term grows
  const uint64_t high = net[3].raft().term();
  ASSERT_GT(high, net[1].raft().term());
  net.Recover();
  net.TickAll(40);
  // Someone leads at a term >= node 3's, and everybody agrees.
  uint64_t leader = 0;
  for (uint64_t id : {1u, 2u, 3u}) {
    if (net[id].raft().role() == Role::kLeader) leader = id;
  }
  ASSERT_NE(leader, 0u);
  EXPECT_GE(net[leader].raft().term(), high);
  for (uint64_t id : {1u, 2u, 3u}) EXPECT_EQ(net[id].raft().lead(), leader);
}

// Leader transfer (dissertation §3.10).
TEST(LeaderTransferTest, ToUpToDateFollower) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  ASSERT_TRUE(net[1].node->TransferLeader(2).ok());
  auto msgs = net[1].Drain();
  ASSERT_EQ(OfType(msgs, MessageType::kTimeoutNow).size(), 1u) << "2 is caught up";
  net.Send(msgs);
  EXPECT_EQ(net[2].raft().role(), Role::kLeader);
  EXPECT_EQ(net[1].raft().role(), Role::kFollower);
  EXPECT_EQ(net[1].raft().lead(), 2u);
}

TEST(LeaderTransferTest, ToLaggingFollowerCatchesItUpFirst) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(3);
  for (int i = 0; i < 3; ++i) net.Propose(1, "x");
  net.Recover();
  ASSERT_LT(net[3].raft().log().LastIndex(), net[1].raft().log().LastIndex());
  ASSERT_TRUE(net[1].node->TransferLeader(3).ok());
  auto msgs = net[1].Drain();
  EXPECT_TRUE(OfType(msgs, MessageType::kTimeoutNow).empty());
  EXPECT_FALSE(OfType(msgs, MessageType::kApp).empty());
  // Proposals are refused while the transfer runs.
  EXPECT_TRUE(absl::IsUnavailable(net[1].node->Propose("refused")));
  net.Send(msgs);
  EXPECT_EQ(net[3].raft().role(), Role::kLeader);
  EXPECT_EQ(net[3].raft().log().LastIndex(), net[1].raft().log().LastIndex());
}

TEST(LeaderTransferTest, AbortedAfterElectionTimeout) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(3);
  ASSERT_TRUE(net[1].node->TransferLeader(3).ok());
  net.Send(net[1].Drain());
  EXPECT_EQ(net[1].raft().lead_transferee(), 3u);
  for (int i = 0; i < 9; ++i) net.Tick(1);
  EXPECT_EQ(net[1].raft().lead_transferee(), 3u);
  net.Tick(1);
  EXPECT_EQ(net[1].raft().lead_transferee(), kNone);
  EXPECT_EQ(net[1].raft().role(), Role::kLeader);
  EXPECT_TRUE(net[1].node->Propose("accepted again").ok());
}

TEST(LeaderTransferTest, ToLearnerOrSelfIgnored) {
  auto n = NewNode(1, {1, 2}, {}, {}, PreVoteAndCheckQuorum, {3});
  ASSERT_TRUE(n->node->Campaign().ok());
  n->Drain();
  Message grant;
  grant.type = MessageType::kPreVoteResp;
  grant.from = 2;
  grant.to = 1;
  grant.term = 1;
  ASSERT_TRUE(n->node->Step(grant).ok());
  n->Drain();
  grant.type = MessageType::kVoteResp;
  ASSERT_TRUE(n->node->Step(grant).ok());
  ASSERT_EQ(n->raft().role(), Role::kLeader);
  ASSERT_TRUE(n->node->TransferLeader(3).ok());
  EXPECT_EQ(n->raft().lead_transferee(), kNone);
  ASSERT_TRUE(n->node->TransferLeader(1).ok());
  EXPECT_EQ(n->raft().lead_transferee(), kNone);
}

// Snapshots (§7): a follower that needs compacted entries gets the snapshot, then the rest of
// the log, and replication continues in probe then replicate mode.
TEST(SnapshotTest, FollowerBehindCompactionGetsSnapshot) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(3);
  for (int i = 0; i < 10; ++i) net.Propose(1, absl::StrCat("e", i));
  TestNode& leader = net[1];
  const uint64_t applied = leader.raft().log().applied();
  ASSERT_GE(applied, 11u);
  ASSERT_TRUE(
      leader.storage->CreateSnapshot(applied, leader.conf, absl::StrCat("state@", applied)).ok());
  ASSERT_TRUE(leader.storage->Compact(applied).ok());
  net.Recover();
  net.TickAll(1);
  int snaps = 0;
  for (const Message& m : net.delivered) snaps += m.type == MessageType::kSnap;
  EXPECT_EQ(snaps, 1);
  net.TickAll(2);
  EXPECT_EQ(net[3].storage->snapshot().metadata.index, applied);
  EXPECT_EQ(net[3].storage->snapshot().data, absl::StrCat("state@", applied));
  net.Propose(1, "after");
  EXPECT_EQ(net[3].raft().log().committed(), leader.raft().log().committed());
  EXPECT_EQ(net[3].applied.back().data, "after");
  EXPECT_EQ(leader.raft().tracker().Get(3)->state, ProgressState::kReplicate);
}

TEST(SnapshotTest, FailedSnapshotIsRetriedAfterHeartbeat) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(3);
  for (int i = 0; i < 3; ++i) net.Propose(1, "e");
  TestNode& leader = net[1];
  const uint64_t applied = leader.raft().log().applied();
  ASSERT_TRUE(leader.storage->CreateSnapshot(applied, leader.conf, "s").ok());
  ASSERT_TRUE(leader.storage->Compact(applied).ok());
  net.Recover();
  net.Ignore(MessageType::kSnap);
  net.TickAll(1);
  ASSERT_EQ(leader.raft().tracker().Get(3)->state, ProgressState::kSnapshot);
  leader.node->ReportSnapshot(3, false);
  EXPECT_EQ(leader.raft().tracker().Get(3)->state, ProgressState::kProbe);
  EXPECT_TRUE(leader.raft().tracker().Get(3)->probe_sent) << "waits for a heartbeat response";
  net.Recover();
  net.TickAll(3);
  EXPECT_EQ(net[3].storage->snapshot().metadata.index, applied);
}

TEST(SnapshotTest, SnapshotExcludingFollowerIsNotSent) {
  auto n = NewNode(1, {1}, {}, {}, PreVoteAndCheckQuorum);
  ASSERT_TRUE(n->node->Campaign().ok());
  n->Drain();
  ASSERT_TRUE(n->node->Propose("a").ok());
  n->Drain();
  ASSERT_TRUE(n->storage->CreateSnapshot(2, ConfState{{1}, {}}, "old").ok());
  ASSERT_TRUE(n->storage->Compact(2).ok());
  ASSERT_TRUE(
      n->node->ProposeConfChange(ConfChange{ConfChange::Type::kAddLearnerNode, 2, ""}).ok());
  auto msgs = n->Drain();
  msgs = n->Drain();
  ASSERT_TRUE(n->raft().tracker().Get(2) != nullptr);
  // The learner must probe back to index 1; the only snapshot predates it.
  Message rej;
  rej.type = MessageType::kAppResp;
  rej.from = 2;
  rej.to = 1;
  rej.term = 1;
  rej.reject = true;
  rej.index = n->raft().tracker().Get(2)->next - 1;
  ASSERT_TRUE(n->node->Step(rej).ok());
  EXPECT_TRUE(OfType(n->Drain(), MessageType::kSnap).empty());
  ASSERT_TRUE(n->storage->CreateSnapshot(n->raft().log().applied(), n->conf, "new").ok());
  Message hb;
  hb.type = MessageType::kHeartbeatResp;
  hb.from = 2;
  hb.to = 1;
  hb.term = 1;
  ASSERT_TRUE(n->node->Step(hb).ok());
  EXPECT_EQ(OfType(n->Drain(), MessageType::kSnap).size(), 1u);
}

// ReadIndex (dissertation §6.4; paper §8 "read-only operations can be handled without writing
// anything into the log" once the leader confirms it is still leader).
TEST(ReadIndexTest, LeaderConfirmsWithOneHeartbeatRoundPerBatch) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Propose(1, "x");
  ASSERT_TRUE(net[1].node->ReadIndex("a").ok());
  ASSERT_TRUE(net[1].node->ReadIndex("b").ok());
  auto msgs = net[1].Drain();
  auto beats = OfType(msgs, MessageType::kHeartbeat);
  ASSERT_EQ(beats.size(), 2u) << "one round for both reads";
  EXPECT_EQ(beats[0].read_round, 1u);
  EXPECT_TRUE(net[1].read_states.empty()) << "not before a quorum confirmed";
  net.Send(msgs);
  ASSERT_EQ(net[1].read_states.size(), 2u);
  EXPECT_EQ(net[1].read_states[0], (ReadState{net[1].raft().log().committed(), "a"}));
  EXPECT_EQ(net[1].read_states[1].context, "b");
}

TEST(ReadIndexTest, RequestsDuringARoundJoinTheNextOne) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  ASSERT_TRUE(net[1].node->ReadIndex("a").ok());
  auto round1 = net[1].Drain();
  ASSERT_TRUE(net[1].node->ReadIndex("b").ok());
  ASSERT_TRUE(net[1].node->ReadIndex("c").ok());
  EXPECT_TRUE(OfType(net[1].Drain(), MessageType::kHeartbeat).empty())
      << "a round is in flight; b and c wait for the next";
  net.Send(round1);  // confirms a, then starts round 2 for b and c
  ASSERT_EQ(net[1].read_states.size(), 3u);
  EXPECT_EQ(net[1].read_states[0].context, "a");
  EXPECT_EQ(net[1].read_states[2].context, "c");
  int rounds = 0;
  for (const Message& m : net.delivered) {
    if (m.type == MessageType::kHeartbeat && m.to == 2) ++rounds;
  }
  EXPECT_EQ(rounds, 2);
}

TEST(ReadIndexTest, NoReadWithoutQuorum) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Isolate(1);
  ASSERT_TRUE(net[1].node->ReadIndex("a").ok());
  net.Send(net[1].Drain());
  for (int i = 0; i < 5; ++i) net.Tick(1);
  EXPECT_TRUE(net[1].read_states.empty());
}

TEST(ReadIndexTest, DeferredUntilLeaderCommitsInItsTerm) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Ignore(MessageType::kAppResp);  // the leader cannot commit its empty entry yet
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  ASSERT_EQ(net[1].raft().log().committed(), 0u);
  ASSERT_TRUE(net[1].node->ReadIndex("early").ok());
  net.Send(net[1].Drain());
  net.Tick(1);
  EXPECT_TRUE(net[1].read_states.empty()) << "commit index not known yet";
  net.Recover();
  net.TickAll(2);
  ASSERT_EQ(net[1].read_states.size(), 1u);
  EXPECT_GE(net[1].read_states[0].index, 1u) << "at least the leader's first entry";
}

TEST(ReadIndexTest, FollowerForwardsToLeader) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  net.Propose(1, "x");
  ASSERT_TRUE(net[2].node->ReadIndex("f").ok());
  net.Send(net[2].Drain());
  ASSERT_EQ(net[2].read_states.size(), 1u);
  EXPECT_EQ(net[2].read_states[0], (ReadState{net[1].raft().log().committed(), "f"}));
  // Without a leader the request fails at once.
  auto lonely = NewNode(1, {1, 2, 3});
  EXPECT_TRUE(absl::IsUnavailable(lonely->node->ReadIndex("x")));
}

TEST(ReadIndexTest, PendingReadsAreBounded) {
  Network net(3, [](Config& c) {
    PreVoteAndCheckQuorum(c);
    c.max_pending_read_requests = 2;
  });
  net.Campaign(1);
  net.Isolate(1);
  EXPECT_TRUE(net[1].node->ReadIndex("a").ok());
  EXPECT_TRUE(net[1].node->ReadIndex("b").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(net[1].node->ReadIndex("c")));
}

// Flow control: in replicate mode at most max_inflight_msgs appends are unacknowledged; in
// probe mode, one.
TEST(FlowControlTest, InflightWindowBoundsAppends) {
  auto n = NewNode(1, {1, 2}, {}, {}, [](Config& c) {
    c.max_inflight_msgs = 3;
    c.max_size_per_msg_bytes = 1;  // one entry per append
  });
  ASSERT_TRUE(n->node->Campaign().ok());
  n->Drain();
  Message grant;
  grant.type = MessageType::kVoteResp;
  grant.from = 2;
  grant.to = 1;
  grant.term = 1;
  ASSERT_TRUE(n->node->Step(grant).ok());
  n->Drain();
  // Probe: the first append is outstanding, further proposals send nothing.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(n->node->Propose("p").ok());
  EXPECT_TRUE(OfType(n->Drain(), MessageType::kApp).empty());
  Message ack;
  ack.type = MessageType::kAppResp;
  ack.from = 2;
  ack.to = 1;
  ack.term = 1;
  ack.index = 1;
  ASSERT_TRUE(n->node->Step(ack).ok());
  auto apps = OfType(n->Drain(), MessageType::kApp);
  EXPECT_EQ(apps.size(), 3u) << "replicate mode: the window (3) is the limit";
  EXPECT_EQ(n->raft().tracker().Get(2)->state, ProgressState::kReplicate);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(n->node->Propose("q").ok());
  EXPECT_TRUE(OfType(n->Drain(), MessageType::kApp).empty()) << "window full";
  ack.index = 3;
  ASSERT_TRUE(n->node->Step(ack).ok());
  EXPECT_EQ(OfType(n->Drain(), MessageType::kApp).size(), 2u) << "two slots freed";
}

// Fast log backtracking: one round trip per term instead of per entry.
TEST(FlowControlTest, RejectionHintSkipsDivergentTail) {
  // Leader: 1/1 then terms 3,3,3,5,5,5 up to index 7 (term 6 now). Follower: 1/1, 2/2 x6.
  std::vector<Entry> leader_log = {E(1, 1), E(2, 3), E(3, 3), E(4, 3), E(5, 5), E(6, 5), E(7, 5)};
  std::vector<Entry> follower_log = {E(1, 1), E(2, 2), E(3, 2), E(4, 2), E(5, 2),
                                     E(6, 2), E(7, 2), E(8, 2), E(9, 2)};
  Network net;
  net.Add(NewNode(1, {1, 2, 3}, leader_log, HardState{5, 0, 1}));
  net.Add(NewNode(2, {1, 2, 3}, follower_log, HardState{5, 0, 1}));
  net.Add(NewNode(3, {1, 2, 3}, leader_log, HardState{5, 0, 1}));
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  int rejections = 0;
  for (const Message& m : net.delivered) {
    rejections += m.type == MessageType::kAppResp && m.from == 2 && m.reject;
  }
  EXPECT_LE(rejections, 2);
  const auto& fl = net[2].raft().log();
  const auto& ll = net[1].raft().log();
  EXPECT_EQ(fl.AllEntries(1, fl.LastIndex() + 1), ll.AllEntries(1, ll.LastIndex() + 1));
}

TEST(FlowControlTest, UncommittedTailIsBounded) {
  auto n =
      NewNode(1, {1, 2, 3}, {}, {}, [](Config& c) { c.max_uncommitted_entries_size_bytes = 10; });
  ASSERT_TRUE(n->node->Campaign().ok());
  Message grant;
  grant.type = MessageType::kVoteResp;
  grant.from = 2;
  grant.to = 1;
  grant.term = 1;
  ASSERT_TRUE(n->node->Step(grant).ok());
  EXPECT_TRUE(n->node->Propose(std::string(8, 'a')).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(n->node->Propose(std::string(8, 'b'))));
  auto lone =
      NewNode(1, {1, 2, 3}, {}, {}, [](Config& c) { c.max_uncommitted_entries_size_bytes = 10; });
  ASSERT_TRUE(lone->node->Campaign().ok());
  ASSERT_TRUE(lone->node->Step(grant).ok());
  EXPECT_TRUE(lone->node->Propose(std::string(100, 'c')).ok())
      << "one oversized proposal is accepted into an empty tail";
}

// §6 membership, one change at a time.
Network ClusterWithLearner() {
  Network net;
  for (uint64_t id : {1u, 2u, 3u}) {
    net.Add(testing::NewBootstrappedNode(id, {1, 2, 3}, PreVoteAndCheckQuorum));
  }
  net.Add(NewNode(4, {}, {}, {}, PreVoteAndCheckQuorum));  // a new, empty node
  return net;
}

TEST(MembershipTest, AddLearnerThenPromote_6) {
  Network net = ClusterWithLearner();
  net.Campaign(1);
  ASSERT_TRUE(
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kAddLearnerNode, 4, ""}).ok());
  net.Send(net[1].Drain());
  net.TickAll(3);
  EXPECT_EQ(net[1].conf, (ConfState{{1, 2, 3}, {4}}));
  EXPECT_EQ(net[4].conf, (ConfState{{1, 2, 3}, {4}})) << "the learner replayed the whole log";
  EXPECT_TRUE(net[4].raft().is_learner());
  // A learner never campaigns and its acks do not count towards commit.
  for (int i = 0; i < 50; ++i) net[4].node->Tick();
  EXPECT_EQ(net[4].raft().role(), Role::kFollower);
  net.Isolate(2);
  net.Isolate(3);
  const uint64_t before = net[1].raft().log().committed();
  net.Propose(1, "needs a voter");
  EXPECT_EQ(net[1].raft().log().committed(), before) << "leader + learner are not a quorum";
  net.Recover();
  net.TickAll(2);
  // Promote.
  ASSERT_TRUE(net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kAddNode, 4, ""}).ok());
  net.Send(net[1].Drain());
  net.TickAll(3);
  EXPECT_EQ(net[1].conf, (ConfState{{1, 2, 3, 4}, {}}));
  EXPECT_FALSE(net[4].raft().is_learner());
  // Now 4 counts: leader + 3 + 4 is a majority of 4 voters... 3 of 4 needed.
  net.Isolate(2);
  const uint64_t c2 = net[1].raft().log().committed();
  net.Propose(1, "with 3 and 4");
  EXPECT_GT(net[1].raft().log().committed(), c2);
}

TEST(MembershipTest, OneChangeAtATime_6) {
  Network net = ClusterWithLearner();
  net.Campaign(1);
  net.Isolate(2);
  net.Isolate(3);  // the first change cannot commit
  ASSERT_TRUE(
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kAddLearnerNode, 4, ""}).ok());
  net.Send(net[1].Drain());
  absl::Status second =
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 3, ""});
  EXPECT_TRUE(absl::IsFailedPrecondition(second)) << second;
  net.Recover();
  net.TickAll(3);
  EXPECT_TRUE(net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 3, ""}).ok())
      << "accepted once the first is applied";
}

TEST(MembershipTest, NewLeaderRefusesChangesUntilItsEntryIsApplied_6) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Ignore(MessageType::kAppResp);
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 3, ""})))
      << "the leader has not committed an entry of its term";
  net.Recover();
  net.TickAll(2);
  EXPECT_TRUE(
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 3, ""}).ok());
}

TEST(MembershipTest, RemovedLeaderStepsDown_6) {
  Network net(3, PreVoteAndCheckQuorum);
  net.Campaign(1);
  ASSERT_TRUE(
      net[1].node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 1, ""}).ok());
  net.Send(net[1].Drain());
  net.TickAll(2);
  EXPECT_EQ(net[1].raft().role(), Role::kFollower);
  EXPECT_EQ(net[1].conf, (ConfState{{2, 3}, {}}));
  // The remaining two elect a new leader.
  net.Isolate(1);
  net.TickAll(40);
  EXPECT_TRUE(net[2].raft().role() == Role::kLeader || net[3].raft().role() == Role::kLeader);
}

TEST(MembershipTest, RemovingTheLastVoterIsRefused_6) {
  auto n = NewNode(1, {1});
  ASSERT_TRUE(n->node->Campaign().ok());
  n->Drain();
  absl::Status s = n->node->ProposeConfChange(ConfChange{ConfChange::Type::kRemoveNode, 1, ""});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_EQ(n->node->conf_state(), (ConfState{{1}, {}}));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      n->node->ProposeConfChange(ConfChange{ConfChange::Type::kAddLearnerNode, 1, ""})))
      << "demotion is not supported";
}

// Membership takes effect when the change is appended and is rolled back when the entry is
// overwritten by a new leader.
TEST(MembershipTest, ChangeTakesEffectOnAppendAndRollsBack_6) {
  ConfChange add4{ConfChange::Type::kAddNode, 4, ""};
  auto n = NewNode(2, {1, 2, 3}, {testing::E(1, 1)}, HardState{1, 0, 1});
  n->Drain();
  Message app;
  app.type = MessageType::kApp;
  app.from = 1;
  app.to = 2;
  app.term = 1;
  app.index = 1;
  app.log_term = 1;
  app.commit = 1;
  app.entries = {Entry{2, 1, EntryType::kConfChange, EncodeConfChange(add4)}};
  ASSERT_TRUE(n->node->Step(app).ok());
  EXPECT_EQ(n->node->conf_state(), (ConfState{{1, 2, 3, 4}, {}})) << "in effect once appended";
  EXPECT_EQ(n->node->applied_conf_state(), (ConfState{{1, 2, 3}, {}})) << "not applied yet";
  n->Drain();
  // A new leader of term 2 never had the change: it is overwritten, and so is its effect.
  app.from = 3;
  app.term = 2;
  app.entries = {testing::E(2, 2)};
  ASSERT_TRUE(n->node->Step(app).ok());
  EXPECT_EQ(n->node->conf_state(), (ConfState{{1, 2, 3}, {}}));
  // After a restart the membership is recomputed from the log.
  n->Drain();
  app.term = 2;
  app.index = 2;
  app.log_term = 2;
  app.entries = {Entry{3, 2, EntryType::kConfChange, EncodeConfChange(add4)}};
  ASSERT_TRUE(n->node->Step(app).ok());
  n->Drain();
  auto restarted = RawNode::Create(testing::TestConfig(2), n->storage.get());
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ((*restarted)->conf_state(), (ConfState{{1, 2, 3, 4}, {}}));
}

// The scenario that makes activation at apply time unsafe with one change at a time. The
// cluster went {1,2,3} -> +4 -> +5 and committed entry 7 with {3,4,5}. Nodes 1 and 2 received
// both changes from a later leader that did not know they were committed, so they never
// applied them. Under apply-time activation node 1 would count votes in {1,2,3} and win with
// {1,2}, then overwrite the committed entry 7. It uses the membership of its log instead.
TEST(MembershipTest, StaleNodesCannotWinWithAnOldMembership_6) {
  auto cc = [](uint64_t index, uint64_t term, uint64_t id) {
    return Entry{index, term, EntryType::kConfChange,
                 EncodeConfChange(ConfChange{ConfChange::Type::kAddNode, id, ""})};
  };
  const std::vector<Entry> stale = {cc(1, 1, 1),      cc(2, 1, 2), cc(3, 1, 3),
                                    testing::E(4, 2), cc(5, 2, 4), cc(6, 2, 5)};
  std::vector<Entry> full = stale;
  full.push_back(testing::E(7, 2, "committed by 3, 4, 5"));
  Network net;
  for (uint64_t id : {1u, 2u}) net.Add(NewNode(id, {}, stale, HardState{3, 0, 3}));
  for (uint64_t id : {3u, 4u, 5u}) net.Add(NewNode(id, {}, full, HardState{3, 0, 7}));
  net.Stabilize();
  ASSERT_EQ(net[1].node->applied_conf_state(), (ConfState{{1, 2, 3}, {}}));
  ASSERT_EQ(net[1].node->conf_state(), (ConfState{{1, 2, 3, 4, 5}, {}}));
  net.Campaign(1);
  net.Campaign(1);
  EXPECT_NE(net[1].raft().role(), Role::kLeader) << "two of five votes are not a majority";
  EXPECT_EQ(net[1].raft().log().committed(), 3u);
}

}  // namespace
}  // namespace meridian::raft
