// Overhead of the gradient methods over the model evaluations they need.
//
// For each model it measures the best per-sample time of a plain forward+backward at each
// batch size, then runs IG and SmoothGrad with the evaluator fixed to that batch size and
// reports  ratio = wall time / (model evaluations x per-sample forward+backward time),
// against the same batch size (Candela's own overhead) and against the best batch size
// (what a user pays compared with the fastest possible evaluation).
//
//   build/bin/bench_gradient [--quick] [--threads N]
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best time per sample of one plain forward+backward of the target score at batch size b.
double per_sample(const Model& m, const at::Tensor& sample, int64_t b, int repeats) {
  std::vector<int64_t> shape = {b};
  shape.insert(shape.end(), sample.sizes().begin(), sample.sizes().end());
  at::Tensor x = sample.unsqueeze(0).expand(shape).contiguous();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t = Clock::now();
    at::Tensor xi = x.detach().requires_grad_(true);
    at::Tensor y = m.forward(xi).select(1, 0).sum();
    auto g = torch::autograd::grad({y}, {xi});
    best = std::min(best, seconds_since(t) / b);
  }
  return best;
}

struct Case {
  std::string name;
  nlohmann::json options;
};

// Explains `inputs` at each batch size and prints the overhead ratios. The plain
// forward+backward and the explanation are timed alternately, so both see the same
// machine load; each keeps its best time over the repeats.
void run_model(const std::string& title, const Model& m, const at::Tensor& inputs, const std::vector<int64_t>& batches,
               int repeats, const std::vector<Case>& cases) {
  // The model runs with its parameters requiring grad, as in the evaluator (see ModelGuard).
  for (auto p : m.module()->parameters()) p.set_requires_grad(true);
  per_sample(m, inputs[0], batches.front(), 3);  // warm up: allocator, OpenMP team, oneDNN kernels
  std::printf("\n%s, %lld inputs\n", title.c_str(), (long long)inputs.size(0));
  std::printf("  %-22s %6s %8s %9s %14s %12s %12s\n", "method", "batch", "evals", "wall s", "f+b/sample ms",
              "ratio(same)", "ratio(best)");
  for (const auto& c : cases) {
    std::map<int64_t, std::pair<double, double>> result;  // batch -> (wall, per-sample)
    std::map<int64_t, int64_t> evals;
    for (int64_t b : batches) {
      auto e = Registry::builtin().create(c.name, c.options);
      ExplainRequest r;
      r.inputs = inputs;
      r.target = Target::index(0);
      r.eval.max_batch_size = b;
      double wall = 1e30, per = 1e30;
      for (int rep = 0; rep < repeats; ++rep) {
        per = std::min(per, per_sample(m, inputs[0], b, 1));
        auto t = Clock::now();
        auto a = e->explain(m, r);
        wall = std::min(wall, seconds_since(t));
        evals[b] = a.model_evaluations;
      }
      result[b] = {wall, per};
    }
    double best = 1e30;
    for (auto& [b, wp] : result) best = std::min(best, wp.second);
    for (auto& [b, wp] : result)
      std::printf("  %-22s %6lld %8lld %9.4f %14.4f %12.3f %12.3f\n", c.name.c_str(), (long long)b,
                  (long long)evals[b], wp.first, wp.second * 1e3, wp.first / (evals[b] * wp.second),
                  wp.first / (evals[b] * best));
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
    // Captum's defaults: IG with 50 steps; SmoothGrad (noise tunnel over saliency) with the
    // sample count that gives the same number of evaluations.
    Model mlp = Model::load(dir + "/breast_cancer_mlp.pt");
    at::Tensor rows = read_npy(dir + "/breast_cancer_test.npy");
    run_model("breast_cancer_mlp", mlp, rows, {64, 256, 1024, 4096}, quick ? 3 : 30,
              {{"integrated_gradients", {{"n_steps", 50}}},
               {"noise_tunnel", {{"nt_samples", 50}, {"stdevs", 0.1}}}});
    Model resnet = Model::load(dir + "/resnet18.pt");
    at::Tensor img = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
    const int64_t steps = quick ? 8 : 50;
    run_model("resnet18 224x224", resnet, img, quick ? std::vector<int64_t>{4} : std::vector<int64_t>{1, 4, 8, 16},
              quick ? 1 : 2,
              {{"integrated_gradients", {{"n_steps", steps}}},
               {"noise_tunnel", {{"nt_samples", steps}, {"stdevs", 0.1}}}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gradient: %s\n", e.what());
    return 1;
  }
  return 0;
}
