#include "node/raft/sim/network.h"

namespace meridian::raft::sim {

int Network::Send(const Message& m, uint64_t now_tick) {
  if (rng_->Chance(faults_.drop_per_mille)) return 0;
  int copies = rng_->Chance(faults_.duplicate_per_mille) ? 2 : 1;
  int queued = 0;
  for (int i = 0; i < copies; ++i) {
    if (in_flight_.size() >= kMaxInFlight) break;
    uint64_t delay = faults_.max_delay_ticks == 0 ? 0 : rng_->Uniform(faults_.max_delay_ticks + 1);
    in_flight_.push_back(InFlight{now_tick + delay, m});
    ++queued;
  }
  return queued;
}

bool Network::HasDue(uint64_t now_tick) const {
  for (const InFlight& f : in_flight_) {
    if (f.deliver_at_tick <= now_tick) return true;
  }
  return false;
}

std::optional<Message> Network::PopDue(uint64_t now_tick) {
  size_t due = 0;
  for (const InFlight& f : in_flight_) {
    if (f.deliver_at_tick <= now_tick) ++due;
  }
  if (due == 0) return std::nullopt;
  size_t pick = rng_->Uniform(due);
  for (size_t i = 0; i < in_flight_.size(); ++i) {
    if (in_flight_[i].deliver_at_tick > now_tick) continue;
    if (pick-- != 0) continue;
    Message m = std::move(in_flight_[i].msg);
    in_flight_[i] = std::move(in_flight_.back());
    in_flight_.pop_back();
    return m;
  }
  return std::nullopt;
}

bool Network::Connected(uint64_t a, uint64_t b) const { return cut_.count({a, b}) == 0; }

void Network::Cut(uint64_t a, uint64_t b) {
  cut_.insert({a, b});
  cut_.insert({b, a});
}

}  // namespace meridian::raft::sim
