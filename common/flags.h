// etcd-style command lines on CLI11: Go's flag conventions and ETCD_* environment variables,
// shared by meridian-node and meridian-proxy.
#ifndef MERIDIAN_COMMON_FLAGS_H_
#define MERIDIAN_COMMON_FLAGS_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace meridian {

// "listen-client-urls" -> "LISTEN_CLIENT_URLS" (put a prefix such as "ETCD_" in front).
std::string EnvName(std::string_view flag);
// "NAME=value" strings -> NAME -> value.
std::map<std::string, std::string> EnvironmentMap(const std::vector<std::string>& env);
// The process's environment as "NAME=value" strings.
std::vector<std::string> ProcessEnvironment();
// argv (without argv[0]) the way CLI11's App::parse(std::vector) wants it, last argument first.
// As Go's flag package allows, "-flag" means "--flag", and a boolean flag named in `bool_flags`
// ("--pre-vote") may stand alone, meaning "=true".
std::vector<std::string> GoStyleArgs(int argc, const char* const* argv,
                                     const std::set<std::string>& bool_flags = {});
// app.parse(args): true to carry on, false when --help was asked for (and printed to `out`),
// InvalidArgument with CLI11's message for a bad command line.
[[nodiscard]] absl::StatusOr<bool> ParseArgs(CLI::App& app, std::vector<std::string> args,
                                             std::ostream& out);

// An integer flag value within [lo, hi]; InvalidArgument naming the flag otherwise.
[[nodiscard]] absl::StatusOr<int64_t> ParseIntFlag(const std::string& flag,
                                                   const std::string& value, int64_t lo,
                                                   int64_t hi);
// Prints "<program>: <message>" and where to find the flags to stderr; returns 2, the exit code of
// a bad command line.
int UsageError(const std::string& program, const absl::Status& status);

}  // namespace meridian

#endif  // MERIDIAN_COMMON_FLAGS_H_
