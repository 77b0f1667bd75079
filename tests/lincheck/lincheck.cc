// Linearizability checking: validation, the revision pass, the per-key search and explanations.
#include "tests/lincheck/lincheck.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace meridian::lincheck {
namespace {

using Clock = std::chrono::steady_clock;

// Return time of an op with an unknown outcome: it may take effect arbitrarily late.
constexpr int64_t kInfinityNs = std::numeric_limits<int64_t>::max();

// Register values in the model: >= 0 is an index into KeyHistory::values.
constexpr int32_t kAbsent = -1;        // the key does not exist
constexpr int32_t kNeverWritten = -2;  // a get observed a value that no put on the key wrote
// Every value that no get observed. No get can tell such values apart, so sharing one id
// merges states that differ only in which unread value was written last.
constexpr int32_t kUnreadValue = -3;

// How many of the last linearized ops an explanation names, in order.
constexpr size_t kLastLinearizedShown = 5;

// The deadline is read every this many search steps: often enough to stop within
// milliseconds, rarely enough not to cost anything.
constexpr uint64_t kDeadlineCheckSteps = 1024;

// splitmix64's finalizer: spreads op ids so that XOR-ing them gives a usable set hash.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string Quote(const std::string& bytes) {
  return absl::StrCat("\"", absl::CHexEscape(bytes), "\"");
}

// Milliseconds with nanosecond digits, e.g. "+12.000345ms". Differences are taken in uint64_t
// so that no pair of int64_t times overflows.
std::string FormatRelativeTime(int64_t time_ns, int64_t origin_ns) {
  if (time_ns == kInfinityNs) return "+inf";
  const bool negative = time_ns < origin_ns;
  const uint64_t diff_ns = negative
                               ? static_cast<uint64_t>(origin_ns) - static_cast<uint64_t>(time_ns)
                               : static_cast<uint64_t>(time_ns) - static_cast<uint64_t>(origin_ns);
  std::string frac = absl::StrCat(diff_ns % 1'000'000);
  frac.insert(0, 6 - frac.size(), '0');
  return absl::StrCat(negative ? "-" : "+", diff_ns / 1'000'000, ".", frac, "ms");
}


// ---------------------------------------------------------------------------------------------
// Revision pass.

struct Violation {
  std::string key;
  std::string message;
  std::vector<size_t> ops;  // history indices, listed after the message
};

bool IsOkFoundGetWithRevision(const Operation& op) {
  return op.kind == OpKind::kGet && op.outcome == Outcome::kOk && op.found && op.revision > 0;
}

bool IsOkPutWithRevision(const Operation& op) {
  return op.kind == OpKind::kPut && op.outcome == Outcome::kOk && op.revision > 0;
}

// Real-time rule shared by R3 and R4: every source that returned before a target was called must
// have a revision below (strict) or at most (!strict) the target's. `sources` and `targets` are
// history indices; sweeps targets by call time while folding in sources by return time.
std::optional<std::pair<size_t, size_t>> FindRealTimeInversion(const std::vector<Operation>& h,
                                                               std::vector<size_t> sources,
                                                               std::vector<size_t> targets,
                                                               bool strict) {
  std::sort(sources.begin(), sources.end(),
            [&](size_t a, size_t b) { return h[a].return_ns < h[b].return_ns; });
  std::sort(targets.begin(), targets.end(),
            [&](size_t a, size_t b) { return h[a].call_ns < h[b].call_ns; });
  size_t next_source = 0;
  std::optional<size_t> max_source;  // the returned source with the largest revision
  for (size_t target : targets) {
    while (next_source < sources.size() && h[sources[next_source]].return_ns < h[target].call_ns) {
      const size_t s = sources[next_source++];
      if (!max_source || h[s].revision > h[*max_source].revision) max_source = s;
    }
    if (!max_source) continue;
    const int64_t before = h[*max_source].revision;
    const int64_t after = h[target].revision;
    if (strict ? before >= after : before > after) return std::make_pair(*max_source, target);
  }
  return std::nullopt;
}

// The cheap pass over revisions (README.md, "Revision checks"). Ops without a revision (0) are
// skipped. Returns the first violation found.
std::optional<Violation> CheckRevisions(const std::vector<Operation>& h) {
  // R1: distinct puts that took effect created distinct revisions (across all keys).
  std::unordered_map<int64_t, size_t> put_by_revision;
  for (size_t i = 0; i < h.size(); ++i) {
    const Operation& op = h[i];
    if (op.kind != OpKind::kPut || op.outcome == Outcome::kFailed || op.revision <= 0) continue;
    auto [it, inserted] = put_by_revision.emplace(op.revision, i);
    if (!inserted) {
      return Violation{op.key,
                       absl::StrCat("two puts report the same revision ", op.revision, ":"),
                       {it->second, i}};
    }
  }

  // R2: a get that observed a value at mod_revision r saw the put that wrote it, which created r.
  std::map<std::pair<std::string, std::string>, std::vector<size_t>> puts_by_key_value;
  for (size_t i = 0; i < h.size(); ++i) {
    const Operation& op = h[i];
    if (op.kind == OpKind::kPut && op.outcome != Outcome::kFailed) {
      puts_by_key_value[{op.key, op.value}].push_back(i);
    }
  }
  for (size_t i = 0; i < h.size(); ++i) {
    const Operation& get = h[i];
    if (!IsOkFoundGetWithRevision(get)) continue;
    auto by_rev = put_by_revision.find(get.revision);
    if (by_rev != put_by_revision.end()) {
      const Operation& put = h[by_rev->second];
      if (put.key != get.key || put.value != get.value) {
        return Violation{get.key,
                         absl::StrCat("a get observed mod_revision ", get.revision,
                                      " but that revision was created by a different put:"),
                         {by_rev->second, i}};
      }
      continue;
    }
    auto writers = puts_by_key_value.find({get.key, get.value});
    if (writers == puts_by_key_value.end()) continue;  // never written: the search reports it
    const bool all_known = std::all_of(writers->second.begin(), writers->second.end(),
                                       [&](size_t w) { return h[w].revision > 0; });
    if (all_known) {
      std::vector<size_t> ops = writers->second;
      ops.push_back(i);
      return Violation{get.key,
                       absl::StrCat("a get observed mod_revision ", get.revision,
                                    " but the put(s) of the value it read created other "
                                    "revisions:"),
                       std::move(ops)};
    }
  }

  // R3: store revisions grow with real time. A put called after another put returned, or after a
  // get returned that had observed revision r, creates a larger revision.
  {
    std::vector<size_t> sources;
    std::vector<size_t> targets;
    for (size_t i = 0; i < h.size(); ++i) {
      if (IsOkPutWithRevision(h[i])) {
        sources.push_back(i);
        targets.push_back(i);
      } else if (IsOkFoundGetWithRevision(h[i])) {
        sources.push_back(i);
      }
    }
    if (auto inversion = FindRealTimeInversion(h, std::move(sources), std::move(targets),
                                               /*strict=*/true)) {
      return Violation{h[inversion->second].key,
                       "a put was called after an op with an equal or larger revision returned "
                       "(revisions must grow in real time):",
                       {inversion->first, inversion->second}};
    }
  }

  // R4: reads of one key do not go back in revisions: a get called after a put of its key
  // returned, or after another get of it returned, observes at least that revision.
  std::map<std::string, std::vector<size_t>> by_key;
  for (size_t i = 0; i < h.size(); ++i) {
    if (IsOkPutWithRevision(h[i]) || IsOkFoundGetWithRevision(h[i])) by_key[h[i].key].push_back(i);
  }
  for (const auto& [key, ops] : by_key) {
    std::vector<size_t> targets;
    for (size_t i : ops) {
      if (h[i].kind == OpKind::kGet) targets.push_back(i);
    }
    if (auto inversion = FindRealTimeInversion(h, ops, std::move(targets), /*strict=*/false)) {
      return Violation{key,
                       "a get observed an older mod_revision than an op of the same key that "
                       "returned before the get was called:",
                       {inversion->first, inversion->second}};
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Per-key search.

struct KeyOp {
  size_t history_index = 0;
  bool is_put = false;
  // Must be linearized before return_ns (outcome kOk). Unknown puts need not be linearized.
  bool definite = true;
  // put: the value written; get: the value observed or kAbsent / kNeverWritten.
  int32_t value_id = kAbsent;
  int64_t call_ns = 0;
  int64_t return_ns = 0;  // kInfinityNs when not definite
};

struct KeyHistory {
  std::string key;
  // In return order (see LinearizedSet); unknown puts, returning at +infinity, come last.
  std::vector<KeyOp> ops;
  std::vector<std::string> values;  // value id -> bytes, for values some get observed
  size_t ignored_ops = 0;           // failed ops, unknown gets, unknown puts nobody read
};

KeyHistory BuildKeyHistory(const std::vector<Operation>& h, const std::string& key,
                           const std::vector<size_t>& indices) {
  KeyHistory kh;
  kh.key = key;
  std::unordered_map<std::string, int32_t> value_ids;  // values written and read
  std::unordered_set<std::string> observed;            // values read by ok gets
  for (size_t i : indices) {
    const Operation& op = h[i];
    if (op.kind == OpKind::kGet && op.outcome == Outcome::kOk && op.found) {
      observed.insert(op.value);
    }
  }
  for (size_t i : indices) {
    const Operation& op = h[i];
    if (op.kind == OpKind::kPut && op.outcome != Outcome::kFailed && observed.contains(op.value)) {
      if (value_ids.emplace(op.value, static_cast<int32_t>(kh.values.size())).second) {
        kh.values.push_back(op.value);
      }
    }
  }
  for (size_t i : indices) {
    const Operation& op = h[i];
    KeyOp kop;
    kop.history_index = i;
    kop.is_put = op.kind == OpKind::kPut;
    kop.call_ns = op.call_ns;
    kop.return_ns = op.return_ns;
    if (op.outcome == Outcome::kFailed) {
      ++kh.ignored_ops;
      continue;
    }
    if (op.outcome == Outcome::kUnknown) {
      // An unknown get observed nothing. An unknown put whose value no get read can always be
      // left out: in any linearization containing it, no get sits between it and the next put
      // (or the end), so removing it changes no result.
      if (!kop.is_put || !observed.contains(op.value)) {
        ++kh.ignored_ops;
        continue;
      }
      kop.definite = false;
      kop.return_ns = kInfinityNs;
    }
    if (kop.is_put) {
      auto it = value_ids.find(op.value);
      kop.value_id = it == value_ids.end() ? kUnreadValue : it->second;
    } else if (op.found) {
      auto it = value_ids.find(op.value);
      kop.value_id = it == value_ids.end() ? kNeverWritten : it->second;
    } else {
      kop.value_id = kAbsent;
    }
    kh.ops.push_back(kop);
  }
  std::sort(kh.ops.begin(), kh.ops.end(), [](const KeyOp& a, const KeyOp& b) {
    return std::make_tuple(a.return_ns, a.call_ns, a.history_index) <
           std::make_tuple(b.return_ns, b.call_ns, b.history_index);
  });
  return kh;
}

// The register model: a put always succeeds and sets the value; a get succeeds iff it observed
// the current value (kAbsent for a not-found get).
bool Step(int32_t state, const KeyOp& op, int32_t* next_state) {
  if (op.is_put) {
    *next_state = op.value_id;
    return true;
  }
  *next_state = state;
  return state == op.value_id;
}

// The set of linearized ops of a key, kept in a canonical form that is small to store. Ops are
// numbered in return order. When the search is at some point, every op returning before the
// earliest return of a pending op is linearized, so the set is a prefix [0, prefix) plus a few
// "sparse" ops: ones concurrent with that return (at most about the number of clients) and
// linearized unknown-outcome puts. A full bitset per memo entry would cost ops/8 bytes instead.
class LinearizedSet {
 public:
  void Add(uint32_t op) {
    hash_ ^= Mix(op);
    if (op != prefix_) {
      sparse_.insert(std::lower_bound(sparse_.begin(), sparse_.end(), op, std::greater<>()), op);
      return;
    }
    ++prefix_;
    // Absorb sparse ops that now continue the prefix; each is popped once.
    while (!sparse_.empty() && sparse_.back() == prefix_) {
      sparse_.pop_back();
      ++prefix_;
    }
  }

  void Remove(uint32_t op) {
    hash_ ^= Mix(op);
    if (op >= prefix_) {
      sparse_.erase(std::lower_bound(sparse_.begin(), sparse_.end(), op, std::greater<>()));
      return;
    }
    // Ops (op, prefix_) stay linearized and become sparse; all are below the current sparse ops,
    // so appending them in descending order keeps sparse_ sorted.
    for (uint32_t kept = prefix_ - 1; kept > op; --kept) sparse_.push_back(kept);
    prefix_ = op;
  }

  bool Contains(uint32_t op) const {
    return op < prefix_ || std::binary_search(sparse_.begin(), sparse_.end(), op, std::greater<>());
  }

  // XOR of Mix(op) over the members: maintained in O(1), independent of the encoding.
  uint64_t hash() const { return hash_; }
  uint32_t prefix() const { return prefix_; }
  const std::vector<uint32_t>& sparse() const { return sparse_; }  // descending

 private:
  uint32_t prefix_ = 0;
  std::vector<uint32_t> sparse_;
  uint64_t hash_ = 0;
};

// Set of (linearized set, register value) pairs already explored. Open addressing over entries
// stored back to back in one arena: [value, prefix, sparse count, sparse ops...] per entry.
class StateMemo {
 public:
  StateMemo() : slots_(kInitialSlots, 0) {}

  // Adds the pair; false if it was already present.
  bool Insert(const LinearizedSet& set, int32_t state) {
    const uint64_t hash =
        set.hash() ^ Mix(static_cast<uint64_t>(static_cast<uint32_t>(state)) + 0x5bd1e995);
    if ((hashes_.size() + 1) * 2 > slots_.size()) Grow();
    const size_t mask = slots_.size() - 1;
    size_t slot = hash & mask;
    // Load stays <= 1/2, so an empty slot is found within slots_.size() probes.
    for (size_t probes = 0; probes < slots_.size(); ++probes, slot = (slot + 1) & mask) {
      if (slots_[slot] == 0) break;
      const size_t entry = slots_[slot] - 1;
      if (hashes_[entry] == hash && Equals(entry, set, state)) return false;
    }
    slots_[slot] = static_cast<uint32_t>(hashes_.size() + 1);
    hashes_.push_back(hash);
    offsets_.push_back(arena_.size());
    arena_.push_back(static_cast<uint32_t>(state));
    arena_.push_back(set.prefix());
    arena_.push_back(static_cast<uint32_t>(set.sparse().size()));
    arena_.insert(arena_.end(), set.sparse().begin(), set.sparse().end());
    return true;
  }

  int64_t memory_bytes() const {
    return static_cast<int64_t>(
        arena_.capacity() * sizeof(uint32_t) + offsets_.capacity() * sizeof(uint64_t) +
        hashes_.capacity() * sizeof(uint64_t) + slots_.capacity() * sizeof(uint32_t));
  }

  size_t size() const { return hashes_.size(); }

 private:
  static constexpr size_t kInitialSlots = 1024;

  bool Equals(size_t entry, const LinearizedSet& set, int32_t state) const {
    const uint32_t* stored = arena_.data() + offsets_[entry];
    const std::vector<uint32_t>& sparse = set.sparse();
    return stored[0] == static_cast<uint32_t>(state) && stored[1] == set.prefix() &&
           stored[2] == sparse.size() && std::equal(sparse.begin(), sparse.end(), stored + 3);
  }

  void Grow() {
    std::vector<uint32_t> slots(slots_.size() * 2, 0);
    const size_t mask = slots.size() - 1;
    for (size_t entry = 0; entry < hashes_.size(); ++entry) {
      size_t slot = hashes_[entry] & mask;
      while (slots[slot] != 0) slot = (slot + 1) & mask;  // load <= 1/4 after doubling
      slots[slot] = static_cast<uint32_t>(entry + 1);
    }
    slots_ = std::move(slots);
  }

  std::vector<uint32_t> arena_;
  std::vector<uint64_t> offsets_;  // entry -> start in arena_
  std::vector<uint64_t> hashes_;
  std::vector<uint32_t> slots_;  // 0 = empty, else entry index + 1
};

struct Budget {
  int64_t max_explored_states = 0;
  int64_t max_memo_bytes = 0;
  Clock::time_point deadline;
  int64_t explored_states = 0;  // across keys
  std::string exhausted;        // why the search stopped, when it did
};

// The furthest the search got: the largest partial linearization after which an op's return
// was reached before it could be linearized.
struct Progress {
  int64_t depth = -1;  // ops in the partial linearization
  int32_t blocked_op = -1;
  int32_t last_put_op = -1;  // the put that wrote the register's value then, -1 if none
  LinearizedSet linearized;
  std::vector<int32_t> last_linearized;  // the last few ops of it, oldest first
};

enum class SearchOutcome { kLinearizable, kNotLinearizable, kBudgetExceeded };

class KeySearch {
 public:
  KeySearch(const KeyHistory& kh, Budget* budget) : kh_(kh), budget_(budget) {}

  SearchOutcome Run(Progress* progress);

 private:
  struct Entry {
    int32_t op = 0;
    bool is_call = true;
    int32_t match = -1;  // a call's return entry (-1 for unknown ops, which have none)
    int64_t time_ns = 0;
  };

  void BuildEntries();
  // Dancing links: Lift removes a call and its return from the list, Unlift (in LIFO order)
  // puts them back.
  void Unlink(int32_t e) {
    next_[prev_[e]] = next_[e];
    prev_[next_[e]] = prev_[e];
  }
  void Relink(int32_t e) {
    next_[prev_[e]] = e;
    prev_[next_[e]] = e;
  }
  void Lift(int32_t call) {
    Unlink(call);
    if (entries_[call].match >= 0) Unlink(entries_[call].match);
  }
  void Unlift(int32_t call) {
    if (entries_[call].match >= 0) Relink(entries_[call].match);
    Relink(call);
  }
  bool OutOfTime() const { return Clock::now() >= budget_->deadline; }

  const KeyHistory& kh_;
  Budget* budget_;
  std::vector<Entry> entries_;
  std::vector<int32_t> next_;  // circular list over entries_ plus a sentinel at the end
  std::vector<int32_t> prev_;
  LinearizedSet linearized_;
};

void KeySearch::BuildEntries() {
  for (size_t i = 0; i < kh_.ops.size(); ++i) {
    const KeyOp& op = kh_.ops[i];
    entries_.push_back({static_cast<int32_t>(i), true, -1, op.call_ns});
    if (op.definite) entries_.push_back({static_cast<int32_t>(i), false, -1, op.return_ns});
  }
  // At equal times calls come first: ops touching at an instant count as concurrent, which
  // never turns a linearizable history into a violation.
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    if (a.time_ns != b.time_ns) return a.time_ns < b.time_ns;
    if (a.is_call != b.is_call) return a.is_call;
    return a.op < b.op;
  });
  std::vector<int32_t> call_of(kh_.ops.size(), -1);
  for (size_t e = 0; e < entries_.size(); ++e) {
    if (entries_[e].is_call) {
      call_of[static_cast<size_t>(entries_[e].op)] = static_cast<int32_t>(e);
    } else {
      entries_[static_cast<size_t>(call_of[static_cast<size_t>(entries_[e].op)])].match =
          static_cast<int32_t>(e);
    }
  }
  const int32_t sentinel = static_cast<int32_t>(entries_.size());
  next_.resize(entries_.size() + 1);
  prev_.resize(entries_.size() + 1);
  for (int32_t e = 0; e <= sentinel; ++e) {
    next_[e] = e == sentinel ? 0 : e + 1;
    prev_[e] = e == 0 ? sentinel : e - 1;
  }
}

SearchOutcome KeySearch::Run(Progress* progress) {
  size_t definite_left = 0;
  for (const KeyOp& op : kh_.ops) definite_left += op.definite ? 1 : 0;
  if (definite_left == 0) return SearchOutcome::kLinearizable;
  if (OutOfTime()) {
    budget_->exhausted = "deadline reached";
    return SearchOutcome::kBudgetExceeded;
  }
  BuildEntries();
  StateMemo memo;
  const int32_t sentinel = static_cast<int32_t>(entries_.size());

  // Reads are linearized eagerly: a pending get that matches the register now can take effect
  // now in any valid completion (every op that returned before its call is linearized already,
  // and it changes nothing), so if the state after it fails, the state before it fails too.
  // Such a step is `forced`: backtracking over it backtracks its parent as well. Without this,
  // k concurrent reads of one value would be explored in all 2^k subsets.
  struct Frame {
    int32_t call;  // entry linearized at this step
    int32_t state_before;
    bool forced;
    int32_t last_put;  // stack index of the latest put frame up to this one, -1 if none
  };
  std::vector<Frame> stack;
  int32_t state = kAbsent;
  int32_t entry = next_[sentinel];
  // Every step either linearizes an op (bounded by the states budget) or moves `entry` forward /
  // backtracks, which the deadline bounds; the step counter only paces the deadline checks.
  for (uint64_t steps = 1;; ++steps) {
    if (steps % kDeadlineCheckSteps == 0 && OutOfTime()) {
      budget_->exhausted = "deadline reached";
      return SearchOutcome::kBudgetExceeded;
    }
    // While a definite op is pending its return entry is still ahead, so `entry` cannot reach
    // the sentinel; treat it as a dead end all the same.
    if (entry != sentinel && entries_[entry].is_call) {
      const Entry& e = entries_[entry];
      const KeyOp& op = kh_.ops[static_cast<size_t>(e.op)];
      int32_t next_state;
      if (!Step(state, op, &next_state)) {
        entry = next_[entry];
        continue;
      }
      linearized_.Add(static_cast<uint32_t>(e.op));
      if (memo.Insert(linearized_, next_state)) {
        if (++budget_->explored_states > budget_->max_explored_states) {
          budget_->exhausted =
              absl::StrCat("explored-states budget (", budget_->max_explored_states, ") used up");
          return SearchOutcome::kBudgetExceeded;
        }
        if (memo.size() % kDeadlineCheckSteps == 0 &&
            memo.memory_bytes() > budget_->max_memo_bytes) {
          budget_->exhausted =
              absl::StrCat("memo memory budget (", budget_->max_memo_bytes, " bytes) used up");
          return SearchOutcome::kBudgetExceeded;
        }
        const int32_t below = stack.empty() ? -1 : stack.back().last_put;
        const int32_t last_put = op.is_put ? static_cast<int32_t>(stack.size()) : below;
        stack.push_back({entry, state, /*forced=*/!op.is_put, last_put});
        state = next_state;
        Lift(entry);
        if (op.definite && --definite_left == 0) return SearchOutcome::kLinearizable;
        entry = next_[sentinel];
        continue;
      }
      linearized_.Remove(static_cast<uint32_t>(e.op));
      if (op.is_put) {
        entry = next_[entry];
        continue;
      }
      // A matching read leads to an explored (failed) state, so this state fails: backtrack.
    } else if (entry != sentinel) {
      // An op returned before it could be linearized after the current prefix: backtrack.
      const int64_t depth = static_cast<int64_t>(stack.size());
      if (depth > progress->depth) {
        progress->depth = depth;
        progress->blocked_op = entries_[entry].op;
        const int32_t last_put = stack.empty() ? -1 : stack.back().last_put;
        progress->last_put_op =
            last_put < 0 ? -1 : entries_[stack[static_cast<size_t>(last_put)].call].op;
        progress->linearized = linearized_;
        progress->last_linearized.clear();
        const size_t shown = std::min(stack.size(), kLastLinearizedShown);
        for (size_t i = stack.size() - shown; i < stack.size(); ++i) {
          progress->last_linearized.push_back(entries_[stack[i].call].op);
        }
      }
    }
    // Undo the last step and try the entries after it; undo forced steps' parents as well.
    for (bool undo_parent = true; undo_parent;) {
      if (stack.empty()) return SearchOutcome::kNotLinearizable;
      const Frame frame = stack.back();
      stack.pop_back();
      state = frame.state_before;
      const int32_t op = entries_[frame.call].op;
      linearized_.Remove(static_cast<uint32_t>(op));
      if (kh_.ops[static_cast<size_t>(op)].definite) ++definite_left;
      Unlift(frame.call);
      entry = next_[frame.call];
      undo_parent = frame.forced;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Explanations.

bool Overlaps(const KeyOp& a, const KeyOp& b) {
  return a.call_ns <= b.return_ns && b.call_ns <= a.return_ns;
}

// Ops worth showing around the stuck op, by priority: the op itself, the end of the partial
// linearization and the writers of the value it read, then ops concurrent with it, then other
// ops still pending when it returned. Nearest in time first within a priority; at most
// max_ops, in call order.
std::vector<int32_t> SelectWindow(const KeyHistory& kh, const Progress& p, int max_ops) {
  const KeyOp& blocked = kh.ops[static_cast<size_t>(p.blocked_op)];
  std::vector<int> priority(kh.ops.size(), INT_MAX);
  auto consider = [&](size_t op, int prio) { priority[op] = std::min(priority[op], prio); };
  consider(static_cast<size_t>(p.blocked_op), 0);
  for (int32_t op : p.last_linearized) consider(static_cast<size_t>(op), 1);
  for (size_t i = 0; i < kh.ops.size(); ++i) {
    const KeyOp& op = kh.ops[i];
    const bool linearized = p.linearized.Contains(static_cast<uint32_t>(i));
    if (!blocked.is_put && op.is_put && blocked.value_id >= 0 && op.value_id == blocked.value_id) {
      consider(i, 1);
    } else if (Overlaps(op, blocked)) {
      consider(i, 2);
    } else if (!linearized && op.call_ns <= blocked.return_ns) {
      consider(i, 3);
    }
  }
  auto distance = [&](size_t i) {
    const int64_t a = kh.ops[i].call_ns;
    const int64_t b = blocked.call_ns;
    return a > b ? static_cast<uint64_t>(a) - static_cast<uint64_t>(b)
                 : static_cast<uint64_t>(b) - static_cast<uint64_t>(a);
  };
  std::vector<size_t> chosen;
  for (size_t i = 0; i < kh.ops.size(); ++i) {
    if (priority[i] != INT_MAX) chosen.push_back(i);
  }
  std::sort(chosen.begin(), chosen.end(), [&](size_t a, size_t b) {
    return std::make_tuple(priority[a], distance(a), a) <
           std::make_tuple(priority[b], distance(b), b);
  });
  if (chosen.size() > static_cast<size_t>(std::max(max_ops, 1))) {
    chosen.resize(static_cast<size_t>(std::max(max_ops, 1)));
  }
  std::sort(chosen.begin(), chosen.end(), [&](size_t a, size_t b) {
    return std::make_pair(kh.ops[a].call_ns, a) < std::make_pair(kh.ops[b].call_ns, b);
  });
  std::vector<int32_t> window;
  for (size_t i : chosen) window.push_back(static_cast<int32_t>(i));
  return window;
}

void ExplainNotLinearizable(const std::vector<Operation>& h, int64_t origin_ns,
                            const KeyHistory& kh, const Progress& p, int max_window_ops,
                            CheckResult* result) {
  std::string& out = result->explanation;
  if (p.blocked_op < 0) {  // unreachable: a failed search always stops at some op's return
    absl::StrAppend(&out, "not linearizable: key ", Quote(kh.key), "\n");
    return;
  }
  const KeyOp& blocked = kh.ops[static_cast<size_t>(p.blocked_op)];
  absl::StrAppend(
      &out, "not linearizable: key ", Quote(kh.key), " (", kh.ops.size(), " ops checked, ",
      kh.ignored_ops,
      " ignored: failed ops, unknown-outcome gets, unknown-outcome puts nobody read)\n");
  std::string value = "<absent>";
  if (p.last_put_op >= 0) {
    const size_t writer = kh.ops[static_cast<size_t>(p.last_put_op)].history_index;
    value = absl::StrCat(Quote(h[writer].value), " (written by #", writer, ")");
  }
  absl::StrAppend(&out, "The longest partial linearization found has ", p.depth,
                  " ops; after it the register holds ", value,
                  ", and this op returned before it could be linearized:\n    #",
                  blocked.history_index, " ", Describe(h[blocked.history_index], origin_ns), "\n");
  if (!p.last_linearized.empty()) {
    absl::StrAppend(&out, "The partial linearization ends with:");
    for (int32_t op : p.last_linearized) {
      absl::StrAppend(&out, " #", kh.ops[static_cast<size_t>(op)].history_index);
    }
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out,
                  "Ops around it (times relative to the first call of the history; L = in that "
                  "partial linearization, X = the op above, . = not linearized):\n");
  for (int32_t op : SelectWindow(kh, p, max_window_ops)) {
    const size_t i = static_cast<size_t>(op);
    const bool linearized = p.linearized.Contains(static_cast<uint32_t>(i));
    const char* mark = op == p.blocked_op ? "X" : linearized ? "L" : ".";
    const size_t index = kh.ops[i].history_index;
    absl::StrAppend(&out, "  ", mark, " #", index, " ", Describe(h[index], origin_ns), "\n");
    result->window.push_back(index);
  }
}

void ExplainViolation(const std::vector<Operation>& h, int64_t origin_ns,
                      const std::string& headline, const Violation& v, CheckResult* result) {
  result->key = v.key;
  absl::StrAppend(&result->explanation, headline, v.message,
                  "\n  (times relative to the first call of the history)\n");
  for (size_t i : v.ops) {
    absl::StrAppend(&result->explanation, "    #", i, " ", Describe(h[i], origin_ns), "\n");
    result->window.push_back(i);
  }
}

}  // namespace

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kUnknown:
      return "unknown";
    case Outcome::kFailed:
      return "failed";
  }
  return "?";
}

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kLinearizable:
      return "linearizable";
    case Verdict::kNotLinearizable:
      return "not linearizable";
    case Verdict::kUnknown:
      return "unknown (budget exceeded)";
    case Verdict::kInvalidHistory:
      return "invalid history";
  }
  return "?";
}

std::string Describe(const Operation& op) { return Describe(op, 0); }

std::string Describe(const Operation& op, int64_t origin_ns) {
  std::string out = absl::StrCat("c", op.client_id, " ");
  if (op.kind == OpKind::kPut) {
    absl::StrAppend(&out, "put ", Quote(op.key), " = ", Quote(op.value));
  } else if (op.outcome != Outcome::kOk) {
    absl::StrAppend(&out, "get ", Quote(op.key), " -> ?");
  } else {
    absl::StrAppend(&out, "get ", Quote(op.key), " -> ",
                    op.found ? Quote(op.value) : std::string("<not found>"));
  }
  if (op.revision != 0) absl::StrAppend(&out, " rev=", op.revision);
  const int64_t return_ns = op.outcome == Outcome::kUnknown ? kInfinityNs : op.return_ns;
  absl::StrAppend(&out, " [", FormatRelativeTime(op.call_ns, origin_ns), ", ",
                  FormatRelativeTime(return_ns, origin_ns),
                  op.outcome == Outcome::kUnknown ? ") " : "] ", OutcomeName(op.outcome));
  return out;
}

absl::Status ValidateHistory(const std::vector<Operation>& history) {
  // Op ids are int32_t inside the search.
  constexpr size_t kMaxOps = size_t{1} << 30;
  if (history.size() > kMaxOps) {
    return absl::InvalidArgumentError(
        absl::StrCat("history has ", history.size(), " ops; at most ", kMaxOps, " are supported"));
  }
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& op = history[i];
    auto invalid = [&](const char* why) {
      return absl::InvalidArgumentError(absl::StrCat("op #", i, " ", why, ": ", Describe(op)));
    };
    if (op.outcome == Outcome::kOk && op.return_ns < op.call_ns) {
      return invalid("returns before its call");
    }
    if (op.revision < 0) return invalid("has a negative revision");
    if (op.kind == OpKind::kGet && op.outcome == Outcome::kOk && !op.found &&
        (!op.value.empty() || op.revision != 0)) {
      return invalid("is a not-found get with a value or a revision");
    }
  }
  return absl::OkStatus();
}

CheckResult Check(const std::vector<Operation>& history, const CheckOptions& options) {
  const Clock::time_point start = Clock::now();
  CheckResult result;
  auto finish = [&](Verdict verdict) {
    result.verdict = verdict;
    result.elapsed_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    return result;
  };
  if (absl::Status status = ValidateHistory(history); !status.ok()) {
    result.explanation = std::string(status.message());
    return finish(Verdict::kInvalidHistory);
  }
  int64_t origin_ns = 0;
  if (!history.empty()) {
    origin_ns = std::min_element(history.begin(), history.end(), [](const auto& a, const auto& b) {
                  return a.call_ns < b.call_ns;
                })->call_ns;
  }

  if (options.check_revisions) {
    if (std::optional<Violation> v = CheckRevisions(history)) {
      ExplainViolation(history, origin_ns, "not linearizable (revision check): ", *v, &result);
      return finish(Verdict::kNotLinearizable);
    }
  }

  std::map<std::string, std::vector<size_t>> ops_by_key;
  for (size_t i = 0; i < history.size(); ++i) ops_by_key[history[i].key].push_back(i);
  // Small keys first: a violation there is found before a big key can use up the budget.
  std::vector<const std::pair<const std::string, std::vector<size_t>>*> keys;
  for (const auto& entry : ops_by_key) keys.push_back(&entry);
  std::stable_sort(keys.begin(), keys.end(), [](const auto* a, const auto* b) {
    return a->second.size() < b->second.size();
  });

  Budget budget;
  budget.max_explored_states = options.max_explored_states;
  budget.max_memo_bytes = options.max_memo_bytes;
  budget.deadline = start + std::chrono::milliseconds(std::max<int64_t>(options.deadline_ms, 0));
  for (const auto* key_ops : keys) {
    const KeyHistory kh = BuildKeyHistory(history, key_ops->first, key_ops->second);
    // A read of a value no put on the key wrote needs no search (and gets a clearer message).
    for (const KeyOp& op : kh.ops) {
      if (op.value_id != kNeverWritten) continue;
      Violation v{kh.key,
                  "a get observed a value that no put of its key wrote (failed puts do not count):",
                  {op.history_index}};
      ExplainViolation(history, origin_ns, "not linearizable: ", v, &result);
      result.explored_states = budget.explored_states;
      return finish(Verdict::kNotLinearizable);
    }
    Progress progress;
    const SearchOutcome outcome = KeySearch(kh, &budget).Run(&progress);
    result.explored_states = budget.explored_states;
    if (outcome == SearchOutcome::kNotLinearizable) {
      result.key = kh.key;
      ExplainNotLinearizable(history, origin_ns, kh, progress, options.max_window_ops, &result);
      return finish(Verdict::kNotLinearizable);
    }
    if (outcome == SearchOutcome::kBudgetExceeded) {
      result.key = kh.key;
      result.explanation = absl::StrCat(
          "unknown: ", budget.exhausted, " while checking key ", Quote(kh.key), " (", kh.ops.size(),
          " ops) after ", result.keys_checked, " of ", keys.size(),
          " keys were found linearizable; ", budget.explored_states, " states explored\n");
      return finish(Verdict::kUnknown);
    }
    ++result.keys_checked;
  }
  return finish(Verdict::kLinearizable);
}

}  // namespace meridian::lincheck
