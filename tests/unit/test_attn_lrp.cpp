// AttnLRP and CP-LRP (methods/propagation/attn_lrp.h): each rule against its closed form in
// float64, conservation on bias-free models, the rule names, and the planted trigger tokens of
// the text fixture.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "candela/detail/tensor_util.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

// A scripted float64 model: forward(self, x) given as TorchScript, constants as buffers.
Model script_model(const std::string& body, const std::vector<std::pair<std::string, at::Tensor>>& buffers,
                   int64_t features) {
  torch::jit::Module m("AttnLrpFixture");
  for (const auto& [name, t] : buffers) m.register_buffer(name, t);
  m.define("def forward(self, x):\n" + body);
  InputSpec spec;
  spec.shape = {features};
  spec.layout = "NC";
  return Model::from_module(m, spec);
}

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = candela::detail::seeded_generator(seed, 0);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble));
}

Attribution attn_lrp(const Model& m, const at::Tensor& x, const std::string& variant = "attn_lrp",
                     double eps = 1e-12) {
  ExplainRequest r{.inputs = x, .target = Target::index(0)};
  return AttnLrp({.variant = variant, .epsilon = eps}).explain(m, r);
}

std::set<std::string> rule_names(const Attribution& a) {
  std::set<std::string> s;
  for (const auto& r : a.extra["rules"]) s.insert(r["rule"].get<std::string>());
  return s;
}

void expect_near(const at::Tensor& a, const at::Tensor& b, double tol, const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_LE((a - b).abs().max().item<double>(), tol) << what << "\n" << a << "\n" << b;
}

}  // namespace

TEST(AttnLrp, SoftmaxRuleWithAMinusInfinityMask) {
  // f(x) = sum_i softmax(x masked)_i c_i; the rule: R_i = x_i (R_s_i - s_i sum_j R_s_j), R_s = s c.
  const at::Tensor c = at::tensor({1.0, -2.0, 0.5, 3.0, 1.5}, at::kDouble);
  const at::Tensor mask = at::tensor({0, 0, 1, 0, 0}, at::kByte).to(at::kBool);
  Model m = script_model("    s = torch.softmax(x.masked_fill(self.mask, float('-inf')), dim=1)\n"
                         "    return (s * self.c).sum(1, keepdim=True)\n",
                         {{"c", c}, {"mask", mask}}, 5);
  const at::Tensor x = randn({3, 5}, 1);
  auto a = attn_lrp(m, x);
  const at::Tensor s = at::softmax(x.masked_fill(mask, -INFINITY), 1);
  const at::Tensor rs = s * c;
  const at::Tensor expected = x * (rs - s * rs.sum(1, true));
  expect_near(a.values, expected, 1e-12, "softmax rule");
  EXPECT_EQ(a.values.select(1, 2).abs().max().item<double>(), 0.0) << "the masked entry gets nothing";
  EXPECT_TRUE(rule_names(a).count("softmax_gradient"));
}

TEST(AttnLrp, ProductsOfTwoActivationsSplitUniformly) {
  // mul: each operand gets half of z.
  Model mul = script_model("    return (x[:, 0] * x[:, 1]).unsqueeze(1)\n", {}, 2);
  const at::Tensor x2 = randn({4, 2}, 2);
  auto a = attn_lrp(mul, x2);
  const at::Tensor half = (x2.select(1, 0) * x2.select(1, 1) / 2).unsqueeze(1);
  expect_near(a.values, at::cat({half, half}, 1), 1e-12, "mul");
  // bmm and baddbmm with a zero added term: R_A[i,j] = A_ij B_j / 2, R_B[j] = sum_i A_ij B_j / 2.
  for (const std::string op : {"torch.bmm(a, b)", "torch.baddbmm(torch.zeros_like(a[:, :, :1]), a, b)",
                                "torch.matmul(a, b)"}) {
    Model m = script_model("    a = x[:, :4].reshape(-1, 2, 2)\n    b = x[:, 4:].reshape(-1, 2, 1)\n"
                           "    return " + op + ".sum(2).sum(1, keepdim=True)\n",
                           {}, 6);
    const at::Tensor x = randn({3, 6}, 3);
    auto r = attn_lrp(m, x);
    const at::Tensor A = x.slice(1, 0, 4).reshape({3, 2, 2}), B = x.slice(1, 4).reshape({3, 1, 2});
    const at::Tensor ra = (A * B / 2).reshape({3, 4}), rb = (A * B / 2).sum(1);
    expect_near(r.values, at::cat({ra, rb}, 1), 1e-12, op.c_str());
    expect_near(r.values.sum(1), r.output.select(1, 0), 1e-12, "conserved");
    EXPECT_TRUE(rule_names(r).count("uniform")) << op;
  }
}

TEST(AttnLrp, LayerNormHoldsTheStandardDeviationConstant) {
  const at::Tensor w = at::tensor({1.0, 2.0, -1.0, 0.5}, at::kDouble), c = at::tensor({0.3, -1.0, 2.0, 1.0}, at::kDouble);
  Model m = script_model("    y = torch.layer_norm(x, [4], self.w, torch.zeros_like(self.w), 1e-5)\n"
                         "    return (y * self.c).sum(1, keepdim=True)\n",
                         {{"w", w}, {"c", c}}, 4);
  const at::Tensor x = randn({3, 4}, 4);
  auto a = attn_lrp(m, x);
  const at::Tensor sigma = (x.var(1, /*unbiased=*/false, true) + 1e-5).sqrt();
  const at::Tensor g = w * c;
  expect_near(a.values, x * (g - g.mean()) / sigma, 1e-12, "closed form");
  expect_near(a.values.sum(1), a.output.select(1, 0), 1e-12, "conserved (no bias)");
  EXPECT_TRUE(rule_names(a).count("layer_norm_std_constant"));
  // The same through a decomposed LayerNorm (ONNX opset < 17): its std is held constant too.
  Model d = script_model("    mu = x.mean(1, keepdim=True)\n    xc = x - mu\n"
                         "    sd = torch.sqrt(xc.pow(2).mean(1, keepdim=True) + 1e-5)\n"
                         "    return ((xc / sd * self.w) * self.c).sum(1, keepdim=True)\n",
                         {{"w", w}, {"c", c}}, 4);
  auto b = attn_lrp(d, x);
  expect_near(b.values, a.values, 1e-12, "decomposed");
  EXPECT_TRUE(rule_names(b).count("std_constant"));
}

TEST(AttnLrp, ActivationsTakeTheIdentityRuleAndLinearLayersEpsilon) {
  const at::Tensor c = at::tensor({1.0, -1.0, 2.0}, at::kDouble);
  Model m = script_model("    return (torch.tanh(x) * self.c).sum(1, keepdim=True)\n", {{"c", c}}, 3);
  const at::Tensor x = randn({4, 3}, 5);
  auto a = attn_lrp(m, x);
  expect_near(a.values, at::tanh(x) * c, 1e-10, "R_x = R_y = tanh(x) c");
  EXPECT_TRUE(rule_names(a).count("identity"));
  // epsilon: R_x = x W^T (R_z / stab(z)), R_z = z (the next layer sums).
  const at::Tensor W = randn({2, 3}, 6), bias = randn({2}, 7);
  Model lin = script_model("    return torch.addmm(self.bias, x, self.W.t()).sum(1, keepdim=True)\n",
                           {{"W", W}, {"bias", bias}}, 3);
  const double eps = 0.1;
  auto e = attn_lrp(lin, x, "attn_lrp", eps);
  const at::Tensor z = at::linear(x, W, bias);
  const at::Tensor st = z + eps * (2 * z.ge(0).to(at::kDouble) - 1);
  expect_near(e.values, x * at::matmul(z / st, W), 1e-12, "epsilon rule");
  EXPECT_TRUE(rule_names(e).count("epsilon"));
}

TEST(AttnLrp, CpLrpConservesOnABiasFreeTransformerBlock) {
  // One attention block, LayerNorm (no bias), tanh, no biases anywhere: CP-LRP (attention weights
  // constant) conserves the score exactly; AttnLRP's softmax rule does not (the bias term of its
  // Taylor expansion absorbs relevance), so only CP-LRP is checked for equality.
  const int64_t L = 4, D = 3;
  Model m = script_model(
      "    h = x.reshape(-1, 4, 3)\n"
      "    q = torch.matmul(h, self.wq)\n    k = torch.matmul(h, self.wk)\n    v = torch.matmul(h, self.wv)\n"
      "    a = torch.softmax(torch.matmul(q, k.transpose(1, 2)) / 1.7, dim=-1)\n"
      "    o = torch.layer_norm(h + torch.matmul(a, v), [3], self.g, torch.zeros_like(self.g), 1e-5)\n"
      "    f = torch.tanh(torch.matmul(o, self.w1))\n"
      "    return torch.matmul(f.sum(1), self.wc)\n",
      {{"wq", randn({D, D}, 8)}, {"wk", randn({D, D}, 9)}, {"wv", randn({D, D}, 10)}, {"g", randn({D}, 11)},
       {"w1", randn({D, D}, 12)}, {"wc", randn({D, 2}, 13)}},
      L * D);
  const at::Tensor x = randn({3, L * D}, 14);
  auto cp = attn_lrp(m, x, "cp_lrp");
  expect_near(cp.values.sum(1), cp.output.select(1, 0), 1e-9, "CP-LRP conservation");
  EXPECT_TRUE(rule_names(cp).count("cp_constant"));
  auto full = attn_lrp(m, x);
  EXPECT_TRUE(rule_names(full).count("softmax_gradient"));
  EXPECT_TRUE(rule_names(full).count("uniform"));
  EXPECT_FALSE(at::allclose(full.values, cp.values)) << "the softmax rule gives the scores relevance";
}

TEST(AttnLrp, AnOpWithoutARuleIsRefusedByName) {
  Model m = script_model("    return torch.exp(x).sum(1, keepdim=True)\n", {}, 3);
  try {
    attn_lrp(m, randn({1, 3}, 15));
    FAIL() << "exp has no rule";
  } catch (const UnsupportedModel& e) {
    EXPECT_NE(std::string(e.what()).find("aten::exp"), std::string::npos) << e.what();
  }
}

TEST(AttnLrp, TriggerTokensRankFirstOnTheTextFixture) {
  Model model = Model::load(fixture("text_bert.pt"));
  at::Tensor x = read_npy(fixture("text_test_ids.npy")).to(at::kFloat);
  at::Tensor trigger = read_npy(fixture("text_test_trigger.npy"));
  auto a = AttnLrp({.layers = {"tok"}}).explain(model, {.inputs = x});
  ASSERT_EQ(a.values.sizes(), (at::IntArrayRef{64, 16, 32}));
  const auto rules = rule_names(a);
  for (const char* r : {"epsilon", "identity", "layer_norm_std_constant", "softmax_gradient", "uniform"})
    EXPECT_TRUE(rules.count(r)) << r;
  const at::Tensor words_only = reduce_embedding(a.values, "sum").masked_fill(x < 5, -INFINITY);  // no [CLS]/[SEP]/[PAD]
  const int64_t hits = (words_only.argmax(1) == trigger).sum().item<int64_t>();
  EXPECT_GE(hits, 58) << "AttnLRP: the trigger ranks first in >= 90% of 64 sentences";
  auto cp = AttnLrp({.layers = {"tok"}, .variant = "cp_lrp"}).explain(model, {.inputs = x});
  EXPECT_TRUE(rule_names(cp).count("cp_constant"));
}
