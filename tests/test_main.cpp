#include <gtest/gtest.h>
#include <ATen/Parallel.h>

#include "candela/core/memory.h"

#include <algorithm>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Tests run two at a time under ctest -j2: one intra-op thread each avoids OpenMP teams fighting.
  // CANDELA_TEST_THREADS overrides it (scripts/check-portability.sh runs the suite with 2).
  int threads = 1;
  if (const char* t = std::getenv("CANDELA_TEST_THREADS"); t && *t) threads = std::max(1, std::atoi(t));
  at::set_num_threads(threads);
  candela::reuse_freed_memory();  // as the CLI does (core/memory.h)
  return RUN_ALL_TESTS();
}
