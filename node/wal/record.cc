#include "node/wal/record.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "node/wal/crc32c.h"

namespace meridian::wal {
namespace {

constexpr uint32_t kHeaderFlagHasSnapshot = 1;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "meridian::wal invariant broken: %s\n", message.c_str());
  std::abort();
}

void StoreU32(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

void PutU32(uint32_t v, std::string* out) {
  char b[4];
  StoreU32(v, b);
  out->append(b, sizeof(b));
}

void PutU64(uint64_t v, std::string* out) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, sizeof(b));
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

bool AllZero(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));
    if (word != 0) return false;
  }
  for (; n > 0; ++p, --n) {
    if (*p != 0) return false;
  }
  return true;
}

// Frame layout puts the type byte right before the payload so one CRC pass covers both.
size_t BeginRecord(RecordType type, std::string* out) {
  const size_t start = out->size();
  out->append(8, '\0');  // length + crc, patched by EndRecord
  out->push_back(static_cast<char>(type));
  return start;
}

void EndRecord(size_t start, std::string* out) {
  const size_t payload_bytes = out->size() - start - kRecordHeaderBytes;
  if (payload_bytes > kMaxRecordSizeLimitBytes) {
    Die(absl::StrCat("record payload of ", payload_bytes, " bytes exceeds the format limit"));
  }
  char* frame = out->data() + start;
  StoreU32(static_cast<uint32_t>(payload_bytes), frame);
  StoreU32(Crc32cExtend(0, frame + 8, 1 + payload_bytes), frame + 4);
}

// Returns why a CRC-valid record is still unacceptable, or "" when it is fine.
std::string CheckRecord(uint8_t type, std::string_view payload, uint64_t offset_bytes) {
  const auto expect_size = [&](size_t want) -> std::string {
    if (payload.size() == want) return "";
    return absl::StrCat("record type ", type, " has ", payload.size(), " payload bytes, want ",
                        want);
  };
  if (offset_bytes == 0 && type != static_cast<uint8_t>(RecordType::kSegmentHeader)) {
    return "segment does not start with a header record";
  }
  switch (static_cast<RecordType>(type)) {
    case RecordType::kSegmentHeader: {
      if (offset_bytes != 0) return "segment header record at a non-zero offset";
      if (auto err = expect_size(kSegmentHeaderPayloadBytes); !err.empty()) return err;
      if (GetU64(payload.data()) != kSegmentMagic) return "bad segment magic";
      const uint32_t version = GetU32(payload.data() + 8);
      if (version != kFormatVersion) return absl::StrCat("unsupported format version ", version);
      const uint32_t flags = GetU32(payload.data() + 12);
      if ((flags & ~kHeaderFlagHasSnapshot) != 0) {
        return absl::StrCat("unknown header flags ", flags);
      }
      return "";
    }
    case RecordType::kEntry:
      if (payload.size() < kEntryFixedBytes) return expect_size(kEntryFixedBytes);
      return "";
    case RecordType::kHardState:
      return expect_size(kHardStatePayloadBytes);
    case RecordType::kSnapshot:
      return expect_size(kSnapshotPayloadBytes);
  }
  return absl::StrCat("unknown record type ", type);
}

}  // namespace

absl::StatusOr<DecodedSegment> DecodeSegment(std::string_view bytes,
                                             uint64_t max_record_size_bytes) {
  if (max_record_size_bytes == 0 || max_record_size_bytes > kMaxRecordSizeLimitBytes) {
    return absl::InvalidArgumentError(absl::StrCat("max_record_size_bytes must be in [1, ",
                                                   kMaxRecordSizeLimitBytes, "], got ",
                                                   max_record_size_bytes));
  }
  DecodedSegment out;
  const auto stop = [&out](std::string reason) {
    out.clean = false;
    out.stop_reason = std::move(reason);
  };
  uint64_t pos = 0;
  while (pos < bytes.size()) {
    const std::string_view rest = bytes.substr(pos);
    if (rest.size() < kRecordHeaderBytes) {
      if (!AllZero(rest)) stop(absl::StrCat("partial record header (", rest.size(), " bytes)"));
      break;
    }
    const uint32_t payload_bytes = GetU32(rest.data());
    const uint32_t crc = GetU32(rest.data() + 4);
    const auto type = static_cast<uint8_t>(rest[8]);
    if (payload_bytes == 0 && crc == 0 && type == 0) {
      // Preallocated space reads as zeros. Non-zero bytes past that point mean writes landed out
      // of order (a torn write), so later data cannot be trusted either.
      if (!AllZero(rest)) stop("non-zero bytes after the zero-filled end of data");
      break;
    }
    if (payload_bytes > max_record_size_bytes) {
      stop(absl::StrCat("record length ", payload_bytes, " exceeds max_record_size_bytes ",
                        max_record_size_bytes));
      break;
    }
    if (payload_bytes > rest.size() - kRecordHeaderBytes) {
      stop(absl::StrCat("record length ", payload_bytes, " runs past the end of the segment (",
                        rest.size() - kRecordHeaderBytes, " bytes left)"));
      break;
    }
    const std::string_view type_and_payload = rest.substr(8, 1 + payload_bytes);
    if (Crc32c(type_and_payload) != crc) {
      stop("checksum mismatch");
      break;
    }
    const std::string_view payload = type_and_payload.substr(1);
    if (std::string err = CheckRecord(type, payload, pos); !err.empty()) {
      stop(std::move(err));
      break;
    }
    out.records.push_back({pos, static_cast<RecordType>(type), payload});
    pos += kRecordHeaderBytes + payload_bytes;
    out.valid_bytes = pos;
  }
  return out;
}

SegmentHeader ParseSegmentHeader(std::string_view payload) {
  if (payload.size() != kSegmentHeaderPayloadBytes) {
    Die(absl::StrCat("segment header payload has ", payload.size(), " bytes"));
  }
  const char* p = payload.data();
  SegmentHeader h;
  const uint32_t flags = GetU32(p + 12);
  h.seq = GetU64(p + 16);
  h.first_index = GetU64(p + 24);
  h.hard_state = {GetU64(p + 32), GetU64(p + 40), GetU64(p + 48)};
  if (flags & kHeaderFlagHasSnapshot) h.snapshot = SnapshotMarker{GetU64(p + 56), GetU64(p + 64)};
  return h;
}

Entry ParseEntry(std::string_view payload) {
  if (payload.size() < kEntryFixedBytes) {
    Die(absl::StrCat("entry payload has ", payload.size(), " bytes"));
  }
  return Entry{GetU64(payload.data()), GetU64(payload.data() + 8),
               std::string(payload.substr(kEntryFixedBytes))};
}

HardState ParseHardState(std::string_view payload) {
  if (payload.size() != kHardStatePayloadBytes) {
    Die(absl::StrCat("hard state payload has ", payload.size(), " bytes"));
  }
  const char* p = payload.data();
  return HardState{GetU64(p), GetU64(p + 8), GetU64(p + 16)};
}

SnapshotMarker ParseSnapshotMarker(std::string_view payload) {
  if (payload.size() != kSnapshotPayloadBytes) {
    Die(absl::StrCat("snapshot payload has ", payload.size(), " bytes"));
  }
  return SnapshotMarker{GetU64(payload.data()), GetU64(payload.data() + 8)};
}

void AppendSegmentHeaderRecord(const SegmentHeader& header, std::string* out) {
  const size_t start = BeginRecord(RecordType::kSegmentHeader, out);
  PutU64(kSegmentMagic, out);
  PutU32(kFormatVersion, out);
  PutU32(header.snapshot ? kHeaderFlagHasSnapshot : 0, out);
  PutU64(header.seq, out);
  PutU64(header.first_index, out);
  PutU64(header.hard_state.term, out);
  PutU64(header.hard_state.vote, out);
  PutU64(header.hard_state.commit, out);
  PutU64(header.snapshot ? header.snapshot->index : 0, out);
  PutU64(header.snapshot ? header.snapshot->term : 0, out);
  EndRecord(start, out);
}

void AppendEntryRecord(const Entry& entry, std::string* out) {
  const size_t start = BeginRecord(RecordType::kEntry, out);
  PutU64(entry.index, out);
  PutU64(entry.term, out);
  out->append(entry.data);
  EndRecord(start, out);
}

void AppendHardStateRecord(const HardState& hard_state, std::string* out) {
  const size_t start = BeginRecord(RecordType::kHardState, out);
  PutU64(hard_state.term, out);
  PutU64(hard_state.vote, out);
  PutU64(hard_state.commit, out);
  EndRecord(start, out);
}

void AppendSnapshotRecord(const SnapshotMarker& marker, std::string* out) {
  const size_t start = BeginRecord(RecordType::kSnapshot, out);
  PutU64(marker.index, out);
  PutU64(marker.term, out);
  EndRecord(start, out);
}

}  // namespace meridian::wal
