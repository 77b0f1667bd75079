// main() of the e2e suites that partition clusters (cluster.h): the binary first moves into a
// private network namespace, so that nothing it sets up touches the host's network.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "cluster.h"

int main(int argc, char** argv) {
  // First thing, while the process has a single thread: unshare() moves only the calling thread.
  absl::Status netns = meridian::e2e::EnterPrivateNetworkNamespace();
  if (!netns.ok()) {
    std::fprintf(stderr,
                 "%s: staying in the current network namespace (%s); the network partition "
                 "tests will fail\n",
                 argv[0], std::string(netns.message()).c_str());
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
