// Micro-benchmarks of the raft state machine's hot paths (not a test):
//   raft_bench [--benchmark_filter=...]
// Each iteration is one Step(); Readys are drained (persisted to MemoryStorage) outside the
// timed region every kDrainEvery steps. items_per_second is Step calls per second.
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "node/raft/rawnode.h"
#include "node/raft/storage.h"

namespace meridian::raft {
namespace {

constexpr int kDrainEvery = 256;

struct BenchNode {
  MemoryStorage storage;
  std::unique_ptr<RawNode> node;

  BenchNode(uint64_t id, std::vector<uint64_t> voters) {
    storage.SetInitialConfState(ConfState{std::move(voters), {}});
    Config c;
    c.id = id;
    c.pre_vote = false;
    c.max_inflight_msgs = 1 << 20;  // measure Step, not flow-control stalls
    c.max_size_per_msg_bytes = 1 << 20;
    c.max_uncommitted_entries_size_bytes = 1ull << 40;
    node = std::move(*RawNode::Create(c, &storage));
  }

  void Drain() {
    while (node->HasReady()) {
      Ready rd = node->GetReady();
      if (rd.snapshot) (void)storage.ApplySnapshot(*rd.snapshot);
      (void)storage.Append(rd.entries);
      if (rd.hard_state) storage.SetHardState(*rd.hard_state);
      node->Advance(rd);
    }
  }
};

Message Resp(MessageType t, uint64_t from, uint64_t to, uint64_t term) {
  Message m;
  m.type = t;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// The leader of 3 voters handling acknowledgements: each one advances a follower's match,
// may advance commit, and frees the inflight window (sending the next appends).
void BM_LeaderStepAppResp(benchmark::State& state) {
  BenchNode leader(1, {1, 2, 3});
  (void)leader.node->Campaign();
  leader.Drain();
  (void)leader.node->Step(Resp(MessageType::kVoteResp, 2, 1, 1));
  leader.Drain();
  if (leader.node->raft().role() != Role::kLeader) {
    state.SkipWithError("node 1 did not become leader");
    return;
  }
  const std::string payload(100, 'x');
  uint64_t proposed = leader.node->raft().log().LastIndex();
  // Both followers start replicating.
  for (uint64_t f : {2u, 3u}) {
    Message ack = Resp(MessageType::kAppResp, f, 1, 1);
    ack.index = proposed;
    (void)leader.node->Step(ack);
  }
  uint64_t acked = proposed;  // acknowledged by both followers
  bool second = false;        // the next ack is follower 3's for `acked`
  int since_drain = 0;
  for (auto _ : state) {
    if (!second && acked >= proposed) {
      state.PauseTiming();
      for (int i = 0; i < 4096; ++i) (void)leader.node->Propose(payload);
      leader.Drain();
      proposed = leader.node->raft().log().LastIndex();
      state.ResumeTiming();
    }
    // Follower 2 acknowledges the next entry (commits it: leader + 2 are a majority), then
    // follower 3 does.
    Message ack = Resp(MessageType::kAppResp, second ? 3 : 2, 1, 1);
    if (!second) ++acked;
    ack.index = acked;
    second = !second;
    benchmark::DoNotOptimize(leader.node->Step(ack));
    if (++since_drain == kDrainEvery) {
      state.PauseTiming();
      leader.Drain();
      since_drain = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LeaderStepAppResp);

// A follower handling appends of `entries_per_msg` 100-byte entries each.
void BM_FollowerStepApp(benchmark::State& state) {
  const int per_msg = static_cast<int>(state.range(0));
  BenchNode follower(2, {1, 2, 3});
  const std::string payload(100, 'x');
  uint64_t last = 0;
  int since_drain = 0;
  Message app = Resp(MessageType::kApp, 1, 2, 1);
  for (auto _ : state) {
    state.PauseTiming();
    app.index = last;
    app.log_term = last == 0 ? 0 : 1;
    app.commit = last;
    app.entries.clear();
    for (int i = 0; i < per_msg; ++i) {
      app.entries.push_back(Entry{last + 1 + i, 1, EntryType::kNormal, payload});
    }
    state.ResumeTiming();
    benchmark::DoNotOptimize(follower.node->Step(app));
    last += per_msg;
    if (++since_drain == kDrainEvery) {
      state.PauseTiming();
      follower.Drain();
      // Keep memory flat: the state machine "applied" everything, compact the log.
      if (last > 1024) (void)follower.storage.Compact(follower.node->raft().log().applied());
      since_drain = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * per_msg * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_FollowerStepApp)->Arg(1)->Arg(16);

}  // namespace
}  // namespace meridian::raft

BENCHMARK_MAIN();
