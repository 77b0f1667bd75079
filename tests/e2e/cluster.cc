#include "cluster.h"

#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace meridian::e2e {
namespace {

using Clock = std::chrono::steady_clock;

// Inside each member's own namespace the ports never collide, so they are the standard ones.
constexpr uint16_t kNetnsClientPort = 2379;
constexpr uint16_t kNetnsPeerPort = 2380;
constexpr uint16_t kNetnsMetricsPort = 2381;
// Member-to-member traffic is routed through the test's namespace; every member sends this
// range to its gateway.
constexpr char kNetnsRange[] = "10.231.0.0/16";
// Policy routing preferences: locally generated traffic (the test and its etcdctl) is looked up
// in `main` before any partition rule, so partitions only ever drop forwarded packets.
constexpr char kLocalTrafficPref[] = "100";
constexpr char kIsolatePref[] = "200";
constexpr char kPairPref[] = "300";
constexpr int kIpCommandTimeoutMs = 10000;

int64_t ElapsedMs(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

int RemainingMs(Clock::time_point start, int timeout_ms) {
  return static_cast<int>(std::max<int64_t>(0, timeout_ms - ElapsedMs(start)));
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Set by EnterPrivateNetworkNamespace() when unshare fails, quoted by NetnsStatus().
std::string& EnterError() {
  static std::string* error = new std::string();
  return *error;
}

std::string IpBinary() {
  // /usr/sbin is not on a non-root PATH; look there first.
  for (const char* candidate : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (IsExecutable(candidate)) return candidate;
  }
  return FindOnPath("ip");
}

[[nodiscard]] absl::Status RunIp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {IpBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, "", kIpCommandTimeoutMs);
  if (r.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), " failed (exit ", r.exit_code,
                                          r.timed_out ? ", timed out" : "", "): ", r.stderr_text,
                                          r.stdout_text));
}

// Best effort, for teardown paths that must not stop half-way.
void RunIpQuietly(const std::vector<std::string>& args) {
  absl::Status status = RunIp(args);
  if (!status.ok() && !absl::StrContains(status.message(), "Cannot find device") &&
      !absl::StrContains(status.message(), "No such file")) {
    std::fprintf(stderr, "e2e cluster: teardown: %s\n", std::string(status.message()).c_str());
  }
}

std::string CurrentNetnsId() {
  std::error_code ec;
  std::filesystem::path target = std::filesystem::read_symlink("/proc/self/ns/net", ec);
  return ec ? std::string() : target.string();
}

[[nodiscard]] absl::Status WriteProcFile(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", value, "' to ", path));
  return absl::OkStatus();
}

// The state letter of /proc/<pid>/stat ('R', 'S', 'T' stopped, 'Z' zombie...); '?' if unknown.
char ProcessState(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  std::getline(in, stat);
  size_t paren = stat.rfind(')');  // the command name may contain spaces and parentheses
  return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

// Deletes namespaces named mrd-<pid>-* whose creating process no longer exists: the member
// processes die with the test binary (PDEATHSIG), but the /run/netns bind mounts would not.
void CleanStaleNamespaces() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/run/netns", ec);
  if (ec) return;  // no namespaces at all
  std::vector<std::string> stale;
  for (const std::filesystem::directory_entry& entry : it) {
    std::string name = entry.path().filename().string();
    absl::string_view rest(name);
    if (!absl::ConsumePrefix(&rest, "mrd-")) continue;
    std::vector<std::string> parts = absl::StrSplit(rest, '-');
    int pid = 0;
    if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &pid) || pid <= 0) continue;
    if (pid == getpid()) continue;
    // A crashed test binary can linger as a zombie until its parent reaps it; that is dead too.
    const bool alive = (kill(pid, 0) == 0 || errno != ESRCH) && ProcessState(pid) != 'Z';
    if (!alive) stale.push_back(name);
  }
  for (const std::string& name : stale) {
    std::fprintf(stderr, "e2e cluster: deleting stale network namespace %s\n", name.c_str());
    RunIpQuietly({"netns", "del", name});
  }
}

// One-time configuration of the test binary's own (private) namespace: forwarding between the
// member veths, no reverse-path filter (inherited settings could drop asymmetric paths), and
// the rule that keeps the test's own traffic out of partition rules. Repeated per namespace.
[[nodiscard]] absl::Status PrepareTestNamespace() {
  static std::string* prepared_for = new std::string();
  const std::string current = CurrentNetnsId();
  if (!current.empty() && current == *prepared_for) return absl::OkStatus();
  if (!InPrivateNetworkNamespace()) {
    return absl::FailedPreconditionError(
        "refusing to configure routing in a network namespace that has interfaces other than lo");
  }
  absl::Status s = WriteProcFile("/proc/sys/net/ipv4/ip_forward", "1");
  if (!s.ok()) return s;
  for (const char* conf : {"all", "default"}) {
    s = WriteProcFile(absl::StrCat("/proc/sys/net/ipv4/conf/", conf, "/rp_filter"), "0");
    if (!s.ok()) return s;
  }
  CommandResult rules =
      RunCommand({IpBinary(), "rule", "show", "pref", kLocalTrafficPref}, "", kIpCommandTimeoutMs);
  if (rules.exit_code != 0 || !absl::StrContains(rules.stdout_text, "iif lo")) {
    s = RunIp({"rule", "add", "pref", kLocalTrafficPref, "iif", "lo", "lookup", "main"});
    if (!s.ok()) return s;
  }
  *prepared_for = current;
  return absl::OkStatus();
}

// Third octet of the next member's addresses. Process-wide, so that clusters created one after
// another (or at the same time) never share addresses or interface names.
int NextSlot() {
  static int next = 0;
  int slot = next % 254 + 1;
  ++next;
  return slot;
}

std::string SlotAddress(int slot, int host) { return absl::StrCat("10.231.", slot, ".", host); }

std::string UniqueToken() {
  static int counter = 0;
  return absl::StrCat("mrd-", getpid(), "-", ++counter, "-",
                      std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count());
}

std::optional<uint64_t> JsonU64(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return std::nullopt;
  const nlohmann::json& v = j[key];
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  return std::nullopt;
}

[[noreturn]] void DieBadIndex(int i, int size) {
  std::fprintf(stderr, "e2e cluster: fatal: member index %d out of range [0, %d)\n", i, size);
  std::abort();
}

}  // namespace

absl::Status EnterPrivateNetworkNamespace() {
  if (unshare(CLONE_NEWNET) != 0) {
    EnterError() = absl::StrCat("unshare(CLONE_NEWNET): ", std::strerror(errno),
                                " (needs root / CAP_SYS_ADMIN)");
    return absl::PermissionDeniedError(EnterError());
  }
  EnterError().clear();
  // A new namespace's lo is down; 127.0.0.1 servers need it.
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  absl::Status status = absl::OkStatus();
  if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
    status = absl::InternalError(absl::StrCat("SIOCGIFFLAGS lo: ", std::strerror(errno)));
  } else {
    request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) {
      status = absl::InternalError(absl::StrCat("SIOCSIFFLAGS lo up: ", std::strerror(errno)));
    }
  }
  close(fd);
  return status;
}

bool InPrivateNetworkNamespace() {
  struct if_nameindex* interfaces = if_nameindex();
  if (interfaces == nullptr) return false;
  bool only_ours = true;
  for (struct if_nameindex* it = interfaces; it->if_index != 0 && it->if_name != nullptr; ++it) {
    absl::string_view name(it->if_name);
    if (name != "lo" && !absl::StartsWith(name, "mrdv")) only_ours = false;
  }
  if_freenameindex(interfaces);
  return only_ours;
}

absl::Status NetnsStatus() {
  const std::string ip = IpBinary();
  if (!IsExecutable(ip)) {
    return absl::FailedPreconditionError(
        "network namespaces need iproute2's `ip` (apt install iproute2); not found in /usr/sbin, "
        "/sbin or PATH");
  }
  if (!InPrivateNetworkNamespace()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the test binary is not in a private network namespace (its namespace has interfaces "
        "besides lo), and the harness never touches the host's network. Call "
        "EnterPrivateNetworkNamespace() at the start of main() or run the binary under "
        "`unshare --net`; both need root.",
        EnterError().empty()
            ? ""
            : absl::StrCat(" EnterPrivateNetworkNamespace() failed: ", EnterError())));
  }
  // `ip netns add` needs CAP_SYS_ADMIN for the /run/netns bind mount; probe once per process.
  static absl::Status* probe = nullptr;
  if (probe == nullptr) {
    CleanStaleNamespaces();
    const std::string name = absl::StrCat("mrd-", getpid(), "-probe");
    absl::Status added = RunIp({"netns", "add", name});
    if (added.ok()) RunIpQuietly({"netns", "del", name});
    probe = new absl::Status();
    if (!added.ok()) {
      *probe = absl::PermissionDeniedError(
          absl::StrCat("cannot create network namespaces (root needed, euid ", geteuid(),
                       "): ", added.message()));
    }
  }
  return *probe;
}

bool NetnsAvailable() { return NetnsStatus().ok(); }

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  token_ = options_.token.empty() ? UniqueToken() : options_.token;
  initial_members_ = std::max(0, options_.members);
  for (int i = 0; i < initial_members_; ++i) {
    int index = 0;
    absl::Status status = NewMemberSlot(absl::StrCat(options_.name_prefix, i), &index);
    if (!status.ok()) {
      std::fprintf(stderr, "e2e cluster: %s\n", std::string(status.message()).c_str());
    }
  }
}

Cluster::~Cluster() {
  KillAll();
  if (options_.use_netns) {
    (void)HealAll();  // the rules would outlive us in a process that goes on to other tests
    for (Member& member : members_) TearDownMemberNetwork(member);
  }
}

Cluster::Member& Cluster::At(int i) {
  if (i < 0 || i >= size()) DieBadIndex(i, size());
  return members_[static_cast<size_t>(i)];
}

const Cluster::Member& Cluster::At(int i) const {
  if (i < 0 || i >= size()) DieBadIndex(i, size());
  return members_[static_cast<size_t>(i)];
}

absl::Status Cluster::CheckIndex(int i) const {
  if (i >= 0 && i < size()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("member index ", i, " out of range [0, ", size(), ")"));
}

absl::Status Cluster::NewMemberSlot(const std::string& name, int* index) {
  if (!temp_.ok()) return absl::InternalError("could not create the cluster's temp dir");
  for (const Member& m : members_) {
    if (m.name == name) return absl::AlreadyExistsError(absl::StrCat("member name ", name));
  }
  Member member;
  member.name = name;
  const std::string dir = absl::StrCat(temp_.path(), "/", name);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  member.data_dir = absl::StrCat(dir, "/data");
  member.log_path = absl::StrCat(dir, "/server.log");
  if (options_.use_netns) {
    member.slot = NextSlot();
    member.netns = absl::StrCat("mrd-", getpid(), "-", member.slot);
    member.veth = absl::StrCat("mrdv", member.slot);
    member.host = SlotAddress(member.slot, 2);
    member.client_port = kNetnsClientPort;
    member.peer_port = kNetnsPeerPort;
    member.metrics_port = kNetnsMetricsPort;
  } else {
    member.host = "127.0.0.1";
  }
  members_.push_back(std::move(member));
  *index = size() - 1;
  return absl::OkStatus();
}

absl::Status Cluster::PickLoopbackPorts(const std::vector<int>& indices) {
  // Ports of all members must differ from each other and from the members already running.
  std::set<uint16_t> used;
  for (const Member& m : members_) {
    if (m.launched_once) used.insert({m.client_port, m.peer_port, m.metrics_port});
  }
  for (int i : indices) {
    uint16_t* ports[] = {&At(i).client_port, &At(i).peer_port, &At(i).metrics_port};
    for (uint16_t* port : ports) {
      for (int attempt = 0;; ++attempt) {
        absl::StatusOr<uint16_t> picked = PickFreePort();
        if (!picked.ok()) return picked.status();
        if (used.insert(*picked).second) {
          *port = *picked;
          break;
        }
        if (attempt > 100) return absl::ResourceExhaustedError("no distinct free ports");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Cluster::SetUpMemberNetwork(Member& member) {
  if (member.netns_ready) return absl::OkStatus();
  absl::Status status = NetnsStatus();
  if (!status.ok()) return status;
  status = PrepareTestNamespace();
  if (!status.ok()) return status;
  const std::string gateway = SlotAddress(member.slot, 1);
  member.network_touched = true;
  // A namespace with our pid in its name can only be a leftover of an earlier Cluster in this
  // process whose teardown failed; it would make `netns add` fail.
  RunIpQuietly({"netns", "del", member.netns});
  const std::vector<std::vector<std::string>> steps = {
      {"netns", "add", member.netns},
      {"link", "add", member.veth, "type", "veth", "peer", "name", "eth0", "netns", member.netns},
      {"addr", "add", gateway + "/24", "dev", member.veth},
      {"link", "set", member.veth, "up"},
      {"-n", member.netns, "link", "set", "lo", "up"},
      {"-n", member.netns, "addr", "add", member.host + "/24", "dev", "eth0"},
      {"-n", member.netns, "link", "set", "eth0", "up"},
      {"-n", member.netns, "route", "add", kNetnsRange, "via", gateway},
  };
  for (const std::vector<std::string>& step : steps) {
    status = RunIp(step);
    if (!status.ok()) {
      TearDownMemberNetwork(member);
      return status;
    }
  }
  member.netns_ready = true;
  return absl::OkStatus();
}

void Cluster::TearDownMemberNetwork(Member& member) {
  // Only what SetUpMemberNetwork() created, and only after it checked that this namespace is
  // private: an interface called mrdv<n> elsewhere is none of our business.
  if (!member.network_touched) return;
  // Deleting our end removes the pair at once; deleting the namespace alone leaves our end
  // around until the kernel's asynchronous namespace cleanup gets to it.
  RunIpQuietly({"link", "del", member.veth});
  RunIpQuietly({"netns", "del", member.netns});
  member.netns_ready = false;
  member.network_touched = false;
}

std::vector<std::string> Cluster::BuildArgv(const Member& member) const {
  std::vector<std::string> argv;
  if (options_.use_netns) {
    // `ip netns exec` execs the server in place (same pid, so signals, PDEATHSIG and the process
    // group all apply to the server itself).
    argv = {IpBinary(), "netns", "exec", member.netns};
  }
  const std::string client_url = absl::StrCat("http://", member.host, ":", member.client_port);
  const std::string peer_url = absl::StrCat("http://", member.host, ":", member.peer_port);
  std::vector<std::string> flags = {
      ServerBinary(options_.kind),
      absl::StrCat("--name=", member.name),
      absl::StrCat("--data-dir=", member.data_dir),
      absl::StrCat("--listen-client-urls=", client_url),
      absl::StrCat("--advertise-client-urls=", client_url),
      absl::StrCat("--listen-peer-urls=", peer_url),
      absl::StrCat("--initial-advertise-peer-urls=", peer_url),
      absl::StrCat("--listen-metrics-urls=http://", member.host, ":", member.metrics_port),
      absl::StrCat("--initial-cluster=", member.initial_cluster),
      absl::StrCat("--initial-cluster-state=", member.initial_cluster_state),
      absl::StrCat("--initial-cluster-token=", token_),
  };
  argv.insert(argv.end(), flags.begin(), flags.end());
  if (options_.heartbeat_interval_ms > 0) {
    argv.push_back(absl::StrCat("--heartbeat-interval=", options_.heartbeat_interval_ms));
  }
  if (options_.election_timeout_ms > 0) {
    argv.push_back(absl::StrCat("--election-timeout=", options_.election_timeout_ms));
  }
  argv.insert(argv.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  return argv;
}

absl::Status Cluster::Start() {
  if (!temp_.ok()) return absl::InternalError("could not create the cluster's temp dir");
  if (initial_members_ < 1 || size() != initial_members_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster of ", options_.members, " members could not be set up"));
  }
  for (const Member& m : members_) {
    if (m.launched_once) return absl::FailedPreconditionError("cluster already started");
  }
  const std::string binary = ServerBinary(options_.kind);
  if (!IsExecutable(binary)) {
    return absl::NotFoundError(absl::StrCat(ServerKindName(options_.kind), " binary not found at '",
                                            binary, "' (MERIDIAN_E2E_SERVER=etcd selects etcd)"));
  }
  if (!IsExecutable(EtcdctlBinary())) {
    return absl::NotFoundError(absl::StrCat("etcdctl not found at ", EtcdctlBinary()));
  }
  if (options_.use_netns) {
    absl::Status netns = NetnsStatus();
    if (!netns.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("ClusterOptions::use_netns: ", netns.message()));
    }
    for (Member& m : members_) {
      absl::Status status = SetUpMemberNetwork(m);
      if (!status.ok()) return status;
    }
    return StartOnce();  // ports are private to each namespace: nothing to retry
  }
  absl::Status last = absl::OkStatus();
  constexpr int kMaxAttempts = 3;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    std::vector<int> all(static_cast<size_t>(size()));
    for (int i = 0; i < size(); ++i) all[static_cast<size_t>(i)] = i;
    absl::Status ports = PickLoopbackPorts(all);
    if (!ports.ok()) return ports;
    last = StartOnce();
    if (last.ok()) return last;
    // Only an early exit (typically EADDRINUSE) is worth retrying with new ports.
    if (last.code() != absl::StatusCode::kUnavailable) return last;
    std::fprintf(stderr, "e2e cluster: start attempt %d failed, retrying: %s\n", attempt + 1,
                 std::string(last.message()).c_str());
  }
  return last;
}

absl::Status Cluster::StartOnce() {
  const std::string initial_cluster = InitialCluster();
  for (int i = 0; i < size(); ++i) {
    Member& m = At(i);
    // A failed attempt may have left a half-initialised data dir behind.
    std::error_code ec;
    std::filesystem::remove_all(m.data_dir, ec);
    m.initial_cluster = initial_cluster;
    m.initial_cluster_state = "new";
    m.member_id = 0;
    absl::Status launched = Launch(i);
    if (!launched.ok()) {
      KillAll();
      return launched;
    }
  }
  const auto start = Clock::now();
  std::vector<bool> ready(static_cast<size_t>(size()), false);
  while (true) {
    bool all_ready = true;
    for (int i = 0; i < size(); ++i) {
      if (ready[static_cast<size_t>(i)]) continue;
      bool member_ready = false;
      absl::Status status = CheckReady(i, &member_ready);
      if (!status.ok()) {
        KillAll();
        return status;
      }
      ready[static_cast<size_t>(i)] = member_ready;
      all_ready = all_ready && member_ready;
    }
    if (all_ready) break;
    if (ElapsedMs(start) >= options_.start_timeout_ms) {
      std::string diagnostics = Diagnostics(4096);
      KillAll();
      return absl::DeadlineExceededError(absl::StrCat(
          "cluster not healthy after ", options_.start_timeout_ms, " ms\n", diagnostics));
    }
    SleepMs(100);
  }
  absl::StatusOr<int> leader = WaitForLeader(RemainingMs(start, options_.start_timeout_ms) + 1000);
  if (!leader.ok()) {
    std::string diagnostics = Diagnostics(4096);
    KillAll();
    return absl::DeadlineExceededError(absl::StrCat(
        "cluster healthy but no leader: ", leader.status().message(), "\n", diagnostics));
  }
  // From now on a restart must not try to bootstrap again.
  for (Member& m : members_) m.initial_cluster_state = "existing";
  return absl::OkStatus();
}

absl::Status Cluster::CheckReady(int i, bool* ready) {
  *ready = false;
  if (!Running(i)) {
    return absl::UnavailableError(
        absl::StrCat("member ", name(i), " exited during start-up; log tail:\n", LogTail(i, 8192)));
  }
  const Member& m = At(i);
  std::vector<std::string> argv = {EtcdctlBinary(),     absl::StrCat("--endpoints=", endpoint(i)),
                                   "--dial-timeout=1s", "--command-timeout=2s",
                                   "endpoint",          m.learner ? "status" : "health"};
  CommandResult r = RunCommand(argv, "", 5000);
  *ready = r.exit_code == 0;
  return absl::OkStatus();
}

absl::Status Cluster::Launch(int i) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (Running(i)) return absl::FailedPreconditionError(absl::StrCat(name(i), " is running"));
  Member& m = At(i);
  if (m.initial_cluster.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(m.name, " has no --initial-cluster yet (StartNewMember() starts it first)"));
  }
  if (options_.use_netns) {
    absl::Status network = SetUpMemberNetwork(m);
    if (!network.ok()) return network;
  }
  absl::StatusOr<pid_t> pid = SpawnWithLog(BuildArgv(m), m.log_path);
  if (!pid.ok()) return pid.status();
  m.pid = *pid;
  m.paused = false;
  m.launched_once = true;
  return absl::OkStatus();
}

absl::Status Cluster::WaitHealthy(int i, int timeout_ms) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  const auto start = Clock::now();
  while (true) {
    bool ready = false;
    absl::Status status = CheckReady(i, &ready);
    if (!status.ok()) return status;
    if (ready) return absl::OkStatus();
    if (ElapsedMs(start) >= timeout_ms) {
      return absl::DeadlineExceededError(absl::StrCat(name(i), " not healthy after ", timeout_ms,
                                                      " ms; log tail:\n", LogTail(i, 8192)));
    }
    SleepMs(100);
  }
}

void Cluster::Kill(int i) {
  Member& m = At(i);
  if (m.pid > 0) KillGroupAndReap(m.pid);  // SIGKILL also ends a SIGSTOPped process
  m.pid = -1;
  m.paused = false;
}

void Cluster::KillAll() {
  for (int i = 0; i < size(); ++i) Kill(i);
}

absl::Status Cluster::Stop(int i) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (!Running(i)) return absl::OkStatus();
  Member& m = At(i);
  // A stopped process would only see SIGTERM after SIGCONT.
  if (m.paused) kill(-m.pid, SIGCONT);
  m.paused = false;
  kill(m.pid, SIGTERM);
  int exit_code = 0;
  if (WaitForExit(m.pid, options_.stop_grace_ms, &exit_code)) {
    m.pid = -1;
    return absl::OkStatus();
  }
  Kill(i);
  return absl::DeadlineExceededError(
      absl::StrCat(m.name, " ignored SIGTERM for ", options_.stop_grace_ms, " ms; SIGKILLed"));
}

absl::Status Cluster::Restart(int i) {
  absl::Status status = Stop(i);
  if (!status.ok()) return status;
  At(i).initial_cluster_state = "existing";
  status = Launch(i);
  if (!status.ok()) return status;
  return WaitHealthy(i, options_.start_timeout_ms);
}

absl::Status Cluster::Pause(int i) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (!Running(i)) return absl::FailedPreconditionError(absl::StrCat(name(i), " is not running"));
  Member& m = At(i);
  if (kill(-m.pid, SIGSTOP) != 0) {
    return absl::InternalError(absl::StrCat("SIGSTOP ", m.name, ": ", std::strerror(errno)));
  }
  m.paused = true;
  // Signal delivery is asynchronous; tests reason about "paused from now on".
  if (!WaitUntil([&] { return ProcessState(m.pid) == 'T'; }, 2000, 5)) {
    return absl::DeadlineExceededError(absl::StrCat(m.name, " not stopped 2 s after SIGSTOP"));
  }
  return absl::OkStatus();
}

absl::Status Cluster::Resume(int i) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (!Running(i)) return absl::FailedPreconditionError(absl::StrCat(name(i), " is not running"));
  Member& m = At(i);
  if (kill(-m.pid, SIGCONT) != 0) {
    return absl::InternalError(absl::StrCat("SIGCONT ", m.name, ": ", std::strerror(errno)));
  }
  m.paused = false;
  return absl::OkStatus();
}

const std::string& Cluster::name(int i) const { return At(i).name; }
const std::string& Cluster::host(int i) const { return At(i).host; }

std::string Cluster::endpoint(int i) const {
  return absl::StrCat(At(i).host, ":", At(i).client_port);
}

std::string Cluster::client_url(int i) const { return absl::StrCat("http://", endpoint(i)); }

std::string Cluster::peer_url(int i) const {
  return absl::StrCat("http://", At(i).host, ":", At(i).peer_port);
}

std::string Cluster::metrics_url(int i) const {
  return absl::StrCat("http://", At(i).host, ":", At(i).metrics_port);
}

std::string Cluster::endpoints() const {
  std::vector<std::string> all;
  for (int i = 0; i < size(); ++i) {
    if (At(i).launched_once) all.push_back(endpoint(i));
  }
  return absl::StrJoin(all, ",");
}

std::string Cluster::InitialCluster() const {
  std::vector<std::string> entries;
  for (int i = 0; i < initial_members_ && i < size(); ++i) {
    entries.push_back(absl::StrCat(name(i), "=", peer_url(i)));
  }
  return absl::StrJoin(entries, ",");
}

const std::string& Cluster::data_dir(int i) const { return At(i).data_dir; }
const std::string& Cluster::log_path(int i) const { return At(i).log_path; }

std::string Cluster::LogTail(int i, size_t max_bytes) const {
  return ReadFileTail(At(i).log_path, max_bytes);
}

pid_t Cluster::pid(int i) const { return At(i).pid; }
const std::string& Cluster::netns(int i) const { return At(i).netns; }

bool Cluster::Running(int i) {
  Member& m = At(i);
  if (m.pid <= 0) return false;
  int exit_code = 0;
  if (TryReap(m.pid, &exit_code)) {
    m.pid = -1;
    m.paused = false;
    return false;
  }
  return true;
}

bool Cluster::Paused(int i) const { return At(i).paused; }

CommandResult Cluster::Ctl(int i, const std::vector<std::string>& args,
                           const std::string& stdin_text, int timeout_ms) const {
  return Etcdctl(endpoint(i), args, stdin_text, timeout_ms);
}

absl::StatusOr<EndpointStatusInfo> Cluster::EndpointStatus(int i) const {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  CommandResult r =
      RunCommand({EtcdctlBinary(), absl::StrCat("--endpoints=", endpoint(i)), "--dial-timeout=1s",
                  "--command-timeout=1s", "endpoint", "status", "-w", "json"},
                 "", 4000);
  if (r.exit_code != 0) {
    return absl::UnavailableError(absl::StrCat(
        name(i),
        ": endpoint status failed: ", r.ErrorLines().empty() ? r.stderr_text : r.ErrorLines()));
  }
  nlohmann::json parsed = nlohmann::json::parse(r.stdout_text, nullptr, false);
  if (!parsed.is_array() || parsed.empty() || !parsed[0].is_object() ||
      !parsed[0].contains("Status")) {
    return absl::InternalError(
        absl::StrCat(name(i), ": unexpected endpoint status output: ", r.stdout_text));
  }
  const nlohmann::json& status = parsed[0]["Status"];
  const nlohmann::json header =
      status.contains("header") ? status["header"] : nlohmann::json::object();
  std::optional<uint64_t> member_id = JsonU64(header, "member_id");
  if (!member_id.has_value()) {
    return absl::InternalError(absl::StrCat(name(i), ": no header.member_id in ", r.stdout_text));
  }
  EndpointStatusInfo info;
  info.member_id = *member_id;
  // Go's encoding/json omits zero values: a missing leader means "no leader".
  info.leader_id = JsonU64(status, "leader").value_or(0);
  info.raft_term = JsonU64(status, "raftTerm").value_or(0);
  info.raft_index = JsonU64(status, "raftIndex").value_or(0);
  info.revision = static_cast<int64_t>(JsonU64(header, "revision").value_or(0));
  info.is_learner = status.contains("isLearner") && status["isLearner"].is_boolean() &&
                    status["isLearner"].get<bool>();
  return info;
}

absl::StatusOr<uint64_t> Cluster::MemberId(int i) {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (At(i).member_id != 0) return At(i).member_id;
  absl::StatusOr<EndpointStatusInfo> status = EndpointStatus(i);
  if (!status.ok()) return status.status();
  At(i).member_id = status->member_id;
  return status->member_id;
}

std::string Cluster::MemberIdHex(uint64_t id) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%llx", static_cast<unsigned long long>(id));
  return buffer;
}

absl::StatusOr<int> Cluster::LeaderOnce() {
  struct Answer {
    int index;
    EndpointStatusInfo status;
  };
  std::vector<Answer> answers;
  std::vector<std::string> notes;
  for (int i = 0; i < size(); ++i) {
    // A paused member would only make etcdctl wait for its command timeout.
    if (!Running(i) || At(i).paused) continue;
    absl::StatusOr<EndpointStatusInfo> status = EndpointStatus(i);
    if (!status.ok()) {
      notes.push_back(std::string(status.status().message()));
      continue;
    }
    At(i).member_id = status->member_id;
    answers.push_back({i, *status});
    notes.push_back(absl::StrCat(name(i), ": id ", MemberIdHex(status->member_id), " leader ",
                                 MemberIdHex(status->leader_id), " term ", status->raft_term));
  }
  for (const Answer& candidate : answers) {
    const uint64_t id = candidate.status.member_id;
    if (candidate.status.leader_id != id) continue;
    size_t followers = static_cast<size_t>(std::count_if(
        answers.begin(), answers.end(), [&](const Answer& a) { return a.status.leader_id == id; }));
    if (2 * followers > answers.size()) return candidate.index;
  }
  return absl::UnavailableError(absl::StrCat("no leader agreed on by a majority of ",
                                             answers.size(), " answering members (",
                                             absl::StrJoin(notes, "; "), ")"));
}

absl::StatusOr<int> Cluster::LeaderIndex(int timeout_ms) { return WaitForLeader(timeout_ms, -1); }

absl::StatusOr<int> Cluster::WaitForLeader(int timeout_ms, int exclude) {
  const auto start = Clock::now();
  while (true) {
    absl::StatusOr<int> leader = LeaderOnce();
    if (leader.ok() && *leader != exclude) return leader;
    if (ElapsedMs(start) >= timeout_ms) {
      if (leader.ok()) {
        return absl::DeadlineExceededError(
            absl::StrCat("leader still ", name(*leader), " after ", timeout_ms, " ms"));
      }
      return absl::DeadlineExceededError(
          absl::StrCat("no leader after ", timeout_ms, " ms: ", leader.status().message()));
    }
    SleepMs(50);
  }
}

absl::StatusOr<int> Cluster::ReserveMember(const std::string& name) {
  int index = 0;
  absl::Status status = NewMemberSlot(name, &index);
  if (!status.ok()) return status;
  status = options_.use_netns ? SetUpMemberNetwork(At(index)) : PickLoopbackPorts({index});
  if (!status.ok()) return status;
  return index;
}

absl::Status Cluster::StartNewMember(const std::string& name, const std::string& initial_cluster,
                                     const std::string& initial_cluster_state, bool learner) {
  int index = -1;
  for (int i = 0; i < size(); ++i) {
    if (At(i).name == name) index = i;
  }
  if (index < 0) {
    return absl::NotFoundError(
        absl::StrCat("no reserved member ", name, " (call ReserveMember() before member add)"));
  }
  Member& m = At(index);
  if (m.launched_once) {
    return absl::FailedPreconditionError(absl::StrCat(name, " was started before; Restart() it"));
  }
  m.initial_cluster = initial_cluster;
  m.initial_cluster_state = initial_cluster_state;
  m.learner = learner;
  absl::Status status = Launch(index);
  if (!status.ok()) return status;
  status = WaitHealthy(index, options_.start_timeout_ms);
  if (!status.ok()) return status;
  m.initial_cluster_state = "existing";
  return absl::OkStatus();
}

absl::StatusOr<int> Cluster::AddMember(const std::string& name, bool learner, int timeout_ms) {
  const auto start = Clock::now();
  absl::StatusOr<int> index = ReserveMember(name);
  if (!index.ok()) return index.status();
  std::vector<std::string> args = {"member", "add", name,
                                   absl::StrCat("--peer-urls=", peer_url(*index))};
  if (learner) args.push_back("--learner");
  std::string initial_cluster;
  while (initial_cluster.empty()) {
    absl::StatusOr<int> leader = WaitForLeader(RemainingMs(start, timeout_ms));
    if (!leader.ok()) return leader.status();
    CommandResult r = Ctl(*leader, args);
    if (r.exit_code == 0) {
      for (const std::string& line : SplitLines(r.stdout_text)) {
        absl::string_view value(line);
        if (absl::ConsumePrefix(&value, "ETCD_INITIAL_CLUSTER=\"") &&
            absl::ConsumeSuffix(&value, "\"")) {
          initial_cluster = std::string(value);
        }
      }
      if (initial_cluster.empty()) {
        return absl::InternalError(
            absl::StrCat("no ETCD_INITIAL_CLUSTER in member add output: ", r.stdout_text));
      }
      break;
    }
    // Rejected before anything was proposed, so retrying cannot add the member twice.
    const bool retryable = absl::StrContains(r.stderr_text, "unhealthy cluster");
    if (!retryable || ElapsedMs(start) >= timeout_ms) {
      return absl::InternalError(
          absl::StrCat("member add ", name, " failed: ", r.stdout_text, r.stderr_text));
    }
    SleepMs(200);
  }
  absl::Status started = StartNewMember(name, initial_cluster, "existing", learner);
  if (!started.ok()) return started;
  return *index;
}

absl::Status Cluster::RequireNetns(int i) const {
  absl::Status valid = CheckIndex(i);
  if (!valid.ok()) return valid;
  if (!options_.use_netns) {
    return absl::FailedPreconditionError("partitions need ClusterOptions::use_netns = true");
  }
  if (!At(i).netns_ready) {
    return absl::FailedPreconditionError(absl::StrCat(name(i), " has no network yet"));
  }
  return absl::OkStatus();
}

absl::Status Cluster::ApplyRule(bool add, const std::vector<std::string>& selector) {
  std::vector<std::string> args = {"rule", add ? "add" : "del"};
  args.insert(args.end(), selector.begin(), selector.end());
  return RunIp(args);
}

std::vector<std::vector<std::string>> Cluster::IsolationRules(int i) const {
  return {{"pref", kIsolatePref, "from", host(i), "blackhole"},
          {"pref", kIsolatePref, "to", host(i), "blackhole"}};
}

std::vector<std::vector<std::string>> Cluster::PairRules(int i, int j) const {
  return {{"pref", kPairPref, "from", host(i), "to", host(j), "blackhole"},
          {"pref", kPairPref, "from", host(j), "to", host(i), "blackhole"}};
}

absl::Status Cluster::Isolate(int i) {
  absl::Status status = RequireNetns(i);
  if (!status.ok() || isolated_.count(i) > 0) return status;
  const auto rules = IsolationRules(i);
  status = ApplyRule(true, rules[0]);
  if (!status.ok()) return status;
  status = ApplyRule(true, rules[1]);
  if (!status.ok()) {
    (void)ApplyRule(false, rules[0]);
    return status;
  }
  isolated_.insert(i);
  return absl::OkStatus();
}

absl::Status Cluster::Heal(int i) {
  absl::Status status = CheckIndex(i);
  if (!status.ok() || isolated_.count(i) == 0) return status;
  for (const std::vector<std::string>& rule : IsolationRules(i)) {
    absl::Status deleted = ApplyRule(false, rule);
    if (status.ok()) status = deleted;
  }
  isolated_.erase(i);
  return status;
}

absl::Status Cluster::IsolatePair(int i, int j) {
  absl::Status status = RequireNetns(i);
  if (status.ok()) status = RequireNetns(j);
  if (status.ok() && i == j) status = absl::InvalidArgumentError("IsolatePair(i, i)");
  if (!status.ok()) return status;
  const std::pair<int, int> key = std::minmax(i, j);
  if (cut_pairs_.count(key) > 0) return absl::OkStatus();
  const auto rules = PairRules(key.first, key.second);
  status = ApplyRule(true, rules[0]);
  if (!status.ok()) return status;
  status = ApplyRule(true, rules[1]);
  if (!status.ok()) {
    (void)ApplyRule(false, rules[0]);
    return status;
  }
  cut_pairs_.insert(key);
  return absl::OkStatus();
}

absl::Status Cluster::HealPair(int i, int j) {
  absl::Status status = CheckIndex(i);
  if (status.ok()) status = CheckIndex(j);
  if (!status.ok()) return status;
  const std::pair<int, int> key = std::minmax(i, j);
  if (cut_pairs_.count(key) == 0) return absl::OkStatus();
  for (const std::vector<std::string>& rule : PairRules(key.first, key.second)) {
    absl::Status deleted = ApplyRule(false, rule);
    if (status.ok()) status = deleted;
  }
  cut_pairs_.erase(key);
  return status;
}

absl::Status Cluster::HealAll() {
  absl::Status first = absl::OkStatus();
  for (int i : std::vector<int>(isolated_.begin(), isolated_.end())) {
    absl::Status s = Heal(i);
    if (first.ok()) first = s;
  }
  for (auto [i, j] : std::vector<std::pair<int, int>>(cut_pairs_.begin(), cut_pairs_.end())) {
    absl::Status s = HealPair(i, j);
    if (first.ok()) first = s;
  }
  return first;
}

std::string Cluster::Diagnostics(size_t log_bytes_per_member) {
  std::string out;
  for (int i = 0; i < size(); ++i) {
    const bool running = Running(i);
    const Member& m = At(i);
    absl::StrAppend(&out, "---- ", m.name, " ", endpoint(i), " ",
                    !m.launched_once ? "never started"
                    : !running       ? "not running"
                    : m.paused       ? absl::StrCat("paused, pid ", m.pid)
                                     : absl::StrCat("running, pid ", m.pid),
                    Isolated(i) ? ", isolated" : "", m.netns.empty() ? "" : ", netns ", m.netns,
                    " ----\n");
    if (m.launched_once) absl::StrAppend(&out, LogTail(i, log_bytes_per_member), "\n");
  }
  return out;
}

}  // namespace meridian::e2e
