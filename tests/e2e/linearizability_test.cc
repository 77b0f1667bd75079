// Linearizability of puts and linearizable gets on a 3-member cluster under faults: six gRPC
// clients (two pinned to each member, so that clients of a killed, paused or isolated member see
// its errors) hammer a few keys while the test kills, partitions and pauses members; the recorded
// history is then checked with tests/lincheck. A second test proves the pipeline can fail: a
// real history with one get tampered to read an overwritten value must be rejected.
// MERIDIAN_E2E_SERVER=etcd runs the same against Debian's etcd, as a reference that the test
// itself is sound (etcd 3.4 is linearizable for these operations).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cluster.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "harness.h"
#include "tests/lincheck/lincheck.h"

namespace meridian::e2e {
namespace {

using lincheck::CheckOptions;
using lincheck::CheckResult;
using lincheck::Operation;
using lincheck::OpKind;
using lincheck::Outcome;
using lincheck::Verdict;

#define ASSERT_OK(expr)                            \
  do {                                             \
    auto _st = (expr);                             \
    ASSERT_TRUE(_st.ok()) << #expr << ": " << _st; \
  } while (0)

constexpr int kMembers = 3;
constexpr int kClientsPerMember = 2;
// Few keys so that puts and gets of different clients collide on the same register often.
constexpr int kKeys = 5;
// Short enough that a client stuck on a paused or isolated member keeps producing operations
// (each an unknown put or a failed get) instead of sitting out the whole fault.
constexpr int kRpcDeadlineMs = 1000;
// After an error: a refused connection fails at once, and without a pause the client would
// flood the history with thousands of failed ops per second of downtime.
constexpr int kErrorBackoffMs = 20;
// Pace: at most one op per client per this interval (500/s), so that on a fast machine the op
// cap below still leaves room for the whole fault schedule (~20 s) and more.
constexpr int64_t kMinOpIntervalNs = 2'000'000;
// Bounds the history (and so the checker's work) however long the run takes.
constexpr int kMaxOpsPerClient = 20000;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

uint64_t SeedFromEnv() {
  const char* env = std::getenv("MERIDIAN_E2E_SEED");
  if (env != nullptr && *env != '\0') return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

ClusterOptions Options(bool use_netns) {
  ClusterOptions o;
  o.kind = ServerKindFromEnv();
  o.members = kMembers;
  o.use_netns = use_netns;
  return o;
}

// Closed-loop clients, each with its own channel (and TCP connection) to one member, recording
// every request as a lincheck::Operation. Threads only touch their own slot of the per-client
// vectors; the test thread reads them after Stop() has joined every thread.
class Workload {
 public:
  Workload(std::vector<std::string> endpoints, std::string key_prefix, uint64_t seed)
      : endpoints_(std::move(endpoints)), key_prefix_(std::move(key_prefix)), seed_(seed) {}
  ~Workload() { Stop(); }
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  // Starts the clients; they stop at Stop() or after max_duration_ms, whichever comes first
  // (the latter bounds the run if the test thread fails to stop them).
  void Start(int max_duration_ms) {
    deadline_ns_ = NowNs() + int64_t{max_duration_ms} * 1'000'000;
    const int clients = static_cast<int>(endpoints_.size()) * kClientsPerMember;
    histories_.assign(clients, {});
    errors_.assign(clients, {});
    for (int id = 0; id < clients; ++id) {
      // Client id -> member id % members: every member serves kClientsPerMember clients.
      threads_.emplace_back([this, id] {
        RunClient(id, endpoints_[static_cast<size_t>(id) % endpoints_.size()]);
      });
    }
  }

  void Stop() {
    stop_.store(true);
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  // Call after Stop().
  std::vector<Operation> History() const {
    std::vector<Operation> all;
    for (const auto& h : histories_) all.insert(all.end(), h.begin(), h.end());
    return all;
  }

  // "c0 123, c1 456, ..." (a client at kMaxOpsPerClient stopped early). Call after Stop().
  std::string OpsPerClient() const {
    std::string out;
    for (size_t id = 0; id < histories_.size(); ++id) {
      absl::StrAppend(&out, id == 0 ? "" : ", ", "c", id, " ", histories_[id].size());
    }
    return out;
  }

  // "count x kind code: message" lines, most frequent first. Call after Stop().
  std::string ErrorSummary(size_t max_lines = 12) const {
    std::map<std::string, int> merged;
    for (const auto& e : errors_) {
      for (const auto& [what, n] : e) merged[what] += n;
    }
    std::vector<std::pair<int, std::string>> sorted;
    for (const auto& [what, n] : merged) sorted.emplace_back(n, what);
    std::sort(sorted.rbegin(), sorted.rend());
    std::string out;
    for (size_t i = 0; i < sorted.size() && i < max_lines; ++i) {
      absl::StrAppend(&out, "  ", sorted[i].first, " x ", sorted[i].second, "\n");
    }
    return out.empty() ? "  (none)\n" : out;
  }

 private:
  void RunClient(int id, const std::string& endpoint) {
    grpc::ChannelArguments args;
    // A proxy from the environment would route 10.231.x.x elsewhere (or nowhere).
    args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
    // Own connection per client, not one subchannel shared by the two clients of a member.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // Reconnect quickly to a restarted member; gRPC's default backoff grows to two minutes.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    auto channel = grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
    auto kv = etcdserverpb::KV::NewStub(channel);
    std::mt19937_64 rng(seed_ * 1000003 + static_cast<uint64_t>(id));
    std::vector<Operation>& history = histories_[id];
    std::map<std::string, int>& errors = errors_[id];
    history.reserve(kMaxOpsPerClient);
    for (int seq = 0; seq < kMaxOpsPerClient; ++seq) {
      if (stop_.load() || NowNs() >= deadline_ns_) break;
      if (seq > 0) {
        const int64_t wait_ns = history.back().call_ns + kMinOpIntervalNs - NowNs();
        if (wait_ns > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(wait_ns));
      }
      Operation op;
      op.client_id = static_cast<uint64_t>(id);
      op.key = absl::StrCat(key_prefix_, "k", rng() % kKeys);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(kRpcDeadlineMs));
      grpc::Status status;
      if (rng() % 2 == 0) {
        op.kind = OpKind::kPut;
        op.value = absl::StrCat("c", id, "-", seq);
        etcdserverpb::PutRequest req;
        req.set_key(op.key);
        req.set_value(op.value);
        etcdserverpb::PutResponse resp;
        op.call_ns = NowNs();
        status = kv->Put(&ctx, req, &resp);
        op.return_ns = NowNs();
        if (status.ok()) {
          op.outcome = Outcome::kOk;
          // The header revision of a put is the revision the put created.
          op.revision = resp.header().revision();
        } else {
          // A timeout or lost connection says nothing about whether the put was committed.
          op.outcome = Outcome::kUnknown;
        }
      } else {
        op.kind = OpKind::kGet;
        etcdserverpb::RangeRequest req;
        req.set_key(op.key);
        req.set_serializable(false);
        etcdserverpb::RangeResponse resp;
        op.call_ns = NowNs();
        status = kv->Range(&ctx, req, &resp);
        op.return_ns = NowNs();
        if (status.ok()) {
          op.outcome = Outcome::kOk;
          if (resp.kvs_size() > 0) {
            op.found = true;
            op.value = resp.kvs(0).value();
            op.revision = resp.kvs(0).mod_revision();
          }
        } else {
          // A get changes nothing, so a failed one can simply be left out.
          op.outcome = Outcome::kFailed;
        }
      }
      history.push_back(std::move(op));
      if (!status.ok()) {
        ++errors[absl::StrCat(history.back().kind == OpKind::kPut ? "put " : "get ",
                              static_cast<int>(status.error_code()), ": ",
                              status.error_message().substr(0, 80))];
        SleepMs(kErrorBackoffMs);
      }
    }
  }

  const std::vector<std::string> endpoints_;
  const std::string key_prefix_;
  const uint64_t seed_;
  int64_t deadline_ns_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::vector<std::vector<Operation>> histories_;
  std::vector<std::map<std::string, int>> errors_;
};

struct Counts {
  int ok_puts = 0;
  int unknown_puts = 0;
  int ok_gets = 0;
  int found_gets = 0;
  int failed_gets = 0;
};

Counts Count(const std::vector<Operation>& history) {
  Counts c;
  for (const Operation& op : history) {
    if (op.kind == OpKind::kPut) {
      (op.outcome == Outcome::kOk ? c.ok_puts : c.unknown_puts)++;
    } else if (op.outcome == Outcome::kOk) {
      ++c.ok_gets;
      if (op.found) ++c.found_gets;
    } else {
      ++c.failed_gets;
    }
  }
  return c;
}

std::string Format(const Counts& c, size_t total) {
  return absl::StrFormat(
      "%d ops: puts %d ok / %d unknown, gets %d ok (%d found) / %d failed", total, c.ok_puts,
      c.unknown_puts, c.ok_gets, c.found_gets, c.failed_gets);
}

int64_t Origin(const std::vector<Operation>& history) {
  int64_t origin = INT64_MAX;
  for (const Operation& op : history) origin = std::min(origin, op.call_ns);
  return history.empty() ? 0 : origin;
}

// Saves the history for replay (see tests/lincheck/README.md) and returns a line saying where.
std::string SaveHistory(const std::vector<Operation>& history, const std::string& tag) {
  std::string path =
      absl::StrCat(::testing::TempDir(), "e2e_linearizability_", tag, "_", getpid(), ".history");
  absl::Status written = lincheck::WriteHistoryFile(path, history);
  if (!written.ok()) {
    return absl::StrCat("could not save the history to ", path, ": ", written.ToString());
  }
  return absl::StrCat("history saved to ", path,
                      " (replay: LINCHECK_REPLAY=<path> lincheck_test --gtest_filter='*Replay*')");
}

CheckOptions GenerousBudget() {
  CheckOptions options;
  options.max_explored_states = 100'000'000;
  options.deadline_ms = 120'000;
  return options;
}

// Wall-clock time of day as the member logs print it ("23:39:08.148"), to match fault events
// with log lines; the history itself uses the monotonic clock.
std::string WallClock() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
      1000);
  return absl::StrFormat("%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

// The faults, run from the test thread while the workload runs. Each event is recorded with
// its time so a failure report can place it among the ops (monotonic, relative to the first
// call) and among the member log lines (wall clock).
class FaultLog {
 public:
  void Note(const std::string& what) {
    std::string wall = WallClock();
    events_.push_back(Event{NowNs(), wall, what});
    std::printf("[fault %s] %s\n", wall.c_str(), what.c_str());
    std::fflush(stdout);
  }
  std::string Format(int64_t origin_ns) const {
    std::string out;
    for (const Event& e : events_) {
      absl::StrAppend(&out, absl::StrFormat("  %+10.3f ms  (%s)  %s\n",
                                            (e.ns - origin_ns) / 1e6, e.wall, e.what));
    }
    return out;
  }

 private:
  struct Event {
    int64_t ns;
    std::string wall;
    std::string what;
  };
  std::vector<Event> events_;
};

constexpr int kLeaderTimeoutMs = 15000;

absl::Status RunFaults(Cluster& c, FaultLog& log) {
  // Let the clients establish connections and a baseline before the first fault.
  SleepMs(1500);

  // 1. kill -9 the leader, then restart it on its data dir.
  absl::StatusOr<int> leader = c.LeaderIndex(kLeaderTimeoutMs);
  if (!leader.ok()) return leader.status();
  log.Note(absl::StrCat("kill -9 leader ", c.name(*leader)));
  c.Kill(*leader);
  absl::StatusOr<int> next = c.WaitForLeader(kLeaderTimeoutMs, *leader);
  if (!next.ok()) return next.status();
  log.Note(absl::StrCat("new leader ", c.name(*next)));
  SleepMs(1000);
  log.Note(absl::StrCat("restart ", c.name(*leader)));
  if (absl::Status s = c.Restart(*leader); !s.ok()) return s;
  log.Note(absl::StrCat(c.name(*leader), " healthy again"));
  SleepMs(1000);

  // 2. Isolate the leader: it must stop serving (its linearizable reads and its writes need a
  // quorum) while the majority elects a new leader; then heal.
  leader = c.LeaderIndex(kLeaderTimeoutMs);
  if (!leader.ok()) return leader.status();
  log.Note(absl::StrCat("isolate leader ", c.name(*leader)));
  if (absl::Status s = c.Isolate(*leader); !s.ok()) return s;
  next = c.WaitForLeader(kLeaderTimeoutMs, *leader);
  if (!next.ok()) return next.status();
  log.Note(absl::StrCat("new leader ", c.name(*next)));
  SleepMs(1000);
  log.Note(absl::StrCat("heal ", c.name(*leader)));
  if (absl::Status s = c.Heal(*leader); !s.ok()) return s;
  SleepMs(1500);

  // 3. Isolate a follower: the leader keeps its quorum; the follower's clients must fail.
  leader = c.LeaderIndex(kLeaderTimeoutMs);
  if (!leader.ok()) return leader.status();
  const int follower = (*leader + 1) % c.size();
  log.Note(absl::StrCat("isolate follower ", c.name(follower)));
  if (absl::Status s = c.Isolate(follower); !s.ok()) return s;
  SleepMs(2000);
  log.Note(absl::StrCat("heal ", c.name(follower)));
  if (absl::Status s = c.Heal(follower); !s.ok()) return s;
  SleepMs(1500);

  // 4. SIGSTOP the leader until a successor is elected, then SIGCONT: the resumed old leader
  // still believes it leads for a moment and must not serve stale reads meanwhile.
  leader = c.LeaderIndex(kLeaderTimeoutMs);
  if (!leader.ok()) return leader.status();
  log.Note(absl::StrCat("pause leader ", c.name(*leader)));
  if (absl::Status s = c.Pause(*leader); !s.ok()) return s;
  next = c.WaitForLeader(kLeaderTimeoutMs, *leader);
  if (!next.ok()) return next.status();
  log.Note(absl::StrCat("new leader ", c.name(*next)));
  SleepMs(1000);
  log.Note(absl::StrCat("resume ", c.name(*leader)));
  if (absl::Status s = c.Resume(*leader); !s.ok()) return s;
  SleepMs(1500);

  // Everyone back: a stable leader and some ops on the healed cluster.
  next = c.LeaderIndex(kLeaderTimeoutMs);
  if (!next.ok()) return next.status();
  log.Note(absl::StrCat("all members up, leader ", c.name(*next)));
  SleepMs(1000);
  return absl::OkStatus();
}

TEST(LinearizabilityTest, PutsAndGetsUnderKillsPartitionsAndPauses) {
  ASSERT_TRUE(NetnsAvailable()) << "network namespaces are needed for partitions: "
                                << NetnsStatus();
  const uint64_t seed = SeedFromEnv();
  std::printf("seed %llu (MERIDIAN_E2E_SEED; ops are chosen by it, timing is not)\n",
              static_cast<unsigned long long>(seed));
  Cluster c(Options(/*use_netns=*/true));
  ASSERT_OK(c.Start());

  std::vector<std::string> endpoints;
  for (int i = 0; i < c.size(); ++i) endpoints.push_back(c.endpoint(i));
  Workload workload(endpoints, "lin/", seed);
  FaultLog log;
  const int64_t started = NowNs();
  // Faults take ~15-20 s; the cap stops the clients even if the fault steps hang for long.
  workload.Start(/*max_duration_ms=*/60000);
  absl::Status faults = RunFaults(c, log);
  workload.Stop();
  const double run_s = (NowNs() - started) / 1e9;
  std::vector<Operation> history = workload.History();
  const Counts counts = Count(history);
  const int64_t origin = Origin(history);
  std::printf(
      "workload %.1f s, %s\nops per client (cap %d): %s\nerrors:\n%sfaults (relative to the "
      "first call):\n%s",
      run_s, Format(counts, history.size()).c_str(), kMaxOpsPerClient,
      workload.OpsPerClient().c_str(), workload.ErrorSummary().c_str(), log.Format(origin).c_str());
  std::fflush(stdout);
  EXPECT_TRUE(faults.ok()) << faults << "\n" << c.Diagnostics();

  CheckResult result = lincheck::Check(history, GenerousBudget());
  std::printf("lincheck: %s, %zu keys, %lld states, %lld ms\n",
              lincheck::VerdictName(result.verdict), result.keys_checked,
              static_cast<long long>(result.explored_states),
              static_cast<long long>(result.elapsed_ms));
  if (result.verdict != Verdict::kLinearizable) {
    ADD_FAILURE() << lincheck::VerdictName(result.verdict) << " (seed " << seed << ")\n"
                  << result.explanation << "\nfaults (relative to the first call):\n"
                  << log.Format(origin) << SaveHistory(history, "faults") << "\n"
                  << c.Diagnostics(16 * 1024);
  }
  // Without enough completed ops a "linearizable" verdict would mean nothing.
  EXPECT_GT(counts.ok_puts, 200) << Format(counts, history.size());
  EXPECT_GT(counts.ok_gets, 200) << Format(counts, history.size());
  EXPECT_GT(counts.found_gets, 100) << Format(counts, history.size());
}

// Finds an ok get G of key k and ok puts Pm, Pn of k with Pm returning before Pn's call and Pn
// returning before G's call, and makes G read Pm's value (with Pm's revision). Pn must be
// linearized between Pm and G, and values are unique, so no order explains the tampered read.
// Returns the index of G, or -1 if the history has no such triple.
int TamperOneGet(std::vector<Operation>& history) {
  std::vector<size_t> order(history.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return history[a].call_ns < history[b].call_ns; });
  for (size_t g : order) {
    const Operation& get = history[g];
    if (get.kind != OpKind::kGet || get.outcome != Outcome::kOk || !get.found) continue;
    for (size_t n = 0; n < history.size(); ++n) {
      const Operation& pn = history[n];
      if (pn.kind != OpKind::kPut || pn.outcome != Outcome::kOk || pn.key != get.key ||
          pn.return_ns >= get.call_ns) {
        continue;
      }
      for (size_t m = 0; m < history.size(); ++m) {
        const Operation& pm = history[m];
        if (pm.kind != OpKind::kPut || pm.outcome != Outcome::kOk || pm.key != get.key ||
            pm.return_ns >= pn.call_ns || pm.value == get.value) {
          continue;
        }
        history[g].value = pm.value;
        history[g].revision = pm.revision;
        return static_cast<int>(g);
      }
    }
  }
  return -1;
}

TEST(LinearizabilityTest, TamperedRealHistoryIsRejected) {
  const uint64_t seed = SeedFromEnv();
  Cluster c(Options(/*use_netns=*/false));
  ASSERT_OK(c.Start());
  std::vector<std::string> endpoints;
  for (int i = 0; i < c.size(); ++i) endpoints.push_back(c.endpoint(i));
  Workload workload(endpoints, "tamper/", seed);
  workload.Start(/*max_duration_ms=*/3000);
  SleepMs(2500);
  workload.Stop();
  std::vector<Operation> history = workload.History();
  const Counts counts = Count(history);
  std::printf("fault-free run: %s\nerrors:\n%s", Format(counts, history.size()).c_str(),
              workload.ErrorSummary().c_str());
  ASSERT_GT(counts.ok_puts, 20) << Format(counts, history.size());
  ASSERT_GT(counts.found_gets, 20) << Format(counts, history.size());

  // The untampered history must pass, or the tampering below would prove nothing.
  CheckResult clean = lincheck::Check(history, GenerousBudget());
  ASSERT_EQ(clean.verdict, Verdict::kLinearizable)
      << clean.explanation << "\n"
      << SaveHistory(history, "fault_free") << "\n"
      << c.Diagnostics(16 * 1024);

  const int g = TamperOneGet(history);
  ASSERT_GE(g, 0) << "no get followed two sequential puts of its key; "
                  << Format(counts, history.size());
  std::printf("tampered #%d: %s\n", g, lincheck::Describe(history[g], Origin(history)).c_str());

  // Caught by the revision pass (the read goes back in revisions) ...
  CheckResult with_revisions = lincheck::Check(history, GenerousBudget());
  EXPECT_EQ(with_revisions.verdict, Verdict::kNotLinearizable) << with_revisions.explanation;
  // ... and by the search alone, without the revision hints.
  CheckOptions no_revisions = GenerousBudget();
  no_revisions.check_revisions = false;
  CheckResult search_only = lincheck::Check(history, no_revisions);
  EXPECT_EQ(search_only.verdict, Verdict::kNotLinearizable) << search_only.explanation;
  std::printf("search-only explanation:\n%s\n", search_only.explanation.c_str());
}

}  // namespace
}  // namespace meridian::e2e
