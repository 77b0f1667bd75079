#include "bench/watch_counter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/strings.h"

namespace meridian::bench {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

void PutHex16(uint64_t value, char* out) {
  for (int i = 15; i >= 0; --i) {
    out[i] = kHexDigits[value & 0xf];
    value >>= 4;
  }
}

std::optional<uint64_t> ParseHex16(std::string_view text) { return ParseLowerHex(text); }

}  // namespace

void EncodeWatchPayload(uint64_t seq, uint64_t sent_ns, size_t size_bytes, std::string* out) {
  const size_t size = std::max(size_bytes, kWatchPayloadMinBytes);
  if (out->size() != size) out->assign(size, '.');
  char* p = out->data();
  p[0] = 'S';
  PutHex16(seq, p + 1);
  p[17] = 'T';
  PutHex16(sent_ns, p + 18);
}

std::optional<WatchPayload> DecodeWatchPayload(std::string_view value) {
  if (value.size() < kWatchPayloadMinBytes || value[0] != 'S' || value[17] != 'T') {
    return std::nullopt;
  }
  const std::optional<uint64_t> seq = ParseHex16(value.substr(1, 16));
  const std::optional<uint64_t> sent = ParseHex16(value.substr(18, 16));
  if (!seq || !sent) return std::nullopt;
  return WatchPayload{*seq, *sent};
}

void WatchEventCounts::Add(const WatchEventCounts& other) {
  expected += other.expected;
  received += other.received;
  distinct += other.distinct;
  lost += other.lost;
  duplicated += other.duplicated;
  out_of_order += other.out_of_order;
  unexpected += other.unexpected;
}

SequenceTracker::SequenceTracker(uint32_t sources, uint64_t expected_total) : sources_(sources) {
  MERIDIAN_CHECK_GT(sources, 0u);
  MERIDIAN_CHECK_LE(expected_total, kMaxTrackedEventsPerWatcher);
  delivered_bits_.assign((expected_total + 63) / 64, 0);
  next_after_max_.assign(sources, 0);
  counts_.expected = expected_total;
}

bool SequenceTracker::Observe(uint64_t seq) {
  ++counts_.received;
  if (seq >= counts_.expected) {
    ++counts_.unexpected;
    return false;
  }
  uint64_t& word = delivered_bits_[seq / 64];
  const uint64_t bit = uint64_t{1} << (seq % 64);
  if (word & bit) {
    ++counts_.duplicated;
    return false;
  }
  word |= bit;
  ++counts_.distinct;
  uint64_t& next = next_after_max_[seq % sources_];
  if (seq + 1 < next) {
    ++counts_.out_of_order;
  } else {
    next = seq + 1;
  }
  return true;
}

WatchEventCounts SequenceTracker::Counts() const {
  WatchEventCounts c = counts_;
  c.lost = c.expected - c.distinct;
  return c;
}

WatcherSet::WatcherSet(uint32_t watchers, bool track_sequences, uint32_t sources, uint64_t puts)
    : watchers_(watchers), track_(track_sequences), puts_(puts) {
  if (track_) {
    trackers_.reserve(watchers);
    for (uint32_t i = 0; i < watchers; ++i) trackers_.emplace_back(sources, puts);
  } else {
    untracked_events_.assign(watchers, 0);
  }
  index_by_watch_id_.reserve(watchers);
}

absl::Status WatcherSet::OnResponse(const etcdserverpb::WatchResponse& response, uint64_t now_ns,
                                    LatencyHistogram* delivery_ns, ResponseResult* result) {
  absl::Status status;
  if (response.created()) {
    if (created_ == watchers_) {
      status = absl::InternalError(
          absl::StrCat("more created responses than the ", watchers_, " create requests sent"));
    } else if (response.canceled()) {
      status = absl::FailedPreconditionError(
          absl::StrCat("watch creation refused: ", response.cancel_reason()));
    } else {
      const auto [it, inserted] = index_by_watch_id_.emplace(response.watch_id(), created_);
      if (!inserted) {
        status = absl::InternalError(
            absl::StrCat("watch id ", response.watch_id(), " created twice on one stream"));
      } else {
        ++created_;
        ++result->newly_created;
      }
    }
  } else if (response.canceled()) {
    result->canceled = true;
    status = absl::CancelledError(
        absl::StrCat("watch ", response.watch_id(), " canceled (", response.cancel_reason(),
                     "), compact_revision=", response.compact_revision()));
  }
  const int event_count = response.events_size();
  if (event_count == 0) return status;
  result->events += static_cast<uint64_t>(event_count);

  const auto it = index_by_watch_id_.find(response.watch_id());
  if (it == index_by_watch_id_.end()) {
    unknown_id_events_ += static_cast<uint64_t>(event_count);
    if (status.ok()) {
      status = absl::InternalError(
          absl::StrCat(event_count, " events for unknown watch id ", response.watch_id()));
    }
    return status;
  }
  const uint32_t index = it->second;
  if (!track_) {
    untracked_events_[index] += static_cast<uint64_t>(event_count);
    return status;
  }
  SequenceTracker& tracker = trackers_[index];
  for (const mvccpb::Event& event : response.events()) {
    const std::string& value = event.kv().value();
    const std::optional<WatchPayload> payload =
        event.type() == mvccpb::Event::PUT ? DecodeWatchPayload(value) : std::nullopt;
    if (!payload) {
      tracker.ObserveUnexpected();
      continue;
    }
    if (tracker.Observe(payload->seq)) ++result->new_distinct;
    if (delivery_ns != nullptr && now_ns >= payload->sent_ns) {
      delivery_ns->Record(now_ns - payload->sent_ns);
    }
  }
  return status;
}

WatchEventCounts WatcherSet::Counts() const {
  WatchEventCounts total;
  if (track_) {
    for (const SequenceTracker& t : trackers_) total.Add(t.Counts());
  } else {
    for (uint64_t n : untracked_events_) {
      total.received += n;
      total.distinct += n;
    }
  }
  total.received += unknown_id_events_;
  total.unexpected += unknown_id_events_;
  return total;
}

}  // namespace meridian::bench
