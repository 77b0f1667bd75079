// Self-test of the multi-member cluster harness (cluster.h) against Debian's etcd 3.4
// (MERIDIAN_E2E_SERVER=etcd): start-up, replication, crash/restart, SIGSTOP/SIGCONT, learner
// add/promote/remove, and network partitions in namespaces (root only). Whoever makes
// meridian-node cluster-capable can run it with MERIDIAN_E2E_SERVER=meridian.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster.h"
#include "test_util.h"

namespace meridian::e2e {
namespace {

constexpr int kElectionWaitMs = 15000;
constexpr int kCatchUpWaitMs = 15000;

ClusterOptions Options(bool use_netns) {
  ClusterOptions options;
  options.kind = ServerKindFromEnv();
  options.members = 3;
  options.use_netns = use_netns;
  return options;
}

// Value of `key` as member i sees it; "<error: ...>" if the read failed. A serializable read is
// answered from the member's local state, so it also works on a member without a leader.
std::string Get(const Cluster& cluster, int i, const std::string& key, bool serializable) {
  std::vector<std::string> args = {"--dial-timeout=1s", "--command-timeout=2s", "get", key,
                                   "--print-value-only"};
  if (serializable) args.push_back("--consistency=s");
  CommandResult r = cluster.Ctl(i, args, "", 10000);
  if (r.exit_code != 0) {
    return absl::StrCat("<error: ", r.ErrorLines(), r.timed_out ? " (timed out)" : "", ">");
  }
  return std::string(absl::StripTrailingAsciiWhitespace(r.stdout_text));
}

// Polls a serializable read on member i until it returns `value`.
::testing::AssertionResult EventuallyReads(const Cluster& cluster, int i, const std::string& key,
                                           const std::string& value) {
  std::string last;
  if (WaitUntil(
          [&] {
            last = Get(cluster, i, key, /*serializable=*/true);
            return last == value;
          },
          kCatchUpWaitMs, 100)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << cluster.name(i) << " still reads '" << last
                                       << "' instead of '" << value << "' for " << key;
}

// A put through member i, retried while the cluster is between leaders.
::testing::AssertionResult PutVia(const Cluster& cluster, int i, const std::string& key,
                                  const std::string& value) {
  CommandResult last;
  if (WaitUntil(
          [&] {
            last = cluster.Ctl(i, {"--command-timeout=3s", "put", key, value}, "", 10000);
            return last.exit_code == 0;
          },
          kElectionWaitMs, 200)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "put via " << cluster.name(i) << ": " << Describe(last);
}

class ClusterHarnessTest : public ::testing::Test {
 protected:
  void StartCluster(bool use_netns) {
    cluster_ = std::make_unique<Cluster>(Options(use_netns));
    absl::Status started = cluster_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      std::fprintf(stderr, "%s\n", cluster_->Diagnostics().c_str());
    }
    cluster_.reset();
  }

  // Index of a running member other than `a` and `b`.
  int Other(int a, int b = -1) const {
    for (int i = 0; i < cluster_->size(); ++i) {
      if (i != a && i != b) return i;
    }
    return -1;
  }

  std::unique_ptr<Cluster> cluster_;
};

TEST_F(ClusterHarnessTest, StartsThreeMembersThatReplicate) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*use_netns=*/false));
  Cluster& c = *cluster_;
  ASSERT_EQ(c.size(), 3);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(c.Running(i));
    EXPECT_GT(c.pid(i), 0);
    EXPECT_EQ(c.name(i), absl::StrCat("m", i));
    EXPECT_TRUE(absl::StartsWith(c.endpoint(i), "127.0.0.1:")) << c.endpoint(i);
    EXPECT_TRUE(std::filesystem::is_directory(c.data_dir(i) + "/member")) << c.data_dir(i);
    EXPECT_TRUE(absl::StrContains(c.LogTail(i), "--initial-cluster=" + c.InitialCluster()));
    absl::StatusOr<uint64_t> id = c.MemberId(i);
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(ids[1], ids[2]);
  EXPECT_NE(ids[0], ids[2]);

  CommandResult members = c.Ctl(0, {"member", "list"});
  ASSERT_TRUE(Succeeded(members));
  EXPECT_EQ(SplitLines(members.stdout_text).size(), 3u) << members.stdout_text;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(absl::StrContains(members.stdout_text,
                                  absl::StrCat(Cluster::MemberIdHex(ids[i]), ", started, m", i)))
        << members.stdout_text;
  }

  ASSERT_TRUE(Succeeded(c.Ctl(0, {"put", "k", "v"})));
  EXPECT_EQ(Get(c, 1, "k", /*serializable=*/false), "v");
  EXPECT_EQ(Get(c, 2, "k", /*serializable=*/false), "v");
  CommandResult all = Etcdctl(c.endpoints(), {"get", "k", "--print-value-only"});
  EXPECT_TRUE(Succeeded(all));
  EXPECT_EQ(all.stdout_text, "v\n");

  absl::StatusOr<int> leader = c.LeaderIndex(5000);
  ASSERT_TRUE(leader.ok()) << leader.status();
  absl::StatusOr<EndpointStatusInfo> status = c.EndpointStatus(Other(*leader));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->leader_id, ids[static_cast<size_t>(*leader)]);
  EXPECT_FALSE(status->is_learner);
}

TEST_F(ClusterHarnessTest, KilledLeaderIsReplacedAndRejoinsAfterRestart) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*use_netns=*/false));
  Cluster& c = *cluster_;
  absl::StatusOr<int> old_leader = c.LeaderIndex(5000);
  ASSERT_TRUE(old_leader.ok()) << old_leader.status();
  const int killed = *old_leader;
  ASSERT_TRUE(Succeeded(c.Ctl(killed, {"put", "k", "v1"})));

  c.Kill(killed);
  EXPECT_FALSE(c.Running(killed));
  EXPECT_EQ(c.pid(killed), -1);
  absl::StatusOr<int> new_leader = c.WaitForLeader(kElectionWaitMs, /*exclude=*/killed);
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  EXPECT_NE(*new_leader, killed);
  const int survivor = Other(killed, *new_leader);
  EXPECT_EQ(Get(c, *new_leader, "k", /*serializable=*/false), "v1");
  EXPECT_EQ(Get(c, survivor, "k", /*serializable=*/false), "v1");
  ASSERT_TRUE(PutVia(c, survivor, "k", "v2"));

  absl::Status restarted = c.Restart(killed);
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_TRUE(c.Running(killed));
  EXPECT_TRUE(absl::StrContains(c.LogTail(killed), "--initial-cluster-state=existing"));
  EXPECT_EQ(Get(c, killed, "k", /*serializable=*/false), "v2");
  ASSERT_TRUE(Succeeded(c.Ctl(killed, {"put", "k", "v3"})));
  EXPECT_TRUE(EventuallyReads(c, survivor, "k", "v3"));

  // Graceful stop and restart of a follower.
  absl::StatusOr<int> leader = c.LeaderIndex(5000);
  ASSERT_TRUE(leader.ok()) << leader.status();
  const int follower = Other(*leader);
  absl::Status stopped = c.Stop(follower);
  ASSERT_TRUE(stopped.ok()) << stopped;
  EXPECT_FALSE(c.Running(follower));
  ASSERT_TRUE(PutVia(c, *leader, "k", "v4"));
  restarted = c.Restart(follower);
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_TRUE(EventuallyReads(c, follower, "k", "v4"));
}

TEST_F(ClusterHarnessTest, PausedLeaderIsReplacedAndCatchesUpAfterResume) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*use_netns=*/false));
  Cluster& c = *cluster_;
  ASSERT_TRUE(Succeeded(c.Ctl(0, {"put", "k", "v1"})));
  absl::StatusOr<int> old_leader = c.LeaderIndex(5000);
  ASSERT_TRUE(old_leader.ok()) << old_leader.status();
  const int paused = *old_leader;
  const pid_t paused_pid = c.pid(paused);

  absl::Status status = c.Pause(paused);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(c.Paused(paused));
  EXPECT_TRUE(c.Running(paused));
  absl::StatusOr<int> new_leader = c.WaitForLeader(kElectionWaitMs, /*exclude=*/paused);
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  ASSERT_TRUE(PutVia(c, *new_leader, "k", "v2"));
  // A stopped process accepts TCP connections (the kernel does) but never answers.
  CommandResult frozen =
      c.Ctl(paused, {"--dial-timeout=1s", "--command-timeout=1s", "get", "k", "--consistency=s"},
            "", 10000);
  EXPECT_NE(frozen.exit_code, 0) << Describe(frozen);

  status = c.Resume(paused);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_FALSE(c.Paused(paused));
  EXPECT_EQ(c.pid(paused), paused_pid);
  EXPECT_TRUE(EventuallyReads(c, paused, "k", "v2"));
  absl::StatusOr<int> leader = c.LeaderIndex(kElectionWaitMs);
  EXPECT_TRUE(leader.ok()) << leader.status();

  // Stop() on a paused member resumes it first so that SIGTERM is delivered.
  const int follower = Other(*new_leader);
  ASSERT_TRUE(c.Pause(follower).ok());
  absl::Status stopped = c.Stop(follower);
  EXPECT_TRUE(stopped.ok()) << stopped;
  EXPECT_FALSE(c.Running(follower));
}

TEST_F(ClusterHarnessTest, AddLearnerPromoteAndRemove) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*use_netns=*/false));
  Cluster& c = *cluster_;
  ASSERT_TRUE(Succeeded(c.Ctl(0, {"put", "k", "before-add"})));

  absl::StatusOr<int> added = c.AddMember("m3", /*learner=*/true);
  ASSERT_TRUE(added.ok()) << added.status();
  const int learner = *added;
  ASSERT_EQ(learner, 3);
  EXPECT_EQ(c.size(), 4);
  EXPECT_TRUE(absl::StrContains(c.endpoints(), c.endpoint(learner)));
  absl::StatusOr<EndpointStatusInfo> status = c.EndpointStatus(learner);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->is_learner);
  EXPECT_TRUE(EventuallyReads(c, learner, "k", "before-add"));
  CommandResult members = c.Ctl(0, {"member", "list"});
  ASSERT_TRUE(Succeeded(members));
  EXPECT_TRUE(absl::StrContains(members.stdout_text, "m3, " + c.peer_url(learner)))
      << members.stdout_text;
  EXPECT_TRUE(absl::StrContains(members.stdout_text, ", true\n")) << members.stdout_text;

  absl::StatusOr<uint64_t> id = c.MemberId(learner);
  ASSERT_TRUE(id.ok()) << id.status();
  const std::string hex = Cluster::MemberIdHex(*id);
  // etcd refuses to promote a learner that has not caught up with the leader yet.
  CommandResult promote;
  EXPECT_TRUE(WaitUntil(
      [&] {
        promote = c.Ctl(0, {"member", "promote", hex});
        return promote.exit_code == 0;
      },
      kCatchUpWaitMs, 200))
      << Describe(promote);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Succeeded(c.Ctl(learner, {"endpoint", "health"}));
      },
      kCatchUpWaitMs, 200));
  ASSERT_TRUE(Succeeded(c.Ctl(learner, {"put", "k", "after-promote"})));
  EXPECT_EQ(Get(c, 0, "k", /*serializable=*/false), "after-promote");

  ASSERT_TRUE(Succeeded(c.Ctl(0, {"member", "remove", hex})));
  c.Kill(learner);
  members = c.Ctl(0, {"member", "list"});
  ASSERT_TRUE(Succeeded(members));
  EXPECT_EQ(SplitLines(members.stdout_text).size(), 3u) << members.stdout_text;
  absl::StatusOr<int> leader = c.LeaderIndex(kElectionWaitMs);
  EXPECT_TRUE(leader.ok()) << leader.status();
  EXPECT_TRUE(PutVia(c, 0, "k", "after-remove"));

  // The two-step flow with a name the harness has not reserved is rejected clearly.
  absl::Status unknown = c.StartNewMember("nobody", c.InitialCluster());
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound) << unknown;
}

TEST(ClusterNetnsTest, BinaryRunsInPrivateNetworkNamespace) {
  // main() moved us there; without it every netns cluster is refused.
  EXPECT_TRUE(InPrivateNetworkNamespace());
  absl::Status status = NetnsStatus();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(NetnsAvailable(), status.ok());
}

TEST_F(ClusterHarnessTest, IsolatedLeaderLosesQuorumAndCatchesUpAfterHeal) {
  // Deliberately not a skip: a CI machine without root must show up as a failure.
  ASSERT_TRUE(NetnsAvailable()) << NetnsStatus();
  ASSERT_NO_FATAL_FAILURE(StartCluster(/*use_netns=*/true));
  Cluster& c = *cluster_;
  for (int i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(c.host(i), "10.231.")) << c.host(i);
    EXPECT_TRUE(absl::StartsWith(c.netns(i), absl::StrCat("mrd-", getpid(), "-"))) << c.netns(i);
    EXPECT_TRUE(std::filesystem::exists("/run/netns/" + c.netns(i))) << c.netns(i);
    // `ip netns exec` must have exec'ed the server in place: signals go to the server itself.
    std::error_code ec;
    EXPECT_EQ(std::filesystem::read_symlink(absl::StrCat("/proc/", c.pid(i), "/exe"), ec),
              std::filesystem::canonical(ServerBinary(c.options().kind), ec));
  }
  ASSERT_TRUE(Succeeded(c.Ctl(0, {"put", "k", "v1"})));
  absl::StatusOr<int> old_leader = c.LeaderIndex(5000);
  ASSERT_TRUE(old_leader.ok()) << old_leader.status();
  const int cut = *old_leader;

  absl::Status status = c.Isolate(cut);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(c.Isolated(cut));
  absl::StatusOr<int> new_leader = c.WaitForLeader(kElectionWaitMs, /*exclude=*/cut);
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  ASSERT_TRUE(PutVia(c, *new_leader, "k", "v2"));
  EXPECT_EQ(Get(c, Other(cut, *new_leader), "k", /*serializable=*/false), "v2");
  // The isolated member is alive and reachable from the test, but has no quorum: linearizable
  // reads and writes time out while its local (serializable) state is stale.
  CommandResult linearizable =
      c.Ctl(cut, {"--dial-timeout=1s", "--command-timeout=1s", "get", "k"}, "", 10000);
  EXPECT_NE(linearizable.exit_code, 0) << Describe(linearizable);
  CommandResult write =
      c.Ctl(cut, {"--dial-timeout=1s", "--command-timeout=1s", "put", "k", "lost"}, "", 10000);
  EXPECT_NE(write.exit_code, 0) << Describe(write);
  EXPECT_EQ(Get(c, cut, "k", /*serializable=*/true), "v1");

  status = c.Heal(cut);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_FALSE(c.Isolated(cut));
  EXPECT_TRUE(EventuallyReads(c, cut, "k", "v2"));
  absl::StatusOr<int> leader = c.LeaderIndex(kElectionWaitMs);
  ASSERT_TRUE(leader.ok()) << leader.status();

  // The same partition built from pairwise cuts, then a restart inside the namespace.
  const int pair_cut = *leader;
  for (int i = 0; i < c.size(); ++i) {
    if (i == pair_cut) continue;
    absl::Status cut_pair = c.IsolatePair(pair_cut, i);
    ASSERT_TRUE(cut_pair.ok()) << cut_pair;
  }
  new_leader = c.WaitForLeader(kElectionWaitMs, /*exclude=*/pair_cut);
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  ASSERT_TRUE(PutVia(c, *new_leader, "k", "v3"));
  ASSERT_TRUE(c.HealAll().ok());
  EXPECT_TRUE(EventuallyReads(c, pair_cut, "k", "v3"));
  absl::Status restarted = c.Restart(pair_cut);
  ASSERT_TRUE(restarted.ok()) << restarted;
  EXPECT_EQ(Get(c, pair_cut, "k", /*serializable=*/false), "v3");

  // Teardown leaves no process, namespace or partition rule behind.
  std::vector<pid_t> pids;
  std::vector<std::string> namespaces;
  for (int i = 0; i < c.size(); ++i) {
    pids.push_back(c.pid(i));
    namespaces.push_back(c.netns(i));
  }
  ASSERT_TRUE(c.Isolate(0).ok());
  cluster_.reset();
  for (pid_t pid : pids) {
    EXPECT_EQ(kill(pid, 0), -1) << pid;
    EXPECT_EQ(errno, ESRCH) << pid;
  }
  for (const std::string& name : namespaces) {
    EXPECT_FALSE(std::filesystem::exists("/run/netns/" + name)) << name;
  }
  CommandResult rules = RunCommand({"/usr/sbin/ip", "rule", "show"}, "", 10000);
  EXPECT_FALSE(absl::StrContains(rules.stdout_text, "blackhole")) << rules.stdout_text;
}

TEST(ClusterNetnsTest, PartitionsNeedNetns) {
  Cluster cluster(Options(/*use_netns=*/false));
  EXPECT_EQ(cluster.Isolate(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster.IsolatePair(0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster.Isolate(7).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace meridian::e2e
