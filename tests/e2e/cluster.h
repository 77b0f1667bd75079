// Multi-member e2e clusters: N server processes (Debian's etcd or meridian-node) started with
// etcd's static bootstrap flags, driven with `etcdctl`, with crash/stop/restart/pause per member,
// leader discovery, runtime membership changes and (optionally) network partitions built from
// Linux network namespaces. See tests/README.md ("Cluster harness").
//
// Network layout with ClusterOptions::use_netns (needs root and a private network namespace for
// the test binary, see EnterPrivateNetworkNamespace()):
//
//     test binary's netns (private, only `lo` + the veths below; IPv4 forwarding on)
//       mrdv<s0> 10.231.<s0>.1/24 ---- eth0 10.231.<s0>.2/24  in netns mrd-<pid>-<s0>: member 0
//       mrdv<s1> 10.231.<s1>.1/24 ---- eth0 10.231.<s1>.2/24  in netns mrd-<pid>-<s1>: member 1
//       ...
//
// Every member has its own namespace, address and the standard ports (client 2379, peer 2380,
// metrics 2381) and routes 10.231.0.0/16 through the test binary's namespace, which forwards
// between members. Member-to-member traffic is therefore *routed*, and a partition is a policy
// routing rule (`ip rule ... blackhole`) on forwarded packets only: locally generated traffic
// (`iif lo`, i.e. the test process and the etcdctl it spawns) is looked up before any partition
// rule, so tests can still talk to an isolated member and watch it fail to serve linearizable
// requests. A plain bridge cannot do that without ebtables/nftables.
#ifndef MERIDIAN_TESTS_E2E_CLUSTER_H_
#define MERIDIAN_TESTS_E2E_CLUSTER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "harness.h"

namespace meridian::e2e {

// Moves the calling process into a fresh network namespace that contains only `lo` (brought up).
// Call it first thing in main(), before any thread exists: unshare(CLONE_NEWNET) only moves the
// calling thread, and children inherit the namespace of the thread that forks them. Everything
// the test does afterwards (servers on 127.0.0.1, netns clusters) stays off the host's network.
// Fails (EPERM) without CAP_SYS_ADMIN; callers normally log the error and carry on, so that tests
// without use_netns still run and netns tests fail with NetnsStatus()'s explanation.
[[nodiscard]] absl::Status EnterPrivateNetworkNamespace();

// True if the current network namespace has no interface besides `lo` and this harness's
// `mrdv*` veths, i.e. nothing configured in it can reach or disturb the host's network. This is
// the precondition for creating netns clusters (the harness refuses to touch any other netns).
bool InPrivateNetworkNamespace();

// OK if Cluster can use use_netns here: `ip` (iproute2) is installed, the process is in a
// private network namespace, and `ip netns add` is permitted (probed once, then cached). The
// error message says what is missing and how to fix it.
[[nodiscard]] absl::Status NetnsStatus();
bool NetnsAvailable();

struct ClusterOptions {
  ServerKind kind = ServerKind::kMeridian;
  int members = 3;
  // Appended to every member's command line (also members added later).
  std::vector<std::string> extra_flags;
  // Each member in its own network namespace (see the file comment); enables Isolate()/Heal().
  bool use_netns = false;
  // --initial-cluster-token; empty means unique per Cluster object.
  std::string token;
  // Member names are <name_prefix><index>.
  std::string name_prefix = "m";
  // Raft timing flags; 0 leaves the server default (etcd: 100 ms / 1000 ms). Short values keep
  // elections after a kill or partition well under a second.
  int heartbeat_interval_ms = 50;
  int election_timeout_ms = 500;
  // Start(): all members healthy and a leader elected within this bound. Also the bound of
  // Restart() and StartNewMember() waiting for their member.
  int start_timeout_ms = 30000;
  // Stop(): SIGTERM, then SIGKILL after this long.
  int stop_grace_ms = 5000;
};

// One member's view from `etcdctl endpoint status -w json`.
struct EndpointStatusInfo {
  uint64_t member_id = 0;
  uint64_t leader_id = 0;  // 0 while the member knows no leader
  uint64_t raft_term = 0;
  uint64_t raft_index = 0;
  int64_t revision = 0;
  bool is_learner = false;
};

// A cluster of server processes. Members are addressed by index (0-based, in start order;
// members added at runtime get the next indices). Every process runs in its own process group
// with PR_SET_PDEATHSIG=SIGKILL, and the destructor kills all of them and removes namespaces,
// veths, partition rules and temp dirs, also when a test fails midway. Not thread-safe: use it
// from the test thread (PDEATHSIG is tied to the thread that forks).
//
// Methods taking a member index abort the test binary on an out-of-range index (a bug in the
// test, not a condition to handle).
class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Picks ports (or sets up namespaces), spawns all members with --initial-cluster-state=new and
  // waits until every member answers `etcdctl endpoint health` and a leader is known. On
  // 127.0.0.1, retries up to 3 times with fresh ports when a member dies at start-up (typically
  // a port taken by someone else between picking and binding).
  [[nodiscard]] absl::Status Start();

  // ---- Member access ----
  int size() const { return static_cast<int>(members_.size()); }
  const ClusterOptions& options() const { return options_; }
  const std::string& name(int i) const;
  const std::string& host(int i) const;  // "127.0.0.1" or the member's 10.231.x.2
  std::string endpoint(int i) const;     // "host:client_port", what etcdctl --endpoints takes
  std::string client_url(int i) const;   // "http://host:client_port"
  std::string peer_url(int i) const;     // "http://host:peer_port"
  std::string metrics_url(int i) const;  // "http://host:metrics_port"
  // endpoint() of every member that has been started, joined with ','.
  std::string endpoints() const;
  // --initial-cluster of the initial members: "m0=http://...,m1=http://...".
  std::string InitialCluster() const;
  const std::string& data_dir(int i) const;
  const std::string& log_path(int i) const;
  std::string LogTail(int i, size_t max_bytes = 64 * 1024) const;
  // -1 when the member is not running.
  pid_t pid(int i) const;
  // The member's network namespace name ("" without use_netns).
  const std::string& netns(int i) const;
  // Reaps the member if it exited on its own.
  bool Running(int i);
  bool Paused(int i) const;

  // etcdctl against member i only. Later flags win, so e.g. {"--command-timeout=1s", "get", "k"}
  // overrides the harness default command timeout.
  [[nodiscard]] CommandResult Ctl(int i, const std::vector<std::string>& args,
                                  const std::string& stdin_text = "", int timeout_ms = 20000) const;

  // ---- Process control ----
  // SIGKILL (crash). The data dir stays; Restart() or Launch() brings the member back.
  void Kill(int i);
  // SIGTERM (after SIGCONT if paused), then SIGKILL after options.stop_grace_ms.
  [[nodiscard]] absl::Status Stop(int i);
  // Stop() if running, then Launch() on the same data dir, ports and namespace with
  // --initial-cluster-state=existing (ignored by etcd on an existing data dir) and
  // WaitHealthy(). Needs a quorum of the other members to be up, since health means a committed
  // read; to restart a whole cluster, Launch() every member and then WaitHealthy() each.
  [[nodiscard]] absl::Status Restart(int i);
  // Spawns a stopped member without waiting for it.
  [[nodiscard]] absl::Status Launch(int i);
  // Polls `etcdctl endpoint health` on member i (for a learner, which cannot serve the
  // linearizable health read: `endpoint status`) until it succeeds. Fails early if the member
  // exits.
  [[nodiscard]] absl::Status WaitHealthy(int i, int timeout_ms);
  // SIGSTOP / SIGCONT the member's process group. Pause() returns once the kernel reports the
  // process as stopped.
  [[nodiscard]] absl::Status Pause(int i);
  [[nodiscard]] absl::Status Resume(int i);

  // ---- Leader ----
  // `endpoint status` of member i (1 s command timeout).
  [[nodiscard]] absl::StatusOr<EndpointStatusInfo> EndpointStatus(int i) const;
  // Member i's raft id (from endpoint status; cached once known).
  [[nodiscard]] absl::StatusOr<uint64_t> MemberId(int i);
  // The leader among the running, unpaused members: the member that names itself leader and is
  // named leader by a strict majority of the members that answered. A majority is required so
  // that a stale leader cut off by a partition, which may still believe in itself for an
  // election timeout, is not reported. Polls until such a member exists or timeout_ms passes.
  [[nodiscard]] absl::StatusOr<int> LeaderIndex(int timeout_ms);
  // Like LeaderIndex(), but keeps polling while the leader is `exclude` (e.g. the member just
  // killed or isolated, to wait for the election of its successor). exclude=-1: any leader.
  [[nodiscard]] absl::StatusOr<int> WaitForLeader(int timeout_ms, int exclude = -1);

  // ---- Membership changes ----
  // Two-step flow for `etcdctl member add`: ReserveMember() allocates the next index for `name`
  // (ports or namespace + address, data dir) without starting anything, so its peer_url() can be
  // passed to `member add --peer-urls=`. Then StartNewMember() launches it with the
  // ETCD_INITIAL_CLUSTER that `member add` printed and waits until it is healthy (learner: until
  // it answers `endpoint status`). etcd has no learner flag at start-up; `learner` only selects
  // that readiness check. Promote/remove with etcdctl using MemberIdHex(); a removed member
  // should be Kill()ed (etcd exits by itself once it learns about its removal).
  [[nodiscard]] absl::StatusOr<int> ReserveMember(const std::string& name);
  [[nodiscard]] absl::Status StartNewMember(const std::string& name,
                                            const std::string& initial_cluster,
                                            const std::string& initial_cluster_state = "existing",
                                            bool learner = false);
  // Both steps plus `member add [--learner]` on the current leader; retries while etcd answers
  // "unhealthy cluster" (it refuses member add until it has been connected to a quorum for 5 s
  // after start-up). Returns the new member's index.
  [[nodiscard]] absl::StatusOr<int> AddMember(const std::string& name, bool learner = false,
                                              int timeout_ms = 30000);
  // Lower-case hex member id, as etcdctl member promote/remove take it.
  static std::string MemberIdHex(uint64_t id);

  // ---- Network partitions (use_netns only) ----
  // Cuts member i off from every other member (both directions, existing connections included:
  // packets are dropped, as in a real partition, not rejected). The test process keeps reaching
  // it. Idempotent.
  [[nodiscard]] absl::Status Isolate(int i);
  // Undoes Isolate(i) (cuts made with IsolatePair stay).
  [[nodiscard]] absl::Status Heal(int i);
  // Cuts the link between members i and j only (both directions).
  [[nodiscard]] absl::Status IsolatePair(int i, int j);
  [[nodiscard]] absl::Status HealPair(int i, int j);
  // Removes every cut.
  [[nodiscard]] absl::Status HealAll();
  bool Isolated(int i) const { return isolated_.count(i) > 0; }

  // One block per member (name, endpoint, state, pid, log tail) for failure messages.
  std::string Diagnostics(size_t log_bytes_per_member = 4096);

 private:
  struct Member {
    std::string name;
    std::string data_dir;
    std::string log_path;
    std::string host;
    uint16_t client_port = 0;
    uint16_t peer_port = 0;
    uint16_t metrics_port = 0;
    std::string initial_cluster;
    // "new" until the first successful launch of an initial member, then "existing".
    std::string initial_cluster_state = "new";
    bool learner = false;
    bool launched_once = false;  // started at least once (counts for endpoints())
    pid_t pid = -1;
    bool paused = false;
    uint64_t member_id = 0;  // 0 until known
    // use_netns only.
    int slot = 0;       // third octet of the addresses, suffix of names
    std::string netns;  // mrd-<pid>-<slot>
    std::string veth;   // mrdv<slot>, our end of the member's veth pair
    bool netns_ready = false;
    bool network_touched = false;  // SetUpMemberNetwork() got past its safety checks
  };

  Member& At(int i);
  const Member& At(int i) const;
  [[nodiscard]] absl::Status CheckIndex(int i) const;
  [[nodiscard]] absl::Status NewMemberSlot(const std::string& name, int* index);
  [[nodiscard]] absl::Status PickLoopbackPorts(const std::vector<int>& indices);
  [[nodiscard]] absl::Status SetUpMemberNetwork(Member& member);
  void TearDownMemberNetwork(Member& member);
  std::vector<std::string> BuildArgv(const Member& member) const;
  [[nodiscard]] absl::Status StartOnce();
  [[nodiscard]] absl::Status CheckReady(int i, bool* ready);
  [[nodiscard]] absl::StatusOr<int> LeaderOnce();
  [[nodiscard]] absl::Status RequireNetns(int i) const;
  [[nodiscard]] absl::Status ApplyRule(bool add, const std::vector<std::string>& selector);
  std::vector<std::vector<std::string>> IsolationRules(int i) const;
  std::vector<std::vector<std::string>> PairRules(int i, int j) const;
  void KillAll();

  ClusterOptions options_;
  std::string token_;
  TempDir temp_;
  std::vector<Member> members_;
  int initial_members_ = 0;
  std::set<int> isolated_;
  std::set<std::pair<int, int>> cut_pairs_;  // (min, max)
};

}  // namespace meridian::e2e

#endif  // MERIDIAN_TESTS_E2E_CLUSTER_H_
