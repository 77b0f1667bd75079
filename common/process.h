// Process set-up shared by the meridian-node and meridian-proxy mains.
#ifndef MERIDIAN_COMMON_PROCESS_H_
#define MERIDIAN_COMMON_PROCESS_H_

namespace meridian {

// Call first thing in main, before any thread starts: blocks SIGINT and SIGTERM (threads started
// later inherit the mask, so only WaitForStopSignal takes them), ignores SIGPIPE (a peer closing a
// socket is an error return, not a death), and turns off abseil's mutex deadlock detection
// (Debian's abseil keeps it on, and gRPC's mutexes then pay for a lock graph on every
// acquisition; our own locks are std::mutex and are checked by TSan in the tests).
void PrepareServerProcess();
// Blocks until SIGINT or SIGTERM arrives and returns it; with timeout_ms >= 0, returns 0 when none
// arrived within that long.
int WaitForStopSignal(int timeout_ms = -1);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_PROCESS_H_
