// History files: a line-based text format so that a failing test can save its history and the
// checker can replay it later (README.md, "Replaying a saved history").
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/lincheck/lincheck.h"

namespace meridian::lincheck {
namespace {

constexpr char kHeader[] = "lincheck-history v1";
constexpr char kFieldsComment[] =
    "# client kind key value found call_ns return_ns outcome revision";
constexpr size_t kFieldCount = 9;

// Bounds on what a history file may hold; far above any test's history.
constexpr size_t kMaxHistoryOps = 50'000'000;
constexpr int64_t kMaxHistoryFileBytes = int64_t{4} << 30;

// C-escaped and quoted, with spaces escaped too so that fields split on spaces.
std::string EncodeBytes(const std::string& bytes) {
  return absl::StrCat("\"", absl::StrReplaceAll(absl::CEscape(bytes), {{" ", "\\040"}}), "\"");
}

absl::StatusOr<std::string> DecodeBytes(const std::string& field) {
  if (field.size() < 2 || field.front() != '"' || field.back() != '"') {
    return absl::InvalidArgumentError(absl::StrCat("expected a quoted string, got ", field));
  }
  std::string bytes;
  std::string error;
  if (!absl::CUnescape(field.substr(1, field.size() - 2), &bytes, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("bad escape in ", field, ": ", error));
  }
  return bytes;
}

absl::StatusOr<Operation> ParseOp(const std::vector<std::string>& fields) {
  if (fields.size() != kFieldCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", kFieldCount, " fields, got ", fields.size()));
  }
  Operation op;
  if (!absl::SimpleAtoi(fields[0], &op.client_id)) {
    return absl::InvalidArgumentError(absl::StrCat("bad client id ", fields[0]));
  }
  if (fields[1] == "put") {
    op.kind = OpKind::kPut;
  } else if (fields[1] == "get") {
    op.kind = OpKind::kGet;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("bad kind ", fields[1]));
  }
  absl::StatusOr<std::string> key = DecodeBytes(fields[2]);
  if (!key.ok()) return key.status();
  op.key = *std::move(key);
  absl::StatusOr<std::string> value = DecodeBytes(fields[3]);
  if (!value.ok()) return value.status();
  op.value = *std::move(value);
  if (fields[4] != "0" && fields[4] != "1") {
    return absl::InvalidArgumentError(absl::StrCat("bad found flag ", fields[4]));
  }
  op.found = fields[4] == "1";
  if (!absl::SimpleAtoi(fields[5], &op.call_ns) || !absl::SimpleAtoi(fields[6], &op.return_ns)) {
    return absl::InvalidArgumentError(absl::StrCat("bad times ", fields[5], " ", fields[6]));
  }
  if (fields[7] == "ok") {
    op.outcome = Outcome::kOk;
  } else if (fields[7] == "unknown") {
    op.outcome = Outcome::kUnknown;
  } else if (fields[7] == "failed") {
    op.outcome = Outcome::kFailed;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("bad outcome ", fields[7]));
  }
  if (!absl::SimpleAtoi(fields[8], &op.revision)) {
    return absl::InvalidArgumentError(absl::StrCat("bad revision ", fields[8]));
  }
  return op;
}


}  // namespace

std::string FormatHistory(const std::vector<Operation>& history) {
  std::string out = absl::StrCat(kHeader, "\n", kFieldsComment, "\n");
  for (const Operation& op : history) {
    absl::StrAppend(&out, op.client_id, " ", op.kind == OpKind::kPut ? "put" : "get", " ",
                    EncodeBytes(op.key), " ", EncodeBytes(op.value), " ", op.found ? 1 : 0, " ",
                    op.call_ns, " ", op.return_ns, " ", OutcomeName(op.outcome), " ", op.revision,
                    "\n");
  }
  return out;
}

absl::StatusOr<std::vector<Operation>> ParseHistory(const std::string& text) {
  std::vector<Operation> history;
  bool seen_header = false;
  size_t line_number = 0;
  for (absl::string_view line_view : absl::StrSplit(text, '\n')) {
    ++line_number;
    const std::string line(absl::StripAsciiWhitespace(line_view));
    if (line.empty() || line[0] == '#') continue;
    if (!seen_header) {
      if (line != kHeader) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_number, ": expected header \"", kHeader, "\""));
      }
      seen_header = true;
      continue;
    }
    if (history.size() >= kMaxHistoryOps) {
      return absl::InvalidArgumentError(
          absl::StrCat("more than ", kMaxHistoryOps, " ops in the history"));
    }
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    absl::StatusOr<Operation> op = ParseOp(fields);
    if (!op.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", op.status().message()));
    }
    history.push_back(*std::move(op));
  }
  if (!seen_header) return absl::InvalidArgumentError("empty history file (no header)");
  return history;
}

absl::Status WriteHistoryFile(const std::string& path, const std::vector<Operation>& history) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::UnavailableError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  file << FormatHistory(history);
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Operation>> ReadHistoryFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  file.seekg(0, std::ios::end);
  const std::streamoff size_bytes = file.tellg();
  if (size_bytes < 0 || size_bytes > kMaxHistoryFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": size ", static_cast<int64_t>(size_bytes), " bytes is out of range"));
  }
  file.seekg(0, std::ios::beg);
  std::string text(static_cast<size_t>(size_bytes), '\0');
  file.read(text.data(), size_bytes);
  if (!file) return absl::DataLossError(absl::StrCat("cannot read ", path));
  absl::StatusOr<std::vector<Operation>> history = ParseHistory(text);
  if (!history.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", history.status().message()));
  }
  return history;
}

}  // namespace meridian::lincheck
