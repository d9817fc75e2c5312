// Accuracy per model evaluation of the Shapley estimators, against exact Shapley values.
//
// On the breast-cancer MLP fixture, 30 features in 12 contiguous groups, a background of
// 20 training rows: exact_shapley (2^12 - 2 coalitions x 20 rows per input) is the truth.
// For shapley_value_sampling (plain and antithetic) and kernel_shap at growing sample counts
// it prints the RMS error over rows, groups and seeds against the evaluations per input,
// then how many evaluations each needs for the error of plain permutation sampling
// (log-log interpolation of plain sampling's curve), and the time of kernel_shap on 8 rows.
//
//   build/bin/bench_shapley [--quick] [--threads N] [--rows N] [--seeds N]
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;
using Clock = std::chrono::steady_clock;

namespace {

struct Point {
  std::string method, setting;
  double evals = 0, error = 0, reported = 0;
};

// RMS over rows and groups of (estimate - exact); values are per element, so take one
// element per group (the first).
double rms(const at::Tensor& a, const at::Tensor& exact, const std::vector<int64_t>& first) {
  at::Tensor idx = at::tensor(first, at::kLong);
  at::Tensor d = (a.index_select(1, idx) - exact.index_select(1, idx)).to(at::kDouble);
  return std::sqrt(d.pow(2).mean().item<double>());
}

double mean_se(const nlohmann::json& se) {
  double s = 0;
  int64_t n = 0;
  for (const auto& row : se)
    for (const auto& v : row)
      if (v.is_number()) s += v.get<double>(), ++n;
  return n ? s / n : NAN;
}

// Evaluations plain sampling needs for error `e`, interpolated in log-log (extrapolated with
// the 1/sqrt(n) rate outside its range).
double plain_evals_for(const std::vector<Point>& plain, double e) {
  for (size_t k = 0; k + 1 < plain.size(); ++k) {
    const Point &a = plain[k], &b = plain[k + 1];
    if ((e <= a.error && e >= b.error) || (e >= a.error && e <= b.error)) {
      double t = (std::log(e) - std::log(a.error)) / (std::log(b.error) - std::log(a.error));
      return std::exp(std::log(a.evals) + t * (std::log(b.evals) - std::log(a.evals)));
    }
  }
  const Point& ref = e < plain.back().error ? plain.back() : plain.front();
  return ref.evals * std::pow(ref.error / e, 2.0);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t rows = 4, seeds = 5;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true, seeds = 2, rows = 2;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = std::atoll(argv[++i]);
  }
  at::set_num_threads(threads);
  std::printf("bench_shapley: %d threads, %lld rows, %lld seeds%s\n", threads, (long long)rows, (long long)seeds,
              quick ? " (quick)" : "");
  const std::string dir = CANDELA_FIXTURE_DIR;
  try {
    Model mlp = Model::load(dir + "/breast_cancer_mlp.pt");
    const at::Tensor test = read_npy(dir + "/breast_cancer_test.npy");
    const at::Tensor x = test.slice(0, 0, rows).contiguous();
    const at::Tensor background = read_npy(dir + "/breast_cancer_train.npy").slice(0, 0, 20).contiguous();
    const int64_t d = x.size(1), groups = 12;
    const at::Tensor mask = at::arange(d, at::kLong).mul(groups).div(d, "floor");  // contiguous, sizes 2-3
    std::vector<int64_t> first(groups, -1);
    for (int64_t j = 0; j < d; ++j)
      if (first[mask[j].item<int64_t>()] < 0) first[mask[j].item<int64_t>()] = j;

    ExplainRequest req;
    req.inputs = x;
    req.target = Target::top1();
    req.baseline = Baseline::distribution(background);
    req.feature_mask = mask;

    auto t0 = Clock::now();
    const Attribution exact = ExactShapley().explain(mlp, req);
    std::printf("\nexact_shapley: %d features in %lld groups, %lld background rows: %.0f evaluations per row, %.3f s; "
                "max |delta| %.2e\n",
                (int)d, (long long)groups, (long long)background.size(0), double(exact.model_evaluations) / rows,
                std::chrono::duration<double>(Clock::now() - t0).count(),
                exact.convergence_delta.abs().max().item<double>());

    auto sweep = [&](const std::string& method, const std::string& label, const std::string& key,
                     const std::vector<int64_t>& counts, nlohmann::json base) {
      std::vector<Point> out;
      for (int64_t c : counts) {
        Point p{method, label + " " + key + "=" + std::to_string(c)};
        for (int64_t s = 0; s < seeds; ++s) {
          nlohmann::json o = base;
          o[key] = c;
          o["seed"] = s;
          Registry r;
          register_shapley_methods(r);
          const Attribution a = r.create(method, o)->explain(mlp, req);
          p.evals += double(a.model_evaluations) / rows / seeds;
          p.error += std::pow(rms(a.values, exact.values, first), 2) / seeds;
          p.reported += mean_se(a.extra["standard_error"]) / seeds;
        }
        p.error = std::sqrt(p.error);
        out.push_back(p);
      }
      return out;
    };
    const std::vector<int64_t> perms = quick ? std::vector<int64_t>{4, 16, 64} : std::vector<int64_t>{2, 4, 8, 16, 32, 64, 128};
    const std::vector<int64_t> coals = quick ? std::vector<int64_t>{50, 200, 800}
                                             : std::vector<int64_t>{26, 50, 100, 200, 400, 800, 1600};
    auto plain = sweep("shapley_value_sampling", "plain", "n_samples", perms, {});
    auto anti = sweep("shapley_value_sampling", "antithetic", "n_samples", perms, {{"antithetic", true}});
    auto kernel = sweep("kernel_shap", "kernel", "n_samples", coals, {});

    std::printf("\n  %-24s %-26s %12s %12s %12s %14s\n", "method", "setting", "evals/row", "rms error", "mean SE",
                "plain evals*");
    for (const auto* set : {&plain, &anti, &kernel}) {
      for (const auto& p : *set) {
        std::printf("  %-24s %-26s %12.0f %12.3e %12.3e %14.0f\n", p.method.c_str(), p.setting.c_str(), p.evals,
                    p.error, p.reported, plain_evals_for(plain, p.error));
      }
    }
    std::printf("  * evaluations plain permutation sampling needs for the same rms error (log-log interpolation)\n");
    for (const auto& [name, set] : {std::pair{"antithetic", &anti}, std::pair{"kernel_shap", &kernel}}) {
      std::vector<double> ratios;
      for (const auto& p : *set)
        if (p.error > 1e-12) ratios.push_back(p.evals / plain_evals_for(plain, p.error));
      std::sort(ratios.begin(), ratios.end());
      if (!ratios.empty())
        std::printf("  %-12s evaluations relative to plain sampling at equal error: median %.2f (range %.2f .. %.2f)\n",
                    name, ratios[ratios.size() / 2], ratios.front(), ratios.back());
    }

    // kernel_shap on 8 rows, n_samples = 200.
    ExplainRequest eight = req;
    eight.inputs = test.slice(0, 0, 8).contiguous();
    KernelShap ks({.n_samples = 200});
    ks.explain(mlp, eight);  // warm up
    double best = 1e30;
    Attribution k8;
    for (int rep = 0; rep < (quick ? 2 : 5); ++rep) {
      auto t = Clock::now();
      k8 = ks.explain(mlp, eight);
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());
    }
    std::printf("\nkernel_shap, 8 rows, n_samples=200, 20 background rows: %.4f s (best of %d), %lld evaluations, "
                "largest batch %lld\n",
                best, quick ? 2 : 5, (long long)k8.model_evaluations, (long long)k8.batch_size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_shapley: %s\n", e.what());
    return 1;
  }
  return 0;
}
