// Byte encodings of the MVCC store's RocksDB keys. Kept in one place because the store, the
// compactor, the snapshot writer and the tests must agree on them exactly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace meridian::mvcc {

// A revision: `main` is the store-wide transaction counter, `sub` numbers changes inside it.
struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  friend bool operator==(const Revision&, const Revision&) = default;
  friend auto operator<=>(const Revision&, const Revision&) = default;
};

inline void PutBigEndian64(std::string* out, uint64_t v) {
  char buf[8];
  for (int i = 7; i >= 0; --i) {
    buf[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  out->append(buf, 8);
}

inline uint64_t GetBigEndian64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

constexpr size_t kRevisionBytes = 16;

// History CF key: (main, sub) big-endian, so byte order is revision order.
inline std::string EncodeRevision(Revision r) {
  std::string out;
  out.reserve(kRevisionBytes);
  PutBigEndian64(&out, static_cast<uint64_t>(r.main));
  PutBigEndian64(&out, static_cast<uint64_t>(r.sub));
  return out;
}

inline Revision DecodeRevision(std::string_view in) {
  return Revision{static_cast<int64_t>(GetBigEndian64(in.substr(0, 8))),
                  static_cast<int64_t>(GetBigEndian64(in.substr(8, 8)))};
}

// Index CF key: user key bytes followed by the 16-byte revision. The index comparator orders by
// user key ascending, then revision descending, so Seek(key, R) lands on the newest revision of
// `key` that is <= R.
inline std::string EncodeIndexKey(std::string_view user_key, Revision r) {
  std::string out;
  out.reserve(user_key.size() + kRevisionBytes);
  out.append(user_key);
  PutBigEndian64(&out, static_cast<uint64_t>(r.main));
  PutBigEndian64(&out, static_cast<uint64_t>(r.sub));
  return out;
}

inline std::string_view IndexUserKey(std::string_view index_key) {
  return index_key.substr(0, index_key.size() - kRevisionBytes);
}

inline Revision IndexRevision(std::string_view index_key) {
  return DecodeRevision(index_key.substr(index_key.size() - kRevisionBytes));
}

// Lease-keys CF key: lease id (big-endian) followed by the user key.
inline std::string EncodeLeaseKey(int64_t lease_id, std::string_view user_key) {
  std::string out;
  out.reserve(8 + user_key.size());
  PutBigEndian64(&out, static_cast<uint64_t>(lease_id));
  out.append(user_key);
  return out;
}

// Index CF values: one byte saying what the revision did to the key.
constexpr char kIndexPut = 'p';
constexpr char kIndexTombstone = 't';

// History CF values: one type byte, then a serialized mvccpb::KeyValue.
constexpr char kHistPut = 'p';
constexpr char kHistDelete = 'd';

// Returns the smallest key greater than every key with `prefix` ("" when there is none), as
// etcd's clientv3.GetPrefixRangeEnd does.
inline std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& c = end.back();
    if (static_cast<uint8_t>(c) < 0xff) {
      c = static_cast<char>(static_cast<uint8_t>(c) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace meridian::mvcc
