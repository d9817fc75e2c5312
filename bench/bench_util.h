// What the benchmarks share: a wall clock, and the flags every one takes.
#pragma once

#include <ATen/Parallel.h>

#include "candela/core/memory.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

namespace candela::bench {

using Clock = std::chrono::steady_clock;
inline double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The fastest of `repeats` timed calls of `f`, after `warmup` untimed ones, in seconds.
template <class F>
double best_of(int repeats, int warmup, F&& f) {
  double best = 1e30;
  for (int i = 0; i < repeats + warmup; ++i) {
    auto t = Clock::now();
    f();
    if (i >= warmup) best = std::min(best, since(t));
  }
  return best;
}

// A file of the build's test fixtures (build/fixtures), e.g. fixture("resnet18.pt").
inline std::string fixture(const std::string& name) {
  return (std::filesystem::path(CANDELA_FIXTURE_DIR) / name).string();
}

// Turns one of Candela's CANDELA_NO_* switches on (`off` = true sets it) or back off.
inline void switch_off(const char* variable, bool off) {
  if (off) ::setenv(variable, "1", 1);
  else ::unsetenv(variable);
}

// --threads N (default: every core) and --repeats R; other flags are left to the caller. Sets the
// intra-op thread count.
struct Args {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int repeats = 3;
};
// `usage`: what --help prints (the benchmark's flags and an example); every benchmark answers --help
// without running.
inline Args parse_args(int argc, char** argv, int default_repeats = 3, const char* usage = nullptr) {
  Args a;
  a.repeats = default_repeats;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      if (usage) std::printf("%s", usage);
      else std::printf("usage: %s [--threads N] [--repeats R]\n\nexample:\n  %s --threads 2 --repeats 3\n", argv[0], argv[0]);
      std::exit(0);
    }
  }
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) a.threads = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) a.repeats = std::max(1, std::atoi(argv[++i]));
  }
  at::set_num_threads(a.threads);
  reuse_freed_memory();  // as the CLI does; CANDELA_NO_MEMORY_REUSE=1 to compare without
  return a;
}

}  // namespace candela::bench
