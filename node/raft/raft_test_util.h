// Helpers for the raft unit and scenario tests: nodes over MemoryStorage whose Readys are
// processed synchronously, and a small network that delivers messages until quiet.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "node/raft/rawnode.h"
#include "node/raft/storage.h"

namespace meridian::raft::testing {

inline Config TestConfig(uint64_t id, uint32_t election = 10, uint32_t heartbeat = 1) {
  Config c;
  c.id = id;
  c.election_ticks = election;
  c.heartbeat_ticks = heartbeat;
  c.pre_vote = false;  // tests of the paper's basic algorithm; PreVote tests turn it on
  c.check_quorum = false;
  c.max_size_per_msg_bytes = UINT64_MAX / 4;
  c.max_inflight_msgs = 256;
  c.random_seed = id;
  return c;
}

inline Entry E(uint64_t index, uint64_t term, std::string data = "") {
  return Entry{index, term, EntryType::kNormal, std::move(data)};
}

struct TestNode {
  uint64_t id = 0;
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<RawNode> node;
  std::vector<Entry> applied;
  std::vector<ReadState> read_states;
  ConfState conf;

  const Raft& raft() const { return node->raft(); }

  // Persists, applies and advances one Ready; returns every message it carried.
  std::vector<Message> Drain() {
    std::vector<Message> out;
    while (node->HasReady()) {
      Ready rd = node->GetReady();
      if (rd.snapshot) {
        EXPECT_TRUE(storage->ApplySnapshot(*rd.snapshot).ok());
        conf = rd.snapshot->metadata.conf_state;
      }
      EXPECT_TRUE(storage->Append(rd.entries).ok());
      if (rd.hard_state) storage->SetHardState(*rd.hard_state);
      for (Message& m : rd.early_messages) out.push_back(std::move(m));
      for (Message& m : rd.messages) out.push_back(std::move(m));
      for (const Entry& e : rd.committed_entries) {
        if (e.type == EntryType::kConfChange) {
          absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
          EXPECT_TRUE(cc.ok());
          absl::StatusOr<ConfState> cs = node->ApplyConfChange(*cc);
          if (cs.ok()) conf = *cs;
        }
        applied.push_back(e);
      }
      for (ReadState& rs : rd.read_states) read_states.push_back(std::move(rs));
      node->Advance(rd);
    }
    return out;
  }
};

// A node whose storage holds `log` and `hs`, with membership `voters` (+ `learners`).
inline std::unique_ptr<TestNode> NewNode(uint64_t id, const std::vector<uint64_t>& voters,
                                         const std::vector<Entry>& log = {},
                                         const HardState& hs = {},
                                         std::function<void(Config&)> tweak = nullptr,
                                         const std::vector<uint64_t>& learners = {}) {
  auto n = std::make_unique<TestNode>();
  n->id = id;
  n->storage = std::make_unique<MemoryStorage>();
  n->conf = ConfState{voters, learners};
  n->storage->SetInitialConfState(n->conf);
  EXPECT_TRUE(n->storage->Append(log).ok());
  n->storage->SetHardState(hs);
  Config c = TestConfig(id);
  if (tweak) tweak(c);
  absl::StatusOr<std::unique_ptr<RawNode>> node = RawNode::Create(c, n->storage.get());
  EXPECT_TRUE(node.ok()) << node.status();
  n->node = std::move(*node);
  return n;
}

// A brand-new cluster member: the initial membership is written to its log (RawNode::Bootstrap)
// so that nodes added later learn it by replaying the log.
inline std::unique_ptr<TestNode> NewBootstrappedNode(uint64_t id,
                                                     const std::vector<uint64_t>& voters,
                                                     std::function<void(Config&)> tweak = nullptr) {
  auto n = NewNode(id, {}, {}, {}, std::move(tweak));
  EXPECT_TRUE(n->node->Bootstrap(voters).ok());
  n->Drain();
  return n;
}

inline std::vector<uint64_t> Ids(size_t n) {
  std::vector<uint64_t> ids;
  for (uint64_t i = 1; i <= n; ++i) ids.push_back(i);
  return ids;
}

// Delivers messages between TestNodes until none are left. Links can be cut and message types
// dropped.
class Network {
 public:
  Network() = default;
  explicit Network(size_t n, std::function<void(Config&)> tweak = nullptr) {
    for (uint64_t id : Ids(n)) Add(NewNode(id, Ids(n), {}, {}, tweak));
  }
  void Add(std::unique_ptr<TestNode> n) { nodes_[n->id] = std::move(n); }
  TestNode& operator[](uint64_t id) { return *nodes_.at(id); }
  bool Has(uint64_t id) const { return nodes_.count(id) > 0; }

  // Crash and restart: a new RawNode over the same (durable) storage.
  void Restart(uint64_t id, std::function<void(Config&)> tweak = nullptr) {
    TestNode& n = *nodes_.at(id);
    Config c = TestConfig(id);
    if (tweak) tweak(c);
    c.applied = n.storage->snapshot().metadata.index;
    absl::StatusOr<std::unique_ptr<RawNode>> node = RawNode::Create(c, n.storage.get());
    ASSERT_TRUE(node.ok()) << node.status();
    n.node = std::move(*node);
  }

  void Cut(uint64_t a, uint64_t b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }
  void Isolate(uint64_t id) {
    for (auto& [other, n] : nodes_) {
      if (other != id) Cut(id, other);
    }
  }
  void Ignore(MessageType t) { ignored_.insert(t); }
  void Recover() {
    cut_.clear();
    ignored_.clear();
  }

  // Drains every node and delivers the messages, transitively.
  void Stabilize() {
    std::vector<Message> q;
    for (auto& [id, n] : nodes_) {
      for (Message& m : n->Drain()) q.push_back(std::move(m));
    }
    Send(std::move(q));
  }

  void Send(std::vector<Message> msgs) {
    size_t i = 0;
    while (i < msgs.size()) {
      Message m = msgs[i++];
      if (!Deliverable(m)) continue;
      delivered.push_back(m);
      (void)nodes_.at(m.to)->node->Step(m);
      for (Message& out : nodes_.at(m.to)->Drain()) msgs.push_back(std::move(out));
      ASSERT_LT(msgs.size(), 1000000u) << "message storm";
    }
  }

  void Campaign(uint64_t id) {
    ASSERT_TRUE((*this)[id].node->Campaign().ok());
    Send((*this)[id].Drain());
  }
  void Propose(uint64_t id, std::string data) {
    EXPECT_TRUE((*this)[id].node->Propose(std::move(data)).ok());
    Send((*this)[id].Drain());
  }
  void TickAll(int n = 1) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, node] : nodes_) node->node->Tick();
      Stabilize();
    }
  }
  void Tick(uint64_t id, int n = 1) {
    for (int i = 0; i < n; ++i) {
      (*this)[id].node->Tick();
      Send((*this)[id].Drain());
    }
  }

  std::vector<Message> delivered;

 private:
  bool Deliverable(const Message& m) const {
    if (nodes_.count(m.to) == 0) return false;
    if (cut_.count({m.from, m.to}) > 0) return false;
    return ignored_.count(m.type) == 0;
  }
  std::map<uint64_t, std::unique_ptr<TestNode>> nodes_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  std::set<MessageType> ignored_;
};

// Messages of one type among `msgs`.
inline std::vector<Message> OfType(const std::vector<Message>& msgs, MessageType t) {
  std::vector<Message> out;
  for (const Message& m : msgs) {
    if (m.type == t) out.push_back(m);
  }
  return out;
}

}  // namespace meridian::raft::testing
