// libFuzzer entry point for the DNS answer decoder: any bytes give records or an error, never a
// crash, an out-of-bounds read or undefined behaviour. Findings go into fuzz_corpus/, which
// discovery_test replays in every build.
//
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang
//   cmake --build build-fuzz --target dns_fuzz
//   build-fuzz/bin/dns_fuzz discovery/fuzz_corpus -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "discovery/dns_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view message(reinterpret_cast<const char*>(data), size);
  auto records = meridian::discovery::ParseSrvAnswer("_etcd-client._tcp.example.com", message);
  if (records.ok()) {
    for (const auto& r : *records) {
      // Touch every field so that a bad record is read in full.
      volatile size_t sink = r.target.size() + r.port + r.priority + r.weight + r.ttl_s;
      (void)sink;
    }
  }
  return 0;
}
