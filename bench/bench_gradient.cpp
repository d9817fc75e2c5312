// Overhead of the gradient methods over the model evaluations they need.
//
// For each model it first measures the best per-sample forward+backward time over a range
// of batch sizes, then runs IG and SmoothGrad at each batch size the evaluator may pick and
// reports   ratio = wall time / (model evaluations x best per-sample forward+backward time).
// A ratio near 1 means Candela adds nothing measurable on top of the model's own work.
//
//   build/bin/bench_gradient [--quick] [--threads N]
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best time per sample of one forward+backward of the target score, over batch sizes.
double best_per_sample(const Model& m, const at::Tensor& sample, const std::vector<int64_t>& batches, int repeats) {
  double best = 1e30;
  for (int64_t b : batches) {
    at::Tensor x = sample.expand({b, -1, -1, -1}).contiguous();
    if (sample.dim() == 2) x = sample.expand({b, -1}).contiguous();
    for (int r = 0; r < repeats; ++r) {
      auto t = Clock::now();
      at::Tensor xi = x.detach().requires_grad_(true);
      at::Tensor y = m.forward(xi).select(1, 0).sum();
      auto g = torch::autograd::grad({y}, {xi});
      best = std::min(best, seconds_since(t) / b);
    }
  }
  return best;
}

void run_model(const std::string& title, const Model& m, const at::Tensor& sample, const std::vector<int64_t>& batches,
               int repeats, int64_t n_steps, int64_t nt_samples) {
  // Warm up (allocator, OpenMP team, TorchScript profiling executor).
  best_per_sample(m, sample, {batches.front()}, 2);
  const double per = best_per_sample(m, sample, batches, repeats);
  std::printf("\n%s: best forward+backward per sample %.3f ms\n", title.c_str(), per * 1e3);
  std::printf("  %-30s %6s %8s %10s %7s\n", "method", "batch", "evals", "wall s", "ratio");
  struct Case {
    std::string name;
    nlohmann::json options;
  };
  std::vector<Case> cases = {
      {"integrated_gradients", {{"n_steps", n_steps}}},
      {"noise_tunnel", {{"nt_samples", nt_samples}, {"stdevs", 0.1}}},  // SmoothGrad on saliency
  };
  at::Tensor x = sample.unsqueeze(0).contiguous();
  for (const auto& c : cases) {
    for (int64_t b : batches) {
      auto e = Registry::builtin().create(c.name, c.options);
      ExplainRequest r;
      r.inputs = x;
      r.target = Target::index(0);
      r.eval.max_batch_size = b;
      double wall = 1e30;
      int64_t evals = 0;
      for (int rep = 0; rep < repeats; ++rep) {
        auto t = Clock::now();
        auto a = e->explain(m, r);
        wall = std::min(wall, seconds_since(t));
        evals = a.model_evaluations;
      }
      std::printf("  %-30s %6lld %8lld %10.3f %7.3f\n", c.name.c_str(), (long long)b, (long long)evals, wall,
                  wall / (evals * per));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
  }
  at::set_num_threads(threads);
  std::printf("bench_gradient: %d threads%s\n", threads, quick ? " (quick)" : "");
  const std::string dir = CANDELA_FIXTURE_DIR;
  try {
    Model mlp = Model::load(dir + "/breast_cancer_mlp.pt");
    at::Tensor row = read_npy(dir + "/breast_cancer_test.npy")[0];
    run_model("breast_cancer_mlp", mlp, row, {8, 26, 52, 104, 256}, quick ? 3 : 20, 50, 50);
    Model resnet = Model::load(dir + "/resnet18.pt");
    at::Tensor img = at::randn({3, 224, 224}, at::detail::createCPUGenerator(0));
    run_model("resnet18 224x224", resnet, img, quick ? std::vector<int64_t>{4} : std::vector<int64_t>{1, 4, 8, 16},
              quick ? 1 : 2, quick ? 8 : 50, quick ? 4 : 16);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gradient: %s\n", e.what());
    return 1;
  }
  return 0;
}
