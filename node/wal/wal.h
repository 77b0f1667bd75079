#pragma once

// Segmented write-ahead log of a storage node: raft entries (index+term), the raft hard state
// and snapshot markers. See node/wal/README.md for the on-disk format and recovery rules.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/wal/record.h"
#include "node/wal/types.h"

namespace meridian::wal {

struct Options {
  std::string dir;
  uint64_t segment_size_bytes = 64ull << 20;     // preallocated in full
  uint64_t max_record_size_bytes = 64ull << 20;  // decoder refuses bigger lengths
  // Segments are prepared ahead by a background thread: written full of zeros and synced, then
  // renamed into place when the log needs one. Appends then overwrite written blocks, so an
  // fdatasync flushes data only. A posix_fallocate'd segment has unwritten extents instead, and
  // every fdatasync must also write the inode (the extent conversion): a second synchronous I/O
  // per sync. Until a prepared segment is ready (a new log, a restart) the live segment is a
  // posix_fallocate'd one, left for the prepared one as soon as that is ready. Off: every segment
  // is posix_fallocate'd, and segment boundaries depend only on the appends.
  bool prepare_segments = true;
};

// Where a segment is prepared before it is renamed into place (not a segment name; removed at
// Open if a crash left it behind).
inline constexpr char kPreparingFileName[] = "segment.preparing";

inline constexpr uint64_t kMinSegmentSizeBytes = 1024;

struct Recovered {
  std::optional<SnapshotMarker> snapshot;  // newest marker found
  HardState hard_state;                    // newest hard state found
  // Entries after the snapshot marker, in index order, with raft overwrite semantics applied (an
  // entry whose index <= the previous last index replaces that suffix).
  std::vector<Entry> entries;
  bool tail_truncated = false;  // a torn/corrupt tail was found and cut off
  std::string tail_error;       // which segment, offset, why
};

// "<seq>-<first_index>.wal", both as 16 hex digits, so names sort in log order.
std::string SegmentFileName(uint64_t seq, uint64_t first_index);

class Wal {  // not thread-safe: one caller thread at a time (the node's log writer thread)
 public:
  // Recovers the log in options.dir (created if missing) and opens it for appending. The
  // directory is flock()ed so a second process (or a second Open) fails with FailedPrecondition.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Wal>> Open(const Options& options,
                                                                 Recovered* out);
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Writes the entries, then the hard state if given, with one write() (larger batches are
  // written in 1 MiB pieces); no fsync. Entry indexes must satisfy
  // snapshot index < index <= last_index() + 1; an index <= last_index() replaces that suffix.
  [[nodiscard]] absl::Status Append(std::span<const Entry> entries, const HardState* hard_state);
  // One fdatasync for everything appended since the last Sync (group commit), plus a directory
  // fsync when a segment was created since then. A no-op when nothing is pending.
  [[nodiscard]] absl::Status Sync();
  // Appended and synced. The marker index may lie beyond last_index() (a snapshot received from
  // a leader); the next entry then follows the marker. Markers never move backwards.
  [[nodiscard]] absl::Status SaveSnapshotMarker(const SnapshotMarker& marker);
  // Deletes the oldest segment files that hold only entries with index < `index`, never the live
  // segment (the caller guarantees it no longer needs them).
  [[nodiscard]] absl::Status ReleaseBefore(uint64_t index);

  uint64_t last_index() const { return last_index_; }
  // Whether a prepared segment is waiting to be used (see Options::prepare_segments).
  bool segment_prepared() const;
  // Whether the live segment was preallocated with posix_fallocate (not prepared).
  bool live_segment_fallocated() const { return live_fallocated_; }
  uint64_t fsync_count() const { return fsync_count_; }  // fdatasyncs of segment files
  double last_fsync_seconds() const { return last_fsync_seconds_; }

 private:
  class Preparer;
  struct Segment {
    uint64_t seq = 0;
    uint64_t first_index = 0;
    uint64_t max_entry_index = 0;  // 0: holds no entries
    std::string path;
  };

  Wal(const Options& options, int dir_fd);
  [[nodiscard]] absl::Status Recover(Recovered* out);
  [[nodiscard]] absl::Status OpenLiveSegment(uint64_t valid_bytes);
  [[nodiscard]] absl::Status StartSegment();
  // A new live segment file at `path`: the prepared one if ready, else a posix_fallocate'd one.
  [[nodiscard]] absl::StatusOr<int> CreateSegmentFile(const std::string& path);
  [[nodiscard]] absl::Status MakeRoom(uint64_t record_bytes);
  [[nodiscard]] absl::Status FlushBuffer();
  [[nodiscard]] absl::Status SyncLiveSegment();
  [[nodiscard]] absl::Status SyncDir();
  [[nodiscard]] absl::Status CheckUsable() const;
  [[nodiscard]] absl::Status Fail(absl::Status status);

  const Options options_;
  const int dir_fd_;                    // held open for directory fsyncs and the flock
  int fd_ = -1;                         // live segment
  bool live_fallocated_ = false;        // fd_ was posix_fallocate'd (not a prepared segment)
  std::unique_ptr<Preparer> preparer_;  // null unless options_.prepare_segments
  uint64_t write_offset_bytes_ = 0;     // file offset where buffer_ will land
  std::vector<Segment> segments_;       // oldest first; back() is the live segment
  std::string buffer_;

  uint64_t last_index_ = 0;
  HardState hard_state_;
  std::optional<SnapshotMarker> snapshot_;

  bool data_unsynced_ = false;
  bool dir_unsynced_ = false;
  std::string failure_;  // non-empty once a write or fsync failed: the Wal refuses further work
  uint64_t fsync_count_ = 0;
  double last_fsync_seconds_ = 0;
};

}  // namespace meridian::wal
