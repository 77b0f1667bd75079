// The revisioned key-value store (etcd's MVCC model) on RocksDB.
//
// Threading: one apply thread owns the write side (ApplyBatch / WriteTxn). Any thread may take a
// ReadView and read from it concurrently; a view is an immutable RocksDB snapshot plus the
// revision it shows, so reads never block writes. One background thread runs physical
// compaction; it only deletes index/history entries at or below the logical compact revision,
// which no reader may ask for any more.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mvccpb/kv.pb.h"
#include "node/mvcc/keys.h"
#include "node/mvcc/latest_cache.h"
#include "node/mvcc/list_cache.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class Snapshot;
class WriteBatch;
class WriteBatchWithIndex;
class Iterator;
class Comparator;
class Cache;
}  // namespace rocksdb

namespace meridian::mvcc {

// etcd's errors, as the mvcc layer words them; the server maps them to gRPC statuses.
inline constexpr char kErrCompacted[] = "mvcc: required revision has been compacted";
inline constexpr char kErrFutureRev[] = "mvcc: required revision is a future revision";

struct StoreOptions {
  std::string dir;
  uint64_t block_cache_bytes = 256ull << 20;
  uint64_t write_buffer_bytes = 64ull << 20;
  // The apply thread's cache of recently written key-values (see latest_cache.h); 0 turns it off.
  uint64_t latest_cache_bytes = 64ull << 20;
  // Keys of recently listed ranges, for the later pages of paginated lists (see list_cache.h);
  // 0 bytes turns it off.
  uint64_t list_cache_bytes = 64ull << 20;
  size_t list_cache_entries = 64;
  // Physical compaction deletes at most this many entries per RocksDB write.
  size_t compaction_batch_entries = 10000;
};

struct RangeOptions {
  int64_t rev = 0;    // 0: the view's revision
  int64_t limit = 0;  // 0: no limit; `count` still counts every key in range
  bool count_only = false;
  bool keys_only = false;
};

struct RangeResult {
  std::vector<mvccpb::KeyValue> kvs;
  int64_t count = 0;
  int64_t rev = 0;
};

struct LeaseRecord {
  int64_t id = 0;
  int64_t ttl_seconds = 0;
};

// [key, end) with etcd's conventions: empty end means the single key `key`; end "\0" means every
// key >= key.
class KeyRange {
 public:
  KeyRange(std::string_view key, std::string_view end) : key_(key), end_(end) {}
  bool single() const { return end_.empty(); }
  bool unbounded() const { return end_.size() == 1 && end_[0] == '\0'; }
  bool Contains(std::string_view k) const;
  // True once iteration in key order has passed the end of the range.
  bool Past(std::string_view k) const;
  std::string_view key() const { return key_; }
  std::string_view end() const { return end_; }

 private:
  std::string_view key_;
  std::string_view end_;
};

class Store;

// A consistent, immutable view of the store at one revision.
class ReadView {
 public:
  ~ReadView();
  ReadView(const ReadView&) = delete;
  ReadView& operator=(const ReadView&) = delete;

  int64_t rev() const { return rev_; }
  int64_t compact_rev() const { return compact_rev_; }
  uint64_t consistent_index() const { return consistent_index_; }

  [[nodiscard]] absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                                  const RangeOptions& opts) const;
  // Value of `key` at `rev` (nullopt if absent or deleted then). Used for prev_kv of watch events.
  [[nodiscard]] absl::StatusOr<std::optional<mvccpb::KeyValue>> Get(std::string_view key,
                                                                    int64_t rev) const;
  // Appends events with main revision in [from_rev, rev()] in order, stopping at a revision
  // boundary once at least `max_events` were read. Sets *next_rev to the first revision not
  // read. Fails with kErrCompacted if from_rev <= compact_rev().
  [[nodiscard]] absl::Status ReadEvents(int64_t from_rev, size_t max_events,
                                        std::vector<mvccpb::Event>* out, int64_t* next_rev) const;
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> LeaseKeys(int64_t lease_id) const;
  [[nodiscard]] absl::StatusOr<std::vector<LeaseRecord>> Leases() const;
  // CRC-32C over every history entry with revision <= rev, in revision order: equal on members
  // with equal logical history (etcd's HashKV idea, not its exact bytes).
  [[nodiscard]] absl::StatusOr<uint32_t> HashKV(int64_t rev) const;

 private:
  friend class Store;
  // A list cache entry older than the view brought up to `rev` by the history after it (it needs
  // at most kMaxListDeltaRevs revisions and kMaxListDeltaEvents events; nullopt past those).
  static constexpr int64_t kMaxListDeltaRevs = 10000;
  static constexpr size_t kMaxListDeltaEvents = 20000;
  [[nodiscard]] absl::StatusOr<std::optional<std::vector<std::string>>> KeysSince(
      const ListCache::Entry& base, int64_t rev) const;
  ReadView(const Store* store, const rocksdb::Snapshot* snapshot, int64_t rev, int64_t compact_rev,
           uint64_t consistent_index)
      : store_(store),
        snapshot_(snapshot),
        rev_(rev),
        compact_rev_(compact_rev),
        consistent_index_(consistent_index) {}
  const Store* store_;
  const rocksdb::Snapshot* snapshot_;
  int64_t rev_;
  int64_t compact_rev_;
  uint64_t consistent_index_;
};

class ApplyBatch;

// One transaction inside an apply batch: every change it makes shares one main revision. Reads
// through it see the batch's and the transaction's own earlier writes.
class WriteTxn {
 public:
  // The revision the transaction writes at (current + 1).
  int64_t write_rev() const { return rev_; }
  bool changed() const { return sub_ > 0; }

  [[nodiscard]] absl::StatusOr<RangeResult> Range(std::string_view key, std::string_view end,
                                                  const RangeOptions& opts);
  // Returns the previous value of the key, if it had one.
  [[nodiscard]] absl::StatusOr<std::optional<mvccpb::KeyValue>> Put(std::string_view key,
                                                                    std::string_view value,
                                                                    int64_t lease);
  // Deletes every key in range; returns the deleted key-values.
  [[nodiscard]] absl::StatusOr<std::vector<mvccpb::KeyValue>> DeleteRange(std::string_view key,
                                                                          std::string_view end);
  [[nodiscard]] absl::Status PutLease(const LeaseRecord& lease);
  [[nodiscard]] absl::Status DeleteLease(int64_t lease_id);
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> LeaseKeys(int64_t lease_id);
  // Ends the transaction; returns the store revision after it.
  int64_t End();

 private:
  friend class ApplyBatch;
  WriteTxn(ApplyBatch* batch, int64_t rev) : batch_(batch), rev_(rev) {}
  [[nodiscard]] absl::StatusOr<std::optional<mvccpb::KeyValue>> GetLatest(std::string_view key);
  [[nodiscard]] absl::StatusOr<RangeResult> RangeSingleLatest(std::string_view key,
                                                              const RangeOptions& opts,
                                                              int64_t current);
  ApplyBatch* batch_;
  int64_t rev_;
  int64_t sub_ = 0;
  bool ended_ = false;
};

// The writes of a batch of log entries, committed to RocksDB in one atomic write together with
// the log index they bring the store to.
class ApplyBatch {
 public:
  explicit ApplyBatch(Store* store);
  ~ApplyBatch();
  WriteTxn BeginTxn();
  // Logical compaction to `rev`: later reads below it fail. Physical deletion runs in the
  // background (Store::WaitCompacted waits for it).
  [[nodiscard]] absl::Status Compact(int64_t rev);
  void PutMeta(std::string_view key, std::string_view value);
  void DeleteMeta(std::string_view key);
  void SetConsistentIndex(uint64_t index) { consistent_index_ = index; }
  // Events produced so far, with prev_kv filled where the key had a previous value.
  const std::vector<mvccpb::Event>& events() const { return events_; }
  int64_t rev() const { return rev_; }
  [[nodiscard]] absl::Status Commit();

 private:
  friend class WriteTxn;
  // Writes go to a plain batch while nothing needs to iterate over them: point lookups of the
  // latest key-values are answered by `latest_`. The first read that iterates (a range inside a
  // transaction, a lease's keys) moves them into an indexed batch, which then takes every write.
  void Put(rocksdb::ColumnFamilyHandle* cf, std::string_view key, std::string_view value);
  void Delete(rocksdb::ColumnFamilyHandle* cf, std::string_view key);
  [[nodiscard]] rocksdb::WriteBatchWithIndex* Indexed();

  Store* store_;
  std::unique_ptr<rocksdb::WriteBatch> plain_;
  std::unique_ptr<rocksdb::WriteBatchWithIndex> indexed_;
  // This batch's effect on the latest key-values: key -> record, or nullopt once deleted.
  absl::flat_hash_map<std::string, std::optional<mvccpb::KeyValue>> latest_;
  int64_t rev_;
  int64_t compact_rev_;
  uint64_t consistent_index_;
  bool txn_open_ = false;
  bool compacted_ = false;
  std::vector<mvccpb::Event> events_;
};

struct StoreStats {
  uint64_t db_size_bytes = 0;         // files on disk plus memtables
  uint64_t db_size_in_use_bytes = 0;  // live data estimate
  uint64_t keys_total = 0;            // estimate of live keys
};

class Store {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();

  std::shared_ptr<const ReadView> View() const;
  int64_t rev() const { return rev_.load(std::memory_order_acquire); }
  int64_t compact_rev() const { return compact_rev_.load(std::memory_order_acquire); }
  uint64_t consistent_index() const { return consistent_index_.load(std::memory_order_acquire); }

  [[nodiscard]] absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key) const;
  // The meta entry as of `view` (consistent with the rest of that view).
  [[nodiscard]] absl::StatusOr<std::optional<std::string>> GetMeta(std::string_view key,
                                                                   const ReadView& view) const;
  // Every meta entry whose key starts with `prefix`.
  [[nodiscard]] absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ScanMeta(
      std::string_view prefix) const;

  // Blocks until physical compaction reached `rev` (or the store is closing).
  void WaitCompacted(int64_t rev);
  // Runs `fn` once physical compaction reached `rev`: at once on this thread if it has, else on
  // the compactor thread (or at close). `fn` must be quick.
  void OnCompacted(int64_t rev, std::function<void()> fn);
  int64_t physically_compacted_rev() const { return finished_compact_rev_.load(); }
  // Makes everything applied so far durable in RocksDB's own files, so the log before it can go.
  [[nodiscard]] absl::Status Flush();
  // Rewrites all files to reclaim space (etcd's defragment).
  [[nodiscard]] absl::Status Defragment();
  StoreStats Stats() const;
  // Null when StoreOptions::list_cache_bytes is 0.
  const ListCache* list_cache() const { return list_cache_.get(); }

  // Writes every column family as of `view` to `path` (a framed, CRC-32C checked image), for a
  // raft snapshot sent to a member that is too far behind. Meta keys starting with one of
  // `skip_meta_prefixes` (the sender's own identity) are left out.
  [[nodiscard]] absl::Status ExportImage(const ReadView& view, const std::string& path,
                                         const std::vector<std::string>& skip_meta_prefixes) const;
  // Replaces the whole store by the image at `path`, keeping this member's meta keys that start
  // with one of `keep_meta_prefixes`, and makes the result durable. The image is streamed into
  // one SST file per column family (memory: one record at a time), checked whole (checksum,
  // order) before anything changes, and ingested in one step: a crash leaves the old store or
  // the new one. Published views taken before keep their data.
  [[nodiscard]] absl::Status ImportImage(const std::string& path,
                                         const std::vector<std::string>& keep_meta_prefixes);
  // Calls `fn` for every history entry visible in `view`, in revision order (the snapshot
  // writer turns them into etcd's backend layout).
  [[nodiscard]] absl::Status ForEachHistory(
      const ReadView& view,
      const std::function<absl::Status(Revision, char type, std::string_view kv)>& fn) const;

 private:
  friend class ReadView;
  friend class ApplyBatch;
  friend class WriteTxn;
  Store() = default;
  // The revision, compaction revision and consistent index a new read view stands for.
  struct ViewState {
    int64_t rev = 0;
    int64_t compact_rev = 0;
    uint64_t consistent_index = 0;
  };
  // Reads the durable meta (and sets the compaction marks); the caller Publish()es the state.
  [[nodiscard]] absl::StatusOr<ViewState> Load();
  // Makes a view of the current data at `state` the one View() returns, and only then advances
  // rev(), compact_rev() and consistent_index() to it: whoever sees the new consistent index (a
  // read released once it reached its read index) gets a view at least that new.
  void Publish(const ViewState& state);
  void CompactorLoop();
  [[nodiscard]] absl::Status CompactTo(int64_t rev);

  StoreOptions options_;
  std::unique_ptr<rocksdb::Comparator> index_comparator_;
  std::shared_ptr<rocksdb::Cache> block_cache_;
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;  // default CF
  rocksdb::ColumnFamilyHandle* kv_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* idx_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* hist_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* lease_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* lkeys_cf_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;

  // Owned by the apply thread (ApplyBatch), and by ImportImage while no batch is open.
  std::unique_ptr<LatestCache> latest_cache_;
  // Read by any thread through a ReadView; thread-safe on its own.
  std::unique_ptr<ListCache> list_cache_;

  std::atomic<int64_t> rev_{0};
  std::atomic<int64_t> compact_rev_{0};
  std::atomic<uint64_t> consistent_index_{0};

  mutable std::mutex view_mu_;
  std::shared_ptr<const ReadView> view_;

  std::mutex compact_mu_;
  std::condition_variable compact_cv_;
  int64_t compact_target_ = 0;
  std::vector<std::pair<int64_t, std::function<void()>>> compact_callbacks_;
  std::atomic<int64_t> finished_compact_rev_{0};
  bool closing_ = false;
  std::thread compactor_;
};

}  // namespace meridian::mvcc
