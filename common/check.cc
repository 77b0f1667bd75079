#include "common/check.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace meridian::internal {
namespace {

[[noreturn]] void PrintAndAbort(const char* file, int line, const char* condition,
                                const std::string& detail) {
  // stderr directly: the logger may be the thing that is broken, and this must not allocate
  // much or take locks that a crashing thread could hold.
  std::fprintf(stderr, "%s:%d: CHECK failed: %s%s%s\n", file, line, condition,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace

CheckFailure::CheckFailure(const char* file, int line, const char* condition)
    : file_(file), line_(line), condition_(condition) {}

CheckFailure::~CheckFailure() { PrintAndAbort(file_, line_, condition_, stream_.str()); }

void CheckFailedF(const char* file, int line, const char* condition, const char* fmt, ...) {
  char detail[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(detail, sizeof(detail), fmt, args);
  va_end(args);
  PrintAndAbort(file, line, condition, detail);
}

}  // namespace meridian::internal
