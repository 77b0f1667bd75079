#include "node/snapshot/bolt_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace meridian::bolt {
namespace {

namespace fmt = ::meridian::bolt::format;

// A B+tree with at least two children per branch would need 2^64 leaves to get this deep, so
// anything deeper is corrupt (and the cap bounds recursion).
constexpr int kMaxTreeDepth = 64;
// Buckets nested inside buckets; etcd uses none, bbolt allows some.
constexpr int kMaxBucketNesting = 16;

constexpr uint8_t kMarkReachable = 1;
constexpr uint8_t kMarkFree = 2;

absl::Status Corrupt(std::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt bolt file: ", fmt::AbslView(what)));
}

// Returns the meta stored in `page_bytes` (header + meta) if it is a valid meta page whose own
// structural fields are consistent with a file of `file_size_bytes`.
std::optional<fmt::Meta> ParseMeta(const char* page_bytes, uint64_t file_size_bytes) {
  const fmt::PageHeader header = fmt::DecodePageHeader(page_bytes);
  if ((header.flags & fmt::kMetaPageFlag) == 0) return std::nullopt;
  const char* meta_bytes = page_bytes + fmt::kPageHeaderSize;
  const fmt::Meta meta = fmt::DecodeMeta(meta_bytes);
  if (meta.magic != fmt::kMagic || meta.version != fmt::kVersion) return std::nullopt;
  if (meta.checksum != fmt::MetaChecksum(meta_bytes)) return std::nullopt;
  if (!fmt::IsValidPageSize(meta.page_size)) return std::nullopt;
  const uint64_t file_pages = file_size_bytes / meta.page_size;
  if (meta.high_water_pgid < 3 || meta.high_water_pgid > file_pages) return std::nullopt;
  if (meta.root_pgid < 2 || meta.root_pgid >= meta.high_water_pgid) return std::nullopt;
  if (meta.freelist_pgid != fmt::kNoFreelist &&
      (meta.freelist_pgid < 2 || meta.freelist_pgid >= meta.high_water_pgid)) {
    return std::nullopt;
  }
  return meta;
}

bool KeyLess(std::string_view a, std::string_view b) { return a < b; }

}  // namespace

Reader::Reader(int fd, uint64_t file_size_bytes, const fmt::Meta& meta)
    : fd_(fd), file_size_bytes_(file_size_bytes), meta_(meta) {}

Reader::~Reader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<Reader>> Reader::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("fstat ", path));
  }
  const uint64_t file_size_bytes = static_cast<uint64_t>(st.st_size);
  // Construct first so the descriptor is closed on every error path below.
  std::unique_ptr<Reader> reader(new Reader(fd, file_size_bytes, fmt::Meta{}));

  constexpr size_t kMetaPageBytes = fmt::kPageHeaderSize + fmt::kMetaSize;
  char buf[kMetaPageBytes];
  std::optional<fmt::Meta> meta0;
  if (file_size_bytes >= kMetaPageBytes && reader->ReadAt(0, kMetaPageBytes, buf).ok()) {
    meta0 = ParseMeta(buf, file_size_bytes);
  }
  // Without a valid meta 0 the page size is unknown; probe every legal one for meta 1.
  std::optional<fmt::Meta> meta1;
  for (uint64_t page_size = fmt::kMinPageSize; page_size <= fmt::kMaxPageSize; page_size *= 2) {
    if (meta0.has_value() && page_size != meta0->page_size) continue;
    if (page_size + kMetaPageBytes > file_size_bytes) break;
    if (!reader->ReadAt(page_size, kMetaPageBytes, buf).ok()) continue;
    std::optional<fmt::Meta> candidate = ParseMeta(buf, file_size_bytes);
    if (candidate.has_value() && candidate->page_size == page_size) {
      meta1 = candidate;
      break;
    }
  }
  if (!meta0.has_value() && !meta1.has_value()) {
    return Corrupt(absl::StrCat(path, ": no valid meta page"));
  }
  if (meta0.has_value() && (!meta1.has_value() || meta0->txid >= meta1->txid)) {
    reader->meta_ = *meta0;
  } else {
    reader->meta_ = *meta1;
  }
  return reader;
}

absl::Status Reader::ReadAt(uint64_t offset_bytes, size_t size, char* out) const {
  if (offset_bytes > file_size_bytes_ || size > file_size_bytes_ - offset_bytes) {
    return Corrupt(absl::StrCat("read of ", size, " bytes at ", offset_bytes, " past end of file (",
                                file_size_bytes_, " bytes)"));
  }
  while (size > 0) {
    ssize_t n = ::pread(fd_, out, size, static_cast<off_t>(offset_bytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "bolt reader pread");
    }
    if (n == 0) return absl::DataLossError("bolt reader: file shrank while reading");
    out += n;
    size -= static_cast<size_t>(n);
    offset_bytes += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<Reader::Page> Reader::ReadPage(uint64_t pgid) const {
  if (pgid < 2 || pgid >= meta_.high_water_pgid) {
    return Corrupt(absl::StrCat("page id ", pgid, " outside [2, ", meta_.high_water_pgid, ")"));
  }
  const uint64_t page_size = meta_.page_size;
  char head[fmt::kPageHeaderSize];
  if (absl::Status s = ReadAt(pgid * page_size, sizeof(head), head); !s.ok()) return s;
  Page page;
  page.pgid = pgid;
  page.header = fmt::DecodePageHeader(head);
  if (page.header.id != pgid) {
    return Corrupt(absl::StrCat("page ", pgid, " identifies itself as ", page.header.id));
  }
  // high_water_pgid * page_size <= file size (checked at Open), so this bounds the allocation
  // by the file's own size.
  const uint64_t span_pages = uint64_t{page.header.overflow} + 1;
  if (span_pages > meta_.high_water_pgid - pgid) {
    return Corrupt(absl::StrCat("page ", pgid, " overflow ", page.header.overflow,
                                " runs past the high-water mark ", meta_.high_water_pgid));
  }
  page.bytes.resize(span_pages * page_size);
  if (absl::Status s = ReadAt(pgid * page_size, page.bytes.size(), page.bytes.data()); !s.ok()) {
    return s;
  }
  return page;
}

absl::Status Reader::VisitLeafElements(std::string_view page, uint64_t pgid,
                                       const std::string* min_key, const std::string* max_key,
                                       std::string& last_key, bool& has_last_key,
                                       ElementVisitor visit) {
  if (page.size() < fmt::kPageHeaderSize) return Corrupt(absl::StrCat("leaf ", pgid, " too short"));
  const fmt::PageHeader header = fmt::DecodePageHeader(page.data());
  const uint64_t count = header.count;
  if (fmt::kPageHeaderSize + count * fmt::kLeafElementSize > page.size()) {
    return Corrupt(absl::StrCat("leaf ", pgid, " element count ", count, " exceeds its page"));
  }
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t elem_offset = fmt::kPageHeaderSize + i * fmt::kLeafElementSize;
    const char* elem = page.data() + elem_offset;
    const uint32_t flags = fmt::LoadU32(elem);
    const uint64_t key_start = elem_offset + fmt::LoadU32(elem + 4);
    const uint64_t key_size = fmt::LoadU32(elem + 8);
    const uint64_t value_size = fmt::LoadU32(elem + 12);
    if (key_start + key_size + value_size > page.size()) {
      return Corrupt(absl::StrCat("leaf ", pgid, " element ", i, " runs past its page"));
    }
    if (key_size == 0) return Corrupt(absl::StrCat("leaf ", pgid, " element ", i, " empty key"));
    const std::string_view key = page.substr(key_start, key_size);
    const std::string_view value = page.substr(key_start + key_size, value_size);
    if (has_last_key && !KeyLess(last_key, key)) {
      return Corrupt(absl::StrCat("leaf ", pgid, " element ", i, " key out of order"));
    }
    if ((min_key != nullptr && KeyLess(key, *min_key)) ||
        (max_key != nullptr && !KeyLess(key, *max_key))) {
      return Corrupt(absl::StrCat("leaf ", pgid, " element ", i, " key outside parent range"));
    }
    if (absl::Status s = visit(flags, key, value); !s.ok()) return s;
    last_key.assign(key);
    has_last_key = true;
  }
  return absl::OkStatus();
}

absl::Status Reader::WalkTree(uint64_t pgid, int depth, WalkState& state,
                              const std::string* min_key, const std::string* max_key,
                              std::string& last_key, bool& has_last_key, ElementVisitor visit) {
  if (depth > kMaxTreeDepth) return Corrupt(absl::StrCat("tree deeper than ", kMaxTreeDepth));
  absl::StatusOr<Page> page = ReadPage(pgid);
  if (!page.ok()) return page.status();
  std::vector<uint8_t>& marks = *state.page_marks;
  for (uint64_t id = pgid; id <= pgid + page->header.overflow; ++id) {
    if (marks[id] == kMarkReachable) {
      return Corrupt(absl::StrCat("page ", id, " referenced more than once"));
    }
    if (marks[id] == kMarkFree) return Corrupt(absl::StrCat("page ", id, " reachable but free"));
    marks[id] = kMarkReachable;
  }
  const std::string_view bytes = page->bytes;
  if (page->header.flags == fmt::kLeafPageFlag) {
    return VisitLeafElements(bytes, pgid, min_key, max_key, last_key, has_last_key, visit);
  }
  if (page->header.flags != fmt::kBranchPageFlag) {
    return Corrupt(absl::StrCat("page ", pgid, " has type flags ", page->header.flags,
                                " inside a bucket tree"));
  }
  const uint64_t count = page->header.count;
  if (count == 0 || fmt::kPageHeaderSize + count * fmt::kBranchElementSize > bytes.size()) {
    return Corrupt(absl::StrCat("branch ", pgid, " bad element count ", count));
  }
  // Bounds of child i are [key_i, key_{i+1}); the last child inherits our upper bound.
  std::string child_min;
  std::string child_max;
  for (uint64_t i = 0; i < count; ++i) {
    auto element_key = [&](uint64_t index, std::string* out) -> absl::Status {
      const uint64_t elem_offset = fmt::kPageHeaderSize + index * fmt::kBranchElementSize;
      const char* elem = bytes.data() + elem_offset;
      const uint64_t key_start = elem_offset + fmt::LoadU32(elem);
      const uint64_t key_size = fmt::LoadU32(elem + 4);
      if (key_size == 0 || key_start + key_size > bytes.size()) {
        return Corrupt(absl::StrCat("branch ", pgid, " element ", index, " bad key extent"));
      }
      out->assign(bytes.substr(key_start, key_size));
      return absl::OkStatus();
    };
    if (i == 0) {
      if (absl::Status s = element_key(0, &child_min); !s.ok()) return s;
      if (min_key != nullptr && KeyLess(child_min, *min_key)) {
        return Corrupt(absl::StrCat("branch ", pgid, " first key below its parent's key"));
      }
    } else {
      child_min = std::move(child_max);
    }
    const std::string* upper = max_key;
    if (i + 1 < count) {
      if (absl::Status s = element_key(i + 1, &child_max); !s.ok()) return s;
      if (!KeyLess(child_min, child_max)) {
        return Corrupt(absl::StrCat("branch ", pgid, " keys out of order at ", i + 1));
      }
      upper = &child_max;
    }
    if (max_key != nullptr && !KeyLess(child_min, *max_key)) {
      return Corrupt(absl::StrCat("branch ", pgid, " key ", i, " not below its parent's bound"));
    }
    const uint64_t child_pgid =
        fmt::LoadU64(bytes.data() + fmt::kPageHeaderSize + i * fmt::kBranchElementSize + 8);
    if (absl::Status s = WalkTree(child_pgid, depth + 1, state, &child_min, upper, last_key,
                                  has_last_key, visit);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Reader::WalkBucket(std::string_view bucket_value, WalkState& state,
                                ElementVisitor visit) {
  if (bucket_value.size() < fmt::kBucketHeaderSize) {
    return Corrupt(absl::StrCat("bucket value of ", bucket_value.size(), " bytes"));
  }
  const uint64_t root_pgid = fmt::LoadU64(bucket_value.data());
  std::string last_key;
  bool has_last_key = false;
  if (root_pgid != 0) {
    return WalkTree(root_pgid, 0, state, nullptr, nullptr, last_key, has_last_key, visit);
  }
  // Inline bucket: a leaf page lives inside the value itself.
  const std::string_view inline_page = bucket_value.substr(fmt::kBucketHeaderSize);
  if (inline_page.size() < fmt::kPageHeaderSize) return Corrupt("inline bucket too short");
  if ((fmt::DecodePageHeader(inline_page.data()).flags & fmt::kLeafPageFlag) == 0) {
    return Corrupt("inline bucket page is not a leaf");
  }
  return VisitLeafElements(inline_page, 0, nullptr, nullptr, last_key, has_last_key, visit);
}

absl::Status Reader::FindBucket(std::string_view name, std::string* bucket_value) {
  std::vector<uint8_t> marks(meta_.high_water_pgid, 0);
  WalkState state{&marks};
  bool found = false;
  absl::Status s = WalkBucket(
      [&] {
        char header[fmt::kBucketHeaderSize] = {};
        fmt::PutU64(header, meta_.root_pgid);
        return std::string(header, sizeof(header));
      }(),
      state,
      [&](uint32_t flags, std::string_view key, std::string_view value) {
        if (key != name) return absl::OkStatus();
        if ((flags & fmt::kBucketLeafFlag) == 0) {
          return absl::FailedPreconditionError(
              absl::StrCat("'", fmt::AbslView(key), "' is not a bucket"));
        }
        bucket_value->assign(value);
        found = true;
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  if (!found) return absl::NotFoundError(absl::StrCat("no bucket '", fmt::AbslView(name), "'"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Reader::BucketNames() {
  std::vector<uint8_t> marks(meta_.high_water_pgid, 0);
  WalkState state{&marks};
  std::vector<std::string> names;
  char root[fmt::kBucketHeaderSize] = {};
  fmt::PutU64(root, meta_.root_pgid);
  absl::Status s = WalkBucket(std::string_view(root, sizeof(root)), state,
                              [&](uint32_t flags, std::string_view key, std::string_view) {
                                if ((flags & fmt::kBucketLeafFlag) == 0) {
                                  return Corrupt("top-level key that is not a bucket");
                                }
                                names.emplace_back(key);
                                return absl::OkStatus();
                              });
  if (!s.ok()) return s;
  return names;
}

absl::Status Reader::ForEach(std::string_view name, Visitor visit) {
  std::string bucket_value;
  if (absl::Status s = FindBucket(name, &bucket_value); !s.ok()) return s;
  std::vector<uint8_t> marks(meta_.high_water_pgid, 0);
  WalkState state{&marks};
  return WalkBucket(
      bucket_value, state, [&](uint32_t flags, std::string_view key, std::string_view value) {
        if ((flags & fmt::kBucketLeafFlag) != 0) {
          return absl::UnimplementedError(
              absl::StrCat("nested bucket in '", fmt::AbslView(name), "' is not supported"));
        }
        return visit(key, value);
      });
}

absl::Status Reader::CheckBucket(std::string_view bucket_value, int depth, WalkState& state) {
  if (depth > kMaxBucketNesting) {
    return Corrupt(absl::StrCat("buckets nested deeper than ", kMaxBucketNesting));
  }
  return WalkBucket(bucket_value, state,
                    [&](uint32_t flags, std::string_view key, std::string_view value) {
                      if ((flags & fmt::kBucketLeafFlag) == 0) {
                        if (depth == 0) return Corrupt("top-level key that is not a bucket");
                        return absl::OkStatus();
                      }
                      return CheckBucket(value, depth + 1, state);
                    });
}

absl::Status Reader::Check() {
  const uint64_t high_water_pgid = meta_.high_water_pgid;
  std::vector<uint8_t> marks(high_water_pgid, 0);
  marks[0] = kMarkReachable;
  marks[1] = kMarkReachable;
  if (meta_.freelist_pgid != fmt::kNoFreelist) {
    absl::StatusOr<Page> page = ReadPage(meta_.freelist_pgid);
    if (!page.ok()) return page.status();
    if (page->header.flags != fmt::kFreelistPageFlag) {
      return Corrupt(
          absl::StrCat("freelist page ", page->pgid, " has type flags ", page->header.flags));
    }
    for (uint64_t id = page->pgid; id <= page->pgid + page->header.overflow; ++id) {
      marks[id] = kMarkReachable;
    }
    const std::string_view bytes = page->bytes;
    const uint64_t slots = (bytes.size() - fmt::kPageHeaderSize) / 8;
    uint64_t first = 0;
    uint64_t count = page->header.count;
    if (count == fmt::kFreelistCountOverflow) {
      if (slots < 1) return Corrupt("freelist count slot missing");
      count = fmt::LoadU64(bytes.data() + fmt::kPageHeaderSize);
      first = 1;
    }
    if (count > slots - first) {
      return Corrupt(absl::StrCat("freelist count ", count, " exceeds its page"));
    }
    for (uint64_t i = first; i < first + count; ++i) {
      const uint64_t id = fmt::LoadU64(bytes.data() + fmt::kPageHeaderSize + i * 8);
      if (id < 2 || id >= high_water_pgid) {
        return Corrupt(absl::StrCat("free page id ", id, " outside [2, ", high_water_pgid, ")"));
      }
      if (marks[id] != 0) return Corrupt(absl::StrCat("page ", id, " freed twice or in use"));
      marks[id] = kMarkFree;
    }
  }
  WalkState state{&marks};
  char root[fmt::kBucketHeaderSize] = {};
  fmt::PutU64(root, meta_.root_pgid);
  if (absl::Status s = CheckBucket(std::string_view(root, sizeof(root)), 0, state); !s.ok()) {
    return s;
  }
  if (meta_.freelist_pgid == fmt::kNoFreelist) return absl::OkStatus();
  for (uint64_t id = 0; id < high_water_pgid; ++id) {
    if (marks[id] == 0) return Corrupt(absl::StrCat("page ", id, " unreachable and not free"));
  }
  return absl::OkStatus();
}

}  // namespace meridian::bolt
