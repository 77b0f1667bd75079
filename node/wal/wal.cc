#include "node/wal/wal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/strings.h"

namespace meridian::wal {
namespace {

// How much of the live segment is used before the next one is prepared (or 1/16 of a segment).
constexpr uint64_t kPrepareAfterBytes = 1 << 20;
// The preparer's pause after each 1 MiB it writes and syncs (see Preparer::Prepare).
constexpr int kPreparePauseMs = 50;

// Appends bigger than this are written in several pieces so the buffer stays bounded.
constexpr size_t kFlushThresholdBytes = 1 << 20;

absl::Status IoError(int err, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

std::string Hex16(uint64_t v) {
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[i] = "0123456789abcdef"[v & 0xF];
  return s;
}

bool ParseHex16(std::string_view s, uint64_t* out) {
  if (s.size() != 16) return false;  // segment names use exactly 16 digits per field
  auto v = ParseLowerHex(s);
  if (!v) return false;
  *out = *v;
  return true;
}

struct SegmentName {
  uint64_t seq = 0;
  uint64_t first_index = 0;
  std::string file_name;
};

std::optional<SegmentName> ParseSegmentName(std::string_view name) {
  if (name.size() != 37 || name[16] != '-' || name.substr(33) != ".wal") return std::nullopt;
  SegmentName out;
  if (!ParseHex16(name.substr(0, 16), &out.seq) ||
      !ParseHex16(name.substr(17, 16), &out.first_index)) {
    return std::nullopt;
  }
  out.file_name = std::string(name);
  return out;
}

// Read-only mapping: recovery needs no buffer sized by the file, and decoded payloads are views.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(data_, size_bytes_);
  }

  [[nodiscard]] absl::Status Open(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoError(errno, "open", path);
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      const int err = errno;
      close(fd);
      return IoError(err, "stat", path);
    }
    size_bytes_ = static_cast<size_t>(st.st_size);
    if (size_bytes_ > 0) {
      void* p = mmap(nullptr, size_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      close(fd);
      if (p == MAP_FAILED) return IoError(err, "mmap", path);
      data_ = p;
      madvise(data_, size_bytes_, MADV_SEQUENTIAL);
    } else {
      close(fd);
    }
    return absl::OkStatus();
  }

  std::string_view bytes() const { return {static_cast<const char*>(data_), size_bytes_}; }

 private:
  void* data_ = nullptr;
  size_t size_bytes_ = 0;
};

// Raft's append rule: an entry extends the log or replaces a suffix of it; it never leaves a hole
// and never reaches into the snapshot. Returns "" when `index` may be written next.
std::string IndexRuleViolation(uint64_t index, uint64_t last_index,
                               const std::optional<SnapshotMarker>& snapshot) {
  const uint64_t snapshot_index = snapshot ? snapshot->index : 0;
  if (index <= snapshot_index) {
    return absl::StrCat("entry index ", index, " is not above the snapshot index ", snapshot_index);
  }
  if (index > last_index && index - last_index > 1) {
    return absl::StrCat("entry index ", index, " leaves a gap after last index ", last_index);
  }
  return "";
}

void PutEntry(Entry entry, std::vector<Entry>* entries) {
  if (!entries->empty() && entry.index <= entries->back().index) {
    if (entry.index <= entries->front().index) {
      entries->clear();
    } else {
      entries->resize(entry.index - entries->front().index);
    }
  }
  entries->push_back(std::move(entry));
}

void DropThrough(uint64_t index, std::vector<Entry>* entries) {
  if (entries->empty() || entries->front().index > index) return;
  const uint64_t n = std::min<uint64_t>(entries->size(), index - entries->front().index + 1);
  entries->erase(entries->begin(), entries->begin() + static_cast<ptrdiff_t>(n));
}

[[nodiscard]] absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return IoError(errno, "open", path);
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  return rc == 0 ? absl::OkStatus() : IoError(err, "fsync", path);
}

}  // namespace

std::string SegmentFileName(uint64_t seq, uint64_t first_index) {
  return absl::StrCat(Hex16(seq), "-", Hex16(first_index), ".wal");
}

// Prepares one segment file at a time on its own thread: created at `path`, written full of
// zeros, fdatasync'ed. The Wal takes the descriptor and renames the file into place.
class Wal::Preparer {
 public:
  Preparer(std::string path, uint64_t bytes) : path_(std::move(path)), bytes_(bytes) {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "wal-prepare");
      Loop();
    });
  }
  ~Preparer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    if (ready_fd_ >= 0) {
      close(ready_fd_);
      unlink(path_.c_str());
    }
  }
  Preparer(const Preparer&) = delete;
  Preparer& operator=(const Preparer&) = delete;

  const std::string& path() const { return path_; }

  // Starts preparing the next segment unless one is ready or under way. Never waits.
  void Request() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ready_fd_ >= 0 || requested_) return;
      requested_ = true;
    }
    cv_.notify_all();
  }

  bool Ready() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ready_fd_ >= 0;
  }

  // The prepared file's descriptor (the caller owns it; the file is still at path()), or -1.
  int Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(ready_fd_, -1);
  }

 private:
  void Loop() {
    // Anonymous read-only pages all map the kernel's zero page: a source of zeros that takes no
    // memory.
    constexpr size_t kZerosBytes = 1 << 20;
    void* zeros = mmap(nullptr, kZerosBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    const std::span<const char> zero_span(
        zeros == MAP_FAILED ? nullptr : static_cast<const char*>(zeros),
        zeros == MAP_FAILED ? 0 : kZerosBytes);
    Serve(zero_span);
    if (zeros != MAP_FAILED) munmap(zeros, kZerosBytes);
  }

  void Serve(std::span<const char> zeros) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || requested_; });
      if (stopping_) return;
      lock.unlock();
      const int fd = Prepare(zeros);
      lock.lock();
      requested_ = false;
      if (fd >= 0 && !stopping_) {
        ready_fd_ = fd;
      } else if (fd >= 0) {
        close(fd);
        unlink(path_.c_str());
      }
    }
  }

  // The prepared file's descriptor, or -1 (the Wal then falls back to posix_fallocate, which
  // reports the error if there is one).
  int Prepare(std::span<const char> zeros) {
    if (zeros.empty()) return -1;
    const int fd = open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    // Paced: each chunk is synced on its own and followed by a pause, so the zeros never pile up
    // as dirty pages whose writeback would queue ahead of the live segment's fdatasyncs (a
    // latency spike for every write then in flight). At most ~16 MiB/s: a 64 MiB segment takes
    // about 4 s, while at 3-4 MB/s of log (10k puts/s) a segment lasts ~20 s. A log written
    // faster than that outruns the preparer and gets posix_fallocate'd segments meanwhile.
    bool ok = true;
    for (uint64_t offset = 0; ok && offset < bytes_;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), bytes_ - offset));
      const ssize_t written = pwrite(fd, zeros.data(), n, static_cast<off_t>(offset));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0 || fdatasync(fd) != 0) {
        ok = false;
        break;
      }
      offset += static_cast<uint64_t>(written);
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::milliseconds(kPreparePauseMs),
                       [&] { return stopping_; })) {
        ok = false;
      }
    }
    if (ok) return fd;
    close(fd);
    unlink(path_.c_str());
    return -1;
  }

  const std::string path_;
  const uint64_t bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool requested_ = false;
  bool stopping_ = false;
  int ready_fd_ = -1;
  std::thread thread_;  // last: started once the rest is initialized
};

Wal::Wal(const Options& options, int dir_fd) : options_(options), dir_fd_(dir_fd) {}

Wal::~Wal() {
  preparer_.reset();  // stops its thread and removes an unused prepared file
  if (fd_ >= 0) close(fd_);
  close(dir_fd_);  // also releases the flock
}

bool Wal::segment_prepared() const { return preparer_ != nullptr && preparer_->Ready(); }

absl::StatusOr<std::unique_ptr<Wal>> Wal::Open(const Options& options, Recovered* out) {
  if (options.dir.empty()) return absl::InvalidArgumentError("Options.dir is empty");
  if (options.segment_size_bytes < kMinSegmentSizeBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment_size_bytes ", options.segment_size_bytes, " is below ", kMinSegmentSizeBytes));
  }
  if (options.max_record_size_bytes == 0 ||
      options.max_record_size_bytes > kMaxRecordSizeLimitBytes) {
    return absl::InvalidArgumentError(absl::StrCat("max_record_size_bytes must be in [1, ",
                                                   kMaxRecordSizeLimitBytes, "], got ",
                                                   options.max_record_size_bytes));
  }
  std::error_code ec;
  const bool created = std::filesystem::create_directories(options.dir, ec);
  if (ec) return IoError(ec.value(), "create directory", options.dir);
  if (created) {
    // The new directory's own entry must survive a crash, or so would none of the log.
    std::filesystem::path path = std::filesystem::absolute(options.dir);
    if (!path.has_filename()) path = path.parent_path();  // "a/b/" names b, not b's contents
    const std::string parent = path.parent_path().string();
    if (auto s = FsyncPath(parent, O_RDONLY | O_DIRECTORY); !s.ok()) return s;
  }
  const int dir_fd = open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return IoError(errno, "open directory", options.dir);
  if (flock(dir_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(dir_fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("WAL directory ", options.dir, " is already open by another Wal"));
    }
    return IoError(err, "flock", options.dir);
  }
  std::unique_ptr<Wal> wal(new Wal(options, dir_fd));
  // A segment being prepared when the last process stopped was never part of the log.
  const std::string preparing = JoinPath(options.dir, kPreparingFileName);
  if (unlink(preparing.c_str()) != 0 && errno != ENOENT) {
    return IoError(errno, "remove", preparing);
  }
  if (options.prepare_segments) {
    wal->preparer_ = std::make_unique<Preparer>(preparing, options.segment_size_bytes);
  }
  Recovered recovered;
  if (auto s = wal->Recover(&recovered); !s.ok()) return s;
  if (out != nullptr) *out = std::move(recovered);
  return wal;
}

absl::Status Wal::Recover(Recovered* out) {
  std::vector<SegmentName> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(options_.dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (auto name = ParseSegmentName(it->path().filename().string())) names.push_back(*name);
  }
  if (ec) return IoError(ec.value(), "list directory", options_.dir);
  std::sort(names.begin(), names.end(),
            [](const SegmentName& a, const SegmentName& b) { return a.seq < b.seq; });
  for (size_t i = 1; i < names.size(); ++i) {
    if (names[i].seq != names[i - 1].seq + 1) {
      return absl::DataLossError(absl::StrCat("WAL segments ", names[i - 1].file_name, " and ",
                                              names[i].file_name, " are not consecutive"));
    }
  }

  bool last_intact = false;
  uint64_t last_valid_bytes = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const SegmentName& name = names[i];
    const bool is_last = i + 1 == names.size();
    Segment segment{name.seq, name.first_index, 0, JoinPath(options_.dir, name.file_name)};
    MappedFile file;
    if (auto s = file.Open(segment.path); !s.ok()) return s;
    absl::StatusOr<DecodedSegment> decoded =
        DecodeSegment(file.bytes(), options_.max_record_size_bytes);
    if (!decoded.ok()) return decoded.status();
    const bool intact = decoded->clean && !decoded->records.empty();
    if (!intact) {
      const std::string where =
          absl::StrCat(name.file_name, " at offset ", decoded->valid_bytes, ": ",
                       decoded->clean ? "no segment header" : decoded->stop_reason);
      if (!is_last) {
        return absl::DataLossError(absl::StrCat(
            "corrupt WAL segment ", where,
            " (later segments exist, so cutting the log here would silently lose data)"));
      }
      out->tail_truncated = true;
      out->tail_error = where;
    }

    for (const DecodedRecord& rec : decoded->records) {
      const auto loss = [&](const std::string& why) {
        return absl::DataLossError(absl::StrCat("WAL segment ", name.file_name, " at offset ",
                                                rec.offset_bytes, ": ", why));
      };
      switch (rec.type) {
        case RecordType::kSegmentHeader: {
          const SegmentHeader h = ParseSegmentHeader(rec.payload);
          if (h.seq != name.seq || h.first_index != name.first_index || h.first_index == 0) {
            return loss(absl::StrCat("header says seq ", h.seq, " first index ", h.first_index,
                                     ", unlike the file name"));
          }
          if (i == 0) {
            // Older segments may have been released; this header carries their state forward.
            last_index_ = h.first_index - 1;
            hard_state_ = h.hard_state;
            snapshot_ = h.snapshot;
          } else if (h.first_index != last_index_ + 1 || h.hard_state != hard_state_ ||
                     h.snapshot != snapshot_) {
            return loss("segment header does not continue the previous segment");
          }
          break;
        }
        case RecordType::kEntry: {
          Entry entry = ParseEntry(rec.payload);
          if (std::string why = IndexRuleViolation(entry.index, last_index_, snapshot_);
              !why.empty()) {
            return loss(why);
          }
          last_index_ = entry.index;
          segment.max_entry_index = std::max(segment.max_entry_index, entry.index);
          PutEntry(std::move(entry), &out->entries);
          break;
        }
        case RecordType::kHardState:
          hard_state_ = ParseHardState(rec.payload);
          break;
        case RecordType::kSnapshot: {
          const SnapshotMarker marker = ParseSnapshotMarker(rec.payload);
          if (snapshot_ && marker.index < snapshot_->index) {
            return loss(absl::StrCat("snapshot marker moves back from ", snapshot_->index, " to ",
                                     marker.index));
          }
          snapshot_ = marker;
          last_index_ = std::max(last_index_, marker.index);
          DropThrough(marker.index, &out->entries);
          break;
        }
      }
    }
    if (is_last) {
      last_intact = intact;
      last_valid_bytes = decoded->valid_bytes;
    }
    if (!decoded->records.empty()) segments_.push_back(std::move(segment));
  }
  out->hard_state = hard_state_;
  out->snapshot = snapshot_;

  if (!names.empty() && last_intact) {
    fd_ = open(segments_.back().path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return IoError(errno, "open", segments_.back().path);
    struct stat st {};
    if (fstat(fd_, &st) != 0) return IoError(errno, "stat", segments_.back().path);
    if (static_cast<uint64_t>(st.st_size) < options_.segment_size_bytes) {
      if (int err = posix_fallocate(fd_, 0, static_cast<off_t>(options_.segment_size_bytes));
          err != 0) {
        return IoError(err, "preallocate", segments_.back().path);
      }
    }
    // How the reused segment was allocated is not known; a prepared one replaces it when ready.
    live_fallocated_ = true;
    write_offset_bytes_ = last_valid_bytes;
    // What recovery read may have come from the page cache of a process that died before its
    // Sync; make it durable before anyone acts on it.
    data_unsynced_ = true;
    dir_unsynced_ = true;
    return Sync();
  }

  if (!names.empty()) {
    // Torn last segment. Cut it at the last good record and seal it; appends go to a fresh
    // segment, whose header restates the recovered state. A segment without a valid header holds
    // nothing that was ever synced (its header goes out with its first records), so it goes.
    const std::string path = JoinPath(options_.dir, names.back().file_name);
    if (last_valid_bytes == 0) {
      if (unlink(path.c_str()) != 0) return IoError(errno, "unlink", path);
    } else {
      const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return IoError(errno, "open", path);
      const bool ok =
          ftruncate(fd, static_cast<off_t>(last_valid_bytes)) == 0 && fdatasync(fd) == 0;
      const int err = errno;
      close(fd);
      if (!ok) return IoError(err, "truncate", path);
    }
    dir_unsynced_ = true;
  }
  if (auto s = StartSegment(); !s.ok()) return s;
  if (auto s = FlushBuffer(); !s.ok()) return s;
  return Sync();
}

absl::Status Wal::CheckUsable() const {
  if (failure_.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("WAL is unusable after an earlier I/O failure: ", failure_));
}

absl::Status Wal::Fail(absl::Status status) {
  // After a failed write or fsync the page cache may hold data that never reaches the disk (and
  // the kernel may have forgotten the error), so nothing this Wal writes later can be trusted.
  if (!status.ok() && failure_.empty()) failure_ = status.ToString();
  return status;
}

absl::Status Wal::StartSegment() {
  if (fd_ >= 0) {
    // The finished segment is made durable before a later one exists: recovery treats damage in
    // a non-last segment as data loss, so a torn write may only ever sit in the last segment.
    if (auto s = FlushBuffer(); !s.ok()) return s;
    if (auto s = SyncLiveSegment(); !s.ok()) return s;
    close(fd_);
    fd_ = -1;
  }
  const uint64_t seq = segments_.empty() ? 1 : segments_.back().seq + 1;
  const uint64_t first_index = last_index_ + 1;
  std::string path = JoinPath(options_.dir, SegmentFileName(seq, first_index));
  auto fd = CreateSegmentFile(path);
  if (!fd.ok()) return fd.status();
  fd_ = *fd;
  write_offset_bytes_ = 0;
  segments_.push_back({seq, first_index, 0, std::move(path)});
  dir_unsynced_ = true;
  AppendSegmentHeaderRecord({seq, first_index, hard_state_, snapshot_}, &buffer_);
  return absl::OkStatus();
}

absl::StatusOr<int> Wal::CreateSegmentFile(const std::string& path) {
  if (preparer_ != nullptr) {
    const int prepared = preparer_->Take();
    if (prepared >= 0) {
      // The name is new (sequence numbers only grow), so the rename replaces nothing. It is made
      // durable with the directory fsync that follows every new segment.
      if (rename(preparer_->path().c_str(), path.c_str()) != 0) {
        const int err = errno;
        close(prepared);
        unlink(preparer_->path().c_str());
        return IoError(err, "rename prepared segment to", path);
      }
      live_fallocated_ = false;
      return prepared;
    }
  }
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(errno, "create", path);
  if (int err = posix_fallocate(fd, 0, static_cast<off_t>(options_.segment_size_bytes)); err != 0) {
    close(fd);
    unlink(path.c_str());
    return IoError(err, "preallocate", path);
  }
  live_fallocated_ = true;
  return fd;
}

absl::Status Wal::MakeRoom(uint64_t record_bytes) {
  const uint64_t used_bytes = write_offset_bytes_ + buffer_.size();
  // A record never spans segments; one bigger than a whole segment gets a segment of its own.
  if (used_bytes > kSegmentHeaderRecordBytes &&
      used_bytes + record_bytes > options_.segment_size_bytes) {
    return StartSegment();
  }
  if (buffer_.size() >= kFlushThresholdBytes) return FlushBuffer();
  return absl::OkStatus();
}

absl::Status Wal::FlushBuffer() {
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = pwrite(fd_, buffer_.data() + done, buffer_.size() - done,
                             static_cast<off_t>(write_offset_bytes_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError(n < 0 ? errno : EIO, "write", segments_.back().path);
    done += static_cast<size_t>(n);
  }
  if (done > 0) data_unsynced_ = true;
  write_offset_bytes_ += done;
  buffer_.clear();
  if (buffer_.capacity() > 4 * kFlushThresholdBytes) std::string().swap(buffer_);
  return absl::OkStatus();
}

absl::Status Wal::SyncLiveSegment() {
  if (!data_unsynced_) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  const int rc = fdatasync(fd_);
  const int err = errno;
  last_fsync_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++fsync_count_;
  if (rc != 0) return IoError(err, "fdatasync", segments_.back().path);
  data_unsynced_ = false;
  return absl::OkStatus();
}

absl::Status Wal::SyncDir() {
  if (!dir_unsynced_) return absl::OkStatus();
  if (fsync(dir_fd_) != 0) return IoError(errno, "fsync directory", options_.dir);
  dir_unsynced_ = false;
  return absl::OkStatus();
}

absl::Status Wal::Append(std::span<const Entry> entries, const HardState* hard_state) {
  if (auto s = CheckUsable(); !s.ok()) return s;
  // Validate the whole batch first so that a rejected call writes nothing.
  uint64_t last_index = last_index_;
  for (const Entry& e : entries) {
    if (std::string why = IndexRuleViolation(e.index, last_index, snapshot_); !why.empty()) {
      return absl::InvalidArgumentError(why);
    }
    if (EntryPayloadBytes(e) > options_.max_record_size_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", e.index, " needs ",
                                                     EntryPayloadBytes(e), " bytes, over ",
                                                     options_.max_record_size_bytes));
    }
    last_index = e.index;
  }
  // Leave a posix_fallocate'd live segment as soon as a prepared one is ready (see Options).
  if (live_fallocated_ && preparer_ != nullptr &&
      write_offset_bytes_ + buffer_.size() > kSegmentHeaderRecordBytes && preparer_->Ready()) {
    if (auto s = StartSegment(); !s.ok()) return Fail(s);
  }
  for (const Entry& e : entries) {
    if (auto s = MakeRoom(kRecordHeaderBytes + EntryPayloadBytes(e)); !s.ok()) return Fail(s);
    AppendEntryRecord(e, &buffer_);
    last_index_ = e.index;
    Segment& live = segments_.back();
    live.max_entry_index = std::max(live.max_entry_index, e.index);
  }
  if (hard_state != nullptr) {
    if (auto s = MakeRoom(kRecordHeaderBytes + kHardStatePayloadBytes); !s.ok()) return Fail(s);
    AppendHardStateRecord(*hard_state, &buffer_);
    hard_state_ = *hard_state;
  }
  if (auto s = FlushBuffer(); !s.ok()) return Fail(s);
  // The next segment is prepared once this one is in use, not at Open: preparing writes a whole
  // segment, which a member that takes few writes (or a short-lived test member) need not pay.
  if (preparer_ != nullptr &&
      write_offset_bytes_ >=
          std::min<uint64_t>(kPrepareAfterBytes, options_.segment_size_bytes / 16)) {
    preparer_->Request();
  }
  return absl::OkStatus();
}

absl::Status Wal::Sync() {
  if (auto s = CheckUsable(); !s.ok()) return s;
  if (auto s = SyncLiveSegment(); !s.ok()) return Fail(s);
  return Fail(SyncDir());
}

absl::Status Wal::SaveSnapshotMarker(const SnapshotMarker& marker) {
  if (auto s = CheckUsable(); !s.ok()) return s;
  if (snapshot_ && marker.index < snapshot_->index) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot marker index ", marker.index,
                                                   " is below the saved ", snapshot_->index));
  }
  if (auto s = MakeRoom(kRecordHeaderBytes + kSnapshotPayloadBytes); !s.ok()) return Fail(s);
  AppendSnapshotRecord(marker, &buffer_);
  snapshot_ = marker;
  last_index_ = std::max(last_index_, marker.index);
  if (auto s = FlushBuffer(); !s.ok()) return Fail(s);
  return Sync();
}

absl::Status Wal::ReleaseBefore(uint64_t index) {
  // The live segment's header restates the hard state and snapshot marker that the older
  // segments hold, so it must be durable before they go.
  if (auto s = Sync(); !s.ok()) return s;
  size_t released = 0;
  absl::Status status;
  while (released + 1 < segments_.size() && segments_[released].max_entry_index < index) {
    if (unlink(segments_[released].path.c_str()) != 0 && errno != ENOENT) {
      status = IoError(errno, "unlink", segments_[released].path);
      break;
    }
    ++released;
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<ptrdiff_t>(released));
  if (released > 0) {
    dir_unsynced_ = true;
    if (auto s = SyncDir(); !s.ok()) return Fail(s);
  }
  return status;
}

}  // namespace meridian::wal
