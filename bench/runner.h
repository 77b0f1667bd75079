// meridian-bench's engine: asynchronous gRPC clients (CompletionQueue API) over --conns channels.
//
// Each client keeps one request in flight. Without --rate it sends the next request as soon as
// the previous one completes (closed loop); with --rate it sends request k at its scheduled time
// start + k/rate (spread over the clients) and measures latency from that scheduled time, so a
// slow server cannot hide queueing delay (no coordinated omission). Every client lives on one
// completion-queue thread and records into that thread's histogram and counters, so the hot path
// takes no locks; the main thread merges them at the end.
#ifndef MERIDIAN_BENCH_RUNNER_H_
#define MERIDIAN_BENCH_RUNNER_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "bench/histogram.h"
#include "bench/options.h"
#include "bench/watch_counter.h"

namespace meridian::bench {

struct BenchResult {
  BenchOptions options;   // as run: threads and mode defaults resolved
  double elapsed_s = 0;   // the measured phase
  uint64_t requests = 0;  // completed without error (watch modes: puts)
  uint64_t errors = 0;
  // Throughput: requests/s; in watch and watch-latency, delivered events/s.
  double qps = 0;
  // Request latency; in watch and watch-latency, put-to-delivery latency of each event.
  LatencySummary latency;
  std::map<std::string, uint64_t> errors_by_code;  // gRPC code name (or bench error kind) -> n
  std::string first_error;

  // Watch modes.
  bool has_watch = false;
  WatchEventCounts watch;
  double events_per_s = 0;
  double put_qps = 0;
  LatencySummary put_latency;
  double watch_setup_s = 0;  // from the first create request until every watcher was created
  uint32_t watchers_created = 0;

  // k8s: requests by operation, and compare failures (another writer got there first).
  std::map<std::string, uint64_t> ops;
  uint64_t conflicts = 0;

  uint64_t prefilled_keys = 0;
  double prefill_s = 0;

  // --rss-pid: the server's memory, -1 when unknown.
  int64_t server_rss_before_kb = -1;
  int64_t server_rss_after_kb = -1;
  int64_t server_hwm_after_kb = -1;
};

// Connects, runs the workload and collects the figures. Errors of individual requests are counted
// in the result; a non-OK status means the run could not happen (cannot connect, bad options).
[[nodiscard]] absl::StatusOr<BenchResult> RunBench(const BenchOptions& options);

// One line of JSON (no trailing newline) with every figure.
std::string ResultJson(const BenchResult& result);
// A few human-readable lines.
std::string ResultText(const BenchResult& result);

// /proc/<pid>/status field in kB ("VmRSS", "VmHWM"); -1 if unreadable.
int64_t ReadProcStatusKb(int pid, const char* field);

}  // namespace meridian::bench

#endif  // MERIDIAN_BENCH_RUNNER_H_
