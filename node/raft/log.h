// The raft log: the durable part lives in Storage, the not-yet-durable tail (and a received
// snapshot not yet persisted) in the unstable part here. Tracks the commit and applied indexes.
//
//   [snapshot][----- storage (stable) -----][----- unstable -----]
//             FirstIndex()                   unstable offset      LastIndex()
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/raft/storage.h"
#include "node/raft/types.h"

namespace meridian::raft {

class RaftLog {
 public:
  // `max_applying_size_bytes` bounds the committed entries handed out in one Ready.
  RaftLog(const Storage* storage, uint64_t max_applying_size_bytes);

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  // Term of entry `index` for index in [FirstIndex()-1, LastIndex()]; Compacted/Unavailable
  // errors outside.
  [[nodiscard]] absl::StatusOr<uint64_t> Term(uint64_t index) const;
  uint64_t TermOrZero(uint64_t index) const;  // 0 when out of range
  bool MatchTerm(uint64_t index, uint64_t term) const;
  // Whether a log ending at (last_index, last_term) is at least as up-to-date as ours (§5.4.1).
  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;

  // Follower side of AppendEntries: if our entry at `index` has `log_term`, appends `entries`
  // (replacing a conflicting suffix), advances commit to min(`commit`, last new index) and
  // returns the last new index. nullopt if the terms do not match. `*first_written` (if given)
  // is set to the first index written, 0 if the log already had all entries.
  std::optional<uint64_t> MaybeAppend(uint64_t index, uint64_t log_term, uint64_t commit,
                                      std::span<const Entry> entries,
                                      uint64_t* first_written = nullptr);
  // Appends to the unstable tail, truncating anything at or after entries[0].index. Returns the
  // new last index.
  uint64_t Append(std::span<const Entry> entries);
  // First index among `entries` whose term differs from ours (or that we lack); 0 if none.
  uint64_t FindConflict(std::span<const Entry> entries) const;
  // The largest (index', term') with index' <= index and term' <= term in our log: where a
  // leader whose entry at `index` has `term` should probe next (fast backtracking).
  std::pair<uint64_t, uint64_t> FindConflictByTerm(uint64_t index, uint64_t term) const;

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  uint64_t applying() const { return applying_; }
  void CommitTo(uint64_t index);
  // Leader: commits `index` if it is above committed and its entry has `term` (§5.4.2: only
  // entries of the current term are committed by counting replicas).
  bool MaybeCommit(uint64_t index, uint64_t term);
  // The application has applied everything up to `index`.
  void AppliedTo(uint64_t index);
  // Committed entries up to `index` were handed to the application.
  void ApplyingTo(uint64_t index);

  // The application persisted the unstable entries up to (index, term); a mismatched term means
  // the entries were replaced meanwhile, and nothing is marked stable.
  void StableTo(uint64_t index, uint64_t term);
  void StableSnapTo(uint64_t index);
  // Last index known durable and still part of this log (0 while a snapshot is unstable).
  uint64_t StableLastIndex() const;

  // Replaces the log by a snapshot received from the leader (committed = snapshot index).
  void Restore(const Snapshot& snapshot);

  // Entries in [lo, hi) limited to `max_size_bytes` (at least one). Compacted if lo is.
  [[nodiscard]] absl::Status Slice(uint64_t lo, uint64_t hi, uint64_t max_size_bytes,
                                   std::vector<Entry>* out) const;
  // Entries from `lo` to the end, size-limited.
  [[nodiscard]] absl::Status EntriesFrom(uint64_t lo, uint64_t max_size_bytes,
                                         std::vector<Entry>* out) const;
  // Every entry in [lo, hi) (no size limit); aborts if unavailable. For tests and scans.
  std::vector<Entry> AllEntries(uint64_t lo, uint64_t hi) const;

  // Committed entries not yet handed to the application (none while a received snapshot is not
  // yet persisted: entries after it must be applied after it).
  bool HasNextCommittedEntries() const;
  std::vector<Entry> NextCommittedEntries() const;

  const std::vector<Entry>& UnstableEntries() const { return unstable_entries_; }
  const std::optional<Snapshot>& UnstableSnapshot() const { return unstable_snapshot_; }
  // The snapshot to send to a follower that needs compacted entries.
  [[nodiscard]] absl::StatusOr<Snapshot> GetSnapshot() const;

  std::string ToString() const;

 private:
  std::optional<uint64_t> UnstableTerm(uint64_t index) const;
  void TruncateAndAppendUnstable(std::span<const Entry> entries);

  const Storage* storage_;
  uint64_t max_applying_size_bytes_;
  uint64_t committed_ = 0;
  uint64_t applying_ = 0;  // highest index handed to the application (>= applied_)
  uint64_t applied_ = 0;

  // Index of unstable_entries_[0]; entries below it are in storage (or in unstable_snapshot_).
  uint64_t unstable_offset_ = 1;
  std::vector<Entry> unstable_entries_;
  std::optional<Snapshot> unstable_snapshot_;
};

}  // namespace meridian::raft
