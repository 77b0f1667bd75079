// On-disk layout of go.etcd.io/bbolt database files (format version 2), shared by the writer and
// the reader. bbolt writes its structs in native byte order; every platform etcd ships on is
// little-endian, so we fix little-endian explicitly rather than depend on the host.
//
// A file is an array of fixed-size pages. Every page starts with a 16-byte header
//   {id u64, flags u16, count u16, overflow u32}
// and a page with overflow N occupies N+1 consecutive page slots. Pages 0 and 1 are meta pages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/strings/string_view.h"

namespace meridian::bolt::format {

inline constexpr uint32_t kMagic = 0xED0CDAED;
inline constexpr uint32_t kVersion = 2;

inline constexpr size_t kPageHeaderSize = 16;
// Leaf element: {flags u32, pos u32, ksize u32, vsize u32}; pos is relative to the element.
inline constexpr size_t kLeafElementSize = 16;
// Branch element: {pos u32, ksize u32, pgid u64}; pos is relative to the element.
inline constexpr size_t kBranchElementSize = 16;
// Bucket value header: {root pgid u64, sequence u64}. root == 0 means the bucket is inline and
// a leaf page (header + elements) follows the header inside the value.
inline constexpr size_t kBucketHeaderSize = 16;

inline constexpr uint16_t kBranchPageFlag = 0x01;
inline constexpr uint16_t kLeafPageFlag = 0x02;
inline constexpr uint16_t kMetaPageFlag = 0x04;
inline constexpr uint16_t kFreelistPageFlag = 0x10;

inline constexpr uint32_t kBucketLeafFlag = 0x01;

// Meta (follows the page header of pages 0 and 1):
//   magic u32, version u32, page_size u32, flags u32, root {pgid u64, sequence u64},
//   freelist pgid u64, pgid (high-water mark) u64, txid u64, checksum u64.
inline constexpr size_t kMetaSize = 64;
inline constexpr size_t kMetaChecksumOffset = 56;  // FNV-64a covers the bytes before it.

// Freelist page id meaning "freelist not persisted" (bbolt's NoFreelistSync).
inline constexpr uint64_t kNoFreelist = ~uint64_t{0};
// A freelist page whose count is this value keeps the real count in its first u64 slot.
inline constexpr uint16_t kFreelistCountOverflow = 0xFFFF;

inline constexpr uint32_t kMinPageSize = 512;
inline constexpr uint32_t kMaxPageSize = 64 * 1024;
inline constexpr uint16_t kMaxElementsPerPage = 0xFFFF;

// bbolt's own limits (bolt.MaxKeySize / bolt.MaxValueSize).
inline constexpr size_t kMaxKeySize = 32768;
inline constexpr size_t kMaxValueSize = (size_t{1} << 31) - 2;

// Debian's abseil keeps its own string_view type, which std::string_view does not convert to.
inline absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

inline bool IsValidPageSize(uint64_t page_size) {
  return page_size >= kMinPageSize && page_size <= kMaxPageSize &&
         (page_size & (page_size - 1)) == 0;
}

inline void PutU16(char* dst, uint16_t v) {
  for (int i = 0; i < 2; ++i) dst[i] = static_cast<char>(v >> (8 * i));
}
inline void PutU32(char* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>(v >> (8 * i));
}
inline void PutU64(char* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>(v >> (8 * i));
}
inline uint16_t LoadU16(const char* src) {
  uint16_t v = 0;
  for (int i = 1; i >= 0; --i) v = static_cast<uint16_t>((v << 8) | static_cast<uint8_t>(src[i]));
  return v;
}
inline uint32_t LoadU32(const char* src) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(src[i]);
  return v;
}
inline uint64_t LoadU64(const char* src) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(src[i]);
  return v;
}

inline uint64_t Fnv64a(std::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

struct PageHeader {
  uint64_t id = 0;
  uint16_t flags = 0;
  uint16_t count = 0;
  uint32_t overflow = 0;
};

inline void EncodePageHeader(const PageHeader& h, char* dst) {
  PutU64(dst, h.id);
  PutU16(dst + 8, h.flags);
  PutU16(dst + 10, h.count);
  PutU32(dst + 12, h.overflow);
}
inline PageHeader DecodePageHeader(const char* src) {
  return PageHeader{LoadU64(src), LoadU16(src + 8), LoadU16(src + 10), LoadU32(src + 12)};
}

struct Meta {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  uint32_t page_size = 0;
  uint32_t flags = 0;
  uint64_t root_pgid = 0;
  uint64_t root_sequence = 0;
  uint64_t freelist_pgid = 0;
  uint64_t high_water_pgid = 0;  // number of pages in use; every id below it is reachable or free
  uint64_t txid = 0;
  uint64_t checksum = 0;
};

// Writes kMetaSize bytes, computing the checksum.
inline void EncodeMeta(const Meta& m, char* dst) {
  PutU32(dst, m.magic);
  PutU32(dst + 4, m.version);
  PutU32(dst + 8, m.page_size);
  PutU32(dst + 12, m.flags);
  PutU64(dst + 16, m.root_pgid);
  PutU64(dst + 24, m.root_sequence);
  PutU64(dst + 32, m.freelist_pgid);
  PutU64(dst + 40, m.high_water_pgid);
  PutU64(dst + 48, m.txid);
  PutU64(dst + kMetaChecksumOffset, Fnv64a(std::string_view(dst, kMetaChecksumOffset)));
}

// Reads kMetaSize bytes; the caller checks magic/version/checksum.
inline Meta DecodeMeta(const char* src) {
  Meta m;
  m.magic = LoadU32(src);
  m.version = LoadU32(src + 4);
  m.page_size = LoadU32(src + 8);
  m.flags = LoadU32(src + 12);
  m.root_pgid = LoadU64(src + 16);
  m.root_sequence = LoadU64(src + 24);
  m.freelist_pgid = LoadU64(src + 32);
  m.high_water_pgid = LoadU64(src + 40);
  m.txid = LoadU64(src + 48);
  m.checksum = LoadU64(src + kMetaChecksumOffset);
  return m;
}

inline uint64_t MetaChecksum(const char* meta_bytes) {
  return Fnv64a(std::string_view(meta_bytes, kMetaChecksumOffset));
}

}  // namespace meridian::bolt::format
