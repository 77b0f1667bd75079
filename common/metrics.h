// Prometheus metrics: counters, gauges, histograms and callback gauges in a registry that renders
// the text exposition format 0.0.4 (what etcd's /metrics serves).
//
//   metrics::Registry registry;
//   metrics::Counter& failed = registry.counter("etcd_server_proposals_failed_total",
//                                               "The total number of failed proposals seen.");
//   failed.Inc();
//   metrics::Histogram& fsync = registry.histogram(
//       "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by
//       WAL.", metrics::EtcdDiskDurationBuckets());
//   fsync.Observe(0.0042);
//   registry.gauge_fn("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database "
//                     "physically allocated in bytes.", [&] { return double(backend.size()); });
//
// Updating a metric is lock-free (relaxed atomics): keep the reference returned at registration
// and use it on hot paths. Registration takes a mutex and is meant for start-up.
#ifndef MERIDIAN_COMMON_METRICS_H_
#define MERIDIAN_COMMON_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace meridian::metrics {

// Content-Type of Render()'s output, for the /metrics handler.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Label name/value pairs fixed at registration. Order does not matter: pairs are sorted by name,
// so {{"a","1"},{"b","2"}} and {{"b","2"},{"a","1"}} name the same metric.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // `amount` must be >= 0 (a counter never goes down); aborts otherwise.
  void Inc(double amount = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Sub(double delta) { Add(-delta); }
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `upper_bounds` must be finite and strictly increasing; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);

  // Counts `value` in the first bucket whose upper bound is >= value (Prometheus' "le").
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;  // one per upper bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Collect() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  std::vector<double> upper_bounds_;
  // Per-bucket (not cumulative) counts, so Observe touches one bucket; the last one is +Inf.
  std::unique_ptr<std::atomic<uint64_t>[]> bucket_counts_;
  std::atomic<double> sum_{0};
};

// prometheus.ExponentialBuckets(start, factor, count): start, start*factor, ... (count values).
// Aborts unless start > 0, factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// prometheus.LinearBuckets(start, width, count). Aborts unless width > 0, count >= 1.
std::vector<double> LinearBuckets(double start, double width, int count);

// etcd's buckets for etcd_disk_wal_fsync_duration_seconds and
// etcd_disk_backend_commit_duration_seconds: ExponentialBuckets(0.001, 2, 14), 1ms .. 8.192s.
inline constexpr std::array<double, 14> kEtcdDiskDurationBuckets = {
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
    0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192};
inline std::vector<double> EtcdDiskDurationBuckets() {
  return {kEtcdDiskDurationBuckets.begin(), kEtcdDiskDurationBuckets.end()};
}

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  ~Registry();

  // Each returns the metric registered under (name, labels), creating it on first use; the
  // reference stays valid for the registry's lifetime. `help` is taken from the first
  // registration of a family. Aborts on an invalid metric or label name, on a name already
  // registered with another type, and (histograms) on different bounds for the same metric.
  Counter& counter(std::string name, std::string help, Labels labels = {});
  Gauge& gauge(std::string name, std::string help, Labels labels = {});
  Histogram& histogram(std::string name, std::string help, std::vector<double> upper_bounds,
                       Labels labels = {});

  // A gauge whose value is `fn()` at render time (db size, key count, watcher count). Registering
  // (name, labels) again replaces the function. `fn` runs on the rendering thread while no
  // registration lock is held (so it may take locks of its own under which the caller registers
  // counters), but it must be quick and must not call back into this registry. Do not call
  // gauge_fn() while holding a lock that some registered `fn` takes.
  void gauge_fn(std::string name, std::string help, std::function<double()> fn, Labels labels = {});
  // Unregisters a gauge_fn. When it returns, `fn` is not running and will not run again, so the
  // objects it captured may be destroyed; do not call it while holding a lock that `fn` takes.
  // Returns false if no such gauge_fn was registered.
  bool remove_gauge_fn(std::string_view name, Labels labels = {});

  // The text exposition format: "# HELP" and "# TYPE" once per family, families sorted by name,
  // each family's series sorted by labels.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    explicit Series(bool is_fn) : is_fn(is_fn) {}
    const bool is_fn;  // a gauge_fn rather than a gauge holding its own value
    Counter counter;
    Gauge gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> fn;  // written only under render_mu_
  };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, std::unique_ptr<Series>> series;
  };

  static const char* TypeName(Type type);
  Series& GetOrCreate(std::string name, std::string help, Labels labels, Type type,
                      const std::vector<double>* upper_bounds, bool is_fn);

  // Held by Render() across calls to gauge functions and by remove_gauge_fn(), so that a removed
  // function is never running once removal returns. Always taken before mu_.
  mutable std::mutex render_mu_;
  // Guards families_ (the maps, not the metric values, which are atomics).
  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
};

// A process-wide registry for code that has no registry handed to it. Servers under test should
// get their own Registry instead, so that tests do not see each other's metrics.
Registry& DefaultRegistry();

// Formats a sample value the way Prometheus' Go client does (strconv 'g', shortest round trip):
// 1, 0.5, 1e+06, 1.5e-05, +Inf, -Inf, NaN.
std::string FormatValue(double value);

}  // namespace meridian::metrics

#endif  // MERIDIAN_COMMON_METRICS_H_
