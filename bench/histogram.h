// Latency histogram for meridian-bench: log-linear buckets over nanoseconds.
//
// Values below 256 ns are counted exactly; above, every power of two is split into 128 equal
// buckets, so a bucket is at most 1/128 of its lower bound wide and the reported value (the bucket
// middle) is within 0.4% of every sample in it. Min, max, count and sum are exact. The counts are
// a fixed 7424-entry array: Record() never allocates, and one histogram per thread merged at the
// end keeps the hot path free of locks and atomics.
#ifndef MERIDIAN_BENCH_HISTOGRAM_H_
#define MERIDIAN_BENCH_HISTOGRAM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace meridian::bench {

struct LatencySummary {
  uint64_t count = 0;
  double mean_ms = 0;
  double min_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double max_ms = 0;
};

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;  // 128 per octave
  static constexpr uint64_t kExactLimit = kSubBuckets * 2;                // < 256 ns: exact
  static constexpr int kFirstOctave = kSubBucketBits + 1;                 // 2^8
  static constexpr size_t kBucketCount = kExactLimit + (64 - kFirstOctave) * kSubBuckets;

  LatencyHistogram();

  void Record(uint64_t value_ns) {
    ++counts_[BucketIndex(value_ns)];
    ++count_;
    sum_ns_ += value_ns;
    if (value_ns < min_ns_) min_ns_ = value_ns;
    if (value_ns > max_ns_) max_ns_ = value_ns;
  }

  void Merge(const LatencyHistogram& other);
  void Clear();

  uint64_t count() const { return count_; }
  uint64_t max_ns() const { return max_ns_; }
  uint64_t min_ns() const { return count_ == 0 ? 0 : min_ns_; }
  double mean_ns() const { return count_ == 0 ? 0 : static_cast<double>(sum_ns_) / count_; }

  // The value at quantile q in [0, 1]: the smallest recorded value v such that at least q*count
  // values are <= v, reported as its bucket's middle and clamped to [min, max]. 0 when empty.
  uint64_t ValueAtQuantile(double q) const;

  LatencySummary Summary() const;

  static size_t BucketIndex(uint64_t value_ns) {
    if (value_ns < kExactLimit) return static_cast<size_t>(value_ns);
    const int octave = 63 - __builtin_clzll(value_ns);  // >= kFirstOctave
    const int shift = octave - kSubBucketBits;
    const uint64_t sub = (value_ns >> shift) - kSubBuckets;  // in [0, kSubBuckets)
    return kExactLimit + static_cast<size_t>(octave - kFirstOctave) * kSubBuckets + sub;
  }
  // [lower, upper] of the values that land in bucket `index`.
  static uint64_t BucketLower(size_t index);
  static uint64_t BucketUpper(size_t index);

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ns_ = 0;
  uint64_t min_ns_ = UINT64_MAX;
  uint64_t max_ns_ = 0;
};

}  // namespace meridian::bench

#endif  // MERIDIAN_BENCH_HISTOGRAM_H_
