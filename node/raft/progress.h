// The leader's view of one follower: how much of the log it matches, what to send next, and the
// flow control (probe/replicate/snapshot modes and the bounded window of in-flight appends).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace meridian::raft {

// A bounded FIFO of the appends sent to one follower and not yet acknowledged, by the last
// index each carried. Full() pauses replication, which bounds the memory and bandwidth a slow
// follower can make the leader spend.
class Inflights {
 public:
  // `capacity` messages at most (>= 1); `max_bytes` of payload at most, 0 for no byte limit.
  Inflights(size_t capacity, uint64_t max_bytes);

  // Records an append whose last entry is `index` carrying `bytes` of payload. Indexes must be
  // strictly increasing; the window must not be full.
  void Add(uint64_t index, uint64_t bytes);
  // Frees every append whose last index is <= `index` (they were acknowledged).
  void FreeLE(uint64_t index);
  // Frees the oldest append; used when a heartbeat response shows the follower is alive but
  // acknowledgements stopped (the appends filling the window may have been lost).
  void FreeFirstOne();
  bool Full() const;
  size_t count() const { return count_; }
  uint64_t bytes() const { return bytes_; }
  size_t capacity() const { return capacity_; }
  void Reset();

 private:
  size_t capacity_;
  uint64_t max_bytes_;
  // Ring buffer of (index, bytes), allocated on first use and grown up to capacity_ so idle
  // followers cost nothing.
  std::vector<std::pair<uint64_t, uint64_t>> buffer_;
  size_t start_ = 0;
  size_t count_ = 0;
  uint64_t bytes_ = 0;
};

enum class ProgressState : uint8_t {
  // The leader does not know where the follower's log ends: send one append at a time and wait
  // for the answer (or the next heartbeat response) before sending another.
  kProbe,
  // The follower is known to match up to `match`: stream appends optimistically, bounded by the
  // inflights window.
  kReplicate,
  // The follower needs entries the leader compacted: a snapshot is on its way; send nothing
  // until it is reported applied or failed.
  kSnapshot,
};
const char* ProgressStateName(ProgressState s);

struct Progress {
  Progress(size_t max_inflight, uint64_t max_inflight_bytes)
      : inflights(max_inflight, max_inflight_bytes) {}

  uint64_t match = 0;  // highest index known to be durably replicated on the follower
  uint64_t next = 1;   // next index to send
  ProgressState state = ProgressState::kProbe;
  uint64_t pending_snapshot = 0;  // kSnapshot: index of the snapshot being sent
  // Heard from since the last CheckQuorum round (the leader's own entry is always true).
  bool recent_active = false;
  // kProbe: an append is outstanding, wait for its answer or a heartbeat response.
  bool probe_sent = false;
  bool is_learner = false;
  uint64_t read_round_acked = 0;  // highest read-index round this follower confirmed
  Inflights inflights;

  void BecomeProbe();
  void BecomeReplicate();
  void BecomeSnapshot(uint64_t snapshot_index);

  // The follower acknowledged everything up to `n`. Returns whether match moved.
  bool MaybeUpdate(uint64_t n);
  // Bookkeeping after sending an append of `entries` entries (`bytes` of payload, last index
  // `last_index`); also after an empty probe (entries == 0).
  void SentEntries(size_t entries, uint64_t bytes, uint64_t last_index);
  // The follower rejected an append at `rejected`; `match_hint` is where it suggests to probe.
  // Returns false when the rejection is stale (and must be ignored).
  bool MaybeDecrTo(uint64_t rejected, uint64_t match_hint);
  bool IsPaused() const;

  std::string ToString() const;

 private:
  void ResetState(ProgressState s);
};

}  // namespace meridian::raft
