// Evaluations that adaptive Integrated Gradients needs to reach the completeness error of
// plain 50-step Riemann (trapezoid) IG, sample by sample, on the fixture models.
// Gauss-Legendre is shown too: the smallest n_steps (from a ladder) that reaches the same error.
//
//   build/bin/bench_adaptive_ig
#include <ATen/Parallel.h>

#include <cstdio>
#include <thread>

#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;

namespace {

struct Run {
  double rel_error;  // |delta| / |f(x) - f(b)|
  int64_t evals;
};

Run explain_one(const Model& m, const at::Tensor& x, IntegratedGradients::Options o) {
  ExplainRequest r;
  r.inputs = x;
  r.target = Target::top1();
  auto a = IntegratedGradients(o).explain(m, r);
  at::NoGradGuard g;
  double fx = a.output[0][a.targets[0]].item<double>();
  double fb = m.forward(at::zeros_like(x))[0][a.targets[0]].item<double>();
  return {std::abs(a.convergence_delta[0].item<double>()) / std::max(std::abs(fx - fb), 1e-12), a.model_evaluations};
}

void run(const std::string& title, const Model& m, const at::Tensor& data, int64_t count) {
  double riemann_evals = 0, adaptive_evals = 0, gl_evals = 0, riemann_err = 0, adaptive_err = 0;
  int64_t n = std::min<int64_t>(count, data.size(0));
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor x = data.slice(0, i, i + 1);
    Run plain = explain_one(m, x, {.n_steps = 50, .method = "riemann_trapezoid"});
    double tol = std::max(plain.rel_error, 1e-6);
    Run adaptive = explain_one(m, x, {.method = "adaptive", .tolerance = std::min(tol, 0.5), .max_steps = 4096});
    Run gl{0, 0};
    for (int64_t steps : {2, 4, 8, 16, 32, 64, 128, 256}) {
      gl = explain_one(m, x, {.n_steps = steps});
      if (gl.rel_error <= tol) break;
    }
    riemann_evals += plain.evals;
    adaptive_evals += adaptive.evals;
    gl_evals += gl.evals;
    riemann_err += plain.rel_error;
    adaptive_err += adaptive.rel_error;
  }
  std::printf("%-20s %4lld samples | riemann_trapezoid(50): %6.1f evals, mean rel. error %.2e | "
              "adaptive: %6.1f evals (%.2fx fewer), mean rel. error %.2e | gausslegendre: %6.1f evals\n",
              title.c_str(), (long long)n, riemann_evals / n, riemann_err / n, adaptive_evals / n,
              riemann_evals / adaptive_evals, adaptive_err / n, gl_evals / n);
}

}  // namespace

int main() {
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const std::string dir = CANDELA_FIXTURE_DIR;
  try {
    run("breast_cancer_mlp", Model::load(dir + "/breast_cancer_mlp.pt"), read_npy(dir + "/breast_cancer_test.npy"), 40);
    run("digits_cnn", Model::load(dir + "/digits_cnn.pt"), read_npy(dir + "/digits_test.npy"), 16);
    run("linear", Model::load(dir + "/linear.pt"), at::randn({8, 5}, at::detail::createCPUGenerator(0)), 8);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_adaptive_ig: %s\n", e.what());
    return 1;
  }
  return 0;
}
