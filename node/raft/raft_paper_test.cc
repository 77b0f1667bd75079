// Scenario tests of the Raft paper's rules, one test per rule, named after the section they
// check ("In Search of an Understandable Consensus Algorithm (Extended Version)", Ongaro &
// Ousterhout; §6 and §8 also follow Ongaro's dissertation for membership and reads).
#include <set>

#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::E;
using testing::Network;
using testing::NewNode;
using testing::OfType;
using testing::TestNode;

Message Msg(MessageType t, uint64_t from, uint64_t to, uint64_t term) {
  Message m;
  m.type = t;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

Message App(uint64_t from, uint64_t to, uint64_t term, uint64_t index, uint64_t log_term,
            std::vector<Entry> ents, uint64_t commit) {
  Message m = Msg(MessageType::kApp, from, to, term);
  m.index = index;
  m.log_term = log_term;
  m.entries = std::move(ents);
  m.commit = commit;
  return m;
}

// Makes `n` (a voter of {1..size}) leader of the next term with the votes of `voters`.
void ElectLeader(TestNode& n, const std::vector<uint64_t>& voters) {
  ASSERT_TRUE(n.node->Campaign().ok());
  n.Drain();
  for (uint64_t v : voters) {
    Message resp = Msg(MessageType::kVoteResp, v, n.id, n.raft().term());
    ASSERT_TRUE(n.node->Step(resp).ok());
  }
  ASSERT_EQ(n.raft().role(), Role::kLeader);
}

void Tick(TestNode& n, int ticks) {
  for (int i = 0; i < ticks; ++i) n.node->Tick();
}

// §5.1: "If one server's current term is smaller than the other's, then it updates its current
// term to the larger value. If a candidate or leader discovers that its term is out of date, it
// immediately reverts to follower state."
TEST(RaftPaperTest, UpdateTermFromMessage_5_1) {
  for (Role start : {Role::kFollower, Role::kCandidate, Role::kLeader}) {
    auto n = NewNode(1, {1, 2, 3});
    if (start == Role::kCandidate) {
      ASSERT_TRUE(n->node->Campaign().ok());
    }
    if (start == Role::kLeader) ElectLeader(*n, {2});
    n->Drain();
    ASSERT_TRUE(n->node->Step(App(2, 1, 5, 0, 0, {}, 0)).ok());
    EXPECT_EQ(n->raft().term(), 5u) << RoleName(start);
    EXPECT_EQ(n->raft().role(), Role::kFollower) << RoleName(start);
    EXPECT_EQ(n->raft().lead(), 2u) << RoleName(start);
  }
}

// §5.1: "If a server receives a request with a stale term number, it rejects the request."
TEST(RaftPaperTest, RejectStaleTermMessage_5_1) {
  auto n = NewNode(1, {1, 2, 3}, {}, HardState{2, 0, 0});
  n->Drain();
  ASSERT_TRUE(n->node->Step(App(2, 1, 1, 0, 0, {E(1, 1, "x")}, 0)).ok());
  EXPECT_EQ(n->raft().term(), 2u);
  EXPECT_EQ(n->raft().lead(), kNone);
  EXPECT_EQ(n->raft().log().LastIndex(), 0u) << "stale append must not touch the log";
}

// §5.2: "When servers start up, they begin as followers."
TEST(RaftPaperTest, StartAsFollower_5_2) {
  auto n = NewNode(1, {1, 2, 3});
  EXPECT_EQ(n->raft().role(), Role::kFollower);
}

// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
// followers in order to maintain their authority."
TEST(RaftPaperTest, LeaderBcastBeat_5_2) {
  auto n = NewNode(1, {1, 2, 3});
  ElectLeader(*n, {2});
  n->Drain();
  Tick(*n, 1);
  auto msgs = OfType(n->Drain(), MessageType::kHeartbeat);
  ASSERT_EQ(msgs.size(), 2u);
  std::set<uint64_t> to;
  for (const Message& m : msgs) {
    to.insert(m.to);
    EXPECT_EQ(m.term, 1u);
    EXPECT_EQ(m.commit, 0u) << "followers have not acknowledged anything yet";
    EXPECT_TRUE(m.entries.empty());
  }
  EXPECT_EQ(to, (std::set<uint64_t>{2, 3}));
}

// §5.2: "If a follower receives no communication over a period of time called the election
// timeout, then it ... begins an election ... increments its current term and transitions to
// candidate state. It then votes for itself and issues RequestVote RPCs in parallel to each of
// the other servers." A candidate whose election times out starts a new one.
TEST(RaftPaperTest, StartElectionOnTimeout_5_2) {
  auto n = NewNode(1, {1, 2, 3});
  n->Drain();
  Tick(*n, 2 * 10);
  auto msgs = n->Drain();
  EXPECT_EQ(n->raft().role(), Role::kCandidate);
  EXPECT_EQ(n->raft().term(), 1u);
  EXPECT_EQ(n->raft().vote(), 1u);
  auto votes = OfType(msgs, MessageType::kVote);
  ASSERT_EQ(votes.size(), 2u);
  for (const Message& m : votes) EXPECT_EQ(m.term, 1u);
  // A candidate that neither wins nor loses times out and starts over in a new term.
  Tick(*n, 2 * 10);
  n->Drain();
  EXPECT_EQ(n->raft().role(), Role::kCandidate);
  EXPECT_EQ(n->raft().term(), 2u);
}

// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in the
// full cluster for the same term."
TEST(RaftPaperTest, LeaderElectionInOneRound_5_2) {
  struct Case {
    size_t size;
    std::map<uint64_t, bool> votes;
    Role want;
  };
  const Case cases[] = {
      {1, {}, Role::kLeader},
      {3, {{2, true}, {3, true}}, Role::kLeader},
      {3, {{2, true}}, Role::kLeader},
      {5, {{2, true}, {3, true}, {4, true}, {5, true}}, Role::kLeader},
      {5, {{2, true}, {3, true}, {4, true}}, Role::kLeader},
      {5, {{2, true}, {3, true}}, Role::kLeader},
      {3, {{2, false}, {3, false}}, Role::kFollower},  // lost
      {5, {{2, false}, {3, false}, {4, false}}, Role::kFollower},
      {5, {{2, true}, {3, false}, {4, false}, {5, false}}, Role::kFollower},
      {3, {}, Role::kCandidate},  // pending
      {5, {{2, true}}, Role::kCandidate},
      {5, {{2, false}, {3, false}}, Role::kCandidate},
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    auto n = NewNode(1, testing::Ids(c.size));
    ASSERT_TRUE(n->node->Campaign().ok());
    for (auto [id, granted] : c.votes) {
      Message m = Msg(MessageType::kVoteResp, id, 1, 1);
      m.reject = !granted;
      ASSERT_TRUE(n->node->Step(m).ok());
    }
    EXPECT_EQ(n->raft().role(), c.want) << "case " << i;
    EXPECT_EQ(n->raft().term(), 1u) << "case " << i;
  }
}

// §5.2: "Each server will vote for at most one candidate in a given term, on a
// first-come-first-served basis."
TEST(RaftPaperTest, FollowerVoteOncePerTerm_5_2) {
  struct Case {
    uint64_t vote, candidate;
    bool reject;
  };
  const Case cases[] = {{kNone, 1, false}, {kNone, 2, false}, {1, 1, false},
                        {2, 2, false},     {1, 2, true},      {2, 1, true}};
  for (const Case& c : cases) {
    auto n = NewNode(3, {1, 2, 3}, {}, HardState{1, c.vote, 0});
    n->Drain();
    ASSERT_TRUE(n->node->Step(Msg(MessageType::kVote, c.candidate, 3, 1)).ok());
    auto resp = OfType(n->Drain(), MessageType::kVoteResp);
    ASSERT_EQ(resp.size(), 1u);
    EXPECT_EQ(resp[0].reject, c.reject) << "vote " << c.vote << " candidate " << c.candidate;
    EXPECT_EQ(resp[0].to, c.candidate);
  }
}

// §5.2 with §5.5: the vote is durable. A node that voted, crashed and restarted does not vote
// for someone else in the same term.
TEST(RaftPaperTest, VoteSurvivesRestart_5_2) {
  auto n = NewNode(3, {1, 2, 3});
  n->Drain();
  ASSERT_TRUE(n->node->Step(Msg(MessageType::kVote, 1, 3, 1)).ok());
  auto first = OfType(n->Drain(), MessageType::kVoteResp);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_FALSE(first[0].reject);
  EXPECT_EQ(n->storage->hard_state().vote, 1u) << "vote persisted before the response";
  auto restarted = RawNode::Create(testing::TestConfig(3), n->storage.get());
  ASSERT_TRUE(restarted.ok());
  n->node = std::move(*restarted);
  ASSERT_TRUE(n->node->Step(Msg(MessageType::kVote, 2, 3, 1)).ok());
  auto second = OfType(n->Drain(), MessageType::kVoteResp);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_TRUE(second[0].reject);
}

// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC from another
// server claiming to be leader. If the leader's term is at least as large as the candidate's
// current term, then the candidate recognizes the leader as legitimate and returns to follower
// state."
TEST(RaftPaperTest, CandidateFallback_5_2) {
  for (uint64_t term : {1u, 2u}) {
    auto n = NewNode(1, {1, 2, 3});
    ASSERT_TRUE(n->node->Campaign().ok());
    ASSERT_EQ(n->raft().role(), Role::kCandidate);
    ASSERT_TRUE(n->node->Step(App(2, 1, term, 0, 0, {}, 0)).ok());
    EXPECT_EQ(n->raft().role(), Role::kFollower);
    EXPECT_EQ(n->raft().term(), term);
    EXPECT_EQ(n->raft().lead(), 2u);
  }
}

// §5.2: a candidate that hears of a higher term (e.g. a vote rejection from a node that moved
// on) steps down.
TEST(RaftPaperTest, CandidateStepsDownOnHigherTerm_5_2) {
  auto n = NewNode(1, {1, 2, 3});
  ASSERT_TRUE(n->node->Campaign().ok());
  Message rej = Msg(MessageType::kVoteResp, 2, 1, 7);
  rej.reject = true;
  ASSERT_TRUE(n->node->Step(rej).ok());
  EXPECT_EQ(n->raft().role(), Role::kFollower);
  EXPECT_EQ(n->raft().term(), 7u);
}

// §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval."
TEST(RaftPaperTest, ElectionTimeoutRandomized_5_2) {
  std::set<uint32_t> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto n = NewNode(1, {1, 2, 3}, {}, {}, [&](Config& c) { c.random_seed = seed; });
    uint32_t t = n->raft().randomized_election_timeout();
    EXPECT_GE(t, 10u);
    EXPECT_LT(t, 20u);
    seen.insert(t);
    // And the node campaigns exactly then.
    n->Drain();
    Tick(*n, static_cast<int>(t) - 1);
    EXPECT_EQ(n->raft().role(), Role::kFollower);
    Tick(*n, 1);
    EXPECT_EQ(n->raft().role(), Role::kCandidate);
  }
  EXPECT_GE(seen.size(), 8u) << "timeouts should spread over the interval";
}

// §5.3: "Once a leader has been elected, it begins servicing client requests ... The leader
// appends the command to its log as a new entry, then issues AppendEntries RPCs in parallel to
// each of the other servers to replicate the entry."
TEST(RaftPaperTest, LeaderStartReplication_5_3) {
  auto n = NewNode(1, {1, 2, 3});
  ElectLeader(*n, {2});
  n->Drain();
  // Followers acknowledged the leader's empty entry 1/1.
  for (uint64_t f : {2u, 3u}) {
    Message ack = Msg(MessageType::kAppResp, f, 1, 1);
    ack.index = 1;
    ASSERT_TRUE(n->node->Step(ack).ok());
  }
  n->Drain();
  ASSERT_TRUE(n->node->Propose("some data").ok());
  auto msgs = OfType(n->Drain(), MessageType::kApp);
  ASSERT_EQ(msgs.size(), 2u);
  for (const Message& m : msgs) {
    EXPECT_EQ(m.index, 1u);
    EXPECT_EQ(m.log_term, 1u);
    EXPECT_EQ(m.commit, 1u);
    ASSERT_EQ(m.entries.size(), 1u);
    EXPECT_EQ(m.entries[0], E(2, 1, "some data"));
  }
  EXPECT_EQ(n->raft().log().LastIndex(), 2u);
}

// §5.3: "A log entry is committed once the leader that created the entry has replicated it on a
// majority of the servers ... the leader keeps track of the highest index it knows to be
// committed, and it includes that index in future AppendEntries RPCs."
TEST(RaftPaperTest, LeaderCommitsOnMajority_5_3) {
  struct Case {
    size_t size;
    std::vector<uint64_t> acks;  // followers acknowledging entry 2
    bool committed;
  };
  const Case cases[] = {
      {1, {}, true},   {3, {}, false},    {3, {2}, true},    {3, {2, 3}, true},
      {5, {}, false},  {5, {2}, false},   {5, {2, 3}, true}, {5, {2, 3, 4, 5}, true},
      {4, {2}, false}, {4, {2, 3}, true},
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    auto n = NewNode(1, testing::Ids(c.size));
    if (c.size == 1) {
      ASSERT_TRUE(n->node->Campaign().ok());
    } else {
      std::vector<uint64_t> others;
      for (uint64_t id = 2; id <= c.size; ++id) others.push_back(id);
      ElectLeader(*n, others);
    }
    n->Drain();  // persists the empty entry: the leader acknowledges it to itself
    ASSERT_TRUE(n->node->Propose("x").ok());
    n->Drain();
    for (uint64_t f : c.acks) {
      Message ack = Msg(MessageType::kAppResp, f, 1, 1);
      ack.index = 2;
      ASSERT_TRUE(n->node->Step(ack).ok());
    }
    auto msgs = n->Drain();
    EXPECT_EQ(n->raft().log().committed() == 2, c.committed) << "case " << i;
    if (c.committed && c.size > 1) {
      // The new commit index goes out to the followers.
      bool told = false;
      for (const Message& m : OfType(msgs, MessageType::kApp)) told |= m.commit == 2;
      EXPECT_TRUE(told) << "case " << i;
      EXPECT_EQ(n->applied.back().data, "x") << "case " << i;
    }
  }
}

// §5.3: "When the leader commits an entry it also commits all preceding entries in its log,
// including entries created by previous leaders."
TEST(RaftPaperTest, LeaderCommitsPrecedingEntries_5_3) {
  auto n = NewNode(1, {1, 2, 3}, {E(1, 1, "a"), E(2, 1, "b")}, HardState{1, 0, 0});
  ElectLeader(*n, {2});  // term 2, empty entry 3/2
  n->Drain();
  Message ack = Msg(MessageType::kAppResp, 2, 1, 2);
  ack.index = 3;
  ASSERT_TRUE(n->node->Step(ack).ok());
  n->Drain();
  EXPECT_EQ(n->raft().log().committed(), 3u);
  ASSERT_EQ(n->applied.size(), 3u);
  EXPECT_EQ(n->applied[0].data, "a");
  EXPECT_EQ(n->applied[1].data, "b");
}

// §5.3: "Once a follower learns that a log entry is committed, it applies the entry to its local
// state machine (in log order)."
TEST(RaftPaperTest, FollowerCommitsEntry_5_3) {
  auto n = NewNode(2, {1, 2, 3});
  n->Drain();
  ASSERT_TRUE(n->node->Step(App(1, 2, 1, 0, 0, {E(1, 1, "a"), E(2, 1, "b")}, 1)).ok());
  n->Drain();
  EXPECT_EQ(n->raft().log().committed(), 1u);
  ASSERT_EQ(n->applied.size(), 1u);
  EXPECT_EQ(n->applied[0].data, "a");
  ASSERT_TRUE(n->node->Step(App(1, 2, 1, 2, 1, {}, 2)).ok());
  n->Drain();
  EXPECT_EQ(n->applied.size(), 2u);
}

// §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of the entry
// in its log that immediately precedes the new entries. If the follower does not find an entry
// in its log with the same index and term, then it refuses the new entries."
TEST(RaftPaperTest, FollowerChecksPrevLog_5_3) {
  const std::vector<Entry> log = {E(1, 1), E(2, 2)};
  struct Case {
    uint64_t index, log_term;
    bool reject;
    uint64_t want_index;  // response index
    uint64_t hint;
  };
  const Case cases[] = {
      {0, 0, false, 1, 0},  // match with committed entries
      {1, 1, false, 1, 0}, {2, 2, false, 2, 0},
      {2, 1, true, 2, 1},  // mismatch: hint is the last index with term <= 1
      {3, 3, true, 3, 2},  // beyond the log: hint is our last index
  };
  for (const Case& c : cases) {
    auto n = NewNode(2, {1, 2, 3}, log, HardState{2, 0, 1});
    n->Drain();
    ASSERT_TRUE(n->node->Step(App(1, 2, 3, c.index, c.log_term, {}, 1)).ok());
    auto resp = OfType(n->Drain(), MessageType::kAppResp);
    ASSERT_EQ(resp.size(), 1u);
    EXPECT_EQ(resp[0].reject, c.reject) << c.index << "/" << c.log_term;
    EXPECT_EQ(resp[0].index, c.want_index) << c.index << "/" << c.log_term;
    if (c.reject) {
      EXPECT_EQ(resp[0].reject_hint, c.hint) << c.index << "/" << c.log_term;
    }
  }
}

// §5.3: "If an existing entry conflicts with a new one (same index but different terms), delete
// the existing entry and all that follow it; append any new entries not already in the log."
TEST(RaftPaperTest, FollowerAppendEntries_5_3) {
  struct Case {
    uint64_t index, log_term;
    std::vector<Entry> ents;
    std::vector<Entry> want;
  };
  const Case cases[] = {
      {2, 2, {E(3, 3)}, {E(1, 1), E(2, 2), E(3, 3)}},
      {1, 1, {E(2, 3), E(3, 4)}, {E(1, 1), E(2, 3), E(3, 4)}},
      {0, 0, {E(1, 1)}, {E(1, 1), E(2, 2)}},
      {0, 0, {E(1, 3)}, {E(1, 3)}},
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    auto n = NewNode(2, {1, 2, 3}, {E(1, 1), E(2, 2)}, HardState{2, 0, 0});
    n->Drain();
    ASSERT_TRUE(n->node->Step(App(1, 2, 4, c.index, c.log_term, c.ents, 0)).ok());
    n->Drain();
    EXPECT_EQ(n->raft().log().AllEntries(1, n->raft().log().LastIndex() + 1), c.want)
        << "case " << i;
    // And the storage (what is durable) agrees.
    std::vector<Entry> durable;
    ASSERT_TRUE(n->storage->Entries(1, n->storage->LastIndex() + 1, UINT64_MAX, &durable).ok());
    EXPECT_EQ(durable, c.want) << "case " << i;
  }
}

std::vector<Entry> TermsToLog(const std::vector<uint64_t>& terms) {
  std::vector<Entry> out;
  for (size_t i = 0; i < terms.size(); ++i) out.push_back(E(i + 1, terms[i]));
  return out;
}

// §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
// duplicate its own." Followers (a)-(f) end up with the leader's log.
TEST(RaftPaperTest, LeaderSyncsFollowerLogs_5_3_Figure7) {
  const std::vector<uint64_t> leader_terms = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
  const std::vector<std::vector<uint64_t>> followers = {
      {1, 1, 1, 4, 4, 5, 5, 6, 6},           // (a)
      {1, 1, 1, 4},                          // (b)
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6},     // (c)
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7},  // (d)
      {1, 1, 1, 4, 4, 4, 4},                 // (e)
      {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3},     // (f)
  };
  for (size_t i = 0; i < followers.size(); ++i) {
    Network net;
    // The leader has term 8 and log leader_terms; node 3 votes for it (its log is a prefix).
    net.Add(NewNode(1, {1, 2, 3}, TermsToLog(leader_terms), HardState{8, 0, 3}));
    net.Add(NewNode(2, {1, 2, 3}, TermsToLog(followers[i]), HardState{8, 0, 3}));
    net.Add(NewNode(3, {1, 2, 3}, TermsToLog({1, 1, 1}), HardState{8, 0, 3}));
    net.Campaign(1);
    ASSERT_EQ(net[1].raft().role(), Role::kLeader) << "follower " << char('a' + i);
    net.Propose(1, "sync");
    net.TickAll(3);
    const auto& lead_log = net[1].raft().log();
    const auto& follower_log = net[2].raft().log();
    EXPECT_EQ(follower_log.AllEntries(1, follower_log.LastIndex() + 1),
              lead_log.AllEntries(1, lead_log.LastIndex() + 1))
        << "follower " << char('a' + i);
  }
}

// §5.4.1: "RequestVote RPC includes information about the candidate's log" (its last index and
// term).
TEST(RaftPaperTest, VoteRequestCarriesLastLog_5_4_1) {
  auto n = NewNode(1, {1, 2, 3}, {E(1, 1), E(2, 2)}, HardState{2, 0, 0});
  ASSERT_TRUE(n->node->Campaign().ok());
  auto votes = OfType(n->Drain(), MessageType::kVote);
  ASSERT_EQ(votes.size(), 2u);
  for (const Message& m : votes) {
    EXPECT_EQ(m.term, 3u);
    EXPECT_EQ(m.index, 2u);
    EXPECT_EQ(m.log_term, 2u);
  }
}

// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
// candidate ... If the logs have last entries with different terms, then the log with the later
// term is more up-to-date. If the logs end with the same term, then whichever log is longer is
// more up-to-date."
TEST(RaftPaperTest, VoterRejectsLessUpToDateCandidate_5_4_1) {
  struct Case {
    uint64_t index, log_term;
    bool reject;
  };
  // The voter's log ends at 2/2.
  const Case cases[] = {
      {3, 2, false}, {3, 3, false}, {2, 2, false}, {1, 3, false},  // as or more up to date
      {3, 1, true},  {1, 2, true},  {0, 0, true},                  // less up to date
  };
  for (const Case& c : cases) {
    auto n = NewNode(3, {1, 2, 3}, {E(1, 1), E(2, 2)}, HardState{2, 0, 0});
    n->Drain();
    Message vote = Msg(MessageType::kVote, 1, 3, 3);
    vote.index = c.index;
    vote.log_term = c.log_term;
    ASSERT_TRUE(n->node->Step(vote).ok());
    auto resp = OfType(n->Drain(), MessageType::kVoteResp);
    ASSERT_EQ(resp.size(), 1u);
    EXPECT_EQ(resp[0].reject, c.reject) << c.index << "/" << c.log_term;
  }
}

// §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log
// entries from the leader's current term are committed by counting replicas."
TEST(RaftPaperTest, LeaderOnlyCommitsCurrentTermByCounting_5_4_2) {
  // Leader of term 3 with entries 1/1, 2/2 from earlier terms and its own 3/3.
  auto n = NewNode(1, {1, 2, 3}, {E(1, 1), E(2, 2)}, HardState{2, 0, 0});
  ElectLeader(*n, {2});
  n->Drain();
  ASSERT_EQ(n->raft().term(), 3u);
  struct Step {
    uint64_t ack_index;
    uint64_t want_commit;
  };
  for (Step s : {Step{1, 0}, Step{2, 0}, Step{3, 3}}) {
    Message ack = Msg(MessageType::kAppResp, 2, 1, 3);
    ack.index = s.ack_index;
    ASSERT_TRUE(n->node->Step(ack).ok());
    n->Drain();
    EXPECT_EQ(n->raft().log().committed(), s.want_commit) << "ack " << s.ack_index;
  }
}

// Campaigns until `id` leads (a first attempt can lose to votes already cast in that term).
void CampaignUntilLeader(Network& net, uint64_t id) {
  for (int i = 0; i < 3 && net[id].raft().role() != Role::kLeader; ++i) net.Campaign(id);
  ASSERT_EQ(net[id].raft().role(), Role::kLeader) << "node " << id;
}

// §5.4.2, Figure 8: an entry from an earlier term stored on a majority can still be
// overwritten by a later leader, so a leader must not count replicas of such entries.
TEST(RaftPaperTest, Figure8_5_4_2) {
  Network net(5);
  net.Campaign(1);
  ASSERT_EQ(net[1].raft().role(), Role::kLeader);
  ASSERT_EQ(net[1].raft().log().committed(), 1u);
  // (a) S1 (term 1) replicates "t1" at index 2 to S2 only.
  for (uint64_t other : {3u, 4u, 5u}) net.Cut(1, other);
  net.Propose(1, "t1");
  ASSERT_EQ(net[2].raft().log().TermOrZero(2), 1u);
  // (b) S1 crashes; S5 wins term 2 with S3 and S4 and appends 2/2 without replicating it.
  net.Recover();
  net.Isolate(1);
  net.Ignore(MessageType::kApp);
  CampaignUntilLeader(net, 5);
  ASSERT_EQ(net[5].raft().term(), 2u);
  ASSERT_EQ(net[5].raft().log().TermOrZero(2), 2u);
  // (c) S5 crashes; S1 comes back and wins term 3 (S2, S3, S4 vote). It gets t1 onto S3, so
  // t1 is on a majority (S1, S2, S3), but it is from term 1: not committed by counting.
  net.Restart(1);
  net.Recover();
  net.Isolate(5);
  net.Ignore(MessageType::kApp);
  CampaignUntilLeader(net, 1);
  ASSERT_EQ(net[1].raft().term(), 3u);
  net[1].Drain();
  for (uint64_t f : {2u, 3u}) {
    ASSERT_TRUE(net[f].node->Step(App(1, f, 3, 1, 1, {E(2, 1, "t1")}, 1)).ok());
    for (const Message& resp : net[f].Drain()) ASSERT_TRUE(net[1].node->Step(resp).ok());
  }
  net[1].Drain();  // what S1 sends now is lost: it crashes
  ASSERT_EQ(net[3].raft().log().TermOrZero(2), 1u);
  EXPECT_EQ(net[1].raft().log().committed(), 1u)
      << "t1 is on a majority but from term 1: it must not count as committed";
  // (d) S5 returns and wins (its last term 2 beats the others' 1), overwriting t1 everywhere.
  // Had S1 committed t1, this would lose a committed entry.
  net.Restart(5);
  net.Recover();
  net.Isolate(1);
  CampaignUntilLeader(net, 5);
  net.TickAll(2);
  for (uint64_t id : {2u, 3u, 4u, 5u}) {
    EXPECT_EQ(net[id].raft().log().TermOrZero(2), 2u) << "node " << id;
    EXPECT_GE(net[id].raft().log().committed(), 2u) << "node " << id;
  }
}

}  // namespace
}  // namespace meridian::raft
