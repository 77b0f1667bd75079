#include "common/process.h"

#include <signal.h>

#include "absl/synchronization/mutex.h"

namespace meridian {
namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void PrepareServerProcess() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

int WaitForStopSignal(int timeout_ms) {
  sigset_t set = StopSignals();
  if (timeout_ms < 0) {
    int sig = 0;
    sigwait(&set, &sig);
    return sig;
  }
  timespec wait{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000 * 1000};
  const int sig = sigtimedwait(&set, nullptr, &wait);
  return sig == SIGINT || sig == SIGTERM ? sig : 0;
}

}  // namespace meridian
