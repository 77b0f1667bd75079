// Invariant checks that abort with file:line, the failed condition and the offending values.
//
//   MERIDIAN_CHECK(index < size) << "index=" << index << " size=" << size;
//   MERIDIAN_CHECK_EQ(a, b);              // prints both values
//   MERIDIAN_CHECK_OK(status);            // prints the status
//   MERIDIAN_CHECKF(n > 0, "n=%d", n);    // printf style
//
// Checks are always on (release builds too): they guard invariants whose violation would
// otherwise corrupt data silently. They are not for validating input; input errors travel as
// absl::Status.
#ifndef MERIDIAN_COMMON_CHECK_H_
#define MERIDIAN_COMMON_CHECK_H_

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"

namespace meridian::internal {

// Collects the message of a failed check; its destructor prints it and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  [[noreturn]] ~CheckFailure();

  std::ostream& stream() { return stream_; }

 private:
  const char* file_;
  int line_;
  const char* condition_;
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream << ...` type-check: & binds looser than <<.
struct CheckVoidify {
  void operator&(std::ostream&) {}
};

[[noreturn]] void CheckFailedF(const char* file, int line, const char* condition, const char* fmt,
                               ...) __attribute__((format(printf, 4, 5)));

// Integer types std::cmp_* accepts (it rejects bool and the character types).
template <typename T>
inline constexpr bool kIsCmpInteger =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
    !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char8_t> && !std::is_same_v<T, char16_t> &&
    !std::is_same_v<T, char32_t>;

// Returns nullptr when `a op b` holds, else the message; only failures pay for formatting.
// Integers compare by value (std::cmp_*), so CHECK_EQ(size_t{3}, 3) neither warns nor lies.
#define MERIDIAN_INTERNAL_DEFINE_CHECK_OP(name, op, cmp)                                 \
  template <typename A, typename B>                                                      \
  std::string* Check##name##Impl(const A& a, const B& b, const char* expr) {             \
    bool ok;                                                                             \
    if constexpr (kIsCmpInteger<A> && kIsCmpInteger<B>) {                                \
      ok = cmp(a, b);                                                                    \
    } else {                                                                             \
      ok = (a op b);                                                                     \
    }                                                                                    \
    if (ok) [[likely]]                                                                   \
      return nullptr;                                                                    \
    std::ostringstream out;                                                              \
    out << expr << " (" << a << " vs. " << b << ")";                                     \
    return new std::string(out.str()); /* never freed: the process aborts right after */ \
  }

MERIDIAN_INTERNAL_DEFINE_CHECK_OP(EQ, ==, std::cmp_equal)
MERIDIAN_INTERNAL_DEFINE_CHECK_OP(NE, !=, std::cmp_not_equal)
MERIDIAN_INTERNAL_DEFINE_CHECK_OP(LT, <, std::cmp_less)
MERIDIAN_INTERNAL_DEFINE_CHECK_OP(LE, <=, std::cmp_less_equal)
MERIDIAN_INTERNAL_DEFINE_CHECK_OP(GT, >, std::cmp_greater)
MERIDIAN_INTERNAL_DEFINE_CHECK_OP(GE, >=, std::cmp_greater_equal)
#undef MERIDIAN_INTERNAL_DEFINE_CHECK_OP

}  // namespace meridian::internal

#define MERIDIAN_CHECK(cond)                      \
  (cond) ? (void)0                                \
         : ::meridian::internal::CheckVoidify() & \
               ::meridian::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define MERIDIAN_CHECKF(cond, ...) \
  (cond) ? (void)0 : ::meridian::internal::CheckFailedF(__FILE__, __LINE__, #cond, __VA_ARGS__)

#define MERIDIAN_INTERNAL_CHECK_OP(name, op, a, b)                                 \
  while (std::string* meridian_check_msg_ =                                        \
             ::meridian::internal::Check##name##Impl((a), (b), #a " " #op " " #b)) \
  ::meridian::internal::CheckFailure(__FILE__, __LINE__, meridian_check_msg_->c_str()).stream()

#define MERIDIAN_CHECK_EQ(a, b) MERIDIAN_INTERNAL_CHECK_OP(EQ, ==, a, b)
#define MERIDIAN_CHECK_NE(a, b) MERIDIAN_INTERNAL_CHECK_OP(NE, !=, a, b)
#define MERIDIAN_CHECK_LT(a, b) MERIDIAN_INTERNAL_CHECK_OP(LT, <, a, b)
#define MERIDIAN_CHECK_LE(a, b) MERIDIAN_INTERNAL_CHECK_OP(LE, <=, a, b)
#define MERIDIAN_CHECK_GT(a, b) MERIDIAN_INTERNAL_CHECK_OP(GT, >, a, b)
#define MERIDIAN_CHECK_GE(a, b) MERIDIAN_INTERNAL_CHECK_OP(GE, >=, a, b)

#define MERIDIAN_CHECK_OK(expr)                                                              \
  for (const ::absl::Status& meridian_check_status_ = (expr); !meridian_check_status_.ok();) \
  ::meridian::internal::CheckFailure(__FILE__, __LINE__, #expr " is OK").stream()            \
      << meridian_check_status_ << " "

// Marks code that must be unreachable, e.g. after a switch over all enum values.
#define MERIDIAN_UNREACHABLE() \
  ::meridian::internal::CheckFailure(__FILE__, __LINE__, "unreachable").stream()

#endif  // MERIDIAN_COMMON_CHECK_H_
