// Golden-trace scenario tests. Each file in testdata/ is a transcript: lines starting with "> "
// are commands, the indented lines after them are the output they produced, "#" lines are
// comments. The test replays the commands and compares the whole transcript. After an
// intentional behavior change, regenerate with
//   MERIDIAN_RAFT_REWRITE=1 ./raft_test --gtest_filter='Interaction*'
// and review the diff.
//
// Commands:
//   add-nodes N [prevote] [checkquorum]   nodes 1..N, all voters, empty logs
//   campaign ID | propose ID DATA | read-index ID CONTEXT | transfer-leader ID TARGET
//   add-learner ID NODE | add-voter ID NODE | remove ID NODE     (conf change proposed at ID)
//   tick ID [N] | tick-all [N]            tick without processing anything
//   stabilize                             process Readies and deliver messages until quiet
//   isolate ID | recover                  cut ID from everyone / heal everything
//   compact ID                            snapshot ID's storage at its applied index and compact
//   status ID | log ID
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "node/raft/raft_test_util.h"

namespace meridian::raft {
namespace {

using testing::NewNode;
using testing::TestNode;

class Harness {
 public:
  std::string Run(const std::string& line) {
    out_.clear();
    std::vector<std::string> args = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (args.empty()) return "";
    const std::string& cmd = args[0];
    auto id = [&](size_t i) -> uint64_t { return std::stoull(args.at(i)); };
    if (cmd == "add-nodes") {
      const size_t n = id(1);
      bool pre_vote = false;
      bool check_quorum = false;
      for (size_t i = 2; i < args.size(); ++i) {
        pre_vote |= args[i] == "prevote";
        check_quorum |= args[i] == "checkquorum";
      }
      for (uint64_t i = 1; i <= n; ++i) {
        nodes_[i] = testing::NewBootstrappedNode(i, testing::Ids(n), [&](Config& c) {
          c.pre_vote = pre_vote;
          c.check_quorum = check_quorum;
        });
      }
    } else if (cmd == "add-empty-node") {
      nodes_[id(1)] = NewNode(id(1), {});
    } else if (cmd == "campaign") {
      Status(N(id(1)).node->Campaign());
    } else if (cmd == "propose") {
      Status(N(id(1)).node->Propose(args.at(2)));
    } else if (cmd == "read-index") {
      Status(N(id(1)).node->ReadIndex(args.at(2)));
    } else if (cmd == "transfer-leader") {
      Status(N(id(1)).node->TransferLeader(id(2)));
    } else if (cmd == "add-learner" || cmd == "add-voter" || cmd == "remove") {
      ConfChange cc;
      cc.type = cmd == "add-learner" ? ConfChange::Type::kAddLearnerNode
                : cmd == "add-voter" ? ConfChange::Type::kAddNode
                                     : ConfChange::Type::kRemoveNode;
      cc.node_id = id(2);
      Status(N(id(1)).node->ProposeConfChange(cc));
    } else if (cmd == "tick") {
      int n = args.size() > 2 ? std::stoi(args[2]) : 1;
      for (int i = 0; i < n; ++i) N(id(1)).node->Tick();
    } else if (cmd == "tick-all") {
      int n = args.size() > 1 ? std::stoi(args[1]) : 1;
      for (int i = 0; i < n; ++i) {
        for (auto& [nid, node] : nodes_) node->node->Tick();
      }
    } else if (cmd == "stabilize") {
      Stabilize();
    } else if (cmd == "isolate") {
      isolated_.insert(id(1));
    } else if (cmd == "recover") {
      isolated_.clear();
    } else if (cmd == "compact") {
      TestNode& n = N(id(1));
      const uint64_t applied = n.raft().log().applied();
      Status(n.storage->CreateSnapshot(applied, n.conf, absl::StrCat("snap@", applied)));
      Status(n.storage->Compact(applied));
    } else if (cmd == "status") {
      Print(N(id(1)).raft().DebugString());
    } else if (cmd == "log") {
      const RaftLog& log = N(id(1)).raft().log();
      for (const Entry& e : log.AllEntries(log.FirstIndex(), log.LastIndex() + 1)) {
        Print(DescribeEntry(e));
      }
      Print(absl::StrCat("committed=", log.committed(), " applied=", log.applied()));
    } else {
      Print("unknown command " + cmd);
    }
    return out_;
  }

 private:
  TestNode& N(uint64_t id) { return *nodes_.at(id); }
  void Print(const std::string& s) {
    for (absl::string_view line : absl::StrSplit(s, '\n')) absl::StrAppend(&out_, "  ", line, "\n");
  }
  void Status(const absl::Status& s) {
    if (!s.ok()) Print(absl::StrCat("error: ", s.ToString()));
  }
  bool Cut(const Message& m) const {
    return isolated_.count(m.from) > 0 || isolated_.count(m.to) > 0 || nodes_.count(m.to) == 0;
  }

  // Prints each Ready as it is handled, then each message as it is delivered (or dropped).
  void Stabilize() {
    for (int round = 0; round < 100; ++round) {
      bool any = false;
      for (auto& [id, n] : nodes_) {
        if (!n->node->HasReady()) continue;
        any = true;
        Ready rd = n->node->GetReady();
        Print(absl::StrCat(id, " handling Ready"));
        if (rd.soft_state) {
          Print(absl::StrCat("  Lead:", rd.soft_state->leader, " ", RoleName(rd.soft_state->role)));
        }
        if (rd.hard_state) Print("  HardState " + DescribeHardState(*rd.hard_state));
        if (rd.snapshot) {
          Print(absl::StrCat("  Snapshot ", rd.snapshot->metadata.term, "/",
                             rd.snapshot->metadata.index, " ",
                             DescribeConfState(rd.snapshot->metadata.conf_state)));
        }
        for (const Entry& e : rd.entries) Print("  Entry " + DescribeEntry(e));
        for (const Entry& e : rd.committed_entries) Print("  Apply " + DescribeEntry(e));
        for (const Message& m : rd.early_messages) Print("  Send (early) " + DescribeMessage(m));
        for (const Message& m : rd.messages) Print("  Send " + DescribeMessage(m));
        for (const ReadState& rs : rd.read_states) {
          Print(absl::StrCat("  ReadState index=", rs.index, " context=", rs.context));
        }
        // Persist and apply as TestNode::Drain does.
        if (rd.snapshot) {
          EXPECT_TRUE(n->storage->ApplySnapshot(*rd.snapshot).ok());
          n->conf = rd.snapshot->metadata.conf_state;
        }
        EXPECT_TRUE(n->storage->Append(rd.entries).ok());
        if (rd.hard_state) n->storage->SetHardState(*rd.hard_state);
        for (const Entry& e : rd.committed_entries) {
          if (e.type != EntryType::kConfChange) continue;
          absl::StatusOr<ConfState> cs = n->node->ApplyConfChange(*DecodeConfChange(e.data));
          if (cs.ok()) n->conf = *cs;
        }
        for (Message& m : rd.early_messages) queue_.push_back(std::move(m));
        for (Message& m : rd.messages) queue_.push_back(std::move(m));
        n->node->Advance(rd);
      }
      std::vector<Message> msgs = std::exchange(queue_, {});
      for (const Message& m : msgs) {
        any = true;
        if (Cut(m)) {
          Print("dropped " + DescribeMessage(m));
          continue;
        }
        absl::Status s = N(m.to).node->Step(m);
        if (!s.ok()) Print(absl::StrCat("  step error: ", s.ToString()));
      }
      if (!any) return;
    }
    Print("not stable after 100 rounds");
  }

  std::map<uint64_t, std::unique_ptr<TestNode>> nodes_;
  std::set<uint64_t> isolated_;
  std::vector<Message> queue_;
  std::string out_;
};

std::string RunScript(const std::string& script) {
  Harness h;
  std::string out;
  std::istringstream in(script);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("> ", 0) == 0) {
      absl::StrAppend(&out, line, "\n", h.Run(line.substr(2)));
    } else if (line.empty() || line[0] == '#') {
      absl::StrAppend(&out, line, "\n");
    }
    // Indented lines are the previous run's output: regenerated above.
  }
  return out;
}

class InteractionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InteractionTest, MatchesGolden) {
  const std::string path = std::string(MERIDIAN_RAFT_TESTDATA_DIR) + "/" + GetParam();
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "cannot read " << path;
  std::stringstream buf;
  buf << f.rdbuf();
  const std::string want = buf.str();
  const std::string got = RunScript(want);
  const char* rewrite = std::getenv("MERIDIAN_RAFT_REWRITE");
  if (rewrite != nullptr && std::string(rewrite) == "1") {
    std::ofstream(path) << got;
    return;
  }
  EXPECT_EQ(got, want) << "transcript of " << path
                       << " changed; rerun with MERIDIAN_RAFT_REWRITE=1 and review the diff";
}

INSTANTIATE_TEST_SUITE_P(Golden, InteractionTest,
                         ::testing::Values("election.txt", "replication.txt", "read_index.txt",
                                           "prevote_checkquorum.txt", "leader_transfer.txt",
                                           "snapshot.txt", "membership.txt"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(0, info.param.find('.'));
                           return name;
                         });

}  // namespace
}  // namespace meridian::raft
