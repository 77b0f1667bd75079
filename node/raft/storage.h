// The durable log as the raft core sees it. The core only reads storage; the application writes
// to it after persisting each Ready (rawnode.h), so storage always reflects what is durable.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/raft/types.h"

namespace meridian::raft {

// Errors a Storage returns for requests it cannot serve; the core reacts to these (e.g. by
// sending a snapshot) and aborts on any other error.
absl::Status CompactedError();    // the index precedes the first available entry
absl::Status UnavailableError();  // the index is past the last entry
absl::Status SnapshotOutOfDateError();
absl::Status SnapshotTemporarilyUnavailableError();  // try again later
bool IsCompacted(const absl::Status& s);
bool IsEntryUnavailable(const absl::Status& s);
bool IsSnapshotTemporarilyUnavailable(const absl::Status& s);

struct InitialState {
  HardState hard_state;
  ConfState conf_state;
};

class Storage {
 public:
  virtual ~Storage() = default;
  // The persisted hard state and the membership as of the last snapshot.
  virtual InitialState GetInitialState() const = 0;
  // Entries in [lo, hi), at most `max_size_bytes` of EntrySize() but always at least one entry
  // when lo < hi. Compacted when lo <= the snapshot index.
  [[nodiscard]] virtual absl::Status Entries(uint64_t lo, uint64_t hi, uint64_t max_size_bytes,
                                             std::vector<Entry>* out) const = 0;
  // Term of entry `index`, for index in [FirstIndex()-1, LastIndex()] (FirstIndex()-1 being the
  // snapshot's index); Compacted below, Unavailable above.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> Term(uint64_t index) const = 0;
  virtual uint64_t FirstIndex() const = 0;
  virtual uint64_t LastIndex() const = 0;
  // The latest snapshot (possibly empty: index 0). SnapshotTemporarilyUnavailable if the
  // application is still producing one.
  [[nodiscard]] virtual absl::StatusOr<Snapshot> GetSnapshot() const = 0;
};

// Storage held in memory; the application mirrors into it what it made durable. Not
// thread-safe: the node's raft thread owns it.
class MemoryStorage final : public Storage {
 public:
  MemoryStorage();

  InitialState GetInitialState() const override;
  [[nodiscard]] absl::Status Entries(uint64_t lo, uint64_t hi, uint64_t max_size_bytes,
                                     std::vector<Entry>* out) const override;
  [[nodiscard]] absl::StatusOr<uint64_t> Term(uint64_t index) const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  [[nodiscard]] absl::StatusOr<Snapshot> GetSnapshot() const override;

  const HardState& hard_state() const { return hard_state_; }
  void SetHardState(const HardState& hs) { hard_state_ = hs; }
  // Replaces the whole log by a received snapshot. SnapshotOutOfDate if not newer than ours.
  [[nodiscard]] absl::Status ApplySnapshot(const Snapshot& snapshot);
  // Records a snapshot of the application's state at applied index `index` (<= LastIndex()).
  // Entries are kept until Compact(). SnapshotOutOfDate if not newer than the current one.
  [[nodiscard]] absl::Status CreateSnapshot(uint64_t index, const ConfState& conf_state,
                                            std::string data);
  // Drops entries before `compact_index` (which must be <= LastIndex(); the entry at
  // compact_index stays as the new dummy). Compacted if already compacted that far.
  [[nodiscard]] absl::Status Compact(uint64_t compact_index);
  // Appends entries, replacing any suffix they overlap. Entries must be contiguous and must
  // not leave a gap after LastIndex(); parts already compacted are skipped.
  [[nodiscard]] absl::Status Append(const std::vector<Entry>& entries);

  const Snapshot& snapshot() const { return snapshot_; }
  // Sets the membership of a storage that has no snapshot yet, for a node that starts from a
  // known membership without a bootstrap log (tests; restoring from an external backup).
  void SetInitialConfState(const ConfState& cs);

 private:
  uint64_t offset() const { return entries_.front().index; }

  HardState hard_state_;
  Snapshot snapshot_;
  // entries_[0] is a dummy holding the index and term of the last compacted entry (the
  // snapshot); real entries follow contiguously.
  std::vector<Entry> entries_;
};

}  // namespace meridian::raft
