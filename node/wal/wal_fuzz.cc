// libFuzzer entry point for the WAL segment decoder: any input must decode without crashing,
// without reading out of bounds, and only into records whose checksum holds.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "node/wal/crc32c.h"
#include "node/wal/record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace meridian::wal;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // Small limit so the fuzzer also reaches the "length above max" path cheaply.
  for (uint64_t max_record_size_bytes : {uint64_t{64}, uint64_t{64} << 20}) {
    auto decoded = DecodeSegment(bytes, max_record_size_bytes);
    if (!decoded.ok()) std::abort();
    uint64_t expected_offset = 0;
    for (const DecodedRecord& rec : decoded->records) {
      const std::string_view type_and_payload =
          bytes.substr(rec.offset_bytes + 8, 1 + rec.payload.size());
      const uint32_t stored_crc = static_cast<uint32_t>(data[rec.offset_bytes + 4]) |
                                  static_cast<uint32_t>(data[rec.offset_bytes + 5]) << 8 |
                                  static_cast<uint32_t>(data[rec.offset_bytes + 6]) << 16 |
                                  static_cast<uint32_t>(data[rec.offset_bytes + 7]) << 24;
      if (rec.offset_bytes != expected_offset || Crc32c(type_and_payload) != stored_crc ||
          rec.payload.size() > max_record_size_bytes) {
        std::fprintf(stderr, "bad record at offset %llu\n",
                     static_cast<unsigned long long>(rec.offset_bytes));
        std::abort();
      }
      switch (rec.type) {
        case RecordType::kSegmentHeader:
          (void)ParseSegmentHeader(rec.payload);
          break;
        case RecordType::kEntry:
          (void)ParseEntry(rec.payload);
          break;
        case RecordType::kHardState:
          (void)ParseHardState(rec.payload);
          break;
        case RecordType::kSnapshot:
          (void)ParseSnapshotMarker(rec.payload);
          break;
      }
      expected_offset += kRecordHeaderBytes + rec.payload.size();
    }
    if (decoded->valid_bytes != expected_offset) std::abort();
    if (decoded->clean == !decoded->stop_reason.empty()) std::abort();
  }
  return 0;
}
