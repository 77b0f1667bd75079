// A simulated network between raft nodes: messages are delayed by whole ticks, delivered in
// random order among those due, dropped, duplicated, and cut by partitions.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "node/raft/sim/rng.h"
#include "node/raft/types.h"

namespace meridian::raft::sim {

struct NetworkFaults {
  uint32_t drop_per_mille = 0;
  uint32_t duplicate_per_mille = 0;
  uint32_t max_delay_ticks = 0;  // each copy is delayed by [0, max_delay_ticks] ticks
};

class Network {
 public:
  // Messages beyond this many in flight are dropped (bounds memory under heavy duplication).
  static constexpr size_t kMaxInFlight = 20000;

  explicit Network(Rng* rng) : rng_(rng) {}

  void set_faults(const NetworkFaults& faults) { faults_ = faults; }
  const NetworkFaults& faults() const { return faults_; }

  // Returns how many copies were queued (0 when dropped).
  int Send(const Message& m, uint64_t now_tick);
  bool HasDue(uint64_t now_tick) const;
  // A random message among those due (this is where reordering happens).
  std::optional<Message> PopDue(uint64_t now_tick);
  size_t in_flight() const { return in_flight_.size(); }

  bool Connected(uint64_t a, uint64_t b) const;
  void Cut(uint64_t a, uint64_t b);  // both directions
  void Heal() { cut_.clear(); }
  bool partitioned() const { return !cut_.empty(); }

 private:
  struct InFlight {
    uint64_t deliver_at_tick;
    Message msg;
  };
  Rng* rng_;
  NetworkFaults faults_;
  std::vector<InFlight> in_flight_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
};

}  // namespace meridian::raft::sim
