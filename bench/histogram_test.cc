#include "bench/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace meridian::bench {
namespace {

TEST(LatencyHistogramTest, EmptyReportsZeros) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.ValueAtQuantile(0.99), 0u);
  const LatencySummary s = h.Summary();
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.max_ms, 0);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100; ++v) h.Record(v);
  EXPECT_EQ(h.ValueAtQuantile(0.5), 50u);
  EXPECT_EQ(h.ValueAtQuantile(0.99), 99u);
  EXPECT_EQ(h.ValueAtQuantile(1.0), 100u);
  EXPECT_EQ(h.ValueAtQuantile(0.0), 1u);
  EXPECT_EQ(h.min_ns(), 1u);
  EXPECT_EQ(h.max_ns(), 100u);
  EXPECT_DOUBLE_EQ(h.mean_ns(), 50.5);
}

TEST(LatencyHistogramTest, BucketsCoverEveryValueContiguously) {
  for (size_t i = 0; i + 1 < LatencyHistogram::kBucketCount; ++i) {
    ASSERT_EQ(LatencyHistogram::BucketUpper(i) + 1, LatencyHistogram::BucketLower(i + 1)) << i;
    ASSERT_EQ(LatencyHistogram::BucketIndex(LatencyHistogram::BucketLower(i)), i);
    ASSERT_EQ(LatencyHistogram::BucketIndex(LatencyHistogram::BucketUpper(i)), i);
  }
  EXPECT_EQ(LatencyHistogram::BucketIndex(UINT64_MAX), LatencyHistogram::kBucketCount - 1);
  EXPECT_EQ(LatencyHistogram::BucketUpper(LatencyHistogram::kBucketCount - 1), UINT64_MAX);
}

// The quantiles agree with exact ones computed from sorted samples within 1%.
TEST(LatencyHistogramTest, QuantilesWithinOnePercentOfExact) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(std::log(2e6), 1.0);  // ~2 ms, long tail
  std::vector<uint64_t> samples;
  LatencyHistogram h;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t v = static_cast<uint64_t>(dist(rng)) + 1;
    samples.push_back(v);
    h.Record(v);
  }
  std::sort(samples.begin(), samples.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const size_t rank = static_cast<size_t>(std::ceil(q * samples.size()));
    const double exact = static_cast<double>(samples[rank - 1]);
    const double got = static_cast<double>(h.ValueAtQuantile(q));
    EXPECT_NEAR(got, exact, exact * 0.01) << "q=" << q;
  }
  EXPECT_EQ(h.max_ns(), samples.back());
  EXPECT_EQ(h.ValueAtQuantile(1.0), samples.back());
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverything) {
  LatencyHistogram a, b, all;
  for (uint64_t v = 1000; v < 500000; v += 997) {
    ((v / 997) % 2 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.max_ns(), all.max_ns());
  EXPECT_EQ(a.min_ns(), all.min_ns());
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.ValueAtQuantile(q), all.ValueAtQuantile(q));
  a.Clear();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.ValueAtQuantile(0.5), 0u);
}

TEST(LatencyHistogramTest, SummaryIsInMilliseconds) {
  LatencyHistogram h;
  h.Record(3'000'000);  // 3 ms
  const LatencySummary s = h.Summary();
  EXPECT_NEAR(s.p50_ms, 3.0, 0.03);
  EXPECT_DOUBLE_EQ(s.max_ms, 3.0);
}

}  // namespace
}  // namespace meridian::bench
