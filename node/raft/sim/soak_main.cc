// Long randomized soak of the raft simulator (not a test):
//   raft_sim_soak [--seeds N] [--seconds S] [--first-seed K] [--steps M]
// Runs seeds K, K+1, ... until N seeds ran or S seconds passed (default: 1000 seeds, no time
// bound), printing progress; stops at the first failure and prints how to replay it.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "node/raft/sim/cluster.h"

namespace {

bool ParseFlag(int argc, char** argv, int* i, const char* name, uint64_t* out) {
  if (std::strcmp(argv[*i], name) != 0) return false;
  if (*i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", name);
    std::exit(2);
  }
  *out = std::strtoull(argv[++*i], nullptr, 10);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seeds = 1000;
  uint64_t seconds = 0;
  uint64_t first = 1;
  uint64_t steps = 4000;
  bool seeds_given = false;
  for (int i = 1; i < argc; ++i) {
    if (ParseFlag(argc, argv, &i, "--seeds", &seeds)) {
      seeds_given = true;
    } else if (ParseFlag(argc, argv, &i, "--seconds", &seconds) ||
               ParseFlag(argc, argv, &i, "--first-seed", &first) ||
               ParseFlag(argc, argv, &i, "--steps", &steps)) {
    } else {
      std::fprintf(stderr, "usage: %s [--seeds N] [--seconds S] [--first-seed K] [--steps M]\n",
                   argv[0]);
      return 2;
    }
  }
  if (seconds > 0 && !seeds_given) seeds = UINT64_MAX;  // time-bound only
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double last_report = 0;
  uint64_t ran = 0;
  for (uint64_t seed = first; ran < seeds; ++seed, ++ran) {
    if (seconds > 0 && elapsed() >= static_cast<double>(seconds)) break;
    meridian::raft::sim::SimOptions opts;
    opts.seed = seed;
    opts.steps = steps;
    opts.trace_lines = 0;
    meridian::raft::sim::SimResult r = meridian::raft::sim::RunSimulation(opts);
    if (!r.ok) {
      opts.trace_lines = 200;
      r = meridian::raft::sim::RunSimulation(opts);
      std::printf("FAILED after %llu seeds (%.1fs):\n%s\n", static_cast<unsigned long long>(ran),
                  elapsed(), r.failure.c_str());
      return 1;
    }
    if (elapsed() - last_report >= 10) {
      last_report = elapsed();
      std::printf("%llu seeds passed (last %llu) in %.0fs\n",
                  static_cast<unsigned long long>(ran + 1), static_cast<unsigned long long>(seed),
                  last_report);
      std::fflush(stdout);
    }
  }
  std::printf("%llu seeds passed (%llu..%llu) in %.1fs\n", static_cast<unsigned long long>(ran),
              static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(first + ran - 1), elapsed());
  return 0;
}
