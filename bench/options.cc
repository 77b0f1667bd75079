#include "bench/options.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/strings.h"

namespace meridian::bench {
namespace {

const std::map<std::string, Mode>& ModesByName() {
  static const auto* modes = new std::map<std::string, Mode>{
      {"put", Mode::kPut},
      {"range", Mode::kRange},
      {"txn-put", Mode::kTxnPut},
      {"delete", Mode::kDelete},
      {"watch", Mode::kWatch},
      {"watch-latency", Mode::kWatchLatency},
      {"lease-keepalive", Mode::kLeaseKeepalive},
      {"k8s", Mode::kK8s},
      {"idle-watchers", Mode::kIdleWatchers},
  };
  return *modes;
}

absl::StatusOr<K8sMix> ParseK8sMix(std::string_view text) {
  // "create=10,update=50,delete=10,get=25,list=5"; omitted ops get 0.
  K8sMix mix{0, 0, 0, 0, 0};
  for (std::string_view part : SplitView(text, ',')) {
    part = TrimAscii(part);
    if (part.empty()) continue;
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--k8s-mix: expected op=percent, got \"", AbslView(part), "\""));
    }
    const std::string_view name = part.substr(0, eq);
    int value = 0;
    try {
      size_t used = 0;
      value = std::stoi(std::string(part.substr(eq + 1)), &used);
      if (used != part.size() - eq - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("--k8s-mix: bad percentage in \"", AbslView(part), "\""));
    }
    if (value < 0 || value > 100) {
      return absl::InvalidArgumentError(absl::StrCat("--k8s-mix: ", value, " is not 0..100"));
    }
    if (name == "create") {
      mix.create = value;
    } else if (name == "update") {
      mix.update = value;
    } else if (name == "delete") {
      mix.remove = value;
    } else if (name == "get") {
      mix.get = value;
    } else if (name == "list") {
      mix.list = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--k8s-mix: unknown op \"", AbslView(name),
                                                     "\" (create, update, delete, get, list)"));
    }
  }
  const int sum = mix.create + mix.update + mix.remove + mix.get + mix.list;
  if (sum != 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("--k8s-mix: percentages sum to ", sum, ", not 100"));
  }
  return mix;
}

int DecimalDigits(uint64_t value) {
  int digits = 1;
  while (value >= 10) {
    value /= 10;
    ++digits;
  }
  return digits;
}

bool IsWatchMode(Mode mode) {
  return mode == Mode::kWatch || mode == Mode::kWatchLatency || mode == Mode::kIdleWatchers;
}

}  // namespace

std::string_view ModeName(Mode mode) {
  for (const auto& [name, m] : ModesByName()) {
    if (m == mode) return name;
  }
  return "?";
}

absl::StatusOr<BenchOptions> ParseOptions(int argc, const char* const* argv) {
  BenchOptions o;
  CLI::App app{
      "meridian-bench: load generator for etcd v3 compatible servers.\n"
      "Modes: put, range, txn-put, delete, watch, watch-latency, lease-keepalive, k8s, "
      "idle-watchers.\nPrints one JSON line with every figure on stdout, a summary on stderr."};
  std::string mode_name;
  std::string endpoints = "127.0.0.1:2379";
  std::string consistency = "l";
  std::string k8s_mix;
  app.add_option("mode", mode_name, "workload")->required();
  app.add_option("--endpoints", endpoints, "comma-separated host:port list (http:// optional)");
  app.add_option("--conns", o.conns,
                 "gRPC channels (TCP connections), round-robin over the endpoints; at least one "
                 "per endpoint");
  app.add_option("--clients", o.clients,
                 "concurrent clients, one request in flight each (putters in watch modes)");
  app.add_option("--threads", o.threads, "completion-queue threads (0: auto)");
  app.add_option("--total", o.total, "requests in all (default 10000 without --duration)");
  app.add_option("--duration", o.duration_s, "seconds to run (stops at whichever comes first)");
  app.add_option("--key-size", o.key_size_bytes, "key size in bytes");
  app.add_option("--val-size", o.val_size_bytes, "value size in bytes");
  app.add_option("--key-space", o.key_space, "number of distinct keys");
  app.add_flag("--sequential-keys", o.sequential_keys, "keys in order instead of random");
  app.add_flag("--key-pad-right", o.key_pad_right,
               "pad keys after the number instead of zero-padding before it (random keys then "
               "differ from their first bytes, like etcdctl check perf's)");
  app.add_option("--rate", o.rate_per_s,
                 "requests per second in all (open loop; latency counts from the scheduled time)");
  app.add_option("--rate-catchup", o.rate_catch_up,
                 "with --rate, a late client sends its missed requests at once (1, default) or "
                 "skips them (0: a token bucket without burst, like etcdctl check perf)");
  app.add_option("--key-prefix", o.key_prefix, "prefix of every key");
  app.add_option("--consistency", consistency, "range: l (linearizable) or s (serializable)");
  app.add_option("--txn-ops", o.txn_ops, "txn-put: puts per transaction");
  app.add_option("--timeout-ms", o.timeout_ms, "deadline of each request");
  app.add_option("--seed", o.seed, "random seed");
  app.add_option("--watchers", o.watchers, "watch modes: watchers in all");
  app.add_option("--streams", o.streams, "watch modes: Watch streams the watchers share");
  app.add_option("--puts", o.puts, "watch modes: puts to the watched keys");
  app.add_option("--drain-ms", o.drain_ms,
                 "watch modes: after the last put, wait this long without progress for events");
  app.add_option("--hold-ms", o.hold_ms, "idle-watchers: keep the watchers this long");
  app.add_option("--k8s-mix", k8s_mix,
                 "k8s: percentages, e.g. create=10,update=50,delete=10,get=25,list=5");
  app.add_option("--page-size", o.page_size, "k8s: objects per list page");
  app.add_option("--rss-pid", o.rss_pid, "report this process's VmRSS/VmHWM before and after");
  app.add_option("--progress", o.progress, "progress bar: 1 on, 0 off (default: stderr is a tty)");
  app.add_flag("--quiet", o.quiet, "no summary on stderr");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    std::fputs(app.help().c_str(), stdout);
    return absl::NotFoundError("help");
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }

  const auto mode_it = ModesByName().find(mode_name);
  if (mode_it == ModesByName().end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode \"", mode_name, "\""));
  }
  o.mode = mode_it->second;
  if (consistency == "l") {
    o.serializable = false;
  } else if (consistency == "s") {
    o.serializable = true;
  } else {
    return absl::InvalidArgumentError("--consistency must be l or s");
  }
  if (!k8s_mix.empty()) {
    absl::StatusOr<K8sMix> mix = ParseK8sMix(k8s_mix);
    if (!mix.ok()) return mix.status();
    o.k8s_mix = *mix;
  }
  o.endpoints.clear();
  for (std::string_view ep : SplitView(endpoints, ',')) {
    ep = TrimAscii(ep);
    if (ep.empty()) continue;
    if (ep.starts_with("http://")) ep.remove_prefix(7);
    if (ep.starts_with("https://")) {
      return absl::InvalidArgumentError("TLS endpoints are not supported; use http://");
    }
    o.endpoints.emplace_back(ep);
  }

  // Mode-dependent defaults for flags the user did not give.
  const auto given = [&](const char* flag) { return app.count(flag) > 0; };
  switch (o.mode) {
    case Mode::kWatch:
      if (!given("--watchers")) o.watchers = 100;
      if (!given("--streams")) o.streams = 10;
      if (!given("--puts")) o.puts = 1000;
      break;
    case Mode::kWatchLatency:
      if (!given("--watchers")) o.watchers = 10;
      if (!given("--streams")) o.streams = o.watchers;
      if (!given("--puts")) o.puts = 200;
      if (!given("--rate")) o.rate_per_s = 100;
      break;
    case Mode::kIdleWatchers:
      if (!given("--watchers")) o.watchers = 10000;
      break;
    case Mode::kK8s:
      if (!given("--key-space")) o.key_space = 1000;
      if (!given("--val-size")) o.val_size_bytes = 1024;
      if (!given("--watchers")) o.watchers = 10;
      if (!given("--streams")) o.streams = std::min(o.watchers, 10);
      break;
    default:
      break;
  }
  if (o.progress < 0) o.progress = isatty(STDERR_FILENO) ? 1 : 0;
  return o;
}

absl::Status ValidateOptions(BenchOptions* options) {
  BenchOptions& o = *options;
  const auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (o.endpoints.empty()) return bad("--endpoints is empty");
  if (o.conns < 1 || o.conns > 1000) return bad("--conns must be 1..1000, got ", o.conns);
  if (o.endpoints.size() > 1000) return bad("more than 1000 endpoints");
  // Channels go round-robin over the endpoints; every endpoint gets at least one.
  o.conns = std::max(o.conns, static_cast<int>(o.endpoints.size()));
  if (o.clients < 1 || o.clients > 100000) return bad("--clients must be 1..100000");
  if (o.threads < 0 || o.threads > 64) return bad("--threads must be 0..64");
  if (o.duration_s < 0 || o.duration_s > 86400) return bad("--duration must be 0..86400 s");
  if (o.key_size_bytes < 1 || o.key_size_bytes > 65536) return bad("--key-size must be 1..65536");
  if (o.val_size_bytes < 0 || o.val_size_bytes > (16 << 20)) {
    return bad("--val-size must be 0..16777216");
  }
  if (o.key_space < 1 || o.key_space > 1'000'000'000'000ULL) return bad("--key-space must be >= 1");
  if (o.rate_per_s < 0 || o.rate_per_s > 1e7) return bad("--rate must be 0..1e7");
  if (o.txn_ops < 1 || o.txn_ops > 128) return bad("--txn-ops must be 1..128");
  if (o.timeout_ms < 1) return bad("--timeout-ms must be positive");
  if (o.drain_ms < 0 || o.hold_ms < 0) return bad("--drain-ms and --hold-ms must be >= 0");
  if (o.page_size < 1 || o.page_size > 100000) return bad("--page-size must be 1..100000");
  if (o.key_prefix.size() > 4096) return bad("--key-prefix is longer than 4096 bytes");

  if (o.mode == Mode::kPut || o.mode == Mode::kRange || o.mode == Mode::kTxnPut ||
      o.mode == Mode::kDelete) {
    const int digits = DecimalDigits(o.key_space - 1);
    if (static_cast<size_t>(o.key_size_bytes) < o.key_prefix.size() + digits) {
      return bad("--key-size ", o.key_size_bytes, " cannot hold --key-prefix plus ", digits,
                 " digits for --key-space ", o.key_space);
    }
  }
  if (IsWatchMode(o.mode) || o.mode == Mode::kK8s) {
    const int min_watchers = o.mode == Mode::kK8s ? 0 : 1;
    if (o.watchers < min_watchers || o.watchers > 1'000'000) {
      return bad("--watchers must be ", min_watchers, "..1000000");
    }
    if (o.watchers == 0) {
      o.streams = 0;
    } else if (o.streams < 1 || o.streams > o.watchers) {
      return bad("--streams must be 1..watchers (", o.watchers, ")");
    }
  }
  if (o.mode == Mode::kWatch || o.mode == Mode::kWatchLatency) {
    if (o.puts < 1 || o.puts > kMaxPuts) return bad("--puts must be 1..", kMaxPuts);
    // Every watcher keeps a bitmap of puts bits; bound the total.
    const double bits = static_cast<double>(o.watchers) * static_cast<double>(o.puts);
    if (bits > 16e9) return bad("--watchers x --puts must be <= 16e9 (2 GB of tracking bits)");
    if (static_cast<uint64_t>(o.clients) > o.puts) o.clients = static_cast<int>(o.puts);
  }
  if (o.mode == Mode::kK8s && o.key_space < static_cast<uint64_t>(o.clients)) {
    return bad("k8s: --key-space (objects) must be >= --clients");
  }
  if (o.mode == Mode::kK8s && o.key_space > 100'000'000) {
    return bad("k8s: --key-space must be <= 1e8 (each object's revision is kept)");
  }
  if (o.mode != Mode::kWatch && o.mode != Mode::kWatchLatency && o.mode != Mode::kIdleWatchers &&
      o.total == 0 && o.duration_s == 0) {
    o.total = 10000;
  }
  return absl::OkStatus();
}

}  // namespace meridian::bench
