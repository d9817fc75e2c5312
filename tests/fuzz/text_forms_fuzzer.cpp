// libFuzzer target "text_forms": see feed_text_forms in tests/fuzz/fuzz_targets.h for what it calls.
// Build and run: tests/fuzz/run_fuzzer.sh text_forms [SECONDS] [BUILD_DIR]
#include "fuzz_main.h"

CANDELA_FUZZ_TARGET(feed_text_forms)
