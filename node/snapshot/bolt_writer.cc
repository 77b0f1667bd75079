#include "node/snapshot/bolt_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/snapshot/bolt_format.h"

namespace meridian::bolt {
namespace {

namespace fmt = ::meridian::bolt::format;

// Broken internal invariants abort: they mean the writer would emit a corrupt file.
#define BOLT_CHECK(cond, ...)                                            \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "bolt_writer: check failed: %s: %s\n", #cond, \
                   absl::StrCat(__VA_ARGS__).c_str());                   \
      std::abort();                                                      \
    }                                                                    \
  } while (0)

// Pages consumed by a page whose content is `bytes` long.
uint64_t PagesFor(uint64_t bytes, uint32_t page_size) {
  return bytes == 0 ? 1 : (bytes + page_size - 1) / page_size;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Writer>> Writer::Create(const std::string& path,
                                                       uint32_t page_size) {
  if (!fmt::IsValidPageSize(page_size)) {
    return absl::InvalidArgumentError(absl::StrCat("bolt page size ", page_size,
                                                   " is not a power of two in [", fmt::kMinPageSize,
                                                   ", ", fmt::kMaxPageSize, "]"));
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  return std::unique_ptr<Writer>(new Writer(fd, page_size));
}

Writer::Writer(int fd, uint32_t page_size) : fd_(fd), page_size_(page_size) {
  leaf_size_bytes_ = fmt::kPageHeaderSize;
}

Writer::~Writer() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t Writer::file_size_bytes() const { return file_size_bytes_; }

absl::Status Writer::Latch(absl::Status status) {
  if (!status.ok() && sticky_error_.ok()) sticky_error_ = status;
  return status;
}

absl::Status Writer::CheckUsable() const {
  if (!sticky_error_.ok()) return sticky_error_;
  if (finished_) return absl::FailedPreconditionError("bolt writer already finished");
  return absl::OkStatus();
}

absl::Status Writer::WriteAt(uint64_t offset_bytes, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset_bytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Latch(absl::ErrnoToStatus(errno, "bolt writer pwrite"));
    }
    if (n == 0) return Latch(absl::DataLossError("bolt writer pwrite wrote nothing"));
    bytes.remove_prefix(static_cast<size_t>(n));
    offset_bytes += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status Writer::BeginBucket(std::string_view name) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (name.empty() || name.size() > fmt::kMaxKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket name size ", name.size(), " not in [1, ", fmt::kMaxKeySize, "]"));
  }
  std::string_view previous =
      in_bucket_ ? std::string_view(bucket_name_)
                 : (done_buckets_.empty() ? std::string_view() : done_buckets_.back().first);
  if ((in_bucket_ || !done_buckets_.empty()) && name <= previous) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bucket '", fmt::AbslView(name), "' does not sort after '", fmt::AbslView(previous), "'"));
  }
  if (in_bucket_) {
    if (absl::Status s = EndBucket(); !s.ok()) return s;
  }
  in_bucket_ = true;
  bucket_name_.assign(name);
  has_last_key_ = false;
  last_key_.clear();
  return absl::OkStatus();
}

absl::Status Writer::EndBucket() {
  absl::StatusOr<uint64_t> root = FinishTree();
  if (!root.ok()) return root.status();
  done_buckets_.emplace_back(std::move(bucket_name_), *root);
  bucket_name_.clear();
  in_bucket_ = false;
  return absl::OkStatus();
}

absl::Status Writer::Put(std::string_view key, std::string_view value) {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (!in_bucket_) return absl::FailedPreconditionError("bolt Put before BeginBucket");
  if (key.empty() || key.size() > fmt::kMaxKeySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("key size ", key.size(), " not in [1, ", fmt::kMaxKeySize, "]"));
  }
  if (value.size() > fmt::kMaxValueSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("value size ", value.size(), " exceeds ", fmt::kMaxValueSize));
  }
  if (has_last_key_ && key <= std::string_view(last_key_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("keys must be Put in strictly ascending order (bucket '", bucket_name_,
                     "', key of ", key.size(), " bytes not after the previous key)"));
  }
  if (absl::Status s = AddLeafElement(0, key, value); !s.ok()) return s;
  last_key_.assign(key);
  has_last_key_ = true;
  return absl::OkStatus();
}

absl::Status Writer::AddLeafElement(uint32_t flags, std::string_view key, std::string_view value) {
  const uint64_t element_bytes = fmt::kLeafElementSize + key.size() + value.size();
  if (fmt::kPageHeaderSize + element_bytes > page_size_) {
    // An element that needs overflow pages gets a page of its own, written straight from the
    // caller's buffer so that big values are never copied.
    if (absl::Status s = FlushLeaf(); !s.ok()) return s;
    return WriteLargeLeaf(flags, key, value);
  }
  if (!leaf_elements_.empty() && (leaf_size_bytes_ + element_bytes > page_size_ ||
                                  leaf_elements_.size() >= fmt::kMaxElementsPerPage)) {
    if (absl::Status s = FlushLeaf(); !s.ok()) return s;
  }
  PendingLeafElement e;
  e.flags = flags;
  e.data_offset = static_cast<uint32_t>(leaf_data_.size());
  e.key_size = static_cast<uint32_t>(key.size());
  e.value_size = static_cast<uint32_t>(value.size());
  leaf_elements_.push_back(e);
  leaf_data_.append(key);
  leaf_data_.append(value);
  leaf_size_bytes_ += element_bytes;
  BOLT_CHECK(leaf_size_bytes_ <= page_size_, "leaf size ", leaf_size_bytes_, " page ", page_size_);
  return absl::OkStatus();
}

absl::Status Writer::WriteLargeLeaf(uint32_t flags, std::string_view key, std::string_view value) {
  const uint64_t content_bytes =
      fmt::kPageHeaderSize + fmt::kLeafElementSize + key.size() + value.size();
  const uint64_t pages = PagesFor(content_bytes, page_size_);
  BOLT_CHECK(pages >= 2 && pages - 1 <= UINT32_MAX, "pages ", pages);
  const uint64_t pgid = next_pgid_;
  char head[fmt::kPageHeaderSize + fmt::kLeafElementSize];
  fmt::EncodePageHeader({pgid, fmt::kLeafPageFlag, 1, static_cast<uint32_t>(pages - 1)}, head);
  char* elem = head + fmt::kPageHeaderSize;
  fmt::PutU32(elem, flags);
  fmt::PutU32(elem + 4, static_cast<uint32_t>(fmt::kLeafElementSize));  // data follows element
  fmt::PutU32(elem + 8, static_cast<uint32_t>(key.size()));
  fmt::PutU32(elem + 12, static_cast<uint32_t>(value.size()));
  const uint64_t offset = pgid * page_size_;
  if (absl::Status s = WriteAt(offset, std::string_view(head, sizeof(head))); !s.ok()) return s;
  if (absl::Status s = WriteAt(offset + sizeof(head), key); !s.ok()) return s;
  if (absl::Status s = WriteAt(offset + sizeof(head) + key.size(), value); !s.ok()) return s;
  // The tail of the last slot is left as a hole; Finish() extends the file past it.
  leaf_refs_.push_back(ChildRef{std::string(key), pgid});
  next_pgid_ += pages;
  return absl::OkStatus();
}

absl::Status Writer::FlushLeaf() {
  if (leaf_elements_.empty()) return absl::OkStatus();
  const size_t count = leaf_elements_.size();
  BOLT_CHECK(count <= fmt::kMaxElementsPerPage && leaf_size_bytes_ <= page_size_, "count ", count,
             " size ", leaf_size_bytes_);
  page_buffer_.assign(page_size_, '\0');
  char* page = page_buffer_.data();
  const uint64_t pgid = next_pgid_;
  fmt::EncodePageHeader({pgid, fmt::kLeafPageFlag, static_cast<uint16_t>(count), 0}, page);
  const size_t data_start = fmt::kPageHeaderSize + count * fmt::kLeafElementSize;
  for (size_t i = 0; i < count; ++i) {
    const PendingLeafElement& e = leaf_elements_[i];
    const size_t elem_offset = fmt::kPageHeaderSize + i * fmt::kLeafElementSize;
    char* elem = page + elem_offset;
    fmt::PutU32(elem, e.flags);
    fmt::PutU32(elem + 4, static_cast<uint32_t>(data_start + e.data_offset - elem_offset));
    fmt::PutU32(elem + 8, e.key_size);
    fmt::PutU32(elem + 12, e.value_size);
  }
  std::memcpy(page + data_start, leaf_data_.data(), leaf_data_.size());
  leaf_refs_.push_back(ChildRef{leaf_data_.substr(0, leaf_elements_[0].key_size), pgid});
  leaf_elements_.clear();
  leaf_data_.clear();
  leaf_size_bytes_ = fmt::kPageHeaderSize;
  next_pgid_ += 1;
  return WriteAt(pgid * page_size_, page_buffer_);
}

absl::StatusOr<uint64_t> Writer::WriteBranchPage(const std::vector<ChildRef>& level, size_t begin,
                                                 size_t end) {
  const size_t count = end - begin;
  BOLT_CHECK(count >= 1 && count <= fmt::kMaxElementsPerPage, "branch count ", count);
  uint64_t content_bytes = fmt::kPageHeaderSize + count * fmt::kBranchElementSize;
  for (size_t i = begin; i < end; ++i) content_bytes += level[i].first_key.size();
  const uint64_t pages = PagesFor(content_bytes, page_size_);
  const uint64_t pgid = next_pgid_;
  page_buffer_.assign(pages * page_size_, '\0');
  char* page = page_buffer_.data();
  fmt::EncodePageHeader(
      {pgid, fmt::kBranchPageFlag, static_cast<uint16_t>(count), static_cast<uint32_t>(pages - 1)},
      page);
  size_t data_offset = fmt::kPageHeaderSize + count * fmt::kBranchElementSize;
  for (size_t i = 0; i < count; ++i) {
    const ChildRef& child = level[begin + i];
    const size_t elem_offset = fmt::kPageHeaderSize + i * fmt::kBranchElementSize;
    char* elem = page + elem_offset;
    fmt::PutU32(elem, static_cast<uint32_t>(data_offset - elem_offset));
    fmt::PutU32(elem + 4, static_cast<uint32_t>(child.first_key.size()));
    fmt::PutU64(elem + 8, child.pgid);
    std::memcpy(page + data_offset, child.first_key.data(), child.first_key.size());
    data_offset += child.first_key.size();
  }
  next_pgid_ += pages;
  if (absl::Status s = WriteAt(pgid * page_size_, page_buffer_); !s.ok()) return s;
  return pgid;
}

absl::StatusOr<uint64_t> Writer::FinishTree() {
  if (absl::Status s = FlushLeaf(); !s.ok()) return s;
  std::vector<ChildRef> level = std::move(leaf_refs_);
  leaf_refs_.clear();
  if (level.empty()) {
    // bbolt's own freshly created root bucket is exactly this: a leaf page with no elements.
    const uint64_t pgid = next_pgid_;
    page_buffer_.assign(page_size_, '\0');
    fmt::EncodePageHeader({pgid, fmt::kLeafPageFlag, 0, 0}, page_buffer_.data());
    next_pgid_ += 1;
    if (absl::Status s = WriteAt(pgid * page_size_, page_buffer_); !s.ok()) return s;
    return pgid;
  }
  while (level.size() > 1) {
    // Greedy fill; each branch page gets at least two children (bbolt's minimum for branches),
    // which also guarantees every level is at most half the size of the one below.
    std::vector<std::pair<size_t, size_t>> groups;
    size_t i = 0;
    while (i < level.size()) {
      const size_t begin = i;
      uint64_t bytes = fmt::kPageHeaderSize;
      while (i < level.size()) {
        const uint64_t element_bytes = fmt::kBranchElementSize + level[i].first_key.size();
        const size_t count = i - begin;
        if (count >= 2 &&
            (bytes + element_bytes > page_size_ || count >= fmt::kMaxElementsPerPage)) {
          break;
        }
        bytes += element_bytes;
        ++i;
      }
      groups.emplace_back(begin, i);
    }
    if (groups.size() >= 2 && groups.back().second - groups.back().first == 1) {
      auto& prev = groups[groups.size() - 2];
      if (prev.second - prev.first >= 3) {
        prev.second -= 1;
        groups.back().first -= 1;
      } else {
        prev.second = groups.back().second;
        groups.pop_back();
      }
    }
    std::vector<ChildRef> next_level;
    next_level.reserve(groups.size());
    for (const auto& [begin, end] : groups) {
      absl::StatusOr<uint64_t> pgid = WriteBranchPage(level, begin, end);
      if (!pgid.ok()) return pgid.status();
      next_level.push_back(ChildRef{std::move(level[begin].first_key), *pgid});
    }
    BOLT_CHECK(next_level.size() < level.size(), "branch level did not shrink: ", next_level.size(),
               " >= ", level.size());
    level = std::move(next_level);
  }
  return level[0].pgid;
}

absl::Status Writer::Finish() {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (in_bucket_) {
    if (absl::Status s = EndBucket(); !s.ok()) return s;
  }
  for (const auto& [name, root_pgid] : done_buckets_) {
    char header[fmt::kBucketHeaderSize];
    fmt::PutU64(header, root_pgid);
    fmt::PutU64(header + 8, 0);  // sequence
    if (absl::Status s =
            AddLeafElement(fmt::kBucketLeafFlag, name, std::string_view(header, sizeof(header)));
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<uint64_t> root_pgid = FinishTree();
  if (!root_pgid.ok()) return root_pgid.status();

  const uint64_t freelist_pgid = next_pgid_;
  page_buffer_.assign(page_size_, '\0');
  fmt::EncodePageHeader({freelist_pgid, fmt::kFreelistPageFlag, 0, 0}, page_buffer_.data());
  next_pgid_ += 1;
  if (absl::Status s = WriteAt(freelist_pgid * page_size_, page_buffer_); !s.ok()) return s;

  const uint64_t high_water_pgid = next_pgid_;
  for (uint64_t meta_pgid = 0; meta_pgid < 2; ++meta_pgid) {
    page_buffer_.assign(page_size_, '\0');
    fmt::EncodePageHeader({meta_pgid, fmt::kMetaPageFlag, 0, 0}, page_buffer_.data());
    fmt::Meta meta;
    meta.page_size = page_size_;
    meta.root_pgid = *root_pgid;
    meta.freelist_pgid = freelist_pgid;
    meta.high_water_pgid = high_water_pgid;
    // bbolt writes meta page txid % 2; both metas describe the same state.
    meta.txid = 2 + meta_pgid;
    fmt::EncodeMeta(meta, page_buffer_.data() + fmt::kPageHeaderSize);
    if (absl::Status s = WriteAt(meta_pgid * page_size_, page_buffer_); !s.ok()) return s;
  }

  file_size_bytes_ = high_water_pgid * page_size_;
  if (::ftruncate(fd_, static_cast<off_t>(file_size_bytes_)) != 0) {
    return Latch(absl::ErrnoToStatus(errno, "bolt writer ftruncate"));
  }
  if (::fsync(fd_) != 0) return Latch(absl::ErrnoToStatus(errno, "bolt writer fsync"));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return Latch(absl::ErrnoToStatus(errno, "bolt writer close"));
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace meridian::bolt
