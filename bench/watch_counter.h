// Exact accounting of watch events for meridian-bench's watch modes.
//
// Every put the bench makes in watch mode carries a payload with a sequence number and the send
// time (CLOCK_MONOTONIC, so delivery latency is measured on one host clock). Puts come from
// `sources` putters; putter p sends seq p, p + sources, p + 2*sources, ... one at a time, so the
// server must deliver each putter's events in increasing seq order. Per watcher, a SequenceTracker
// then counts exactly:
//   lost          seqs in [0, expected) never delivered
//   duplicated    deliveries of a seq already delivered
//   out_of_order  first deliveries of a seq after a higher seq of the same putter
//   unexpected    events that are not ours (bad payload, seq out of range, unknown watch id)
// A WatcherSet holds the trackers of the watchers on one Watch stream and turns WatchResponses
// into these counts; it is what the bench's stream handler calls, and what tests feed directly.
#ifndef MERIDIAN_BENCH_WATCH_COUNTER_H_
#define MERIDIAN_BENCH_WATCH_COUNTER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "bench/histogram.h"
#include "etcdserverpb/rpc.pb.h"

namespace meridian::bench {

// "S<16 hex digits of seq>T<16 hex digits of sent_ns>" then '.' padding.
inline constexpr size_t kWatchPayloadMinBytes = 34;

struct WatchPayload {
  uint64_t seq = 0;
  uint64_t sent_ns = 0;
};

// Overwrites `out` with the payload, padded to max(size_bytes, kWatchPayloadMinBytes). Does not
// reallocate when `out` already has that size (the hot path reuses one request's value).
void EncodeWatchPayload(uint64_t seq, uint64_t sent_ns, size_t size_bytes, std::string* out);
std::optional<WatchPayload> DecodeWatchPayload(std::string_view value);

struct WatchEventCounts {
  uint64_t expected = 0;  // events that should have arrived (watchers x puts)
  uint64_t received = 0;  // every event delivered, ours or not, duplicates included
  uint64_t distinct = 0;  // distinct (watcher, seq) pairs delivered
  uint64_t lost = 0;
  uint64_t duplicated = 0;
  uint64_t out_of_order = 0;
  uint64_t unexpected = 0;

  void Add(const WatchEventCounts& other);
};

// Caps a tracker's bitmap (512 MiB): the bench refuses watchers x puts beyond this.
inline constexpr uint64_t kMaxTrackedEventsPerWatcher = uint64_t{1} << 32;

class SequenceTracker {
 public:
  // Expects seqs [0, expected_total) from `sources` putters. Aborts if sources == 0 or
  // expected_total > kMaxTrackedEventsPerWatcher (callers validate their flags first).
  SequenceTracker(uint32_t sources, uint64_t expected_total);

  // Returns true if `seq` had not been delivered before.
  bool Observe(uint64_t seq);
  void ObserveUnexpected() {
    ++counts_.unexpected;
    ++counts_.received;
  }

  // counts with lost filled in.
  WatchEventCounts Counts() const;
  uint64_t distinct() const { return counts_.distinct; }

 private:
  uint32_t sources_;
  std::vector<uint64_t> delivered_bits_;
  // Highest seq delivered per source, plus one (0: none yet).
  std::vector<uint64_t> next_after_max_;
  WatchEventCounts counts_;
};

// The watchers of one Watch stream. Watchers are created in order; the i-th "created" response
// on the stream belongs to the i-th create request (etcd answers creates in order).
class WatcherSet {
 public:
  // With track_sequences == false events are only counted (k8s mode and idle watchers: the
  // values are not bench payloads).
  WatcherSet(uint32_t watchers, bool track_sequences, uint32_t sources, uint64_t puts);

  struct ResponseResult {
    uint32_t newly_created = 0;
    uint64_t events = 0;
    uint64_t new_distinct = 0;
    bool canceled = false;  // the server canceled a watch (reason in the returned status)
  };
  // Accounts one response. `delivery_ns` (may be null) gets now_ns - sent_ns for every decoded
  // event. A non-OK status reports a protocol problem (cancel, unknown created id, too many
  // creates); the counts are still updated.
  [[nodiscard]] absl::Status OnResponse(const etcdserverpb::WatchResponse& response,
                                        uint64_t now_ns, LatencyHistogram* delivery_ns,
                                        ResponseResult* result);

  uint32_t watchers() const { return watchers_; }
  uint32_t created() const { return created_; }
  bool all_created() const { return created_ == watchers_; }
  WatchEventCounts Counts() const;

 private:
  uint32_t watchers_;
  uint32_t created_ = 0;
  bool track_;
  uint64_t puts_;
  std::vector<SequenceTracker> trackers_;   // when tracking
  std::vector<uint64_t> untracked_events_;  // when not tracking
  absl::flat_hash_map<int64_t, uint32_t> index_by_watch_id_;
  uint64_t unknown_id_events_ = 0;
};

}  // namespace meridian::bench

#endif  // MERIDIAN_BENCH_WATCH_COUNTER_H_
