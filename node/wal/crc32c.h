#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace meridian::wal {

// CRC32C (Castagnoli), the checksum of iSCSI/ext4/RocksDB: better error detection than zlib's
// CRC32 for the short records a log holds. Software slicing-by-8; fast enough that the fdatasync,
// not the checksum, dominates an append.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size_bytes);

inline uint32_t Crc32c(std::string_view bytes) {
  return Crc32cExtend(0, bytes.data(), bytes.size());
}

}  // namespace meridian::wal
