#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

extern char** environ;

#ifndef MERIDIAN_NODE_BIN
#define MERIDIAN_NODE_BIN "meridian-node"
#endif
#ifndef MERIDIAN_PROXY_BIN
#define MERIDIAN_PROXY_BIN "meridian-proxy"
#endif

namespace meridian::e2e {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "e2e harness: fatal: %s\n", message.c_str());
  std::abort();
}

int64_t ElapsedMs(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// The child environment: ours, minus anything that would reconfigure etcd/etcdctl behind the
// test's back (ETCD_* is read by etcd as flags, ETCDCTL_* by etcdctl), plus ETCDCTL_API=3.
std::vector<std::string> ChildEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    if (absl::StartsWith(entry, "ETCD_") || absl::StartsWith(entry, "ETCDCTL_")) continue;
    env.emplace_back(entry);
  }
  env.emplace_back("ETCDCTL_API=3");
  return env;
}

// `etcdctl endpoint health` against one endpoint, with short timeouts for polling.
CommandResult HealthCheck(const std::string& endpoint) {
  return RunCommand({EtcdctlBinary(), absl::StrCat("--endpoints=", endpoint), "--dial-timeout=1s",
                     "--command-timeout=2s", "endpoint", "health"},
                    "", 5000);
}

int MakeMemfd(const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) Die(absl::StrCat("memfd_create failed: ", std::strerror(errno)));
  return fd;
}

// Reads up to kMaxCapturedOutputBytes from the start of `fd` without moving its offset.
std::string ReadWholeFd(int fd) {
  std::string out;
  if (fd < 0) return out;
  char buffer[64 * 1024];
  off_t offset = 0;
  while (out.size() < kMaxCapturedOutputBytes) {
    size_t want = std::min(sizeof(buffer), kMaxCapturedOutputBytes - out.size());
    ssize_t n = pread(fd, buffer, want, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
  return out;
}

// fork+exec with stdio redirected to the given fds. The child gets its own process group (so a
// timeout can kill everything it spawned) and PR_SET_PDEATHSIG=SIGKILL (so it dies with us even
// if we crash). Only async-signal-safe calls happen between fork and exec; everything is prepared
// beforehand. PDEATHSIG is tied to the forking *thread*: harness users spawn from the test thread,
// which lives as long as the test.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd,
                            int stderr_fd) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  if (!IsExecutable(argv[0])) {
    return absl::NotFoundError(absl::StrCat("not an executable file: ", argv[0]));
  }
  std::vector<std::string> env = ChildEnvironment();
  std::vector<char*> argv_ptrs;
  for (const std::string& a : argv) argv_ptrs.push_back(const_cast<char*>(a.c_str()));
  argv_ptrs.push_back(nullptr);
  std::vector<char*> env_ptrs;
  for (const std::string& e : env) env_ptrs.push_back(const_cast<char*>(e.c_str()));
  env_ptrs.push_back(nullptr);

  // exec failures (e.g. E2BIG for huge arguments) are reported through a close-on-exec pipe:
  // zero bytes read means exec succeeded.
  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(exec_pipe[0]);
    close(exec_pipe[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    close(exec_pipe[0]);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // parent already gone before prctl took effect
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, nullptr);
    sigaction(SIGTERM, &dfl, nullptr);
    sigaction(SIGINT, &dfl, nullptr);
    if (dup2(stdin_fd, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0) _exit(126);
    execve(argv_ptrs[0], argv_ptrs.data(), env_ptrs.data());
    int exec_errno = errno;
    (void)!write(exec_pipe[1], &exec_errno, sizeof(exec_errno));
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so the group exists before we might signal it
  close(exec_pipe[1]);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n > 0) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return absl::InternalError(absl::StrCat("execve ", argv[0], ": ", std::strerror(exec_errno)));
  }
  return pid;
}

}  // namespace

std::string ReadFileTail(const std::string& path, size_t max_bytes) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::StrCat("<cannot open ", path, ": ", std::strerror(errno), ">");
  struct stat st {};
  std::string out;
  if (fstat(fd, &st) == 0) {
    off_t size = st.st_size;
    off_t start = size > static_cast<off_t>(max_bytes) ? size - static_cast<off_t>(max_bytes) : 0;
    out.resize(static_cast<size_t>(size - start));
    size_t got = 0;
    while (got < out.size()) {
      ssize_t n = pread(fd, out.data() + got, out.size() - got, start + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    if (start > 0) out = absl::StrCat("<... ", start, " earlier bytes omitted ...>\n", out);
  }
  close(fd);
  return out;
}

// Non-blocking check whether `pid` exited. If it did, the whole process group is SIGKILLed
// *before* reaping (the zombie leader keeps the group id reserved), then the child is reaped.
bool TryReap(pid_t pid, int* exit_code) {
  siginfo_t info{};
  int rc;
  do {
    rc = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    // Not our child any more (already reaped elsewhere); treat as exited.
    *exit_code = -1;
    return true;
  }
  if (info.si_pid == 0) return false;
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return true;
}

// Waits up to timeout_ms for `pid` to exit; returns false if it is still running.
bool WaitForExit(pid_t pid, int timeout_ms, int* exit_code) {
  const auto start = Clock::now();
  int sleep_ms = 1;
  while (true) {
    if (TryReap(pid, exit_code)) return true;
    if (ElapsedMs(start) >= timeout_ms) return false;
    SleepMs(sleep_ms);
    sleep_ms = std::min(sleep_ms * 2, 20);
  }
}

void KillGroupAndReap(pid_t pid) {
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  int exit_code = 0;
  if (!WaitForExit(pid, 10000, &exit_code)) {
    Die(absl::StrCat("process ", pid, " survived SIGKILL for 10 s"));
  }
}

absl::StatusOr<pid_t> SpawnWithLog(const std::vector<std::string>& argv,
                                   const std::string& log_path) {
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", log_path, ": ", std::strerror(errno)));
  }
  std::string banner = absl::StrCat("==== e2e harness: starting ", absl::StrJoin(argv, " "), "\n");
  (void)!write(log_fd, banner.data(), banner.size());
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("open /dev/null: ", std::strerror(errno)));
  }
  absl::StatusOr<pid_t> pid = Spawn(argv, null_fd, log_fd, log_fd);
  close(null_fd);
  close(log_fd);
  return pid;
}

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string path_value = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(path_value, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (IsExecutable(candidate)) return candidate;
  }
  return name;
}

ServerKind ServerKindFromEnv() {
  const char* value = std::getenv("MERIDIAN_E2E_SERVER");
  if (value != nullptr && std::string_view(value) == "etcd") return ServerKind::kEtcd;
  return ServerKind::kMeridian;
}

bool ServerKindExplicitlySet() {
  const char* value = std::getenv("MERIDIAN_E2E_SERVER");
  return value != nullptr && value[0] != '\0';
}

const char* ServerKindName(ServerKind kind) {
  return kind == ServerKind::kEtcd ? "etcd" : "meridian-node";
}

std::string ServerBinary(ServerKind kind) {
  if (kind == ServerKind::kMeridian) {
    // MERIDIAN_E2E_NODE_BIN runs the suites against another build (e.g. a sanitizer build).
    const char* value = std::getenv("MERIDIAN_E2E_NODE_BIN");
    if (value != nullptr && value[0] != '\0') return value;
    return MERIDIAN_NODE_BIN;
  }
  return FindOnPath("etcd");
}

ProxyKind ProxyKindFromEnv() {
  const char* value = std::getenv("MERIDIAN_E2E_PROXY");
  if (value == nullptr || value[0] == '\0') return ProxyKind::kNone;
  if (std::string_view(value) == "meridian") return ProxyKind::kMeridian;
  if (std::string_view(value) == "etcd") return ProxyKind::kEtcd;
  Die(absl::StrCat("MERIDIAN_E2E_PROXY must be 'meridian', 'etcd' or empty, not '", value, "'"));
}

const char* ProxyKindName(ProxyKind kind) {
  switch (kind) {
    case ProxyKind::kMeridian:
      return "meridian-proxy";
    case ProxyKind::kEtcd:
      return "etcd grpc-proxy";
    case ProxyKind::kNone:
      break;
  }
  return "no proxy";
}

std::string ProxyBinary(ProxyKind kind) {
  switch (kind) {
    case ProxyKind::kMeridian: {
      const char* value = std::getenv("MERIDIAN_PROXY_BIN");
      if (value != nullptr && value[0] != '\0') return value;
      return MERIDIAN_PROXY_BIN;
    }
    case ProxyKind::kEtcd:
      return FindOnPath("etcd");
    case ProxyKind::kNone:
      break;
  }
  return "";
}

std::string EtcdctlBinary() {
  const char* value = std::getenv("MERIDIAN_E2E_ETCDCTL");
  if (value != nullptr && value[0] != '\0') return value;
  return "/usr/bin/etcdctl";
}

bool IsExecutable(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

absl::StatusOr<uint16_t> PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(err)));
  }
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("getsockname: ", std::strerror(err)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && base[0] != '\0' ? base : "/tmp", "/meridian-e2e-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "e2e harness: mkdtemp(%s): %s\n", pattern.c_str(), std::strerror(errno));
    return;
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  const char* keep = std::getenv("MERIDIAN_E2E_KEEP_TMP");
  if (keep != nullptr && std::string_view(keep) == "1") {
    std::fprintf(stderr, "e2e harness: keeping %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string CommandResult::ErrorLines() const {
  std::vector<std::string> errors;
  for (const std::string& line : SplitLines(stderr_text)) {
    if (absl::StartsWith(line, "Error: ")) errors.push_back(line);
  }
  return absl::StrJoin(errors, "\n");
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_text,
                         int timeout_ms) {
  CommandResult result;
  int in_fd = MakeMemfd("e2e-stdin");
  int out_fd = MakeMemfd("e2e-stdout");
  int err_fd = MakeMemfd("e2e-stderr");
  size_t written = 0;
  while (written < stdin_text.size()) {
    ssize_t n = write(in_fd, stdin_text.data() + written, stdin_text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) Die(absl::StrCat("writing stdin memfd: ", std::strerror(errno)));
    written += static_cast<size_t>(n);
  }
  lseek(in_fd, 0, SEEK_SET);
  absl::StatusOr<pid_t> pid = Spawn(argv, in_fd, out_fd, err_fd);
  if (!pid.ok()) {
    result.stderr_text = absl::StrCat("e2e harness: spawn failed: ", pid.status().ToString());
  } else {
    int exit_code = -1;
    if (!WaitForExit(*pid, timeout_ms, &exit_code)) {
      result.timed_out = true;
      KillGroupAndReap(*pid);
    } else {
      result.exit_code = exit_code;
    }
    result.stdout_text = ReadWholeFd(out_fd);
    result.stderr_text = ReadWholeFd(err_fd);
    if (result.timed_out) {
      absl::StrAppend(&result.stderr_text, "\ne2e harness: killed after timeout of ", timeout_ms,
                      " ms: ", absl::StrJoin(argv, " "));
    }
  }
  close(in_fd);
  close(out_fd);
  close(err_fd);
  return result;
}

CommandResult Etcdctl(const std::string& endpoint, const std::vector<std::string>& args,
                      const std::string& stdin_text, int timeout_ms) {
  std::vector<std::string> argv = {EtcdctlBinary(), absl::StrCat("--endpoints=", endpoint),
                                   "--dial-timeout=3s", "--command-timeout=15s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, stdin_text, timeout_ms);
}

BackgroundProcess::~BackgroundProcess() {
  Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (stderr_fd_ >= 0) close(stderr_fd_);
}

absl::Status BackgroundProcess::Start(const std::vector<std::string>& argv) {
  if (pid_ > 0) return absl::FailedPreconditionError("already started");
  stdout_fd_ = MakeMemfd("e2e-bg-stdout");
  stderr_fd_ = MakeMemfd("e2e-bg-stderr");
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return absl::InternalError("open /dev/null");
  absl::StatusOr<pid_t> pid = Spawn(argv, null_fd, stdout_fd_, stderr_fd_);
  close(null_fd);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  reaped_ = false;
  return absl::OkStatus();
}

std::string BackgroundProcess::Stdout() const { return ReadWholeFd(stdout_fd_); }
std::string BackgroundProcess::Stderr() const { return ReadWholeFd(stderr_fd_); }

bool BackgroundProcess::WaitForStdout(const std::function<bool(const std::string&)>& done,
                                      int timeout_ms) const {
  const auto start = Clock::now();
  while (true) {
    if (done(Stdout())) return true;
    if (ElapsedMs(start) >= timeout_ms) return false;
    if (pid_ > 0 && !reaped_) {
      siginfo_t info{};
      if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid != 0) {
        return done(Stdout());  // exited: whatever it printed is final
      }
    }
    SleepMs(20);
  }
}

bool BackgroundProcess::Exited(int* exit_code) {
  if (pid_ <= 0) return true;
  if (!reaped_ && TryReap(pid_, &exit_code_)) reaped_ = true;
  if (reaped_ && exit_code != nullptr) *exit_code = exit_code_;
  return reaped_;
}

bool BackgroundProcess::WaitExit(int timeout_ms, int* exit_code) {
  if (pid_ <= 0) return true;
  if (!reaped_ && WaitForExit(pid_, timeout_ms, &exit_code_)) reaped_ = true;
  if (reaped_ && exit_code != nullptr) *exit_code = exit_code_;
  return reaped_;
}

void BackgroundProcess::Kill() {
  if (pid_ <= 0 || reaped_) return;
  KillGroupAndReap(pid_);
  reaped_ = true;
  exit_code_ = -1;
}

absl::Status StartEtcdctlWatch(const std::string& endpoint, const std::vector<std::string>& args,
                               BackgroundProcess* process) {
  std::vector<std::string> argv = {EtcdctlBinary(), absl::StrCat("--endpoints=", endpoint),
                                   "--dial-timeout=3s", "watch"};
  argv.insert(argv.end(), args.begin(), args.end());
  return process->Start(argv);
}

ServerProcess::ServerProcess(ServerOptions options) : options_(std::move(options)) {
  data_dir_ = absl::StrCat(temp_.path(), "/data");
  log_path_ = absl::StrCat(temp_.path(), "/server.log");
  proxy_log_path_ = absl::StrCat(temp_.path(), "/proxy.log");
  proxy_data_dir_ = absl::StrCat(temp_.path(), "/proxy-data");
}

ServerProcess::~ServerProcess() {
  KillProxy();
  Kill();
}

std::string ServerProcess::endpoint() const {
  if (has_proxy()) return absl::StrCat("127.0.0.1:", proxy_port_);
  return server_endpoint();
}

std::string ServerProcess::server_endpoint() const {
  return absl::StrCat("127.0.0.1:", client_port_);
}

std::vector<std::string> ServerProcess::BuildArgv() const {
  const std::string client_url = absl::StrCat("http://127.0.0.1:", client_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> argv = {
      ServerBinary(options_.kind),
      absl::StrCat("--name=", options_.name),
      absl::StrCat("--data-dir=", data_dir_),
      absl::StrCat("--listen-client-urls=", client_url),
      absl::StrCat("--advertise-client-urls=", client_url),
      absl::StrCat("--listen-peer-urls=", peer_url),
      absl::StrCat("--initial-advertise-peer-urls=", peer_url),
      absl::StrCat("--initial-cluster=", options_.name, "=", peer_url),
      absl::StrCat("--listen-metrics-urls=http://127.0.0.1:", metrics_port_),
  };
  argv.insert(argv.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  return argv;
}

absl::Status ServerProcess::SpawnAndWait() {
  absl::StatusOr<pid_t> pid = SpawnWithLog(BuildArgv(), log_path_);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;

  const auto start = Clock::now();
  while (true) {
    int exit_code = 0;
    if (TryReap(pid_, &exit_code)) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("server exited with code ", exit_code,
                                                 " during start-up; log tail:\n", LogTail(8192)));
    }
    CommandResult health = HealthCheck(server_endpoint());
    if (health.exit_code == 0) return absl::OkStatus();
    if (ElapsedMs(start) >= options_.start_timeout_ms) {
      Kill();
      return absl::DeadlineExceededError(absl::StrCat(
          "server not healthy after ", options_.start_timeout_ms, " ms; last health check: ",
          health.stdout_text, health.stderr_text, "\nlog tail:\n", LogTail(8192)));
    }
    SleepMs(100);
  }
}

absl::Status ServerProcess::Start() {
  if (!temp_.ok()) return absl::InternalError("could not create temp dir");
  if (pid_ > 0) return absl::FailedPreconditionError("server already running");
  const std::string binary = ServerBinary(options_.kind);
  if (!IsExecutable(binary)) {
    return absl::NotFoundError(absl::StrCat(ServerKindName(options_.kind), " binary not found at '",
                                            binary, "' (MERIDIAN_E2E_SERVER=etcd selects etcd)"));
  }
  if (has_proxy()) {
    const std::string proxy = ProxyBinary(options_.proxy);
    if (!IsExecutable(proxy)) {
      return absl::NotFoundError(absl::StrCat(
          ProxyKindName(options_.proxy), " binary not found at '", proxy,
          "' (MERIDIAN_PROXY_BIN overrides it; unset MERIDIAN_E2E_PROXY runs without a proxy)"));
    }
    // The server gets new ports below, so a proxy left from an earlier Start() is useless.
    KillProxy();
  }
  absl::Status started = StartServer();
  if (!started.ok() || !has_proxy()) return started;
  absl::Status proxied = StartProxy();
  if (!proxied.ok()) Kill();
  return proxied;
}

absl::Status ServerProcess::StartServer() {
  absl::Status last = absl::OkStatus();
  constexpr int kMaxAttempts = 3;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    absl::StatusOr<uint16_t> client = PickFreePort();
    absl::StatusOr<uint16_t> peer = PickFreePort();
    absl::StatusOr<uint16_t> metrics = PickFreePort();
    if (!client.ok()) return client.status();
    if (!peer.ok()) return peer.status();
    if (!metrics.ok()) return metrics.status();
    if (*client == *peer || *client == *metrics || *peer == *metrics) continue;
    client_port_ = *client;
    peer_port_ = *peer;
    metrics_port_ = *metrics;
    // A failed attempt may have left a half-initialised data dir behind.
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
    last = SpawnAndWait();
    if (last.ok()) return last;
    // Only an early exit (typically EADDRINUSE) is worth retrying with new ports.
    if (last.code() != absl::StatusCode::kUnavailable) return last;
  }
  return last;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  KillGroupAndReap(pid_);
  pid_ = -1;
}

absl::Status ServerProcess::Stop() {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGTERM);
  int exit_code = 0;
  if (WaitForExit(pid_, options_.stop_grace_ms, &exit_code)) {
    pid_ = -1;
    return absl::OkStatus();
  }
  Kill();
  return absl::DeadlineExceededError(
      absl::StrCat("server ignored SIGTERM for ", options_.stop_grace_ms, " ms; SIGKILLed"));
}

absl::Status ServerProcess::Restart() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) return stopped;
  absl::Status started = SpawnAndWait();
  if (!started.ok() || !has_proxy()) return started;
  // The proxy kept running while its member was down; it must find it again by itself.
  return WaitProxyHealthy(options_.proxy_ready_timeout_ms, /*kill_on_timeout=*/false);
}

bool ServerProcess::Running() {
  if (pid_ <= 0) return false;
  int exit_code = 0;
  if (TryReap(pid_, &exit_code)) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string ServerProcess::LogTail(size_t max_bytes) const {
  std::string tail = ReadFileTail(log_path_, max_bytes);
  if (has_proxy()) {
    absl::StrAppend(&tail, "\n===== ", ProxyKindName(options_.proxy), " log tail (",
                    proxy_log_path_, ") =====\n", ProxyLogTail(max_bytes));
  }
  return tail;
}

std::string ServerProcess::ProxyLogTail(size_t max_bytes) const {
  if (!has_proxy()) return "";
  return ReadFileTail(proxy_log_path_, max_bytes);
}

std::vector<std::string> ServerProcess::BuildProxyArgv() const {
  const std::string listen = absl::StrCat("127.0.0.1:", proxy_port_);
  const std::string metrics = absl::StrCat("http://127.0.0.1:", proxy_metrics_port_);
  std::vector<std::string> argv;
  if (options_.proxy == ProxyKind::kEtcd) {
    // --advertise-client-url is what its member list reports (default 127.0.0.1:23790).
    argv = {ProxyBinary(options_.proxy), "grpc-proxy", "start",
            absl::StrCat("--data-dir=", proxy_data_dir_),
            absl::StrCat("--advertise-client-url=", listen)};
  } else {
    argv = {ProxyBinary(options_.proxy)};
  }
  argv.push_back(absl::StrCat("--endpoints=", server_endpoint()));
  argv.push_back(absl::StrCat("--listen-addr=", listen));
  argv.push_back(absl::StrCat("--metrics-addr=", metrics));
  argv.insert(argv.end(), options_.proxy_extra_flags.begin(), options_.proxy_extra_flags.end());
  return argv;
}

absl::Status ServerProcess::WaitProxyHealthy(int timeout_ms, bool kill_on_timeout) {
  const auto start = Clock::now();
  while (true) {
    if (proxy_pid_ <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          ProxyKindName(options_.proxy), " is not running; log tail:\n", ProxyLogTail(8192)));
    }
    int exit_code = 0;
    if (TryReap(proxy_pid_, &exit_code)) {
      proxy_pid_ = -1;
      return absl::UnavailableError(absl::StrCat(ProxyKindName(options_.proxy),
                                                 " exited with code ", exit_code, "; log tail:\n",
                                                 ProxyLogTail(8192)));
    }
    CommandResult health = HealthCheck(endpoint());
    if (health.exit_code == 0) return absl::OkStatus();
    if (ElapsedMs(start) >= timeout_ms) {
      if (kill_on_timeout) KillProxy();
      return absl::DeadlineExceededError(absl::StrCat(
          ProxyKindName(options_.proxy), " at ", endpoint(), " not healthy after ", timeout_ms,
          " ms; last health check: ", health.stdout_text, health.stderr_text, "\nproxy log tail:\n",
          ProxyLogTail(8192), "\nserver log tail:\n", ReadFileTail(log_path_, 4096)));
    }
    SleepMs(100);
  }
}

absl::Status ServerProcess::SpawnProxyAndWait() {
  absl::StatusOr<pid_t> pid = SpawnWithLog(BuildProxyArgv(), proxy_log_path_);
  if (!pid.ok()) return pid.status();
  proxy_pid_ = *pid;
  return WaitProxyHealthy(options_.proxy_ready_timeout_ms, /*kill_on_timeout=*/true);
}

absl::Status ServerProcess::StartProxy() {
  absl::Status last = absl::OkStatus();
  constexpr int kMaxAttempts = 3;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    absl::StatusOr<uint16_t> listen = PickFreePort();
    absl::StatusOr<uint16_t> metrics = PickFreePort();
    if (!listen.ok()) return listen.status();
    if (!metrics.ok()) return metrics.status();
    const std::vector<uint16_t> taken = {client_port_, peer_port_, metrics_port_};
    if (*listen == *metrics ||
        std::find(taken.begin(), taken.end(), *listen) != taken.end() ||
        std::find(taken.begin(), taken.end(), *metrics) != taken.end()) {
      continue;
    }
    proxy_port_ = *listen;
    proxy_metrics_port_ = *metrics;
    std::error_code ec;
    std::filesystem::remove_all(proxy_data_dir_, ec);
    last = SpawnProxyAndWait();
    if (last.ok()) return last;
    // Only an early exit (typically EADDRINUSE) is worth retrying with new ports.
    if (last.code() != absl::StatusCode::kUnavailable) return last;
  }
  return last;
}

bool ServerProcess::ProxyRunning() {
  if (proxy_pid_ <= 0) return false;
  int exit_code = 0;
  if (TryReap(proxy_pid_, &exit_code)) {
    proxy_pid_ = -1;
    return false;
  }
  return true;
}

void ServerProcess::KillProxy() {
  if (proxy_pid_ <= 0) return;
  KillGroupAndReap(proxy_pid_);
  proxy_pid_ = -1;
}

bool WaitUntil(const std::function<bool()>& condition, int timeout_ms, int poll_ms) {
  const auto start = Clock::now();
  while (true) {
    if (condition()) return true;
    if (ElapsedMs(start) >= timeout_ms) return false;
    SleepMs(poll_ms);
  }
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

}  // namespace meridian::e2e
