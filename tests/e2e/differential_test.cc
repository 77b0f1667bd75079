// Differential test: one etcdctl script runs against a fresh Debian etcd and a fresh server under
// test; the normalised transcripts must be identical.
//
// Server selection (MERIDIAN_E2E_SERVER):
//   meridian -> etcd vs meridian-node (fails if meridian-node is not built)
//   etcd     -> etcd vs etcd, a self-check of the normalisation
//   unset    -> etcd vs meridian-node if it is built, else the etcd self-check
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "harness.h"
#include "test_util.h"

namespace meridian::e2e {
namespace {

struct Step {
  enum class Kind { kCtl, kWatch };
  Kind kind = Kind::kCtl;
  // etcdctl arguments; "{L<n>}" is replaced by the hex id of the n-th granted lease and "{TMP}" by
  // the server's temp dir.
  std::vector<std::string> args;
  std::string stdin_text;
};

Step Ctl(std::vector<std::string> args, std::string stdin_text = "") {
  return Step{Step::Kind::kCtl, std::move(args), std::move(stdin_text)};
}
// `etcdctl watch <args>`, collected until its output is quiet for a while (or it exits).
Step Watch(std::vector<std::string> args) { return Step{Step::Kind::kWatch, std::move(args), ""}; }

// The script. Revisions are deterministic because both servers start empty (revision 1).
std::vector<Step> Script() {
  const std::string txn_success =
      "value(\"k1\") = \"v1b\"\nversion(\"k2\") > \"1\"\ncreate(\"nope\") = \"0\"\n\n"
      "put t/ok yes\ndel k9\nget k --prefix --limit 2\n\nput t/ok no\n\n";
  const std::string txn_failure =
      "value(\"k1\") != \"v1b\"\n\nput t/never x\n\nput t/ok no --prev-kv\nget t/ok\n"
      "del k9 --prev-kv\n\n";
  // A put and a delete of the same key in one branch is rejected by the server.
  const std::string txn_duplicate = "\nput t/dup 1\ndel t/dup\n\n\n";
  return {
      // Writes and overwrites.
      Ctl({"put", "k1", "v1"}),
      Ctl({"put", "k2", "v2"}),
      Ctl({"put", "k3", "v3"}),
      Ctl({"put", "k1", "v1b"}),
      Ctl({"put", "k2", "v2b", "--prev-kv"}),
      Ctl({"put", "k2", "v2c", "--prev-kv", "-w", "json"}),
      Ctl({"put", "k4", "", "-w", "json"}),
      Ctl({"put", "k3", "--ignore-value", "--prev-kv"}),
      Ctl({"put", "missing", "--ignore-value"}),
      Ctl({"put", "", "empty-key"}),
      // Reads with every flag.
      Ctl({"get", "k1"}),
      Ctl({"get", "nope"}),
      Ctl({"get", "k", "--prefix"}),
      Ctl({"get", "k", "--prefix", "-w", "json"}),
      Ctl({"get", "k2", "--from-key"}),
      Ctl({"get", "k1", "k3"}),
      Ctl({"get", "k", "--prefix", "--limit", "2", "-w", "json"}),
      Ctl({"get", "k", "--prefix", "--order=DESCEND"}),
      Ctl({"get", "k", "--prefix", "--sort-by=CREATE", "--order=DESCEND"}),
      Ctl({"get", "k", "--prefix", "--sort-by=MODIFY"}),
      Ctl({"get", "k", "--prefix", "--sort-by=VALUE", "--order=DESCEND"}),
      Ctl({"get", "k", "--prefix", "--sort-by=VERSION", "--limit", "2"}),
      Ctl({"get", "k", "--prefix", "--keys-only"}),
      Ctl({"get", "k", "--prefix", "--print-value-only"}),
      Ctl({"get", "k", "--prefix", "--keys-only", "-w", "json"}),
      Ctl({"get", "k2", "-w", "fields"}),
      Ctl({"get", "k1", "--rev", "2"}),
      Ctl({"get", "k", "--prefix", "--rev", "4", "-w", "json"}),
      Ctl({"get", "k1", "--rev", "1000"}),
      Ctl({"get", ""}),
      Ctl({"get", "k", "--prefix", "--consistency=s", "--hex"}),
      // Deletes.
      Ctl({"del", "k3", "--prev-kv"}),
      Ctl({"del", "nothing"}),
      Ctl({"put", "d/1", "a"}),
      Ctl({"put", "d/2", "b"}),
      Ctl({"put", "d/3", "c"}),
      Ctl({"del", "d/1", "d/3", "-w", "json"}),
      Ctl({"del", "d/", "--prefix", "--prev-kv"}),
      // Transactions.
      Ctl({"txn", "-i"}, txn_success),
      Ctl({"txn", "-i"}, txn_failure),
      Ctl({"txn", "-w", "json"}, txn_success),
      Ctl({"txn", "-w", "json"}, txn_failure),
      Ctl({"txn"}, txn_duplicate),
      Ctl({"txn"}, "\nput t/dup 1\nput t/dup 2\n\n\n"),
      Ctl({"txn"}, "\nget k1 --rev 100000\n\n\n"),
      Ctl({"txn"}, "mod(\"k1\") < \"1000\"\n\n\n\n"),
      // Leases (ids normalised, see Normalise()).
      Ctl({"lease", "grant", "600"}),
      Ctl({"lease", "grant", "700", "-w", "json"}),
      Ctl({"put", "lk1", "v", "--lease={L1}"}),
      Ctl({"put", "lk2", "v", "--lease={L1}"}),
      Ctl({"get", "lk1", "-w", "json"}),
      Ctl({"get", "lk2", "-w", "fields"}),
      Ctl({"lease", "timetolive", "{L1}"}),
      Ctl({"lease", "timetolive", "{L1}", "--keys"}),
      Ctl({"lease", "timetolive", "{L1}", "--keys", "-w", "json"}),
      Ctl({"lease", "keep-alive", "--once", "{L1}"}),
      Ctl({"lease", "keep-alive", "--once", "{L2}", "-w", "json"}),
      Ctl({"lease", "list"}),
      Ctl({"lease", "list", "-w", "json"}),
      Ctl({"lease", "revoke", "{L1}"}),
      Ctl({"get", "lk", "--prefix"}),
      Ctl({"lease", "timetolive", "{L1}"}),
      Ctl({"lease", "timetolive", "{L1}", "-w", "json"}),
      Ctl({"lease", "revoke", "{L1}"}),
      Ctl({"lease", "keep-alive", "--once", "{L1}"}),
      Ctl({"put", "lk3", "v", "--lease=1234abcd"}),
      Ctl({"lease", "revoke", "{L2}"}),
      Ctl({"lease", "list"}),
      // Watch history (simple output only: json would expose response batching).
      Watch({"k", "--prefix", "--rev", "2"}),
      Watch({"", "--prefix", "--rev", "1", "--prev-kv"}),
      Watch({"t/ok", "--rev", "5"}),
      // Compaction.
      Ctl({"endpoint", "hashkv", "-w", "json"}),
      Ctl({"compaction", "5"}),
      Ctl({"get", "k1", "--rev", "4"}),
      Ctl({"get", "k", "--prefix", "--rev", "5"}),
      Ctl({"compaction", "3"}),
      Ctl({"compaction", "1000"}),
      Watch({"k1", "--rev", "2"}),
      Ctl({"compaction", "12", "--physical"}),
      Ctl({"endpoint", "hashkv", "-w", "json"}),
      Ctl({"get", "k", "--prefix", "--rev", "12", "-w", "json"}),
      // Maintenance and cluster info.
      Ctl({"defrag"}),
      Ctl({"endpoint", "status"}),
      Ctl({"endpoint", "status", "-w", "json"}),
      Ctl({"endpoint", "health", "-w", "json"}),
      Ctl({"endpoint", "hashkv"}),
      Ctl({"member", "list"}),
      Ctl({"member", "list", "-w", "json"}),
      Ctl({"alarm", "list"}),
      Ctl({"alarm", "list", "-w", "json"}),
      Ctl({"alarm", "disarm"}),
      Ctl({"snapshot", "save", "{TMP}/snap.db"}),
      Ctl({"snapshot", "status", "{TMP}/snap.db", "-w", "json"}),
      Ctl({"snapshot", "status", "{TMP}/snap.db"}),
      // Final state, then a from-key delete of everything.
      Ctl({"get", "", "--prefix", "-w", "json"}),
      Ctl({"del", "", "--from-key"}),
      Ctl({"get", "", "--from-key", "-w", "json"}),
  };
}

using MatchFn = std::function<std::string(const std::smatch&)>;

std::string ReplaceAll(const std::string& text, const std::regex& re, const MatchFn& fn) {
  std::string out;
  auto begin = std::sregex_iterator(text.begin(), text.end(), re);
  auto end = std::sregex_iterator();
  size_t last = 0;
  for (auto it = begin; it != end; ++it) {
    const std::smatch& m = *it;
    out.append(text, last, static_cast<size_t>(m.position(0)) - last);
    out += fn(m);
    last = static_cast<size_t>(m.position(0) + m.length(0));
  }
  out.append(text, last, std::string::npos);
  return out;
}

std::string ReplaceAll(const std::string& text, const std::regex& re, const std::string& fmt) {
  return std::regex_replace(text, re, fmt);
}

// Per-run facts needed to normalise one server's transcript.
struct RunContext {
  std::string client_addr;  // 127.0.0.1:port
  std::string peer_addr;
  std::string tmp_dir;
  uint64_t member_id = 0;
  // In grant order; index+1 is the placeholder number. Compared numerically because etcdctl
  // prints ids as %016x (zero-padded) but json carries them in decimal.
  std::vector<uint64_t> lease_ids;
};

std::string LeaseNameById(const RunContext& ctx, uint64_t id) {
  for (size_t i = 0; i < ctx.lease_ids.size(); ++i) {
    if (ctx.lease_ids[i] == id) return absl::StrCat("<LEASE_", i + 1, ">");
  }
  return "";
}

std::string LeaseName(const RunContext& ctx, const std::string& hex) {
  uint64_t id = 0;
  if (hex.empty() || hex.size() > 16 || !absl::SimpleHexAtoi(hex, &id)) return "";
  return LeaseNameById(ctx, id);
}

std::string ToHex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Normalisations, each applied to stdout and stderr of every step:
//  N1  Addresses: 127.0.0.1:<client port> -> <CLIENT_ADDR>, 127.0.0.1:<peer port> -> <PEER_ADDR>,
//      the per-server temp dir -> <TMP>. Ports and paths are chosen per run.
//  N2  Cluster ids ("cluster_id":N, "ClusterID" : N) -> <CLUSTER_ID>: derived from random member
//      ids / cluster tokens, an implementation choice.
//  N3  Member ids (member_id, leader, memberID json fields, "MemberID" : N, alarm text
//      "memberID:N", "ID" equal to the member id, hex id at the start of `member list` and
//      `endpoint status` lines) -> <MEMBER_ID>.
//  N4  Lease ids (decimal in "ID"/"id"/"lease"/"Lease" fields, hex in "lease <hex> granted/revoked
//      /keepalived/already expired" and in `lease list`) -> <LEASE_n>, n = grant order. etcd
//      derives them from member id + clock.
//  N5  Raft terms ("raft_term", "RaftTerm", "raftTerm", term column of `endpoint status`)
//      -> <TERM>: elections are an implementation detail of start-up.
//  N6  Version strings ("version":"3.4.23" of endpoint status, version column) -> <VERSION>.
//  N7  Storage details: dbSize, dbSizeInUse, raftIndex, raftAppliedIndex, KV hashes (hashkv,
//      snapshot status "hash"), snapshot totalSize and totalKey (bbolt bucket layout incl. etcd's
//      meta/members buckets) -> placeholders. The revision in snapshot status is kept.
//  N8  Time: health "took", lease "remaining(Ns)" and positive "ttl" of timetolive -> <TTL>
//      (keep-alive TTL and granted TTL are kept; ttl -1 for expired leases is kept).
//  N9  etcdctl's zap log lines on stderr ({"level":...}) carry timestamps and random client ids:
//      lines with an "error" field become "[log] <error>" (keeps the gRPC code + message), the
//      others (snapshot progress) are dropped.
//  N10 Orders that etcd does not define: lease ids in `lease list` (Go map order) and attached
//      keys in `lease timetolive --keys` are sorted.
std::string Normalise(const std::vector<std::string>& args, std::string text,
                      const RunContext& ctx) {
  // N9
  {
    static const std::regex kErrorField(R"re("error":"((?:[^"\\]|\\.)*)")re");
    std::vector<std::string> kept;
    for (const std::string& line : SplitLines(text)) {
      if (absl::StartsWith(line, "{\"level\":")) {
        std::smatch m;
        if (std::regex_search(line, m, kErrorField)) kept.push_back("[log] " + m[1].str());
        continue;
      }
      kept.push_back(line);
    }
    text = absl::StrJoin(kept, "\n") + (kept.empty() ? "" : "\n");
  }
  // N1
  text = absl::StrReplaceAll(
      text,
      {{ctx.client_addr, "<CLIENT_ADDR>"}, {ctx.peer_addr, "<PEER_ADDR>"}, {ctx.tmp_dir, "<TMP>"}});
  // N2
  static const std::regex kCluster(R"re(("cluster_id":|"ClusterID" : )[0-9]+)re");
  text = ReplaceAll(text, kCluster, "$1<CLUSTER_ID>");
  // N4 first (decimal, context-qualified), falling back to N3 for "ID" fields.
  static const std::regex kIdField(R"re(("ID"|"id"|"lease"|"Lease")( : |:)([0-9]+))re");
  text = ReplaceAll(text, kIdField, [&](const std::smatch& m) {
    uint64_t v = 0;
    std::string repl = m[3].str();
    if (absl::SimpleAtoi(m[3].str(), &v)) {
      std::string lease = LeaseNameById(ctx, v);
      if (!lease.empty()) {
        repl = lease;
      } else if (v == ctx.member_id && v != 0) {
        repl = "<MEMBER_ID>";
      }
    }
    return m[1].str() + m[2].str() + repl;
  });
  static const std::regex kLeaseText(
      R"re(lease ([0-9a-f]+) (granted|revoked|keepalived|already expired))re");
  text = ReplaceAll(text, kLeaseText, [&](const std::smatch& m) {
    std::string lease = LeaseName(ctx, m[1].str());
    return "lease " + (lease.empty() ? m[1].str() : lease) + " " + m[2].str();
  });
  const bool is_lease_list = args.size() >= 2 && args[0] == "lease" && args[1] == "list";
  const bool is_timetolive = args.size() >= 2 && args[0] == "lease" && args[1] == "timetolive";
  if (is_lease_list) {
    std::vector<std::string> lines = SplitLines(text);
    for (std::string& line : lines) {
      std::string lease = LeaseName(ctx, line);
      if (!lease.empty()) line = lease;
    }
    // N10
    if (lines.size() > 1 && absl::StartsWith(lines[0], "found ")) {
      std::sort(lines.begin() + 1, lines.end());
    }
    text = absl::StrJoin(lines, "\n") + (lines.empty() ? "" : "\n");
  }
  // N3
  static const std::regex kMemberField(
      R"re(("member_id":|"leader":|"memberID":|"MemberID" : |memberID:)[0-9]+)re");
  text = ReplaceAll(text, kMemberField, "$1<MEMBER_ID>");
  static const std::regex kMemberListLine(R"re((^|\n)[0-9a-f]+, started, )re");
  text = ReplaceAll(text, kMemberListLine, "$1<MEMBER_ID>, started, ");
  // N3/N5/N6/N7 for the simple `endpoint status` line.
  static const std::regex kStatusLine(
      R"re((^|\n)<CLIENT_ADDR>, [0-9a-f]+, [^,]+, [^,]+, (true|false), (true|false), )re"
      R"re([0-9]+, [0-9]+, [0-9]+, )re");
  text = ReplaceAll(text, kStatusLine,
                    "$1<CLIENT_ADDR>, <MEMBER_ID>, <VERSION>, <DB_SIZE>, $2, $3, <TERM>, "
                    "<RAFT_INDEX>, <RAFT_INDEX>, ");
  // N5
  static const std::regex kTerm(R"re(("raft_term":|"RaftTerm" : |"raftTerm":)[0-9]+)re");
  text = ReplaceAll(text, kTerm, "$1<TERM>");
  // N6
  static const std::regex kVersion(R"re("version":"[^"]*")re");
  text = ReplaceAll(text, kVersion, "\"version\":\"<VERSION>\"");
  // N7
  static const std::regex kStorage(
      R"re(("dbSize":|"dbSizeInUse":|"raftIndex":|"raftAppliedIndex":|"hash":|)re"
      R"re("totalSize":|"totalKey":)[0-9]+)re");
  text = ReplaceAll(text, kStorage, "$1<N>");
  if (args.size() >= 2 && args[0] == "endpoint" && args[1] == "hashkv") {
    static const std::regex kHashLine(R"re((<CLIENT_ADDR>, )[0-9]+)re");
    text = ReplaceAll(text, kHashLine, "$1<HASH>");
  }
  if (args.size() >= 2 && args[0] == "snapshot" && args[1] == "status") {
    static const std::regex kSnapLine(R"re((^|\n)[0-9a-f]+, ([0-9]+), [0-9]+, [0-9.]+ [kMG]?B)re");
    text = ReplaceAll(text, kSnapLine, "$1<HASH>, $2, <TOTAL_KEYS>, <SIZE>");
  }
  // N8
  static const std::regex kTook(R"re((took = |"took":")[^",\n]*)re");
  text = ReplaceAll(text, kTook, "$1<TOOK>");
  static const std::regex kRemaining(R"re(remaining\([0-9]+s\))re");
  text = ReplaceAll(text, kRemaining, "remaining(<TTL>s)");
  static const std::regex kTtl(R"re("ttl":[0-9]+)re");
  text = ReplaceAll(text, kTtl, "\"ttl\":<TTL>");
  // N10
  if (is_timetolive) {
    static const std::regex kAttached(R"re(attached keys\(\[([^\]]*)\]\))re");
    text = ReplaceAll(text, kAttached, [](const std::smatch& m) {
      std::vector<std::string> keys = absl::StrSplit(m[1].str(), ' ', absl::SkipEmpty());
      std::sort(keys.begin(), keys.end());
      return "attached keys([" + absl::StrJoin(keys, " ") + "])";
    });
    static const std::regex kKeysArray(R"re("keys":\[([^\]]*)\])re");
    text = ReplaceAll(text, kKeysArray, [](const std::smatch& m) {
      std::vector<std::string> keys = absl::StrSplit(m[1].str(), ',', absl::SkipEmpty());
      std::sort(keys.begin(), keys.end());
      return "\"keys\":[" + absl::StrJoin(keys, ",") + "]";
    });
  }
  return text;
}

std::string Substitute(const std::string& arg, const RunContext& ctx) {
  std::string out = absl::StrReplaceAll(arg, {{"{TMP}", ctx.tmp_dir}});
  for (size_t i = 0; i < ctx.lease_ids.size(); ++i) {
    out = absl::StrReplaceAll(out, {{absl::StrCat("{L", i + 1, "}"), ToHex(ctx.lease_ids[i])}});
  }
  return out;
}

// One transcript entry per step, so the report can show which command diverged.
struct Transcript {
  std::vector<std::string> entries;
  std::string raw_log;  // un-normalised, for debugging
};

absl::StatusOr<Transcript> RunScript(ServerKind kind, const std::vector<std::string>& extra_flags,
                                     std::string* server_log) {
  ServerOptions options;
  options.kind = kind;
  options.name = "diff-node";
  options.extra_flags = extra_flags;
  ServerProcess server(options);
  absl::Status started = server.Start();
  if (!started.ok()) return started;

  RunContext ctx;
  ctx.client_addr = server.endpoint();
  ctx.peer_addr = absl::StrCat("127.0.0.1:", server.peer_port());
  ctx.tmp_dir = server.dir();
  {
    CommandResult members = server.Ctl({"member", "list", "-w", "json"});
    nlohmann::json j = ParseJson(members.stdout_text);
    if (j.is_discarded() || !j.contains("header") || !j["header"].contains("member_id")) {
      return absl::InternalError("cannot read member id: " + Describe(members));
    }
    ctx.member_id = j["header"]["member_id"].get<uint64_t>();
  }

  Transcript transcript;
  static const std::regex kGranted(R"re(^lease ([0-9a-f]+) granted)re");
  static const std::regex kGrantedJson(R"re("ID":([0-9]+))re");
  for (const Step& step : Script()) {
    std::vector<std::string> args;
    for (const std::string& a : step.args) args.push_back(Substitute(a, ctx));
    std::string header =
        absl::StrCat(step.kind == Step::Kind::kWatch ? "$ etcdctl watch " : "$ etcdctl ",
                     absl::StrJoin(step.args, " "));
    if (!step.stdin_text.empty()) {
      absl::StrAppend(&header, "\n  <<< ", absl::StrReplaceAll(step.stdin_text, {{"\n", "\\n"}}));
    }
    CommandResult r;
    if (step.kind == Step::Kind::kCtl) {
      r = server.Ctl(args, step.stdin_text);
    } else {
      BackgroundProcess watch;
      absl::Status s = StartEtcdctlWatch(server.endpoint(), args, &watch);
      if (!s.ok()) return s;
      // Replayed history arrives at once; wait until output has been quiet for 700 ms.
      std::string last;
      int quiet_ms = 0;
      for (int waited_ms = 0; waited_ms < 6000 && quiet_ms < 700; waited_ms += 50) {
        int code = 0;
        if (watch.Exited(&code)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::string now = watch.Stdout();
        quiet_ms = (now == last && !now.empty()) ? quiet_ms + 50 : 0;
        last = now;
      }
      int code = -1;
      if (!watch.Exited(&code)) {
        watch.Kill();
        code = -1;  // still running: the normal case for a live watch
      }
      r.exit_code = code;
      r.stdout_text = watch.Stdout();
      r.stderr_text = watch.Stderr();
    }
    absl::StrAppend(&transcript.raw_log, header, "\n[exit ", r.exit_code, "]\n", r.stdout_text,
                    r.stderr_text.empty() ? "" : "[stderr]\n", r.stderr_text);
    // Learn lease ids before normalising so this step's own output is normalised too.
    if (step.args.size() >= 2 && step.args[0] == "lease" && step.args[1] == "grant") {
      std::smatch m;
      uint64_t id = 0;
      if (std::regex_search(r.stdout_text, m, kGranted) && absl::SimpleHexAtoi(m[1].str(), &id)) {
        ctx.lease_ids.push_back(id);
      } else if (std::regex_search(r.stdout_text, m, kGrantedJson) &&
                 absl::SimpleAtoi(m[1].str(), &id)) {
        ctx.lease_ids.push_back(id);
      }
    }
    std::string entry = absl::StrCat(header, "\n[exit ", r.exit_code, "]\n",
                                     Normalise(step.args, r.stdout_text, ctx));
    std::string err = Normalise(step.args, r.stderr_text, ctx);
    if (!err.empty()) absl::StrAppend(&entry, "[stderr]\n", err);
    transcript.entries.push_back(std::move(entry));
  }
  *server_log = server.LogTail(16 * 1024);
  return transcript;
}

// Minimal LCS line diff of two short blocks, in unified style.
std::string DiffBlock(const std::string& a, const std::string& b) {
  std::vector<std::string> x = SplitLines(a), y = SplitLines(b);
  const size_t n = x.size(), m = y.size();
  std::vector<std::vector<int>> lcs(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      lcs[i][j] = x[i] == y[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::string out;
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] == y[j]) {
      absl::StrAppend(&out, "  ", x[i], "\n");
      ++i;
      ++j;
    } else if (i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      absl::StrAppend(&out, "- ", x[i++], "\n");
    } else {
      absl::StrAppend(&out, "+ ", y[j++], "\n");
    }
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
}

TEST(DifferentialTest, EtcdctlTranscriptsMatch) {
  ServerKind candidate = ServerKindFromEnv();
  if (!ServerKindExplicitlySet() && !IsExecutable(ServerBinary(ServerKind::kMeridian))) {
    std::fprintf(stderr,
                 "NOTE: %s not built and MERIDIAN_E2E_SERVER unset: running the etcd-vs-etcd "
                 "self-check of the normalisation.\n",
                 ServerBinary(ServerKind::kMeridian).c_str());
    candidate = ServerKind::kEtcd;
  }
  // MERIDIAN_E2E_CANDIDATE_FLAGS: extra space-separated flags for the candidate server only
  // (e.g. "--max-txn-ops=1" makes the self-check fail on purpose, to see the report).
  std::vector<std::string> candidate_flags;
  if (const char* flags = std::getenv("MERIDIAN_E2E_CANDIDATE_FLAGS"); flags != nullptr) {
    candidate_flags = absl::StrSplit(flags, ' ', absl::SkipEmpty());
  }
  std::string reference_log, candidate_log;
  absl::StatusOr<Transcript> reference = RunScript(ServerKind::kEtcd, {}, &reference_log);
  ASSERT_TRUE(reference.ok()) << "reference etcd run failed: " << reference.status();
  absl::StatusOr<Transcript> other = RunScript(candidate, candidate_flags, &candidate_log);
  ASSERT_TRUE(other.ok()) << ServerKindName(candidate) << " run failed: " << other.status();
  ASSERT_EQ(reference->entries.size(), other->entries.size());

  std::string report;
  int differing = 0;
  for (size_t i = 0; i < reference->entries.size(); ++i) {
    if (reference->entries[i] == other->entries[i]) continue;
    if (++differing <= 10) {
      absl::StrAppend(&report, "@@ step ", i + 1, " @@\n",
                      DiffBlock(reference->entries[i], other->entries[i]));
    }
  }
  if (differing > 0) {
    // Full transcripts next to the test's working directory, for side-by-side inspection.
    WriteFile("e2e_differential_reference.txt", absl::StrJoin(reference->entries, "\n"));
    WriteFile("e2e_differential_reference_raw.txt", reference->raw_log);
    WriteFile("e2e_differential_candidate.txt", absl::StrJoin(other->entries, "\n"));
    WriteFile("e2e_differential_candidate_raw.txt", other->raw_log);
    ADD_FAILURE() << differing << " of " << reference->entries.size()
                  << " steps differ (showing up to 10; '-' etcd, '+' " << ServerKindName(candidate)
                  << "; full transcripts in e2e_differential_*.txt "
                  << "in the working directory)\n--- etcd\n+++ " << ServerKindName(candidate)
                  << "\n"
                  << report << "\n===== " << ServerKindName(candidate) << " log tail =====\n"
                  << candidate_log;
  }
  if (std::getenv("MERIDIAN_E2E_PRINT_TRANSCRIPT") != nullptr) {
    std::fprintf(stderr, "%s\n", absl::StrJoin(reference->entries, "\n").c_str());
  }
}

}  // namespace
}  // namespace meridian::e2e
