// libFuzzer target "image": see feed_image in tests/fuzz/fuzz_targets.h for what it calls.
// Build and run: tests/fuzz/run_fuzzer.sh image [SECONDS] [BUILD_DIR]
#include "fuzz_main.h"

CANDELA_FUZZ_TARGET(feed_image)
