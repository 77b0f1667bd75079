// Global safety invariants of a simulated cluster, checked as the simulation runs. The first
// violation is recorded (the simulation stops there and prints it with its seed and step).
//
//   election safety     at most one leader per term
//   log matching        durable entries with equal (index, term) have equal data and equal
//                       predecessor terms, so equal (index, term) implies equal prefixes
//   leader completeness a new leader's log holds every entry known committed
//   state machine safety no two nodes apply different entries (or reach different states) at
//                       the same index; snapshots carry the state of their index
//   commit monotonicity  a node's commit index never goes back, durable commit neither
//   apply prefix        applied entries are consecutive, committed, and below the commit index
//   durable votes       a persisted vote never changes within a term; persisted term never
//                       decreases
//   linearizable reads  a read index covers everything committed before the read was asked
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "node/raft/log.h"
#include "node/raft/types.h"

namespace meridian::raft::sim {

class Checker {
 public:
  bool failed() const { return !failure_.empty(); }
  const std::string& failure() const { return failure_; }
  void Fail(std::string what);

  // A node persisted `entries`; `prev_term` is its log's term at entries[0].index - 1, or
  // nullopt if unknown (compacted).
  void OnPersistEntries(uint64_t node, const std::vector<Entry>& entries,
                        std::optional<uint64_t> prev_term);
  void OnPersistHardState(uint64_t node, const HardState& before, const HardState& after);
  void OnApplyEntry(uint64_t node, uint64_t prev_applied, const Entry& e, uint64_t commit,
                    uint64_t state_hash_after);
  void OnApplySnapshot(uint64_t node, const SnapshotMetadata& md, uint64_t state_hash);
  // Records the node's committed entries in (*recorded, commit] and checks them against what
  // other nodes committed; updates *recorded.
  void OnCommitted(uint64_t node, const RaftLog& log, uint64_t* recorded);
  void OnLeader(uint64_t node, uint64_t term, const RaftLog& log);
  void OnReadIssued(const std::string& context) { read_floor_[context] = max_committed_; }
  void OnReadState(uint64_t node, const ReadState& rs);

  uint64_t max_committed() const { return max_committed_; }
  size_t leaders_seen() const { return leader_of_term_.size(); }

 private:
  struct EntryRecord {
    uint64_t data_hash;
    EntryType type;
    std::optional<uint64_t> prev_term;
  };
  std::string failure_;
  std::map<std::pair<uint64_t, uint64_t>, EntryRecord> entries_;  // (index, term)
  std::map<uint64_t, uint64_t> committed_term_;                   // index -> term
  uint64_t max_committed_ = 0;
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> applied_;  // index -> (term, data hash)
  std::map<uint64_t, uint64_t> state_hash_;                    // index -> state after it
  std::map<uint64_t, uint64_t> leader_of_term_;
  std::set<std::pair<uint64_t, uint64_t>> completeness_checked_;  // (node, term)
  std::map<std::string, uint64_t> read_floor_;
};

uint64_t HashBytes(const std::string& s);
uint64_t MixHash(uint64_t state, uint64_t index, uint64_t term, uint64_t data_hash);

}  // namespace meridian::raft::sim
