// Peak memory (RSS) and wall time of whole `candela explain` runs.
//
// 1. Integrated Gradients with 200 steps on a 224x224 ResNet-50 (torchvision's definition,
//    random weights) under the default --max-memory, next to the same run at fixed batch sizes:
//    does the automatic choice keep memory bounded without costing time?
// 2. With --families: one method of each family on resnet18 under --max-memory 256, next to the
//    RSS of loading the model alone (`candela info`): which families keep to the budget?
//
// Each run is a child process; its peak RSS is the kernel's ru_maxrss from wait4(). Runs of one
// table are interleaved over the repeats, so they see the same machine load.
//
//   build/bin/bench_memory [--repeats N] [--steps 200] [--threads N] [--sizes auto,1,4,...] [--families]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "bench_util.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using candela::bench::fixture;

namespace {

struct Run {
  double seconds = 0;
  double peak_mb = 0;
  int status = 0;
};

// Runs `args` (argv[0] is the program) with stdout and stderr sent to /dev/null.
Run run(const std::vector<std::string>& args) {
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    std::FILE* null = std::fopen("/dev/null", "w");
    if (null) {
      dup2(fileno(null), STDOUT_FILENO);
      dup2(fileno(null), STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  wait4(pid, &status, 0, &usage);
  Run r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.peak_mb = usage.ru_maxrss / 1024.0;  // KiB on Linux
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 2, steps = 200, threads = 0;
  bool families = false;
  std::vector<std::string> settings = {"auto", "1", "2", "4", "10", "25", "50", "200"};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--families")) families = true;
    else if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) {
      settings.clear();
      std::string list = argv[++i];
      for (size_t a = 0, b; a <= list.size(); a = b + 1) {
        b = list.find(',', a);
        if (b == std::string::npos) b = list.size();
        if (b > a) settings.push_back(list.substr(a, b - a));
      }
    }
    else {
      std::fprintf(stderr,
                   "usage: bench_memory [--repeats N] [--steps 200] [--threads N] [--sizes auto,1,4,...] [--families]\n"
                   "example: build/bin/bench_memory --repeats 2 --sizes auto,1,2,4,10\n");
      return 2;
    }
  }
  const std::string cli = CANDELA_CLI_PATH;
  const std::string out = (fs::temp_directory_path() / ("candela-bench-memory-" + std::to_string(getpid()))).string();
  std::vector<std::string> common = {"--quiet", "--out", out};
  if (threads > 0) common.insert(common.end(), {"--threads", std::to_string(threads)});

  if (!families) {
    if (!fs::exists(fixture("resnet50.pt"))) {
      const std::string cmd = std::string(CANDELA_PYTHON) + " " + CANDELA_SOURCE_DIR +
                              "/tests/fixtures/make_fixtures.py --resnet50 --out " + CANDELA_FIXTURE_DIR;
      std::printf("making resnet50.pt: %s\n", cmd.c_str());
      if (std::system(cmd.c_str()) != 0) return 1;
    }
    std::vector<std::string> base = {cli,      "explain",  "--model", fixture("resnet50.pt"), "--input",
                                     fixture("sample_224.png"), "--method", "integrated_gradients", "--option",
                                     "n_steps=" + std::to_string(steps)};
    base.insert(base.end(), common.begin(), common.end());
    std::map<std::string, Run> best;
    for (int r = 0; r < repeats; ++r) {
      for (const auto& s : settings) {
        auto args = base;
        if (s != "auto") args.insert(args.end(), {"--batch-size", s});
        Run one = run(args);
        if (one.status != 0) std::printf("  %s: exit %d\n", s.c_str(), one.status);
        auto& b = best[s];
        if (r == 0 || one.seconds < b.seconds) b.seconds = one.seconds;
        b.peak_mb = std::max(b.peak_mb, one.peak_mb);
      }
    }
    double fastest = 1e30;  // of the fixed sizes run
    for (const auto& s : settings)
      if (s != "auto") fastest = std::min(fastest, best[s].seconds);
    std::printf("\nIG %d steps, ResNet-50 224x224, 1 image, best of %d (peak RSS: largest)\n", steps, repeats);
    std::printf("  %-28s %10s %12s %16s\n", "batch size", "wall s", "peak RSS MB", "wall / fastest");
    for (const auto& s : settings)
      std::printf("  %-28s %10.2f %12.0f %16.2f\n",
                  (s == "auto" ? std::string("automatic (default budget)") : s).c_str(), best[s].seconds,
                  best[s].peak_mb, best[s].seconds / fastest);
  } else {
    struct Family {
      std::string family, method;
      std::vector<std::string> extra;
    };
    const std::vector<Family> list = {
        {"gradient", "integrated_gradients", {"--option", "n_steps=64"}},
        {"gradient", "noise_tunnel", {"--option", "nt_samples=16"}},
        {"cam", "grad_cam", {"--layer", "layer4"}},
        {"cam", "score_cam", {"--layer", "layer4", "--option", "top_k=64"}},
        {"layer", "layer_integrated_gradients", {"--layer", "layer3", "--option", "n_steps=32"}},
        {"propagation", "lrp", {"--composite", "epsilon_gamma_box"}},
        {"propagation", "deep_lift", {}},
        {"perturbation", "occlusion", {"--option", "sliding_window_shapes=3,32,32", "--option", "strides=3,16,16"}},
        {"perturbation", "rise", {"--option", "n_masks=256"}},
        {"perturbation", "lime", {"--features", "slic:25", "--option", "num_samples=128"}},
        {"perturbation", "kernel_shap", {"--features", "grid:32", "--option", "n_samples=128"}},
    };
    Run load = run({cli, "info", fixture("resnet18.pt")});
    std::map<std::string, Run> best;
    for (int r = 0; r < repeats; ++r) {
      for (const auto& f : list) {
        std::vector<std::string> args = {cli,       "explain",     "--model", fixture("resnet18.pt"), "--input",
                                         fixture("sample_224.png"), "--method", f.method, "--max-memory", "256"};
        args.insert(args.end(), f.extra.begin(), f.extra.end());
        args.insert(args.end(), common.begin(), common.end());
        Run one = run(args);
        if (one.status != 0) std::printf("  %s: exit %d\n", f.method.c_str(), one.status);
        auto& b = best[f.method];
        if (r == 0 || one.seconds < b.seconds) b.seconds = one.seconds;
        b.peak_mb = std::max(b.peak_mb, one.peak_mb);
      }
    }
    std::printf("\nresnet18 224x224, 1 image, --max-memory 256; loading the model alone (candela info): %.0f MB\n",
                load.peak_mb);
    std::printf("  %-14s %-28s %10s %12s %18s\n", "family", "method", "wall s", "peak RSS MB", "RSS - load, MB");
    for (const auto& f : list)
      std::printf("  %-14s %-28s %10.2f %12.0f %18.0f%s\n", f.family.c_str(), f.method.c_str(), best[f.method].seconds,
                  best[f.method].peak_mb, best[f.method].peak_mb - load.peak_mb,
                  best[f.method].peak_mb - load.peak_mb > 256 ? "  over" : "");
  }
  std::error_code ec;
  fs::remove_all(out, ec);
  return 0;
}
