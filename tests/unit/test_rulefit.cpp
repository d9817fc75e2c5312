// RuleFit (candela/methods/perturbation/rulefit.h): the lasso against closed forms, and planted rules
// recovered from a model's output.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "test_util.h"

using namespace candela;

namespace {

at::Tensor seeded_rand(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::rand(shape, g, at::TensorOptions().dtype(at::kDouble));
}

// A scripted model y = expression over x [N, F], as a regression output [N, 1].
Model expression_model(const std::string& body, int64_t features) {
  torch::jit::Module m("ExpressionFixture");
  m.define("def forward(self, x):\n    return (" + body + ").unsqueeze(1)\n");
  InputSpec spec;
  spec.shape = {features};
  spec.layout = "NC";
  return Model::from_module(m, spec);
}

Attribution explain_rulefit(const Model& model, const at::Tensor& x, nlohmann::json options = nlohmann::json::object()) {
  ExplainRequest r;
  r.inputs = x;
  r.eval.measure_batch_size = false;
  return Registry::builtin().create("rulefit", options)->explain(model, r);
}

}  // namespace

TEST(RuleFit, LassoMatchesClosedForms) {
  // Orthogonal centred columns with N z'z = 1: the lasso solution is soft-thresholding of z'y / (z'z).
  const at::Tensor z = at::tensor({1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0}, at::kDouble).view({2, 4}).t().contiguous();
  const at::Tensor y = at::tensor({3.0, 1.0, -1.0, -1.0}, at::kDouble) + 5.0;
  // c = z'(y - mean)/N: column 0: (3 + 1 + 1 + 1)/4 = 1.5, column 1: (3 - 1 - 1 + 1)/4 = 0.5; g_jj = 1.
  auto [a, b] = candela::detail::lasso_fit(z, y, 0.2);
  EXPECT_NEAR(a[0].item<double>(), 1.3, 1e-9);
  EXPECT_NEAR(a[1].item<double>(), 0.3, 1e-9);
  EXPECT_NEAR(b, 5.5, 1e-9);  // mean(y); the columns are centred
  auto [a0, b0] = candela::detail::lasso_fit(z, y, 1.0);
  EXPECT_NEAR(a0[0].item<double>(), 0.5, 1e-9);
  EXPECT_EQ(a0[1].item<double>(), 0.0);
  // alpha = 0 on a full-rank problem is least squares.
  const at::Tensor zr = seeded_rand({30, 3}, 4), yr = seeded_rand({30}, 5);
  auto [ls, ls0] = candela::detail::lasso_fit(zr, yr, 0.0, 1e-12, 100000);
  const at::Tensor design = at::cat({zr, at::ones({30, 1}, at::kDouble)}, 1);
  const at::Tensor ref = std::get<0>(at::linalg_lstsq(design, yr.unsqueeze(1))).squeeze(1);
  EXPECT_LE((ls - ref.slice(0, 0, 3)).abs().max().item<double>(), 1e-6);
  EXPECT_NEAR(ls0, ref[3].item<double>(), 1e-6);
}

TEST(RuleFit, RecoversAPlantedRule) {
  // y = 3 [x0 > 0.5 and x1 < 0.3] + 0.2 x3 (a small linear "noise" term) over 5 uniform columns.
  const at::Tensor x = seeded_rand({1000, 5}, 11).to(at::kFloat);
  const Model model = expression_model("3.0 * ((x[:, 0] > 0.5) & (x[:, 1] < 0.3)).to(x.dtype) + 0.2 * x[:, 3]", 5);
  Attribution a = explain_rulefit(model, x);
  const auto& terms = a.extra["terms"];
  ASSERT_FALSE(terms.empty()) << a.extra.dump();
  const auto& top = terms[0];
  EXPECT_EQ(top["type"], "rule") << top.dump();
  ASSERT_EQ(top["conditions"].size(), 2u) << top.dump();
  std::map<int64_t, nlohmann::json> by;
  for (const auto& c : top["conditions"]) by[c["index"].get<int64_t>()] = c;
  ASSERT_TRUE(by.count(0) && by.count(1)) << top.dump();
  // The split points lie between neighbouring rows on either side of 0.5 and 0.3.
  EXPECT_NEAR(by[0]["lower"].get<double>(), 0.5, 0.02) << top.dump();
  EXPECT_TRUE(by[0]["upper"].is_null()) << top.dump();
  EXPECT_NEAR(by[1]["upper"].get<double>(), 0.3, 0.02) << top.dump();
  EXPECT_TRUE(by[1]["lower"].is_null()) << top.dump();
  EXPECT_NEAR(top["support"].get<double>(), 0.15, 0.04);
  // The lasso shrinks the coefficient below 3, not far.
  EXPECT_GT(top["coefficient"].get<double>(), 2.0);
  EXPECT_LE(top["coefficient"].get<double>(), 3.0 + 1e-9);
  EXPECT_GT(a.extra["fidelity"]["r2"].get<double>(), 0.95);
  // Importances: x0 and x1 carry most; x2 and x4, which the model ignores, little.
  const at::Tensor v = a.values[0];
  EXPECT_NEAR(v.sum().item<double>(), 1.0, 1e-5);
  EXPECT_GT(v[0].item<double>() + v[1].item<double>(), 0.7);
  EXPECT_LT(v[2].item<double>() + v[4].item<double>(), 0.1);
  // Deterministic under a seed; another seed draws other subsamples, so other trees and rules.
  EXPECT_TRUE(at::equal(explain_rulefit(model, x).values, a.values));
  Attribution other = explain_rulefit(model, x, {{"seed", 3}});
  EXPECT_FALSE(at::equal(other.values, a.values));
  EXPECT_EQ(other.extra["terms"][0]["conditions"].size(), 2u) << other.extra["terms"][0].dump();
}

TEST(RuleFit, ClassifierProbabilityAndFixedAlpha) {
  // Two logits: class 1 when x0 > 0.6. The surrogate explains p(class 1) and agrees with the model.
  torch::jit::Module m("Threshold");
  m.define("def forward(self, x):\n    c = (x[:, 0] > 0.6).to(x.dtype) * 8.0 - 4.0\n    return torch.stack([-c, c], 1)\n");
  InputSpec spec;
  spec.shape = {3};
  spec.layout = "NC";
  const Model model = Model::from_module(m, spec);
  const at::Tensor x = seeded_rand({400, 3}, 12).to(at::kFloat);
  Attribution a = explain_rulefit(model, x, {{"alpha", 0.001}});
  EXPECT_EQ(a.extra["class_index"], 1);
  EXPECT_DOUBLE_EQ(a.extra["alpha"].get<double>(), 0.001);
  EXPECT_GE(a.extra["fidelity"]["agreement"].get<double>(), 0.97);
  const auto& top = a.extra["terms"][0];
  ASSERT_EQ(top["conditions"].size(), 1u) << top.dump();
  EXPECT_EQ(top["conditions"][0]["index"], 0);
  EXPECT_THROW(Registry::builtin().create("rulefit", {{"tree_size", 1}}), InvalidArgument);
  EXPECT_THROW(explain_rulefit(model, x, {{"class_index", 5}}), InvalidArgument);
}
