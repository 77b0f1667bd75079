// Minimal reader of bbolt (go.etcd.io/bbolt) database files: validates the meta pages, lists the
// top-level buckets, walks one bucket in key order, and checks page accounting like bbolt's
// Tx.Check. Safe on malformed input: every page id, offset and size is bounds-checked against
// the file, each walk refuses to visit a page twice (so cycles terminate), recursion depth is
// capped, and no allocation exceeds what the file itself holds.
//
// Reads with pread, one page (plus its overflow) at a time per tree level.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/snapshot/bolt_format.h"

namespace meridian::bolt {

class Reader {
 public:
  // Called for each key/value in ascending key order. The views are valid only during the call.
  using Visitor = absl::FunctionRef<absl::Status(std::string_view key, std::string_view value)>;

  // Opens the file and picks the valid meta page with the highest txid.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Reader>> Open(const std::string& path);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const format::Meta& meta() const { return meta_; }
  uint32_t page_size() const { return meta_.page_size; }
  uint64_t file_size_bytes() const { return file_size_bytes_; }

  // Names of the top-level buckets in key order.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> BucketNames();
  // Visits every key/value of the top-level bucket `name` in key order. NotFound if there is no
  // such bucket. Stops at, and returns, the first non-OK status from `visit`. Nested buckets
  // (which etcd never creates) are reported as Unimplemented.
  [[nodiscard]] absl::Status ForEach(std::string_view name, Visitor visit);
  // Verifies that every page below the high-water mark is referenced exactly once (meta pages,
  // freelist, bucket trees) or free, that page types are right and that keys are strictly
  // ascending and within their parents' ranges.
  [[nodiscard]] absl::Status Check();

 private:
  struct Page {
    uint64_t pgid = 0;
    format::PageHeader header;
    std::string bytes;  // header included; (overflow + 1) * page_size bytes
  };
  // Per-walk state: which pages were already visited (cycle and double-reference detection).
  struct WalkState {
    std::vector<uint8_t>* page_marks = nullptr;  // indexed by pgid; 1 = referenced
  };
  using ElementVisitor =
      absl::FunctionRef<absl::Status(uint32_t flags, std::string_view key, std::string_view value)>;

  Reader(int fd, uint64_t file_size_bytes, const format::Meta& meta);

  [[nodiscard]] absl::Status ReadAt(uint64_t offset_bytes, size_t size, char* out) const;
  [[nodiscard]] absl::StatusOr<Page> ReadPage(uint64_t pgid) const;
  // Walks the tree rooted at `root_pgid` (or the inline bucket page in `inline_page`), calling
  // `visit` for each leaf element in order. Keys must lie in [min_key, max_key) where the
  // bounds are given.
  [[nodiscard]] absl::Status WalkTree(uint64_t pgid, int depth, WalkState& state,
                                      const std::string* min_key, const std::string* max_key,
                                      std::string& last_key, bool& has_last_key,
                                      ElementVisitor visit);
  [[nodiscard]] absl::Status VisitLeafElements(std::string_view page, uint64_t pgid,
                                               const std::string* min_key,
                                               const std::string* max_key, std::string& last_key,
                                               bool& has_last_key, ElementVisitor visit);
  // Walks a bucket given its value in the parent (header + optional inline page).
  [[nodiscard]] absl::Status WalkBucket(std::string_view bucket_value, WalkState& state,
                                        ElementVisitor visit);
  [[nodiscard]] absl::Status CheckBucket(std::string_view bucket_value, int depth,
                                         WalkState& state);
  [[nodiscard]] absl::Status FindBucket(std::string_view name, std::string* bucket_value);

  int fd_;
  uint64_t file_size_bytes_;
  format::Meta meta_;
};

}  // namespace meridian::bolt
