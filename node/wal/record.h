#pragma once

// Record framing and the pure segment decoder (no I/O, so it can be fuzzed).
//
// Record: [u32 payload_len][u32 crc32c(type byte + payload)][u8 type][payload], little-endian.
// A segment is its header record followed by entry / hard state / snapshot records, then zeros
// (the preallocated, never-written tail).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "node/wal/types.h"

namespace meridian::wal {

inline constexpr size_t kRecordHeaderBytes = 9;
// The length field is 32 bits; 1 GiB keeps every offset computation far from overflow.
inline constexpr uint64_t kMaxRecordSizeLimitBytes = 1ull << 30;
inline constexpr uint64_t kSegmentMagic = 0x314C41574E44524Dull;  // bytes "MRDNWAL1" on disk
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kEntryFixedBytes = 16;        // index + term, then data
inline constexpr size_t kHardStatePayloadBytes = 24;  // term, vote, commit
inline constexpr size_t kSnapshotPayloadBytes = 16;   // index, term
inline constexpr size_t kSegmentHeaderPayloadBytes = 72;
inline constexpr size_t kSegmentHeaderRecordBytes = kRecordHeaderBytes + kSegmentHeaderPayloadBytes;

enum class RecordType : uint8_t {
  kSegmentHeader = 1,
  kEntry = 2,
  kHardState = 3,
  kSnapshot = 4,
};

// Every segment starts with one of these. It repeats the hard state and snapshot marker in force
// when the segment was created, so deleting older segments never loses them, and it lets
// recovery cross-check that segments follow each other.
struct SegmentHeader {
  uint64_t seq = 0;
  uint64_t first_index = 0;  // last_index + 1 when the segment was created
  HardState hard_state;
  std::optional<SnapshotMarker> snapshot;
  friend bool operator==(const SegmentHeader&, const SegmentHeader&) = default;
};

struct DecodedRecord {
  uint64_t offset_bytes = 0;  // where the record's frame starts
  RecordType type = RecordType::kEntry;
  std::string_view payload;  // view into the decoded bytes; CRC and size already verified
};

struct DecodedSegment {
  std::vector<DecodedRecord> records;  // records[0] is the segment header when non-empty
  // End of the last good record, which is also where decoding stopped.
  uint64_t valid_bytes = 0;
  // True when decoding ended at the end of the input or at all-zero padding; false at a torn or
  // corrupt record (or non-zero bytes after the padding started).
  bool clean = true;
  std::string stop_reason;  // empty when clean
};

// Decodes records up to the first torn/corrupt one. Never allocates more than the record list
// (payloads are views into `bytes`); a length field above max_record_size_bytes or beyond the end
// of `bytes` is reported as corruption. Fails only for an invalid max_record_size_bytes.
[[nodiscard]] absl::StatusOr<DecodedSegment> DecodeSegment(std::string_view bytes,
                                                           uint64_t max_record_size_bytes);

// Payload parsers for payloads from DecodeSegment, which checked their sizes (a wrong size aborts).
SegmentHeader ParseSegmentHeader(std::string_view payload);
Entry ParseEntry(std::string_view payload);
HardState ParseHardState(std::string_view payload);
SnapshotMarker ParseSnapshotMarker(std::string_view payload);

// Encoders append one framed record to *out.
void AppendSegmentHeaderRecord(const SegmentHeader& header, std::string* out);
void AppendEntryRecord(const Entry& entry, std::string* out);
void AppendHardStateRecord(const HardState& hard_state, std::string* out);
void AppendSnapshotRecord(const SnapshotMarker& marker, std::string* out);

inline uint64_t EntryPayloadBytes(const Entry& e) { return kEntryFixedBytes + e.data.size(); }

}  // namespace meridian::wal
