// Invariant checks for the raft core. They abort with file:line, the failed condition and the
// offending values, in release builds too: a broken raft invariant means a bug that would
// otherwise corrupt replicated state silently.
//
//   RAFT_CHECK(lo <= hi) << "slice [" << lo << ", " << hi << ") is inverted";
//   RAFT_CHECK_LE(commit, last_index) << "commit out of range";   // prints both values
//
// The library depends only on absl and the standard library, so it does not use
// common/check.h (meridian_common pulls in gRPC and spdlog).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace meridian::raft::internal {

// Collects the message of a failed check; its destructor prints it and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": raft check failed: " << condition << " ";
  }
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  [[noreturn]] ~CheckFailure() {
    std::string text = stream_.str();
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream << ...` type-check: & binds looser than <<.
struct CheckVoidify {
  void operator&(std::ostream&) {}
};

template <typename A, typename B>
std::string* CheckOpMessage(const A& a, const B& b, const char* expr) {
  std::ostringstream out;
  out << expr << " (" << a << " vs. " << b << ")";
  return new std::string(out.str());  // never freed: the process aborts right after
}

}  // namespace meridian::raft::internal

#define RAFT_CHECK(cond)                                \
  (cond) ? (void)0                                      \
         : ::meridian::raft::internal::CheckVoidify() & \
               ::meridian::raft::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

// Operands are compared as given; raft indexes and terms are all uint64_t.
#define RAFT_INTERNAL_CHECK_OP(op, a, b)                                                         \
  for (std::string* raft_check_msg_ =                                                            \
           ((a)op(b)) ? nullptr                                                                  \
                      : ::meridian::raft::internal::CheckOpMessage((a), (b), #a " " #op " " #b); \
       raft_check_msg_ != nullptr;)                                                              \
  ::meridian::raft::internal::CheckFailure(__FILE__, __LINE__, raft_check_msg_->c_str()).stream()

#define RAFT_CHECK_EQ(a, b) RAFT_INTERNAL_CHECK_OP(==, a, b)
#define RAFT_CHECK_NE(a, b) RAFT_INTERNAL_CHECK_OP(!=, a, b)
#define RAFT_CHECK_LT(a, b) RAFT_INTERNAL_CHECK_OP(<, a, b)
#define RAFT_CHECK_LE(a, b) RAFT_INTERNAL_CHECK_OP(<=, a, b)
#define RAFT_CHECK_GT(a, b) RAFT_INTERNAL_CHECK_OP(>, a, b)
#define RAFT_CHECK_GE(a, b) RAFT_INTERNAL_CHECK_OP(>=, a, b)
