// The simulator's only source of randomness: one seeded stream per run, so a seed replays the
// exact same schedule.
#pragma once

#include <cstdint>

namespace meridian::raft::sim {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n) { return Next() % n; }
  // True with probability per_mille/1000.
  bool Chance(uint32_t per_mille) { return Uniform(1000) < per_mille; }

 private:
  uint64_t state_;
};

}  // namespace meridian::raft::sim
