// Command line of meridian-bench (see bench/README.md for the modes).
#ifndef MERIDIAN_BENCH_OPTIONS_H_
#define MERIDIAN_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace meridian::bench {

enum class Mode {
  kPut,
  kRange,
  kTxnPut,
  kDelete,
  kWatch,
  kWatchLatency,
  kLeaseKeepalive,
  kK8s,
  kIdleWatchers,
};

std::string_view ModeName(Mode mode);

// Upper bound of --puts in the watch modes.
inline constexpr uint64_t kMaxPuts = 1'000'000'000;

// Percent weights of the k8s mix; they sum to 100.
struct K8sMix {
  int create = 10;
  int update = 50;
  int remove = 10;
  int get = 25;
  int list = 5;
};

struct BenchOptions {
  Mode mode = Mode::kPut;
  std::vector<std::string> endpoints = {"127.0.0.1:2379"};  // host:port, scheme stripped
  int conns = 1;
  int clients = 1;
  int threads = 0;     // completion-queue threads; 0: min(cores, conns-ish) chosen at run
  uint64_t total = 0;  // requests; 0 with duration_s > 0 means "until the duration ends"
  double duration_s = 0;
  int key_size_bytes = 8;
  int val_size_bytes = 8;
  uint64_t key_space = 1;
  bool sequential_keys = false;
  bool key_pad_right = false;  // number first, then padding (see KeyFormatter)
  double rate_per_s = 0;       // 0: closed loop
  bool rate_catch_up = true;   // see Pacing::catch_up in runner.cc
  std::string key_prefix;
  bool serializable = false;  // --consistency s
  int txn_ops = 1;
  int timeout_ms = 10000;
  uint64_t seed = 1;
  // Watch modes.
  int watchers = 1;
  int streams = 1;
  uint64_t puts = 100;
  int drain_ms = 3000;
  int hold_ms = 1000;  // idle-watchers: how long the watchers stay up once created
  // k8s mode.
  K8sMix k8s_mix;
  int page_size = 100;
  // Reports /proc/<pid>/status VmRSS/VmHWM of this process (the server) before and after.
  int rss_pid = 0;
  int progress = -1;   // -1: when stderr is a tty
  bool quiet = false;  // no human-readable summary on stderr
};

// Parses argv (mode first: `meridian-bench put --clients 10 ...`). --help text goes to stdout and
// yields a NotFound status with message "help" so main can exit 0.
[[nodiscard]] absl::StatusOr<BenchOptions> ParseOptions(int argc, const char* const* argv);

// Checks ranges and mode-specific requirements and fills mode-dependent defaults.
[[nodiscard]] absl::Status ValidateOptions(BenchOptions* options);

}  // namespace meridian::bench

#endif  // MERIDIAN_BENCH_OPTIONS_H_
