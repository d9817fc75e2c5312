#include <gtest/gtest.h>
#include <ATen/Parallel.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Tests run two at a time under ctest -j2: one intra-op thread each avoids OpenMP teams fighting.
  at::set_num_threads(1);
  return RUN_ALL_TESTS();
}
