// Deterministic simulation of a raft cluster: one seed drives 3 or 5 voters (plus nodes added
// later) through a faulty network (drops, delays, reordering, duplicates, partitions), crashes
// and restarts with only the persisted state (unpersisted Ready content is lost), proposals,
// reads, compaction, membership changes and leader transfers. Safety invariants (checker.h) are
// checked after every step; at the end the faults stop and the cluster must elect a leader and
// commit a proposal within a bounded number of ticks.
#pragma once

#include <cstdint>
#include <string>

namespace meridian::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  size_t steps = 4000;      // random events before the liveness phase
  size_t trace_lines = 80;  // recent events kept for the failure report
  bool verbose = false;     // print every event to stderr
};

struct SimStats {
  uint64_t ticks = 0;
  uint64_t messages_delivered = 0;
  uint64_t leaders = 0;  // distinct (term, leader) pairs
  uint64_t committed = 0;
  uint64_t crashes = 0;
  uint64_t snapshots_sent = 0;
  uint64_t conf_changes_applied = 0;
  uint64_t transfers = 0;
  uint64_t reads_served = 0;
  uint64_t liveness_ticks = 0;  // ticks the final phase needed
};

struct SimResult {
  bool ok = true;
  std::string failure;  // the violated invariant, the seed, the step and the recent events
  SimStats stats;
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace meridian::raft::sim
