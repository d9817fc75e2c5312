// The libFuzzer entry points shared by the <target>_fuzzer.cpp harnesses: one input goes to the
// target's feed function (fuzz_targets.h); a refusal (an exception) is fine, anything else that
// happens (a crash, a sanitizer report, a leak, a hang, a huge allocation) is a finding, and so is
// a LeakFound from a feed function (a temporary file left behind).
//
// CANDELA_FUZZ_STRICT=1 in the environment turns on the strict mode: the targets check their
// invariants (Checks::kStrict), and an exception that is not a candela::Error aborts with its
// type and message (the library promises candela::Error for every refusal).
#pragma once

#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <typeinfo>

#include "fuzz_targets.h"

namespace candela::fuzz {

inline bool strict_mode() {
  static const bool strict = [] {
    const char* v = std::getenv("CANDELA_FUZZ_STRICT");
    return v && *v && std::string(v) != "0";
  }();
  return strict;
}

inline int run_one(FeedFunction feed, const uint8_t* data, size_t size) {
  const bool strict = strict_mode();
  try {
    feed(data, size, strict ? Checks::kStrict : Checks::kCrashOnly);
  } catch (const InvariantViolation& e) {
    std::fprintf(stderr, "==candela-fuzz== %s\n", e.what());
    std::abort();
  } catch (const LeakFound& e) {
    std::fprintf(stderr, "==candela-fuzz== leak: %s\n", e.what());
    std::abort();
  } catch (const Error&) {
    // refused with a reason: what the library promises
  } catch (const std::exception& e) {
    if (strict) {
      std::fprintf(stderr, "==candela-fuzz== refused with %s, not a candela::Error: %s\n", typeid(e).name(), e.what());
      std::abort();
    }
  }
  return 0;
}

}  // namespace candela::fuzz

// One harness: CANDELA_FUZZ_TARGET(feed_npy)
#define CANDELA_FUZZ_TARGET(feed)                                                            \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {                                       \
    at::set_num_threads(1); /* one input at a time; the machine is shared */                 \
    return 0;                                                                                \
  }                                                                                          \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {                  \
    return ::candela::fuzz::run_one(::candela::fuzz::feed, data, size);                      \
  }
