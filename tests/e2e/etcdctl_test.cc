// etcdctl-driven end-to-end tests. Expected outputs were learned from Debian's etcd 3.4.23 and
// etcdctl 3.4.23; the same binary runs against meridian-node (default) or etcd
// (MERIDIAN_E2E_SERVER=etcd).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "harness.h"
#include "test_util.h"

namespace meridian::e2e {
namespace {

using nlohmann::json;

// Parses "lease <hex> granted with TTL(<n>s)" and returns the hex id ("" on mismatch).
std::string ParseGrantedLease(const std::string& out, int ttl_s) {
  static const std::regex kGranted("^lease ([0-9a-f]+) granted with TTL\\(([0-9]+)s\\)\n$");
  std::smatch m;
  if (!std::regex_match(out, m, kGranted)) return "";
  if (m[2].str() != std::to_string(ttl_s)) return "";
  return m[1].str();
}

int64_t HexToInt(const std::string& hex) {
  uint64_t value = 0;
  if (!absl::SimpleHexAtoi(hex, &value)) {
    ADD_FAILURE() << "not hex: " << hex;
    return -1;
  }
  return static_cast<int64_t>(value);
}

// ---------------------------------------------------------------------------------------------
// Read-only queries against a fresh server loaded with a fixed history, so that every revision
// in the expectations is exact. The history is chosen so that each --sort-by target yields a
// different order of a/1, a/2, a/3:
//   rev 2 put a/2=old2-1   rev 3 put a/3=old3-1   rev 4 put a/3=x     rev 5 put a/1=m
//   rev 6 put a/2=old2-2   rev 7 put a/2=b        rev 8 put b/1=b1    rev 9 put c=0
//   rev 10 del b/1
// Final state: a/1=m (create 5, mod 5, ver 1), a/2=b (create 2, mod 7, ver 3),
//              a/3=x (create 3, mod 4, ver 2), c=0 (create 9, mod 9, ver 1); revision 10.
class KvQueryTest : public ServerSuite<DefaultFlags> {
 protected:
  static void SetUpTestSuite() {
    ServerSuite<DefaultFlags>::SetUpTestSuite();
    if (server_ == nullptr) return;
    const std::vector<std::vector<std::string>> history = {
        {"put", "a/2", "old2-1"}, {"put", "a/3", "old3-1"}, {"put", "a/3", "x"},
        {"put", "a/1", "m"},      {"put", "a/2", "old2-2"}, {"put", "a/2", "b"},
        {"put", "b/1", "b1"},     {"put", "c", "0"},        {"del", "b/1"},
    };
    for (const auto& cmd : history) {
      CommandResult r = server_->Ctl(cmd);
      if (r.exit_code != 0) {
        start_error_ = "loading history failed: " + Describe(r);
        server_.reset();
        return;
      }
    }
  }

  void ExpectGet(const std::vector<std::string>& args, const std::string& expected_stdout) {
    std::vector<std::string> full = {"get"};
    full.insert(full.end(), args.begin(), args.end());
    CommandResult r = Ctl(full);
    ASSERT_TRUE(Succeeded(r)) << absl::StrJoin(full, " ");
    EXPECT_EQ(r.stdout_text, expected_stdout) << absl::StrJoin(full, " ");
  }
};

TEST_F(KvQueryTest, SingleKeyAndMissingKey) {
  ExpectGet({"a/2"}, "a/2\nb\n");
  ExpectGet({"missing"}, "");
  ExpectGet({"b/1"}, "");  // deleted
}

TEST_F(KvQueryTest, PrefixRangeAndFromKey) {
  ExpectGet({"a/", "--prefix"}, "a/1\nm\na/2\nb\na/3\nx\n");
  ExpectGet({"a/1", "a/3"}, "a/1\nm\na/2\nb\n");  // range end is exclusive
  ExpectGet({"a/2", "--from-key"}, "a/2\nb\na/3\nx\nc\n0\n");
  ExpectGet({"", "--from-key"}, "a/1\nm\na/2\nb\na/3\nx\nc\n0\n");
  ExpectGet({"", "--prefix"}, "a/1\nm\na/2\nb\na/3\nx\nc\n0\n");
  ExpectGet({"zzz", "--from-key"}, "");
}

TEST_F(KvQueryTest, LimitAndOrder) {
  ExpectGet({"a/", "--prefix", "--limit", "2"}, "a/1\nm\na/2\nb\n");
  ExpectGet({"a/", "--prefix", "--order=DESCEND"}, "a/3\nx\na/2\nb\na/1\nm\n");
  ExpectGet({"a/", "--prefix", "--order=ASCEND"}, "a/1\nm\na/2\nb\na/3\nx\n");
  ExpectGet({"a/", "--prefix", "--order=DESCEND", "--limit", "1"}, "a/3\nx\n");
}

TEST_F(KvQueryTest, SortBy) {
  ExpectGet({"a/", "--prefix", "--sort-by=KEY"}, "a/1\nm\na/2\nb\na/3\nx\n");
  ExpectGet({"a/", "--prefix", "--sort-by=KEY", "--order=DESCEND"}, "a/3\nx\na/2\nb\na/1\nm\n");
  ExpectGet({"a/", "--prefix", "--sort-by=CREATE"}, "a/2\nb\na/3\nx\na/1\nm\n");
  ExpectGet({"a/", "--prefix", "--sort-by=CREATE", "--order=DESCEND"}, "a/1\nm\na/3\nx\na/2\nb\n");
  ExpectGet({"a/", "--prefix", "--sort-by=MODIFY"}, "a/3\nx\na/1\nm\na/2\nb\n");
  ExpectGet({"a/", "--prefix", "--sort-by=VALUE"}, "a/2\nb\na/1\nm\na/3\nx\n");
  ExpectGet({"a/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"}, "a/3\nx\na/1\nm\na/2\nb\n");
  ExpectGet({"a/", "--prefix", "--sort-by=VERSION"}, "a/1\nm\na/3\nx\na/2\nb\n");
  ExpectGet({"a/", "--prefix", "--sort-by=VERSION", "--order=DESCEND"}, "a/2\nb\na/3\nx\na/1\nm\n");
  // The limit applies after sorting by a non-key target.
  ExpectGet({"a/", "--prefix", "--sort-by=VALUE", "--limit", "1"}, "a/2\nb\n");
  ExpectGet({"a/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit", "2"},
            "a/2\nb\na/1\nm\n");
  // Invalid targets are rejected by etcdctl itself (exit code 4 = ExitBadFeature).
  CommandResult bad = Ctl({"get", "a/", "--prefix", "--sort-by=FOO"});
  EXPECT_TRUE(FailedWith(bad, 4, "Error: bad sort target FOO"));
}

TEST_F(KvQueryTest, HistoricalRevisions) {
  ExpectGet({"a/", "--prefix", "--rev", "3"}, "a/2\nold2-1\na/3\nold3-1\n");
  ExpectGet({"a/", "--prefix", "--rev", "6"}, "a/1\nm\na/2\nold2-2\na/3\nx\n");
  ExpectGet({"b/1", "--rev", "9"}, "b/1\nb1\n");
  ExpectGet({"b/1", "--rev", "10"}, "");
  ExpectGet({"", "--prefix", "--rev", "1"}, "");
  ExpectGet({"a/", "--prefix", "--rev", "10"}, "a/1\nm\na/2\nb\na/3\nx\n");
  ExpectGet({"a/", "--prefix", "--rev", "6", "--sort-by=MODIFY"}, "a/3\nx\na/1\nm\na/2\nold2-2\n");
  CommandResult future = Ctl({"get", "a/1", "--rev", "11"});
  EXPECT_TRUE(
      FailedWith(future, 1, "Error: etcdserver: mvcc: required revision is a future revision"));
  CommandResult far_future = Ctl({"get", "a/1", "--rev", "1000000"});
  EXPECT_TRUE(
      FailedWith(far_future, 1, "Error: etcdserver: mvcc: required revision is a future revision"));
}

TEST_F(KvQueryTest, KeysOnlyAndValueOnly) {
  // --keys-only prints an empty line where the value would be.
  ExpectGet({"a/", "--prefix", "--keys-only"}, "a/1\n\na/2\n\na/3\n\n");
  ExpectGet({"a/", "--prefix", "--print-value-only"}, "m\nb\nx\n");
  ExpectGet({"a/", "--prefix", "--print-value-only", "--order=DESCEND", "--limit", "2"}, "x\nb\n");
  ExpectGet({"a/2", "--hex"}, "\\x61\\x2f\\x32\n\\x62\n");
  ExpectGet({"a/", "--prefix", "--consistency=s"}, "a/1\nm\na/2\nb\na/3\nx\n");
}

TEST_F(KvQueryTest, JsonOutput) {
  CommandResult r = Ctl({"get", "a/", "--prefix", "-w", "json"});
  ASSERT_TRUE(Succeeded(r));
  json j = ParseJson(r.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << r.stdout_text;
  EXPECT_EQ(JsonInt(j["header"], "revision"), 10);
  EXPECT_GE(JsonInt(j["header"], "raft_term"), 1);
  EXPECT_TRUE(j["header"]["cluster_id"].is_number_unsigned());
  EXPECT_TRUE(j["header"]["member_id"].is_number_unsigned());
  EXPECT_EQ(JsonInt(j, "count"), 3);
  EXPECT_FALSE(j.contains("more")) << "false bools are omitted: " << r.stdout_text;
  ASSERT_TRUE(j["kvs"].is_array());
  ASSERT_EQ(j["kvs"].size(), 3u);
  const json& kv = j["kvs"][1];
  EXPECT_EQ(kv["key"], B64("a/2"));
  EXPECT_EQ(kv["value"], B64("b"));
  EXPECT_EQ(JsonInt(kv, "create_revision"), 2);
  EXPECT_EQ(JsonInt(kv, "mod_revision"), 7);
  EXPECT_EQ(JsonInt(kv, "version"), 3);
  EXPECT_FALSE(kv.contains("lease")) << "zero lease is omitted";
  // Exact field order/format of one kv, as etcdctl prints it.
  EXPECT_NE(r.stdout_text.find(R"("kvs":[{"key":"YS8x","create_revision":5,"mod_revision":5,)"
                               R"("version":1,"value":"bQ=="},)"),
            std::string::npos)
      << r.stdout_text;

  // A limited read reports more=true and the total count.
  CommandResult limited = Ctl({"get", "a/", "--prefix", "--limit", "1", "-w", "json"});
  ASSERT_TRUE(Succeeded(limited));
  json lj = ParseJson(limited.stdout_text);
  ASSERT_FALSE(lj.is_discarded());
  EXPECT_EQ(lj["more"], true);
  EXPECT_EQ(JsonInt(lj, "count"), 3);
  EXPECT_EQ(lj["kvs"].size(), 1u);

  // etcdctl 3.4 has no --count-only; a limit-1 read is the closest etcdctl can get. (count_only
  // itself is covered at the gRPC level.)
  CommandResult keys_only = Ctl({"get", "a/", "--prefix", "--keys-only", "-w", "json"});
  ASSERT_TRUE(Succeeded(keys_only));
  json kj = ParseJson(keys_only.stdout_text);
  ASSERT_FALSE(kj.is_discarded());
  ASSERT_EQ(kj["kvs"].size(), 3u);
  EXPECT_FALSE(kj["kvs"][0].contains("value"));
  EXPECT_EQ(JsonInt(kj["kvs"][0], "version"), 1);

  // Historical read: header carries the *current* revision, kvs the old state.
  CommandResult old = Ctl({"get", "a/2", "--rev", "6", "-w", "json"});
  ASSERT_TRUE(Succeeded(old));
  json oj = ParseJson(old.stdout_text);
  ASSERT_FALSE(oj.is_discarded());
  EXPECT_EQ(JsonInt(oj["header"], "revision"), 10);
  EXPECT_EQ(oj["kvs"][0]["value"], B64("old2-2"));
  EXPECT_EQ(JsonInt(oj["kvs"][0], "mod_revision"), 6);
  EXPECT_EQ(JsonInt(oj["kvs"][0], "version"), 2);

  // Empty result: no kvs field, count omitted (0).
  CommandResult none = Ctl({"get", "nothing-here", "-w", "json"});
  ASSERT_TRUE(Succeeded(none));
  json nj = ParseJson(none.stdout_text);
  ASSERT_FALSE(nj.is_discarded());
  EXPECT_FALSE(nj.contains("kvs"));
  EXPECT_FALSE(nj.contains("count"));
}

TEST_F(KvQueryTest, FieldsOutput) {
  CommandResult r = Ctl({"get", "a/3", "-w", "fields"});
  ASSERT_TRUE(Succeeded(r));
  std::vector<std::string> lines = SplitLines(r.stdout_text);
  ASSERT_EQ(lines.size(), 12u) << r.stdout_text;
  EXPECT_TRUE(absl::StartsWith(lines[0], "\"ClusterID\" : "));
  EXPECT_TRUE(absl::StartsWith(lines[1], "\"MemberID\" : "));
  EXPECT_EQ(lines[2], "\"Revision\" : 10");
  EXPECT_TRUE(absl::StartsWith(lines[3], "\"RaftTerm\" : "));
  EXPECT_EQ(lines[4], "\"Key\" : \"a/3\"");
  EXPECT_EQ(lines[5], "\"CreateRevision\" : 3");
  EXPECT_EQ(lines[6], "\"ModRevision\" : 4");
  EXPECT_EQ(lines[7], "\"Version\" : 2");
  EXPECT_EQ(lines[8], "\"Value\" : \"x\"");
  EXPECT_EQ(lines[9], "\"Lease\" : 0");
  EXPECT_EQ(lines[10], "\"More\" : false");
  EXPECT_EQ(lines[11], "\"Count\" : 1");
}

// ---------------------------------------------------------------------------------------------
// Writes, txns, watches, leases and maintenance on one shared server. Each test uses its own key
// prefix and computes revisions relative to the revision it observes first.
class KvWriteTest : public ServerSuite<DefaultFlags> {};

TEST_F(KvWriteTest, PutOverwriteAndPrevKv) {
  EXPECT_EQ(Ctl({"put", "pw/k", "v1"}).stdout_text, "OK\n");
  CommandResult prev = Ctl({"put", "pw/k", "v2", "--prev-kv"});
  ASSERT_TRUE(Succeeded(prev));
  EXPECT_EQ(prev.stdout_text, "OK\npw/k\nv1\n");
  // --prev-kv on a fresh key prints just OK.
  EXPECT_EQ(Ctl({"put", "pw/new", "x", "--prev-kv"}).stdout_text, "OK\n");
  // --ignore-value keeps the value, bumps version.
  CommandResult ignore = Ctl({"put", "pw/k", "--ignore-value", "--prev-kv"});
  ASSERT_TRUE(Succeeded(ignore));
  EXPECT_EQ(ignore.stdout_text, "OK\npw/k\nv2\n");
  CommandResult get = Ctl({"get", "pw/k", "-w", "json"});
  ASSERT_TRUE(Succeeded(get));
  json j = ParseJson(get.stdout_text);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["kvs"][0]["value"], B64("v2"));
  EXPECT_EQ(JsonInt(j["kvs"][0], "version"), 3);
  const int64_t rev = JsonInt(j["header"], "revision");
  EXPECT_EQ(JsonInt(j["kvs"][0], "mod_revision"), rev);
  EXPECT_EQ(JsonInt(j["kvs"][0], "create_revision"), rev - 3);
  // --ignore-value on a missing key is a server-side error.
  EXPECT_TRUE(FailedWith(Ctl({"put", "pw/missing", "--ignore-value"}), 1,
                         "Error: etcdserver: key not found"));
  // An empty value is legal and is omitted from json.
  ASSERT_TRUE(Succeeded(Ctl({"put", "pw/empty", ""})));
  CommandResult empty = Ctl({"get", "pw/empty", "-w", "json"});
  json ej = ParseJson(empty.stdout_text);
  ASSERT_FALSE(ej.is_discarded());
  EXPECT_FALSE(ej["kvs"][0].contains("value"));
  EXPECT_EQ(Ctl({"get", "pw/empty"}).stdout_text, "pw/empty\n\n");
  // put -w json prints only the header (no prev_kv without --prev-kv).
  CommandResult pj = Ctl({"put", "pw/k", "v3", "-w", "json"});
  json pjj = ParseJson(pj.stdout_text);
  ASSERT_FALSE(pjj.is_discarded()) << pj.stdout_text;
  EXPECT_EQ(pjj.size(), 1u) << pj.stdout_text;
  EXPECT_EQ(JsonInt(pjj["header"], "revision"), rev + 2);
}

TEST_F(KvWriteTest, Delete) {
  for (const char* k : {"dl/a", "dl/b", "dl/c", "dl/d"}) {
    ASSERT_TRUE(Succeeded(Ctl({"put", k, std::string(k) + "-v"})));
  }
  EXPECT_EQ(Ctl({"del", "dl/missing"}).stdout_text, "0\n");
  EXPECT_EQ(Ctl({"del", "dl/a"}).stdout_text, "1\n");
  CommandResult prev = Ctl({"del", "dl/b", "dl/d", "--prev-kv"});  // [dl/b, dl/d)
  ASSERT_TRUE(Succeeded(prev));
  EXPECT_EQ(prev.stdout_text, "2\ndl/b\ndl/b-v\ndl/c\ndl/c-v\n");
  const int64_t before = Revision();
  CommandResult pj = Ctl({"del", "dl/", "--prefix", "--prev-kv", "-w", "json"});
  ASSERT_TRUE(Succeeded(pj));
  json j = ParseJson(pj.stdout_text);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(JsonInt(j, "deleted"), 1);
  EXPECT_EQ(JsonInt(j["header"], "revision"), before + 1);
  ASSERT_EQ(j["prev_kvs"].size(), 1u);
  EXPECT_EQ(j["prev_kvs"][0]["key"], B64("dl/d"));
  EXPECT_EQ(Ctl({"get", "dl/", "--prefix"}).stdout_text, "");
  // A delete that removes nothing does not create a revision.
  EXPECT_EQ(Ctl({"del", "dl/", "--prefix"}).stdout_text, "0\n");
  EXPECT_EQ(Revision(), before + 1);
}

TEST_F(KvWriteTest, DeleteFromKey) {
  // '~' (0x7e) sorts after every other prefix used in this suite.
  for (const char* k : {"~fk/a", "~fk/b", "~fk/c"}) ASSERT_TRUE(Succeeded(Ctl({"put", k, "v"})));
  CommandResult r = Ctl({"del", "~fk/b", "--from-key", "--prev-kv"});
  ASSERT_TRUE(Succeeded(r));
  EXPECT_EQ(r.stdout_text, "2\n~fk/b\nv\n~fk/c\nv\n");
  EXPECT_EQ(Ctl({"get", "~fk/", "--prefix", "--keys-only"}).stdout_text, "~fk/a\n\n");
  EXPECT_EQ(Ctl({"del", "~fk/", "--from-key"}).stdout_text, "1\n");
}

TEST_F(KvWriteTest, TxnInteractiveBothBranches) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "tx/a", "1"})));
  const std::string prompts =
      "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";
  // Success branch: all compares hold.
  CommandResult ok = Ctl({"txn", "-i"},
                         "value(\"tx/a\") = \"1\"\n"
                         "version(\"tx/a\") = \"1\"\n"
                         "create(\"tx/none\") = \"0\"\n"
                         "mod(\"tx/a\") > \"0\"\n"
                         "\n"
                         "put tx/b yes\n"
                         "del tx/none\n"
                         "get tx/ --prefix\n"
                         "\n"
                         "put tx/b no\n"
                         "\n");
  ASSERT_TRUE(Succeeded(ok));
  EXPECT_EQ(ok.stdout_text, prompts + "SUCCESS\n\nOK\n\n0\n\ntx/a\n1\ntx/b\nyes\n");
  // Failure branch: one compare fails.
  CommandResult fail = Ctl({"txn", "-i"},
                           "value(\"tx/a\") = \"1\"\n"
                           "value(\"tx/b\") != \"yes\"\n"
                           "\n"
                           "put tx/c never\n"
                           "\n"
                           "put tx/b no --prev-kv\n"
                           "get tx/b\n"
                           "del tx/a --prev-kv\n"
                           "\n");
  ASSERT_TRUE(Succeeded(fail));
  EXPECT_EQ(fail.stdout_text, prompts + "FAILURE\n\nOK\ntx/b\nyes\n\ntx/b\nno\n\n1\ntx/a\n1\n");
  EXPECT_EQ(Ctl({"get", "tx/", "--prefix"}).stdout_text, "tx/b\nno\n");
  // All ops of one txn share one revision.
  CommandResult multi = Ctl({"txn"}, "\nput tx/x 1\nput tx/y 2\n\n\n");
  ASSERT_TRUE(Succeeded(multi));
  EXPECT_EQ(multi.stdout_text, "SUCCESS\n\nOK\n\nOK\n");
  CommandResult both = Ctl({"get", "tx/x", "tx/z", "-w", "json"});
  json bj = ParseJson(both.stdout_text);
  ASSERT_FALSE(bj.is_discarded());
  ASSERT_EQ(bj["kvs"].size(), 2u);
  EXPECT_EQ(bj["kvs"][0]["mod_revision"], bj["kvs"][1]["mod_revision"]);
  EXPECT_EQ(JsonInt(bj["header"], "revision"), JsonInt(bj["kvs"][0], "mod_revision"));
  // A read-only txn does not create a revision.
  const int64_t rev = Revision();
  CommandResult ro = Ctl({"txn"}, "mod(\"tx/x\") < \"1000000\"\n\nget tx/x\n\n\n");
  ASSERT_TRUE(Succeeded(ro));
  EXPECT_EQ(ro.stdout_text, "SUCCESS\n\ntx/x\n1\n");
  EXPECT_EQ(Revision(), rev);
}

TEST_F(KvWriteTest, TxnJson) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "tj/a", "1"})));
  const int64_t rev = Revision();
  CommandResult r = Ctl({"txn", "-w", "json"},
                        "value(\"tj/a\") = \"2\"\n\nput tj/a 2\n\nget tj/a\nput tj/b 1\n\n");
  ASSERT_TRUE(Succeeded(r));
  json j = ParseJson(r.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << r.stdout_text;
  EXPECT_FALSE(j.contains("succeeded")) << "false is omitted";
  EXPECT_EQ(JsonInt(j["header"], "revision"), rev + 1);
  ASSERT_EQ(j["responses"].size(), 2u);
  const json& range = j["responses"][0]["Response"]["ResponseRange"];
  // Nested responses carry a header with only the revision (taken at the time of the read).
  EXPECT_EQ(range["header"].dump(), absl::StrCat(R"({"revision":)", rev, "}"));
  EXPECT_EQ(JsonInt(range, "count"), 1);
  EXPECT_EQ(range["kvs"][0]["value"], B64("1"));
  const json& put = j["responses"][1]["Response"]["ResponsePut"];
  EXPECT_EQ(put["header"].dump(), absl::StrCat(R"({"revision":)", rev + 1, "}"));
}

TEST_F(KvWriteTest, TxnErrors) {
  CommandResult bad = Ctl({"txn"}, "value(\"a\")=\"1\"\n\n\n\n");
  EXPECT_EQ(bad.exit_code, 3) << Describe(bad);  // ExitInvalidInput
  EXPECT_NE(bad.ErrorLines().find("Error: malformed comparison"), std::string::npos);
  const std::string duplicate = "Error: etcdserver: duplicate key given in txn request";
  EXPECT_TRUE(FailedWith(Ctl({"txn"}, "\nput te/a 1\ndel te/a\n\n\n"), 1, duplicate));
  EXPECT_TRUE(FailedWith(Ctl({"txn"}, "\nput te/a 1\nput te/a 2\n\n\n"), 1, duplicate));
  EXPECT_TRUE(FailedWith(Ctl({"txn"}, "\nput te/a 1\ndel te/ --prefix\n\n\n"), 1, duplicate));
  // Reading and writing the same key, or the same key in different branches, is fine.
  EXPECT_TRUE(Succeeded(Ctl({"txn"}, "\nput te/a 1\nget te/a\n\ndel te/a\n\n")));
  EXPECT_EQ(Ctl({"get", "te/", "--prefix"}).stdout_text, "te/a\n1\n");
  CommandResult future = Ctl({"txn"}, "\nget tx/a --rev 100000000\n\n\n");
  EXPECT_TRUE(
      FailedWith(future, 1, "Error: etcdserver: mvcc: required revision is a future revision"));
}

TEST_F(KvWriteTest, WatchNewEvents) {
  const int64_t start = Revision() + 1;
  BackgroundProcess watch;
  ASSERT_TRUE(
      StartEtcdctlWatch(server().endpoint(), {"wn/k", "--rev", std::to_string(start)}, &watch)
          .ok());
  ASSERT_TRUE(Succeeded(Ctl({"put", "wn/k", "v1"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "wn/other", "ignored"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "wn/k", "v2"})));
  ASSERT_TRUE(Succeeded(Ctl({"del", "wn/k"})));
  const std::string expected = "PUT\nwn/k\nv1\nPUT\nwn/k\nv2\nDELETE\nwn/k\n\n";
  EXPECT_TRUE(watch.WaitForStdout([&](const std::string& s) { return s.size() >= expected.size(); },
                                  10000));
  EXPECT_EQ(watch.Stdout(), expected) << "stderr: " << watch.Stderr();
}

TEST_F(KvWriteTest, WatchPrefixPrevKvAndHistory) {
  const int64_t start = Revision() + 1;
  ASSERT_TRUE(Succeeded(Ctl({"put", "wp/a", "1"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "wp/b", "2"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "wp/a", "3"})));
  ASSERT_TRUE(Succeeded(Ctl({"txn"}, "\ndel wp/b\nput wp/c 4\n\n\n")));
  ASSERT_TRUE(Succeeded(Ctl({"put", "wpx", "outside"})));  // matches "wp" but not "wp/"
  // PUT with prev-kv prints the previous kv first; DELETE prints prev kv then the key with an
  // empty value line.
  const std::string history_with_prev =
      "PUT\nwp/a\n1\n"
      "PUT\nwp/b\n2\n"
      "PUT\nwp/a\n1\nwp/a\n3\n"
      "DELETE\nwp/b\n2\nwp/b\n\n"
      "PUT\nwp/c\n4\n";
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(server().endpoint(),
                                {"wp/", "--prefix", "--prev-kv", "--rev", std::to_string(start)},
                                &watch)
                  .ok());
  EXPECT_TRUE(watch.WaitForStdout(
      [&](const std::string& s) { return s.size() >= history_with_prev.size(); }, 10000));
  EXPECT_EQ(watch.Stdout(), history_with_prev);
  // Still live after replaying history.
  ASSERT_TRUE(Succeeded(Ctl({"put", "wp/c", "5"})));
  const std::string live = history_with_prev + "PUT\nwp/c\n4\nwp/c\n5\n";
  EXPECT_TRUE(
      watch.WaitForStdout([&](const std::string& s) { return s.size() >= live.size(); }, 10000));
  EXPECT_EQ(watch.Stdout(), live) << "stderr: " << watch.Stderr();

  // A watch starting in the middle of history without --prev-kv.
  BackgroundProcess mid;
  ASSERT_TRUE(StartEtcdctlWatch(server().endpoint(),
                                {"wp/", "--prefix", "--rev", std::to_string(start + 2)}, &mid)
                  .ok());
  const std::string mid_expected = "PUT\nwp/a\n3\nDELETE\nwp/b\n\nPUT\nwp/c\n4\nPUT\nwp/c\n5\n";
  EXPECT_TRUE(mid.WaitForStdout(
      [&](const std::string& s) { return s.size() >= mid_expected.size(); }, 10000));
  EXPECT_EQ(mid.Stdout(), mid_expected);
}

TEST_F(KvWriteTest, WatchJson) {
  const int64_t start = Revision() + 1;
  ASSERT_TRUE(Succeeded(Ctl({"put", "wj/a", "1"})));
  ASSERT_TRUE(Succeeded(Ctl({"del", "wj/a"})));
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(server().endpoint(),
                                {"wj/a", "--rev", std::to_string(start), "-w", "json"}, &watch)
                  .ok());
  // Responses may be batched differently, so collect events over all json lines.
  std::vector<json> events;
  auto collect = [&](const std::string& out) {
    events.clear();
    for (const std::string& line : SplitLines(out)) {
      json j = ParseJson(line);
      if (j.is_discarded() || !j.contains("Events")) continue;
      for (const json& e : j["Events"]) events.push_back(e);
    }
    return events.size() >= 2;
  };
  ASSERT_TRUE(watch.WaitForStdout(collect, 10000)) << watch.Stdout();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].contains("type")) << "PUT (0) is omitted";
  EXPECT_EQ(events[0]["kv"]["key"], B64("wj/a"));
  EXPECT_EQ(JsonInt(events[0]["kv"], "mod_revision"), start);
  EXPECT_EQ(JsonInt(events[1], "type"), 1);  // DELETE
  EXPECT_EQ(JsonInt(events[1]["kv"], "mod_revision"), start + 1);
  EXPECT_FALSE(events[1]["kv"].contains("create_revision")) << "tombstones carry only key+mod";
  json first = ParseJson(SplitLines(watch.Stdout())[0]);
  EXPECT_EQ(first["Canceled"], false);
  EXPECT_EQ(JsonInt(first, "CompactRevision"), 0);
  EXPECT_GE(JsonInt(first["Header"], "revision"), start + 1);
}

TEST_F(KvWriteTest, MaintenanceAndStatus) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "mt/a", "1"})));
  // defrag ignores -w.
  CommandResult defrag = Ctl({"defrag"});
  ASSERT_TRUE(Succeeded(defrag));
  EXPECT_EQ(defrag.stdout_text,
            absl::StrCat("Finished defragmenting etcd member[", server().endpoint(), "]\n"));

  // alarm list with no alarms prints nothing.
  CommandResult alarms = Ctl({"alarm", "list"});
  ASSERT_TRUE(Succeeded(alarms));
  EXPECT_EQ(alarms.stdout_text, "");
  CommandResult alarms_json = Ctl({"alarm", "list", "-w", "json"});
  ASSERT_TRUE(Succeeded(alarms_json));
  json aj = ParseJson(alarms_json.stdout_text);
  ASSERT_FALSE(aj.is_discarded()) << alarms_json.stdout_text;
  EXPECT_FALSE(aj.contains("alarms")) << alarms_json.stdout_text;
  CommandResult disarm = Ctl({"alarm", "disarm"});
  ASSERT_TRUE(Succeeded(disarm));
  EXPECT_EQ(disarm.stdout_text, "");

  const int64_t rev = Revision();
  CommandResult status = Ctl({"endpoint", "status", "-w", "json"});
  ASSERT_TRUE(Succeeded(status));
  json sj = ParseJson(status.stdout_text);
  ASSERT_FALSE(sj.is_discarded()) << status.stdout_text;
  ASSERT_TRUE(sj.is_array());
  ASSERT_EQ(sj.size(), 1u);
  EXPECT_EQ(sj[0]["Endpoint"], server().endpoint());
  const json& st = sj[0]["Status"];
  EXPECT_EQ(JsonInt(st["header"], "revision"), rev);
  EXPECT_EQ(JsonUint(st, "leader"), JsonUint(st["header"], "member_id"));
  EXPECT_TRUE(st["version"].is_string() && !st["version"].get<std::string>().empty());
  EXPECT_GT(JsonInt(st, "dbSize"), 0);
  EXPECT_GT(JsonInt(st, "dbSizeInUse"), 0);
  EXPECT_GT(JsonInt(st, "raftIndex"), 0);
  EXPECT_GE(JsonInt(st, "raftTerm"), 1);
  EXPECT_FALSE(st.contains("errors"));
  // Simple format: endpoint, hex member id, version, db size, leader?, learner?, term, index,
  // applied index, errors.
  CommandResult simple = Ctl({"endpoint", "status"});
  ASSERT_TRUE(Succeeded(simple));
  std::regex status_line(
      absl::StrCat("^", server().endpoint(),
                   ", [0-9a-f]+, [0-9a-z.\\-]+, [0-9.]+ [kMG]?B, true, false, [0-9]+, [0-9]+, "
                   "[0-9]+, \n$"));
  EXPECT_TRUE(std::regex_match(simple.stdout_text, status_line)) << simple.stdout_text;

  // endpoint health: the human-readable line goes to *stderr*.
  CommandResult health = Ctl({"endpoint", "health"});
  ASSERT_TRUE(Succeeded(health));
  EXPECT_EQ(health.stdout_text, "");
  EXPECT_TRUE(absl::StartsWith(
      health.stderr_text,
      absl::StrCat(server().endpoint(), " is healthy: successfully committed proposal: took = ")))
      << health.stderr_text;
  CommandResult hj = Ctl({"endpoint", "health", "-w", "json"});
  ASSERT_TRUE(Succeeded(hj));
  json hjj = ParseJson(hj.stdout_text);
  ASSERT_FALSE(hjj.is_discarded()) << hj.stdout_text;
  EXPECT_EQ(hjj[0]["endpoint"], server().endpoint());
  EXPECT_EQ(hjj[0]["health"], true);
  EXPECT_TRUE(hjj[0]["took"].is_string());

  // member list.
  CommandResult members = Ctl({"member", "list", "-w", "json"});
  ASSERT_TRUE(Succeeded(members));
  json mj = ParseJson(members.stdout_text);
  ASSERT_FALSE(mj.is_discarded()) << members.stdout_text;
  ASSERT_EQ(mj["members"].size(), 1u);
  const json& m = mj["members"][0];
  CommandResult ms = Ctl({"member", "list"});
  ASSERT_TRUE(Succeeded(ms));
  const std::string member_url = absl::StrCat("http://", server().server_endpoint());
  if (Proxied() && m["clientURLs"] != json::array({member_url})) {
    // Through a proxy, the member list may legitimately describe the proxy instead of the member,
    // so that clients which sync their endpoints from it (clientv3 AutoSyncInterval) keep going
    // through the proxy: etcd's grpc-proxy answers with a single made-up member (name = host
    // name, clientURLs = its --advertise-client-url without a scheme, no ID, no peer URLs, no
    // response header). The closest meaningful property then: one started, non-learner member,
    // reachable at the proxy's own address. (A pass-through answer is checked strictly below.)
    const json& urls = m["clientURLs"];
    ASSERT_TRUE(urls.is_array() && urls.size() == 1u) << members.stdout_text;
    EXPECT_TRUE(urls[0] == server().endpoint() || urls[0] == "http://" + server().endpoint())
        << "the member list through the proxy names neither the member (" << member_url
        << ") nor the proxy (" << server().endpoint() << "): " << members.stdout_text;
    EXPECT_FALSE(m.contains("isLearner"));
    std::regex proxy_line(absl::StrCat("^[0-9a-f]+, started, [^,\n]*, [^,\n]*, (http://)?",
                                       server().endpoint(), ", false\n$"));
    EXPECT_TRUE(std::regex_match(ms.stdout_text, proxy_line)) << ms.stdout_text;
    return;
  }
  EXPECT_EQ(JsonUint(m, "ID"), JsonUint(mj["header"], "member_id"));
  EXPECT_EQ(m["name"], server().options().name);
  EXPECT_EQ(m["peerURLs"], json::array({absl::StrCat("http://127.0.0.1:", server().peer_port())}));
  EXPECT_EQ(m["clientURLs"], json::array({member_url}));
  EXPECT_FALSE(m.contains("isLearner"));
  std::regex member_line(absl::StrCat("^[0-9a-f]+, started, ", server().options().name,
                                      ", http://127.0.0.1:", server().peer_port(), ", ",
                                      member_url, ", false\n$"));
  EXPECT_TRUE(std::regex_match(ms.stdout_text, member_line)) << ms.stdout_text;
  // The hex id in the simple output is the json member id.
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%llx", static_cast<unsigned long long>(JsonUint(m, "ID")));
  EXPECT_TRUE(absl::StartsWith(ms.stdout_text, absl::StrCat(hex, ", "))) << ms.stdout_text;
}

TEST_F(KvWriteTest, HashKvIsStableForPastRevisions) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "hk/a", "1"})));
  const int64_t rev = Revision();
  auto hash_at = [&](int64_t at) -> int64_t {
    CommandResult r = Ctl({"endpoint", "hashkv", "--rev", std::to_string(at), "-w", "json"});
    EXPECT_TRUE(Succeeded(r));
    json j = ParseJson(r.stdout_text);
    if (j.is_discarded() || !j.is_array() || j.empty()) {
      ADD_FAILURE() << r.stdout_text;
      return -1;
    }
    EXPECT_EQ(j[0]["Endpoint"], server().endpoint());
    EXPECT_TRUE(j[0]["HashKV"]["hash"].is_number_unsigned()) << r.stdout_text;
    return j[0]["HashKV"]["hash"].get<int64_t>();
  };
  const int64_t h1 = hash_at(rev);
  ASSERT_TRUE(Succeeded(Ctl({"put", "hk/a", "2"})));
  EXPECT_EQ(hash_at(rev), h1) << "hash of history up to a past revision must not change";
  EXPECT_NE(hash_at(rev + 1), h1);
  CommandResult simple = Ctl({"endpoint", "hashkv"});
  ASSERT_TRUE(Succeeded(simple));
  EXPECT_TRUE(std::regex_match(simple.stdout_text,
                               std::regex(absl::StrCat("^", server().endpoint(), ", [0-9]+\n$"))))
      << simple.stdout_text;
}

TEST_F(KvWriteTest, SnapshotSaveAndStatus) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "sn/a", "1"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "sn/b", "2"})));
  const int64_t rev = Revision();
  const std::string path = server().dir() + "/snap.db";
  CommandResult save = Ctl({"snapshot", "save", path});
  ASSERT_TRUE(Succeeded(save));
  EXPECT_EQ(save.stdout_text, absl::StrCat("Snapshot saved at ", path, "\n"));
  // `snapshot status` reads the file locally as a bbolt database: revision = main revision of the
  // last key in bucket "key", totalKey = number of entries over *all* buckets.
  CommandResult status = Ctl({"snapshot", "status", path, "-w", "json"});
  ASSERT_TRUE(Succeeded(status));
  json j = ParseJson(status.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << status.stdout_text;
  EXPECT_EQ(JsonInt(j, "revision"), rev);
  // Every revision since the server started is still in the key bucket (nothing compacted here).
  EXPECT_GE(JsonInt(j, "totalKey"), rev - 1);
  EXPECT_GT(JsonInt(j, "totalSize"), 0);
  EXPECT_TRUE(j["hash"].is_number_unsigned());
  CommandResult simple = Ctl({"snapshot", "status", path});
  ASSERT_TRUE(Succeeded(simple));
  EXPECT_TRUE(std::regex_match(
      simple.stdout_text,
      std::regex(absl::StrCat("^[0-9a-f]+, ", rev, ", [0-9]+, [0-9.]+ [kMG]?B\n$"))))
      << simple.stdout_text;
  // `snapshot restore` checks the SHA-256 the stream ended with ("snapshot file integrity check
  // failed" otherwise).
  CommandResult restore = Ctl(
      {"snapshot", "restore", path, "--data-dir", server().dir() + "/restored"});
  ASSERT_TRUE(Succeeded(restore)) << restore.stdout_text << restore.stderr_text;
}

// ---------------------------------------------------------------------------------------------
class LeaseTest : public ServerSuite<DefaultFlags> {
 protected:
  std::string Grant(int ttl_s) {
    CommandResult r = Ctl({"lease", "grant", std::to_string(ttl_s)});
    EXPECT_TRUE(Succeeded(r));
    std::string id = ParseGrantedLease(r.stdout_text, ttl_s);
    EXPECT_FALSE(id.empty()) << "unexpected grant output: " << r.stdout_text;
    return id;
  }
};

TEST_F(LeaseTest, GrantTimeToLiveKeepAliveRevoke) {
  const std::string id = Grant(100);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(Succeeded(Ctl({"put", "ls/k1", "v1", "--lease=" + id})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "ls/k2", "v2", "--lease=" + id})));

  CommandResult ttl = Ctl({"lease", "timetolive", id});
  ASSERT_TRUE(Succeeded(ttl));
  std::smatch m;
  const std::string ttl_out = ttl.stdout_text;
  ASSERT_TRUE(std::regex_match(
      ttl_out, m,
      std::regex(
          absl::StrCat("^lease ", id, " granted with TTL\\(100s\\), remaining\\(([0-9]+)s\\)\n$"))))
      << ttl_out;
  int remaining = std::stoi(m[1].str());
  EXPECT_GE(remaining, 95);
  EXPECT_LE(remaining, 100);

  // Attached keys come back in no particular order.
  CommandResult keys = Ctl({"lease", "timetolive", id, "--keys"});
  ASSERT_TRUE(Succeeded(keys));
  const std::string keys_out = keys.stdout_text;
  ASSERT_TRUE(std::regex_match(
      keys_out, m,
      std::regex(absl::StrCat("^lease ", id,
                              " granted with TTL\\(100s\\), remaining\\([0-9]+s\\), attached "
                              "keys\\(\\[(.*)\\]\\)\n$"))))
      << keys_out;
  std::vector<std::string> attached = absl::StrSplit(m[1].str(), ' ');
  std::sort(attached.begin(), attached.end());
  EXPECT_EQ(attached, (std::vector<std::string>{"ls/k1", "ls/k2"}));

  CommandResult tj = Ctl({"lease", "timetolive", id, "--keys", "-w", "json"});
  ASSERT_TRUE(Succeeded(tj));
  json j = ParseJson(tj.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << tj.stdout_text;
  EXPECT_EQ(JsonInt(j, "id"), HexToInt(id));
  EXPECT_EQ(JsonInt(j, "granted-ttl"), 100);
  EXPECT_GE(JsonInt(j, "ttl"), 95);
  EXPECT_EQ(j["keys"].size(), 2u);
  EXPECT_TRUE(j.contains("revision") && j.contains("member_id")) << "header fields are flattened";

  CommandResult get = Ctl({"get", "ls/k1", "-w", "json"});
  json gj = ParseJson(get.stdout_text);
  ASSERT_FALSE(gj.is_discarded());
  EXPECT_EQ(JsonInt(gj["kvs"][0], "lease"), HexToInt(id));

  CommandResult ka = Ctl({"lease", "keep-alive", "--once", id});
  ASSERT_TRUE(Succeeded(ka));
  EXPECT_EQ(ka.stdout_text, absl::StrCat("lease ", id, " keepalived with TTL(100)\n"));
  CommandResult kaj = Ctl({"lease", "keep-alive", "--once", id, "-w", "json"});
  ASSERT_TRUE(Succeeded(kaj));
  json kj = ParseJson(kaj.stdout_text);
  ASSERT_FALSE(kj.is_discarded());
  EXPECT_EQ(JsonInt(kj, "ID"), HexToInt(id));
  EXPECT_EQ(JsonInt(kj, "TTL"), 100);

  const int64_t rev = [&] {
    CommandResult r = Ctl({"get", "x", "-w", "json"});
    return JsonInt(ParseJson(r.stdout_text)["header"], "revision");
  }();
  CommandResult revoke = Ctl({"lease", "revoke", id});
  ASSERT_TRUE(Succeeded(revoke));
  EXPECT_EQ(revoke.stdout_text, absl::StrCat("lease ", id, " revoked\n"));
  EXPECT_EQ(Ctl({"get", "ls/", "--prefix"}).stdout_text, "");
  // Revoking deletes both keys in a single revision.
  CommandResult after = Ctl({"get", "x", "-w", "json"});
  EXPECT_EQ(JsonInt(ParseJson(after.stdout_text)["header"], "revision"), rev + 1);

  EXPECT_TRUE(FailedWith(Ctl({"lease", "revoke", id}), 1,
                         "Error: failed to revoke lease (etcdserver: requested lease not found)"));
  CommandResult expired = Ctl({"lease", "timetolive", id});
  ASSERT_TRUE(Succeeded(expired));
  EXPECT_EQ(expired.stdout_text, absl::StrCat("lease ", id, " already expired\n"));
  CommandResult expired_json = Ctl({"lease", "timetolive", id, "-w", "json"});
  json ej = ParseJson(expired_json.stdout_text);
  ASSERT_FALSE(ej.is_discarded());
  EXPECT_EQ(JsonInt(ej, "ttl"), -1);
  EXPECT_EQ(JsonInt(ej, "granted-ttl"), 0);
  EXPECT_TRUE(ej["keys"].is_null());
  // keep-alive of an unknown lease exits with 2 (ExitBadConnection).
  EXPECT_TRUE(FailedWith(Ctl({"lease", "keep-alive", "--once", id}), 2,
                         "Error: etcdserver: requested lease not found"));
}

TEST_F(LeaseTest, ListAndBadInput) {
  const std::string a = Grant(300);
  const std::string b = Grant(400);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);
  CommandResult list = Ctl({"lease", "list"});
  ASSERT_TRUE(Succeeded(list));
  std::vector<std::string> lines = SplitLines(list.stdout_text);
  ASSERT_GE(lines.size(), 3u) << list.stdout_text;
  EXPECT_EQ(lines[0], absl::StrCat("found ", lines.size() - 1, " leases"));
  EXPECT_NE(std::find(lines.begin(), lines.end(), a), lines.end()) << list.stdout_text;
  EXPECT_NE(std::find(lines.begin(), lines.end(), b), lines.end()) << list.stdout_text;
  CommandResult lj = Ctl({"lease", "list", "-w", "json"});
  json j = ParseJson(lj.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << lj.stdout_text;
  std::vector<int64_t> ids;
  for (const json& l : j["leases"]) ids.push_back(JsonInt(l, "id"));
  EXPECT_NE(std::find(ids.begin(), ids.end(), HexToInt(a)), ids.end()) << lj.stdout_text;
  EXPECT_TRUE(Succeeded(Ctl({"lease", "revoke", a})));
  EXPECT_TRUE(Succeeded(Ctl({"lease", "revoke", b})));

  CommandResult gj = Ctl({"lease", "grant", "50", "-w", "json"});
  json g = ParseJson(gj.stdout_text);
  ASSERT_FALSE(g.is_discarded()) << gj.stdout_text;
  EXPECT_EQ(JsonInt(g, "TTL"), 50);
  EXPECT_GT(JsonInt(g, "ID"), 0);
  EXPECT_EQ(g["Error"], "");
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%llx", static_cast<unsigned long long>(JsonInt(g, "ID")));
  EXPECT_TRUE(Succeeded(Ctl({"lease", "revoke", hex})));

  EXPECT_TRUE(FailedWith(Ctl({"put", "lb/k", "v", "--lease=1234abcd"}), 1,
                         "Error: etcdserver: requested lease not found"));
  EXPECT_TRUE(FailedWith(Ctl({"lease", "revoke", "zz"}), 128,
                         "Error: bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid "
                         "syntax), expecting ID in Hex"));
}

TEST_F(LeaseTest, KeyDisappearsAfterTtlExpiry) {
  const std::string id = Grant(2);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(Succeeded(Ctl({"put", "le/k", "v", "--lease=" + id})));
  EXPECT_EQ(Ctl({"get", "le/k"}).stdout_text, "le/k\nv\n");
  // etcd checks expiry every 500 ms; allow generous slack for loaded machines.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Ctl({"get", "le/k"}).stdout_text.empty();
      },
      15000, 200))
      << "key still present long after the 2 s lease expired";
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Ctl({"lease", "timetolive", id}).stdout_text ==
               absl::StrCat("lease ", id, " already expired\n");
      },
      5000, 200));
}

// ---------------------------------------------------------------------------------------------
class CompactionTest : public ServerSuite<DefaultFlags> {};

TEST_F(CompactionTest, CompactThenReadOldRevisions) {
  // Fresh server: revision 1. Writes produce revisions 2..9.
  for (int i = 1; i <= 8; ++i) {
    ASSERT_TRUE(Succeeded(Ctl({"put", "cp/k", absl::StrCat("v", i)})));
  }
  ASSERT_EQ(Revision(), 9);
  CommandResult c = Ctl({"compaction", "4"});
  ASSERT_TRUE(Succeeded(c));
  EXPECT_EQ(c.stdout_text, "compacted revision 4\n");
  const std::string compacted = "Error: etcdserver: mvcc: required revision has been compacted";
  EXPECT_TRUE(FailedWith(Ctl({"get", "cp/k", "--rev", "3"}), 1, compacted));
  EXPECT_EQ(Ctl({"get", "cp/k", "--rev", "4"}).stdout_text, "cp/k\nv3\n");
  EXPECT_EQ(Ctl({"get", "cp/k", "--rev", "5"}).stdout_text, "cp/k\nv4\n");
  // Compacting at or below the compacted revision fails; so does a future revision.
  EXPECT_TRUE(FailedWith(Ctl({"compaction", "4"}), 1, compacted));
  EXPECT_TRUE(FailedWith(Ctl({"compaction", "2"}), 1, compacted));
  EXPECT_TRUE(FailedWith(Ctl({"compaction", "100"}), 1,
                         "Error: etcdserver: mvcc: required revision is a future revision"));
  CommandResult physical = Ctl({"compaction", "7", "--physical"});
  ASSERT_TRUE(Succeeded(physical));
  EXPECT_EQ(physical.stdout_text, "compacted revision 7\n");
  EXPECT_TRUE(FailedWith(Ctl({"get", "cp/k", "--rev", "6"}), 1, compacted));
  EXPECT_EQ(Ctl({"get", "cp/k", "--rev", "7"}).stdout_text, "cp/k\nv6\n");
  EXPECT_TRUE(FailedWith(Ctl({"get", "cp/k", "--rev", "10"}), 1,
                         "Error: etcdserver: mvcc: required revision is a future revision"));
  // Compaction does not change the current revision or the latest value's metadata.
  CommandResult j = Ctl({"get", "cp/k", "-w", "json"});
  json jj = ParseJson(j.stdout_text);
  ASSERT_FALSE(jj.is_discarded());
  EXPECT_EQ(JsonInt(jj["header"], "revision"), 9);
  EXPECT_EQ(JsonInt(jj["kvs"][0], "version"), 8);
  EXPECT_EQ(JsonInt(jj["kvs"][0], "create_revision"), 2);

  CommandResult hash = Ctl({"endpoint", "hashkv", "-w", "json"});
  json hj = ParseJson(hash.stdout_text);
  ASSERT_FALSE(hj.is_discarded()) << hash.stdout_text;
  EXPECT_EQ(JsonInt(hj[0]["HashKV"], "compact_revision"), 7);
  // hashkv below the compaction point fails like a read.
  EXPECT_TRUE(FailedWith(Ctl({"endpoint", "hashkv", "--rev", "5"}), 1, compacted))
      << "(hashkv at a compacted revision)";

  // Watch from a compacted revision: canceled by the server, etcdctl exits 5 (ExitInterrupted).
  BackgroundProcess watch;
  ASSERT_TRUE(StartEtcdctlWatch(server().endpoint(), {"cp/k", "--rev", "3"}, &watch).ok());
  int exit_code = 0;
  ASSERT_TRUE(watch.WaitExit(10000, &exit_code)) << "watch on compacted revision kept running";
  EXPECT_EQ(exit_code, 5);
  EXPECT_EQ(watch.Stdout(), "");
  EXPECT_EQ(watch.Stderr(),
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
            "Error: watch is canceled by the server\n");
  BackgroundProcess watch_json;
  ASSERT_TRUE(
      StartEtcdctlWatch(server().endpoint(), {"cp/k", "--rev", "3", "-w", "json"}, &watch_json)
          .ok());
  ASSERT_TRUE(watch_json.WaitExit(10000, &exit_code));
  EXPECT_EQ(exit_code, 5);
  json wj =
      ParseJson(SplitLines(watch_json.Stdout()).empty() ? "" : SplitLines(watch_json.Stdout())[0]);
  ASSERT_FALSE(wj.is_discarded()) << watch_json.Stdout();
  EXPECT_EQ(wj["Canceled"], true);
  EXPECT_EQ(JsonInt(wj, "CompactRevision"), 7);
  EXPECT_EQ(wj["Events"], json::array());
  EXPECT_FALSE(wj["Header"].contains("revision")) << "etcd sends revision 0 here";
}

// ---------------------------------------------------------------------------------------------
struct LimitFlags {
  static std::vector<std::string> Flags() {
    return {"--max-request-bytes=1024", "--max-txn-ops=4"};
  }
};
class LimitsTest : public ServerSuite<LimitFlags> {};

TEST_F(LimitsTest, RequestTooLarge) {
  EXPECT_TRUE(Succeeded(Ctl({"put", "lim/small", std::string(500, 's')})));
  EXPECT_TRUE(FailedWith(Ctl({"put", "lim/big", std::string(2000, 'b')}), 1,
                         "Error: etcdserver: request is too large"));
  EXPECT_EQ(Ctl({"get", "lim/big"}).stdout_text, "");
}

TEST_F(LimitsTest, TooManyTxnOps) {
  const std::string too_many = "Error: etcdserver: too many operations in txn request";
  // The limit applies to compares, success ops and failure ops separately.
  EXPECT_TRUE(Succeeded(Ctl({"txn"},
                            "\nput t/1 a\nput t/2 a\nput t/3 a\nput t/4 a\n\nget t/1\nget t/2\nget "
                            "t/3\nget t/4\n\n")));
  EXPECT_TRUE(FailedWith(
      Ctl({"txn"}, "\nput t/1 a\nput t/2 a\nput t/3 a\nput t/4 a\nput t/5 a\n\n\n"), 1, too_many));
  EXPECT_TRUE(
      FailedWith(Ctl({"txn"}, "\n\nget t/1\nget t/2\nget t/3\nget t/4\nget t/5\n\n"), 1, too_many));
  EXPECT_TRUE(FailedWith(Ctl({"txn"},
                             "version(\"t/1\") = \"1\"\nversion(\"t/1\") = \"1\"\nversion(\"t/1\") "
                             "= \"1\"\nversion(\"t/1\") = \"1\"\nversion(\"t/1\") = \"1\"\n\n\n\n"),
                         1, too_many));
  EXPECT_EQ(Ctl({"get", "t/5"}).stdout_text, "");
}

TEST_F(LimitsTest, EmptyKey) {
  // etcdctl passes the empty key through; the server rejects it.
  const std::string no_key = "Error: etcdserver: key is not provided";
  EXPECT_TRUE(FailedWith(Ctl({"put", "", "v"}), 1, no_key));
  EXPECT_TRUE(FailedWith(Ctl({"get", ""}), 1, no_key));
  EXPECT_TRUE(FailedWith(Ctl({"del", ""}), 1, no_key));
  // With --prefix the empty key means "everything" and is fine.
  EXPECT_TRUE(Succeeded(Ctl({"get", "", "--prefix", "--keys-only"})));
}

// ---------------------------------------------------------------------------------------------
// NOSPACE: etcd 3.4 has no minimum quota; 4 MiB makes the alarm trip after ~16 puts of 256 KiB.
struct QuotaFlags {
  static std::vector<std::string> Flags() { return {"--quota-backend-bytes=4194304"}; }
};
class NospaceTest : public ServerSuite<QuotaFlags> {};

TEST_F(NospaceTest, AlarmTripsAndRecovers) {
  const std::string value(256 * 1024, 'q');
  const std::string nospace = "Error: etcdserver: mvcc: database space exceeded";
  int written = 0;
  CommandResult last;
  constexpr int kMaxPuts = 100;  // 25 MiB of writes, far beyond the 4 MiB quota
  for (int i = 0; i < kMaxPuts; ++i) {
    // Value on stdin: a 256 KiB argv string would exceed the kernel's MAX_ARG_STRLEN.
    last = Ctl({"put", absl::StrCat("ns/", i)}, value);
    if (last.exit_code != 0) break;
    ++written;
  }
  ASSERT_TRUE(FailedWith(last, 1, nospace)) << "after " << written << " puts";
  ASSERT_GT(written, 0);

  CommandResult alarms = Ctl({"alarm", "list"});
  ASSERT_TRUE(Succeeded(alarms));
  std::regex alarm_line("^memberID:[0-9]+ alarm:NOSPACE \n$");  // note the trailing space
  EXPECT_TRUE(std::regex_match(alarms.stdout_text, alarm_line)) << alarms.stdout_text;
  CommandResult aj = Ctl({"alarm", "list", "-w", "json"});
  json j = ParseJson(aj.stdout_text);
  ASSERT_FALSE(j.is_discarded()) << aj.stdout_text;
  ASSERT_EQ(j["alarms"].size(), 1u);
  EXPECT_EQ(JsonInt(j["alarms"][0], "alarm"), 1);
  EXPECT_TRUE(j["alarms"][0]["memberID"].is_number_unsigned());
  CommandResult status = Ctl({"endpoint", "status", "-w", "json"});
  json sj = ParseJson(status.stdout_text);
  ASSERT_FALSE(sj.is_discarded());
  EXPECT_EQ(sj[0]["Status"]["errors"],
            json::array({alarms.stdout_text.substr(0, alarms.stdout_text.size() - 1)}));

  // Writes (even tiny ones and txns with puts) fail; reads and deletes work.
  EXPECT_TRUE(FailedWith(Ctl({"put", "ns/tiny", "t"}), 1, nospace));
  EXPECT_TRUE(FailedWith(Ctl({"txn"}, "\nput ns/tiny t\n\n\n"), 1, nospace));
  CommandResult read = Ctl({"get", "ns/0", "--print-value-only"});
  ASSERT_TRUE(Succeeded(read));
  EXPECT_EQ(read.stdout_text, value + "\n");
  CommandResult del = Ctl({"del", "ns/", "--prefix"});
  ASSERT_TRUE(Succeeded(del));
  if (ServerKindFromEnv() == ServerKind::kEtcd) {
    // Observed with etcd 3.4.23 (2 of about 10 runs): the put answered with NOSPACE was applied
    // all the same (its quota check at apply time raced with the alarm), so one key more than
    // acknowledged can exist. Meridian refuses that put before proposing it: exact count below.
    EXPECT_TRUE(del.stdout_text == absl::StrCat(written, "\n") ||
                del.stdout_text == absl::StrCat(written + 1, "\n"))
        << del.stdout_text << " after " << written << " acknowledged puts";
  } else {
    EXPECT_EQ(del.stdout_text, absl::StrCat(written, "\n"));
  }
  EXPECT_TRUE(FailedWith(Ctl({"put", "ns/tiny", "t"}), 1, nospace)) << "alarm is sticky";

  // Recovery: compact + defrag shrink the backend, then disarm.
  const int64_t rev = Revision();
  ASSERT_TRUE(Succeeded(Ctl({"compaction", std::to_string(rev), "--physical"})));
  ASSERT_TRUE(Succeeded(Ctl({"defrag"})));
  CommandResult disarm = Ctl({"alarm", "disarm"});
  ASSERT_TRUE(Succeeded(disarm));
  EXPECT_TRUE(std::regex_match(disarm.stdout_text, alarm_line)) << disarm.stdout_text;
  EXPECT_EQ(Ctl({"alarm", "list"}).stdout_text, "");
  CommandResult put = Ctl({"put", "ns/after", "ok"});
  EXPECT_TRUE(Succeeded(put));
  EXPECT_EQ(put.stdout_text, "OK\n");
}

// ---------------------------------------------------------------------------------------------
class RestartTest : public ServerSuite<DefaultFlags> {};

TEST_F(RestartTest, DataSurvivesStopAndKill) {
  ASSERT_TRUE(Succeeded(Ctl({"put", "rs/a", "1"})));
  ASSERT_TRUE(Succeeded(Ctl({"put", "rs/a", "2"})));
  const int64_t rev = Revision();
  ASSERT_TRUE(server().Restart().ok());
  EXPECT_EQ(Ctl({"get", "rs/a"}).stdout_text, "rs/a\n2\n");
  EXPECT_EQ(Revision(), rev);
  EXPECT_EQ(Ctl({"get", "rs/a", "--rev", std::to_string(rev - 1)}).stdout_text, "rs/a\n1\n");
  // Acknowledged writes survive SIGKILL.
  ASSERT_TRUE(Succeeded(Ctl({"put", "rs/b", "3"})));
  server().Kill();
  EXPECT_FALSE(server().Running());
  ASSERT_TRUE(server().Restart().ok());
  EXPECT_EQ(Ctl({"get", "rs/", "--prefix"}).stdout_text, "rs/a\n2\nrs/b\n3\n");
  EXPECT_EQ(Revision(), rev + 1);
}

}  // namespace
}  // namespace meridian::e2e
