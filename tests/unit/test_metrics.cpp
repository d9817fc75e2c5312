// Evaluation metrics on hand-computable cases, the randomisation sanity check (an edge
// detector that ignores the model fails it, a gradient passes), determinism, resumable
// evaluation runs, the shortcut audit, and bad input.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <filesystem>
#include <fstream>

#include "candela/eval/evaluate.h"
#include "candela/eval/metrics.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::TempDir;

namespace {

const auto kD = at::TensorOptions().dtype(at::kDouble);

Model scripted(const std::string& src, std::vector<int64_t> shape, const std::string& layout,
               const std::vector<std::pair<std::string, at::Tensor>>& params = {}) {
  torch::jit::Module m("Net");
  for (const auto& [k, v] : params) m.register_parameter(k, v.clone(), false);
  m.define(src);
  InputSpec spec;
  spec.shape = std::move(shape);
  spec.layout = layout;
  return Model::from_module(m, spec);
}

at::Tensor score(const std::string& metric, const Model& model, const at::Tensor& x, const at::Tensor& a,
                 const at::Tensor& targets, nlohmann::json options = nlohmann::json::object(),
                 const at::Tensor& masks = {}, const Explainer* explainer = nullptr) {
  MetricInput in;
  in.model = &model;
  in.inputs = x;
  in.attributions = a;
  in.targets = targets;
  in.masks = masks;
  in.explainer = explainer;
  return MetricRegistry::builtin().create(metric, options)->score(in);
}

at::Tensor classes(std::vector<int64_t> v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)); }

// A 1x4x4 "image" model: the target logit is the sum of the pixels (class 0) or its negative.
Model sum_image_model() {
  return scripted("def forward(self, x):\n    s = x.sum([1, 2, 3]).unsqueeze(1)\n    return torch.cat([s, -s], 1)\n",
                  {1, 4, 4}, "NCHW");
}

TEST(Metrics, LocalisationOnAKnownMask) {
  Model m = sum_image_model();
  const at::Tensor x = at::zeros({3, 1, 4, 4}, kD);
  at::Tensor mask = at::zeros({3, 4, 4}, at::TensorOptions().dtype(at::kBool));
  mask.slice(1, 0, 2).slice(2, 0, 2).fill_(true);  // top-left 2x2 of every sample
  mask[2].fill_(false);                            // sample 2: an empty mask
  at::Tensor a = at::zeros({3, 1, 4, 4}, kD);
  a[0][0][0][1] = 3.0;  // max inside, 3 of 4 in mass
  a[0][0][3][3] = 1.0;
  a[1][0][3][3] = 5.0;  // max outside
  a[1][0][0][0] = 1.0;
  a[1][0][1][1] = 2.0;
  a[1][0][1][0] = 0.5;
  const at::Tensor t = classes({0, 0, 0});
  const at::Tensor pg = score("pointing_game", m, x, a, t, {}, mask);
  EXPECT_EQ(pg[0].item<double>(), 1.0);
  EXPECT_EQ(pg[1].item<double>(), 0.0);
  EXPECT_TRUE(std::isnan(pg[2].item<double>())) << "an empty mask is undefined";
  const at::Tensor mass = score("relevance_mass_accuracy", m, x, a, t, {}, mask);
  EXPECT_NEAR(mass[0].item<double>(), 0.75, 1e-12);
  EXPECT_NEAR(mass[1].item<double>(), 3.5 / 8.5, 1e-12);
  // Rank: the top-4 pixels of sample 1 are 5 (out), 2, 1, 0.5 (in): 3 of 4.
  const at::Tensor rank = score("relevance_rank_accuracy", m, x, a, t, {}, mask);
  EXPECT_NEAR(rank[1].item<double>(), 0.75, 1e-12);
  // Masks of the wrong size are refused with the sizes in the message.
  try {
    score("pointing_game", m, x, a, t, {}, at::ones({3, 5, 5}, at::TensorOptions().dtype(at::kBool)));
    ADD_FAILURE() << "a 5x5 mask for 4x4 maps was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("4x4"), std::string::npos) << e.what();
  }
}

TEST(Metrics, ComplexityOfUniformAndOneHotMaps) {
  Model m = sum_image_model();
  const at::Tensor x = at::zeros({2, 1, 4, 4}, kD);
  at::Tensor a = at::ones({2, 1, 4, 4}, kD);
  a[1].zero_();
  a[1][0][2][2] = 1.0;
  const at::Tensor g = score("sparseness", m, x, a, classes({0, 0}));
  EXPECT_NEAR(g[0].item<double>(), 0.0, 1e-9) << "uniform: Gini 0";
  EXPECT_NEAR(g[1].item<double>(), 15.0 / 16.0, 1e-5) << "one-hot: Gini (p - 1) / p";
  const at::Tensor h = score("entropy", m, x, a, classes({0, 0}));
  EXPECT_NEAR(h[0].item<double>(), std::log(16.0), 1e-9);
  EXPECT_NEAR(h[1].item<double>(), 0.0, 1e-9);
}

TEST(Metrics, DeletionInsertionAndRegionPerturbationByHand) {
  // f = sum of 4 pixels [4, 3, 2, 1]; deleting in order of the attribution (one pixel per step).
  Model m = scripted("def forward(self, x):\n    return x.reshape([x.size(0), -1]).sum(1, keepdim=True)\n", {1, 2, 2},
                     "NCHW");
  const at::Tensor x = at::tensor({4.0, 3.0, 2.0, 1.0}, kD).view({1, 1, 2, 2});
  const at::Tensor good = x.clone(), bad = 5.0 - x;
  const nlohmann::json o = {{"n_steps", 4}, {"softmax", false}};
  // curves [10, 6, 3, 1, 0] and [10, 9, 7, 4, 0]: trapezoid areas 3.75 and 6.25.
  EXPECT_NEAR(score("deletion", m, x, good, classes({0}), o)[0].item<double>(), 3.75, 1e-12);
  EXPECT_NEAR(score("deletion", m, x, bad, classes({0}), o)[0].item<double>(), 6.25, 1e-12);
  // Insertion into zeros: [0, 4, 7, 9, 10] -> 6.25.
  nlohmann::json oi = o;
  oi["substrate"] = "zeros";
  EXPECT_NEAR(score("insertion", m, x, good, classes({0}), oi)[0].item<double>(), 6.25, 1e-12);
  // MoRF with 1-pixel patches and zero baseline: drops 4, 7, 9, 10 -> AOPC 7.5; LeRF: 1, 3, 6, 10 -> 5.
  const nlohmann::json rp = {{"patch_size", 1}, {"perturb_baseline", "zeros"}, {"softmax", false}};
  EXPECT_NEAR(score("region_perturbation", m, x, good, classes({0}), rp)[0].item<double>(), 7.5, 1e-12);
  nlohmann::json lerf = rp;
  lerf["order"] = "lerf";
  EXPECT_NEAR(score("region_perturbation", m, x, good, classes({0}), lerf)[0].item<double>(), 5.0, 1e-12);
  // Comprehensiveness / sufficiency at 50%: removing the top 2 drops 7; keeping only them drops 3.
  const nlohmann::json e = {{"fractions", {0.5}}, {"softmax", false}};
  EXPECT_NEAR(score("comprehensiveness", m, x, good, classes({0}), e)[0].item<double>(), 7.0, 1e-12);
  EXPECT_NEAR(score("sufficiency", m, x, good, classes({0}), e)[0].item<double>(), 3.0, 1e-12);
}

TEST(Metrics, EraserOnTokensCountsOnlyTheSamplesTokens) {
  // Token ids [CLS]=2, 9, 7, [SEP]=3, [PAD]=0, [PAD]=0; logit = 2 (id 9 present) + 1 (id 7 present).
  // The padding holds mask_value: it is no token, even with the largest attribution, and k% counts
  // the 4 tokens. Top-25% = {9}, top-50% = {9, 7}: removing them drops 2 and 3 (comprehensiveness
  // 2.5); keeping only them gives 2 and 3 of 3 (sufficiency (1 + 0) / 2 = 0.5).
  Model m = scripted(
      "def forward(self, x):\n    return (2.0 * (x == 9).sum(1, keepdim=True) + (x == 7).sum(1, keepdim=True)).double()\n",
      {6}, "NL");
  const at::Tensor x = at::tensor({2, 9, 7, 3, 0, 0}, at::kLong).view({1, 6});
  const at::Tensor a = at::tensor({0.1, 5.0, 4.0, 0.2, 100.0, 100.0}, kD).view({1, 6});
  const nlohmann::json e = {{"fractions", {0.25, 0.5}}, {"softmax", false}};
  EXPECT_NEAR(score("comprehensiveness", m, x, a, classes({0}), e)[0].item<double>(), 2.5, 1e-12);
  EXPECT_NEAR(score("sufficiency", m, x, a, classes({0}), e)[0].item<double>(), 0.5, 1e-12);
}

TEST(Metrics, FaithfulnessOfPerfectAndRandomAttributionsOnALinearModel) {
  const at::Tensor w = at::randn({1, 40}, at::detail::createCPUGenerator(1), kD);
  Model m = scripted("def forward(self, x):\n    return torch.linear(x, self.w)\n", {40}, "NC", {{"w", w}});
  const at::Tensor x = at::randn({4, 40}, at::detail::createCPUGenerator(2), kD);
  const at::Tensor t = classes({0, 0, 0, 0});
  const at::Tensor perfect = x * w, noise = at::randn({4, 40}, at::detail::createCPUGenerator(3), kD);
  const nlohmann::json fc = {{"subset_size", 10}, {"perturb_baseline", "zeros"}, {"nr_runs", 50}};
  const at::Tensor good = score("faithfulness_correlation", m, x, perfect, t, fc);
  EXPECT_LT((good - 1).abs().max().item<double>(), 1e-9) << "attribution sums are exactly the drops";
  EXPECT_LT(score("faithfulness_correlation", m, x, noise, t, fc).abs().mean().item<double>(), 0.4);
  // Infidelity: for f = w.x the drop f(x) - f(x - I) is w.I, so a = w is exact.
  const at::Tensor inf_good = score("infidelity", m, x, w.expand({4, 40}), t);
  EXPECT_LT(inf_good.abs().max().item<double>(), 1e-20);
  EXPECT_GT(score("infidelity", m, x, noise, t).min().item<double>(), 1e-6);
  // Completeness: x * w sums to f(x) - f(0).
  EXPECT_LT(score("completeness_error", m, x, perfect, t).max().item<double>(), 1e-12);
  EXPECT_GT(score("completeness_error", m, x, noise, t).min().item<double>(), 1e-3);
  // A subset as large as the input is refused with the fix.
  try {
    score("faithfulness_correlation", m, x, perfect, t, {{"subset_size", 40}});
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("subset_size"), std::string::npos) << e.what();
  }
}

TEST(Metrics, InfidelityIsTheNoiseVarianceTimesTheAttributionErrorOnALinearModel) {
  // f = w.x, so f(x) - f(x - I) = w.I and (I.a - I.w)^2 has mean sigma^2 |a - w|^2 over Gaussian
  // I; over 20000 draws the mean of this chi-square(1) multiple is within 3% (relative std 1%).
  const at::Tensor w = at::randn({1, 40}, at::detail::createCPUGenerator(1), kD);
  Model m = scripted("def forward(self, x):\n    return torch.linear(x, self.w)\n", {40}, "NC", {{"w", w}});
  const at::Tensor x = at::randn({3, 40}, at::detail::createCPUGenerator(2), kD);
  const at::Tensor a = w.expand({3, 40}) + at::randn({3, 40}, at::detail::createCPUGenerator(3), kD);
  const double sigma = 0.003;
  const at::Tensor expected = sigma * sigma * (a - w).pow(2).sum(1);
  const at::Tensor got = score("infidelity", m, x, a, classes({0, 0, 0}), {{"n_perturb_samples", 20000}});
  EXPECT_LT(((got - expected).abs() / expected).max().item<double>(), 0.03) << got << expected;
}

TEST(Metrics, SensitivityOfGradientsOnALinearModelInClosedForm) {
  // Saliency of f = w.x does not move under any perturbation: both sensitivities are 0. Input x
  // gradient moves by w * delta, delta uniform in [-r, r]: |w * delta| / |w * x| is at most
  // r |w| / |w * x|, and its mean is r |w| / (sqrt(3) |w * x|) up to the spread of the norm over
  // 40 features (about 12% per draw, 1% over 200 draws, Jensen's bias 0.2%).
  const at::Tensor w = at::randn({1, 40}, at::detail::createCPUGenerator(4), kD);
  Model m = scripted("def forward(self, x):\n    return torch.linear(x, self.w)\n", {40}, "NC", {{"w", w}});
  const at::Tensor x = at::randn({3, 40}, at::detail::createCPUGenerator(5), kD);
  const at::Tensor t = classes({0, 0, 0});
  auto saliency = Registry::builtin().create("saliency", {{"abs", false}});
  auto ixg = Registry::builtin().create("input_x_gradient");
  for (const std::string metric : {"max_sensitivity", "avg_sensitivity"})
    EXPECT_LT(score(metric, m, x, w.expand({3, 40}), t, {}, {}, saliency.get()).abs().max().item<double>(), 1e-12)
        << metric;
  const double r = 0.2;
  const at::Tensor scale = r * w.norm() / (w * x).norm(2, 1);
  const at::Tensor avg = score("avg_sensitivity", m, x, w * x, t, {}, {}, ixg.get());
  const at::Tensor max = score("max_sensitivity", m, x, w * x, t, {}, {}, ixg.get());
  EXPECT_LT(((avg - scale / std::sqrt(3.0)).abs() / (scale / std::sqrt(3.0))).max().item<double>(), 0.05)
      << avg << scale / std::sqrt(3.0);
  EXPECT_TRUE((max >= avg).all().item<bool>());
  EXPECT_TRUE((max <= scale * (1 + 1e-9)).all().item<bool>()) << max << scale;
}

TEST(Metrics, RoadImputesAPlaneExactlySoThePredictionNeverChanges) {
  // ROAD's noisy linear imputation replaces each removed pixel by a weighted mean of its
  // neighbours; an affine image is its own such mean in the interior, so with noise 0 the imputed
  // images equal the input and every prediction is kept.
  at::Tensor x = (0.1 * at::arange(8, kD).view({1, 1, 8, 1}) + 0.05 * at::arange(8, kD).view({1, 1, 1, 8}));
  x = at::cat({x, x + 0.3});  // [2, 1, 8, 8]
  std::vector<at::Tensor> seen;
  InputSpec spec;
  spec.shape = {1, 8, 8};
  spec.layout = "NCHW";
  Model spy = Model::from_function(
      [&](const at::Tensor& b) {
        seen.push_back(b.detach().clone());
        return at::stack({b.sum({1, 2, 3}), -b.sum({1, 2, 3})}, 1);
      },
      spec);
  // The most relevant pixels: the 4x4 centre, away from the border where neighbours are missing.
  at::Tensor a = at::zeros({2, 1, 8, 8}, kD);
  a.slice(2, 2, 6).slice(3, 2, 6).fill_(1.0);
  a += 1e-3 * at::arange(64, kD).view({1, 1, 8, 8});  // a strict order inside and outside the centre
  const at::Tensor kept =
      score("road", spy, x, a, classes({0, 0}), {{"noise", 0.0}, {"percentages", {6.25, 12.5, 25.0}}});
  EXPECT_EQ(kept.min().item<double>(), 1.0);
  ASSERT_FALSE(seen.empty());
  for (const auto& b : seen)
    for (int64_t i = 0; i < b.size(0); ++i) {
      const double off = std::min((b[i] - x[0]).abs().max().item<double>(), (b[i] - x[1]).abs().max().item<double>());
      EXPECT_LT(off, 1e-6) << "an imputed image differs from the plane by " << off;
    }
}

TEST(Metrics, SampledMetricsAreDeterministicUnderASeed) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 3);
  const at::Tensor t = classes({0, 1, 2});
  const at::Tensor a = at::randn(x.sizes(), at::detail::createCPUGenerator(4));
  auto saliency = Registry::builtin().create("saliency");
  for (const std::string metric : {"faithfulness_correlation", "infidelity", "road", "max_sensitivity"}) {
    nlohmann::json o = {{"seed", 3}};
    if (metric == "faithfulness_correlation") o["subset_size"] = 16, o["nr_runs"] = 20;
    if (metric == "road") o["percentages"] = {20.0, 60.0};
    if (metric == "max_sensitivity") o["nr_samples"] = 3;
    const at::Tensor s1 = score(metric, m, x, a, t, o, {}, saliency.get());
    const at::Tensor s2 = score(metric, m, x, a, t, o, {}, saliency.get());
    EXPECT_TRUE(at::equal(s1.nan_to_num(-7), s2.nan_to_num(-7))) << metric;
    if (metric != "road") {
      o["seed"] = 4;
      EXPECT_FALSE(at::equal(s1, score(metric, m, x, a, t, o, {}, saliency.get()))) << metric << " ignores its seed";
    }
  }
}

// Sobel edge magnitude of the input: an "explanation" that never looks at the model.
class EdgeDetector : public Explainer {
 public:
  std::string name() const override { return "edge_detector"; }
  nlohmann::json options() const override { return nlohmann::json::object(); }
  Attribution attribute(Evaluator&, const ExplainRequest& r) const override {
    const at::Tensor kx = at::tensor({-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0}).view({1, 1, 3, 3}).to(r.inputs.dtype());
    const at::Tensor gx = at::conv2d(r.inputs, kx, {}, 1, 1), gy = at::conv2d(r.inputs, kx.transpose(2, 3), {}, 1, 1);
    Attribution a;
    a.values = (gx * gx + gy * gy).sqrt();
    return a;
  }
};

TEST(Metrics, RandomisationFailsAnEdgeDetectorAndPassesTheGradient) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 6);
  at::Tensor t;
  {
    at::NoGradGuard ng;
    t = m.forward(x).argmax(1);
  }
  EdgeDetector edges;
  auto saliency = Registry::builtin().create("saliency");
  auto explain = [&](const Explainer& e) {
    ExplainRequest r;
    r.inputs = x;
    r.target = Target::indices(std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()));
    return e.explain(m, r).values;
  };
  for (const std::string mode : {"cascading", "independent", "full"}) {
    const nlohmann::json o = {{"mode", mode}};
    const double edge = score("model_parameter_randomisation", m, x, explain(edges), t, o, {}, &edges).mean().item<double>();
    const double grad =
        score("model_parameter_randomisation", m, x, explain(*saliency), t, o, {}, saliency.get()).mean().item<double>();
    EXPECT_GT(edge, 0.999) << mode << ": the edge map does not change with the model";
    EXPECT_LT(grad, 0.6) << mode;
  }
  // full: every layer at once with the same draws, one explanation: the last point of the
  // cascading curve.
  {
    MetricInput in;
    in.model = &m;
    in.inputs = x;
    in.attributions = explain(*saliency);
    in.targets = t;
    in.explainer = saliency.get();
    nlohmann::json cascading, full;
    const auto& metrics = MetricRegistry::builtin();
    metrics.create("model_parameter_randomisation", {{"mode", "cascading"}})->score(in, &cascading);
    const at::Tensor s = metrics.create("model_parameter_randomisation", {{"mode", "full"}})->score(in, &full);
    ASSERT_EQ(full["layers"].size(), 1u);
    for (int64_t i = 0; i < x.size(0); ++i)
      EXPECT_NEAR(s[i].item<double>(), cascading["similarity_per_layer"][i].back().get<double>(), 1e-9) << i;
  }
  EXPECT_GT(score("random_logit", m, x, explain(edges), t, {}, {}, &edges).min().item<double>(), 0.999);
  EXPECT_LT(score("random_logit", m, x, explain(*saliency), t, {}, {}, saliency.get()).mean().item<double>(), 0.9);
}

TEST(Metrics, SimilaritiesAndBootstrap) {
  const at::Tensor a = at::randn({2, 30}, at::detail::createCPUGenerator(5), kD);
  EXPECT_LT((spearman_rows(a, 2 * a + 1) - 1).abs().max().item<double>(), 1e-12);
  EXPECT_LT((spearman_rows(a, -a) + 1).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ssim_rows(a, a) - 1).abs().max().item<double>(), 1e-12);
  EXPECT_LT(ssim_rows(a, at::randn({2, 30}, at::detail::createCPUGenerator(6), kD)).abs().max().item<double>(), 0.5);
  EXPECT_GT(ssim_rows(a, a + 0.01 * at::randn({2, 30}, at::detail::createCPUGenerator(6), kD)).min().item<double>(), 0.99);
  // Ties share their average rank: [1, 1, 2] vs [1, 2, 3] -> ranks [1.5, 1.5, 3].
  EXPECT_NEAR(spearman_rows(at::tensor({1.0, 1.0, 2.0}, kD).view({1, 3}), at::tensor({1.0, 2.0, 3.0}, kD).view({1, 3}))
                  .item<double>(),
              std::sqrt(3.0) / 2.0, 1e-12);
  // Top-fraction IoU by |value|: top 2 of 5 of [5, -4, 0, 1, 0] is {0, 1}; of [0, 3, -6, 1, 0] it is
  // {1, 2}: 1 shared of 3 -> 1/3. The same set -> 1; disjoint sets -> 0; at least one feature.
  const at::Tensor p = at::tensor({5.0, -4.0, 0.0, 1.0, 0.0}, kD).view({1, 5}), q = at::tensor({0.0, 3.0, -6.0, 1.0, 0.0}, kD).view({1, 5});
  EXPECT_NEAR(top_fraction_iou_rows(p, q, 0.4).item<double>(), 1.0 / 3.0, 1e-12);
  EXPECT_EQ(top_fraction_iou_rows(p, 2 * p, 0.4).item<double>(), 1.0);
  EXPECT_EQ(top_fraction_iou_rows(p, q, 0.01).item<double>(), 0.0);  // {0} vs {2}
  EXPECT_EQ(top_fraction_iou_rows(p, q, 1.0).item<double>(), 1.0);
  EXPECT_THROW(top_fraction_iou_rows(p, q, 0.0), InvalidArgument);
  const auto ci = bootstrap_mean({1, 2, 3, 4, std::nan(""), 5}, 2000, 7);
  EXPECT_DOUBLE_EQ(ci[0], 3.0);
  EXPECT_LT(ci[1], 3.0);
  EXPECT_GT(ci[2], 3.0);
  EXPECT_EQ(ci, bootstrap_mean({1, 2, 3, 4, std::nan(""), 5}, 2000, 7)) << "seeded";
}

// ---- evaluate runs ------------------------------------------------------------------------

EvaluateConfig small_config() {
  EvaluateConfig c;
  c.methods = {"saliency", "input_x_gradient"};
  c.metrics = {"pointing_game", "sparseness", "deletion"};
  c.metric_options["deletion"] = {{"n_steps", 8}};
  c.chunk = 2;
  c.bootstrap = 200;
  return c;
}

EvaluateData digits(int64_t n) {
  EvaluateData d;
  d.inputs = read_npy(fixture("digits_test.npy")).slice(0, 0, n);
  d.masks = at::zeros({n, 8, 8}, at::TensorOptions().dtype(at::kBool));
  d.masks.slice(1, 2, 6).slice(2, 2, 6).fill_(true);
  return d;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(Evaluate, ResumingAnInterruptedRunGivesTheSameResults) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  TempDir dir;
  const EvaluateData data = digits(7);
  const nlohmann::json whole = evaluate(m, data, small_config(), dir / "whole");
  EXPECT_EQ(whole["summary"]["pointing_game"]["methods"]["saliency"]["n"], 7);
  EXPECT_EQ(whole["summary"]["deletion"]["higher_is_better"], false);
  EXPECT_EQ(whole["summary"]["sparseness"]["ranking"].size(), 2u);

  // Interrupt after 3 of 8 units (4 chunks x 2 methods), then resume.
  EvaluateConfig c = small_config();
  int64_t units = 0;
  c.progress = [&](const EvaluateProgress& p) {
    if (p.done >= 3) c.eval.cancel.cancel();
    units = p.done;
  };
  EXPECT_THROW(evaluate(m, data, c, dir / "resumed"), Cancelled);
  EXPECT_FALSE(std::filesystem::exists(dir / "resumed/results.csv")) << "nothing final after an interruption";
  // A torn last line (the process killed mid-write) is computed again.
  std::ofstream(dir / "resumed/journal.jsonl", std::ios::app) << "{\"chunk\": 3, \"meth";
  EvaluateConfig again = small_config();
  int64_t first_report = -1;
  again.progress = [&](const EvaluateProgress& p) {
    if (first_report < 0) first_report = p.done;
  };
  evaluate(m, data, again, dir / "resumed");
  EXPECT_EQ(slurp(dir / "resumed/results.csv"), slurp(dir / "whole/results.csv"));
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "resumed/results.json"))["summary"], whole["summary"]);
  EXPECT_GE(units, 3);

  // The same folder with other settings is refused.
  EvaluateConfig other = small_config();
  other.metrics = {"entropy"};
  EXPECT_THROW(evaluate(m, data, other, dir / "whole"), InvalidArgument);
}

// The summary's mean deletion curve: its area (RISE's trapezoid) is the mean of the samples'
// areas, since both are linear; it starts at the clean prediction and every point is a probability.
TEST(Evaluate, MeanDeletionCurveIsTheMeanOfTheSamplesCurves) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  TempDir dir;
  const nlohmann::json r = evaluate(m, digits(5), small_config(), dir / "run");
  for (const char* method : {"saliency", "input_x_gradient"}) {
    const auto& d = r["summary"]["deletion"]["methods"][method];
    ASSERT_TRUE(d.contains("curve")) << d.dump();
    const std::vector<double> curve = d["curve"];
    ASSERT_GE(curve.size(), 3u);
    double area = 0;
    for (size_t t = 1; t < curve.size(); ++t) area += (curve[t] + curve[t - 1]) / 2;
    EXPECT_NEAR(area / static_cast<double>(curve.size() - 1), d["mean"].get<double>(), 1e-9);
    for (double p : curve) EXPECT_TRUE(p >= 0 && p <= 1) << p;
  }
  EXPECT_FALSE(r["summary"]["sparseness"]["methods"]["saliency"].contains("curve")) << "only metrics with curves";
}

TEST(Evaluate, BadInputGetsClearErrors) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  TempDir dir;
  EvaluateData data = digits(3);
  EvaluateConfig c = small_config();
  c.metrics = {"pointing_gam"};
  try {
    evaluate(m, data, c, dir / "a");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("Did you mean 'pointing_game'"), std::string::npos) << e.what();
  }
  c = small_config();
  EvaluateData wrong = data;
  wrong.masks = at::ones({3, 7, 7}, at::TensorOptions().dtype(at::kBool));
  try {
    evaluate(m, wrong, c, dir / "b");
    ADD_FAILURE();
  } catch (const ShapeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("8x8"), std::string::npos) << e.what();
  }
  EvaluateData none = data;
  none.masks = at::Tensor();
  EXPECT_THROW(evaluate(m, none, c, dir / "c"), InvalidArgument) << "pointing_game without masks";
  EvaluateData empty;
  empty.inputs = data.inputs.slice(0, 0, 0);
  EXPECT_THROW(evaluate(m, empty, c, dir / "d"), InvalidArgument);
  EvaluateData labels = data;
  labels.labels = at::zeros({2}, at::TensorOptions().dtype(at::kLong));
  EXPECT_THROW(evaluate(m, labels, c, dir / "e"), InvalidArgument);
}

TEST(Audit, FlagsARegionTheModelLeansOn) {
  // The logit is dominated by the mean of the top-left 3x3 corner: a planted shortcut.
  const std::string src = R"(
def forward(self, x):
    corner = x[:, :, 0:3, 0:3].mean([1, 2, 3])
    rest = x.mean([1, 2, 3])
    s = 8.0 * corner + 0.2 * rest
    return torch.stack([s, -s], 1)
)";
  Model shortcut = scripted(src, {1, 24, 24}, "NCHW");
  Model fair = scripted("def forward(self, x):\n    s = x.mean([1, 2, 3])\n    return torch.stack([s, -s], 1)\n",
                        {1, 24, 24}, "NCHW");
  EvaluateData d;
  d.inputs = at::rand({20, 1, 24, 24}, at::detail::createCPUGenerator(9));
  AuditConfig c;
  c.method = "input_x_gradient";
  const nlohmann::json hit = audit_shortcuts(shortcut, d, c);
  EXPECT_TRUE(hit["suspected"].get<bool>()) << hit.dump(2);
  EXPECT_EQ(hit["window"]["y0"], 0);
  EXPECT_EQ(hit["window"]["x0"], 0);
  EXPECT_GT(hit["mean_relevance_share"].get<double>(), 10 * hit["area_share"].get<double>());
  const nlohmann::json miss = audit_shortcuts(fair, d, c);
  EXPECT_FALSE(miss["suspected"].get<bool>()) << miss.dump(2);
}

}  // namespace

// ---- recommend: ranking on hand-made numbers -------------------------------------------------

namespace {

// One metric of an evaluation summary: {method: mean} with intervals mean -/+ half.
nlohmann::json summary_metric(bool higher, const std::map<std::string, double>& means, double half = 0.01) {
  nlohmann::json j = {{"higher_is_better", higher}, {"methods", nlohmann::json::object()}};
  for (const auto& [m, v] : means) j["methods"][m] = {{"mean", v}, {"ci95", {v - half, v + half}}, {"n", 16}};
  return j;
}

const nlohmann::json& question(const nlohmann::json& r, const std::string& name) {
  for (const auto& q : r["questions"])
    if (q["name"] == name) return q;
  throw std::runtime_error("no question " + name);
}

std::vector<std::string> order(const nlohmann::json& q) {
  std::vector<std::string> out;
  for (const auto& e : q["ranking"]) out.push_back(e["method"]);
  return out;
}

}  // namespace

TEST(Recommend, RanksByMeanRankOverTheQuestionsMetricsWithTies) {
  const std::vector<std::string> methods = {"a", "b", "c"};
  nlohmann::json s;
  // Faithfulness: a is best on deletion (lower), b on insertion; c ties with a on insertion.
  s["deletion"] = summary_metric(false, {{"a", 0.1}, {"b", 0.2}, {"c", 0.3}});
  s["insertion"] = summary_metric(true, {{"a", 0.5}, {"b", 0.9}, {"c", 0.5}});
  RecommendPlan plan;
  plan.questions = {{"faithfulness", {"deletion", "insertion"}, ""}};
  const auto r = rank_recommendations(s, methods, plan);
  const auto& q = question(r, "faithfulness");
  // Ranks: deletion a 1, b 2, c 3; insertion b 1, a and c share 2.5. Mean: a 1.75, b 1.5, c 2.75.
  EXPECT_EQ(order(q), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_DOUBLE_EQ(q["ranking"][0]["mean_rank"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(q["ranking"][1]["mean_rank"].get<double>(), 1.75);
  EXPECT_DOUBLE_EQ(q["ranking"][1]["evidence"]["insertion"]["rank"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(q["ranking"][2]["evidence"]["insertion"]["rank"].get<double>(), 2.5);
  EXPECT_EQ(q["recommended"], nlohmann::json::array({"b"}));
  // b beats a on insertion by far more than the intervals, but not on deletion: not clear.
  EXPECT_FALSE(q["clear"].get<bool>());
  // Equal numbers everywhere: one shared first place, every method recommended.
  nlohmann::json t;
  t["deletion"] = summary_metric(false, {{"a", 0.2}, {"b", 0.2}, {"c", 0.2}});
  plan.questions = {{"faithfulness", {"deletion"}, ""}};
  const auto tied_result = rank_recommendations(t, methods, plan);
  const auto& tied = question(tied_result, "faithfulness");
  for (const auto& e : tied["ranking"]) EXPECT_EQ(e["position"], 1) << e.dump();
  EXPECT_EQ(tied["recommended"].size(), 3u);
  // Separated intervals: the recommendation is clear.
  nlohmann::json u;
  u["deletion"] = summary_metric(false, {{"a", 0.1}, {"b", 0.5}, {"c", 0.9}});
  EXPECT_TRUE(question(rank_recommendations(u, methods, plan), "faithfulness")["clear"].get<bool>());
}

TEST(Recommend, MissingLocalisationIsReportedNotRanked) {
  nlohmann::json s;
  s["max_sensitivity"] = summary_metric(false, {{"a", 0.3}, {"b", 0.1}});
  RecommendPlan plan;
  plan.questions = {{"localisation", {"pointing_game"}, "no ground-truth masks"},
                    {"stability", {"max_sensitivity"}, ""},
                    {"faithfulness", {"deletion"}, ""}};
  const auto r = rank_recommendations(s, {"a", "b"}, plan);
  EXPECT_EQ(question(r, "localisation")["unavailable"], "no ground-truth masks");
  EXPECT_FALSE(question(r, "localisation").contains("ranking"));
  EXPECT_EQ(question(r, "faithfulness")["unavailable"], "the run has no deletion");
  EXPECT_EQ(question(r, "stability")["recommended"], nlohmann::json::array({"b"}));
  // The setup says so without masks, and never measures stability on token ids.
  const RecommendSetup images = recommend_setup("images", 1024, false, false, true, "", 0.8);
  EXPECT_FALSE(images.plan.questions[0].unavailable.empty());
  EXPECT_EQ(std::count(images.metrics.begin(), images.metrics.end(), "pointing_game"), 0);
  const RecommendSetup tokens = recommend_setup("tokens", 16, true, false, true, "tok", 0.8);
  EXPECT_EQ(std::count(tokens.metrics.begin(), tokens.metrics.end(), "pointing_game"), 1);
  EXPECT_EQ(std::count(tokens.metrics.begin(), tokens.metrics.end(), "max_sensitivity"), 0);
  EXPECT_EQ(tokens.method_options.at("layer_integrated_gradients")["layers"][0], "tok");
  EXPECT_THROW(recommend_setup("tokens", 16, true, false, true, "", 0.8), InvalidArgument);
  EXPECT_THROW(recommend_setup("audio", 16, true, false, true, "", 0.8), InvalidArgument);
  // A baseline distribution swaps in the methods that take one.
  const RecommendSetup dist = recommend_setup("tables", 10, true, true, true, "", 0.8, true);
  EXPECT_EQ(std::count(dist.methods.begin(), dist.methods.end(), "expected_gradients"), 1);
  EXPECT_EQ(std::count(dist.methods.begin(), dist.methods.end(), "integrated_gradients"), 0);
  EXPECT_EQ(dist.metric_options.at("comprehensiveness")["softmax"], false);
}

TEST(Recommend, AMethodFailingTheRandomisationCheckIsAvoided) {
  const std::vector<std::string> methods = {"edge", "grad", "half"};
  nlohmann::json s;
  // "edge" localises best but its map survives randomised weights (interval above 0.8): avoid.
  // "half" straddles the threshold: borderline, not avoided.
  s["pointing_game"] = summary_metric(true, {{"edge", 0.9}, {"grad", 0.6}, {"half", 0.5}});
  s["model_parameter_randomisation"] = summary_metric(false, {{"edge", 0.95}, {"grad", 0.2}, {"half", 0.8}}, 0.03);
  RecommendPlan plan;
  plan.questions = {{"localisation", {"pointing_game"}, ""}, {"sanity", {"model_parameter_randomisation"}, ""}};
  const auto r = rank_recommendations(s, methods, plan);
  ASSERT_EQ(r["avoid"].size(), 1u) << r.dump();
  EXPECT_EQ(r["avoid"][0]["method"], "edge");
  EXPECT_NEAR(r["avoid"][0]["evidence"]["model_parameter_randomisation"]["mean"].get<double>(), 0.95, 1e-12);
  EXPECT_EQ(r["sanity"]["edge"], "fail");
  EXPECT_EQ(r["sanity"]["grad"], "pass");
  EXPECT_EQ(r["sanity"]["half"], "borderline");
  const auto& loc = question(r, "localisation");
  EXPECT_EQ(loc["ranking"][0]["method"], "edge");  // still ranked, with its numbers...
  EXPECT_TRUE(loc["ranking"][0]["avoid"].get<bool>());
  EXPECT_EQ(loc["recommended"], nlohmann::json::array({"grad"}));  // ...but not recommended
  EXPECT_EQ(question(r, "sanity")["recommended"], nlohmann::json::array({"grad"}));
  // A higher threshold passes it.
  plan.sanity_threshold = 0.99;
  EXPECT_TRUE(rank_recommendations(s, methods, plan)["avoid"].empty());
  // The Markdown and the text name it under "avoid".
  const std::string md = recommend_markdown(r);
  EXPECT_NE(md.find("| 1 | edge (avoid) |"), std::string::npos) << md;
  EXPECT_NE(md.find("- edge: fails the randomisation check"), std::string::npos) << md;
  EXPECT_NE(recommend_text(r).find("avoid:\n  edge: fails"), std::string::npos) << recommend_text(r);
}
