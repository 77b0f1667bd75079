// End-to-end harness: spawns a storage server (Debian's etcd or meridian-node) on 127.0.0.1 and
// drives it with the real `etcdctl` binary. Every child process lives in its own process group,
// is killed by RAII owners, and additionally gets PR_SET_PDEATHSIG(SIGKILL) so that even a
// crashing test binary never leaves servers behind.
#ifndef MERIDIAN_TESTS_E2E_HARNESS_H_
#define MERIDIAN_TESTS_E2E_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace meridian::e2e {

enum class ServerKind { kEtcd, kMeridian };

// MERIDIAN_E2E_SERVER=etcd|meridian; anything else (or unset) means meridian.
ServerKind ServerKindFromEnv();
// True when MERIDIAN_E2E_SERVER is set to a non-empty value.
bool ServerKindExplicitlySet();
const char* ServerKindName(ServerKind kind);
// Absolute path of the server binary: MERIDIAN_NODE_BIN for meridian, `etcd` looked up on PATH.
std::string ServerBinary(ServerKind kind);
// An optional gRPC proxy between the tests and the server: MERIDIAN_E2E_PROXY=meridian runs
// meridian-proxy, =etcd runs `etcd grpc-proxy start`, unset or empty runs none. Any other value
// is a fatal error (a typo must not silently test without a proxy).
enum class ProxyKind { kNone, kMeridian, kEtcd };
ProxyKind ProxyKindFromEnv();
const char* ProxyKindName(ProxyKind kind);
// meridian: MERIDIAN_PROXY_BIN from the environment, else the compile-time MERIDIAN_PROXY_BIN
// (${CMAKE_BINARY_DIR}/bin/meridian-proxy); etcd: `etcd` on PATH; none: "".
std::string ProxyBinary(ProxyKind kind);
// Path of etcdctl (MERIDIAN_E2E_ETCDCTL overrides /usr/bin/etcdctl).
std::string EtcdctlBinary();
bool IsExecutable(const std::string& path);

// Asks the kernel for a currently free TCP port on 127.0.0.1 (bind to port 0, read it back,
// close). Another process may grab it before we use it; callers retry on collision.
[[nodiscard]] absl::StatusOr<uint16_t> PickFreePort();

// A directory under $TMPDIR (or /tmp) removed recursively on destruction, unless
// MERIDIAN_E2E_KEEP_TMP=1 is set (for post-mortem debugging).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or on timeout
  std::string stdout_text;
  std::string stderr_text;
  bool timed_out = false;
  // Lines of stderr starting with "Error: " (etcdctl's final error report), joined by '\n'.
  std::string ErrorLines() const;
};

// Runs argv[0] (an absolute path, no shell) with stdin fed from `stdin_text`, capturing stdout and
// stderr (each truncated to kMaxCapturedOutputBytes). The child is SIGKILLed (whole process
// group) if it runs longer than timeout_ms.
inline constexpr size_t kMaxCapturedOutputBytes = 64u << 20;
[[nodiscard]] CommandResult RunCommand(const std::vector<std::string>& argv,
                                       const std::string& stdin_text, int timeout_ms);

// Runs etcdctl against `endpoint` ("127.0.0.1:port") with ETCDCTL_API=3.
[[nodiscard]] CommandResult Etcdctl(const std::string& endpoint,
                                    const std::vector<std::string>& args,
                                    const std::string& stdin_text = "", int timeout_ms = 20000);

// A long-running child (e.g. `etcdctl watch`) whose stdout/stderr go to files that can be
// polled while it runs (anonymous memfds, so nothing to clean up). The destructor kills the
// process group.
class BackgroundProcess {
 public:
  BackgroundProcess() = default;
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  [[nodiscard]] absl::Status Start(const std::vector<std::string>& argv);
  std::string Stdout() const;
  std::string Stderr() const;
  // Polls stdout until `done(stdout)` is true; false on timeout or if the process exited first
  // without satisfying it.
  bool WaitForStdout(const std::function<bool(const std::string&)>& done, int timeout_ms) const;
  // True if the process exited (reaps it); exit code in *exit_code (-1 for signals).
  bool Exited(int* exit_code);
  bool WaitExit(int timeout_ms, int* exit_code);
  void Kill();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  bool reaped_ = false;
  // memfds the child writes to; read with pread while it runs.
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
};

// Starts `etcdctl watch` in the background against `endpoint`.
[[nodiscard]] absl::Status StartEtcdctlWatch(const std::string& endpoint,
                                             const std::vector<std::string>& args,
                                             BackgroundProcess* process);

struct ServerOptions {
  ServerKind kind = ServerKind::kMeridian;
  std::string name = "e2e-node";
  std::vector<std::string> extra_flags;
  int start_timeout_ms = 15000;
  int stop_grace_ms = 5000;
  // A proxy in front of the server (none by default; ServerSuite in test_util.h takes it from
  // MERIDIAN_E2E_PROXY). proxy_extra_flags are appended to the proxy's command line.
  ProxyKind proxy = ProxyKind::kNone;
  std::vector<std::string> proxy_extra_flags;
  // How long the proxy may take to pass `etcdctl endpoint health`, at start-up and again after
  // the server behind it was restarted.
  int proxy_ready_timeout_ms = 15000;
};

// One single-member server on 127.0.0.1 with its data dir, ports and log inside a fresh temp dir,
// optionally behind a proxy (options.proxy) that has its own port and log in the same temp dir.
// With a proxy, endpoint() (and so Ctl()) is the proxy's address and server_endpoint() the
// server's own; Kill/Stop/Restart act on the server only and leave the proxy running, as a real
// proxy must survive its member restarting.
class ServerProcess {
 public:
  explicit ServerProcess(ServerOptions options);
  ~ServerProcess();  // always SIGKILLs the process groups of the server and of the proxy
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Picks ports, spawns and waits until `etcdctl endpoint health` succeeds. Retries with new
  // ports (up to 3 attempts) when the server dies at start-up, e.g. because a port was stolen.
  // With a proxy, then starts it the same way (own free ports, 3 attempts) pointed at the server
  // and waits until `etcdctl endpoint health` through it succeeds.
  [[nodiscard]] absl::Status Start();
  // SIGKILL, then reap (the server only).
  void Kill();
  // SIGTERM, then SIGKILL after options.stop_grace_ms (the server only).
  [[nodiscard]] absl::Status Stop();
  // Stop() then start again on the same data dir and ports. With a proxy, also waits (up to
  // options.proxy_ready_timeout_ms) until `etcdctl endpoint health` through the proxy succeeds
  // again; fails if the proxy exited.
  [[nodiscard]] absl::Status Restart();
  bool Running();

  // What clients should dial: the proxy's "127.0.0.1:<port>" with a proxy, else the server's.
  std::string endpoint() const;
  // The server's own "127.0.0.1:<client port>", with or without a proxy.
  std::string server_endpoint() const;
  uint16_t client_port() const { return client_port_; }
  uint16_t peer_port() const { return peer_port_; }
  uint16_t metrics_port() const { return metrics_port_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& dir() const { return temp_.path(); }
  const std::string& log_path() const { return log_path_; }
  const ServerOptions& options() const { return options_; }
  // The last `max_bytes` of the server log; with a proxy, followed by the proxy's log tail.
  std::string LogTail(size_t max_bytes = 64 * 1024) const;

  // ---- The proxy (options.proxy != kNone) ----
  bool has_proxy() const { return options_.proxy != ProxyKind::kNone; }
  uint16_t proxy_port() const { return proxy_port_; }
  uint16_t proxy_metrics_port() const { return proxy_metrics_port_; }
  const std::string& proxy_log_path() const { return proxy_log_path_; }
  // The last `max_bytes` of the proxy log ("" without a proxy).
  std::string ProxyLogTail(size_t max_bytes = 64 * 1024) const;
  bool ProxyRunning();
  // SIGKILLs the proxy's process group (the server keeps running).
  void KillProxy();

  [[nodiscard]] CommandResult Ctl(const std::vector<std::string>& args,
                                  const std::string& stdin_text = "",
                                  int timeout_ms = 20000) const {
    return Etcdctl(endpoint(), args, stdin_text, timeout_ms);
  }

 private:
  [[nodiscard]] absl::Status StartServer();
  [[nodiscard]] absl::Status SpawnAndWait();
  std::vector<std::string> BuildArgv() const;
  [[nodiscard]] absl::Status StartProxy();
  [[nodiscard]] absl::Status SpawnProxyAndWait();
  std::vector<std::string> BuildProxyArgv() const;
  // Polls `etcdctl endpoint health` through the proxy until it succeeds.
  [[nodiscard]] absl::Status WaitProxyHealthy(int timeout_ms, bool kill_on_timeout);

  ServerOptions options_;
  TempDir temp_;
  std::string data_dir_;
  std::string log_path_;
  uint16_t client_port_ = 0;
  uint16_t peer_port_ = 0;
  uint16_t metrics_port_ = 0;
  pid_t pid_ = -1;
  std::string proxy_log_path_;
  std::string proxy_data_dir_;  // etcd grpc-proxy's --data-dir (it defaults to ./default.proxy)
  uint16_t proxy_port_ = 0;
  uint16_t proxy_metrics_port_ = 0;
  pid_t proxy_pid_ = -1;
};

// ---- Process primitives behind ServerProcess, also used by Cluster (cluster.h) ----

// Spawns argv (argv[0] an absolute path, no shell) like every harness child: own process group,
// PR_SET_PDEATHSIG=SIGKILL, stdin from /dev/null, stdout and stderr appended to `log_path` after
// a "==== e2e harness: starting <argv>" banner line.
[[nodiscard]] absl::StatusOr<pid_t> SpawnWithLog(const std::vector<std::string>& argv,
                                                 const std::string& log_path);
// Non-blocking: true if the child `pid` exited (or is not our child). Before reaping, its whole
// process group is SIGKILLed so that nothing it spawned survives it. *exit_code is -1 when it
// was killed by a signal.
bool TryReap(pid_t pid, int* exit_code);
// Polls TryReap for up to timeout_ms; false if the child is still running.
bool WaitForExit(pid_t pid, int timeout_ms, int* exit_code);
// SIGKILLs the process group of `pid` and reaps it (aborts if it survives 10 s).
void KillGroupAndReap(pid_t pid);
// The last `max_bytes` of a file (a "<cannot open ...>" note if it cannot be read).
std::string ReadFileTail(const std::string& path, size_t max_bytes);
// First executable `name` in $PATH; `name` itself if none.
std::string FindOnPath(const std::string& name);

// Polls `condition` every poll_ms until it is true or timeout_ms elapsed.
bool WaitUntil(const std::function<bool()>& condition, int timeout_ms, int poll_ms = 50);

std::vector<std::string> SplitLines(const std::string& text);

// A meridian-proxy started by a test itself (in front of a Cluster, or with TLS), on a free
// port, killed with its process group when the test ends.
class OwnProxy {
 public:
  // `flags` come after --listen-addr; the log goes to dir()/proxy.log.
  [[nodiscard]] absl::Status Start(std::vector<std::string> flags) {
    auto port = PickFreePort();
    if (!port.ok()) return port.status();
    endpoint_ = absl::StrCat("127.0.0.1:", *port);
    std::vector<std::string> argv = {ProxyBinary(ProxyKind::kMeridian),
                                     "--listen-addr=" + endpoint_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto pid = SpawnWithLog(argv, log_path());
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    return absl::OkStatus();
  }
  ~OwnProxy() {
    if (pid_ > 0) KillGroupAndReap(pid_);
  }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& dir() const { return dir_.path(); }
  std::string log_path() const { return dir_.path() + "/proxy.log"; }
  std::string LogTail(size_t max_bytes = 8192) const { return ReadFileTail(log_path(), max_bytes); }
  // Waits until `etcdctl endpoint health` through the (plain-text) proxy succeeds.
  bool WaitHealthy() const {
    return WaitUntil([&] { return Etcdctl(endpoint_, {"endpoint", "health"}).exit_code == 0; },
                     15000);
  }

 private:
  TempDir dir_;
  std::string endpoint_;
  pid_t pid_ = -1;
};

}  // namespace meridian::e2e

#endif  // MERIDIAN_TESTS_E2E_HARNESS_H_
