#include "common/flags.h"

#include <cctype>
#include <iostream>
#include <ostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace meridian {

std::string EnvName(std::string_view flag) {
  std::string out;
  for (char ch : flag) {
    out.push_back(ch == '-' ? '_'
                            : static_cast<char>(std::toupper(static_cast<unsigned char>(ch))));
  }
  return out;
}

std::map<std::string, std::string> EnvironmentMap(const std::vector<std::string>& env) {
  std::map<std::string, std::string> out;
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

std::vector<std::string> ProcessEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

std::vector<std::string> GoStyleArgs(int argc, const char* const* argv,
                                     const std::set<std::string>& bool_flags) {
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) {
    std::string a = argv[i];
    if (a.size() > 2 && a[0] == '-' && a[1] != '-') a = "-" + a;
    if (bool_flags.count(a) > 0) a += "=true";
    args.push_back(std::move(a));
  }
  return args;
}

absl::StatusOr<bool> ParseArgs(CLI::App& app, std::vector<std::string> args, std::ostream& out) {
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return true;
}

absl::StatusOr<int64_t> ParseIntFlag(const std::string& flag, const std::string& value, int64_t lo,
                                     int64_t hi) {
  int64_t n = 0;
  if (!absl::SimpleAtoi(value, &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value \"", value, "\" for flag --", flag, ": not an integer"));
  }
  if (n < lo || n > hi) {
    return absl::InvalidArgumentError(absl::StrCat("invalid value \"", value, "\" for flag --",
                                                   flag, ": must be in [", lo, ", ", hi, "]"));
  }
  return n;
}

int UsageError(const std::string& program, const absl::Status& status) {
  std::cerr << program << ": " << status.message() << "\n"
            << "Run '" << program << " --help' for the list of flags.\n";
  return 2;
}

}  // namespace meridian
