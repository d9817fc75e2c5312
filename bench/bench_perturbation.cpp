// Overhead of the perturbation methods over their forward passes:
//   ratio = wall time / (model evaluations x best per-sample forward time measured here)
// for occlusion, RISE and LIME on resnet18 224x224 (one image) and KernelSHAP on the MLP.
//
//   build/bin/bench_perturbation [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "bench_util.h"
#include "candela/candela.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"

using namespace candela;
using candela::bench::Clock;
using candela::bench::since;

namespace {


double best_forward(const Model& m, const at::Tensor& sample, std::initializer_list<int64_t> batches) {
  double best = 1e30;
  at::NoGradGuard no_grad;
  for (int64_t b : batches) {
    std::vector<int64_t> shape = {b};
    shape.insert(shape.end(), sample.sizes().begin(), sample.sizes().end());
    at::Tensor x = sample.unsqueeze(0).expand(shape).contiguous();
    for (int r = 0; r < 3; ++r) {
      auto t = Clock::now();
      m.forward(x);
      best = std::min(best, since(t) / b);
    }
  }
  return best;
}

void report(const char* what, const Model& m, ExplainRequest r, const std::string& method, const nlohmann::json& opts,
            double per) {
  auto e = Registry::builtin().create(method, opts);
  double wall = 1e30;
  int64_t evals = 0;
  for (int i = 0; i < 2; ++i) {
    auto t = Clock::now();
    auto a = e->explain(m, r);
    wall = std::min(wall, since(t));
    evals = a.model_evaluations;
  }
  std::printf("  %-34s %8lld evals %8.3f s  ratio %.3f\n", what, (long long)evals, wall, wall / (evals * per));
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = candela::bench::parse_args(argc, argv);
  const int threads = args.threads;
  const std::string dir = CANDELA_FIXTURE_DIR;
  try {
    Model resnet = Model::load(dir + "/resnet18.pt");
    at::Tensor img = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
    const double per = best_forward(resnet, img[0], {1, 4, 8, 16});
    std::printf("bench_perturbation: %d threads\nresnet18 224x224: best forward %.2f ms/sample\n", threads, per * 1e3);
    ExplainRequest r;
    r.inputs = img;
    r.target = Target::index(3);
    report("occlusion (3x15x15 windows, stride 8)", resnet, r, "occlusion", nlohmann::json::object(), per);
    report("rise (256 masks)", resnet, r, "rise", {{"n_masks", 256}}, per);
    ExplainRequest lr = r;
    lr.feature_mask = at::arange(64).view({8, 8}).repeat_interleave(28, 0).repeat_interleave(28, 1);
    report("lime (256 samples, 64 superpixels)", resnet, lr, "lime", {{"num_samples", 256}}, per);

    Model mlp = Model::load(dir + "/breast_cancer_mlp.pt");
    at::Tensor rows = read_npy(dir + "/breast_cancer_test.npy").slice(0, 0, 8);
    const double per_mlp = best_forward(mlp, rows[0], {256, 1024, 4096});
    std::printf("breast-cancer MLP: best forward %.4f ms/sample\n", per_mlp * 1e3);
    ExplainRequest kr;
    kr.inputs = rows;
    kr.target = Target::index(1);
    kr.baseline = Baseline::distribution(read_npy(dir + "/breast_cancer_train.npy").slice(0, 0, 20));
    report("kernel_shap (8 rows, 200 samples)", mlp, kr, "kernel_shap", {{"n_samples", 200}}, per_mlp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_perturbation: %s\n", e.what());
    return 1;
  }
  return 0;
}
