// CAM benchmarks on resnet18 224x224, batch 1 (issue: layer taps and the CAM family).
//  1. Ablation-CAM at layer4: suffix execution (one prefix, 512 suffix runs) against full
//     forward passes of the whole network for every ablated channel (what pytorch-grad-cam does).
//  2. Score-CAM at layer4: wall time / (its 513 forward passes x the best per-sample forward
//     time measured here over several batch sizes).
//
//   build/bin/bench_cam [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

namespace {


Attribution timed(const std::string& method, const nlohmann::json& options, const Model& m, const at::Tensor& x,
                  double& wall, int repeats) {
  auto e = Registry::builtin().create(method, options);
  ExplainRequest r;
  r.inputs = x;
  r.target = Target::index(3);
  Attribution a;
  wall = 1e30;
  for (int i = 0; i < repeats; ++i) {
    auto t = Clock::now();
    a = e->explain(m, r);
    wall = std::min(wall, since(t));
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = candela::bench::parse_args(argc, argv);
  const int threads = args.threads;
  try {
    Model m = Model::load(candela::bench::fixture("resnet18.pt"));
    at::Tensor x = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
    double warm;
    timed("grad_cam", {{"layers", {"layer4"}}}, m, x, warm, 2);  // warm-up

    double suffix_wall, full_wall;
    auto suffix = timed("ablation_cam", {{"layers", {"layer4"}}}, m, x, suffix_wall, 2);
    auto full = timed("ablation_cam", {{"layers", {"layer4"}}, {"suffix_execution", false}}, m, x, full_wall, 1);
    double diff = (suffix.values - full.values).abs().max().item<double>();
    std::printf("bench_cam: %d threads, resnet18 224x224, batch 1, layer4 (512 channels)\n", threads);
    std::printf("ablation_cam  suffix execution: %7.3f s (%lld full + %lld suffix evaluations)\n", suffix_wall,
                (long long)suffix.model_evaluations, (long long)suffix.extra.value("partial_evaluations", 0));
    std::printf("ablation_cam  full re-runs:     %7.3f s (%lld full evaluations)\n", full_wall,
                (long long)full.model_evaluations);
    std::printf("ablation_cam  speed-up:         %7.1fx   (max |map difference| %.2e)\n", full_wall / suffix_wall,
                diff);

    // Best per-sample forward time over batch sizes, then Score-CAM's overhead ratio.
    double best = 1e30;
    for (int64_t b : {1, 4, 8, 16, 32}) {
      at::Tensor xb = x.expand({b, 3, 224, 224}).contiguous();
      at::NoGradGuard no_grad;
      for (int r = 0; r < 2; ++r) {
        auto t = Clock::now();
        m.forward(xb);
        best = std::min(best, since(t) / b);
      }
    }
    double score_wall;
    auto score = timed("score_cam", {{"layers", {"layer4"}}}, m, x, score_wall, 2);
    std::printf("score_cam     %7.3f s, %lld forward passes, best forward %.2f ms/sample, ratio %.3f\n", score_wall,
                (long long)score.model_evaluations, best * 1e3, score_wall / (score.model_evaluations * best));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cam: %s\n", e.what());
    return 1;
  }
  return 0;
}
