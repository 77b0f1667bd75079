#include "node/mvcc/store.h"

#include <pthread.h>
#include <rocksdb/cache.h>
#include <rocksdb/comparator.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/write_batch_with_index.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "node/wal/crc32c.h"

namespace meridian::mvcc {
namespace {

constexpr std::string_view kMetaConsistentIndex = "consistent_index";
constexpr std::string_view kMetaRev = "rev";
constexpr std::string_view kMetaCompactRev = "compact_rev";
constexpr std::string_view kMetaFinishedCompactRev = "finished_compact_rev";

// Orders index keys by user key ascending, then revision descending (see keys.h).
class IndexComparator : public rocksdb::Comparator {
 public:
  const char* Name() const override { return "meridian.IndexComparator.v1"; }
  int Compare(const rocksdb::Slice& a, const rocksdb::Slice& b) const override {
    if (a.size() < kRevisionBytes || b.size() < kRevisionBytes) return a.compare(b);
    rocksdb::Slice ka(a.data(), a.size() - kRevisionBytes);
    rocksdb::Slice kb(b.data(), b.size() - kRevisionBytes);
    int c = ka.compare(kb);
    if (c != 0) return c;
    c = memcmp(a.data() + ka.size(), b.data() + kb.size(), kRevisionBytes);
    return c < 0 ? 1 : (c > 0 ? -1 : 0);
  }
  // Shortening separators would have to respect the split key; not worth it for this CF.
  void FindShortestSeparator(std::string*, const rocksdb::Slice&) const override {}
  void FindShortSuccessor(std::string*) const override {}
};

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsCorruption())
    return absl::DataLossError(absl::StrCat(std::string(what), ": ", s.ToString()));
  if (s.IsNoSpace())
    return absl::ResourceExhaustedError(absl::StrCat(std::string(what), ": ", s.ToString()));
  return absl::InternalError(absl::StrCat(std::string(what), ": ", s.ToString()));
}

std::string EncodeU64(uint64_t v) {
  std::string out;
  PutBigEndian64(&out, v);
  return out;
}

absl::StatusOr<mvccpb::KeyValue> ParseKv(std::string_view bytes) {
  mvccpb::KeyValue kv;
  if (!kv.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("mvcc: undecodable key-value record");
  }
  return kv;
}

// Reads that work the same on a committed snapshot (ReadView) and on an open apply batch.
struct ReadSource {
  // `upper_bound` (may be null; must outlive the iterator) ends the iteration inside RocksDB, so
  // that a range followed by many deleted keys does not step over all of their tombstones
  // looking for the next live key past the range.
  std::function<std::unique_ptr<rocksdb::Iterator>(rocksdb::ColumnFamilyHandle*,
                                                   const rocksdb::Slice* upper_bound)>
      new_iter;
  std::function<rocksdb::Status(rocksdb::ColumnFamilyHandle*, const rocksdb::Slice&, std::string*)>
      get;
};

void KeepOrDrop(RangeResult* out, const RangeOptions& opts, std::string_view bytes,
                absl::Status* err) {
  out->count++;
  if (opts.count_only) return;
  if (opts.limit > 0 && static_cast<int64_t>(out->kvs.size()) >= opts.limit) return;
  auto kv = ParseKv(bytes);
  if (!kv.ok()) {
    *err = kv.status();
    return;
  }
  if (opts.keys_only) kv->clear_value();
  out->kvs.push_back(std::move(*kv));
}

// The keys a scan counted, for the list cache; gives up past what the cache would keep.
class KeySink {
 public:
  explicit KeySink(const ListCache* cache) : cache_(cache) {}
  void Add(std::string_view key) {
    if (full_) return;
    key_bytes_ += key.size();
    if (!cache_->Fits(key_bytes_, keys_.size() + 1)) {
      full_ = true;
      keys_ = {};
      return;
    }
    keys_.emplace_back(key);
  }
  bool full() const { return full_; }
  std::vector<std::string> Take() { return std::move(keys_); }

 private:
  const ListCache* cache_;
  std::vector<std::string> keys_;
  size_t key_bytes_ = 0;
  bool full_ = false;
};

// Range over the latest values (the kv CF).
absl::Status RangeLatest(const ReadSource& src, rocksdb::ColumnFamilyHandle* kv_cf,
                         const KeyRange& range, const RangeOptions& opts, RangeResult* out,
                         KeySink* keys = nullptr) {
  absl::Status err;
  if (range.single()) {
    std::string value;
    auto s = src.get(kv_cf, rocksdb::Slice(range.key().data(), range.key().size()), &value);
    if (s.IsNotFound()) return absl::OkStatus();
    if (!s.ok()) return FromRocks(s, "range");
    KeepOrDrop(out, opts, value, &err);
    return err;
  }
  const rocksdb::Slice upper(range.end().data(), range.end().size());
  auto it = src.new_iter(kv_cf, range.unbounded() ? nullptr : &upper);
  for (it->Seek(rocksdb::Slice(range.key().data(), range.key().size())); it->Valid(); it->Next()) {
    auto k = it->key();
    if (range.Past(std::string_view(k.data(), k.size()))) break;
    if (keys != nullptr) keys->Add(std::string_view(k.data(), k.size()));
    KeepOrDrop(out, opts, std::string_view(it->value().data(), it->value().size()), &err);
    if (!err.ok()) return err;
  }
  return FromRocks(it->status(), "range");
}

// Range at an older revision through the index CF. Keys usually have few revisions, so the scan
// steps with Next() and only seeks when a key has many revisions to skip.
absl::Status RangeAt(const ReadSource& src, rocksdb::ColumnFamilyHandle* idx_cf,
                     rocksdb::ColumnFamilyHandle* hist_cf, const KeyRange& range, int64_t rev,
                     const RangeOptions& opts, RangeResult* out, KeySink* keys = nullptr) {
  constexpr int kStepsBeforeSeek = 8;
  const Revision at{rev, INT64_MAX};
  // The first index entry of the key after the range (revisions sort newest first).
  const Revision first_of_key{INT64_MAX, INT64_MAX};
  const std::string upper = range.single()
                                ? EncodeIndexKey(std::string(range.key()) + '\0', first_of_key)
                            : range.unbounded() ? std::string()
                                                : EncodeIndexKey(range.end(), first_of_key);
  const rocksdb::Slice upper_slice(upper);
  auto it = src.new_iter(idx_cf, upper.empty() ? nullptr : &upper_slice);
  absl::Status err;
  auto user_key_of = [&]() {
    return IndexUserKey(std::string_view(it->key().data(), it->key().size()));
  };
  it->Seek(EncodeIndexKey(range.key(), at));
  std::string user_key;
  while (it->Valid()) {
    user_key.assign(user_key_of());
    if (range.single() ? user_key != range.key() : range.Past(user_key)) break;
    // Skip this key's revisions newer than `rev`.
    int steps = 0;
    while (it->Valid() && user_key_of() == user_key &&
           IndexRevision(std::string_view(it->key().data(), it->key().size())).main > rev) {
      if (++steps > kStepsBeforeSeek) {
        it->Seek(EncodeIndexKey(user_key, at));
      } else {
        it->Next();
      }
    }
    if (!it->Valid()) break;
    if (user_key_of() != user_key) continue;  // no revision <= rev: the key did not exist yet
    Revision r = IndexRevision(std::string_view(it->key().data(), it->key().size()));
    if (it->value().size() == 1 && it->value()[0] == kIndexPut) {
      if (keys != nullptr) keys->Add(user_key);
      bool want_value = !opts.count_only &&
                        (opts.limit == 0 || static_cast<int64_t>(out->kvs.size()) < opts.limit);
      if (want_value) {
        std::string hist;
        auto s = src.get(hist_cf, EncodeRevision(r), &hist);
        if (!s.ok()) return FromRocks(s, absl::StrCat("range: history of revision ", r.main));
        if (hist.empty()) return absl::DataLossError("mvcc: empty history record");
        KeepOrDrop(out, opts, std::string_view(hist).substr(1), &err);
        if (!err.ok()) return err;
      } else {
        out->count++;
      }
    }
    if (range.single()) break;
    // On to the next key: step over this key's older revisions.
    steps = 0;
    it->Next();
    while (it->Valid() && user_key_of() == user_key) {
      if (++steps > kStepsBeforeSeek) {
        // (user_key, 0/0) sorts after every revision of user_key.
        it->Seek(EncodeIndexKey(user_key, Revision{0, 0}));
        if (it->Valid() && user_key_of() == user_key) it->Next();
        break;
      }
      it->Next();
    }
  }
  return FromRocks(it->status(), "range");
}

absl::Status CheckRev(int64_t rev, int64_t current, int64_t compact) {
  if (rev > current) return absl::OutOfRangeError(kErrFutureRev);
  if (rev > 0 && rev < compact) return absl::OutOfRangeError(kErrCompacted);
  return absl::OkStatus();
}

}  // namespace

bool KeyRange::Contains(std::string_view k) const {
  if (single()) return k == key_;
  if (k < key_) return false;
  return unbounded() || k < end_;
}

bool KeyRange::Past(std::string_view k) const {
  if (single()) return k > key_;
  return !unbounded() && k >= end_;
}

// ---------------------------------------------------------------------------------------------
// ReadView

ReadView::~ReadView() { store_->db_->ReleaseSnapshot(snapshot_); }

namespace {
ReadSource SnapshotSource(rocksdb::DB* db, const rocksdb::Snapshot* snap) {
  return ReadSource{
      [db, snap](rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice* upper_bound) {
        rocksdb::ReadOptions ro;
        ro.snapshot = snap;
        ro.iterate_upper_bound = upper_bound;
        return std::unique_ptr<rocksdb::Iterator>(db->NewIterator(ro, cf));
      },
      [db, snap](rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& k, std::string* v) {
        rocksdb::ReadOptions ro;
        ro.snapshot = snap;
        return db->Get(ro, cf, k, v);
      }};
}
}  // namespace

absl::StatusOr<RangeResult> ReadView::Range(std::string_view key, std::string_view end,
                                            const RangeOptions& opts_in) const {
  RangeOptions opts = opts_in;
  if (opts.rev < 0) opts.rev = 0;  // etcd reads a negative revision as the current one
  if (auto s = CheckRev(opts.rev, rev_, compact_rev_); !s.ok()) return s;
  RangeResult out;
  out.rev = rev_;
  KeyRange range(key, end);
  if (!range.single() && !range.unbounded() && end <= key) return out;
  auto src = SnapshotSource(store_->db_, snapshot_);
  const int64_t at = opts.rev == 0 ? rev_ : opts.rev;
  auto scan = [&](const KeyRange& r, const RangeOptions& o, RangeResult* result, KeySink* keys) {
    return at == rev_ ? RangeLatest(src, store_->kv_cf_, r, o, result, keys)
                      : RangeAt(src, store_->idx_cf_, store_->hist_cf_, r, at, o, result, keys);
  };
  ListCache* cache = store_->list_cache_.get();
  if (cache == nullptr || range.single() || opts.limit <= 0) {
    if (auto s = scan(range, opts, &out, nullptr); !s.ok()) return s;
    return out;
  }
  // A page of a list. The range's keys at this revision come from the cache: recorded by an
  // earlier page at this revision, or brought up to it from an older entry by the history since
  // (each list's first page reads the current revision). Only this page's records are read.
  std::shared_ptr<const ListCache::Entry> entry = cache->Find(key, end, at);
  if (entry == nullptr) {
    if (auto base = cache->FindBase(key, end, at, compact_rev_, kMaxListDeltaRevs)) {
      auto keys = KeysSince(*base, at);
      if (!keys.ok()) return keys.status();
      if (keys->has_value()) {
        entry = cache->Insert(base->start, base->end, at, std::move(**keys), compact_rev_);
      }
    }
  }
  if (entry != nullptr) {
    auto first = std::lower_bound(entry->keys.begin(), entry->keys.end(), key);
    const int64_t left = entry->keys.end() - first;
    out.count = left;
    if (opts.count_only) return out;
    RangeOptions one_opts = opts;
    one_opts.limit = 0;
    for (int64_t i = 0; i < std::min(left, opts.limit); ++i) {
      RangeResult one;
      if (auto s = scan(KeyRange(first[i], ""), one_opts, &one, nullptr); !s.ok()) return s;
      if (one.count != 1) {
        fprintf(stderr, "mvcc: the list cache has key %s at rev %lld, the store %lld of it\n",
                absl::CEscape(first[i]).c_str(), static_cast<long long>(at),
                static_cast<long long>(one.count));
        std::abort();
      }
      out.kvs.push_back(std::move(one.kvs[0]));
    }
    return out;
  }
  KeySink keys(cache);
  if (auto s = scan(range, opts, &out, &keys); !s.ok()) return s;
  if (out.count > opts.limit && !keys.full()) {
    cache->Insert(std::string(key), std::string(end), at, keys.Take(), compact_rev_);
  }
  return out;
}

absl::StatusOr<std::optional<std::vector<std::string>>> ReadView::KeysSince(
    const ListCache::Entry& base, int64_t rev) const {
  // Key -> alive at `rev`, from the events after the base's revision (the last one wins).
  std::map<std::string, bool, std::less<>> changes;
  const KeyRange covered(base.start, base.end);
  size_t events = 0;
  for (int64_t from = base.rev + 1; from <= rev;) {
    std::vector<mvccpb::Event> batch;
    int64_t next = from;
    if (auto s = ReadEvents(from, 1024, &batch, &next); !s.ok()) return s;
    for (auto& ev : batch) {
      if (ev.kv().mod_revision() > rev) break;
      if (!covered.Contains(ev.kv().key())) continue;
      changes.insert_or_assign(std::move(*ev.mutable_kv()->mutable_key()),
                               ev.type() == mvccpb::Event::PUT);
    }
    events += batch.size();
    if (events > kMaxListDeltaEvents) return std::nullopt;  // a full scan is cheaper
    if (next <= from) break;
    from = next;
  }
  std::vector<std::string> keys;
  keys.reserve(base.keys.size() + changes.size());
  auto k = base.keys.begin();
  auto c = changes.begin();
  while (k != base.keys.end() || c != changes.end()) {
    if (c == changes.end() || (k != base.keys.end() && *k < c->first)) {
      keys.push_back(*k++);
      continue;
    }
    if (k != base.keys.end() && *k == c->first) ++k;
    if (c->second) keys.push_back(c->first);
    ++c;
  }
  return keys;
}

absl::StatusOr<std::optional<mvccpb::KeyValue>> ReadView::Get(std::string_view key,
                                                              int64_t rev) const {
  RangeOptions opts;
  opts.rev = rev;
  RangeResult out;
  auto src = SnapshotSource(store_->db_, snapshot_);
  if (rev <= 0) return std::optional<mvccpb::KeyValue>();
  auto s = RangeAt(src, store_->idx_cf_, store_->hist_cf_, KeyRange(key, ""), rev, opts, &out);
  if (!s.ok()) return s;
  if (out.kvs.empty()) return std::optional<mvccpb::KeyValue>();
  return std::optional<mvccpb::KeyValue>(std::move(out.kvs[0]));
}

absl::Status ReadView::ReadEvents(int64_t from_rev, size_t max_events,
                                  std::vector<mvccpb::Event>* out, int64_t* next_rev) const {
  if (from_rev <= compact_rev_) return absl::OutOfRangeError(kErrCompacted);
  *next_rev = from_rev;
  if (from_rev > rev_) return absl::OkStatus();
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  std::unique_ptr<rocksdb::Iterator> it(store_->db_->NewIterator(ro, store_->hist_cf_));
  size_t n = 0;
  int64_t last_main = -1;
  for (it->Seek(EncodeRevision(Revision{from_rev, 0})); it->Valid(); it->Next()) {
    Revision r = DecodeRevision(std::string_view(it->key().data(), it->key().size()));
    if (r.main > rev_) break;
    if (n >= max_events && r.main != last_main) {
      *next_rev = r.main;
      return absl::OkStatus();
    }
    std::string_view v(it->value().data(), it->value().size());
    if (v.empty()) return absl::DataLossError("mvcc: empty history record");
    auto kv = ParseKv(v.substr(1));
    if (!kv.ok()) return kv.status();
    mvccpb::Event ev;
    ev.set_type(v[0] == kHistDelete ? mvccpb::Event::DELETE : mvccpb::Event::PUT);
    *ev.mutable_kv() = std::move(*kv);
    out->push_back(std::move(ev));
    ++n;
    last_main = r.main;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read events");
  *next_rev = rev_ + 1;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadView::LeaseKeys(int64_t lease_id) const {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  std::unique_ptr<rocksdb::Iterator> it(store_->db_->NewIterator(ro, store_->lkeys_cf_));
  std::string prefix = EncodeU64(static_cast<uint64_t>(lease_id));
  std::vector<std::string> keys;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    keys.emplace_back(it->key().data() + 8, it->key().size() - 8);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
  return keys;
}

absl::StatusOr<std::vector<LeaseRecord>> ReadView::Leases() const {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  std::unique_ptr<rocksdb::Iterator> it(store_->db_->NewIterator(ro, store_->lease_cf_));
  std::vector<LeaseRecord> out;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 8 || it->value().size() != 8) {
      return absl::DataLossError("mvcc: malformed lease record");
    }
    out.push_back(
        LeaseRecord{static_cast<int64_t>(GetBigEndian64(std::string_view(it->key().data(), 8))),
                    static_cast<int64_t>(GetBigEndian64(std::string_view(it->value().data(), 8)))});
  }
  if (!it->status().ok()) return FromRocks(it->status(), "leases");
  return out;
}

absl::StatusOr<uint32_t> ReadView::HashKV(int64_t rev) const {
  if (rev == 0) rev = rev_;
  if (auto s = CheckRev(rev, rev_, compact_rev_); !s.ok()) return s;
  // FNV-1a: deterministic across members and builds, which is all HashKV promises.
  uint32_t h = 2166136261u;
  auto mix = [&h](std::string_view bytes) {
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 16777619u;
    }
  };
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot_;
  std::unique_ptr<rocksdb::Iterator> it(store_->db_->NewIterator(ro, store_->hist_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (DecodeRevision(k).main > rev) break;
    mix(k);
    mix(std::string_view(it->value().data(), it->value().size()));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "hashkv");
  return h;
}

// ---------------------------------------------------------------------------------------------
// WriteTxn

namespace {
ReadSource BatchSource(rocksdb::DB* db, rocksdb::WriteBatchWithIndex* wb) {
  return ReadSource{
      [db, wb](rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice* /*upper_bound*/) {
        // No bound here: the batch's own writes are merged over the base iterator, and the
        // callers stop at the end of their range themselves.
        rocksdb::ReadOptions ro;
        return std::unique_ptr<rocksdb::Iterator>(
            wb->NewIteratorWithBase(cf, db->NewIterator(ro, cf)));
      },
      [db, wb](rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& k, std::string* v) {
        return wb->GetFromBatchAndDB(db, rocksdb::ReadOptions(), cf, k, v);
      }};
}
}  // namespace

absl::StatusOr<RangeResult> WriteTxn::Range(std::string_view key, std::string_view end,
                                            const RangeOptions& opts_in) {
  RangeOptions opts = opts_in;
  if (opts.rev < 0) opts.rev = 0;  // etcd reads a negative revision as the current one
  Store* st = batch_->store_;
  // Reads inside the transaction see its own writes: its current revision is the one it writes.
  int64_t current = changed() ? rev_ : rev_ - 1;
  if (auto s = CheckRev(opts.rev, current, batch_->compact_rev_); !s.ok()) return s;
  RangeResult out;
  out.rev = current;
  KeyRange range(key, end);
  if (!range.single() && !range.unbounded() && end <= key) return out;
  const bool latest = opts.rev == 0 || opts.rev == current;
  if (latest && range.single()) return RangeSingleLatest(key, opts, current);
  auto src = BatchSource(st->db_, batch_->Indexed());
  absl::Status s = latest ? RangeLatest(src, st->kv_cf_, range, opts, &out)
                          : RangeAt(src, st->idx_cf_, st->hist_cf_, range, opts.rev, opts, &out);
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<RangeResult> WriteTxn::RangeSingleLatest(std::string_view key,
                                                        const RangeOptions& opts, int64_t current) {
  RangeResult out;
  out.rev = current;
  auto kv = GetLatest(key);
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) return out;
  out.count = 1;
  if (opts.count_only) return out;
  if (opts.keys_only) (*kv)->clear_value();
  out.kvs.push_back(std::move(**kv));
  return out;
}

absl::StatusOr<std::optional<mvccpb::KeyValue>> WriteTxn::GetLatest(std::string_view key) {
  // This batch's own writes first, then what the store committed: the cache, then RocksDB.
  if (auto it = batch_->latest_.find(absl::string_view(key.data(), key.size()));
      it != batch_->latest_.end())
    return it->second;
  Store* st = batch_->store_;
  LatestCache* cache = st->latest_cache_.get();
  if (cache != nullptr) {
    if (auto kv = cache->Get(key); kv.has_value()) return kv;
  }
  std::string value;
  auto s = st->db_->Get(rocksdb::ReadOptions(), st->kv_cf_, rocksdb::Slice(key.data(), key.size()),
                        &value);
  if (s.IsNotFound()) return std::optional<mvccpb::KeyValue>();
  if (!s.ok()) return FromRocks(s, "get");
  auto kv = ParseKv(value);
  if (!kv.ok()) return kv.status();
  if (cache != nullptr) cache->Put(*kv);
  return std::optional<mvccpb::KeyValue>(std::move(*kv));
}

absl::StatusOr<std::optional<mvccpb::KeyValue>> WriteTxn::Put(std::string_view key,
                                                              std::string_view value,
                                                              int64_t lease) {
  auto prev = GetLatest(key);
  if (!prev.ok()) return prev.status();
  Store* st = batch_->store_;
  ApplyBatch* b = batch_;
  Revision r{rev_, sub_++};
  mvccpb::KeyValue kv;
  kv.set_key(key.data(), key.size());
  kv.set_value(value.data(), value.size());
  kv.set_lease(lease);
  kv.set_mod_revision(rev_);
  kv.set_create_revision(prev->has_value() ? (*prev)->create_revision() : rev_);
  kv.set_version(prev->has_value() ? (*prev)->version() + 1 : 1);
  std::string hist;
  hist.reserve(kv.ByteSizeLong() + 1);
  hist.push_back(kHistPut);
  kv.AppendToString(&hist);
  const std::string_view bytes = std::string_view(hist).substr(1);
  b->Put(st->kv_cf_, key, bytes);
  b->Put(st->idx_cf_, EncodeIndexKey(key, r), std::string_view(&kIndexPut, 1));
  b->Put(st->hist_cf_, EncodeRevision(r), hist);
  if (prev->has_value() && (*prev)->lease() != 0 && (*prev)->lease() != lease) {
    b->Delete(st->lkeys_cf_, EncodeLeaseKey((*prev)->lease(), key));
  }
  if (lease != 0) b->Put(st->lkeys_cf_, EncodeLeaseKey(lease, key), std::string_view());
  b->latest_.insert_or_assign(std::string(key), std::optional<mvccpb::KeyValue>(kv));
  mvccpb::Event ev;
  ev.set_type(mvccpb::Event::PUT);
  *ev.mutable_kv() = std::move(kv);
  if (prev->has_value()) *ev.mutable_prev_kv() = **prev;
  batch_->events_.push_back(std::move(ev));
  return prev;
}

absl::StatusOr<std::vector<mvccpb::KeyValue>> WriteTxn::DeleteRange(std::string_view key,
                                                                    std::string_view end) {
  RangeOptions opts;
  auto found = Range(key, end, opts);
  if (!found.ok()) return found.status();
  Store* st = batch_->store_;
  ApplyBatch* b = batch_;
  for (const auto& kv : found->kvs) {
    Revision r{rev_, sub_++};
    mvccpb::KeyValue tomb;
    tomb.set_key(kv.key());
    tomb.set_mod_revision(rev_);
    std::string hist(1, kHistDelete);
    tomb.AppendToString(&hist);
    b->Delete(st->kv_cf_, kv.key());
    b->Put(st->idx_cf_, EncodeIndexKey(kv.key(), r), std::string_view(&kIndexTombstone, 1));
    b->Put(st->hist_cf_, EncodeRevision(r), hist);
    if (kv.lease() != 0) b->Delete(st->lkeys_cf_, EncodeLeaseKey(kv.lease(), kv.key()));
    b->latest_.insert_or_assign(kv.key(), std::nullopt);
    mvccpb::Event ev;
    ev.set_type(mvccpb::Event::DELETE);
    *ev.mutable_kv() = std::move(tomb);
    *ev.mutable_prev_kv() = kv;
    batch_->events_.push_back(std::move(ev));
  }
  return std::move(found->kvs);
}

absl::Status WriteTxn::PutLease(const LeaseRecord& lease) {
  batch_->Put(batch_->store_->lease_cf_, EncodeU64(static_cast<uint64_t>(lease.id)),
              EncodeU64(static_cast<uint64_t>(lease.ttl_seconds)));
  return absl::OkStatus();
}

absl::Status WriteTxn::DeleteLease(int64_t lease_id) {
  batch_->Delete(batch_->store_->lease_cf_, EncodeU64(static_cast<uint64_t>(lease_id)));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> WriteTxn::LeaseKeys(int64_t lease_id) {
  Store* st = batch_->store_;
  auto it = BatchSource(st->db_, batch_->Indexed()).new_iter(st->lkeys_cf_, nullptr);
  std::string prefix = EncodeU64(static_cast<uint64_t>(lease_id));
  std::vector<std::string> keys;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    keys.emplace_back(it->key().data() + 8, it->key().size() - 8);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lease keys");
  return keys;
}

int64_t WriteTxn::End() {
  if (ended_) {
    fprintf(stderr, "mvcc: WriteTxn::End called twice (rev %lld)\n", static_cast<long long>(rev_));
    std::abort();
  }
  ended_ = true;
  batch_->txn_open_ = false;
  if (sub_ > 0) batch_->rev_ = rev_;
  return batch_->rev_;
}

// ---------------------------------------------------------------------------------------------
// ApplyBatch

ApplyBatch::ApplyBatch(Store* store)
    : store_(store),
      plain_(std::make_unique<rocksdb::WriteBatch>()),
      rev_(store->rev()),
      compact_rev_(store->compact_rev()),
      consistent_index_(store->consistent_index()) {}

ApplyBatch::~ApplyBatch() = default;

void ApplyBatch::Put(rocksdb::ColumnFamilyHandle* cf, std::string_view key,
                     std::string_view value) {
  rocksdb::Slice k(key.data(), key.size());
  rocksdb::Slice v(value.data(), value.size());
  auto s = indexed_ ? indexed_->Put(cf, k, v) : plain_->Put(cf, k, v);
  if (!s.ok()) {
    // Only a batch over RocksDB's 4 GiB record limit fails here; requests are far smaller.
    fprintf(stderr, "mvcc: cannot add a write to the apply batch: %s\n", s.ToString().c_str());
    std::abort();
  }
}

void ApplyBatch::Delete(rocksdb::ColumnFamilyHandle* cf, std::string_view key) {
  rocksdb::Slice k(key.data(), key.size());
  auto s = indexed_ ? indexed_->Delete(cf, k) : plain_->Delete(cf, k);
  if (!s.ok()) {
    fprintf(stderr, "mvcc: cannot add a delete to the apply batch: %s\n", s.ToString().c_str());
    std::abort();
  }
}

namespace {
// Replays a plain batch into an indexed one.
class ToIndexed : public rocksdb::WriteBatch::Handler {
 public:
  ToIndexed(rocksdb::WriteBatchWithIndex* out,
            const std::vector<rocksdb::ColumnFamilyHandle*>& handles)
      : out_(out), handles_(handles) {}
  rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& k, const rocksdb::Slice& v) override {
    auto* h = Handle(cf);
    return h == nullptr ? Unknown(cf) : out_->Put(h, k, v);
  }
  rocksdb::Status DeleteCF(uint32_t cf, const rocksdb::Slice& k) override {
    auto* h = Handle(cf);
    return h == nullptr ? Unknown(cf) : out_->Delete(h, k);
  }

 private:
  rocksdb::ColumnFamilyHandle* Handle(uint32_t id) const {
    for (auto* h : handles_) {
      if (h->GetID() == id) return h;
    }
    return nullptr;
  }
  static rocksdb::Status Unknown(uint32_t id) {
    return rocksdb::Status::Corruption("apply batch: unknown column family " + std::to_string(id));
  }
  rocksdb::WriteBatchWithIndex* out_;
  const std::vector<rocksdb::ColumnFamilyHandle*>& handles_;
};
}  // namespace

rocksdb::WriteBatchWithIndex* ApplyBatch::Indexed() {
  if (indexed_) return indexed_.get();
  indexed_ = std::make_unique<rocksdb::WriteBatchWithIndex>(rocksdb::BytewiseComparator(), 0,
                                                            /*overwrite_key=*/true);
  ToIndexed replay(indexed_.get(), store_->handles_);
  if (auto s = plain_->Iterate(&replay); !s.ok()) {
    // The batch holds only Put and Delete records this class wrote.
    fprintf(stderr, "mvcc: cannot index the apply batch: %s\n", s.ToString().c_str());
    std::abort();
  }
  plain_.reset();
  return indexed_.get();
}

WriteTxn ApplyBatch::BeginTxn() {
  if (txn_open_) {
    fprintf(stderr, "mvcc: BeginTxn while a transaction is open (rev %lld)\n",
            static_cast<long long>(rev_));
    std::abort();
  }
  txn_open_ = true;
  return WriteTxn(this, rev_ + 1);
}

absl::Status ApplyBatch::Compact(int64_t rev) {
  if (rev <= compact_rev_) return absl::OutOfRangeError(kErrCompacted);
  if (rev > rev_) return absl::OutOfRangeError(kErrFutureRev);
  compact_rev_ = rev;
  compacted_ = true;
  Put(store_->meta_cf_, kMetaCompactRev, EncodeU64(static_cast<uint64_t>(rev)));
  return absl::OkStatus();
}

void ApplyBatch::PutMeta(std::string_view key, std::string_view value) {
  Put(store_->meta_cf_, key, value);
}

void ApplyBatch::DeleteMeta(std::string_view key) { Delete(store_->meta_cf_, key); }

absl::Status ApplyBatch::Commit() {
  if (txn_open_) {
    fprintf(stderr, "mvcc: Commit with an open transaction (rev %lld)\n",
            static_cast<long long>(rev_));
    std::abort();
  }
  Put(store_->meta_cf_, kMetaRev, EncodeU64(static_cast<uint64_t>(rev_)));
  Put(store_->meta_cf_, kMetaConsistentIndex, EncodeU64(consistent_index_));
  rocksdb::WriteOptions wo;
  // The node's own log is the durable record; RocksDB's data reaches disk by (atomic) flushes.
  wo.disableWAL = true;
  auto s = store_->db_->Write(wo, indexed_ ? indexed_->GetWriteBatch() : plain_.get());
  if (!s.ok()) return FromRocks(s, "apply commit");
  if (LatestCache* cache = store_->latest_cache_.get()) {
    // The batch is done with its records: they move into the cache.
    for (auto& [key, kv] : latest_) {
      if (kv.has_value()) {
        cache->Put(std::move(*kv));
      } else {
        cache->Erase(key);
      }
    }
  }
  store_->Publish({rev_, compact_rev_, consistent_index_});
  if (compacted_) {
    std::lock_guard<std::mutex> lock(store_->compact_mu_);
    store_->compact_target_ = std::max(store_->compact_target_, compact_rev_);
    store_->compact_cv_.notify_all();
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Store

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  std::unique_ptr<Store> st(new Store());
  st->options_ = options;
  st->index_comparator_ = std::make_unique<IndexComparator>();
  if (options.latest_cache_bytes > 0) {
    st->latest_cache_ = std::make_unique<LatestCache>(options.latest_cache_bytes);
  }
  if (options.list_cache_bytes > 0) {
    st->list_cache_ =
        std::make_unique<ListCache>(options.list_cache_entries, options.list_cache_bytes);
  }
  st->block_cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = st->block_cache_;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.cache_index_and_filter_blocks = true;
  rocksdb::ColumnFamilyOptions cf_opts;
  cf_opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf_opts.write_buffer_size = options.write_buffer_bytes;
  rocksdb::ColumnFamilyOptions idx_opts = cf_opts;
  idx_opts.comparator = st->index_comparator_.get();
  // Every put looks its key up in kv first, and most keys a put creates are in no memtable: a
  // whole-key bloom filter over the memtable answers those without a skiplist search.
  rocksdb::ColumnFamilyOptions kv_opts = cf_opts;
  kv_opts.memtable_whole_key_filtering = true;
  kv_opts.memtable_prefix_bloom_size_ratio = 0.02;

  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  // With RocksDB's WAL off, flushes must cover all column families at once so that the
  // consistent index on disk always matches the data on disk.
  db_opts.atomic_flush = true;
  db_opts.max_background_jobs = 2;
  db_opts.db_write_buffer_size = 4 * options.write_buffer_bytes;
  db_opts.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_opts.keep_log_file_num = 2;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, cf_opts},
                                                      {"kv", kv_opts},
                                                      {"idx", idx_opts},
                                                      {"hist", cf_opts},
                                                      {"lease", cf_opts},
                                                      {"lkeys", cf_opts}};
  auto s = rocksdb::DB::Open(db_opts, options.dir, cfs, &st->handles_, &st->db_);
  if (!s.ok()) return FromRocks(s, absl::StrCat("open store at ", options.dir));
  st->meta_cf_ = st->handles_[0];
  st->kv_cf_ = st->handles_[1];
  st->idx_cf_ = st->handles_[2];
  st->hist_cf_ = st->handles_[3];
  st->lease_cf_ = st->handles_[4];
  st->lkeys_cf_ = st->handles_[5];
  auto loaded = st->Load();
  if (!loaded.ok()) return loaded.status();
  st->Publish(*loaded);
  st->compactor_ = std::thread([p = st.get()] {
    pthread_setname_np(pthread_self(), "compactor");
    p->CompactorLoop();
  });
  return st;
}

absl::StatusOr<Store::ViewState> Store::Load() {
  auto get_u64 = [this](std::string_view key, uint64_t dflt) -> absl::StatusOr<uint64_t> {
    auto v = GetMeta(key);
    if (!v.ok()) return v.status();
    if (!v->has_value()) return dflt;
    if ((*v)->size() != 8)
      return absl::DataLossError(absl::StrCat("mvcc: bad meta ", std::string(key)));
    return GetBigEndian64(**v);
  };
  auto rev = get_u64(kMetaRev, 1);  // etcd's store starts at revision 1
  auto compact = get_u64(kMetaCompactRev, 0);
  auto finished = get_u64(kMetaFinishedCompactRev, 0);
  auto ci = get_u64(kMetaConsistentIndex, 0);
  for (auto* s : {&rev, &compact, &finished, &ci}) {
    if (!s->ok()) return s->status();
  }
  finished_compact_rev_ = static_cast<int64_t>(*finished);
  // A compaction that was scheduled but not finished before a crash runs again.
  compact_target_ = static_cast<int64_t>(*compact);
  return ViewState{static_cast<int64_t>(*rev), static_cast<int64_t>(*compact), *ci};
}

Store::~Store() {
  {
    std::lock_guard<std::mutex> lock(compact_mu_);
    closing_ = true;
    compact_cv_.notify_all();
  }
  if (compactor_.joinable()) compactor_.join();
  {
    std::lock_guard<std::mutex> lock(view_mu_);
    view_.reset();
  }
  if (db_ != nullptr) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    delete db_;
  }
}

void Store::Publish(const ViewState& state) {
  auto* snap = db_->GetSnapshot();
  std::shared_ptr<const ReadView> view(
      new ReadView(this, snap, state.rev, state.compact_rev, state.consistent_index));
  {
    std::lock_guard<std::mutex> lock(view_mu_);
    view_ = std::move(view);
  }
  rev_.store(state.rev, std::memory_order_release);
  compact_rev_.store(state.compact_rev, std::memory_order_release);
  consistent_index_.store(state.consistent_index, std::memory_order_release);
}

std::shared_ptr<const ReadView> Store::View() const {
  std::lock_guard<std::mutex> lock(view_mu_);
  return view_;
}

absl::StatusOr<std::optional<std::string>> Store::GetMeta(std::string_view key) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), meta_cf_, rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "meta");
  return std::optional<std::string>(std::move(v));
}

absl::StatusOr<std::optional<std::string>> Store::GetMeta(std::string_view key,
                                                          const ReadView& view) const {
  rocksdb::ReadOptions ro;
  ro.snapshot = view.snapshot_;
  std::string v;
  auto s = db_->Get(ro, meta_cf_, rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "meta");
  return std::optional<std::string>(std::move(v));
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Store::ScanMeta(
    std::string_view prefix) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  std::vector<std::pair<std::string, std::string>> out;
  rocksdb::Slice p(prefix.data(), prefix.size());
  for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
    out.emplace_back(it->key().ToString(), it->value().ToString());
  }
  if (!it->status().ok()) return FromRocks(it->status(), "meta scan");
  return out;
}

void Store::WaitCompacted(int64_t rev) {
  std::unique_lock<std::mutex> lock(compact_mu_);
  compact_cv_.wait(lock, [&] { return closing_ || finished_compact_rev_.load() >= rev; });
}

void Store::OnCompacted(int64_t rev, std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(compact_mu_);
    if (!closing_ && finished_compact_rev_.load() < rev) {
      compact_callbacks_.emplace_back(rev, std::move(fn));
      return;
    }
  }
  fn();
}

void Store::CompactorLoop() {
  std::unique_lock<std::mutex> lock(compact_mu_);
  auto run_callbacks = [&](bool all) {
    std::vector<std::function<void()>> ready;
    for (auto it = compact_callbacks_.begin(); it != compact_callbacks_.end();) {
      if (all || it->first <= finished_compact_rev_.load()) {
        ready.push_back(std::move(it->second));
        it = compact_callbacks_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& fn : ready) fn();
    lock.lock();
  };
  while (true) {
    compact_cv_.wait(lock, [&] { return closing_ || compact_target_ > finished_compact_rev_; });
    if (closing_) {
      run_callbacks(true);
      return;
    }
    int64_t target = compact_target_;
    lock.unlock();
    auto s = CompactTo(target);
    lock.lock();
    if (!s.ok()) {
      // Retrying at once would spin; the next scheduled compaction retries the work.
      fprintf(stderr, "mvcc: compaction to %lld failed: %s\n", static_cast<long long>(target),
              s.ToString().c_str());
      compact_target_ = finished_compact_rev_;
      continue;
    }
    finished_compact_rev_ = target;
    compact_cv_.notify_all();
    run_callbacks(false);
  }
}

absl::Status Store::CompactTo(int64_t rev) {
  const rocksdb::Snapshot* snap = db_->GetSnapshot();
  rocksdb::ReadOptions ro;
  ro.snapshot = snap;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, idx_cf_));
  rocksdb::WriteBatch wb;
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;
  absl::Status result;
  auto drop = [&](std::string_view ik) {
    wb.Delete(idx_cf_, rocksdb::Slice(ik.data(), ik.size()));
    wb.Delete(hist_cf_, EncodeRevision(IndexRevision(ik)));
  };
  it->SeekToFirst();
  while (it->Valid() && result.ok()) {
    std::string ik = it->key().ToString();
    std::string user_key(IndexUserKey(ik));
    if (IndexRevision(ik).main > rev) {
      it->Seek(EncodeIndexKey(user_key, Revision{rev, INT64_MAX}));
      if (!it->Valid() || IndexUserKey(it->key().ToStringView()) != user_key) continue;
      ik = it->key().ToString();
    }
    // The newest revision <= rev survives if it is a put; a tombstone ends the key's life.
    if (!(it->value().size() == 1 && it->value()[0] == kIndexPut)) drop(ik);
    for (it->Next(); it->Valid() && IndexUserKey(it->key().ToStringView()) == user_key;
         it->Next()) {
      drop(it->key().ToStringView());
    }
    if (wb.Count() >= options_.compaction_batch_entries) {
      result = FromRocks(db_->Write(wo, &wb), "compaction");
      wb.Clear();
    }
  }
  if (result.ok()) result = FromRocks(it->status(), "compaction scan");
  it.reset();
  db_->ReleaseSnapshot(snap);
  if (!result.ok()) return result;
  wb.Put(meta_cf_, kMetaFinishedCompactRev, EncodeU64(static_cast<uint64_t>(rev)));
  return FromRocks(db_->Write(wo, &wb), "compaction");
}

absl::Status Store::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo, handles_), "flush");
}

absl::Status Store::Defragment() {
  if (auto s = Flush(); !s.ok()) return s;
  rocksdb::CompactRangeOptions co;
  co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (auto* h : handles_) {
    auto s = db_->CompactRange(co, h, nullptr, nullptr);
    if (!s.ok()) return FromRocks(s, "defragment");
  }
  return absl::OkStatus();
}

StoreStats Store::Stats() const {
  StoreStats st;
  for (auto* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, "rocksdb.total-sst-files-size", &v)) st.db_size_bytes += v;
    uint64_t mem = 0;
    if (db_->GetIntProperty(h, "rocksdb.cur-size-all-mem-tables", &mem)) st.db_size_bytes += mem;
    if (db_->GetIntProperty(h, "rocksdb.estimate-live-data-size", &v)) {
      st.db_size_in_use_bytes += v + mem;
    }
  }
  db_->GetIntProperty(kv_cf_, "rocksdb.estimate-num-keys", &st.keys_total);
  return st;
}

namespace {
// Store image: "MERIDIAN-STORE-IMAGE-1\n", then records [u8 cf][u32 key len][u32 value len]
// [key][value] (lengths little-endian), then a record with cf 0xff and the CRC-32C of
// everything before it as its 4-byte value.
constexpr char kImageMagic[] = "MERIDIAN-STORE-IMAGE-1\n";
constexpr uint8_t kImageEnd = 0xff;
constexpr uint32_t kMaxImageKeyBytes = 64u << 20;
constexpr uint32_t kMaxImageValueBytes = 1u << 30;

void PutU32Le(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32Le(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
bool HasAnyPrefix(std::string_view key, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (key.substr(0, p.size()) == p) return true;
  }
  return false;
}
}  // namespace

absl::Status Store::ExportImage(const ReadView& view, const std::string& path,
                                const std::vector<std::string>& skip_meta_prefixes) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot create ", path));
  uint32_t crc = 0;
  std::string buf;
  auto emit = [&](bool force) -> bool {
    if (!force && buf.size() < (1u << 20)) return true;
    crc = wal::Crc32cExtend(crc, buf.data(), buf.size());
    out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.clear();
    return static_cast<bool>(out);
  };
  buf.append(kImageMagic);
  rocksdb::ReadOptions ro;
  ro.snapshot = view.snapshot_;
  for (size_t cf = 0; cf < handles_.size(); ++cf) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handles_[cf]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view k(it->key().data(), it->key().size());
      if (cf == 0 && HasAnyPrefix(k, skip_meta_prefixes)) continue;
      buf.push_back(static_cast<char>(cf));
      PutU32Le(&buf, static_cast<uint32_t>(it->key().size()));
      PutU32Le(&buf, static_cast<uint32_t>(it->value().size()));
      buf.append(it->key().data(), it->key().size());
      buf.append(it->value().data(), it->value().size());
      if (!emit(false)) return absl::InternalError(absl::StrCat("write ", path));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "export image");
  }
  if (!emit(true)) return absl::InternalError(absl::StrCat("write ", path));
  buf.push_back(static_cast<char>(kImageEnd));
  PutU32Le(&buf, 0);
  PutU32Le(&buf, 4);
  PutU32Le(&buf, crc);
  out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("write ", path));
  return absl::OkStatus();
}

namespace {
// Reads a store image one record at a time, checksumming as it goes, so that an image of any size
// takes one record's worth of memory.
class ImageReader {
 public:
  explicit ImageReader(std::string path) : path_(std::move(path)) {}

  [[nodiscard]] absl::Status Open() {
    in_.open(path_, std::ios::binary);
    if (!in_) return absl::NotFoundError(absl::StrCat("cannot open ", path_));
    const size_t magic_len = sizeof(kImageMagic) - 1;
    std::string magic(magic_len, '\0');
    if (!in_.read(magic.data(), static_cast<std::streamsize>(magic_len)) ||
        magic != std::string_view(kImageMagic, magic_len)) {
      return absl::DataLossError(absl::StrCat(path_, ": not a store image"));
    }
    crc_ = wal::Crc32cExtend(0, magic.data(), magic.size());
    offset_ = magic_len;
    return absl::OkStatus();
  }

  // The next record into cf/key/value (valid until the next call): true, or false once the
  // trailer was read and the checksum over everything before it matched.
  [[nodiscard]] absl::StatusOr<bool> Next(uint8_t* cf, std::string_view* key,
                                          std::string_view* value) {
    char header[9];
    if (!in_.read(header, sizeof(header))) {
      return absl::DataLossError(absl::StrCat(path_, ": truncated record at offset ", offset_));
    }
    *cf = static_cast<uint8_t>(header[0]);
    const uint32_t klen = GetU32Le(header + 1);
    const uint32_t vlen = GetU32Le(header + 5);
    if (klen > kMaxImageKeyBytes || vlen > kMaxImageValueBytes) {
      return absl::DataLossError(absl::StrCat(path_, ": bad record lengths at offset ", offset_));
    }
    if (*cf == kImageEnd && vlen != 4) {
      return absl::DataLossError(absl::StrCat(path_, ": bad trailer"));
    }
    record_.resize(static_cast<size_t>(klen) + vlen);
    if (!in_.read(record_.data(), static_cast<std::streamsize>(record_.size()))) {
      return absl::DataLossError(absl::StrCat(path_, ": truncated record at offset ", offset_));
    }
    if (*cf == kImageEnd) {
      if (GetU32Le(record_.data() + klen) != crc_) {
        return absl::DataLossError(absl::StrCat(path_, ": checksum mismatch"));
      }
      return false;
    }
    crc_ = wal::Crc32cExtend(crc_, header, sizeof(header));
    crc_ = wal::Crc32cExtend(crc_, record_.data(), record_.size());
    offset_ += sizeof(header) + record_.size();
    *key = std::string_view(record_.data(), klen);
    *value = std::string_view(record_.data() + klen, vlen);
    return true;
  }

 private:
  std::string path_;
  std::ifstream in_;
  uint32_t crc_ = 0;
  uint64_t offset_ = 0;
  std::string record_;
};

// Writes one column family's replacement as an SST file for ingestion. The file deletes what the
// column family holds now (a range tombstone from its first to its last key, and the last key
// itself, the range being half-open) and puts the image's records. Keys ingested in one file
// override that file's range tombstone, so the file replaces the column family in one step.
class ReplacementSst {
 public:
  ReplacementSst(const rocksdb::Options& options, rocksdb::ColumnFamilyHandle* cf, std::string path,
                 std::optional<std::pair<std::string, std::string>> existing)
      : writer_(rocksdb::EnvOptions(), options, cf),
        cmp_(options.comparator),
        path_(std::move(path)),
        existing_(std::move(existing)) {}

  [[nodiscard]] rocksdb::Status Put(std::string_view key, std::string_view value) {
    rocksdb::Slice k(key.data(), key.size());
    auto s = OpenAndDeleteExisting();
    if (s.ok() && delete_last_) {
      const int c = cmp_->Compare(existing_->second, k);
      if (c < 0) s = DeleteLast();
      if (c == 0) delete_last_ = false;  // the put overrides it
    }
    if (s.ok()) s = writer_.Put(k, rocksdb::Slice(value.data(), value.size()));
    return s;
  }

  // Closes the file; *written says whether there is one to ingest.
  [[nodiscard]] rocksdb::Status Finish(bool* written) {
    auto s = existing_ ? OpenAndDeleteExisting() : rocksdb::Status::OK();
    if (s.ok() && delete_last_) s = DeleteLast();
    if (s.ok() && opened_) s = writer_.Finish();
    *written = s.ok() && opened_;
    return s;
  }

  const std::string& path() const { return path_; }

 private:
  rocksdb::Status OpenAndDeleteExisting() {
    if (opened_) return rocksdb::Status::OK();
    opened_ = true;
    auto s = writer_.Open(path_);
    if (!s.ok() || !existing_) return s;
    const auto& [first, last] = *existing_;
    if (cmp_->Compare(first, last) < 0) s = writer_.DeleteRange(first, last);
    delete_last_ = true;
    return s;
  }
  rocksdb::Status DeleteLast() {
    delete_last_ = false;
    return writer_.Delete(existing_->second);
  }

  rocksdb::SstFileWriter writer_;
  const rocksdb::Comparator* cmp_;
  std::string path_;
  std::optional<std::pair<std::string, std::string>> existing_;  // first and last key
  bool opened_ = false;
  bool delete_last_ = false;
};
}  // namespace

absl::Status Store::ImportImage(const std::string& path,
                                const std::vector<std::string>& keep_meta_prefixes) {
  ImageReader reader(path);
  if (auto st = reader.Open(); !st.ok()) return st;

  // What each column family holds now (its first and last key), and the meta records that stay.
  std::vector<std::optional<std::pair<std::string, std::string>>> existing(handles_.size());
  std::map<std::string, std::string> meta;  // the meta family as it will be
  for (size_t cf = 0; cf < handles_.size(); ++cf) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[cf]));
    it->SeekToFirst();
    if (it->Valid()) {
      std::string first = it->key().ToString();
      it->SeekToLast();
      if (it->Valid()) existing[cf].emplace(std::move(first), it->key().ToString());
    }
    if (cf == 0) {
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        std::string_view k(it->key().data(), it->key().size());
        if (HasAnyPrefix(k, keep_meta_prefixes)) meta[std::string(k)] = it->value().ToString();
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "import image");
  }

  // One SST file per column family, next to the store's own files; removed however this ends
  // (ingestion moves them into the store).
  std::vector<std::unique_ptr<ReplacementSst>> ssts;
  for (size_t cf = 0; cf < handles_.size(); ++cf) {
    ssts.push_back(std::make_unique<ReplacementSst>(
        db_->GetOptions(handles_[cf]), handles_[cf],
        absl::StrCat(options_.dir, "/image-import-", cf, ".tmp"), existing[cf]));
  }
  struct RemoveFiles {
    std::vector<std::unique_ptr<ReplacementSst>>* ssts;
    ~RemoveFiles() {
      for (const auto& s : *ssts) std::remove(s->path().c_str());
    }
  } remove_files{&ssts};
  for (const auto& s : ssts) std::remove(s->path().c_str());

  // The image lists the column families in order, each in its comparator's order; the SST
  // writers refuse anything else.
  size_t last_cf = 0;
  while (true) {
    uint8_t cf = 0;
    std::string_view key, value;
    auto more = reader.Next(&cf, &key, &value);
    if (!more.ok()) return more.status();
    if (!*more) break;
    if (cf >= handles_.size() || cf < last_cf) {
      return absl::DataLossError(absl::StrCat(path, ": unexpected column family ", cf));
    }
    last_cf = cf;
    if (cf == 0) {
      if (!HasAnyPrefix(key, keep_meta_prefixes)) meta[std::string(key)] = std::string(value);
      continue;
    }
    if (auto s = ssts[cf]->Put(key, value); !s.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": record not writable: ", s.ToString()));
    }
  }
  for (const auto& [k, v] : meta) {
    if (auto s = ssts[0]->Put(k, v); !s.ok()) return FromRocks(s, "import image meta");
  }

  // The image checked out: swap every column family at once.
  std::vector<rocksdb::IngestExternalFileArg> args;
  for (size_t cf = 0; cf < handles_.size(); ++cf) {
    bool written = false;
    if (auto s = ssts[cf]->Finish(&written); !s.ok()) return FromRocks(s, "import image");
    if (!written) continue;
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = handles_[cf];
    arg.external_files = {ssts[cf]->path()};
    arg.options.move_files = true;
    args.push_back(std::move(arg));
  }
  // Every key-value changes: nothing cached for the apply thread may survive.
  if (latest_cache_) latest_cache_->Clear();
  if (list_cache_) list_cache_->Clear();
  if (!args.empty()) {
    // RocksDB records the files of all column families in one MANIFEST write: a crash leaves
    // either the old store or the new one.
    auto s = db_->IngestExternalFiles(args);
    if (!s.ok()) return FromRocks(s, "import image");
  }
  absl::StatusOr<ViewState> loaded;
  {
    std::lock_guard<std::mutex> lock(compact_mu_);
    loaded = Load();
  }
  if (!loaded.ok()) return loaded.status();
  Publish(*loaded);
  return Flush();
}

absl::Status Store::ForEachHistory(
    const ReadView& view,
    const std::function<absl::Status(Revision, char, std::string_view)>& fn) const {
  rocksdb::ReadOptions ro;
  ro.snapshot = view.snapshot_;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, hist_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view v(it->value().data(), it->value().size());
    if (v.empty()) return absl::DataLossError("mvcc: empty history record");
    auto s = fn(DecodeRevision(it->key().ToStringView()), v[0], v.substr(1));
    if (!s.ok()) return s;
  }
  return FromRocks(it->status(), "history scan");
}

}  // namespace meridian::mvcc
