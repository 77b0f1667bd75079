// Streaming writer of bbolt (go.etcd.io/bbolt) database files, the format of etcd's backend and
// of the file etcd's Maintenance.Snapshot RPC streams.
//
// The tree is built bottom-up: leaf pages are written as soon as they fill, and only the first
// key and page id of each written page is kept, so memory is bounded by the branch structure,
// never by the data. Branch pages, the root bucket, an empty freelist and both meta pages are
// written by Finish(). Every top-level bucket becomes a non-inline sub-bucket of the root
// bucket; an empty bucket gets an empty leaf page as its root (as bbolt's own fresh root).
//
// Not thread-safe. If Finish() is never reached the file is left incomplete (no valid meta
// pages), which bbolt readers reject.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meridian::bolt {

class Writer {
 public:
  // Creates/truncates the file. page_size must be a power of two in [512, 65536].
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Writer>> Create(const std::string& path,
                                                                      uint32_t page_size = 4096);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Top-level buckets must be begun in strictly ascending byte order of name; keys inside a
  // bucket are Put in strictly ascending byte order (memcmp). Values may be large (overflow
  // pages). Keys are 1..32768 bytes, values at most 2^31-2 bytes (bbolt's limits).
  // Argument errors leave the writer usable; I/O errors are sticky.
  [[nodiscard]] absl::Status BeginBucket(std::string_view name);
  [[nodiscard]] absl::Status Put(std::string_view key, std::string_view value);
  // Writes branch pages, the root bucket, an empty freelist, both meta pages; fsyncs; closes.
  [[nodiscard]] absl::Status Finish();
  uint64_t file_size_bytes() const;  // valid after Finish

 private:
  // One written child page as its parent branch page will reference it.
  struct ChildRef {
    std::string first_key;
    uint64_t pgid = 0;
  };
  struct PendingLeafElement {
    uint32_t flags = 0;
    uint32_t data_offset = 0;  // into leaf_data_; key then value
    uint32_t key_size = 0;
    uint32_t value_size = 0;
  };

  Writer(int fd, uint32_t page_size);

  [[nodiscard]] absl::Status AddLeafElement(uint32_t flags, std::string_view key,
                                            std::string_view value);
  [[nodiscard]] absl::Status WriteLargeLeaf(uint32_t flags, std::string_view key,
                                            std::string_view value);
  [[nodiscard]] absl::Status FlushLeaf();
  // Flushes the pending leaf, writes the branch levels and returns the tree's root page id.
  [[nodiscard]] absl::StatusOr<uint64_t> FinishTree();
  [[nodiscard]] absl::StatusOr<uint64_t> WriteBranchPage(const std::vector<ChildRef>& level,
                                                         size_t begin, size_t end);
  [[nodiscard]] absl::Status EndBucket();
  [[nodiscard]] absl::Status WriteAt(uint64_t offset_bytes, std::string_view bytes);
  // Records an I/O failure so that every later call reports it.
  absl::Status Latch(absl::Status status);
  [[nodiscard]] absl::Status CheckUsable() const;

  int fd_;
  const uint32_t page_size_;
  uint64_t next_pgid_ = 2;  // pages 0 and 1 are the metas, written last
  absl::Status sticky_error_;
  bool finished_ = false;
  uint64_t file_size_bytes_ = 0;

  bool in_bucket_ = false;
  std::string bucket_name_;
  std::string last_key_;
  bool has_last_key_ = false;
  // (name, root pgid) of every completed top-level bucket; becomes the root bucket's leaves.
  std::vector<std::pair<std::string, uint64_t>> done_buckets_;

  // State of the tree being built.
  std::vector<ChildRef> leaf_refs_;
  std::vector<PendingLeafElement> leaf_elements_;
  std::string leaf_data_;
  size_t leaf_size_bytes_ = 0;  // header + elements + data of the pending leaf
  std::string page_buffer_;
};

}  // namespace meridian::bolt
