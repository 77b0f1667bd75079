// meridian-bench: load generator for etcd v3 compatible servers. See bench/README.md.
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "bench/options.h"
#include "bench/runner.h"

int main(int argc, char** argv) {
  // gRPC's mutexes are absl's; tracking their lock order (on in Debian's build) costs the load
  // generator several percent of its CPU, which the servers it measures would otherwise get.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  using meridian::bench::BenchOptions;
  absl::StatusOr<BenchOptions> options = meridian::bench::ParseOptions(argc, argv);
  if (!options.ok()) {
    if (absl::IsNotFound(options.status()) && options.status().message() == "help") return 0;
    std::fprintf(stderr, "meridian-bench: %s\n(--help lists the flags)\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  if (absl::Status s = meridian::bench::ValidateOptions(&*options); !s.ok()) {
    std::fprintf(stderr, "meridian-bench: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<meridian::bench::BenchResult> result = meridian::bench::RunBench(*options);
  if (!result.ok()) {
    std::fprintf(stderr, "meridian-bench: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (!options->quiet) std::fputs(meridian::bench::ResultText(*result).c_str(), stderr);
  std::printf("%s\n", meridian::bench::ResultJson(*result).c_str());
  return 0;
}
