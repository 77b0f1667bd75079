#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "node/snapshot/bolt_format.h"
#include "node/snapshot/bolt_reader.h"
#include "common/temp_dir.h"
#include "node/snapshot/bolt_writer.h"

extern char** environ;

namespace meridian::bolt {
namespace {

namespace fmt = ::meridian::bolt::format;
using KeyValues = std::vector<std::pair<std::string, std::string>>;
// Bucket name -> ordered contents; std::map keeps buckets in byte order like bbolt.
using Database = std::map<std::string, KeyValues>;

using meridian::TempDir;

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFileBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

absl::Status WriteDatabase(const std::string& path, const Database& db, uint32_t page_size) {
  absl::StatusOr<std::unique_ptr<Writer>> writer = Writer::Create(path, page_size);
  if (!writer.ok()) return writer.status();
  for (const auto& [bucket, kvs] : db) {
    if (absl::Status s = (*writer)->BeginBucket(bucket); !s.ok()) return s;
    for (const auto& [k, v] : kvs) {
      if (absl::Status s = (*writer)->Put(k, v); !s.ok()) return s;
    }
  }
  return (*writer)->Finish();
}

absl::StatusOr<KeyValues> ReadBucket(Reader& reader, std::string_view bucket) {
  KeyValues out;
  absl::Status s = reader.ForEach(bucket, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

void ExpectReadsBack(const std::string& path, const Database& db) {
  absl::StatusOr<std::unique_ptr<Reader>> reader = Reader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE((*reader)->Check().ok()) << (*reader)->Check();
  absl::StatusOr<std::vector<std::string>> names = (*reader)->BucketNames();
  ASSERT_TRUE(names.ok()) << names.status();
  std::vector<std::string> want_names;
  for (const auto& [name, kvs] : db) want_names.push_back(name);
  EXPECT_EQ(*names, want_names);
  for (const auto& [name, kvs] : db) {
    absl::StatusOr<KeyValues> got = ReadBucket(**reader, name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.status();
    ASSERT_EQ(got->size(), kvs.size()) << name;
    for (size_t i = 0; i < kvs.size(); ++i) {
      ASSERT_EQ((*got)[i].first, kvs[i].first) << name << " #" << i;
      ASSERT_EQ((*got)[i].second, kvs[i].second) << name << " #" << i;
    }
  }
  EXPECT_EQ(
      (*reader)->ForEach("no-such-bucket", [](auto, auto) { return absl::OkStatus(); }).code(),
      absl::StatusCode::kNotFound);
}

std::string PatternBytes(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  std::mt19937 rng(seed);
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// A database exercising every tree shape: empty, single key, many keys (branch levels),
// overflow values, keys longer than a page (overflowing branch pages).
Database VariedDatabase(uint32_t page_size, size_t many_keys) {
  Database db;
  db["a-empty"];
  db["b-one"] = {{"only", "value"}};
  KeyValues& many = db["c-many"];
  for (size_t i = 0; i < many_keys; ++i) {
    many.emplace_back(absl::StrFormat("key%08d", i), absl::StrCat("v", i * 7));
  }
  KeyValues& big = db["d-big"];
  big.emplace_back("a-small", "x");
  big.emplace_back("b-empty-value", "");
  big.emplace_back("c-page-plus-one", PatternBytes(page_size + 1, 1));
  big.emplace_back("d-small", "y");
  big.emplace_back("e-three-pages", PatternBytes(3 * page_size, 2));
  big.emplace_back("f-exact-fit", PatternBytes(page_size - 32 - 11, 3));  // key is 11 bytes
  big.emplace_back("g-one-mib", PatternBytes(1 << 20, 4));
  big.emplace_back("h-small", "z");
  std::set<std::string> varied_keys;
  std::mt19937 rng(99);
  for (int i = 0; i < 600; ++i) {
    const size_t len = 1 + rng() % (i % 10 == 0 ? 9000 : 40);
    std::string key = PatternBytes(len, static_cast<uint32_t>(i + 1000));
    varied_keys.insert(std::move(key));
  }
  varied_keys.insert(std::string(fmt::kMaxKeySize, '\xff'));
  varied_keys.insert(std::string(1, '\0'));
  KeyValues& varied = db["e-varied"];
  uint32_t n = 0;
  for (const std::string& k : varied_keys) {
    varied.emplace_back(k, PatternBytes(n % 300, n));
    ++n;
  }
  KeyValues& huge_keys = db["f-huge-keys"];
  for (int i = 0; i < 40; ++i) {
    huge_keys.emplace_back(absl::StrFormat("%05d", i) + std::string(30000, 'k'), "v");
  }
  return db;
}

TEST(BoltWriterTest, RoundTripThroughReader) {
  TempDir dir;
  const Database db = VariedDatabase(4096, 100000);
  const std::string path = dir.File("varied.db");
  ASSERT_TRUE(WriteDatabase(path, db, 4096).ok());
  ExpectReadsBack(path, db);
  EXPECT_EQ(std::filesystem::file_size(path) % 4096, 0u);

  // A visitor's error stops the walk and is returned as is.
  absl::StatusOr<std::unique_ptr<Reader>> reader = Reader::Open(path);
  ASSERT_TRUE(reader.ok());
  int visited = 0;
  absl::Status s = (*reader)->ForEach("c-many", [&](std::string_view, std::string_view) {
    return ++visited == 10 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(visited, 10);
}

TEST(BoltWriterTest, RoundTripOtherPageSizes) {
  for (uint32_t page_size : {512u, 1024u, 65536u}) {
    SCOPED_TRACE(page_size);
    TempDir dir;
    const Database db = VariedDatabase(page_size, 5000);
    const std::string path = dir.File("varied.db");
    ASSERT_TRUE(WriteDatabase(path, db, page_size).ok());
    ExpectReadsBack(path, db);
  }
}

TEST(BoltWriterTest, NoBucketsAndReportedSize) {
  TempDir dir;
  const std::string path = dir.File("empty.db");
  absl::StatusOr<std::unique_ptr<Writer>> writer = Writer::Create(path);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  // metas 0-1, empty root leaf, freelist.
  EXPECT_EQ((*writer)->file_size_bytes(), 4u * 4096);
  EXPECT_EQ(std::filesystem::file_size(path), (*writer)->file_size_bytes());
  ExpectReadsBack(path, Database{});
  EXPECT_FALSE((*writer)->Finish().ok());
}

TEST(BoltWriterTest, RejectsMisuse) {
  TempDir dir;
  EXPECT_FALSE(Writer::Create(dir.File("x"), 4095).ok());
  EXPECT_FALSE(Writer::Create(dir.File("x"), 256).ok());
  EXPECT_FALSE(Writer::Create(dir.File("no/such/dir/x")).ok());
  absl::StatusOr<std::unique_ptr<Writer>> writer = Writer::Create(dir.File("x"));
  ASSERT_TRUE(writer.ok());
  Writer& w = **writer;
  EXPECT_EQ(w.Put("k", "v").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(w.BeginBucket("").ok());
  ASSERT_TRUE(w.BeginBucket("m").ok());
  EXPECT_FALSE(w.Put("", "v").ok());
  EXPECT_FALSE(w.Put(std::string(fmt::kMaxKeySize + 1, 'k'), "v").ok());
  ASSERT_TRUE(w.Put("b", "v").ok());
  EXPECT_FALSE(w.Put("b", "again").ok());
  EXPECT_FALSE(w.Put("a", "earlier").ok());
  ASSERT_TRUE(w.Put("c", "v").ok());
  EXPECT_FALSE(w.BeginBucket("m").ok());
  EXPECT_FALSE(w.BeginBucket("a").ok());
  ASSERT_TRUE(w.BeginBucket("n").ok());
  ASSERT_TRUE(w.Finish().ok());
  ExpectReadsBack(dir.File("x"), Database{{"m", {{"b", "v"}, {"c", "v"}}}, {"n", {}}});
}

// ---------------------------------------------------------------------------------------------
// Reader robustness.

// Recomputes both meta checksums so that corruption of meta fields reaches the tree walk.
void ResealMetas(std::string& file, uint32_t page_size) {
  for (size_t page = 0; page < 2; ++page) {
    const size_t meta_offset = page * page_size + fmt::kPageHeaderSize;
    if (meta_offset + fmt::kMetaSize > file.size()) return;
    fmt::PutU64(file.data() + meta_offset + fmt::kMetaChecksumOffset,
                fmt::MetaChecksum(file.data() + meta_offset));
  }
}

// Exercises every reader entry point; the test only cares that this returns.
int ExerciseReader(const std::string& path) {
  int errors = 0;
  absl::StatusOr<std::unique_ptr<Reader>> reader = Reader::Open(path);
  if (!reader.ok()) return 1;
  if (!(*reader)->Check().ok()) ++errors;
  absl::StatusOr<std::vector<std::string>> names = (*reader)->BucketNames();
  std::vector<std::string> to_visit = {"b-one", "c-many", "d-big"};
  if (names.ok()) {
    to_visit.insert(to_visit.end(), names->begin(), names->end());
  } else {
    ++errors;
  }
  for (const std::string& name : to_visit) {
    size_t total_bytes = 0;
    absl::Status s = (*reader)->ForEach(name, [&](std::string_view k, std::string_view v) {
      total_bytes += k.size() + v.size();
      return absl::OkStatus();
    });
    if (!s.ok()) ++errors;
  }
  return errors;
}

TEST(BoltReaderTest, SurvivesRandomCorruption) {
  TempDir dir;
  constexpr uint32_t kPageSize = 512;
  Database db;
  db["a-empty"];
  db["b-one"] = {{"k", "v"}};
  for (int i = 0; i < 400; ++i) db["c-many"].emplace_back(absl::StrFormat("%06d", i), "val");
  db["d-big"] = {{"big", PatternBytes(3000, 7)}, {"small", "s"}};
  const std::string clean_path = dir.File("clean.db");
  ASSERT_TRUE(WriteDatabase(clean_path, db, kPageSize).ok());
  const std::string clean = ReadFileBytes(clean_path);
  ASSERT_EQ(ExerciseReader(clean_path), 0);
  const size_t pages = clean.size() / kPageSize;

  std::mt19937_64 rng(20240611);
  const std::string path = dir.File("corrupt.db");
  int detected = 0;
  constexpr int kIterations = 3000;
  for (int iter = 0; iter < kIterations; ++iter) {
    std::string file = clean;
    const int mode = static_cast<int>(rng() % 4);
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      const size_t page = rng() % pages;
      switch (mode) {
        case 0:  // any byte
          file[rng() % file.size()] = static_cast<char>(rng());
          break;
        case 1:  // page header or first elements: ids, counts, overflow, offsets
          file[page * kPageSize + rng() % 64] = static_cast<char>(rng());
          break;
        case 2: {  // plausible page id into a header/element slot: cycles, shared pages
          const size_t slot = page * kPageSize + 8 * (rng() % 8);
          fmt::PutU64(file.data() + slot, rng() % (pages + 2));
          break;
        }
        default: {  // meta fields
          const size_t slot = (rng() % 2) * kPageSize + fmt::kPageHeaderSize + 8 * (rng() % 7);
          fmt::PutU64(file.data() + slot, rng() % 3 == 0 ? rng() : rng() % (pages + 2));
          break;
        }
      }
    }
    if (rng() % 2 == 0) ResealMetas(file, kPageSize);
    if (rng() % 10 == 0) file.resize(rng() % file.size());
    WriteFileBytes(path, file);
    if (ExerciseReader(path) > 0) ++detected;
  }
  std::printf("corruptions detected: %d of %d\n", detected, kIterations);
  // Not a tautology: most of these edits must be noticed.
  EXPECT_GT(detected, kIterations / 4);
}

TEST(BoltReaderTest, DetectsSelfReferencingBranch) {
  TempDir dir;
  Database db;
  for (int i = 0; i < 2000; ++i) db["k"].emplace_back(absl::StrFormat("%06d", i), "v");
  const std::string path = dir.File("cycle.db");
  ASSERT_TRUE(WriteDatabase(path, db, 512).ok());
  std::string file = ReadFileBytes(path);
  // meta -> root bucket leaf -> bucket "k" header -> its root, which must be a branch page.
  const fmt::Meta meta = fmt::DecodeMeta(file.data() + fmt::kPageHeaderSize);
  const char* root_leaf = file.data() + meta.root_pgid * 512;
  const char* elem = root_leaf + fmt::kPageHeaderSize;
  const char* bucket_value = elem + fmt::LoadU32(elem + 4) + fmt::LoadU32(elem + 8);
  const uint64_t bucket_root = fmt::LoadU64(bucket_value);
  char* branch = file.data() + bucket_root * 512;
  ASSERT_EQ(fmt::DecodePageHeader(branch).flags, fmt::kBranchPageFlag);
  fmt::PutU64(branch + fmt::kPageHeaderSize + 8, bucket_root);  // first child = itself
  WriteFileBytes(path, file);
  absl::StatusOr<std::unique_ptr<Reader>> reader = Reader::Open(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->Check().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadBucket(**reader, "k").status().code(), absl::StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// Compatibility with etcd 3.4's own tools.

std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path == nullptr ? "/usr/bin:/bin" : path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::vector<std::string> ChildEnv() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).substr(0, 12) != "ETCDCTL_API=") env.emplace_back(*e);
  }
  env.emplace_back("ETCDCTL_API=3");
  return env;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out_path,
            const std::string& err_path) {
  std::vector<std::string> env = ChildEnv();
  std::vector<char*> c_argv;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (const std::string& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execve(c_argv[0], c_argv.data(), c_env.data());
    ::_exit(127);
  }
  return pid;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

CommandResult RunCommand(const std::vector<std::string>& argv, const TempDir& dir,
                         int timeout_ms = 60000) {
  static int counter = 0;
  const std::string out_path = dir.File(absl::StrCat("cmd", counter, ".out"));
  const std::string err_path = dir.File(absl::StrCat("cmd", counter++, ".err"));
  CommandResult result;
  const pid_t pid = Spawn(argv, out_path, err_path);
  if (pid < 0) return result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.err = "timed out\n";
      status = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (status >= 0 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  result.out = ReadFileBytes(out_path);
  result.err += ReadFileBytes(err_path);
  return result;
}

// Owns a running etcd; stops it (TERM, then KILL) when destroyed, whatever the test outcome.
class EtcdProcess {
 public:
  EtcdProcess(const std::vector<std::string>& argv, std::string log_path)
      : log_path_(std::move(log_path)) {
    pid_ = Spawn(argv, log_path_ + ".out", log_path_);
  }
  ~EtcdProcess() { Stop(); }
  bool Alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string Log() const { return ReadFileBytes(log_path_); }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

std::vector<int> FreeLoopbackPorts(int n) {
  std::vector<int> fds;
  std::vector<int> ports;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::perror("free port");
      std::abort();
    }
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

// Protobuf wire encoding, just enough for mvccpb.KeyValue and leasepb.Lease.
void AppendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void AppendIntField(std::string& out, int field, int64_t v) {
  if (v == 0) return;  // proto3 omits defaults
  AppendVarint(out, static_cast<uint64_t>(field) << 3);
  AppendVarint(out, static_cast<uint64_t>(v));
}
void AppendBytesField(std::string& out, int field, std::string_view v) {
  if (v.empty()) return;
  AppendVarint(out, (static_cast<uint64_t>(field) << 3) | 2);
  AppendVarint(out, v.size());
  out.append(v);
}

struct EtcdKv {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

std::string MarshalKeyValue(const EtcdKv& kv) {
  std::string out;
  AppendBytesField(out, 1, kv.key);
  AppendIntField(out, 2, kv.create_revision);
  AppendIntField(out, 3, kv.mod_revision);
  AppendIntField(out, 4, kv.version);
  AppendBytesField(out, 5, kv.value);
  AppendIntField(out, 6, kv.lease);
  return out;
}

std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * (7 - i)));
  return out;
}

std::string RevisionKey(int64_t main, int64_t sub, bool tombstone) {
  std::string out =
      BigEndian64(static_cast<uint64_t>(main)) + "_" + BigEndian64(static_cast<uint64_t>(sub));
  if (tombstone) out.push_back('t');
  return out;
}

uint32_t Crc32cUpdate(uint32_t crc, std::string_view data) {
  static const auto* table = [] {
    auto* t = new std::array<uint32_t, 256>();
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      (*t)[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (char ch : data) crc = (*table)[(crc ^ static_cast<uint8_t>(ch)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

constexpr int64_t kLeaseId = 0x1234;

// An etcd backend as `etcdctl snapshot save` would fetch it, plus the live key state it implies.
struct EtcdSnapshot {
  Database db;
  std::map<std::string, EtcdKv> live;  // key -> latest version
  int64_t revision = 0;
  int many_keys = 0;
};

EtcdSnapshot MakeEtcdSnapshot() {
  EtcdSnapshot snap;
  KeyValues& key_bucket = snap.db["key"];
  std::map<std::string, EtcdKv>& live = snap.live;
  auto put = [&](int64_t main, int64_t sub, std::string key, std::string value, int64_t lease) {
    EtcdKv kv;
    auto it = live.find(key);
    kv.create_revision = it == live.end() ? main : it->second.create_revision;
    kv.version = it == live.end() ? 1 : it->second.version + 1;
    kv.mod_revision = main;
    kv.key = key;
    kv.value = std::move(value);
    kv.lease = lease;
    key_bucket.emplace_back(RevisionKey(main, sub, false), MarshalKeyValue(kv));
    live[key] = kv;
    snap.revision = main;
  };
  auto del = [&](int64_t main, std::string key) {
    EtcdKv tomb;
    tomb.key = key;
    key_bucket.emplace_back(RevisionKey(main, 0, true), MarshalKeyValue(tomb));
    live.erase(key);
    snap.revision = main;
  };
  put(2, 0, "foo", "bar", 0);
  put(3, 0, "baz", "qux", kLeaseId);
  put(4, 0, "foo", "bar2", 0);
  put(5, 0, "gone", "soon", 0);
  del(6, "gone");
  put(7, 0, "big", PatternBytes(20000, 5), 0);
  put(8, 0, "txn/a", "first", 0);  // one transaction, two sub-revisions
  put(8, 1, "txn/b", "second", 0);
  snap.many_keys = 3000;
  for (int i = 0; i < snap.many_keys; ++i) {
    put(9 + i, 0, absl::StrFormat("many/%05d", i), absl::StrCat("value-", i), 0);
  }

  std::string lease;
  AppendIntField(lease, 1, kLeaseId);
  AppendIntField(lease, 2, 3600);
  snap.db["lease"] = {{BigEndian64(kLeaseId), lease}};
  snap.db["meta"] = {{"consistent_index", BigEndian64(42)}};
  snap.db["cluster"] = {{"clusterVersion", "3.4.0"}};
  for (const char* empty :
       {"alarm", "auth", "authRoles", "authUsers", "members", "members_removed"}) {
    snap.db[empty];
  }
  return snap;
}

nlohmann::json ParseJson(const std::string& text) {
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

TEST(BoltEtcdCompatTest, SnapshotStatusAcceptsFile) {
  const std::string etcdctl = FindInPath("etcdctl");
  if (etcdctl.empty()) GTEST_SKIP() << "etcdctl not installed";
  TempDir dir;
  const EtcdSnapshot snap = MakeEtcdSnapshot();
  const std::string path = dir.File("snapshot.db");
  absl::StatusOr<std::unique_ptr<Writer>> writer = Writer::Create(path);
  ASSERT_TRUE(writer.ok());
  int64_t total_keys = 0;
  uint32_t hash = 0;
  for (const auto& [bucket, kvs] : snap.db) {
    ASSERT_TRUE((*writer)->BeginBucket(bucket).ok());
    hash = Crc32cUpdate(hash, bucket);
    for (const auto& [k, v] : kvs) {
      ASSERT_TRUE((*writer)->Put(k, v).ok());
      hash = Crc32cUpdate(Crc32cUpdate(hash, k), v);
      ++total_keys;
    }
  }
  ASSERT_TRUE((*writer)->Finish().ok());

  CommandResult r = RunCommand({etcdctl, "snapshot", "status", path, "-w", "json"}, dir);
  std::printf("etcdctl snapshot status: %s%s", r.out.c_str(), r.err.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  nlohmann::json status = ParseJson(r.out);
  ASSERT_FALSE(status.is_discarded()) << r.out;
  EXPECT_EQ(status["revision"].get<int64_t>(), snap.revision);
  EXPECT_EQ(status["totalKey"].get<int64_t>(), total_keys);
  EXPECT_EQ(status["totalSize"].get<uint64_t>(), (*writer)->file_size_bytes());
  EXPECT_EQ(status["hash"].get<uint32_t>(), hash);

  // The generic stress shapes (overflowing branch pages, huge values) must pass bbolt's
  // Tx.Check too.
  const Database varied = VariedDatabase(4096, 20000);
  const std::string varied_path = dir.File("varied.db");
  ASSERT_TRUE(WriteDatabase(varied_path, varied, 4096).ok());
  int64_t varied_keys = 0;
  for (const auto& [name, kvs] : varied) varied_keys += static_cast<int64_t>(kvs.size());
  r = RunCommand({etcdctl, "snapshot", "status", varied_path, "-w", "json"}, dir);
  std::printf("etcdctl snapshot status (varied): %s%s", r.out.c_str(), r.err.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  status = ParseJson(r.out);
  ASSERT_FALSE(status.is_discarded()) << r.out;
  EXPECT_EQ(status["totalKey"].get<int64_t>(), varied_keys);
}

std::string Sha256(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

std::string B64(std::string_view s) { return absl::Base64Escape(fmt::AbslView(s)); }

TEST(BoltEtcdCompatTest, RestoreAndServe) {
  const std::string etcdctl = FindInPath("etcdctl");
  const std::string etcd = FindInPath("etcd");
  if (etcdctl.empty() || etcd.empty()) GTEST_SKIP() << "etcd/etcdctl not installed";
  TempDir dir;
  const EtcdSnapshot snap = MakeEtcdSnapshot();
  const std::string path = dir.File("snapshot.db");
  ASSERT_TRUE(WriteDatabase(path, snap.db, 4096).ok());
  // The Snapshot RPC streams the file followed by its SHA-256.
  const std::string hashed_path = dir.File("snapshot-with-hash.db");
  {
    const std::string bytes = ReadFileBytes(path);
    WriteFileBytes(hashed_path, bytes + Sha256(bytes));
  }

  const std::vector<int> ports = FreeLoopbackPorts(2);
  const std::string client_url = absl::StrCat("http://127.0.0.1:", ports[0]);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", ports[1]);
  const std::string cluster = absl::StrCat("m1=", peer_url);
  auto restore = [&](const std::string& file, const std::string& data_dir, bool skip_hash) {
    std::vector<std::string> argv = {etcdctl,
                                     "snapshot",
                                     "restore",
                                     file,
                                     "--data-dir",
                                     data_dir,
                                     "--name",
                                     "m1",
                                     "--initial-cluster",
                                     cluster,
                                     "--initial-cluster-token",
                                     "bolt-test",
                                     "--initial-advertise-peer-urls",
                                     peer_url};
    if (skip_hash) argv.push_back("--skip-hash-check");
    return RunCommand(argv, dir);
  };
  CommandResult r = restore(path, dir.File("restored-plain"), true);
  std::printf("etcdctl snapshot restore --skip-hash-check: exit %d\n%s%s", r.exit_code,
              r.out.c_str(), r.err.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Without the hash trailer, restore must insist on --skip-hash-check.
  r = restore(path, dir.File("restored-nohash"), false);
  EXPECT_NE(r.exit_code, 0) << r.err;
  const std::string data_dir = dir.File("restored-hashed");
  r = restore(hashed_path, data_dir, false);
  std::printf("etcdctl snapshot restore (sha256 trailer): exit %d\n%s%s", r.exit_code,
              r.out.c_str(), r.err.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.err;

  {
    EtcdProcess server({etcd, "--name", "m1", "--data-dir", data_dir, "--listen-client-urls",
                        client_url, "--advertise-client-urls", client_url, "--listen-peer-urls",
                        peer_url, "--initial-advertise-peer-urls", peer_url, "--initial-cluster",
                        cluster, "--initial-cluster-token", "bolt-test"},
                       dir.File("etcd.log"));
    auto ctl = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = {etcdctl, "--endpoints", client_url, "--command-timeout",
                                       "5s"};
      argv.insert(argv.end(), args.begin(), args.end());
      return RunCommand(argv, dir, 20000);
    };
    bool ready = false;
    for (int attempt = 0; attempt < 60 && !ready; ++attempt) {
      ASSERT_TRUE(server.Alive()) << "etcd exited:\n" << server.Log();
      ready = ctl({"get", "foo", "-w", "json"}).exit_code == 0;
      if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    ASSERT_TRUE(ready) << "etcd never served:\n" << server.Log();

    auto get_json = [&](std::vector<std::string> args) {
      args.insert(args.end(), {"-w", "json"});
      CommandResult res = ctl(args);
      EXPECT_EQ(res.exit_code, 0) << res.err;
      nlohmann::json j = ParseJson(res.out);
      EXPECT_FALSE(j.is_discarded()) << res.out;
      return j;
    };
    auto expect_kv = [&](const nlohmann::json& kv, const EtcdKv& want) {
      EXPECT_EQ(kv.value("key", ""), B64(want.key));
      EXPECT_EQ(kv.value("value", ""), B64(want.value)) << want.key;
      EXPECT_EQ(kv.value("create_revision", int64_t{0}), want.create_revision) << want.key;
      EXPECT_EQ(kv.value("mod_revision", int64_t{0}), want.mod_revision) << want.key;
      EXPECT_EQ(kv.value("version", int64_t{0}), want.version) << want.key;
      EXPECT_EQ(kv.value("lease", int64_t{0}), want.lease) << want.key;
    };

    for (const char* key : {"foo", "baz", "big", "txn/a", "txn/b", "many/00000", "many/02999"}) {
      SCOPED_TRACE(key);
      nlohmann::json j = get_json({"get", key});
      ASSERT_EQ(j.value("count", 0), 1) << j.dump();
      expect_kv(j["kvs"][0], snap.live.at(key));
      EXPECT_EQ(j["header"].value("revision", int64_t{0}), snap.revision);
    }
    nlohmann::json gone = get_json({"get", "gone"});
    EXPECT_EQ(gone.value("count", 0), 0) << gone.dump();
    // History survives: foo as of revision 3 was still "bar".
    nlohmann::json old_foo = get_json({"get", "foo", "--rev=3"});
    ASSERT_EQ(old_foo.value("count", 0), 1) << old_foo.dump();
    EXPECT_EQ(old_foo["kvs"][0].value("value", ""), B64("bar"));
    nlohmann::json many = get_json({"get", "many/", "--prefix"});
    EXPECT_EQ(many.value("count", 0), snap.many_keys);
    ASSERT_EQ(many["kvs"].size(), static_cast<size_t>(snap.many_keys));
    for (int i = 0; i < snap.many_keys; i += 499) {
      expect_kv(many["kvs"][i], snap.live.at(absl::StrFormat("many/%05d", i)));
    }
    CommandResult leases = ctl({"lease", "list"});
    std::printf("etcdctl lease list: %s", leases.out.c_str());
    EXPECT_EQ(leases.exit_code, 0) << leases.err;
    EXPECT_NE(leases.out.find("1234"), std::string::npos) << leases.out;
    std::printf("etcdctl get foo -w json: %s", ctl({"get", "foo", "-w", "json"}).out.c_str());

    // A write on top of the restored data proves bbolt can also modify our pages.
    ASSERT_EQ(ctl({"put", "many/00010", "rewritten"}).exit_code, 0);
    nlohmann::json rewritten = get_json({"get", "many/00010"});
    EXPECT_EQ(rewritten["kvs"][0].value("mod_revision", int64_t{0}), snap.revision + 1);
    server.Stop();
  }

  // Our reader must also read the file real bbolt rewrote.
  absl::StatusOr<std::unique_ptr<Reader>> reader = Reader::Open(data_dir + "/member/snap/db");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Check().ok()) << (*reader)->Check();
  absl::StatusOr<KeyValues> keys = ReadBucket(**reader, "key");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), snap.db.at("key").size() + 1);
  EXPECT_EQ(std::vector(keys->begin(), keys->end() - 1), snap.db.at("key"));
  EXPECT_EQ(keys->back().first, RevisionKey(snap.revision + 1, 0, false));
}

}  // namespace
}  // namespace meridian::bolt
