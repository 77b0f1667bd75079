// Tests of the linearizability checker: hand-written histories, the revision rules, randomized
// histories of a simulated linearizable store (and provably wrong mutations of them), agreement
// with a brute-force search, a 20,000-op history, history files and replay (see README.md).
#include "tests/lincheck/lincheck.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace meridian::lincheck {
namespace {

::testing::AssertionResult HasText(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << part << "\" not found in:\n" << text;
}

Operation Put(uint64_t client, std::string key, std::string value, int64_t call_ns,
              int64_t return_ns, Outcome outcome = Outcome::kOk, int64_t revision = 0) {
  Operation op;
  op.client_id = client;
  op.kind = OpKind::kPut;
  op.key = std::move(key);
  op.value = std::move(value);
  op.call_ns = call_ns;
  op.return_ns = return_ns;
  op.outcome = outcome;
  op.revision = revision;
  return op;
}

// `value` nullopt: the get found no key.
Operation Get(uint64_t client, std::string key, std::optional<std::string> value, int64_t call_ns,
              int64_t return_ns, Outcome outcome = Outcome::kOk, int64_t revision = 0) {
  Operation op;
  op.client_id = client;
  op.kind = OpKind::kGet;
  op.key = std::move(key);
  op.found = value.has_value();
  op.value = value.value_or("");
  op.call_ns = call_ns;
  op.return_ns = return_ns;
  op.outcome = outcome;
  op.revision = revision;
  return op;
}

CheckOptions NoRevisions() {
  CheckOptions options;
  options.check_revisions = false;
  return options;
}

// Saves a history that surprised a test and returns where, so the failure can be replayed.
std::string SaveForReplay(const std::vector<Operation>& history, const std::string& name) {
  const std::string path = ::testing::TempDir() + "lincheck_" + name + ".history";
  if (absl::Status status = WriteHistoryFile(path, history); !status.ok()) {
    return "(could not save the history: " + std::string(status.message()) + ")";
  }
  return path;
}

::testing::AssertionResult HasVerdict(const std::vector<Operation>& history,
                                      const CheckOptions& options, Verdict expected,
                                      const std::string& name) {
  const CheckResult result = Check(history, options);
  if (result.verdict == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected " << VerdictName(expected) << ", got " << VerdictName(result.verdict) << "\n"
         << result.explanation << "history saved to " << SaveForReplay(history, name);
}

// ---------------------------------------------------------------------------------------------
// Hand-written histories. Times are in ns; c<N> are clients.

TEST(LincheckTest, EmptyHistoryIsLinearizable) {
  const CheckResult result = Check({}, CheckOptions{});
  EXPECT_EQ(result.verdict, Verdict::kLinearizable);
  EXPECT_EQ(result.explanation, "");
}

TEST(LincheckTest, SequentialPutThenGet) {
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v1", 0, 10), Get(1, "k", "v1", 20, 30)}, CheckOptions{},
                         Verdict::kLinearizable, "seq"));
}

TEST(LincheckTest, GetOfKeyNeverWrittenFindsNothing) {
  EXPECT_TRUE(HasVerdict({Get(0, "k", std::nullopt, 0, 10), Put(1, "k", "v1", 20, 30)},
                         CheckOptions{}, Verdict::kLinearizable, "absent_ok"));
  // No deletes in the model: once a put completed, the key exists.
  EXPECT_TRUE(HasVerdict({Put(1, "k", "v1", 0, 10), Get(0, "k", std::nullopt, 20, 30)},
                         CheckOptions{}, Verdict::kNotLinearizable, "absent_bad"));
}

TEST(LincheckTest, StaleReadAfterCompletedPutIsNotLinearizable) {
  const std::vector<Operation> history = {
      Put(0, "k", "v1", 1'000, 1'010),
      Put(1, "k", "v2", 1'020, 1'030),
      Get(2, "k", "v1", 1'040, 1'050),
  };
  const CheckResult result = Check(history, CheckOptions{});
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_EQ(result.key, "k");
  EXPECT_TRUE(HasText(result.explanation, "key \"k\""));
  EXPECT_TRUE(HasText(result.explanation, "the register holds \"v2\""));
  // Times are relative to the first call (1000 ns).
  EXPECT_TRUE(
      HasText(result.explanation, "X #2 c2 get \"k\" -> \"v1\" [+0.000040ms, +0.000050ms] ok"));
  EXPECT_TRUE(HasText(result.explanation, "L #1 c1 put \"k\" = \"v2\""));
  EXPECT_EQ(result.window, (std::vector<size_t>{0, 1, 2}));
  std::cout << "Example explanation:\n" << result.explanation;
}

TEST(LincheckTest, ReadConcurrentWithPutMaySeeEitherValue) {
  for (const char* seen : {"v1", "v2"}) {
    EXPECT_TRUE(
        HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 60), Get(2, "k", seen, 30, 40)},
                   CheckOptions{}, Verdict::kLinearizable, "either"));
  }
  // ...but not go back once a read saw the new value.
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 60),
                          Get(2, "k", "v2", 30, 40), Get(3, "k", "v1", 45, 50)},
                         CheckOptions{}, Verdict::kNotLinearizable, "back"));
}

TEST(LincheckTest, ReadOfValueNeverWrittenIsNotLinearizable) {
  const CheckResult result =
      Check({Put(0, "k", "v1", 0, 10), Get(1, "k", "zzz", 20, 30)}, CheckOptions{});
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_TRUE(HasText(result.explanation, "no put of its key wrote"));
  EXPECT_EQ(result.window, std::vector<size_t>{1});
}

TEST(LincheckTest, ReadsSeeingWritesInOppositeOrders) {
  // Two concurrent puts; each of two readers sees one value and then the other.
  // Concurrent reads: W1 R_c1 R_d2 W2 R_c2 R_d1 is a valid order.
  const std::vector<Operation> concurrent = {
      Put(0, "k", "v1", 0, 100), Put(1, "k", "v2", 0, 100), Get(2, "k", "v1", 10, 90),
      Get(2, "k", "v2", 10, 90), Get(3, "k", "v2", 10, 90), Get(3, "k", "v1", 10, 90),
  };
  EXPECT_TRUE(HasVerdict(concurrent, CheckOptions{}, Verdict::kLinearizable, "opposite_conc"));
  // Sequential reads: reader 2 needs v1 before v2, reader 3 v2 before v1.
  const std::vector<Operation> sequential = {
      Put(0, "k", "v1", 0, 100), Put(1, "k", "v2", 0, 100), Get(2, "k", "v1", 10, 40),
      Get(2, "k", "v2", 50, 90), Get(3, "k", "v2", 10, 40), Get(3, "k", "v1", 50, 90),
  };
  EXPECT_TRUE(HasVerdict(sequential, CheckOptions{}, Verdict::kNotLinearizable, "opposite_seq"));
}

TEST(LincheckTest, UnknownPutMayTakeEffectLate) {
  std::vector<Operation> history = {
      Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 30, Outcome::kUnknown),  // timed out at 30
      Get(2, "k", "v1", 1'000, 1'010),                                         // not applied yet
      Get(2, "k", "v2", 2'000, 2'010),                                         // applied late
  };
  EXPECT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kLinearizable, "late"));
  // Had the put been acknowledged at 30, reading v1 at 1000 would be stale.
  history[1].outcome = Outcome::kOk;
  EXPECT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kNotLinearizable, "late_ok"));
}

TEST(LincheckTest, UnknownPutMayNeverTakeEffect) {
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 30, Outcome::kUnknown),
                          Get(2, "k", "v1", 1'000, 1'010), Get(2, "k", "v1", 2'000, 2'010)},
                         CheckOptions{}, Verdict::kLinearizable, "never"));
  // Many unknown puts of one key, some read, none ordered: still cheap.
  std::vector<Operation> history = {Put(0, "k", "v0", 0, 10)};
  for (int i = 1; i <= 40; ++i) {
    history.push_back(Put(1, "k", absl::StrCat("u", i), 20 + i, 25 + i, Outcome::kUnknown));
  }
  history.push_back(Get(2, "k", "u7", 1'000, 1'010));
  history.push_back(Get(2, "k", "u3", 1'020, 1'030));
  EXPECT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kLinearizable, "many_unknown"));
}

TEST(LincheckTest, UnknownPutCannotTakeEffectBeforeItsCall) {
  EXPECT_TRUE(HasVerdict({Get(2, "k", "v2", 0, 10), Put(1, "k", "v2", 20, 30, Outcome::kUnknown)},
                         CheckOptions{}, Verdict::kNotLinearizable, "before_call"));
}

TEST(LincheckTest, FailedOpsAreIgnored) {
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 30, Outcome::kFailed),
                          Get(2, "k", "v1", 40, 50)},
                         CheckOptions{}, Verdict::kLinearizable, "failed_ok"));
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 20, 30, Outcome::kFailed),
                          Get(2, "k", "v2", 40, 50)},
                         CheckOptions{}, Verdict::kNotLinearizable, "failed_read"));
}

TEST(LincheckTest, GetsWithoutResultAreIgnored) {
  EXPECT_TRUE(
      HasVerdict({Put(0, "k", "v1", 0, 10), Get(1, "k", "garbage", 20, 30, Outcome::kUnknown)},
                 CheckOptions{}, Verdict::kLinearizable, "unknown_get"));
}

TEST(LincheckTest, KeysAreCheckedIndependently) {
  const std::vector<Operation> history = {
      Put(0, "a", "1", 0, 10),  Get(1, "a", "1", 20, 30), Put(0, "b", "1", 0, 10),
      Put(0, "b", "2", 20, 30), Get(1, "b", "1", 40, 50),
  };
  const CheckResult result = Check(history, CheckOptions{});
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_EQ(result.key, "b");
}

TEST(LincheckTest, DuplicateValuesStayCorrect) {
  // The second "v" put makes the final read fine.
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v", 0, 10), Put(0, "k", "w", 20, 30),
                          Put(0, "k", "v", 40, 50), Get(1, "k", "v", 60, 70)},
                         CheckOptions{}, Verdict::kLinearizable, "dup_ok"));
  // Here the second "v" put starts only after the read returned.
  EXPECT_TRUE(HasVerdict({Put(0, "k", "v", 0, 10), Put(0, "k", "w", 20, 30),
                          Get(1, "k", "v", 40, 50), Put(0, "k", "v", 60, 70)},
                         CheckOptions{}, Verdict::kNotLinearizable, "dup_bad"));
}

TEST(LincheckTest, TouchingIntervalsCountAsConcurrent) {
  EXPECT_TRUE(
      HasVerdict({Put(0, "k", "v1", 0, 10), Put(1, "k", "v2", 10, 20), Get(2, "k", "v1", 20, 30)},
                 CheckOptions{}, Verdict::kLinearizable, "touch"));
}

TEST(LincheckTest, InvalidHistoryIsReported) {
  const CheckResult result = Check({Put(0, "k", "v1", 10, 5)}, CheckOptions{});
  EXPECT_EQ(result.verdict, Verdict::kInvalidHistory);
  EXPECT_TRUE(HasText(result.explanation, "op #0 returns before its call"));
  EXPECT_EQ(ValidateHistory({Get(0, "k", std::nullopt, 0, 1, Outcome::kOk, 3)}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateHistory({Put(0, "k", "v", 10, 5, Outcome::kUnknown)}).ok());
}

TEST(LincheckTest, Describe) {
  EXPECT_EQ(Describe(Put(3, "k", "v 1", 2'000'000, 4'500'000, Outcome::kOk, 7), 1'000'000),
            "c3 put \"k\" = \"v 1\" rev=7 [+1.000000ms, +3.500000ms] ok");
  EXPECT_EQ(Describe(Put(3, "k", "v", 100, 200, Outcome::kUnknown)),
            "c3 put \"k\" = \"v\" [+0.000100ms, +inf) unknown");
  EXPECT_EQ(Describe(Get(1, "k\n", std::nullopt, 100, 200)),
            "c1 get \"k\\n\" -> <not found> [+0.000100ms, +0.000200ms] ok");
  EXPECT_EQ(Describe(Get(1, "k", "x", 100, 200, Outcome::kFailed)),
            "c1 get \"k\" -> ? [+0.000100ms, +0.000200ms] failed");
}

// ---------------------------------------------------------------------------------------------
// Revision checks.

TEST(LincheckRevisionTest, ConsistentRevisionsPass) {
  EXPECT_TRUE(HasVerdict(
      {Put(0, "a", "1", 0, 10, Outcome::kOk, 2), Put(1, "b", "1", 20, 30, Outcome::kOk, 3),
       Get(2, "a", "1", 40, 50, Outcome::kOk, 2),
       // Concurrent puts may take revisions in either order.
       Put(0, "a", "2", 60, 100, Outcome::kOk, 5), Put(1, "b", "2", 60, 100, Outcome::kOk, 4),
       Get(2, "b", "2", 110, 120, Outcome::kOk, 4)},
      CheckOptions{}, Verdict::kLinearizable, "rev_ok"));
}

TEST(LincheckRevisionTest, GetMustSeeTheRevisionOfThePutItRead) {
  const std::vector<Operation> history = {Put(0, "a", "1", 0, 10, Outcome::kOk, 2),
                                          Get(2, "a", "1", 40, 50, Outcome::kOk, 3)};
  const CheckResult result = Check(history, CheckOptions{});
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_TRUE(HasText(result.explanation, "revision check"));
  EXPECT_EQ(result.window, (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(HasVerdict(history, NoRevisions(), Verdict::kLinearizable, "rev_off"));
  // A revision created by a put of another key.
  EXPECT_TRUE(HasVerdict(
      {Put(0, "a", "1", 0, 10, Outcome::kOk, 2), Put(0, "b", "1", 0, 10, Outcome::kOk, 3),
       Get(2, "a", "1", 40, 50, Outcome::kOk, 3)},
      CheckOptions{}, Verdict::kNotLinearizable, "rev_other_key"));
}

TEST(LincheckRevisionTest, RevisionsMustGrowInRealTimeAcrossKeys) {
  // Each key alone is linearizable; the revisions order b's put before a's, contradicting time.
  const std::vector<Operation> history = {Put(0, "a", "1", 0, 10, Outcome::kOk, 5),
                                          Put(1, "b", "1", 20, 30, Outcome::kOk, 4)};
  const CheckResult result = Check(history, CheckOptions{});
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_TRUE(HasText(result.explanation, "revisions must grow in real time"));
  EXPECT_TRUE(HasVerdict(history, NoRevisions(), Verdict::kLinearizable, "rt_off"));
  // A get that observed revision 5 returned before the put of b was called.
  EXPECT_TRUE(HasVerdict(
      {Put(0, "a", "1", 0, 100, Outcome::kOk, 5), Get(2, "a", "1", 10, 20, Outcome::kOk, 5),
       Put(1, "b", "1", 30, 40, Outcome::kOk, 4)},
      CheckOptions{}, Verdict::kNotLinearizable, "rt_get"));
}

TEST(LincheckRevisionTest, DistinctPutsHaveDistinctRevisions) {
  EXPECT_TRUE(HasVerdict(
      {Put(0, "a", "1", 0, 10, Outcome::kOk, 2), Put(1, "b", "1", 0, 10, Outcome::kOk, 2)},
      CheckOptions{}, Verdict::kNotLinearizable, "dup_rev"));
}

TEST(LincheckRevisionTest, ReadsOfOneKeyDoNotGoBackInRevisions) {
  // Reads concurrent with both puts; revisions say put "1" (rev 2) came before put "2" (rev 3).
  const std::vector<Operation> ok = {
      Put(0, "a", "1", 0, 100, Outcome::kOk, 2), Put(1, "a", "2", 0, 100, Outcome::kOk, 3),
      Get(2, "a", "1", 10, 20, Outcome::kOk, 2), Get(3, "a", "2", 30, 40, Outcome::kOk, 3)};
  EXPECT_TRUE(HasVerdict(ok, CheckOptions{}, Verdict::kLinearizable, "mono_ok"));
  // Values alone allow put 2, get 2, put 1, get 1; the revisions rule that order out.
  const std::vector<Operation> bad = {
      Put(0, "a", "1", 0, 100, Outcome::kOk, 2), Put(1, "a", "2", 0, 100, Outcome::kOk, 3),
      Get(2, "a", "2", 10, 20, Outcome::kOk, 3), Get(3, "a", "1", 30, 40, Outcome::kOk, 2)};
  const CheckResult result = Check(bad, CheckOptions{});
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_TRUE(HasText(result.explanation, "older mod_revision"));
}

// ---------------------------------------------------------------------------------------------
// Randomized: histories of a simulated linearizable store.

struct SimConfig {
  int clients = 5;
  int keys = 3;
  int ops = 200;
  double unknown_probability = 0.05;
  double failed_probability = 0.03;
  bool record_revisions = true;
};

// Each client runs ops one after another with random gaps and durations; every op that takes
// effect does so atomically at a random instant of its interval (unknown puts: never, or at a
// random instant after the call, possibly long after the client gave up). Applying the effects
// in instant order to a map gives the results, so the history is linearizable by construction.
std::vector<Operation> Simulate(uint64_t seed, const SimConfig& config) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  std::vector<int64_t> client_free_ns(static_cast<size_t>(config.clients));
  for (int64_t& t : client_free_ns) t = uniform(0, 5'000);
  std::vector<Operation> history;
  std::vector<std::pair<int64_t, size_t>> effects;  // (instant, op)
  for (int i = 0; i < config.ops; ++i) {
    const size_t client = static_cast<size_t>(uniform(0, config.clients - 1));
    Operation op;
    op.client_id = client;
    op.kind = chance(0.5) ? OpKind::kPut : OpKind::kGet;
    op.key = absl::StrCat("key/", uniform(0, config.keys - 1));
    if (op.kind == OpKind::kPut) op.value = absl::StrCat("v", i);
    op.call_ns = client_free_ns[client] + uniform(0, 3'000);
    const int64_t duration_ns = chance(0.1) ? uniform(10'000, 60'000) : uniform(100, 8'000);
    op.return_ns = op.call_ns + duration_ns;
    client_free_ns[client] = op.return_ns;
    std::optional<int64_t> effect_ns = uniform(op.call_ns, op.return_ns);
    if (chance(config.unknown_probability)) {
      op.outcome = Outcome::kUnknown;
      effect_ns.reset();
      if (op.kind == OpKind::kPut && chance(0.5)) {
        effect_ns = op.call_ns + uniform(0, 4 * duration_ns);
      }
    } else if (chance(config.failed_probability)) {
      op.outcome = Outcome::kFailed;
      effect_ns.reset();
    }
    if (effect_ns) effects.emplace_back(*effect_ns, history.size());
    history.push_back(std::move(op));
  }
  std::sort(effects.begin(), effects.end());
  std::map<std::string, std::pair<std::string, int64_t>> store;  // key -> (value, mod revision)
  int64_t revision = 1;
  for (const auto& [instant_ns, index] : effects) {
    Operation& op = history[index];
    if (op.kind == OpKind::kPut) {
      store[op.key] = {op.value, ++revision};
      if (op.outcome == Outcome::kOk && config.record_revisions) op.revision = revision;
    } else if (auto it = store.find(op.key); it != store.end()) {
      op.found = true;
      op.value = it->second.first;
      if (config.record_revisions) op.revision = it->second.second;
    }
  }
  return history;
}

bool IsOk(const Operation& op, OpKind kind) {
  return op.kind == kind && op.outcome == Outcome::kOk;
}

// Makes one ok get provably wrong and returns its index. Even seeds: the get reads the value of
// an ok put P1 that returned before another ok put P2 of the key was called, P2 having returned
// before the get was called; P1 < P2 < get in every linearization and P1 alone wrote its value,
// so the read is stale. Odd seeds: the get finds no key although a put of it had completed.
std::optional<size_t> Mutate(std::vector<Operation>* history, uint64_t seed) {
  std::vector<Operation>& h = *history;
  std::vector<size_t> gets;
  for (size_t i = 0; i < h.size(); ++i) {
    if (IsOk(h[i], OpKind::kGet)) gets.push_back(i);
  }
  std::shuffle(gets.begin(), gets.end(), std::mt19937_64(seed));
  for (size_t g : gets) {
    for (size_t p2 = 0; p2 < h.size(); ++p2) {
      if (!IsOk(h[p2], OpKind::kPut) || h[p2].key != h[g].key || h[p2].return_ns >= h[g].call_ns) {
        continue;
      }
      if (seed % 2 == 1) {
        h[g].found = false;
        h[g].value.clear();
        h[g].revision = 0;
        return g;
      }
      for (size_t p1 = 0; p1 < h.size(); ++p1) {
        if (!IsOk(h[p1], OpKind::kPut) || h[p1].key != h[g].key ||
            h[p1].return_ns >= h[p2].call_ns) {
          continue;
        }
        h[g].found = true;
        h[g].value = h[p1].value;
        h[g].revision = h[p1].revision;
        return g;
      }
    }
  }
  return std::nullopt;
}

TEST(LincheckRandomTest, SimulatedHistoriesAreLinearizableAndMutationsAreNot) {
  constexpr uint64_t kSeeds = 200;
  int mutated = 0;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::vector<Operation> history = Simulate(seed, SimConfig{});
    ASSERT_TRUE(
        HasVerdict(history, CheckOptions{}, Verdict::kLinearizable, absl::StrCat("sim_", seed)));
    const std::optional<size_t> get = Mutate(&history, seed);
    if (!get) continue;
    ++mutated;
    // Without revisions the search must find it; with them the cheap pass may find it first.
    const CheckResult result = Check(history, NoRevisions());
    ASSERT_EQ(result.verdict, Verdict::kNotLinearizable)
        << "mutated op #" << *get << "; saved to "
        << SaveForReplay(history, absl::StrCat("mutated_", seed));
    EXPECT_EQ(result.key, history[*get].key);
    EXPECT_FALSE(result.window.empty());
    EXPECT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kNotLinearizable,
                           absl::StrCat("mutated_rev_", seed)));
  }
  EXPECT_GE(mutated, 150) << "too few seeds produced a provable mutation";
}

TEST(LincheckRandomTest, SingleKeyHighContention) {
  SimConfig config;
  config.clients = 8;
  config.keys = 1;
  config.ops = 150;
  config.unknown_probability = 0.1;
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::vector<Operation> history = Simulate(seed, config);
    ASSERT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kLinearizable,
                           absl::StrCat("contention_", seed)));
    if (Mutate(&history, seed)) {
      ASSERT_TRUE(HasVerdict(history, NoRevisions(), Verdict::kNotLinearizable,
                             absl::StrCat("contention_mutated_", seed)));
    }
  }
}

// Reference answer by exhaustive search, for tiny histories: some subset of the unknown puts
// plus all ok ops, in some order that respects real time, replays correctly on registers.
bool BruteForceLinearizable(const std::vector<Operation>& h) {
  std::vector<size_t> definite;
  std::vector<size_t> unknown_puts;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].outcome == Outcome::kOk) definite.push_back(i);
    if (h[i].outcome == Outcome::kUnknown && h[i].kind == OpKind::kPut) unknown_puts.push_back(i);
  }
  auto return_ns = [&](size_t i) {
    return h[i].outcome == Outcome::kOk ? h[i].return_ns : std::numeric_limits<int64_t>::max();
  };
  for (uint32_t subset = 0; subset < (1u << unknown_puts.size()); ++subset) {
    std::vector<size_t> ops = definite;
    for (size_t u = 0; u < unknown_puts.size(); ++u) {
      if (subset & (1u << u)) ops.push_back(unknown_puts[u]);
    }
    std::vector<bool> placed(ops.size(), false);
    std::map<std::string, std::string> registers;
    // Depth-first over orders; an op may go next once every op that returned before its call
    // has been placed.
    std::function<bool(size_t)> extend = [&](size_t count) {
      if (count == ops.size()) return true;
      for (size_t a = 0; a < ops.size(); ++a) {
        if (placed[a]) continue;
        const Operation& op = h[ops[a]];
        bool ready = true;
        for (size_t b = 0; b < ops.size() && ready; ++b) {
          if (!placed[b] && b != a && return_ns(ops[b]) < op.call_ns) ready = false;
        }
        if (!ready) continue;
        auto it = registers.find(op.key);
        const std::optional<std::string> before =
            it == registers.end() ? std::nullopt : std::optional<std::string>(it->second);
        if (op.kind == OpKind::kGet) {
          const bool matches = op.found ? before == op.value : !before.has_value();
          if (!matches) continue;
        } else {
          registers[op.key] = op.value;
        }
        placed[a] = true;
        const bool done = extend(count + 1);
        placed[a] = false;
        if (before) {
          registers[op.key] = *before;
        } else {
          registers.erase(op.key);
        }
        if (done) return true;
      }
      return false;
    };
    if (extend(0)) return true;
  }
  return false;
}

// Random tiny histories with arbitrary (mostly wrong) results, duplicate values and every
// outcome: the checker must agree with the exhaustive search on each.
TEST(LincheckRandomTest, AgreesWithBruteForceOnTinyHistories) {
  int linearizable = 0;
  int not_linearizable = 0;
  for (uint64_t seed = 1; seed <= 5'000; ++seed) {
    std::mt19937_64 rng(seed);
    auto uniform = [&](int64_t lo, int64_t hi) {
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    std::vector<Operation> history;
    const int64_t ops = uniform(1, 8);
    for (int64_t i = 0; i < ops; ++i) {
      const std::string key = uniform(0, 3) == 0 ? "b" : "a";
      const std::string value = absl::StrCat("v", uniform(0, 3));
      const int64_t call_ns = uniform(0, 20);
      const int64_t return_ns = call_ns + uniform(0, 10);
      const int64_t roll = uniform(0, 9);
      const Outcome outcome = roll == 0   ? Outcome::kFailed
                              : roll <= 2 ? Outcome::kUnknown
                                          : Outcome::kOk;
      if (uniform(0, 1) == 0) {
        history.push_back(Put(i, key, value, call_ns, return_ns, outcome));
      } else {
        history.push_back(Get(i, key,
                              uniform(0, 4) == 0 ? std::nullopt : std::optional<std::string>(value),
                              call_ns, return_ns, outcome));
      }
    }
    const bool expected = BruteForceLinearizable(history);
    (expected ? linearizable : not_linearizable)++;
    ASSERT_TRUE(HasVerdict(history, NoRevisions(),
                           expected ? Verdict::kLinearizable : Verdict::kNotLinearizable,
                           absl::StrCat("tiny_", seed)))
        << "seed " << seed << "\n"
        << FormatHistory(history);
  }
  // Both answers must be well represented for the comparison to mean anything.
  EXPECT_GE(linearizable, 500);
  EXPECT_GE(not_linearizable, 500);
  std::cout << linearizable << " linearizable, " << not_linearizable << " not\n";
}

TEST(LincheckRandomTest, SwappedRevisionsAreCaught) {
  int swapped = 0;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    std::vector<Operation> history = Simulate(seed, SimConfig{});
    // Two ok puts in real-time order (a returned before b was called) trade revisions.
    bool done = false;
    for (size_t a = 0; a < history.size() && !done; ++a) {
      for (size_t b = 0; b < history.size() && !done; ++b) {
        if (IsOk(history[a], OpKind::kPut) && IsOk(history[b], OpKind::kPut) &&
            history[a].return_ns < history[b].call_ns) {
          std::swap(history[a].revision, history[b].revision);
          done = true;
        }
      }
    }
    swapped += done ? 1 : 0;
    ASSERT_TRUE(HasVerdict(history, CheckOptions{}, Verdict::kNotLinearizable,
                           absl::StrCat("swapped_", seed)));
  }
  EXPECT_EQ(swapped, 50);
}

TEST(LincheckRandomTest, LargeHistoryGetsADefiniteAnswer) {
  SimConfig config;
  config.clients = 8;
  config.keys = 50;
  config.ops = 20'000;
  config.unknown_probability = 0.02;
  config.failed_probability = 0.01;
  std::vector<Operation> history = Simulate(7, config);
  CheckOptions options;
  options.deadline_ms = 120'000;
  options.max_explored_states = 100'000'000;
  CheckResult result = Check(history, options);
  EXPECT_EQ(result.verdict, Verdict::kLinearizable) << result.explanation;
  EXPECT_EQ(result.keys_checked, 50u);
  std::cout << "20000 ops / 50 keys: " << result.explored_states << " states, " << result.elapsed_ms
            << " ms\n";

  // Without revisions, so that the search (not the revision pass) must find it.
  ASSERT_TRUE(Mutate(&history, 8).has_value());
  options.check_revisions = false;
  result = Check(history, options);
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  std::cout << "mutated: " << result.explored_states << " states, " << result.elapsed_ms << " ms\n";
}

TEST(LincheckRandomTest, BudgetExceededIsUnknown) {
  const std::vector<Operation> history = Simulate(3, SimConfig{});
  CheckOptions options;
  options.max_explored_states = 5;
  CheckResult result = Check(history, options);
  EXPECT_EQ(result.verdict, Verdict::kUnknown);
  EXPECT_TRUE(HasText(result.explanation, "explored-states budget (5) used up"));
  EXPECT_FALSE(result.key.empty());

  options = CheckOptions{};
  options.deadline_ms = 0;
  result = Check(history, options);
  EXPECT_EQ(result.verdict, Verdict::kUnknown);
  EXPECT_TRUE(HasText(result.explanation, "deadline"));
}

// ---------------------------------------------------------------------------------------------
// History files.

TEST(LincheckHistoryFileTest, RoundTripsAnyBytes) {
  std::vector<Operation> history = {
      Put(1, "k", "v", 10, 20, Outcome::kOk, 5),
      Put(2, "with space", "", -5, 7, Outcome::kUnknown),
      Get(3, "quote\"back\\slash", std::string("nul\0byte\n\xff", 11), 30, 40, Outcome::kOk, 9),
      Get(4, "", std::nullopt, 50, 60, Outcome::kFailed),
  };
  history[0].client_id = UINT64_MAX;
  const std::string text = FormatHistory(history);
  EXPECT_EQ(text.substr(0, text.find('\n')), "lincheck-history v1");
  absl::StatusOr<std::vector<Operation>> parsed = ParseHistory(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, history);

  const std::string path = ::testing::TempDir() + "lincheck_roundtrip.history";
  ASSERT_TRUE(WriteHistoryFile(path, history).ok());
  absl::StatusOr<std::vector<Operation>> read = ReadHistoryFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, history);
}

TEST(LincheckHistoryFileTest, ParseErrorsNameTheLine) {
  EXPECT_FALSE(ParseHistory("").ok());
  EXPECT_FALSE(ParseHistory("something else\n").ok());
  absl::StatusOr<std::vector<Operation>> parsed =
      ParseHistory("lincheck-history v1\n# comment\n\n1 put \"k\" \"v\" 0 1 2 ok\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(HasText(std::string(parsed.status().message()), "line 4"));
  EXPECT_FALSE(ParseHistory("lincheck-history v1\n1 del \"k\" \"v\" 0 1 2 ok 0\n").ok());
  EXPECT_FALSE(ParseHistory("lincheck-history v1\n1 put k \"v\" 0 1 2 ok 0\n").ok());
  EXPECT_FALSE(ParseHistory("lincheck-history v1\n1 put \"k\" \"v\" 2 1 2 ok 0\n").ok());
  EXPECT_FALSE(ParseHistory("lincheck-history v1\n1 put \"k\" \"v\" 0 1 2 maybe 0\n").ok());
  EXPECT_FALSE(ReadHistoryFile(::testing::TempDir() + "lincheck_no_such_file").ok());
  EXPECT_TRUE(ParseHistory("lincheck-history v1\n").ok());
}

// Replays a saved history: LINCHECK_REPLAY=<file> lincheck_test --gtest_filter='*Replay*'
// (LINCHECK_REPLAY_NO_REVISIONS=1 skips the revision pass).
TEST(LincheckReplayTest, ReplayFromEnvironment) {
  const char* path = std::getenv("LINCHECK_REPLAY");
  if (path == nullptr) GTEST_SKIP() << "set LINCHECK_REPLAY=<history file> to replay one";
  absl::StatusOr<std::vector<Operation>> history = ReadHistoryFile(path);
  ASSERT_TRUE(history.ok()) << history.status();
  CheckOptions options;
  options.check_revisions = std::getenv("LINCHECK_REPLAY_NO_REVISIONS") == nullptr;
  const CheckResult result = Check(*history, options);
  std::cout << history->size() << " ops: " << VerdictName(result.verdict) << " ("
            << result.explored_states << " states, " << result.elapsed_ms << " ms)\n"
            << result.explanation;
  EXPECT_EQ(result.verdict, Verdict::kLinearizable);
}

}  // namespace
}  // namespace meridian::lincheck
