// Helpers shared by the e2e GoogleTest suites: assertions on etcdctl results, JSON access and a
// fixture that owns one server per test suite.
#ifndef MERIDIAN_TESTS_E2E_TEST_UTIL_H_
#define MERIDIAN_TESTS_E2E_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace meridian::e2e {

inline std::string Describe(const CommandResult& r) {
  return absl::StrCat("exit_code=", r.exit_code, r.timed_out ? " (timed out)" : "",
                      "\n--- stdout ---\n", r.stdout_text, "\n--- stderr ---\n", r.stderr_text);
}

inline ::testing::AssertionResult Succeeded(const CommandResult& r) {
  if (r.exit_code == 0 && !r.timed_out) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "etcdctl failed: " << Describe(r);
}

// Asserts exit code `code` and that etcdctl's final "Error: ..." line equals `error_line`.
inline ::testing::AssertionResult FailedWith(const CommandResult& r, int code,
                                             const std::string& error_line) {
  if (r.exit_code == code && r.ErrorLines() == error_line) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected exit code " << code << " and '" << error_line << "', got " << Describe(r);
}

// Parses stdout as JSON; on failure returns a discarded value (is_discarded() == true).
inline nlohmann::json ParseJson(const std::string& text) {
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

inline std::string B64(const std::string& raw) { return absl::Base64Escape(raw); }

inline std::string UnB64(const std::string& encoded) {
  std::string out;
  if (!absl::Base64Unescape(encoded, &out)) return "<bad base64:" + encoded + ">";
  return out;
}

// Reads an integer JSON field; -1 (and a test failure) if missing or not a number.
inline int64_t JsonInt(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) {
    ADD_FAILURE() << "missing integer field '" << key << "' in " << j.dump();
    return -1;
  }
  return j[key].get<int64_t>();
}

inline uint64_t JsonUint(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number_unsigned()) {
    ADD_FAILURE() << "missing unsigned field '" << key << "' in " << j.dump();
    return 0;
  }
  return j[key].get<uint64_t>();
}

// A fixture whose test suite shares one server, started with Config::Flags(), of the kind
// MERIDIAN_E2E_SERVER names and behind the proxy MERIDIAN_E2E_PROXY names (if any).
// Config must provide: static std::vector<std::string> Flags();
template <typename Config>
class ServerSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options;
    options.kind = ServerKindFromEnv();
    options.proxy = ProxyKindFromEnv();
    options.extra_flags = Config::Flags();
    server_ = std::make_unique<ServerProcess>(options);
    absl::Status started = server_->Start();
    if (!started.ok()) {
      start_error_ = started.ToString();
      server_.reset();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "server failed to start: " << start_error_;
  }
  void TearDown() override {
    if (HasFailure() && server_ != nullptr) {
      std::fprintf(stderr, "===== server log tail (%s) =====\n%s\n===== end of server log =====\n",
                   server_->log_path().c_str(), server_->LogTail(32 * 1024).c_str());
    }
  }

  static ServerProcess& server() { return *server_; }
  // True when the suite talks to the server through a proxy (MERIDIAN_E2E_PROXY).
  static bool Proxied() { return server_ != nullptr && server_->has_proxy(); }
  CommandResult Ctl(const std::vector<std::string>& args, const std::string& stdin_text = "") {
    return server_->Ctl(args, stdin_text);
  }
  // The store's current revision, read from the header of a get.
  int64_t Revision() {
    CommandResult r = Ctl({"get", "revision-probe-key", "-w", "json"});
    EXPECT_TRUE(Succeeded(r));
    nlohmann::json j = ParseJson(r.stdout_text);
    if (j.is_discarded() || !j.contains("header")) {
      ADD_FAILURE() << "cannot parse revision from " << r.stdout_text;
      return -1;
    }
    return JsonInt(j["header"], "revision");
  }

  static inline std::unique_ptr<ServerProcess> server_;
  static inline std::string start_error_;
};

struct DefaultFlags {
  static std::vector<std::string> Flags() { return {}; }
};

}  // namespace meridian::e2e

#endif  // MERIDIAN_TESTS_E2E_TEST_UTIL_H_
