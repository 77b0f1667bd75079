#include "bench/histogram.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace meridian::bench {

LatencyHistogram::LatencyHistogram() : counts_(kBucketCount, 0) {}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ns_ += other.sum_ns_;
  min_ns_ = std::min(min_ns_, other.min_ns_);
  max_ns_ = std::max(max_ns_, other.max_ns_);
}

void LatencyHistogram::Clear() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  sum_ns_ = 0;
  min_ns_ = UINT64_MAX;
  max_ns_ = 0;
}

uint64_t LatencyHistogram::BucketLower(size_t index) {
  MERIDIAN_CHECK_LT(index, kBucketCount);
  if (index < kExactLimit) return index;
  const size_t rel = index - kExactLimit;
  const int octave = kFirstOctave + static_cast<int>(rel / kSubBuckets);
  const uint64_t sub = rel % kSubBuckets;
  return (kSubBuckets + sub) << (octave - kSubBucketBits);
}

uint64_t LatencyHistogram::BucketUpper(size_t index) {
  MERIDIAN_CHECK_LT(index, kBucketCount);
  if (index < kExactLimit) return index;
  const size_t rel = index - kExactLimit;
  const int octave = kFirstOctave + static_cast<int>(rel / kSubBuckets);
  // The last bucket's upper bound is 2^64 - 1; computing lower + width would overflow.
  return BucketLower(index) + ((uint64_t{1} << (octave - kSubBucketBits)) - 1);
}

uint64_t LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t lower = BucketLower(i);
      const uint64_t middle = lower + (BucketUpper(i) - lower) / 2;
      return std::clamp(middle, min_ns_, max_ns_);
    }
  }
  MERIDIAN_UNREACHABLE() << "rank=" << rank << " count=" << count_ << " seen=" << seen;
}

LatencySummary LatencyHistogram::Summary() const {
  constexpr double kNsPerMs = 1e6;
  LatencySummary s;
  s.count = count_;
  if (count_ == 0) return s;
  s.mean_ms = mean_ns() / kNsPerMs;
  s.min_ms = static_cast<double>(min_ns_) / kNsPerMs;
  s.p50_ms = static_cast<double>(ValueAtQuantile(0.50)) / kNsPerMs;
  s.p90_ms = static_cast<double>(ValueAtQuantile(0.90)) / kNsPerMs;
  s.p99_ms = static_cast<double>(ValueAtQuantile(0.99)) / kNsPerMs;
  s.p999_ms = static_cast<double>(ValueAtQuantile(0.999)) / kNsPerMs;
  s.max_ms = static_cast<double>(max_ns_) / kNsPerMs;
  return s;
}

}  // namespace meridian::bench
