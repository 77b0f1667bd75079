#include "common/metrics.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace meridian::metrics {
namespace {

TEST(FormatValueTest, MatchesGoShortestG) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(0.001), "0.001");
  EXPECT_EQ(FormatValue(0.0001), "0.0001");
  EXPECT_EQ(FormatValue(0.00001), "1e-05");
  EXPECT_EQ(FormatValue(123456), "123456");
  EXPECT_EQ(FormatValue(1000000), "1e+06");
  EXPECT_EQ(FormatValue(2445312), "2.445312e+06");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricsTest, CounterRendering) {
  Registry registry;
  Counter& failed = registry.counter("etcd_server_proposals_failed_total",
                                     "The total number of failed proposals seen.");
  failed.Inc();
  failed.Inc(2);
  EXPECT_EQ(registry.Render(),
            "# HELP etcd_server_proposals_failed_total The total number of failed proposals seen.\n"
            "# TYPE etcd_server_proposals_failed_total counter\n"
            "etcd_server_proposals_failed_total 3\n");
}

TEST(MetricsTest, LabeledCountersShareOneFamilySortedByLabels) {
  Registry registry;
  const std::string help =
      "Total number of RPCs completed on the server, regardless of success or failure.";
  Counter& range_ok = registry.counter("grpc_server_handled_total", help,
                                       {{"grpc_method", "Range"}, {"grpc_code", "OK"}});
  Counter& put_ok = registry.counter("grpc_server_handled_total", help,
                                     {{"grpc_method", "Put"}, {"grpc_code", "OK"}});
  // Same labels in another order: the same series.
  Counter& range_ok_again = registry.counter("grpc_server_handled_total", "ignored",
                                             {{"grpc_code", "OK"}, {"grpc_method", "Range"}});
  EXPECT_EQ(&range_ok, &range_ok_again);
  EXPECT_NE(&range_ok, &put_ok);
  range_ok.Inc(5);
  put_ok.Inc();
  EXPECT_EQ(registry.Render(),
            "# HELP grpc_server_handled_total " + help +
                "\n"
                "# TYPE grpc_server_handled_total counter\n"
                "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\"} 1\n"
                "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 5\n");
}

TEST(MetricsTest, GaugeRendering) {
  Registry registry;
  Gauge& leader = registry.gauge("etcd_server_has_leader",
                                 "Whether or not a leader exists. 1 is existence, 0 is not.");
  leader.Set(1);
  Gauge& pending = registry.gauge("etcd_mvcc_pending_events_total",
                                  "Total number of pending events to be sent.");
  pending.Add(10);
  pending.Add(-3.5);
  pending.Dec();
  EXPECT_DOUBLE_EQ(pending.Value(), 5.5);
  EXPECT_EQ(
      registry.Render(),
      "# HELP etcd_mvcc_pending_events_total Total number of pending events to be sent.\n"
      "# TYPE etcd_mvcc_pending_events_total gauge\n"
      "etcd_mvcc_pending_events_total 5.5\n"
      "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.\n"
      "# TYPE etcd_server_has_leader gauge\n"
      "etcd_server_has_leader 1\n");
}

TEST(MetricsTest, HistogramRendering) {
  Registry registry;
  Histogram& fsync = registry.histogram("etcd_disk_wal_fsync_duration_seconds",
                                        "The latency distributions of fsync called by WAL.",
                                        EtcdDiskDurationBuckets());
  fsync.Observe(0.0005);  // first bucket
  fsync.Observe(0.001);   // exactly on a bound: counts in that bucket (le)
  fsync.Observe(0.003);
  fsync.Observe(100);  // only in +Inf
  EXPECT_EQ(registry.Render(),
            "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called "
            "by WAL.\n"
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 2\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 2\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.008\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.016\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.032\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.064\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.128\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.256\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.512\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"1.024\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"2.048\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"4.096\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 3\n"
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 4\n"
            "etcd_disk_wal_fsync_duration_seconds_sum 100.0045\n"
            "etcd_disk_wal_fsync_duration_seconds_count 4\n");
}

TEST(MetricsTest, HistogramWithLabels) {
  Registry registry;
  Histogram& h = registry.histogram("request_seconds", "Latency.", {0.5, 1}, {{"op", "put"}});
  h.Observe(0.75);
  EXPECT_EQ(registry.Render(),
            "# HELP request_seconds Latency.\n"
            "# TYPE request_seconds histogram\n"
            "request_seconds_bucket{op=\"put\",le=\"0.5\"} 0\n"
            "request_seconds_bucket{op=\"put\",le=\"1\"} 1\n"
            "request_seconds_bucket{op=\"put\",le=\"+Inf\"} 1\n"
            "request_seconds_sum{op=\"put\"} 0.75\n"
            "request_seconds_count{op=\"put\"} 1\n");
  EXPECT_EQ(&h, &registry.histogram("request_seconds", "Latency.", {0.5, 1}, {{"op", "put"}}));
}

TEST(MetricsTest, EtcdDiskBucketsAreExponential) {
  EXPECT_EQ(EtcdDiskDurationBuckets(), ExponentialBuckets(0.001, 2, 14));
  EXPECT_EQ(LinearBuckets(1, 2, 3), (std::vector<double>{1, 3, 5}));
}

TEST(MetricsTest, GaugeFnEvaluatedAtRenderAndRemovable) {
  Registry registry;
  double db_size_bytes = 20480;
  registry.gauge_fn("etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                    [&] { return db_size_bytes; });
  const std::string header =
      "# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically "
      "allocated in bytes.\n"
      "# TYPE etcd_mvcc_db_total_size_in_bytes gauge\n";
  EXPECT_EQ(registry.Render(), header + "etcd_mvcc_db_total_size_in_bytes 20480\n");
  db_size_bytes = 2445312;
  EXPECT_EQ(registry.Render(), header + "etcd_mvcc_db_total_size_in_bytes 2.445312e+06\n");
  // Registering again replaces the function.
  registry.gauge_fn("etcd_mvcc_db_total_size_in_bytes", "x", [] { return 7.0; });
  EXPECT_EQ(registry.Render(), header + "etcd_mvcc_db_total_size_in_bytes 7\n");
  EXPECT_TRUE(registry.remove_gauge_fn("etcd_mvcc_db_total_size_in_bytes"));
  EXPECT_FALSE(registry.remove_gauge_fn("etcd_mvcc_db_total_size_in_bytes"));
  EXPECT_EQ(registry.Render(), "");
}

TEST(MetricsTest, EscapesHelpAndLabelValues) {
  Registry registry;
  registry.counter("c_total", "line1\nback\\slash \"quoted\"", {{"path", "a\"b\\c\nd"}}).Inc();
  EXPECT_EQ(registry.Render(),
            "# HELP c_total line1\\nback\\\\slash \"quoted\"\n"
            "# TYPE c_total counter\n"
            "c_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsTest, FamiliesSortedByName) {
  Registry registry;
  registry.counter("zeta_total", "z");
  registry.gauge("alpha", "a");
  registry.histogram("mid_seconds", "m", {1});
  const std::string text = registry.Render();
  const size_t alpha = text.find("# HELP alpha");
  const size_t mid = text.find("# HELP mid_seconds");
  const size_t zeta = text.find("# HELP zeta_total");
  ASSERT_NE(alpha, std::string::npos);
  ASSERT_NE(mid, std::string::npos);
  ASSERT_NE(zeta, std::string::npos);
  EXPECT_LT(alpha, mid);
  EXPECT_LT(mid, zeta);
}

TEST(MetricsTest, ConcurrentUpdatesAddUp) {
  Registry registry;
  Counter& counter = registry.counter("ops_total", "ops");
  Gauge& gauge = registry.gauge("inflight", "inflight");
  Histogram& histogram = registry.histogram("latency_seconds", "latency", {0.5});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Registering from several threads must hand out the same series.
      Counter& same = registry.counter("ops_total", "ops");
      for (int i = 0; i < kPerThread; ++i) {
        same.Inc();
        gauge.Add(1);
        histogram.Observe(t % 2 == 0 ? 0.25 : 1.0);
        if (i % 10000 == 0) (void)registry.Render();  // rendering races with updates
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(counter.Value(), kThreads * kPerThread);
  EXPECT_EQ(gauge.Value(), kThreads * kPerThread);
  const Histogram::Snapshot snapshot = histogram.Collect();
  EXPECT_EQ(snapshot.count, uint64_t{kThreads} * kPerThread);
  EXPECT_EQ(snapshot.cumulative_counts[0], uint64_t{kThreads / 2} * kPerThread);
  EXPECT_DOUBLE_EQ(snapshot.sum, (kThreads / 2) * kPerThread * (0.25 + 1.0));
}

TEST(MetricsDeathTest, MisuseAborts) {
  EXPECT_DEATH(
      {
        Registry registry;
        registry.counter("x_total", "x").Inc(-1);
      },
      "counter increment must not be negative");
  EXPECT_DEATH(
      {
        Registry registry;
        registry.counter("same", "x");
        registry.gauge("same", "x");
      },
      "registered as counter and as gauge");
  EXPECT_DEATH(
      {
        Registry registry;
        registry.counter("bad-name", "x");
      },
      "bad metric name");
  EXPECT_DEATH(
      {
        Registry registry;
        registry.histogram("h", "x", {2, 1});
      },
      "histogram bounds must increase");
  EXPECT_DEATH(
      {
        Registry registry;
        registry.histogram("h", "x", {1}, {{"le", "1"}});
      },
      "'le' is reserved");
}

}  // namespace
}  // namespace meridian::metrics
