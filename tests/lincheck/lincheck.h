// Linearizability checker for histories of an etcd-like key-value store: puts and gets on
// per-key registers, some of whose outcomes may be unknown (timeouts, lost connections).
//
// Keys are independent registers, so linearizability is checked per key (P-compositionality).
// Each key is searched with Wing & Gong / Lowe's just-in-time linearization, memoizing
// (set of linearized ops, register value) as Porcupine does. When operations carry revisions, a
// separate cheap pass checks that they agree with real time (see README.md).
//
//   std::vector<Operation> history = ...;       // recorded by the test's clients
//   CheckResult result = Check(history, CheckOptions{});
//   if (result.verdict != Verdict::kLinearizable) {
//     (void)WriteHistoryFile("/tmp/history.txt", history);  // replay later
//     FAIL() << result.explanation;
//   }
#ifndef MERIDIAN_TESTS_LINCHECK_LINCHECK_H_
#define MERIDIAN_TESTS_LINCHECK_LINCHECK_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meridian::lincheck {

enum class OpKind { kPut, kGet };

enum class Outcome {
  // Completed, and its result is known.
  kOk,
  // Timed out / connection lost: may or may not have taken effect. Its return time is treated
  // as +infinity, so a put may take effect at any point after its call, or never. A get with an
  // unknown outcome observed nothing and is ignored.
  kUnknown,
  // Definitely did not take effect (e.g. rejected before reaching consensus): ignored.
  kFailed,
};

struct Operation {
  uint64_t client_id = 0;
  OpKind kind = OpKind::kGet;
  std::string key;
  // put: the value written. get: the value observed (empty when !found).
  std::string value;
  // get: whether the key existed. Ignored for puts.
  bool found = false;
  // Real time the client sent the request / received the response, from one monotonic clock.
  // return_ns is ignored when the outcome is kUnknown.
  int64_t call_ns = 0;
  int64_t return_ns = 0;
  Outcome outcome = Outcome::kOk;
  // put: the mod revision it created. get (found): the mod_revision it observed. 0 = not recorded
  // (then the revision checks skip the op).
  int64_t revision = 0;

  friend bool operator==(const Operation&, const Operation&) = default;
};

enum class Verdict {
  kLinearizable,
  kNotLinearizable,
  // The budget (states, memo memory or deadline) ran out before a definite answer.
  kUnknown,
  // The history itself is malformed (e.g. an op returning before its call); see explanation.
  kInvalidHistory,
};

struct CheckOptions {
  // Search budget across all keys. A search step that adds a new (linearized set, value) pair
  // to the memo counts as one explored state.
  int64_t max_explored_states = 20'000'000;
  // Memory the memo of one key may hold before the search gives up. Approximate: the memo's
  // vectors grow by doubling, so the process may briefly hold up to twice this.
  int64_t max_memo_bytes = int64_t{512} << 20;
  // Wall-clock budget for the whole check, from the call of Check(). <= 0 gives up at once.
  int64_t deadline_ms = 60'000;
  // Run the revision pass when ops carry revisions.
  bool check_revisions = true;
  // Cap on the ops listed in a kNotLinearizable explanation.
  int max_window_ops = 24;
};

struct CheckResult {
  Verdict verdict = Verdict::kUnknown;
  // Empty for kLinearizable. Otherwise human-readable and multi-line: the key, what went wrong
  // and the ops around it, times relative to the first call in the history.
  std::string explanation;
  // The key that was not linearizable, or whose search ran out of budget.
  std::string key;
  // Indices into the history of the ops the explanation lists, in call order.
  std::vector<size_t> window;
  int64_t explored_states = 0;
  int64_t elapsed_ms = 0;
  // Keys whose search finished (all of them for a kLinearizable verdict).
  size_t keys_checked = 0;
};

// Checks the history. Keys are assumed to be absent before the history starts (use fresh keys,
// e.g. with a per-run prefix). Values should be unique per key: the checker stays correct with
// duplicates, but the search may explore more states and the revision pass checks less.
[[nodiscard]] CheckResult Check(const std::vector<Operation>& history, const CheckOptions& options);

// InvalidArgument naming the first malformed op (ok op returning before its call, not-found get
// with a value or a revision, negative revision), else OK. Check() runs it first.
[[nodiscard]] absl::Status ValidateHistory(const std::vector<Operation>& history);

[[nodiscard]] const char* VerdictName(Verdict verdict);
// "ok", "unknown" or "failed" (also the history file's spelling).
[[nodiscard]] const char* OutcomeName(Outcome outcome);

// One line, e.g. `c3 put "k" = "v1" rev=7 [+0.000100ms, +0.002500ms] ok`. Times are printed in
// milliseconds relative to origin_ns (0 for the first overload, i.e. raw times).
[[nodiscard]] std::string Describe(const Operation& op);
[[nodiscard]] std::string Describe(const Operation& op, int64_t origin_ns);

// History files: a header line, then one op per line (op #i of the history is the i-th op
// line); see README.md for the format. Keys and values may hold any bytes.
[[nodiscard]] std::string FormatHistory(const std::vector<Operation>& history);
[[nodiscard]] absl::StatusOr<std::vector<Operation>> ParseHistory(const std::string& text);
[[nodiscard]] absl::Status WriteHistoryFile(const std::string& path,
                                            const std::vector<Operation>& history);
[[nodiscard]] absl::StatusOr<std::vector<Operation>> ReadHistoryFile(const std::string& path);

}  // namespace meridian::lincheck

#endif  // MERIDIAN_TESTS_LINCHECK_LINCHECK_H_
