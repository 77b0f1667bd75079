#include "node/raft/sim/checker.h"

#include "absl/strings/str_cat.h"

namespace meridian::raft::sim {

uint64_t HashBytes(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t MixHash(uint64_t state, uint64_t index, uint64_t term, uint64_t data_hash) {
  uint64_t h = state ^ (index * 0x9E3779B97F4A7C15ull);
  h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull;
  h ^= term * 0x94D049BB133111EBull;
  h = (h ^ (h >> 31)) * 0xD6E8FEB86659FD93ull;
  h ^= data_hash;
  return h ^ (h >> 32);
}

void Checker::Fail(std::string what) {
  if (failure_.empty()) failure_ = std::move(what);
}

void Checker::OnPersistEntries(uint64_t node, const std::vector<Entry>& entries,
                               std::optional<uint64_t> prev_term) {
  for (const Entry& e : entries) {
    EntryRecord rec{HashBytes(e.data), e.type, prev_term};
    auto [it, inserted] = entries_.emplace(std::make_pair(e.index, e.term), rec);
    if (!inserted) {
      const EntryRecord& old = it->second;
      if (old.data_hash != rec.data_hash || old.type != rec.type) {
        Fail(absl::StrCat("log matching: node ", node, " persisted entry ", e.term, "/", e.index,
                          " with different data than another node"));
        return;
      }
      if (old.prev_term && prev_term && *old.prev_term != *prev_term) {
        Fail(absl::StrCat("log matching: node ", node, " has entry ", e.term, "/", e.index,
                          " after term ", *prev_term, " but another node has it after term ",
                          *old.prev_term));
        return;
      }
      if (!old.prev_term && prev_term) it->second.prev_term = prev_term;
    }
    prev_term = e.term;
  }
}

void Checker::OnPersistHardState(uint64_t node, const HardState& before, const HardState& after) {
  if (after.term < before.term) {
    Fail(absl::StrCat("durable term of node ", node, " went back from ", before.term, " to ",
                      after.term));
  } else if (after.term == before.term && before.vote != kNone && after.vote != before.vote) {
    Fail(absl::StrCat("node ", node, " changed its durable vote in term ", after.term, " from ",
                      before.vote, " to ", after.vote));
  } else if (after.commit < before.commit) {
    Fail(absl::StrCat("durable commit of node ", node, " went back from ", before.commit, " to ",
                      after.commit));
  }
}

void Checker::OnApplyEntry(uint64_t node, uint64_t prev_applied, const Entry& e, uint64_t commit,
                           uint64_t state_hash_after) {
  if (e.index != prev_applied + 1) {
    Fail(absl::StrCat("node ", node, " applied entry ", e.index, " after ", prev_applied));
    return;
  }
  if (e.index > commit) {
    Fail(absl::StrCat("node ", node, " applied entry ", e.index, " beyond its commit ", commit));
    return;
  }
  auto ct = committed_term_.find(e.index);
  if (ct != committed_term_.end() && ct->second != e.term) {
    Fail(absl::StrCat("node ", node, " applied ", e.term, "/", e.index,
                      " but the committed entry there has term ", ct->second));
    return;
  }
  auto [it, inserted] = applied_.emplace(e.index, std::make_pair(e.term, HashBytes(e.data)));
  if (!inserted && it->second != std::make_pair(e.term, HashBytes(e.data))) {
    Fail(absl::StrCat("state machine safety: node ", node, " applied ", e.term, "/", e.index,
                      " but another node applied term ", it->second.first, " there"));
    return;
  }
  auto [hit, hinserted] = state_hash_.emplace(e.index, state_hash_after);
  if (!hinserted && hit->second != state_hash_after) {
    Fail(absl::StrCat("state machine safety: node ", node, " reached a different state at index ",
                      e.index));
  }
}

void Checker::OnApplySnapshot(uint64_t node, const SnapshotMetadata& md, uint64_t state_hash) {
  auto ct = committed_term_.find(md.index);
  if (ct != committed_term_.end() && ct->second != md.term) {
    Fail(absl::StrCat("node ", node, " applied snapshot ", md.term, "/", md.index,
                      " but the committed entry there has term ", ct->second));
    return;
  }
  auto hit = state_hash_.find(md.index);
  if (hit == state_hash_.end()) {
    Fail(absl::StrCat("node ", node, " applied snapshot at ", md.index,
                      " which no node has applied"));
  } else if (hit->second != state_hash) {
    Fail(absl::StrCat("state machine safety: snapshot at ", md.index, " applied by node ", node,
                      " differs from the state other nodes reached there"));
  }
}

void Checker::OnCommitted(uint64_t node, const RaftLog& log, uint64_t* recorded) {
  const uint64_t commit = log.committed();
  if (commit <= *recorded) return;
  uint64_t lo = std::max(*recorded + 1, log.FirstIndex() - 1);
  for (uint64_t i = lo; i <= commit; ++i) {
    absl::StatusOr<uint64_t> term = log.Term(i);
    if (!term.ok()) {
      Fail(absl::StrCat("node ", node, " committed ", commit, " but has no term for ", i, ": ",
                        term.status().ToString()));
      return;
    }
    if (i == 0) continue;
    auto [it, inserted] = committed_term_.emplace(i, *term);
    if (!inserted && it->second != *term) {
      Fail(absl::StrCat("committed entry mismatch: node ", node, " committed term ", *term,
                        " at index ", i, " but term ", it->second, " was committed there"));
      return;
    }
  }
  *recorded = commit;
  max_committed_ = std::max(max_committed_, commit);
}

void Checker::OnLeader(uint64_t node, uint64_t term, const RaftLog& log) {
  auto [it, inserted] = leader_of_term_.emplace(term, node);
  if (!inserted && it->second != node) {
    Fail(absl::StrCat("election safety: nodes ", it->second, " and ", node,
                      " are both leader of term ", term));
    return;
  }
  if (!completeness_checked_.insert({node, term}).second) return;
  // Everything committed so far must be in the new leader's log (entries it compacted were
  // committed and applied by it already).
  const uint64_t first = log.FirstIndex();
  for (auto ct = committed_term_.lower_bound(first); ct != committed_term_.end(); ++ct) {
    absl::StatusOr<uint64_t> t = log.Term(ct->first);
    if (!t.ok() || *t != ct->second) {
      Fail(absl::StrCat("leader completeness: node ", node, " became leader of term ", term,
                        " without committed entry ", ct->second, "/", ct->first,
                        " (its term there: ", t.ok() ? std::to_string(*t) : t.status().ToString(),
                        ", last index ", log.LastIndex(), ")"));
      return;
    }
  }
}

void Checker::OnReadState(uint64_t node, const ReadState& rs) {
  auto it = read_floor_.find(rs.context);
  if (it == read_floor_.end()) return;  // a duplicate answer
  if (rs.index < it->second) {
    Fail(absl::StrCat("linearizability: node ", node, " got read index ", rs.index, " for \"",
                      rs.context, "\" but ", it->second, " was committed before the read"));
  }
  read_floor_.erase(it);
}

}  // namespace meridian::raft::sim
