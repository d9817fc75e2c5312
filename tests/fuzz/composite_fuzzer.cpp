// libFuzzer target "composite": see feed_composite in tests/fuzz/fuzz_targets.h for what it calls.
// Build and run: tests/fuzz/run_fuzzer.sh composite [SECONDS] [BUILD_DIR]
#include "fuzz_main.h"

CANDELA_FUZZ_TARGET(feed_composite)
