// libFuzzer target "npy": see feed_npy in tests/fuzz/fuzz_targets.h for what it calls.
// Build and run: tests/fuzz/run_fuzzer.sh npy [SECONDS] [BUILD_DIR]
#include "fuzz_main.h"

CANDELA_FUZZ_TARGET(feed_npy)
