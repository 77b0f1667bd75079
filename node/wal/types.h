#pragma once

#include <cstdint>
#include <string>

namespace meridian::wal {

// A raft log entry. The single-member node uses term 0..n the same way raft would, so the WAL
// does not have to change when replication arrives.
struct Entry {
  uint64_t index = 0;
  uint64_t term = 0;
  std::string data;
  friend bool operator==(const Entry&, const Entry&) = default;
};

struct HardState {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;
  friend bool operator==(const HardState&, const HardState&) = default;
};

// Says "the state machine holds everything up to and including index/term"; entries at or below
// it are dropped on recovery.
struct SnapshotMarker {
  uint64_t index = 0;
  uint64_t term = 0;
  friend bool operator==(const SnapshotMarker&, const SnapshotMarker&) = default;
};

}  // namespace meridian::wal
