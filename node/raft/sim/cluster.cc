#include "node/raft/sim/cluster.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "node/raft/confchange.h"
#include "node/raft/rawnode.h"
#include "node/raft/sim/checker.h"
#include "node/raft/sim/network.h"
#include "node/raft/sim/rng.h"
#include "node/raft/storage.h"

namespace meridian::raft::sim {

namespace {

// A RAFT_CHECK failure aborts the process; say which seed and step it was so it can be
// replayed with MERIDIAN_RAFT_SEED.
uint64_t g_current_seed = 0;
uint64_t g_current_step = 0;
void OnAbort(int) {
  std::fprintf(stderr,
               "\nraft simulation aborted at seed %llu step %llu; replay with "
               "MERIDIAN_RAFT_SEED=%llu (MERIDIAN_RAFT_TRACE=1 prints every event)\n",
               static_cast<unsigned long long>(g_current_seed),
               static_cast<unsigned long long>(g_current_step),
               static_cast<unsigned long long>(g_current_seed));
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

// Everything a seed randomizes about a run.
struct Params {
  size_t voters = 3;
  size_t max_nodes = 6;  // ids 1..max_nodes; ids above `voters` are for membership changes
  uint32_t election_ticks = 10;
  uint32_t heartbeat_ticks = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  size_t max_inflight = 4;
  uint64_t max_msg_bytes = 256;
  uint64_t max_uncommitted_bytes = 4096;
  NetworkFaults faults;
  // Per-mille chance per step of each event; the rest of the steps deliver or tick.
  uint32_t p_propose = 60;
  uint32_t p_read = 15;
  uint32_t p_crash = 3;
  uint32_t p_restart = 10;
  uint32_t p_partition = 4;
  uint32_t p_heal = 8;
  uint32_t p_conf = 6;
  uint32_t p_transfer = 3;
  uint32_t p_compact = 10;
  uint32_t p_faults_change = 3;
  uint32_t p_tick_when_busy = 80;  // tick even though messages are due
};

Params ParamsForSeed(Rng& rng) {
  Params p;
  p.voters = rng.Chance(500) ? 3 : 5;
  p.max_nodes = p.voters + 3;
  p.election_ticks = 8 + static_cast<uint32_t>(rng.Uniform(8));
  p.heartbeat_ticks = 1 + static_cast<uint32_t>(rng.Uniform(2));
  p.pre_vote = !rng.Chance(200);
  p.check_quorum = !rng.Chance(200);
  p.max_inflight = 1 + rng.Uniform(8);
  p.max_msg_bytes = rng.Chance(300) ? 1 : 64 + rng.Uniform(512);
  p.max_uncommitted_bytes = 512 + rng.Uniform(8192);
  p.faults.drop_per_mille = static_cast<uint32_t>(rng.Uniform(100));
  p.faults.duplicate_per_mille = static_cast<uint32_t>(rng.Uniform(60));
  p.faults.max_delay_ticks = static_cast<uint32_t>(rng.Uniform(3));
  p.p_crash = static_cast<uint32_t>(rng.Uniform(6));
  p.p_partition = static_cast<uint32_t>(rng.Uniform(8));
  p.p_conf = static_cast<uint32_t>(rng.Uniform(12));
  p.p_transfer = static_cast<uint32_t>(rng.Uniform(6));
  return p;
}

std::string EncodeState(uint64_t applied, uint64_t hash) {
  return absl::StrCat(applied, ":", hash);
}

uint64_t DecodeStateHash(const std::string& data) {
  size_t colon = data.find(':');
  if (colon == std::string::npos) return 0;
  return std::stoull(data.substr(colon + 1));
}

bool Contains(const std::vector<uint64_t>& v, uint64_t id) {
  return std::find(v.begin(), v.end(), id) != v.end();
}

struct SimNode {
  uint64_t id = 0;
  bool started = false;
  bool retired = false;           // removed from the cluster; stopped for good
  MemoryStorage storage;          // what survives a crash
  std::unique_ptr<RawNode> node;  // null while down
  bool crash_in_next_ready = false;
  std::optional<Ready> in_progress;  // being persisted; lost if the node crashes
  bool early_sent = false;
  std::optional<uint64_t> prev_term;  // log term before in_progress->entries
  // The application's state machine: a hash chain over applied entries.
  uint64_t applied = 0;
  uint64_t state_hash = 0;
  ConfState conf;
  bool applied_marker = false;
  // Checker bookkeeping for the current incarnation.
  uint64_t last_commit_seen = 0;
  uint64_t recorded_commit = 0;
  uint64_t last_term_seen = 0;

  bool up() const { return node != nullptr; }
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options)
      : options_(options), rng_(options.seed * 0x2545F4914F6CDD1Dull + 1), network_(&rng_) {}

  SimResult Run();

 private:
  Config MakeConfig(uint64_t id);
  void Trace(const std::string& line);
  bool Failed() const { return checker_.failed(); }
  SimNode& Node(uint64_t id) { return *nodes_[id - 1]; }

  void StartNode(SimNode& n);
  void CrashNode(SimNode& n);
  void Retire(uint64_t id);
  SimNode* Leader();  // the up leader with the highest term, if any
  SimNode* RandomUpNode();

  void RandomEvent();
  void Deliver();
  void TickAll();
  void Propose();
  void Read();
  void Crash();
  void Restart();
  void Partition();
  void ChangeMembership();
  void Transfer();
  void Compact();
  void ChangeFaults();

  void ProcessAllReadies(bool finish_all = false);
  void BeginReady(SimNode& n);
  void FinishReady(SimNode& n);
  void SendAll(uint64_t from, std::vector<Message>& msgs);
  void Check();
  void Liveness();
  std::string ClusterState();

  SimOptions options_;
  Rng rng_;
  Params params_;
  Network network_;
  Checker checker_;
  std::vector<std::unique_ptr<SimNode>> nodes_;
  std::vector<uint64_t> to_retire_;
  uint64_t now_tick_ = 0;
  uint64_t step_ = 0;
  uint64_t proposals_ = 0;
  uint64_t reads_ = 0;
  std::string liveness_marker_;
  std::deque<std::string> trace_;
  SimStats stats_;
};

Config Simulation::MakeConfig(uint64_t id) {
  Config c;
  c.id = id;
  c.election_ticks = params_.election_ticks;
  c.heartbeat_ticks = params_.heartbeat_ticks;
  c.pre_vote = params_.pre_vote;
  c.check_quorum = params_.check_quorum;
  c.max_inflight_msgs = params_.max_inflight;
  c.max_size_per_msg_bytes = params_.max_msg_bytes;
  c.max_uncommitted_entries_size_bytes = params_.max_uncommitted_bytes;
  c.max_committed_size_per_ready_bytes = 1024;
  c.max_pending_read_requests = 64;
  c.random_seed = rng_.Next();
  return c;
}

void Simulation::Trace(const std::string& line) {
  if (options_.verbose)
    std::fprintf(stderr, "[%llu t%llu] %s\n", static_cast<unsigned long long>(step_),
                 static_cast<unsigned long long>(now_tick_), line.c_str());
  if (options_.trace_lines == 0) return;
  trace_.push_back(absl::StrCat("[", step_, " t", now_tick_, "] ", line));
  if (trace_.size() > options_.trace_lines) trace_.pop_front();
}

void Simulation::StartNode(SimNode& n) {
  Config cfg = MakeConfig(n.id);
  const Snapshot& snap = n.storage.snapshot();
  cfg.applied = snap.metadata.index;
  absl::StatusOr<std::unique_ptr<RawNode>> node = RawNode::Create(cfg, &n.storage);
  if (!node.ok()) {
    checker_.Fail(absl::StrCat("node ", n.id, " failed to start: ", node.status().ToString()));
    return;
  }
  n.node = std::move(*node);
  n.started = true;
  // The state machine restarts from the snapshot; raft replays the committed entries after it.
  n.applied = snap.metadata.index;
  n.state_hash = snap.empty() ? 0 : DecodeStateHash(snap.data);
  n.conf = snap.metadata.conf_state;
  n.crash_in_next_ready = false;
  n.last_commit_seen = n.node->raft().log().committed();
  n.recorded_commit = 0;
  n.last_term_seen = n.node->raft().term();
  if (n.last_commit_seen < n.storage.hard_state().commit) {
    checker_.Fail(absl::StrCat("node ", n.id, " restarted with commit ", n.last_commit_seen,
                               " below its durable commit ", n.storage.hard_state().commit));
  }
}

void Simulation::CrashNode(SimNode& n) {
  if (!n.up()) return;
  n.node.reset();
  n.in_progress.reset();
  n.crash_in_next_ready = false;
  ++stats_.crashes;
}

void Simulation::Retire(uint64_t id) {
  if (id == 0 || id > nodes_.size()) return;
  to_retire_.push_back(id);
}

SimNode* Simulation::Leader() {
  SimNode* best = nullptr;
  for (auto& n : nodes_) {
    if (!n->up() || n->node->raft().role() != Role::kLeader) continue;
    if (best == nullptr || n->node->raft().term() > best->node->raft().term()) best = n.get();
  }
  return best;
}

SimNode* Simulation::RandomUpNode() {
  std::vector<SimNode*> up;
  for (auto& n : nodes_) {
    if (n->up()) up.push_back(n.get());
  }
  if (up.empty()) return nullptr;
  return up[rng_.Uniform(up.size())];
}

void Simulation::RandomEvent() {
  uint32_t r = static_cast<uint32_t>(rng_.Uniform(1000));
  const Params& p = params_;
  const uint32_t thresholds[] = {p.p_propose,   p.p_read,         p.p_crash, p.p_restart,
                                 p.p_partition, p.p_heal,         p.p_conf,  p.p_transfer,
                                 p.p_compact,   p.p_faults_change};
  size_t kind = 0;
  for (; kind < std::size(thresholds); ++kind) {
    if (r < thresholds[kind]) break;
    r -= thresholds[kind];
  }
  switch (kind) {
    case 0:
      return Propose();
    case 1:
      return Read();
    case 2:
      return Crash();
    case 3:
      return Restart();
    case 4:
      return Partition();
    case 5:
      if (network_.partitioned()) Trace("heal");
      return network_.Heal();
    case 6:
      return ChangeMembership();
    case 7:
      return Transfer();
    case 8:
      return Compact();
    case 9:
      return ChangeFaults();
    default:
      if (network_.HasDue(now_tick_) && !rng_.Chance(p.p_tick_when_busy)) return Deliver();
      return TickAll();
  }
}

void Simulation::Deliver() {
  std::optional<Message> m = network_.PopDue(now_tick_);
  if (!m) return;
  const bool snap = m->type == MessageType::kSnap;
  SimNode* to = (m->to >= 1 && m->to <= nodes_.size()) ? &Node(m->to) : nullptr;
  SimNode* from = (m->from >= 1 && m->from <= nodes_.size()) ? &Node(m->from) : nullptr;
  const bool deliverable = to != nullptr && to->up() && network_.Connected(m->from, m->to);
  if (options_.verbose || options_.trace_lines > 0) {
    Trace(absl::StrCat(deliverable ? "deliver " : "drop ", DescribeMessage(*m)));
  }
  if (!deliverable) {
    // The transport notices failed snapshot streams and broken connections.
    if (from != nullptr && from->up()) {
      if (snap) {
        from->node->ReportSnapshot(m->to, false);
      } else if (rng_.Chance(300)) {
        from->node->ReportUnreachable(m->to);
      }
    }
    return;
  }
  ++stats_.messages_delivered;
  absl::Status s = to->node->Step(*m);
  if (absl::IsInvalidArgument(s)) {
    checker_.Fail(absl::StrCat("node ", m->to, " refused a message as malformed: ", s.ToString(),
                               ": ", DescribeMessage(*m)));
  }
  if (snap && from != nullptr && from->up()) from->node->ReportSnapshot(m->to, true);
}

void Simulation::TickAll() {
  ++now_tick_;
  ++stats_.ticks;
  for (auto& n : nodes_) {
    if (n->up()) n->node->Tick();
  }
}

void Simulation::Propose() {
  SimNode* n = RandomUpNode();
  if (n == nullptr) return;
  std::string data = absl::StrCat("s", options_.seed, "p", ++proposals_);
  absl::Status s = n->node->Propose(data);
  Trace(absl::StrCat("propose ", data, " at ", n->id, ": ", s.ok() ? "ok" : s.ToString()));
}

void Simulation::Read() {
  SimNode* n = RandomUpNode();
  if (n == nullptr) return;
  std::string ctx = absl::StrCat("r", ++reads_);
  absl::Status s = n->node->ReadIndex(ctx);
  if (s.ok()) checker_.OnReadIssued(ctx);
  Trace(absl::StrCat("read ", ctx, " at ", n->id, ": ", s.ok() ? "ok" : s.ToString()));
}

void Simulation::Crash() {
  SimNode* n = RandomUpNode();
  if (n == nullptr) return;
  if (rng_.Chance(500)) {
    // Dies while handling its next Ready: after sending the early messages, before persisting.
    n->crash_in_next_ready = true;
    Trace(absl::StrCat("crash ", n->id, " during its next ready"));
  } else {
    Trace(absl::StrCat("crash ", n->id));
    CrashNode(*n);
  }
}

void Simulation::Restart() {
  std::vector<SimNode*> down;
  for (auto& n : nodes_) {
    if (n->started && !n->retired && !n->up()) down.push_back(n.get());
  }
  if (down.empty()) return;
  SimNode* n = down[rng_.Uniform(down.size())];
  Trace(absl::StrCat("restart ", n->id));
  StartNode(*n);
}

void Simulation::Partition() {
  network_.Heal();
  std::vector<uint64_t> side_a;
  std::vector<uint64_t> side_b;
  if (rng_.Chance(500)) {
    uint64_t isolated = 1 + rng_.Uniform(nodes_.size());
    for (auto& n : nodes_) (n->id == isolated ? side_a : side_b).push_back(n->id);
  } else {
    for (auto& n : nodes_) (rng_.Chance(500) ? side_a : side_b).push_back(n->id);
  }
  for (uint64_t a : side_a) {
    for (uint64_t b : side_b) network_.Cut(a, b);
  }
  std::string desc = "partition {";
  for (uint64_t a : side_a) absl::StrAppend(&desc, " ", a);
  absl::StrAppend(&desc, " } / {");
  for (uint64_t b : side_b) absl::StrAppend(&desc, " ", b);
  Trace(desc + " }");
}

void Simulation::ChangeMembership() {
  SimNode* leader = Leader();
  if (leader == nullptr) return;
  const ConfState cs = leader->node->conf_state();
  ConfChange cc;
  uint32_t r = static_cast<uint32_t>(rng_.Uniform(3));
  if (r == 0 && !cs.learners.empty()) {
    cc.type = ConfChange::Type::kAddNode;  // promote
    cc.node_id = cs.learners[rng_.Uniform(cs.learners.size())];
  } else if (r <= 1) {
    // A brand-new node (ids are never reused), started empty as a learner.
    uint64_t id = 0;
    for (auto& n : nodes_) {
      if (!n->started) {
        id = n->id;
        break;
      }
    }
    if (id == 0) return;
    StartNode(Node(id));
    cc.type = ConfChange::Type::kAddLearnerNode;
    cc.node_id = id;
  } else {
    std::vector<uint64_t> removable = cs.learners;
    // Keep at least three voters so that one crash never blocks the cluster for good.
    if (cs.voters.size() > 3) removable.insert(removable.end(), cs.voters.begin(), cs.voters.end());
    if (removable.empty()) return;
    cc.type = ConfChange::Type::kRemoveNode;
    cc.node_id = removable[rng_.Uniform(removable.size())];
  }
  absl::Status s = leader->node->ProposeConfChange(cc);
  Trace(absl::StrCat("propose conf change ", DescribeConfChange(cc), " at ", leader->id, ": ",
                     s.ok() ? "ok" : s.ToString()));
}

void Simulation::Transfer() {
  SimNode* leader = Leader();
  if (leader == nullptr) return;
  const ConfState cs = leader->node->conf_state();
  std::vector<uint64_t> targets;
  for (uint64_t v : cs.voters) {
    if (v != leader->id) targets.push_back(v);
  }
  if (targets.empty()) return;
  uint64_t target = targets[rng_.Uniform(targets.size())];
  absl::Status s = leader->node->TransferLeader(target);
  ++stats_.transfers;
  Trace(absl::StrCat("transfer leader ", leader->id, " -> ", target, ": ",
                     s.ok() ? "ok" : s.ToString()));
}

void Simulation::Compact() {
  SimNode* n = RandomUpNode();
  if (n == nullptr) return;
  if (n->applied <= n->storage.snapshot().metadata.index) return;
  absl::Status s =
      n->storage.CreateSnapshot(n->applied, n->conf, EncodeState(n->applied, n->state_hash));
  if (!s.ok()) {
    checker_.Fail(absl::StrCat("node ", n->id, " snapshot at ", n->applied, ": ", s.ToString()));
    return;
  }
  uint64_t keep = rng_.Uniform(8);
  uint64_t compact = n->applied > keep ? n->applied - keep : 0;
  if (compact >= n->storage.FirstIndex()) {
    s = n->storage.Compact(compact);
    if (!s.ok()) {
      checker_.Fail(absl::StrCat("node ", n->id, " compact to ", compact, ": ", s.ToString()));
      return;
    }
  }
  Trace(absl::StrCat("snapshot ", n->id, " at ", n->applied, ", compact to ", compact));
}

void Simulation::ChangeFaults() {
  NetworkFaults f;
  if (!rng_.Chance(300)) {
    f.drop_per_mille = static_cast<uint32_t>(rng_.Uniform(150));
    f.duplicate_per_mille = static_cast<uint32_t>(rng_.Uniform(80));
    f.max_delay_ticks = static_cast<uint32_t>(rng_.Uniform(4));
  }
  network_.set_faults(f);
  Trace(absl::StrCat("faults drop=", f.drop_per_mille, " dup=", f.duplicate_per_mille,
                     " delay=", f.max_delay_ticks));
}

void Simulation::SendAll(uint64_t from, std::vector<Message>& msgs) {
  for (Message& m : msgs) {
    if (m.type == MessageType::kSnap) ++stats_.snapshots_sent;
    if (network_.Send(m, now_tick_) == 0 && m.type == MessageType::kSnap) {
      // Lost on the way: the snapshot stream reports the failure.
      SimNode& n = Node(from);
      if (n.up()) n.node->ReportSnapshot(m.to, false);
    }
  }
}

void Simulation::BeginReady(SimNode& n) {
  n.in_progress = n.node->GetReady();
  Ready& rd = *n.in_progress;
  if (rd.soft_state) {
    Trace(absl::StrCat("node ", n.id, " ", RoleName(rd.soft_state->role), " term ",
                       n.node->raft().term(), " leader ", rd.soft_state->leader));
  }
  n.prev_term.reset();
  if (!rd.entries.empty()) {
    absl::StatusOr<uint64_t> prev = n.node->raft().log().Term(rd.entries.front().index - 1);
    if (prev.ok()) n.prev_term = *prev;
  }
  n.early_sent = rng_.Chance(500);
  if (n.early_sent) SendAll(n.id, rd.early_messages);
  if (n.crash_in_next_ready) {
    Trace(absl::StrCat("node ", n.id, " crashed before persisting its ready (", rd.entries.size(),
                       " entries)"));
    CrashNode(n);
  }
}

void Simulation::FinishReady(SimNode& n) {
  // Persisting happens "in the background": other nodes' messages may have been stepped into
  // this node since GetReady.
  Ready rd = std::move(*n.in_progress);
  n.in_progress.reset();
  const bool early_first = n.early_sent;

  // Persist: snapshot, entries, hard state. Then mirror into storage (done in one go here).
  const HardState before = n.storage.hard_state();
  if (rd.snapshot) {
    absl::Status s = n.storage.ApplySnapshot(*rd.snapshot);
    if (!s.ok()) {
      checker_.Fail(absl::StrCat("node ", n.id, " cannot persist snapshot at ",
                                 rd.snapshot->metadata.index, ": ", s.ToString()));
      return;
    }
  }
  if (!rd.entries.empty()) {
    checker_.OnPersistEntries(n.id, rd.entries, n.prev_term);
    absl::Status s = n.storage.Append(rd.entries);
    if (!s.ok()) {
      checker_.Fail(absl::StrCat("node ", n.id, " append failed: ", s.ToString()));
      return;
    }
  }
  if (rd.hard_state) {
    checker_.OnPersistHardState(n.id, before, *rd.hard_state);
    n.storage.SetHardState(*rd.hard_state);
  }
  if (!early_first) SendAll(n.id, rd.early_messages);
  SendAll(n.id, rd.messages);

  // Apply.
  if (rd.snapshot) {
    const SnapshotMetadata& md = rd.snapshot->metadata;
    n.applied = md.index;
    n.state_hash = DecodeStateHash(rd.snapshot->data);
    n.conf = md.conf_state;
    checker_.OnApplySnapshot(n.id, md, n.state_hash);
    Trace(absl::StrCat("node ", n.id, " applied snapshot ", md.term, "/", md.index));
  }
  const uint64_t commit = n.node->raft().log().committed();
  for (const Entry& e : rd.committed_entries) {
    if (e.type == EntryType::kConfChange) {
      absl::StatusOr<ConfChange> cc = DecodeConfChange(e.data);
      if (!cc.ok()) {
        checker_.Fail(absl::StrCat("node ", n.id, " cannot decode conf change at ", e.index));
        return;
      }
      absl::StatusOr<ConfState> cs = n.node->ApplyConfChange(*cc);
      if (cs.ok()) {
        n.conf = *cs;
        ++stats_.conf_changes_applied;
        if (cc->type == ConfChange::Type::kRemoveNode && !Contains(cs->voters, cc->node_id) &&
            !Contains(cs->learners, cc->node_id)) {
          Retire(cc->node_id);
        }
      }
      Trace(absl::StrCat("node ", n.id, " applied conf change ", DescribeConfChange(*cc), " at ",
                         e.index, ": ", cs.ok() ? DescribeConfState(*cs) : cs.status().ToString()));
    }
    if (!liveness_marker_.empty() && e.data == liveness_marker_) n.applied_marker = true;
    const uint64_t hash = MixHash(n.state_hash, e.index, e.term, HashBytes(e.data));
    checker_.OnApplyEntry(n.id, n.applied, e, commit, hash);
    n.applied = e.index;
    n.state_hash = hash;
    if (e.type == EntryType::kConfChange) {
      // The application policy raft's README asks for: a snapshot taken after each membership
      // change, so the snapshot a new member may need includes it.
      absl::Status s =
          n.storage.CreateSnapshot(n.applied, n.conf, EncodeState(n.applied, n.state_hash));
      if (!s.ok()) checker_.Fail(absl::StrCat("node ", n.id, " snapshot: ", s.ToString()));
    }
  }
  for (const ReadState& rs : rd.read_states) {
    checker_.OnReadState(n.id, rs);
    ++stats_.reads_served;
  }
  n.node->Advance(rd);
}

void Simulation::ProcessAllReadies(bool finish_all) {
  // Readies can produce more work for the same node (e.g. a leader's self-acknowledgement
  // advances commit); loop until everyone is quiet, except for the Readies left persisting
  // in the background, which finish in a later step.
  for (int round = 0; round < 16; ++round) {
    bool any = false;
    for (auto& n : nodes_) {
      if (!n->up()) continue;
      if (!n->in_progress && n->node->HasReady()) {
        BeginReady(*n);
        if (!n->up()) continue;
      }
      if (n->in_progress && (finish_all || rng_.Chance(600))) {
        any = true;
        FinishReady(*n);
        if (Failed()) return;
      }
    }
    if (!any) break;
  }
  for (uint64_t id : to_retire_) {
    SimNode& n = Node(id);
    if (!n.retired) Trace(absl::StrCat("retire ", id));
    n.retired = true;
    CrashNode(n);
  }
  to_retire_.clear();
}

void Simulation::Check() {
  for (auto& n : nodes_) {
    if (!n->up()) continue;
    const Raft& r = n->node->raft();
    const uint64_t commit = r.log().committed();
    if (commit < n->last_commit_seen) {
      checker_.Fail(absl::StrCat("node ", n->id, " commit regressed from ", n->last_commit_seen,
                                 " to ", commit));
      return;
    }
    n->last_commit_seen = commit;
    if (r.term() < n->last_term_seen) {
      checker_.Fail(absl::StrCat("node ", n->id, " term regressed from ", n->last_term_seen, " to ",
                                 r.term()));
      return;
    }
    n->last_term_seen = r.term();
    if (n->applied > commit) {
      checker_.Fail(
          absl::StrCat("node ", n->id, " applied ", n->applied, " beyond commit ", commit));
      return;
    }
    checker_.OnCommitted(n->id, r.log(), &n->recorded_commit);
    if (r.role() == Role::kLeader) checker_.OnLeader(n->id, r.term(), r.log());
    if (Failed()) return;
  }
  stats_.committed = checker_.max_committed();
}

std::string Simulation::ClusterState() {
  std::string out;
  for (auto& n : nodes_) {
    if (!n->started) continue;
    absl::StrAppend(&out, "  ");
    if (n->up()) {
      absl::StrAppend(&out, n->node->raft().DebugString(), " applied(app)=", n->applied);
    } else {
      absl::StrAppend(&out, "node ", n->id, n->retired ? " retired" : " down");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

void Simulation::Liveness() {
  Trace("liveness phase: heal, stop faults, restart everyone");
  network_.Heal();
  network_.set_faults(NetworkFaults{});
  for (auto& n : nodes_) {
    if (n->started && !n->retired && !n->up()) StartNode(*n);
    n->crash_in_next_ready = false;
  }
  liveness_marker_ = absl::StrCat("live-", options_.seed);
  for (auto& n : nodes_) n->applied_marker = false;
  const uint64_t limit_ticks = 60ull * params_.election_ticks;
  uint64_t last_proposal_tick = 0;
  bool proposed = false;
  for (uint64_t t = 0; t < limit_ticks; ++t) {
    TickAll();
    ++stats_.liveness_ticks;
    ProcessAllReadies(true);
    for (int i = 0; i < 100000 && network_.HasDue(now_tick_); ++i) {
      Deliver();
      ProcessAllReadies(true);
      if (Failed()) return;
    }
    Check();
    if (Failed()) return;
    SimNode* leader = Leader();
    if (leader == nullptr) continue;
    if (!proposed || now_tick_ - last_proposal_tick > 3 * params_.election_ticks) {
      proposed = leader->node->Propose(liveness_marker_).ok() || proposed;
      last_proposal_tick = now_tick_;
    }
    // Done when every voter of the leader's configuration applied the marker.
    bool done = true;
    for (uint64_t v : leader->node->conf_state().voters) {
      SimNode& n = Node(v);
      if (!n.up() || !n.applied_marker) done = false;
    }
    if (done) return;
  }
  checker_.Fail(absl::StrCat("liveness: no leader committed a proposal within ", limit_ticks,
                             " ticks after healing\n", ClusterState()));
}

SimResult Simulation::Run() {
  g_current_seed = options_.seed;
  auto previous_handler = std::signal(SIGABRT, OnAbort);
  params_ = ParamsForSeed(rng_);
  network_.set_faults(params_.faults);
  for (uint64_t id = 1; id <= params_.max_nodes; ++id) {
    auto n = std::make_unique<SimNode>();
    n->id = id;
    nodes_.push_back(std::move(n));
  }
  std::vector<uint64_t> voters;
  for (uint64_t id = 1; id <= params_.voters; ++id) voters.push_back(id);
  for (uint64_t id : voters) {
    SimNode& n = Node(id);
    StartNode(n);
    absl::Status s = n.node->Bootstrap(voters);
    if (!s.ok()) checker_.Fail(absl::StrCat("bootstrap: ", s.ToString()));
  }
  Trace(absl::StrCat(
      "seed ", options_.seed, ": ", params_.voters, " voters, election ", params_.election_ticks,
      " heartbeat ", params_.heartbeat_ticks, params_.pre_vote ? " prevote" : "",
      params_.check_quorum ? " checkquorum" : "", " inflight ", params_.max_inflight, " msg bytes ",
      params_.max_msg_bytes, " drop ", params_.faults.drop_per_mille, " dup ",
      params_.faults.duplicate_per_mille, " delay ", params_.faults.max_delay_ticks));
  ProcessAllReadies(true);
  for (step_ = 0; step_ < options_.steps && !Failed(); ++step_) {
    g_current_step = step_;
    RandomEvent();
    if (Failed()) break;
    ProcessAllReadies();
    if (Failed()) break;
    Check();
  }
  if (!Failed()) Liveness();
  std::signal(SIGABRT, previous_handler);

  SimResult result;
  result.stats = stats_;
  result.stats.leaders = checker_.leaders_seen();
  if (Failed()) {
    result.ok = false;
    result.failure =
        absl::StrCat("seed ", options_.seed, " failed at step ", step_, " (tick ", now_tick_,
                     "): ", checker_.failure(), "\nreplay: MERIDIAN_RAFT_SEED=", options_.seed,
                     " ./raft_sim_test\nrecent events:\n");
    for (const std::string& line : trace_) absl::StrAppend(&result.failure, "  ", line, "\n");
    absl::StrAppend(&result.failure, "cluster:\n", ClusterState());
  }
  return result;
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace meridian::raft::sim
