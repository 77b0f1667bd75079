#include "discovery/dns_message.h"

#include <ares.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace meridian::discovery {
namespace {

constexpr size_t kHeaderBytes = 12;
constexpr uint16_t kTypeCname = 5;
constexpr uint16_t kTypeSrv = 33;
constexpr uint16_t kClassIn = 1;

uint16_t Get16(const unsigned char* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t Get32(const unsigned char* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

std::string Canonical(std::string name) {
  while (!name.empty() && name.back() == '.') name.pop_back();
  return absl::AsciiStrToLower(name);
}

// A reader over one message; every accessor checks the bounds first.
class Reader {
 public:
  Reader(std::string_view question, std::string_view message)
      : question_(question),
        buf_(reinterpret_cast<const unsigned char*>(message.data())),
        len_(message.size()) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return len_ - pos_; }
  const unsigned char* at() const { return buf_ + pos_; }

  absl::Status Need(size_t n, const char* what) const {
    if (remaining() < n) {
      return Malformed(absl::StrCat("truncated ", what, " at byte ", pos_, " of ", len_));
    }
    return absl::OkStatus();
  }
  void Skip(size_t n) { pos_ += n; }

  // A (possibly compressed) name at the current position; advances past its encoding.
  absl::StatusOr<std::string> Name() {
    if (remaining() == 0) return Malformed(absl::StrCat("truncated name at byte ", pos_));
    char* out = nullptr;
    long encoded_len = 0;
    int rc = ares_expand_name(at(), buf_, static_cast<int>(len_), &out, &encoded_len);
    if (rc != ARES_SUCCESS || out == nullptr) {
      if (out != nullptr) ares_free_string(out);
      return Malformed(absl::StrCat("bad name at byte ", pos_, " (", ares_strerror(rc), ")"));
    }
    std::string name(out);
    ares_free_string(out);
    if (encoded_len <= 0 || static_cast<size_t>(encoded_len) > remaining()) {
      return Malformed(absl::StrCat("bad name length at byte ", pos_));
    }
    pos_ += static_cast<size_t>(encoded_len);
    return name;
  }

  absl::Status Malformed(const std::string& why) const {
    return absl::DataLossError(absl::StrCat("malformed DNS answer for ", question_, ": ", why));
  }

 private:
  std::string question_;
  const unsigned char* buf_;
  size_t len_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<SrvRecord>> ParseSrvAnswer(std::string_view question,
                                                      std::string_view message) {
  std::string q(question);
  Reader r(q, message);
  if (message.size() > kMaxDnsMessageBytes) {
    return r.Malformed(absl::StrCat("message of ", message.size(), " bytes"));
  }
  if (auto st = r.Need(kHeaderBytes, "header"); !st.ok()) return st;
  const unsigned char* h = r.at();
  const uint16_t flags = Get16(h + 2);
  const uint16_t qdcount = Get16(h + 4);
  const uint16_t ancount = Get16(h + 6);
  r.Skip(kHeaderBytes);
  if ((flags & 0x8000) == 0) return r.Malformed("the message is a query, not a response");
  switch (flags & 0x000f) {
    case 0:
      break;
    case 2:
      return absl::UnavailableError(absl::StrCat("DNS server failure (SERVFAIL) for ", q));
    case 3:
      return absl::NotFoundError(absl::StrCat("no such domain (NXDOMAIN): ", q));
    case 5:
      return absl::UnavailableError(absl::StrCat("the DNS server refused the query for ", q));
    default:
      return absl::InternalError(absl::StrCat("DNS response code ", flags & 0x000f, " for ", q));
  }
  if (qdcount > 1) return r.Malformed(absl::StrCat(qdcount, " questions"));
  if (ancount > kMaxRecordsPerAnswer) return r.Malformed(absl::StrCat(ancount, " answers"));
  for (uint16_t i = 0; i < qdcount; ++i) {
    auto name = r.Name();
    if (!name.ok()) return name.status();
    if (auto st = r.Need(4, "question"); !st.ok()) return st;
    r.Skip(4);
  }
  // The names that stand for the question: itself and, in answer order, the CNAME targets of
  // names already in the set (a server answers a CNAME'd name with the chain, then the records).
  std::set<std::string> names = {Canonical(q)};
  std::vector<SrvRecord> out;
  for (uint16_t i = 0; i < ancount; ++i) {
    auto owner = r.Name();
    if (!owner.ok()) return owner.status();
    if (auto st = r.Need(10, "record header"); !st.ok()) return st;
    const uint16_t type = Get16(r.at());
    const uint16_t klass = Get16(r.at() + 2);
    const uint32_t ttl = Get32(r.at() + 4);
    const uint16_t rdlength = Get16(r.at() + 8);
    r.Skip(10);
    if (auto st = r.Need(rdlength, "record data"); !st.ok()) return st;
    const size_t rdata_end = r.pos() + rdlength;
    const bool ours = klass == kClassIn && names.count(Canonical(*owner)) > 0;
    if (ours && type == kTypeCname) {
      auto target = r.Name();
      if (!target.ok()) return target.status();
      if (r.pos() != rdata_end) return r.Malformed("CNAME record length does not match its name");
      names.insert(Canonical(*target));
    } else if (ours && type == kTypeSrv) {
      if (rdlength < 7) return r.Malformed(absl::StrCat("SRV record of ", rdlength, " bytes"));
      SrvRecord rec;
      rec.priority = Get16(r.at());
      rec.weight = Get16(r.at() + 2);
      rec.port = Get16(r.at() + 4);
      rec.ttl_s = (ttl & 0x80000000u) ? 0 : ttl;  // RFC 2181 section 8: top bit set means 0
      r.Skip(6);
      auto target = r.Name();
      if (!target.ok()) return target.status();
      if (r.pos() != rdata_end) return r.Malformed("SRV record length does not match its target");
      rec.target = Canonical(*target);
      out.push_back(std::move(rec));
    } else {
      r.Skip(rdlength);
    }
  }
  if (out.empty()) return absl::NotFoundError(absl::StrCat("no SRV records for ", q));
  return out;
}

}  // namespace meridian::discovery
