// Cost of the rule-based methods against one plain forward + backward pass, measured in the
// same run on resnet18 at 224x224 (one image, and a batch of 8):
//   ratio = method's wall time / (forward + backward of the target's logit, parameters
//   requiring grad as every Candela gradient pass does)
// LRP composites, DeepLIFT (which runs inputs and references together: 2x the rows),
// guided backprop, and the plain gradient through Candela (saliency) for scale.
//
//   build/bin/bench_rules [--threads N] [--repeats R]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include <torch/autograd.h>

#include "bench_util.h"
#include "candela/candela.h"

using namespace candela;
using candela::bench::best_of;
using candela::bench::Clock;
using candela::bench::since;

namespace {

// TorchScript profiles a new graph over its first runs before optimising it.
constexpr int kWarmup = 3;


// One forward pass and the input gradient of the target logit (what a gradient method pays),
// the model in eval mode with its parameters requiring grad, as Candela runs it.
double plain_pass(const Model& m, const at::Tensor& x, int repeats) {
  auto* mod = m.module();
  mod->eval();
  for (auto p : mod->parameters()) p.set_requires_grad(true);
  double best = 1e30;
  for (int r = 0; r < repeats + kWarmup; ++r) {  // the first runs warm the JIT up
    at::Tensor in = x.detach().requires_grad_(true);
    auto t = Clock::now();
    at::Tensor out = m.forward(in);
    torch::autograd::grad({out.select(1, 3).sum()}, {in});
    if (r >= kWarmup) best = std::min(best, since(t));
  }
  for (auto p : mod->parameters()) p.set_requires_grad(false);
  return best;
}

double method_time(const Model& m, const at::Tensor& x, const std::string& name, const nlohmann::json& opts,
                   int repeats) {
  auto e = Registry::builtin().create(name, opts);
  ExplainRequest r;
  r.inputs = x;
  r.target = Target::index(3);
  return best_of(repeats, kWarmup, [&] { e->explain(m, r); });
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = candela::bench::parse_args(argc, argv);
  const int threads = args.threads;
  const int repeats = args.repeats;
  try {
    Model resnet = Model::load(candela::bench::fixture("resnet18.pt"));
    std::printf("bench_rules: resnet18 224x224, %d threads, best of %d after %d warm-up runs\n", threads, repeats, kWarmup);
    for (int64_t batch : {1, 8}) {
      at::Tensor x = at::randn({batch, 3, 224, 224}, at::detail::createCPUGenerator(0));
      const double plain = plain_pass(resnet, x, repeats);
      std::printf("batch %lld: plain forward+backward %.3f s\n", static_cast<long long>(batch), plain);
      struct Row {
        const char* label;
        const char* method;
        nlohmann::json options;
      };
      for (const Row& row : {Row{"saliency (plain gradient)", "saliency", nlohmann::json::object()},
                             Row{"lrp epsilon_gamma_box", "lrp", {{"composite", "epsilon_gamma_box"}}},
                             Row{"lrp epsilon_plus", "lrp", {{"composite", "epsilon_plus"}}},
                             Row{"lrp epsilon_alpha2_beta1", "lrp", {{"composite", "epsilon_alpha2_beta1"}}},
                             Row{"guided_backprop", "guided_backprop", nlohmann::json::object()},
                             Row{"deep_lift (2x rows)", "deep_lift", nlohmann::json::object()}}) {
        const double t = method_time(resnet, x, row.method, row.options, repeats);
        std::printf("  %-28s %7.3f s  ratio %.2f\n", row.label, t, t / plain);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rules: %s\n", e.what());
    return 1;
  }
  return 0;
}
