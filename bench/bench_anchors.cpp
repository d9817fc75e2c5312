// Anchors and RuleFit on the breast-cancer MLP (30 columns, training rows as the background).
//
// Anchors with alibi's AnchorTabular.explain defaults (threshold 0.95, delta 0.1, tau 0.15,
// batch_size 100, coverage_samples 10000, beam_size 1, quartiles): per row, the model calls (the
// perturbations the model saw) and the wall time; and the time the same number of MLP rows takes in
// plain forward batches of 100 (what the bandit's calls cost at the least), so the rest is the
// search's own overhead. RuleFit with its defaults over the training rows: wall time, rules, R^2.
//
//   build/bin/bench_anchors [--threads N] [--repeats R] [--rows N]
#include <cstdio>
#include <cstring>

#include "bench_util.h"
#include "candela/candela.h"
#include "candela/io/npy.h"

using namespace candela;
using namespace candela::bench;

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, 1,
                         "usage: bench_anchors [--threads N] [--repeats R] [--rows N]\n\n"
                         "Anchors (alibi's defaults) per row and RuleFit on the breast-cancer MLP.\n\n"
                         "example:\n  build/bin/bench_anchors --threads 2 --rows 10\n");
  int64_t rows = 10;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoll(argv[++i]);
  ::setenv("CANDELA_NO_BATCH_MEASURE", "1", 1);

  Model mlp = Model::load(fixture("breast_cancer_mlp.pt"));
  const at::Tensor xt = read_npy(fixture("breast_cancer_test.npy")).to(at::kFloat).slice(0, 0, rows).contiguous();
  const at::Tensor bg = read_npy(fixture("breast_cancer_train.npy")).to(at::kFloat);
  auto anchors = Registry::builtin().create("anchors", {});

  double total_time = 1e30;
  Attribution best;
  for (int r = 0; r < args.repeats; ++r) {
    ExplainRequest req;
    req.inputs = xt;
    req.baseline = Baseline::distribution(bg);
    const auto t = Clock::now();
    Attribution a = anchors->explain(mlp, req);
    const double s = since(t);
    if (s < total_time) total_time = s, best = a;
  }
  std::printf("breast-cancer MLP, %lld rows, %d threads, anchors with alibi's defaults\n", (long long)rows,
              args.threads);
  std::printf("  %-4s %-9s %-9s %-8s %-6s %s\n", "row", "calls", "precision", "coverage", "size", "rule");
  int64_t calls = 0, successes = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const auto& an = best.extra["anchors"][i];
    calls += an["model_calls"].get<int64_t>();
    successes += an["success"].get<bool>();
    std::printf("  %-4lld %-9lld %-9.3f %-8.3f %-6zu %s\n", (long long)i, (long long)an["model_calls"].get<int64_t>(),
                an["precision"].get<double>(), an["coverage"].get<double>(), an["conditions"].size(),
                an["rule"].get<std::string>().c_str());
  }
  // The same number of MLP rows in plain forward batches of 100.
  double forward_time = 1e30;
  {
    at::NoGradGuard g;
    const at::Tensor batch = bg.slice(0, 0, 100).contiguous();
    const int64_t batches = (calls + 99) / 100;
    for (int r = 0; r < 3; ++r) {
      const auto t = Clock::now();
      for (int64_t b = 0; b < batches; ++b) mlp.forward(batch);
      forward_time = std::min(forward_time, since(t));
    }
  }
  std::printf("  per row: %.0f model calls, %.3f s (all rows %.3f s); %lld of %lld anchors reach 0.95\n",
              static_cast<double>(calls) / rows, total_time / rows, total_time, (long long)successes, (long long)rows);
  std::printf("  the same %lld MLP rows in plain forward batches of 100: %.3f s (%.0f%% of the wall time)\n",
              (long long)calls, forward_time, 100.0 * forward_time / total_time);

  // ---- RuleFit over the training rows ----
  auto rulefit = Registry::builtin().create("rulefit", {});
  double rf_time = 1e30;
  Attribution rf;
  for (int r = 0; r < args.repeats; ++r) {
    ExplainRequest req;
    req.inputs = bg;
    const auto t = Clock::now();
    Attribution a = rulefit->explain(mlp, req);
    const double s = since(t);
    if (s < rf_time) rf_time = s, rf = a;
  }
  std::printf("RuleFit (defaults) on %lld training rows: %.3f s, %lld candidate rules from %lld trees, %zu terms "
              "kept, alpha %.4g, R^2 %.3f, agreement %.3f\n",
              (long long)bg.size(0), rf_time, (long long)rf.extra["candidate_rules"].get<int64_t>(),
              (long long)rf.extra["trees"].get<int64_t>(), rf.extra["terms"].size(), rf.extra["alpha"].get<double>(),
              rf.extra["fidelity"]["r2"].get<double>(), rf.extra["fidelity"]["agreement"].get<double>());
  if (!rf.extra["terms"].empty())
    std::printf("  top term: %s (coefficient %.3f, support %.3f)\n", rf.extra["terms"][0]["rule"].get<std::string>().c_str(),
                rf.extra["terms"][0]["coefficient"].get<double>(), rf.extra["terms"][0]["support"].get<double>());
  return 0;
}
