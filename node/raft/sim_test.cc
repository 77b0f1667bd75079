// Deterministic simulation tests: many seeds, each a cluster run through faults with the safety
// invariants checked after every step and liveness checked at the end (sim/cluster.h).
//
//   MERIDIAN_RAFT_SEED=<n> ./raft_sim_test        replays one seed (MERIDIAN_RAFT_TRACE=1 prints
//                                                 every event)
//   MERIDIAN_RAFT_SIM_SEEDS=<n>                   number of seeds (default: see kDefaultSeeds)
//   MERIDIAN_RAFT_SIM_FIRST_SEED=<n>              first seed of the range (default 1)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "node/raft/sim/checker.h"
#include "node/raft/sim/cluster.h"
#include "node/raft/storage.h"

namespace meridian::raft::sim {
namespace {

#ifdef NDEBUG
constexpr uint64_t kDefaultSeeds = 6000;
#else
constexpr uint64_t kDefaultSeeds = 150;  // unoptimized builds are ~10x slower
#endif
constexpr size_t kStepsPerSeed = 4000;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

TEST(RaftSimTest, RandomizedClusters) {
  const char* replay = std::getenv("MERIDIAN_RAFT_SEED");
  const bool verbose = EnvOr("MERIDIAN_RAFT_TRACE", 0) != 0;
  uint64_t first = EnvOr("MERIDIAN_RAFT_SIM_FIRST_SEED", 1);
  uint64_t count = EnvOr("MERIDIAN_RAFT_SIM_SEEDS", kDefaultSeeds);
  if (replay != nullptr && *replay != '\0') {
    first = std::strtoull(replay, nullptr, 10);
    count = 1;
  }
  const auto start = std::chrono::steady_clock::now();
  SimStats total;
  uint64_t max_liveness_ticks = 0;
  int failures = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    SimOptions opts;
    opts.seed = seed;
    opts.steps = kStepsPerSeed;
    opts.trace_lines = count == 1 ? 200 : 0;  // tracing costs; re-run a failing seed with it
    opts.verbose = verbose;
    SimResult r = RunSimulation(opts);
    if (!r.ok && opts.trace_lines == 0) {
      opts.trace_lines = 200;
      r = RunSimulation(opts);
    }
    if (!r.ok) {
      ADD_FAILURE() << r.failure;
      if (++failures >= 3) break;
    }
    total.ticks += r.stats.ticks;
    total.messages_delivered += r.stats.messages_delivered;
    total.leaders += r.stats.leaders;
    total.committed += r.stats.committed;
    total.crashes += r.stats.crashes;
    total.snapshots_sent += r.stats.snapshots_sent;
    total.conf_changes_applied += r.stats.conf_changes_applied;
    total.transfers += r.stats.transfers;
    total.reads_served += r.stats.reads_served;
    max_liveness_ticks = std::max(max_liveness_ticks, r.stats.liveness_ticks);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "raft sim: seeds %llu..%llu (%llu) in %.1fs: %llu ticks, %llu messages, %llu leaders, "
      "%llu committed entries, %llu crashes, %llu snapshots sent, %llu conf changes applied, "
      "%llu transfers requested, %llu reads served; slowest recovery %llu ticks\n",
      static_cast<unsigned long long>(first), static_cast<unsigned long long>(first + count - 1),
      static_cast<unsigned long long>(count), seconds, static_cast<unsigned long long>(total.ticks),
      static_cast<unsigned long long>(total.messages_delivered),
      static_cast<unsigned long long>(total.leaders),
      static_cast<unsigned long long>(total.committed),
      static_cast<unsigned long long>(total.crashes),
      static_cast<unsigned long long>(total.snapshots_sent),
      static_cast<unsigned long long>(total.conf_changes_applied),
      static_cast<unsigned long long>(total.transfers),
      static_cast<unsigned long long>(total.reads_served),
      static_cast<unsigned long long>(max_liveness_ticks));
  // The schedule must actually exercise the interesting paths, or passing proves little.
  if (count >= 100) {
    EXPECT_GT(total.crashes, count / 2);
    EXPECT_GT(total.snapshots_sent, count / 10);
    EXPECT_GT(total.conf_changes_applied, count / 2);
    EXPECT_GT(total.reads_served, count);
    EXPECT_GT(total.leaders, count * 2);
  }
}

// Same seed, same run: replaying a failure depends on it.
TEST(RaftSimTest, Deterministic) {
  SimOptions opts;
  opts.seed = 4242;
  opts.steps = 1500;
  opts.trace_lines = 0;
  SimResult a = RunSimulation(opts);
  SimResult b = RunSimulation(opts);
  ASSERT_TRUE(a.ok) << a.failure;
  EXPECT_EQ(a.stats.messages_delivered, b.stats.messages_delivered);
  EXPECT_EQ(a.stats.committed, b.stats.committed);
  EXPECT_EQ(a.stats.ticks, b.stats.ticks);
}

// The checker must notice violations, or the simulation proves nothing.
TEST(CheckerTest, DetectsTwoLeadersInOneTerm) {
  Checker c;
  MemoryStorage storage;
  RaftLog log(&storage, 1 << 20);
  c.OnLeader(1, 5, log);
  EXPECT_FALSE(c.failed());
  c.OnLeader(1, 5, log);
  EXPECT_FALSE(c.failed());
  c.OnLeader(2, 5, log);
  EXPECT_TRUE(c.failed());
  EXPECT_NE(c.failure().find("election safety"), std::string::npos) << c.failure();
}

TEST(CheckerTest, DetectsLogMismatch) {
  Checker c;
  c.OnPersistEntries(
      1, {Entry{1, 1, EntryType::kNormal, "a"}, Entry{2, 1, EntryType::kNormal, "b"}}, 0);
  c.OnPersistEntries(2, {Entry{2, 1, EntryType::kNormal, "b"}}, 1);
  EXPECT_FALSE(c.failed());
  c.OnPersistEntries(3, {Entry{2, 1, EntryType::kNormal, "x"}}, 1);
  EXPECT_TRUE(c.failed());

  Checker d;
  d.OnPersistEntries(1, {Entry{5, 3, EntryType::kNormal, "a"}}, 2);
  d.OnPersistEntries(2, {Entry{5, 3, EntryType::kNormal, "a"}}, 1);
  EXPECT_TRUE(d.failed()) << "same entry after different predecessor terms";
}

TEST(CheckerTest, DetectsDivergentApply) {
  Checker c;
  c.OnApplyEntry(1, 0, Entry{1, 1, EntryType::kNormal, "a"}, 1, 11);
  EXPECT_FALSE(c.failed());
  c.OnApplyEntry(2, 0, Entry{1, 2, EntryType::kNormal, "b"}, 1, 12);
  EXPECT_TRUE(c.failed());

  Checker d;
  d.OnApplyEntry(1, 0, Entry{2, 1, EntryType::kNormal, "a"}, 5, 1);
  EXPECT_TRUE(d.failed()) << "gap in applied entries";

  Checker e;
  e.OnApplyEntry(1, 0, Entry{1, 1, EntryType::kNormal, "a"}, 0, 1);
  EXPECT_TRUE(e.failed()) << "applied beyond commit";
}

TEST(CheckerTest, DetectsVoteChangeAndRegressions) {
  Checker c;
  c.OnPersistHardState(1, HardState{3, 2, 5}, HardState{3, 4, 5});
  EXPECT_TRUE(c.failed());
  Checker d;
  d.OnPersistHardState(1, HardState{3, 2, 5}, HardState{3, 2, 4});
  EXPECT_TRUE(d.failed());
  Checker e;
  e.OnPersistHardState(1, HardState{3, 2, 5}, HardState{2, 0, 5});
  EXPECT_TRUE(e.failed());
  Checker ok;
  ok.OnPersistHardState(1, HardState{3, 0, 5}, HardState{3, 2, 6});
  ok.OnPersistHardState(1, HardState{3, 2, 6}, HardState{4, 0, 6});
  EXPECT_FALSE(ok.failed()) << ok.failure();
}

TEST(CheckerTest, DetectsIncompleteLeaderAndStaleRead) {
  Checker c;
  MemoryStorage committed_storage;
  ASSERT_TRUE(
      committed_storage
          .Append({Entry{1, 1, EntryType::kNormal, "a"}, Entry{2, 1, EntryType::kNormal, "b"}})
          .ok());
  RaftLog committed_log(&committed_storage, 1 << 20);
  committed_log.CommitTo(2);
  uint64_t recorded = 0;
  c.OnCommitted(1, committed_log, &recorded);
  EXPECT_EQ(recorded, 2u);
  c.OnReadIssued("r1");
  c.OnReadState(2, ReadState{1, "r1"});
  EXPECT_TRUE(c.failed()) << "read index 1 below commit 2";

  Checker d;
  recorded = 0;
  d.OnCommitted(1, committed_log, &recorded);
  MemoryStorage short_storage;
  ASSERT_TRUE(short_storage.Append({Entry{1, 1, EntryType::kNormal, "a"}}).ok());
  RaftLog short_log(&short_storage, 1 << 20);
  d.OnLeader(2, 2, short_log);
  EXPECT_TRUE(d.failed());
  EXPECT_NE(d.failure().find("leader completeness"), std::string::npos) << d.failure();
}

}  // namespace
}  // namespace meridian::raft::sim
