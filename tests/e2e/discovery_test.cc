// DNS SRV discovery end to end (issue 6): a real DNS server (Debian's dnsmasq on a free loopback
// port, with --srv-host and --host-record entries) names the members; three meridian-nodes
// bootstrap from it with --discovery-srv, a meridian-proxy finds them the same way and follows
// the records when a member is replaced; missing, partial and malformed records give clear
// errors.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "discovery/fake_dns_server.h"
#include "discovery/resolver.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace meridian::e2e {
namespace {

constexpr char kDomain[] = "mer.test";

std::string DnsmasqBinary() {
  std::string p = FindOnPath("dnsmasq");
  if (IsExecutable(p)) return p;
  return "/usr/sbin/dnsmasq";
}

// dnsmasq serving `lines` (dnsmasq.conf syntax) for kDomain on 127.0.0.1:<port>. Restart() swaps
// the records: dnsmasq reads --srv-host only at start, so it is restarted on the same port.
class Dnsmasq {
 public:
  [[nodiscard]] absl::Status Start(const std::vector<std::string>& lines) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (port_ == 0 || attempt > 0) {
        auto port = PickFreePort();
        if (!port.ok()) return port.status();
        port_ = *port;
      }
      if (Spawn(lines).ok()) return absl::OkStatus();
    }
    return absl::UnavailableError("dnsmasq did not start: " + ReadFileTail(log_path(), 4096));
  }
  [[nodiscard]] absl::Status Restart(const std::vector<std::string>& lines) {
    Kill();
    return Spawn(lines);
  }
  void Kill() {
    if (pid_ > 0) KillGroupAndReap(pid_);
    pid_ = -1;
  }
  ~Dnsmasq() { Kill(); }
  std::string server() const { return absl::StrCat("127.0.0.1:", port_); }
  std::string log_path() const { return dir_.path() + "/dnsmasq.log"; }

 private:
  absl::Status Spawn(const std::vector<std::string>& lines) {
    const std::string conf = dir_.path() + "/dnsmasq.conf";
    {
      std::ofstream out(conf);
      out << "no-resolv\nno-hosts\nno-poll\nbind-interfaces\nlisten-address=127.0.0.1\n"
          // Authoritative for the test domain: unknown names there are NXDOMAIN, not REFUSED.
          << "local=/" << kDomain << "/\n"
          << "local-ttl=1\n";
      for (const auto& l : lines) out << l << "\n";
    }
    std::vector<std::string> argv = {
        DnsmasqBinary(),       "--keep-in-foreground",         "--log-facility=-",
        "--conf-file=" + conf, absl::StrCat("--port=", port_), "--pid-file="};
    if (geteuid() == 0) argv.push_back("--user=root");
    auto pid = SpawnWithLog(argv, log_path());
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    // Ready once it answers (NXDOMAIN for a name it does not know is an answer).
    discovery::ResolverOptions ro;
    ro.dns_server = server();
    ro.timeout_ms = 100;
    ro.tries = 1;
    auto resolver = discovery::Resolver::Create(ro);
    if (!resolver.ok()) return resolver.status();
    bool up = WaitUntil(
        [&] {
          int code = 0;
          if (TryReap(pid_, &code)) return true;
          auto r = (*resolver)->LookupSrv({absl::StrCat("_probe._tcp.", kDomain)});
          return r[0].ok() || absl::IsNotFound(r[0].status());
        },
        5000, 50);
    int code = 0;
    if (!up || TryReap(pid_, &code)) {
      pid_ = -1;
      return absl::UnavailableError("dnsmasq is not answering: " + ReadFileTail(log_path(), 4096));
    }
    return absl::OkStatus();
  }

  TempDir dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

struct Member {
  int index = 0;
  std::string name;
  uint16_t client_port = 0;
  uint16_t peer_port = 0;
  pid_t pid = -1;
  std::string host() const { return absl::StrCat("m", index, ".", kDomain); }
  std::string client() const { return absl::StrCat("127.0.0.1:", client_port); }
};

// Host records for every member, plus SRV records for those in `in_dns`.
std::vector<std::string> Records(const std::vector<Member>& all, const std::set<int>& in_dns) {
  std::vector<std::string> lines;
  for (const auto& m : all) {
    lines.push_back(absl::StrCat("host-record=", m.host(), ",127.0.0.1"));
    if (!in_dns.count(m.index)) continue;
    lines.push_back(
        absl::StrCat("srv-host=_etcd-server._tcp.", kDomain, ",", m.host(), ",", m.peer_port));
    lines.push_back(
        absl::StrCat("srv-host=_etcd-client._tcp.", kDomain, ",", m.host(), ",", m.client_port));
  }
  return lines;
}

class DiscoveryCluster {
 public:
  explicit DiscoveryCluster(int members) {
    std::set<uint16_t> used;
    for (int i = 0; i < members; ++i) {
      Member m;
      m.index = i;
      m.name = absl::StrCat("m", i);
      for (uint16_t* p : {&m.client_port, &m.peer_port}) {
        do {
          *p = PickFreePort().value_or(0);
        } while (*p == 0 || !used.insert(*p).second);
      }
      members_.push_back(m);
    }
  }
  ~DiscoveryCluster() {
    for (auto& m : members_) {
      if (m.pid > 0) KillGroupAndReap(m.pid);
    }
  }
  Member& member(int i) { return members_[static_cast<size_t>(i)]; }
  const std::vector<Member>& members() const { return members_; }
  std::string log_path(int i) const { return dir_.path() + "/" + members_[i].name + ".log"; }

  std::vector<std::string> Argv(int i, const std::string& dns, const std::string& state) const {
    const Member& m = members_[static_cast<size_t>(i)];
    return {ServerBinary(ServerKind::kMeridian),
            "--name=" + m.name,
            "--data-dir=" + dir_.path() + "/" + m.name,
            absl::StrCat("--listen-client-urls=http://127.0.0.1:", m.client_port),
            absl::StrCat("--advertise-client-urls=http://127.0.0.1:", m.client_port),
            absl::StrCat("--listen-peer-urls=http://127.0.0.1:", m.peer_port),
            absl::StrCat("--initial-advertise-peer-urls=http://127.0.0.1:", m.peer_port),
            std::string("--discovery-srv=") + kDomain,
            "--discovery-dns-server=" + dns,
            "--initial-cluster-state=" + state,
            "--initial-cluster-token=e2e-discovery",
            "--heartbeat-interval=50",
            "--election-timeout=500"};
  }
  [[nodiscard]] absl::Status Launch(int i, const std::string& dns, const std::string& state) {
    auto pid = SpawnWithLog(Argv(i, dns, state), log_path(i));
    if (!pid.ok()) return pid.status();
    members_[static_cast<size_t>(i)].pid = *pid;
    return absl::OkStatus();
  }
  // Launches members 0..n-1 with --initial-cluster-state=new and waits until each is healthy.
  [[nodiscard]] absl::Status StartBySrv(int n, const std::string& dns) {
    for (int i = 0; i < n; ++i) {
      if (auto st = Launch(i, dns, "new"); !st.ok()) return st;
    }
    for (int i = 0; i < n; ++i) {
      if (!WaitUntil([&] { return Healthy(i); }, 30000, 200)) {
        return absl::DeadlineExceededError(absl::StrCat(members_[i].name, " is not healthy"));
      }
    }
    return absl::OkStatus();
  }
  bool Healthy(int i) const {
    return Etcdctl(members_[static_cast<size_t>(i)].client(), {"endpoint", "health"}).exit_code ==
           0;
  }
  void Kill(int i) {
    Member& m = members_[static_cast<size_t>(i)];
    if (m.pid > 0) KillGroupAndReap(m.pid);
    m.pid = -1;
  }
  std::string Logs() const {
    std::string out;
    for (size_t i = 0; i < members_.size(); ++i) {
      absl::StrAppend(&out, "---- ", members_[i].name, "\n", ReadFileTail(log_path(i), 3000));
    }
    return out;
  }

 private:
  TempDir dir_;
  std::vector<Member> members_;
};

std::string MetricsText(const std::string& endpoint) {
  return RunCommand({FindOnPath("curl"), "-s", "http://" + endpoint + "/metrics"}, "", 5000)
      .stdout_text;
}
double Metric(const std::string& endpoint, const std::string& name) {
  for (const auto& line : SplitLines(MetricsText(endpoint))) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

TEST(Discovery, ClusterBootstrapsFromSrvAndTheProxyFollowsAReplacedMember) {
  DiscoveryCluster cluster(4);  // m0..m2 start; m3 replaces one of them later
  Dnsmasq dns;
  ASSERT_TRUE(dns.Start(Records(cluster.members(), {0, 1, 2})).ok())
      << ReadFileTail(dns.log_path(), 4096);
  ASSERT_TRUE(cluster.StartBySrv(3, dns.server()).ok()) << cluster.Logs();
  // The member list names every member with the peer URL DNS gave it.
  auto list = Etcdctl(cluster.member(0).client(), {"member", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.stderr_text;
  for (int i = 0; i < 3; ++i) {
    const Member& m = cluster.member(i);
    EXPECT_NE(list.stdout_text.find(absl::StrCat(m.name, ", http://", m.host(), ":", m.peer_port)),
              std::string::npos)
        << list.stdout_text;
  }
  EXPECT_EQ(SplitLines(list.stdout_text).size(), 3u) << list.stdout_text;

  OwnProxy proxy;
  ASSERT_TRUE(proxy
                  .Start({std::string("--discovery-srv=") + kDomain,
                          "--discovery-dns-server=" + dns.server(), "--probe-interval=200ms"})
                  .ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        return Etcdctl(proxy.endpoint(), {"endpoint", "health"}).exit_code == 0;
      },
      15000, 200))
      << proxy.LogTail(16384);
  EXPECT_EQ(Metric(proxy.endpoint(), "meridian_proxy_upstream_members_ready"), 3);

  // The victim is a follower, so that the clients' writes see no election.
  int victim = -1;
  for (int i = 0; i < 3 && victim < 0; ++i) {
    auto st = Etcdctl(cluster.member(i).client(), {"endpoint", "status", "-w", "fields"});
    if (st.stdout_text.find("\"Leader\" : ") != std::string::npos) {
      auto id_pos = st.stdout_text.find("\"MemberID\" : ");
      auto leader_pos = st.stdout_text.find("\"Leader\" : ");
      auto value = [&](size_t pos) {
        return st.stdout_text.substr(pos, st.stdout_text.find('\n', pos) - pos);
      };
      std::string id = value(id_pos + 13), leader = value(leader_pos + 11);
      if (id != leader) victim = i;
    }
  }
  ASSERT_GE(victim, 0);

  // Clients through the proxy for the whole change: puts and linearizable reads on a channel of
  // their own, and an etcdctl watch that must see every put.
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(proxy.endpoint(), {"--prefix", "k/"}, &watch).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::atomic<bool> stop{false};
  std::atomic<int> puts_ok{0}, reads_ok{0};
  std::vector<std::string> errors;
  std::thread load([&] {
    auto kv = etcdserverpb::KV::NewStub(
        grpc::CreateChannel(proxy.endpoint(), grpc::InsecureChannelCredentials()));
    for (int i = 0; !stop && i < 100000; ++i) {
      {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        etcdserverpb::PutRequest req;
        req.set_key(absl::StrCat("k/", i));
        req.set_value("v");
        etcdserverpb::PutResponse resp;
        auto st = kv->Put(&ctx, req, &resp);
        if (st.ok()) {
          ++puts_ok;
        } else {
          errors.push_back(absl::StrCat("put k/", i, ": ", st.error_message()));
        }
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      etcdserverpb::RangeRequest req;
      req.set_key(absl::StrCat("k/", i));
      etcdserverpb::RangeResponse resp;
      auto st = kv->Range(&ctx, req, &resp);
      if (st.ok()) {
        ++reads_ok;
      } else {
        errors.push_back(absl::StrCat("get k/", i, ": ", st.error_message()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  // Stops and joins the load on every way out of the test, failed assertions included.
  struct JoinOnExit {
    std::atomic<bool>* stop;
    std::thread* thread;
    ~JoinOnExit() {
      *stop = true;
      if (thread->joinable()) thread->join();
    }
  } join_load{&stop, &load};

  // Replace the victim with m3: add it, publish it in DNS, start it (it finds the cluster through
  // the SRV records), then remove the victim from the cluster and from DNS.
  const Member& fresh = cluster.member(3);
  int survivor = (victim + 1) % 3;
  // Like etcd, a member add is refused ("etcdserver: unhealthy cluster") until the members have
  // been connected for a while after start-up; a refused add changed nothing, so ask again.
  CommandResult add;
  ASSERT_TRUE(WaitUntil(
      [&] {
        add = Etcdctl(cluster.member(survivor).client(),
                      {"member", "add", fresh.name,
                       absl::StrCat("--peer-urls=http://", fresh.host(), ":", fresh.peer_port)});
        return add.exit_code == 0 || !absl::StrContains(add.stderr_text, "unhealthy cluster");
      },
      20000, 500));
  ASSERT_EQ(add.exit_code, 0) << add.stderr_text;
  std::set<int> next = {0, 1, 2, 3};
  ASSERT_TRUE(dns.Restart(Records(cluster.members(), next)).ok());
  ASSERT_TRUE(cluster.Launch(3, dns.server(), "existing").ok());
  ASSERT_TRUE(WaitUntil([&] { return cluster.Healthy(3); }, 30000, 200)) << cluster.Logs();
  // The proxy picks the new member up from DNS without a restart.
  ASSERT_TRUE(
      WaitUntil([&] { return absl::StrContains(proxy.LogTail(16384), fresh.host()); }, 15000, 100))
      << proxy.LogTail(16384);
  ASSERT_TRUE(WaitUntil(
      [&] { return Metric(proxy.endpoint(), "meridian_proxy_upstream_members_ready") == 4; }, 15000,
      100))
      << proxy.LogTail(16384);

  // Remove the victim from the cluster, then from DNS, then stop it.
  auto status = Etcdctl(cluster.member(victim).client(), {"endpoint", "status", "-w", "json"});
  auto id_at = status.stdout_text.find("\"member_id\":");
  ASSERT_NE(id_at, std::string::npos) << status.stdout_text;
  uint64_t victim_id = std::stoull(status.stdout_text.substr(id_at + 12));
  char hex[32];
  snprintf(hex, sizeof(hex), "%llx", static_cast<unsigned long long>(victim_id));
  auto remove = Etcdctl(cluster.member(survivor).client(), {"member", "remove", hex});
  ASSERT_EQ(remove.exit_code, 0) << remove.stderr_text << remove.stdout_text;
  next.erase(victim);
  ASSERT_TRUE(dns.Restart(Records(cluster.members(), next)).ok());
  const std::string victim_host = cluster.member(victim).host();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return absl::StrContains(proxy.LogTail(16384), absl::StrCat("upstream ", victim_host)) &&
               absl::StrContains(proxy.LogTail(16384), "draining it");
      },
      15000, 100))
      << proxy.LogTail(16384);
  cluster.Kill(victim);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the clients keep going meanwhile
  stop = true;
  load.join();  // (join_load then has nothing left to do)
  EXPECT_TRUE(errors.empty()) << absl::StrJoin(errors, "\n");
  EXPECT_GT(puts_ok.load(), 50);
  EXPECT_EQ(reads_ok.load(), puts_ok.load());
  EXPECT_EQ(Metric(proxy.endpoint(), "meridian_proxy_upstream_members_ready"), 3)
      << proxy.LogTail(16384);
  EXPECT_GE(Metric(proxy.endpoint(), "meridian_proxy_discovery_changes"), 2);

  // Every acknowledged put reached the watcher through the proxy, whichever member carried it.
  const int want = puts_ok.load();
  EXPECT_TRUE(watch.WaitForStdout(
      [&](const std::string& out) {
        int n = 0;
        for (const auto& line : SplitLines(out)) n += line == "PUT";
        return n >= want;
      },
      15000))
      << watch.Stdout().substr(0, 2000) << "\n"
      << proxy.LogTail(16384);
  // And the proxy keeps serving through the new member set.
  auto get = Etcdctl(proxy.endpoint(), {"get", "k/0"});
  EXPECT_EQ(get.exit_code, 0) << get.stderr_text;
}

// A member that leaves the SRV records but keeps running is drained: the proxy moves the watch
// stream it carries to another member, and the watch goes on without a lost event.
TEST(Discovery, AMemberLeavingDnsIsDrainedOfItsWatchStream) {
  DiscoveryCluster cluster(3);
  Dnsmasq dns;
  ASSERT_TRUE(dns.Start(Records(cluster.members(), {0, 1, 2})).ok())
      << ReadFileTail(dns.log_path(), 4096);
  ASSERT_TRUE(cluster.StartBySrv(3, dns.server()).ok()) << cluster.Logs();
  OwnProxy proxy;
  ASSERT_TRUE(proxy
                  .Start({std::string("--discovery-srv=") + kDomain,
                          "--discovery-dns-server=" + dns.server(), "--probe-interval=200ms"})
                  .ok());
  ASSERT_TRUE(proxy.WaitHealthy()) << proxy.LogTail();
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(proxy.endpoint(), {"--prefix", "w/"}, &watch).ok());
  auto watchers = [&](int i) {
    return Metric(cluster.member(i).client(), "etcd_debugging_mvcc_watcher_total");
  };
  int carrier = -1;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (int i = 0; i < 3; ++i) {
          if (watchers(i) == 1) carrier = i;
        }
        return carrier >= 0;
      },
      10000, 100));
  int puts = 0;
  auto put_some = [&](int n) {
    for (int i = 0; i < n; ++i, ++puts) {
      auto r = Etcdctl(proxy.endpoint(), {"put", absl::StrCat("w/", puts), "v"});
      ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
    }
  };
  put_some(10);
  std::set<int> rest = {0, 1, 2};
  rest.erase(carrier);
  ASSERT_TRUE(dns.Restart(Records(cluster.members(), rest)).ok());
  // The carrier still runs and is still a member; only DNS stopped naming it.
  ASSERT_TRUE(WaitUntil(
      [&] { return absl::StrContains(proxy.LogTail(16384), "moving the watch stream off"); }, 15000,
      100))
      << proxy.LogTail(16384);
  ASSERT_TRUE(WaitUntil(
      [&] {
        int elsewhere = 0;
        for (int i : rest) elsewhere += watchers(i) == 1;
        return watchers(carrier) == 0 && elsewhere == 1;
      },
      15000, 100))
      << proxy.LogTail(16384);
  put_some(10);
  EXPECT_TRUE(watch.WaitForStdout(
      [&](const std::string& out) {
        int n = 0;
        for (const auto& line : SplitLines(out)) n += line == "PUT";
        return n == puts;
      },
      15000))
      << watch.Stdout() << "\n"
      << proxy.LogTail(16384);
  // Nothing was delivered twice either.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int n = 0;
  for (const auto& line : SplitLines(watch.Stdout())) n += line == "PUT";
  EXPECT_EQ(n, puts);
  EXPECT_TRUE(cluster.Healthy(carrier));
}

// Every query answered with a header that promises five records that are not there, then junk.
std::string GarbageAnswer(const std::string& query) {
  std::string out = query;
  out[2] = static_cast<char>(0x81);  // a response
  out[3] = static_cast<char>(0x80);
  out[7] = 5;
  out += std::string("\xc0\x0c\x00\x21\x00\x01\x00\x00", 8);
  return out;
}

// Runs one member or proxy that must refuse to start: it exits non-zero (not by a signal) within
// the bound, and its output contains `want`.
void ExpectStartFails(const std::vector<std::string>& argv, const std::string& want) {
  auto r = RunCommand(argv, "", 30000);
  EXPECT_FALSE(r.timed_out) << absl::StrJoin(argv, " ");
  EXPECT_GT(r.exit_code, 0) << absl::StrJoin(argv, " ") << "\n" << r.stderr_text;
  EXPECT_TRUE(absl::StrContains(r.stderr_text + r.stdout_text, want))
      << "want \"" << want << "\" in:\n"
      << r.stderr_text << r.stdout_text;
}

TEST(Discovery, MissingPartialAndMalformedRecordsGiveClearErrors) {
  DiscoveryCluster cluster(2);
  Member& a = cluster.member(0);
  Member& b = cluster.member(1);
  Dnsmasq dns;
  std::vector<std::string> lines = {
      // partial.mer.test: a target with no address record.
      absl::StrCat("srv-host=_etcd-server._tcp.partial.", kDomain, ",", a.host(), ",", a.peer_port),
      absl::StrCat("srv-host=_etcd-server._tcp.partial.", kDomain, ",ghost.", kDomain, ",2380"),
      absl::StrCat("host-record=", a.host(), ",127.0.0.1"),
      // other.mer.test: records that do not name this member.
      absl::StrCat("srv-host=_etcd-server._tcp.other.", kDomain, ",", b.host(), ",", b.peer_port),
      absl::StrCat("host-record=", b.host(), ",127.0.0.1"),
      // unavailable.mer.test: "no such service here" (target ".").
      absl::StrCat("srv-host=_etcd-server._tcp.unavailable.", kDomain),
      absl::StrCat("srv-host=_etcd-client._tcp.unavailable.", kDomain),
  };
  ASSERT_TRUE(dns.Start(lines).ok()) << ReadFileTail(dns.log_path(), 4096);
  auto node = [&](const std::string& domain, const std::string& server) {
    auto argv = cluster.Argv(0, server, "new");
    for (auto& arg : argv) {
      if (arg.rfind("--discovery-srv=", 0) == 0) arg = "--discovery-srv=" + domain;
    }
    return argv;
  };
  // Missing: no SRV record at all.
  ExpectStartFails(node(absl::StrCat("nothing.", kDomain), dns.server()),
                   "no usable SRV records for nothing.mer.test");
  ExpectStartFails(node(absl::StrCat("nothing.", kDomain), dns.server()), "NXDOMAIN");
  // Partial: one target does not resolve.
  ExpectStartFails(node(absl::StrCat("partial.", kDomain), dns.server()),
                   "SRV target ghost.mer.test:2380: no address records");
  // This member is not among the targets.
  ExpectStartFails(node(absl::StrCat("other.", kDomain), dns.server()),
                   "cannot find local etcd member \"m0\" in SRV records");
  // The "." target.
  ExpectStartFails(node(absl::StrCat("unavailable.", kDomain), dns.server()),
                   "declared not available");
  // Malformed answers, and no DNS server at all.
  discovery::FakeDnsServer garbage(GarbageAnswer);
  ExpectStartFails(node(kDomain, garbage.address()), "_etcd-server-ssl._tcp.mer.test");
  auto dead_port = PickFreePort();
  ASSERT_TRUE(dead_port.ok());
  // (UDP to a closed port: c-ares sees no answer rather than a refusal.)
  ExpectStartFails(node(kDomain, absl::StrCat("127.0.0.1:", *dead_port)),
                   "no DNS answer for _etcd-server-ssl._tcp.mer.test from DNS server");
  // A bad --discovery-dns-server is a usage error.
  ExpectStartFails(node(kDomain, "dns.example.com"), "--discovery-dns-server");

  // The proxy says the same kind of thing.
  auto proxy = [&](const std::string& domain, const std::string& server) {
    auto port = PickFreePort();
    return std::vector<std::string>{ProxyBinary(ProxyKind::kMeridian),
                                    absl::StrCat("--listen-addr=127.0.0.1:", port.value_or(0)),
                                    "--discovery-srv=" + domain,
                                    "--discovery-dns-server=" + server};
  };
  ExpectStartFails(proxy(absl::StrCat("nothing.", kDomain), dns.server()),
                   "no usable SRV records for nothing.mer.test");
  ExpectStartFails(proxy(absl::StrCat("unavailable.", kDomain), dns.server()),
                   "declared not available");
  ExpectStartFails(proxy(kDomain, garbage.address()), "_etcd-client-ssl._tcp.mer.test");
}

}  // namespace
}  // namespace meridian::e2e
