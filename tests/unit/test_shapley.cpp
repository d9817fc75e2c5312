// Known answers for the Shapley-value methods: exact_shapley, shapley_value_sampling and
// kernel_shap, on plain batched functions (Model::from_function) in double precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "test_util.h"

using namespace candela;
using candela::testing::rel_error;

namespace {

const auto kD = at::TensorOptions().dtype(at::kDouble);

// f(x) = [g(x), -g(x)] for a scalar function g of the rows, so targets and top-1 work.
Model two_class(std::function<at::Tensor(const at::Tensor&)> g, int64_t width) {
  InputSpec spec;
  spec.shape = {width};
  spec.layout = "NC";
  return Model::from_function(
      [g](const at::Tensor& x) {
        at::Tensor s = g(x);
        return at::stack({s, -s}, 1);
      },
      spec);
}

Attribution run(const Explainer& e, const Model& m, const at::Tensor& x, Baseline base = Baseline::zeros(),
                at::Tensor mask = {}, int64_t batch = 0, Target t = Target::index(0)) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(t);
  r.baseline = std::move(base);
  r.feature_mask = std::move(mask);
  r.eval.max_batch_size = batch;
  return e.explain(m, r);
}

// Brute force over all orderings: phi_g = mean over orderings of v(before + g) - v(before),
// v(S) = mean over background rows of g(x on S, b elsewhere). Independent of the library.
std::vector<double> brute_shapley(const std::function<at::Tensor(const at::Tensor&)>& g, const at::Tensor& x,
                                  const at::Tensor& background) {
  const int64_t d = x.size(0);
  auto v = [&](const std::vector<bool>& in) {
    at::Tensor rows = background.clone();
    for (int64_t j = 0; j < d; ++j)
      if (in[j]) rows.select(1, j).fill_(x[j].item<double>());
    return g(rows).mean().item<double>();
  };
  std::vector<int64_t> order(d);
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> phi(d, 0.0);
  int64_t count = 0;
  do {
    std::vector<bool> in(d, false);
    double prev = v(in);
    for (int64_t j : order) {
      in[j] = true;
      double cur = v(in);
      phi[j] += cur - prev;
      prev = cur;
    }
    ++count;
  } while (std::next_permutation(order.begin(), order.end()));
  for (double& p : phi) p /= count;
  return phi;
}

// Background rows: Baseline stores them in float32, so draw float-representable values.
at::Tensor background(int64_t m, int64_t d, uint64_t seed) {
  return at::randn({m, d}, at::detail::createCPUGenerator(seed)).to(at::kDouble);
}

at::Tensor row(std::vector<double> v) { return at::tensor(v, kD).unsqueeze(0); }

// A smooth saturating function from exact arithmetic (ATen's vectorised tanh differs from the
// scalar one by ~1e-9, more than these tests' tolerances).
at::Tensor soft(const at::Tensor& t) { return t / (1.0 + t * t); }

// A function of 8 inputs: additive part, a pair and a triple interaction, a smooth nonlinearity.
at::Tensor mixed(const at::Tensor& x) {
  using at::indexing::Slice;
  at::Tensor w = at::tensor({1.0, -2.0, 0.5, 1.5, -1.0, 0.25, 2.0, -0.5}, kD);
  return x.matmul(w) + 1.5 * x.select(1, 0) * x.select(1, 1) + x.select(1, 2) * x.select(1, 3) * x.select(1, 4) +
         soft(x.select(1, 5) + x.select(1, 6) * x.select(1, 7));
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

// ---- exact_shapley -------------------------------------------------------------------

TEST(ExactShapley, AdditiveFunctionGivesWeightTimesDifference) {
  const at::Tensor w = at::tensor({0.5, -1.0, 2.0, 3.0}, kD);
  auto g = [w](const at::Tensor& x) { return x.matmul(w) + 0.7; };
  Model m = two_class(g, 4);
  const at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5, -3.0, 0.0, 2.0, 1.0}, kD).view({2, 4});
  const at::Tensor b = row({0.5, 0.5, -0.5, 1.0});
  auto a = run(ExactShapley(), m, x, Baseline::tensor(b));
  EXPECT_LT(max_abs_diff(a.values, w * (x - b)), 1e-12);
  EXPECT_LT(a.convergence_delta.abs().max().item<double>(), 1e-12);
  EXPECT_EQ(a.model_evaluations, 2 * (1 + 1 + 14)) << "f(x), f(b) and 2^4 - 2 coalitions per input";
  EXPECT_EQ(a.targets, (std::vector<int64_t>{0, 0}));
  // A background distribution: phi_i = w_i (x_i - mean_b b_i).
  const at::Tensor bg = at::tensor({0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 0.0, 1.0, 2.0, 2.0, 2.0, -2.0}, kD).view({3, 4});
  auto d = run(ExactShapley(), m, x, Baseline::distribution(bg));
  EXPECT_LT(max_abs_diff(d.values, w * (x - bg.mean(0))), 1e-12);
  EXPECT_EQ(d.model_evaluations, 2 + 3 + 2 * 14 * 3) << "f(x), f(background), coalitions x background";
}

TEST(ExactShapley, InteractionIsSplitEquallyAndGroupsActAsOneFeature) {
  auto g = [](const at::Tensor& x) { return x.select(1, 0) * x.select(1, 1) + 2.0 * x.select(1, 2); };
  Model m = two_class(g, 3);
  const at::Tensor x = row({3.0, -2.0, 1.5});
  auto a = run(ExactShapley(), m, x);
  EXPECT_LT(max_abs_diff(a.values, row({-3.0, -3.0, 3.0})), 1e-12);
  // Features 0 and 1 as one group: the group gets the whole product, each element that value.
  auto grouped = run(ExactShapley(), m, x, Baseline::zeros(), at::tensor({0, 0, 1}, at::kLong));
  EXPECT_LT(max_abs_diff(grouped.values, row({-6.0, -6.0, 3.0})), 1e-12);
  EXPECT_EQ(grouped.extra["feature_groups"], 2);
  // Top-1 resolves at the inputs' output: class 1 (= -g) when g < 0.
  auto top = run(ExactShapley(), m, row({3.0, -2.0, 0.0}), Baseline::zeros(), {}, 0, Target::top1());
  EXPECT_EQ(top.targets, (std::vector<int64_t>{1}));
  EXPECT_LT(max_abs_diff(top.values, row({3.0, 3.0, 0.0})), 1e-12);
}

TEST(ExactShapley, MatchesBruteForceOverOrderingsWithABackground) {
  auto g = [](const at::Tensor& x) { return soft(x.select(1, 0) + x.select(1, 1) * x.select(1, 2)) + x.select(1, 3).pow(2) * x.select(1, 0); };
  Model m = two_class(g, 4);
  const at::Tensor x = row({0.3, -1.2, 0.8, 1.1});
  const at::Tensor bg = background(5, 4, 3);
  auto a = run(ExactShapley(), m, x, Baseline::distribution(bg));
  EXPECT_LT(max_abs_diff(a.values[0], at::tensor(brute_shapley(g, x[0], bg), kD)), 1e-12);
  EXPECT_LT(std::abs(a.values.sum().item<double>() - (g(x).item<double>() - g(bg).mean().item<double>())), 1e-12);
}

TEST(ExactShapley, PerSampleFeatureMasks) {
  auto g = [](const at::Tensor& x) { return x.select(1, 0) * x.select(1, 1) + x.select(1, 2); };
  Model m = two_class(g, 3);
  const at::Tensor x = at::tensor({1.0, 2.0, 3.0, 2.0, 2.0, 1.0}, kD).view({2, 3});
  const at::Tensor mask = at::tensor({0, 0, 1, 0, 1, 1}, at::kLong).view({2, 3});
  auto a = run(ExactShapley(), m, x, Baseline::zeros(), mask);
  // Input 0: {x0, x1} = 2, {x2} = 3. Input 1: {x0} and {x1, x2} split x0*x1 = 4, and x2 = 1 goes to group 1.
  EXPECT_LT(max_abs_diff(a.values, at::tensor({2.0, 2.0, 3.0, 2.0, 3.0, 3.0}, kD).view({2, 3})), 1e-12);
}

// ---- shapley_value_sampling ----------------------------------------------------------

TEST(ShapleyValueSampling, ExactForAdditiveFunctionsAndEfficientAlways) {
  const at::Tensor w = at::tensor({0.5, -1.0, 2.0, 3.0}, kD);
  Model m = two_class([w](const at::Tensor& x) { return x.matmul(w); }, 4);
  const at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5}, kD).view({1, 4});
  auto a = run(ShapleyValueSampling({.n_samples = 3}), m, x);
  EXPECT_LT(max_abs_diff(a.values, w * x), 1e-12) << "every ordering gives an additive function's exact value";
  EXPECT_EQ(a.model_evaluations, 1 + 1 + 3 * 3) << "f(x), f(b), (G - 1) coalitions per ordering";
  // A non-additive function: sum of attributions is still exactly f(x) - f(b).
  Model mm = two_class(mixed, 8);
  const at::Tensor x8 = at::randn({2, 8}, at::detail::createCPUGenerator(1), kD);
  auto b = run(ShapleyValueSampling({.n_samples = 5}), mm, x8);
  EXPECT_LT(b.convergence_delta.abs().max().item<double>(), 1e-12);
  EXPECT_LT((b.values.sum(1) - (mixed(x8) - mixed(at::zeros_like(x8)))).abs().max().item<double>(), 1e-12);
  ASSERT_EQ(b.extra["standard_error"].size(), 2u);
  EXPECT_EQ(b.extra["standard_error"][0].size(), 8u);
}

TEST(ShapleyValueSampling, ConvergesToExactValuesAndStandardErrorTracksTheError) {
  Model m = two_class(mixed, 8);
  const at::Tensor x = at::randn({1, 8}, at::detail::createCPUGenerator(2), kD);
  const at::Tensor bg = background(4, 8, 5);
  const at::Tensor exact = run(ExactShapley(), m, x, Baseline::distribution(bg)).values;
  double prev = 1e30;
  for (int64_t n : {8, 64, 512}) {
    double err = 0;
    for (int64_t seed = 0; seed < 4; ++seed)
      err += max_abs_diff(run(ShapleyValueSampling({.n_samples = n, .seed = seed}), m, x, Baseline::distribution(bg)).values, exact);
    err /= 4;
    EXPECT_LT(err, prev) << n;
    prev = err;
  }
  EXPECT_LT(prev, 0.1);
  // target_error: sampling stops once every standard error is below it, and the error is of that size.
  auto t = run(ShapleyValueSampling({.target_error = 0.01, .max_samples = 100000}), m, x, Baseline::distribution(bg));
  EXPECT_EQ(t.extra["converged"][0], true);
  double worst = 0;
  for (double s : t.extra["standard_error"][0]) worst = std::max(worst, s);
  EXPECT_LT(worst, 0.01);
  EXPECT_GT(t.extra["n_samples"][0].get<int64_t>(), 25);
  EXPECT_LT(max_abs_diff(t.values, exact), 0.05);
}

TEST(ShapleyValueSampling, AntitheticReducesErrorAtEqualEvaluations) {
  Model m = two_class(mixed, 8);
  const at::Tensor x = at::randn({1, 8}, at::detail::createCPUGenerator(7), kD);
  const at::Tensor exact = run(ExactShapley(), m, x).values;
  double plain = 0, anti = 0;
  for (int64_t seed = 0; seed < 10; ++seed) {
    auto p = run(ShapleyValueSampling({.n_samples = 20, .seed = seed}), m, x);
    auto a = run(ShapleyValueSampling({.n_samples = 20, .antithetic = true, .seed = seed}), m, x);
    EXPECT_EQ(p.model_evaluations, a.model_evaluations);
    plain += (p.values - exact).pow(2).mean().item<double>();
    anti += (a.values - exact).pow(2).mean().item<double>();
  }
  EXPECT_LT(anti, 0.5 * plain) << "mean squared error, plain " << plain / 10 << " antithetic " << anti / 10;
  // Pairwise interactions alone cancel exactly in an ordering and its reverse.
  auto pair = [](const at::Tensor& x) { return x.select(1, 0) * x.select(1, 1) + x.select(1, 2) * x.select(1, 3); };
  auto r = run(ShapleyValueSampling({.n_samples = 2, .antithetic = true}), two_class(pair, 4), x.slice(1, 0, 4));
  EXPECT_LT(max_abs_diff(r.values, run(ExactShapley(), two_class(pair, 4), x.slice(1, 0, 4)).values), 1e-12);
}

// ---- kernel_shap ---------------------------------------------------------------------

TEST(KernelShap, FullEnumerationIsExact) {
  Model m = two_class(mixed, 8);
  const at::Tensor x = at::randn({2, 8}, at::detail::createCPUGenerator(11), kD);
  const at::Tensor bg = background(3, 8, 12);
  auto exact = run(ExactShapley(), m, x, Baseline::distribution(bg));
  auto k = run(KernelShap(), m, x, Baseline::distribution(bg));  // auto: 2 * 8 + 2048 > 2^8 - 2
  EXPECT_LT(max_abs_diff(k.values, exact.values), 1e-9);
  EXPECT_EQ(k.extra["n_samples"][0], 254);
  EXPECT_EQ(k.extra["standard_error"][0][3], 0.0) << "nothing sampled";
  EXPECT_EQ(k.model_evaluations, exact.model_evaluations);
}

TEST(KernelShap, EfficiencyWithABackgroundAndConvergence) {
  // 10 features (1022 coalitions): sampled for small n_samples.
  auto g = [](const at::Tensor& x) {
    return mixed(x.slice(1, 0, 8)) + x.select(1, 8) * x.select(1, 9) * x.select(1, 0) + soft(x.select(1, 9));
  };
  Model m = two_class(g, 10);
  const at::Tensor x = at::randn({1, 10}, at::detail::createCPUGenerator(21), kD);
  const at::Tensor bg = background(6, 10, 22);
  const at::Tensor exact = run(ExactShapley(), m, x, Baseline::distribution(bg)).values;
  const double gap = g(x).item<double>() - g(bg).mean().item<double>();
  double prev = 1e30;
  for (int64_t n : {60, 250, 900}) {
    double err = 0;
    for (int64_t seed = 0; seed < 4; ++seed) {
      auto k = run(KernelShap({.n_samples = n, .seed = seed}), m, x, Baseline::distribution(bg));
      EXPECT_NEAR(k.values.sum().item<double>(), gap, 1e-10) << "efficiency, n_samples " << n;
      EXPECT_LT(k.convergence_delta.abs().item<double>(), 1e-10);
      EXPECT_LE(k.extra["n_samples"][0].get<int64_t>(), n);
      err += max_abs_diff(k.values, exact);
    }
    err /= 4;
    EXPECT_LT(err, prev) << n;
    prev = err;
  }
  EXPECT_LT(prev, 0.05);
}

TEST(KernelShap, TargetErrorAndNonVaryingGroups) {
  auto g = [](const at::Tensor& x) { return mixed(x.slice(1, 0, 8)) + x.select(1, 8) * x.select(1, 9) * x.select(1, 0); };
  Model m = two_class(g, 10);
  at::Tensor x = at::randn({1, 10}, at::detail::createCPUGenerator(31), kD);
  x[0][4] = 0.0;  // equal to the zero reference: shap gives it 0 and leaves it out
  const at::Tensor exact = run(ExactShapley(), m, x).values;
  auto plain = run(KernelShap({.n_samples = 100}), m, x);
  double worst = 0;
  for (double s : plain.extra["standard_error"][0]) worst = std::max(worst, s);
  ASSERT_GT(worst, 0.0);
  const double target = 0.5 * worst;
  auto k = run(KernelShap({.n_samples = 100, .target_error = target}), m, x);
  EXPECT_EQ(k.extra["varying_groups"][0], 9);
  EXPECT_EQ(k.values[0][4].item<double>(), 0.0);
  EXPECT_EQ(k.extra["converged"][0], true);
  EXPECT_GT(k.extra["n_samples"][0].get<int64_t>(), 100);
  for (double s : k.extra["standard_error"][0]) EXPECT_LT(s, target);
  EXPECT_LT(max_abs_diff(k.values, exact), max_abs_diff(plain.values, exact));
  EXPECT_LT(max_abs_diff(k.values, exact), 0.1);
}

TEST(KernelShap, StandardErrorsMatchTheSpreadOverSeeds) {
  // The sandwich standard error of one run against the spread of the estimates over seeds.
  auto g = [](const at::Tensor& x) { return mixed(x.slice(1, 0, 8)) + x.select(1, 8) * x.select(1, 9) * x.select(1, 0); };
  Model m = two_class(g, 10);
  const at::Tensor x = at::randn({1, 10}, at::detail::createCPUGenerator(51), kD);
  std::vector<at::Tensor> runs;
  at::Tensor se_mean = at::zeros({10}, kD);
  const int seeds = 40;
  for (int64_t seed = 0; seed < seeds; ++seed) {
    auto k = run(KernelShap({.n_samples = 120, .seed = seed}), m, x);
    runs.push_back(k.values[0]);
    se_mean += at::tensor(k.extra["standard_error"][0].get<std::vector<double>>(), kD) / seeds;
  }
  const at::Tensor spread = at::stack(runs).std(0);
  const double ratio = (se_mean.sum() / spread.sum()).item<double>();
  EXPECT_GT(ratio, 0.6) << "standard errors " << se_mean << " spread " << spread;
  EXPECT_LT(ratio, 1.6) << "standard errors " << se_mean << " spread " << spread;
}

// ---- shared properties ---------------------------------------------------------------

TEST(ShapleyMethods, DeterministicUnderASeedAndInvariantToBatchSize) {
  Model m = two_class(mixed, 8);
  const at::Tensor x = at::randn({3, 8}, at::detail::createCPUGenerator(41), kD);
  const at::Tensor bg = background(4, 8, 42);
  std::vector<std::unique_ptr<Explainer>> methods;
  methods.push_back(std::make_unique<ExactShapley>());
  methods.push_back(std::make_unique<ShapleyValueSampling>(ShapleyValueSampling::Options{.n_samples = 6, .antithetic = true}));
  methods.push_back(std::make_unique<KernelShap>(KernelShap::Options{.n_samples = 40}));
  for (const auto& e : methods) {
    auto a = run(*e, m, x, Baseline::distribution(bg));
    auto b = run(*e, m, x, Baseline::distribution(bg));
    EXPECT_TRUE(at::equal(a.values, b.values)) << e->name() << " " << max_abs_diff(a.values, b.values);
    auto one = run(*e, m, x, Baseline::distribution(bg), {}, /*batch=*/1);
    EXPECT_LT(max_abs_diff(one.values, a.values), 1e-12) << e->name();
    EXPECT_EQ(one.batch_size, 1);
    // Each input alone gets the same answer (the orderings/coalitions do not depend on the others).
    auto alone = run(*e, m, x.slice(0, 2, 3), Baseline::distribution(bg));
    EXPECT_LT(max_abs_diff(alone.values[0], a.values[2]), 1e-12) << e->name();
  }
  auto s0 = run(ShapleyValueSampling({.n_samples = 6}), m, x), s1 = run(ShapleyValueSampling({.n_samples = 6, .seed = 1}), m, x);
  EXPECT_FALSE(at::allclose(s0.values, s1.values));
  auto k0 = run(KernelShap({.n_samples = 40}), m, x), k1 = run(KernelShap({.n_samples = 40, .seed = 1}), m, x);
  EXPECT_FALSE(at::allclose(k0.values, k1.values));
}

TEST(ShapleyMethods, ScriptedFloatModelAndRegistry) {
  const at::Tensor w = at::tensor({0.5, -1.0, 2.0, 0.25, -0.75, 1.5}, at::kFloat).view({2, 3});
  Model m = candela::testing::linear_model(w, at::tensor({0.1, -0.2}, at::kFloat));
  const at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5, -3.0, 0.0}, at::kFloat).view({2, 3});
  Registry r;
  register_shapley_methods(r);
  for (std::string name : {"exact_shapley", "shapley_value_sampling", "kernel_shap"}) {
    ASSERT_TRUE(r.contains(name));
    EXPECT_EQ(r.get(name).family, "perturbation");
    EXPECT_TRUE(r.get(name).uses_baseline);
    EXPECT_TRUE(r.get(name).completeness);
    auto a = run(*r.create(name), m, x, Baseline::zeros(), {}, 0, Target::index(1));
    EXPECT_LT(rel_error(a.values, w[1] * x), 1e-5) << name;
    EXPECT_EQ(a.method, name);
  }
  EXPECT_TRUE(r.get("kernel_shap").stochastic);
  EXPECT_FALSE(r.get("exact_shapley").stochastic);
  EXPECT_THROW(r.create("kernel_shap", {{"nsamples", 10}}), InvalidArgument);
}

TEST(ShapleyMethods, BadInputsGiveClearErrors) {
  Model m = two_class(mixed, 8);
  const at::Tensor x = at::randn({1, 8}, at::detail::createCPUGenerator(51), kD);
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  // Zero samples.
  EXPECT_THROW(ShapleyValueSampling({.n_samples = 0}), InvalidArgument);
  EXPECT_NE(message([] { ShapleyValueSampling({.n_samples = 0}); }).find("n_samples"), std::string::npos);
  EXPECT_THROW(KernelShap({.n_samples = -1}), InvalidArgument);
  EXPECT_THROW(KernelShap({.standard_errors = false, .target_error = 0.1}), InvalidArgument);
  // Too many groups for the exact method: refused before any model evaluation.
  InputSpec spec;
  spec.shape = {21};
  int64_t calls = 0;
  Model wide = Model::from_function(
      [&](const at::Tensor& x) {
        ++calls;
        return x.sum(1, true);
      },
      spec);
  const std::string too_many = message([&] { run(ExactShapley(), wide, at::ones({1, 21}, kD)); });
  EXPECT_NE(too_many.find("G = 21"), std::string::npos) << too_many;
  EXPECT_NE(too_many.find("shapley_value_sampling or kernel_shap"), std::string::npos) << too_many;
  EXPECT_EQ(calls, 0);
  EXPECT_NO_THROW(run(ExactShapley(), wide, at::ones({1, 21}, kD), Baseline::zeros(), at::arange(21, at::kLong).div(2, "floor")));
  // A background of the wrong width.
  const std::string width = message([&] { run(KernelShap(), m, x, Baseline::distribution(at::zeros({5, 7}, kD))); });
  EXPECT_NE(width.find("[7]"), std::string::npos) << width;
  EXPECT_NE(width.find("shaped like one input, [8]"), std::string::npos) << width;
  EXPECT_THROW(run(ShapleyValueSampling(), m, x, Baseline::distribution(at::zeros({5, 7}, kD))), ShapeMismatch);
  EXPECT_THROW(run(ExactShapley(), m, x, Baseline::tensor(at::zeros({7}, kD))), ShapeMismatch);
  // Feature masks of the wrong shape, type or ids.
  EXPECT_THROW(run(KernelShap(), m, x, Baseline::zeros(), at::zeros({7}, at::kLong)), Error);
  EXPECT_THROW(run(KernelShap(), m, x, Baseline::zeros(), at::full({8}, 0.5, kD)), InvalidArgument);
  EXPECT_THROW(run(KernelShap(), m, x, Baseline::zeros(), at::full({8}, 9, at::kLong)), InvalidArgument);
  EXPECT_THROW(run(KernelShap(), m, x, Baseline::zeros(), at::full({8}, -1, at::kLong)), InvalidArgument);
}
