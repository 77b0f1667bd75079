#include "node/wal/wal.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "node/wal/crc32c.h"
#include "node/wal/record.h"

// Largest single heap allocation while g_track_allocations is set: proves that a hostile length
// field does not turn into an allocation.
namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_max_allocation_bytes{0};
}  // namespace

void* operator new(size_t size) {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    size_t seen = g_max_allocation_bytes.load(std::memory_order_relaxed);
    while (size > seen && !g_max_allocation_bytes.compare_exchange_weak(seen, size)) {
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t size) { return operator new(size); }
// GCC sees the replaced operator new inlined at call sites and flags these frees as mismatched
// (-Wmismatched-new-delete), although both sides are this file's malloc/free pair.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace meridian::wal {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSmallSegmentBytes = 4096;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> SegmentPaths(const std::string& dir) {
  std::vector<std::string> paths;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".wal") paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

Entry MakeEntry(uint64_t index, uint64_t term, size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<char>('a' + (index * 7 + i) % 26);
  return Entry{index, term, std::move(data)};
}

std::vector<Entry> MakeEntries(uint64_t first, uint64_t last, uint64_t term, size_t data_bytes) {
  std::vector<Entry> out;
  for (uint64_t i = first; i <= last; ++i) out.push_back(MakeEntry(i, term, data_bytes));
  return out;
}

// Whether any extent of the file is allocated but unwritten (FIEMAP), or nullopt where the
// filesystem does not say.
std::optional<bool> HasUnwrittenExtents(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  constexpr unsigned kMaxExtents = 512;
  std::vector<char> buf(sizeof(fiemap) + kMaxExtents * sizeof(fiemap_extent));
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  map->fm_start = 0;
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = kMaxExtents;
  const int rc = ioctl(fd, FS_IOC_FIEMAP, map);
  close(fd);
  if (rc != 0) return std::nullopt;
  for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
    if (map->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) return true;
  }
  return false;
}

std::vector<uint64_t> Indexes(const std::vector<Entry>& entries) {
  std::vector<uint64_t> out;
  for (const Entry& e : entries) out.push_back(e.index);
  return out;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

class WalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "wal_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/wal";
  }
  void TearDown() override { fs::remove_all(root_); }

  Options Opts(uint64_t segment_size_bytes = kSmallSegmentBytes) const {
    // Segment boundaries must follow the appends alone here; prepared segments have their own
    // tests (PreparedSegments*).
    return Options{dir_, segment_size_bytes, 64 << 10, /*prepare_segments=*/false};
  }

  std::unique_ptr<Wal> MustOpen(const Options& options, Recovered* recovered) {
    auto wal = Wal::Open(options, recovered);
    EXPECT_TRUE(wal.ok()) << wal.status();
    return wal.ok() ? std::move(*wal) : nullptr;
  }

  // Writes entries 1..n (several small segments), each batch followed by a Sync; the last entry
  // gets its own batch so the last record of the last segment is known.
  void WriteLog(uint64_t n, size_t data_bytes) {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    for (uint64_t i = 1; i < n; i += 5) {
      const auto batch = MakeEntries(i, std::min(i + 4, n - 1), 1, data_bytes);
      ASSERT_TRUE(wal->Append(batch, nullptr).ok());
      ASSERT_TRUE(wal->Sync().ok());
    }
    const Entry last = MakeEntry(n, 1, 50);
    ASSERT_TRUE(wal->Append({&last, 1}, nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }

  std::string root_;
  std::string dir_;
};

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  const std::string text = "the quick brown fox jumps over the lazy dog, twice over";
  for (size_t split = 0; split <= text.size(); ++split) {
    const uint32_t head = Crc32cExtend(0, text.data(), split);
    EXPECT_EQ(Crc32cExtend(head, text.data() + split, text.size() - split), Crc32c(text));
  }
}

TEST(SegmentNameTest, SortableHex) {
  EXPECT_EQ(SegmentFileName(1, 1), "0000000000000001-0000000000000001.wal");
  EXPECT_EQ(SegmentFileName(0x1a, 300), "000000000000001a-000000000000012c.wal");
}

TEST_F(WalTest, FreshOpenCreatesPreallocatedSegment) {
  Recovered rec;
  auto wal = MustOpen(Opts(), &rec);
  ASSERT_NE(wal, nullptr);
  EXPECT_EQ(wal->last_index(), 0u);
  EXPECT_TRUE(rec.entries.empty());
  EXPECT_FALSE(rec.snapshot.has_value());
  EXPECT_FALSE(rec.tail_truncated);
  const auto paths = SegmentPaths(dir_);
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(fs::path(paths[0]).filename(), "0000000000000001-0000000000000001.wal");
  EXPECT_EQ(fs::file_size(paths[0]), kSmallSegmentBytes);
}

TEST_F(WalTest, RejectsBadOptions) {
  EXPECT_EQ(Wal::Open(Options{"", 4096, 1024}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Wal::Open(Options{dir_, 100, 1024}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Wal::Open(Options{dir_, 4096, 0}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WalTest, RoundTripAcrossSegments) {
  std::vector<Entry> written;
  HardState hs;
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    uint64_t index = 1;
    for (int batch = 0; index <= 300; ++batch) {
      std::vector<Entry> entries;
      for (int i = 0; i < 1 + batch % 7 && index <= 300; ++i, ++index) {
        entries.push_back(MakeEntry(index, 1 + index / 50, (index * 37) % 200));
      }
      hs = HardState{1 + index / 50, 3, index - 1};
      ASSERT_TRUE(wal->Append(entries, &hs).ok());
      const uint64_t fsyncs_before = wal->fsync_count();
      ASSERT_TRUE(wal->Sync().ok());
      EXPECT_GE(wal->fsync_count(), fsyncs_before + 1);
      written.insert(written.end(), entries.begin(), entries.end());
      if (index > 100 && index <= 107) {
        ASSERT_TRUE(wal->SaveSnapshotMarker({100, 3}).ok());
      }
    }
    EXPECT_EQ(wal->last_index(), 300u);
  }
  EXPECT_GE(SegmentPaths(dir_).size(), 5u);

  Recovered rec;
  auto wal = MustOpen(Opts(), &rec);
  ASSERT_NE(wal, nullptr);
  EXPECT_FALSE(rec.tail_truncated) << rec.tail_error;
  ASSERT_TRUE(rec.snapshot.has_value());
  EXPECT_EQ(*rec.snapshot, (SnapshotMarker{100, 3}));
  EXPECT_EQ(rec.hard_state, hs);
  const std::vector<Entry> expected(written.begin() + 100, written.end());
  ASSERT_EQ(Indexes(rec.entries), Range(101, 300));
  EXPECT_EQ(rec.entries, expected);
  EXPECT_EQ(wal->last_index(), 300u);

  const Entry next = MakeEntry(301, 9, 10);
  ASSERT_TRUE(wal->Append({&next, 1}, nullptr).ok());
  ASSERT_TRUE(wal->Sync().ok());
  wal.reset();
  Recovered again;
  ASSERT_NE(MustOpen(Opts(), &again), nullptr);
  ASSERT_EQ(again.entries.size(), 201u);
  EXPECT_EQ(again.entries.back(), next);
}

TEST_F(WalTest, SyncIsOneFdatasyncPerGroup) {
  auto wal = MustOpen(Opts(1 << 20), nullptr);
  ASSERT_NE(wal, nullptr);
  const uint64_t base = wal->fsync_count();
  for (uint64_t i = 1; i <= 30; ++i) {
    const Entry e = MakeEntry(i, 1, 100);
    ASSERT_TRUE(wal->Append({&e, 1}, nullptr).ok());
  }
  EXPECT_EQ(wal->fsync_count(), base);
  ASSERT_TRUE(wal->Sync().ok());
  EXPECT_EQ(wal->fsync_count(), base + 1);
  EXPECT_GE(wal->last_fsync_seconds(), 0.0);
  ASSERT_TRUE(wal->Sync().ok());  // nothing pending
  EXPECT_EQ(wal->fsync_count(), base + 1);
}

TEST_F(WalTest, OverwriteSemantics) {
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    ASSERT_TRUE(wal->Append(MakeEntries(1, 10, 1, 20), nullptr).ok());
    ASSERT_TRUE(wal->Append(MakeEntries(6, 8, 2, 30), nullptr).ok());
    EXPECT_EQ(wal->last_index(), 8u);
    ASSERT_TRUE(wal->Sync().ok());
  }
  Recovered rec;
  auto wal = MustOpen(Opts(), &rec);
  ASSERT_NE(wal, nullptr);
  ASSERT_EQ(Indexes(rec.entries), Range(1, 8));
  for (const Entry& e : rec.entries) {
    EXPECT_EQ(e.term, e.index <= 5 ? 1u : 2u) << e.index;
    EXPECT_EQ(e, MakeEntry(e.index, e.term, e.index <= 5 ? 20 : 30));
  }
  EXPECT_EQ(wal->last_index(), 8u);

  // Gaps and index 0 are refused, and a refused batch writes nothing.
  const Entry gap = MakeEntry(10, 2, 1);
  EXPECT_EQ(wal->Append({&gap, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  const Entry zero = MakeEntry(0, 2, 1);
  EXPECT_EQ(wal->Append({&zero, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  std::vector<Entry> half_bad = {MakeEntry(9, 2, 1), MakeEntry(11, 2, 1)};
  EXPECT_EQ(wal->Append(half_bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(wal->last_index(), 8u);
  ASSERT_TRUE(wal->Append(MakeEntries(9, 9, 2, 5), nullptr).ok());
  ASSERT_TRUE(wal->Sync().ok());
  wal.reset();
  Recovered again;
  ASSERT_NE(MustOpen(Opts(), &again), nullptr);
  EXPECT_EQ(Indexes(again.entries), Range(1, 9));
}

TEST_F(WalTest, OverwriteReachingIntoEarlierSegments) {
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    for (uint64_t i = 1; i <= 200; i += 10) {
      ASSERT_TRUE(wal->Append(MakeEntries(i, i + 9, 1, 40), nullptr).ok());
    }
    ASSERT_TRUE(wal->Append(MakeEntries(50, 60, 2, 40), nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }
  ASSERT_GE(SegmentPaths(dir_).size(), 4u);
  Recovered rec;
  ASSERT_NE(MustOpen(Opts(), &rec), nullptr);
  ASSERT_EQ(Indexes(rec.entries), Range(1, 60));
  EXPECT_EQ(rec.entries[48].term, 1u);
  EXPECT_EQ(rec.entries[49].term, 2u);
  EXPECT_EQ(rec.entries[59].term, 2u);
}

TEST_F(WalTest, RejectsEntryAboveMaxRecordSize) {
  Options options = Opts();
  options.max_record_size_bytes = 1024;
  auto wal = MustOpen(options, nullptr);
  ASSERT_NE(wal, nullptr);
  const Entry big = MakeEntry(1, 1, 2000);
  EXPECT_EQ(wal->Append({&big, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
  const Entry fits = MakeEntry(1, 1, 1024 - kEntryFixedBytes);
  EXPECT_TRUE(wal->Append({&fits, 1}, nullptr).ok());
  EXPECT_TRUE(wal->Sync().ok());
}

TEST_F(WalTest, EntryLargerThanSegmentGetsItsOwnSegment) {
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    std::vector<Entry> entries = {MakeEntry(1, 1, 10), MakeEntry(2, 1, 10000), MakeEntry(3, 1, 10)};
    ASSERT_TRUE(wal->Append(entries, nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }
  EXPECT_EQ(SegmentPaths(dir_).size(), 3u);
  Recovered rec;
  ASSERT_NE(MustOpen(Opts(), &rec), nullptr);
  ASSERT_EQ(Indexes(rec.entries), Range(1, 3));
  EXPECT_EQ(rec.entries[1].data.size(), 10000u);
}

TEST_F(WalTest, SnapshotMarkerBeyondTheLog) {
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    ASSERT_TRUE(wal->Append(MakeEntries(1, 5, 1, 10), nullptr).ok());
    ASSERT_TRUE(wal->SaveSnapshotMarker({100, 3}).ok());
    EXPECT_EQ(wal->last_index(), 100u);
    EXPECT_EQ(wal->SaveSnapshotMarker({90, 3}).code(), absl::StatusCode::kInvalidArgument);
    const Entry stale = MakeEntry(6, 3, 1);
    EXPECT_EQ(wal->Append({&stale, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
    const Entry at_snapshot = MakeEntry(100, 3, 1);
    EXPECT_EQ(wal->Append({&at_snapshot, 1}, nullptr).code(), absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(wal->Append(MakeEntries(101, 102, 3, 10), nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }
  Recovered rec;
  auto wal = MustOpen(Opts(), &rec);
  ASSERT_NE(wal, nullptr);
  EXPECT_EQ(rec.snapshot, (SnapshotMarker{100, 3}));
  EXPECT_EQ(Indexes(rec.entries), Range(101, 102));
  EXPECT_EQ(wal->last_index(), 102u);
}

// Cuts the last record of the last segment at every byte, either by truncating the file or by
// zeroing the rest of the record (a write that reached only part of the preallocated space).
TEST_F(WalTest, TornTailAtEveryOffset) {
  WriteLog(40, 100);
  const std::string golden = root_ + "/golden";
  fs::rename(dir_, golden);
  const auto golden_paths = SegmentPaths(golden);
  ASSERT_GE(golden_paths.size(), 2u);
  const std::string last_name = fs::path(golden_paths.back()).filename().string();
  const std::string last_bytes = ReadFile(golden_paths.back());
  auto decoded = DecodeSegment(last_bytes, 64 << 10);
  ASSERT_TRUE(decoded.ok() && decoded->clean);
  const uint64_t start = decoded->records.back().offset_bytes;
  const uint64_t end = decoded->valid_bytes;
  ASSERT_EQ(ParseEntry(decoded->records.back().payload).index, 40u);

  for (int mode = 0; mode < 2; ++mode) {
    for (uint64_t cut = start; cut <= end; ++cut) {
      SCOPED_TRACE(testing::Message() << "mode " << mode << " cut " << cut);
      fs::remove_all(dir_);
      fs::copy(golden, dir_);
      std::string damaged = last_bytes;
      if (mode == 0) {
        damaged.resize(cut);
      } else {
        std::fill(damaged.begin() + static_cast<ptrdiff_t>(cut),
                  damaged.begin() + static_cast<ptrdiff_t>(end), '\0');
      }
      WriteFile(dir_ + "/" + last_name, damaged);

      const bool torn = cut > start && cut < end;
      const uint64_t expect_last = cut == end ? 40 : 39;
      Recovered rec;
      auto wal = MustOpen(Opts(), &rec);
      ASSERT_NE(wal, nullptr);
      EXPECT_EQ(rec.tail_truncated, torn) << rec.tail_error;
      if (torn) {
        EXPECT_NE(rec.tail_error.find(last_name), std::string::npos) << rec.tail_error;
        EXPECT_NE(rec.tail_error.find("offset " + std::to_string(start)), std::string::npos)
            << rec.tail_error;
      }
      ASSERT_EQ(Indexes(rec.entries), Range(1, expect_last));
      EXPECT_EQ(wal->last_index(), expect_last);

      const Entry next = MakeEntry(expect_last + 1, 2, 33);
      ASSERT_TRUE(wal->Append({&next, 1}, nullptr).ok());
      ASSERT_TRUE(wal->Sync().ok());
      wal.reset();
      Recovered again;
      ASSERT_NE(MustOpen(Opts(), &again), nullptr);
      EXPECT_FALSE(again.tail_truncated) << again.tail_error;
      ASSERT_EQ(Indexes(again.entries), Range(1, expect_last + 1));
      EXPECT_EQ(again.entries.back(), next);
    }
  }
}

TEST_F(WalTest, BitFlipInLastRecordIsCutOff) {
  WriteLog(40, 100);
  const std::string last = SegmentPaths(dir_).back();
  const std::string original = ReadFile(last);
  auto decoded = DecodeSegment(original, 64 << 10);
  ASSERT_TRUE(decoded.ok());
  const uint64_t start = decoded->records.back().offset_bytes;
  const uint64_t end = decoded->valid_bytes;
  for (uint64_t pos : {start, start + 4, start + 8, start + 12, start + 30, end - 1}) {
    SCOPED_TRACE(pos);
    std::string damaged = original;
    damaged[pos] ^= 0x10;
    WriteFile(last, damaged);
    Recovered rec;
    auto wal = MustOpen(Opts(), &rec);
    ASSERT_NE(wal, nullptr);
    EXPECT_TRUE(rec.tail_truncated);
    EXPECT_NE(rec.tail_error.find(fs::path(last).filename().string()), std::string::npos);
    EXPECT_EQ(Indexes(rec.entries), Range(1, 39));
    // Recovery sealed the damaged segment and moved on; put the original back for the next round.
    wal.reset();
    for (const auto& p : SegmentPaths(dir_)) {
      if (p > last) fs::remove(p);
    }
    WriteFile(last, original);
  }
}

TEST_F(WalTest, BitFlipInEarlierSegmentIsDataLoss) {
  WriteLog(40, 100);
  const auto paths = SegmentPaths(dir_);
  ASSERT_GE(paths.size(), 2u);
  std::string first = ReadFile(paths[0]);
  auto decoded = DecodeSegment(first, 64 << 10);
  ASSERT_TRUE(decoded.ok() && decoded->records.size() >= 3);
  const DecodedRecord& victim = decoded->records[2];
  first[victim.offset_bytes + kRecordHeaderBytes + 20] ^= 0x01;
  WriteFile(paths[0], first);
  auto wal = Wal::Open(Opts(), nullptr);
  ASSERT_EQ(wal.status().code(), absl::StatusCode::kDataLoss) << wal.status();
  const std::string message(wal.status().message());
  EXPECT_NE(message.find(fs::path(paths[0]).filename().string()), std::string::npos) << message;
  EXPECT_NE(message.find("offset " + std::to_string(victim.offset_bytes)), std::string::npos)
      << message;
}

TEST_F(WalTest, MissingMiddleSegmentIsDataLoss) {
  WriteLog(100, 100);
  const auto paths = SegmentPaths(dir_);
  ASSERT_GE(paths.size(), 3u);
  fs::remove(paths[1]);
  EXPECT_EQ(Wal::Open(Opts(), nullptr).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(WalTest, HugeLengthFieldIsCorruptionNotAllocation) {
  std::string bytes;
  AppendSegmentHeaderRecord({1, 1, {}, std::nullopt}, &bytes);
  const size_t victim = bytes.size();
  AppendEntryRecord(MakeEntry(1, 1, 10), &bytes);
  bytes.append(1000, '\0');
  for (uint32_t length : {0xFFFFFFF0u, 60u << 20}) {
    std::string damaged = bytes;
    for (int i = 0; i < 4; ++i) damaged[victim + i] = static_cast<char>(length >> (8 * i));
    g_max_allocation_bytes = 0;
    g_track_allocations = true;
    auto decoded = DecodeSegment(damaged, 64ull << 20);
    g_track_allocations = false;
    ASSERT_TRUE(decoded.ok());
    EXPECT_FALSE(decoded->clean);
    EXPECT_EQ(decoded->records.size(), 1u);
    EXPECT_EQ(decoded->valid_bytes, victim);
    EXPECT_NE(decoded->stop_reason.find("record length"), std::string::npos)
        << decoded->stop_reason;
    EXPECT_LT(g_max_allocation_bytes.load(), 4096u);
  }

  // Same through Open: the tail is cut, nothing big is allocated.
  WriteLog(40, 100);
  const std::string last = SegmentPaths(dir_).back();
  std::string file = ReadFile(last);
  auto decoded = DecodeSegment(file, 64 << 10);
  ASSERT_TRUE(decoded.ok());
  const uint64_t start = decoded->records.back().offset_bytes;
  for (int i = 0; i < 4; ++i) file[start + i] = '\xff';
  WriteFile(last, file);
  g_max_allocation_bytes = 0;
  g_track_allocations = true;
  Recovered rec;
  auto wal = Wal::Open(Opts(), &rec);
  g_track_allocations = false;
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_TRUE(rec.tail_truncated);
  EXPECT_NE(rec.tail_error.find("exceeds max_record_size_bytes"), std::string::npos)
      << rec.tail_error;
  EXPECT_EQ(Indexes(rec.entries), Range(1, 39));
  EXPECT_LT(g_max_allocation_bytes.load(), 1u << 20);
}

TEST_F(WalTest, ReleaseBeforeDeletesOnlyObsoleteSegments) {
  const HardState hs{7, 2, 150};
  auto wal = MustOpen(Opts(), nullptr);
  ASSERT_NE(wal, nullptr);
  // The only hard state record lands in the first segment; releasing that segment must not lose
  // it (every segment header restates it).
  ASSERT_TRUE(wal->Append(MakeEntries(1, 10, 1, 80), &hs).ok());
  for (uint64_t i = 11; i <= 200; i += 10) {
    ASSERT_TRUE(wal->Append(MakeEntries(i, i + 9, 1, 80), nullptr).ok());
  }
  ASSERT_TRUE(wal->Sync().ok());
  const auto paths = SegmentPaths(dir_);
  ASSERT_GE(paths.size(), 5u);
  std::vector<uint64_t> max_index;
  for (const auto& p : paths) {
    const std::string bytes = ReadFile(p);  // outlives the payload views
    auto decoded = DecodeSegment(bytes, 64 << 10);
    ASSERT_TRUE(decoded.ok());
    uint64_t m = 0;
    for (const auto& r : decoded->records) {
      if (r.type == RecordType::kEntry) m = std::max(m, ParseEntry(r.payload).index);
    }
    max_index.push_back(m);
  }

  ASSERT_TRUE(wal->ReleaseBefore(1).ok());
  EXPECT_EQ(SegmentPaths(dir_), paths);
  // Segment 3 still holds max_index[2]; releasing below it keeps it.
  ASSERT_TRUE(wal->ReleaseBefore(max_index[2]).ok());
  EXPECT_EQ(SegmentPaths(dir_), std::vector<std::string>(paths.begin() + 2, paths.end()));
  ASSERT_TRUE(wal->ReleaseBefore(max_index[2] + 1).ok());
  EXPECT_EQ(SegmentPaths(dir_), std::vector<std::string>(paths.begin() + 3, paths.end()));
  // Never the live segment.
  ASSERT_TRUE(wal->ReleaseBefore(UINT64_MAX).ok());
  EXPECT_EQ(SegmentPaths(dir_), std::vector<std::string>{paths.back()});
  wal.reset();

  Recovered rec;
  wal = MustOpen(Opts(), &rec);
  ASSERT_NE(wal, nullptr);
  EXPECT_EQ(rec.hard_state, hs);
  ASSERT_FALSE(rec.entries.empty());
  EXPECT_EQ(rec.entries.front().index, max_index[paths.size() - 2] + 1);
  EXPECT_EQ(rec.entries.back().index, 200u);
  EXPECT_EQ(wal->last_index(), 200u);
  ASSERT_TRUE(wal->Append(MakeEntries(201, 201, 1, 1), nullptr).ok());
  ASSERT_TRUE(wal->Sync().ok());
}

// An overwrite may reach below the first entry that survived ReleaseBefore: recovery then starts
// the log at the overwriting entry.
TEST_F(WalTest, OverwriteBelowFirstRetainedEntry) {
  uint64_t first_kept = 0;
  {
    auto wal = MustOpen(Opts(), nullptr);
    ASSERT_NE(wal, nullptr);
    for (uint64_t i = 1; i <= 100; i += 10) {
      ASSERT_TRUE(wal->Append(MakeEntries(i, i + 9, 1, 80), nullptr).ok());
    }
    ASSERT_TRUE(wal->ReleaseBefore(UINT64_MAX).ok());
    Recovered rec;
    wal.reset();
    wal = MustOpen(Opts(), &rec);
    ASSERT_NE(wal, nullptr);
    ASSERT_FALSE(rec.entries.empty());
    first_kept = rec.entries.front().index;
    ASSERT_GT(first_kept, 10u);
    ASSERT_TRUE(wal->Append(MakeEntries(first_kept - 5, first_kept - 3, 2, 8), nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }
  Recovered rec;
  ASSERT_NE(MustOpen(Opts(), &rec), nullptr);
  EXPECT_EQ(Indexes(rec.entries), Range(first_kept - 5, first_kept - 3));
  EXPECT_EQ(rec.entries.front().term, 2u);
}

// With prepare_segments, the log leaves its first (posix_fallocate'd) segment for a prepared one,
// written full of zeros, as soon as that is ready; appends then go to blocks that are already
// written, so an fdatasync has no extent conversion (an inode write) to do. Recovery sees one log.
TEST_F(WalTest, PreparedSegmentsReplaceFallocatedOnesAndHoldNoUnwrittenExtents) {
  Options opts = Opts(256 << 10);
  opts.prepare_segments = true;
  uint64_t next = 1;
  {
    auto wal = MustOpen(opts, nullptr);
    ASSERT_NE(wal, nullptr);
    EXPECT_TRUE(wal->live_segment_fallocated());
    const std::string first = SegmentPaths(dir_).back();
    // Preparation starts once 1/16 of the live segment is used.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!wal->segment_prepared()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no segment was prepared";
      ASSERT_TRUE(wal->Append(MakeEntries(next, next + 9, 1, 100), nullptr).ok());
      ASSERT_TRUE(wal->Sync().ok());
      next += 10;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_TRUE(fs::exists(fs::path(dir_) / kPreparingFileName));
    ASSERT_TRUE(wal->Append(MakeEntries(next, next + 9, 1, 100), nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
    next += 10;
    EXPECT_FALSE(wal->live_segment_fallocated());
    EXPECT_FALSE(fs::exists(fs::path(dir_) / kPreparingFileName));
    const auto paths = SegmentPaths(dir_);
    ASSERT_EQ(paths.size(), 2u);
    EXPECT_EQ(paths.front(), first);
    EXPECT_EQ(fs::file_size(paths.back()), opts.segment_size_bytes);
    const std::optional<bool> fallocated_unwritten = HasUnwrittenExtents(first);
    if (!fallocated_unwritten.has_value() || !*fallocated_unwritten) {
      GTEST_SKIP() << "this filesystem shows no unwritten extents for posix_fallocate";
    }
    EXPECT_EQ(HasUnwrittenExtents(paths.back()), std::optional<bool>(false));
  }
  Recovered rec;
  ASSERT_NE(MustOpen(opts, &rec), nullptr);
  EXPECT_EQ(Indexes(rec.entries), Range(1, next - 1));
}

// A segment that was being prepared when the process stopped is not part of the log: Open
// removes it, and so does the Wal's destructor for one it prepared and never used.
TEST_F(WalTest, LeftoverPreparedSegmentIsRemoved) {
  Options opts = Opts(256 << 10);
  opts.prepare_segments = true;
  {
    auto wal = MustOpen(opts, nullptr);
    ASSERT_NE(wal, nullptr);
    ASSERT_TRUE(wal->Append(MakeEntries(1, 5, 1, 10), nullptr).ok());
    ASSERT_TRUE(wal->Sync().ok());
  }
  EXPECT_FALSE(fs::exists(fs::path(dir_) / kPreparingFileName));
  WriteFile((fs::path(dir_) / kPreparingFileName).string(), std::string(5000, 'x'));
  Recovered rec;
  auto wal = MustOpen(opts, &rec);
  ASSERT_NE(wal, nullptr);
  EXPECT_FALSE(fs::exists(fs::path(dir_) / kPreparingFileName));
  EXPECT_EQ(Indexes(rec.entries), Range(1, 5));
  EXPECT_EQ(SegmentPaths(dir_).size(), 1u);
}

// After a failed fdatasync the Wal refuses all further work. The failure is provoked by pointing
// the live segment's descriptor at /dev/null, which does not support fdatasync.
TEST_F(WalTest, FsyncFailureMakesWalUnusable) {
  auto wal = MustOpen(Opts(), nullptr);
  ASSERT_NE(wal, nullptr);
  ASSERT_TRUE(wal->Append(MakeEntries(1, 3, 1, 10), nullptr).ok());
  const std::string live = fs::canonical(SegmentPaths(dir_).back()).string();
  int live_fd = -1;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec).string() == live) live_fd = std::stoi(e.path().filename());
  }
  ASSERT_GE(live_fd, 0);
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(null_fd, 0);
  ASSERT_EQ(dup2(null_fd, live_fd), live_fd);
  close(null_fd);

  const absl::Status sync = wal->Sync();
  EXPECT_FALSE(sync.ok());
  EXPECT_NE(sync.message().find("fdatasync"), std::string::npos) << sync;
  EXPECT_EQ(wal->Append(MakeEntries(4, 4, 1, 10), nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(wal->Sync().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(wal->SaveSnapshotMarker({1, 1}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(wal->ReleaseBefore(2).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(WalTest, SecondOpenOfSameDirectoryFails) {
  auto first = MustOpen(Opts(), nullptr);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(Wal::Open(Opts(), nullptr).status().code(), absl::StatusCode::kFailedPrecondition);
  first.reset();
  EXPECT_TRUE(Wal::Open(Opts(), nullptr).ok());
}

// Builds a well-formed segment of random records; returns the record end offsets.
std::vector<uint64_t> RandomSegment(std::mt19937_64& rng, std::string* out) {
  std::vector<uint64_t> ends;
  AppendSegmentHeaderRecord(
      {rng() % 100 + 1,
       rng() % 1000 + 1,
       {rng(), rng(), rng()},
       rng() % 2 ? std::optional<SnapshotMarker>({rng(), rng()}) : std::nullopt},
      out);
  ends.push_back(out->size());
  const int records = static_cast<int>(rng() % 20);
  for (int i = 0; i < records; ++i) {
    switch (rng() % 4) {
      case 0:
        AppendHardStateRecord({rng(), rng(), rng()}, out);
        break;
      case 1:
        AppendSnapshotRecord({rng(), rng()}, out);
        break;
      default:
        AppendEntryRecord(MakeEntry(rng() % 1000, rng() % 10, rng() % 300), out);
    }
    ends.push_back(out->size());
  }
  if (rng() % 2) out->append(rng() % 500, '\0');
  return ends;
}

// Every record DecodeSegment returns must sit inside the input, follow the previous one, and
// carry a checksum that matches the bytes.
void CheckDecoded(const std::string& bytes, const DecodedSegment& d, uint64_t max_record) {
  uint64_t offset = 0;
  for (const DecodedRecord& r : d.records) {
    ASSERT_EQ(r.offset_bytes, offset);
    ASSERT_LE(r.offset_bytes + kRecordHeaderBytes + r.payload.size(), bytes.size());
    ASSERT_LE(r.payload.size(), max_record);
    ASSERT_EQ(r.payload.data(), bytes.data() + r.offset_bytes + kRecordHeaderBytes);
    uint32_t stored_crc = 0;
    for (int i = 3; i >= 0; --i) {
      stored_crc = stored_crc << 8 | static_cast<uint8_t>(bytes[r.offset_bytes + 4 + i]);
    }
    ASSERT_EQ(Crc32c(std::string_view(bytes).substr(r.offset_bytes + 8, 1 + r.payload.size())),
              stored_crc);
    offset += kRecordHeaderBytes + r.payload.size();
  }
  ASSERT_EQ(d.valid_bytes, offset);
  ASSERT_EQ(d.clean, d.stop_reason.empty());
}

TEST(DecodeSegmentTest, RandomAndMutatedBuffers) {
  std::mt19937_64 rng(20240611);
  int torn_seen = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    SCOPED_TRACE(iter);
    std::string bytes;
    const std::vector<uint64_t> ends = RandomSegment(rng, &bytes);
    const uint64_t max_record = 400 + rng() % 4096;  // above every generated record

    auto intact = DecodeSegment(bytes, max_record);
    ASSERT_TRUE(intact.ok());
    ASSERT_TRUE(intact->clean) << intact->stop_reason;
    ASSERT_EQ(intact->records.size(), ends.size());
    ASSERT_NO_FATAL_FAILURE(CheckDecoded(bytes, *intact, max_record));

    std::string mutated = bytes;
    size_t expect_records = SIZE_MAX;  // known only for truncation
    switch (iter % 5) {
      case 0: {  // bit flips
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < flips; ++i) mutated[rng() % mutated.size()] ^= char(1 << (rng() % 8));
        break;
      }
      case 1: {  // truncation
        mutated.resize(rng() % mutated.size());
        expect_records = 0;
        while (expect_records < ends.size() && ends[expect_records] <= mutated.size()) {
          ++expect_records;
        }
        break;
      }
      case 2: {  // random bytes over a range
        const size_t at = rng() % mutated.size();
        const size_t n = std::min<size_t>(mutated.size() - at, 1 + rng() % 64);
        for (size_t i = 0; i < n; ++i) mutated[at + i] = static_cast<char>(rng());
        break;
      }
      case 3: {  // hostile length field on a record boundary
        const uint64_t at = ends[rng() % ends.size()] % mutated.size();
        const uint32_t len = static_cast<uint32_t>(rng());
        for (int i = 0; i < 4 && at + i < mutated.size(); ++i) {
          mutated[at + i] = static_cast<char>(len >> (8 * i));
        }
        break;
      }
      default: {  // pure noise
        mutated.resize(rng() % 2048);
        for (char& c : mutated) c = static_cast<char>(rng());
      }
    }
    auto decoded = DecodeSegment(mutated, max_record);
    ASSERT_TRUE(decoded.ok());
    ASSERT_NO_FATAL_FAILURE(CheckDecoded(mutated, *decoded, max_record));
    if (expect_records != SIZE_MAX) {
      EXPECT_EQ(decoded->records.size(), expect_records);
    }
    if (!decoded->clean) ++torn_seen;
  }
  EXPECT_GT(torn_seen, 1000);  // the mutations really hit the error paths
}

// The seeds were written by an independent encoder (a few lines of Python), so they also pin the
// on-disk format: {clean, record count} per seed.
TEST(DecodeSegmentTest, FuzzCorpusSeedsDecode) {
  const std::map<std::string, std::pair<bool, size_t>> expected = {
      {"valid_segment", {true, 7}}, {"snapshot_and_state", {true, 4}},
      {"torn_tail", {false, 6}},    {"bit_flip", {false, 1}},
      {"huge_length", {false, 1}},  {"garbage_after_padding", {false, 7}},
  };
  size_t seen = 0;
  for (const auto& e : fs::directory_iterator(MERIDIAN_WAL_FUZZ_CORPUS_DIR)) {
    SCOPED_TRACE(e.path().string());
    const std::string bytes = ReadFile(e.path().string());
    auto decoded = DecodeSegment(bytes, 64ull << 20);
    ASSERT_TRUE(decoded.ok());
    ASSERT_NO_FATAL_FAILURE(CheckDecoded(bytes, *decoded, 64ull << 20));
    auto it = expected.find(e.path().filename().string());
    if (it == expected.end()) continue;
    ++seen;
    EXPECT_EQ(decoded->clean, it->second.first) << decoded->stop_reason;
    EXPECT_EQ(decoded->records.size(), it->second.second);
  }
  EXPECT_EQ(seen, expected.size());
}

}  // namespace
}  // namespace meridian::wal
