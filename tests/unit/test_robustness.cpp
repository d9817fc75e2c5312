// Adversarial probes (candela/robustness/attacks.h, probe.h): torchattacks' FGSM and PGD against
// a plain-autograd re-derivation step for step, budgets and ranges kept, DeepFool's closed form on
// a linear model, the minimal flipping eps against the closed-form L-inf distance to a linear
// boundary, and the robust-accuracy curve's invariants.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "candela/io/npy.h"
#include "candela/robustness/attacks.h"
#include "candela/robustness/probe.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

struct Digits {
  Model model = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).to(at::kFloat);
  at::Tensor y = read_npy(fixture("digits_test_labels.npy")).to(at::kLong);
};

EvalOptions fixed_batches() {
  EvalOptions e;
  e.measure_batch_size = false;
  return e;
}

// torchattacks' loss: mean cross-entropy of the logits (plain LibTorch autograd, no Candela code).
at::Tensor reference_grad(const Model& model, const at::Tensor& adv, const at::Tensor& y) {
  at::Tensor a = adv.detach().requires_grad_(true);
  at::Tensor loss = at::nll_loss(at::log_softmax(model.forward(a), 1), y);
  return torch::autograd::grad({loss}, {a})[0];
}

// torchattacks.PGD.forward without random start (FGSM: one step with alpha = eps, no projection).
at::Tensor reference_pgd(const Model& model, const at::Tensor& x, const at::Tensor& y, double eps, double alpha,
                         int64_t steps) {
  at::Tensor adv = x.clone();
  for (int64_t t = 0; t < steps; ++t) {
    at::Tensor g = reference_grad(model, adv, y);
    adv = adv.detach() + alpha * g.sign();
    at::Tensor delta = at::clamp(adv - x, -eps, eps);
    adv = at::clamp(x + delta, 0, 1).detach();
  }
  return adv;
}

// torchattacks.PGDL2.forward without random start.
at::Tensor reference_pgdl2(const Model& model, const at::Tensor& x, const at::Tensor& y, double eps, double alpha,
                           int64_t steps) {
  const int64_t n = x.size(0);
  at::Tensor adv = x.clone();
  for (int64_t t = 0; t < steps; ++t) {
    at::Tensor g = reference_grad(model, adv, y);
    at::Tensor gn = g.view({n, -1}).norm(2, 1) + 1e-10;
    g = g / gn.view({n, 1, 1, 1});
    adv = adv.detach() + alpha * g;
    at::Tensor delta = adv - x;
    at::Tensor dn = delta.view({n, -1}).norm(2, 1);
    at::Tensor factor = at::min(eps / dn, at::ones_like(dn));
    delta = delta * factor.view({-1, 1, 1, 1});
    adv = at::clamp(x + delta, 0, 1).detach();
  }
  return adv;
}

}  // namespace

TEST(RobustAttacks, FgsmEqualsThePlainAutogradStep) {
  Digits d;
  Evaluator ev(d.model, fixed_batches());
  AttackOptions o;
  o.attack = "fgsm";
  o.eps = 0.1;
  const at::Tensor adv = adversarial_attack(ev, d.x, d.y, o);
  const at::Tensor g = reference_grad(d.model, d.x, d.y);
  const at::Tensor expected = at::clamp(d.x + 0.1 * g.sign(), 0, 1);
  EXPECT_TRUE(at::allclose(adv, expected, 0, 1e-6)) << (adv - expected).abs().max().item<double>();
  EXPECT_EQ(ev.evaluations(), d.x.size(0)) << "one forward+backward per row";
}

TEST(RobustAttacks, PgdWithoutRandomStartEqualsTheReferenceStepForStep) {
  Digits d;
  for (int64_t steps : {1, 2, 5, 10}) {
    Evaluator ev(d.model, fixed_batches());
    AttackOptions o;
    o.attack = "pgd";
    o.eps = 0.05;
    o.alpha = 0.02;
    o.steps = steps;
    o.random_start = false;
    const at::Tensor adv = adversarial_attack(ev, d.x, d.y, o);
    const at::Tensor expected = reference_pgd(d.model, d.x, d.y, 0.05, 0.02, steps);
    EXPECT_TRUE(at::allclose(adv, expected, 0, 1e-6)) << steps << " steps: " << (adv - expected).abs().max().item<double>();
    EXPECT_EQ(ev.evaluations(), steps * d.x.size(0));
  }
  for (int64_t steps : {1, 3, 10}) {
    EvalOptions small = fixed_batches();
    small.max_batch_size = 5;  // the evaluator's batches do not change torchattacks' numbers on all 16 rows
    Evaluator ev(d.model, small);
    AttackOptions o;
    o.attack = "pgdl2";
    o.eps = 0.5;
    o.alpha = 0.2;
    o.steps = steps;
    o.random_start = false;
    const at::Tensor adv = adversarial_attack(ev, d.x, d.y, o);
    const at::Tensor expected = reference_pgdl2(d.model, d.x, d.y, 0.5, 0.2, steps);
    EXPECT_TRUE(at::allclose(adv, expected, 0, 1e-5)) << "L2, " << steps << " steps: " << (adv - expected).abs().max().item<double>();
  }
}

TEST(RobustAttacks, TorchattacksDefaults) {
  const AttackOptions pgd = AttackOptions{}.resolved();
  EXPECT_EQ(pgd.attack, "pgd");
  EXPECT_DOUBLE_EQ(pgd.eps, 8.0 / 255);
  EXPECT_DOUBLE_EQ(pgd.alpha, 2.0 / 255);
  EXPECT_EQ(pgd.steps, 10);
  EXPECT_TRUE(pgd.random_start);
  AttackOptions l2;
  l2.attack = "pgdl2";
  EXPECT_DOUBLE_EQ(l2.resolved().eps, 1.0);
  EXPECT_DOUBLE_EQ(l2.resolved().alpha, 0.2);
  AttackOptions df;
  df.attack = "deepfool";
  EXPECT_EQ(df.resolved().steps, 50);
  EXPECT_DOUBLE_EQ(df.resolved().overshoot, 0.02);
  AttackOptions bad;
  bad.attack = "cw";
  EXPECT_THROW(bad.validate(), InvalidArgument);
}

TEST(RobustAttacks, PerturbationStaysInTheBallAndTheRangeWithNormalisation) {
  Digits d;
  // The same network behind a normalising spec: the attack works in pixel space [0, 1].
  InputSpec spec = d.model.input_spec();
  spec.mean = {0.5};
  spec.std = {0.25};
  d.model.set_input_spec(spec);
  const at::Tensor xm = (d.x - 0.5) / 0.25;
  for (const char* attack : {"fgsm", "pgd", "pgdl2", "deepfool"}) {
    Evaluator ev(d.model, fixed_batches());
    AttackOptions o;
    o.attack = attack;
    o.eps = std::string(attack) == "pgdl2" ? 0.8 : 0.06;
    o.alpha = std::string(attack) == "pgdl2" ? 0.3 : 0.02;
    o.steps = std::string(attack) == "deepfool" ? 5 : 10;
    const at::Tensor adv = adversarial_attack(ev, xm, d.y, o);
    ASSERT_EQ(adv.sizes(), xm.sizes());
    const at::Tensor pix = adv * 0.25 + 0.5;
    EXPECT_GE(pix.min().item<double>(), -1e-6) << attack;
    EXPECT_LE(pix.max().item<double>(), 1 + 1e-6) << attack;
    const at::Tensor delta = (pix - d.x).flatten(1);
    if (std::string(attack) == "pgdl2") {
      EXPECT_LE(delta.norm(2, 1).max().item<double>(), 0.8 * (1 + 1e-5)) << attack;
    } else if (std::string(attack) != "deepfool") {
      EXPECT_LE(delta.abs().max().item<double>(), 0.06 + 1e-6) << attack;
    }
  }
}

TEST(RobustAttacks, ZeroBudgetLeavesTheInputs) {
  Digits d;
  Evaluator ev(d.model, fixed_batches());
  for (const char* attack : {"fgsm", "pgd", "pgdl2"}) {
    AttackOptions o;
    o.attack = attack;
    o.eps = 0;
    EXPECT_TRUE(at::equal(adversarial_attack(ev, d.x, d.y, o), d.x)) << attack;
  }
}

TEST(RobustAttacks, DeepFoolFlipsALinearModelWithTheClosedFormStep) {
  const at::Tensor w = at::tensor({1.0, -2.0, 0.5, 0.0, 1.5, -1.0, 1.0, 2.0, 0.5, -0.5, 0.3, 0.2, -1.0, 1.0, 0.7},
                                  at::kFloat).view({3, 5});
  const at::Tensor b = at::tensor({0.5, -0.2, 0.1}, at::kFloat);
  Model model = candela::testing::linear_model(w, b);
  const at::Tensor x = at::tensor({1.0, -0.5, 0.3, 0.2, 0.8, 0.2, 0.1, -0.4, 0.6, 0.3}, at::kFloat).view({2, 5});
  const at::Tensor f = at::matmul(x, w.t()) + b;
  const at::Tensor label = f.argmax(1);
  Evaluator ev(model, fixed_batches());
  AttackOptions o;
  o.attack = "deepfool";
  const at::Tensor adv = adversarial_attack(ev, x, label, o);
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t l = label[i].item<int64_t>();
    // argmin_k |f_k - f_l| / ||w_k - w_l||, then the step onto that boundary, 2% beyond.
    double best = INFINITY;
    at::Tensor expected;
    for (int64_t k = 0; k < 3; ++k) {
      if (k == l) continue;
      const at::Tensor dw = w[k] - w[l];
      const double df = (f[i][k] - f[i][l]).item<double>();
      const double ratio = std::abs(df) / dw.norm().item<double>();
      if (ratio < best) best = ratio, expected = 1.02 * std::abs(df) * dw / dw.norm().pow(2);
    }
    EXPECT_TRUE(at::allclose(adv[i] - x[i], expected, 1e-5, 1e-6)) << "row " << i << ": " << adv[i] - x[i] << expected;
    EXPECT_NE((at::matmul(adv[i], w.t()) + b).argmax().item<int64_t>(), l) << "row " << i << " flipped";
  }
}

TEST(RobustProbe, MinimalEpsIsTheLInfDistanceToALinearBoundary) {
  // Binary linear model: margin m = (w0 - w1).x + (b0 - b1); the smallest L-inf change that flips it
  // is m / ||w0 - w1||_1, which sign-PGD reaches exactly (a vertex of the box).
  const at::Tensor w = at::tensor({1.0, -2.0, 0.5, 0.0, -1.0, 1.0, 0.5, 2.0}, at::kFloat).view({2, 4});
  const at::Tensor b = at::tensor({0.3, 0.0}, at::kFloat);
  Model model = candela::testing::linear_model(w, b);
  const at::Tensor x = at::tensor({0.4, -0.1, 0.2, 0.0, 0.3, 0.1, -0.2, -0.2}, at::kFloat).view({2, 4});
  RobustnessOptions o;
  o.attack.eps = 0.01;
  o.attack.random_start = false;
  o.search_steps = 20;
  o.fragility_method = "";
  RobustnessResult r = probe_robustness(model, x, {}, o, fixed_batches());
  const at::Tensor f = at::matmul(x, w.t()) + b;
  const at::Tensor dw = (w[0] - w[1]).abs().sum();
  for (int64_t i = 0; i < 2; ++i) {
    const double margin = std::abs((f[i][0] - f[i][1]).item<double>());
    const double expected = margin / dw.item<double>();
    const double found = r.report["samples"][i]["min_eps"].get<double>();
    EXPECT_NEAR(found, expected, 1.0 / (1 << 20) + 1e-5) << "row " << i;
  }
}

TEST(RobustProbe, RobustAccuracyFallsWithEpsAndStartsAtCleanAccuracy) {
  Digits d;
  RobustnessOptions o;
  o.attack.attack = "pgd";
  o.eps_curve = {0.0, 0.01, 0.03, 0.06, 0.1, 0.2};
  o.search_steps = 0;
  o.fragility_method = "";
  RobustnessResult r = probe_robustness(d.model, d.x, d.y, o, fixed_batches());
  const auto& curve = r.report["curve"];
  ASSERT_EQ(curve.size(), 6u);
  const double clean = r.clean_pred.eq(d.y).to(at::kDouble).mean().item<double>();
  EXPECT_DOUBLE_EQ(curve[0]["eps"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(curve[0]["robust_accuracy"].get<double>(), clean);
  EXPECT_DOUBLE_EQ(r.report["summary"]["clean_accuracy"].get<double>(), clean);
  for (size_t i = 1; i < curve.size(); ++i)
    EXPECT_LE(curve[i]["robust_accuracy"].get<double>(), curve[i - 1]["robust_accuracy"].get<double>()) << i;
  EXPECT_EQ(r.adversarial.sizes(), d.x.sizes());
  EXPECT_GE(r.adversarial.min().item<double>(), 0.0);
  EXPECT_LE(r.adversarial.max().item<double>(), 1.0);
  EXPECT_LE(r.perturbation.abs().max().item<double>(), 8.0 / 255 + 1e-6);
}

TEST(RobustProbe, FragilityComparesExplanationsOfRowsThatKeepTheirClass) {
  Digits d;
  RobustnessOptions o;
  o.attack.attack = "fgsm";
  o.eps_curve = {0.0};
  o.search_steps = 0;
  o.fragility_eps = 0.0;  // no perturbation: the explanation cannot move
  RobustnessResult r = probe_robustness(d.model, d.x.slice(0, 0, 4), {}, o, fixed_batches());
  ASSERT_TRUE(r.report["fragility"].is_object());
  EXPECT_DOUBLE_EQ(r.report["fragility"]["mean_top_k_intersection"].get<double>(), 1.0);
  EXPECT_NEAR(r.report["fragility"]["mean_rank_correlation"].get<double>(), 1.0, 1e-12);
}

TEST(RobustProbe, RankAndTopKHelpersAgainstClosedForms) {
  const at::Tensor a = at::tensor({1.0, 2.0, 3.0, 4.0}).view({1, 4});
  EXPECT_NEAR(candela::detail::spearman_rows(a, a).item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(candela::detail::spearman_rows(a, a.flip(1)).item<double>(), -1.0, 1e-12);
  // Ranks 0,1,2,3 vs 1,0,2,3: 1 - 6 * 2 / (4 * 15) = 0.8.
  EXPECT_NEAR(candela::detail::spearman_rows(a, at::tensor({2.0, 1.0, 3.0, 4.0}).view({1, 4})).item<double>(), 0.8, 1e-12);
  const at::Tensor b = at::tensor({4.0, -3.0, 0.1, 0.2}).view({1, 4});
  // top-2 of a by |.|: {3, 2}; of b: {0, 1}: no overlap. top-3: {1,2,3} vs {0,1,3}: 2 of 3.
  EXPECT_DOUBLE_EQ(candela::detail::top_k_intersection(a, b, 2).item<double>(), 0.0);
  EXPECT_NEAR(candela::detail::top_k_intersection(a, b, 3).item<double>(), 2.0 / 3, 1e-12);
}
