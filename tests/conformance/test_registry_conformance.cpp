// One suite over every registered method (Captum's test_config idea): adding a method to the
// registry adds it here. Each property holds for every method, on the digits CNN fixture (the
// attention family, which needs attention maps, on the BERT-like text fixture).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "candela/io/npy.h"
#include "path_integral.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

// Options that keep each method fast without changing what it computes.
nlohmann::json fast_options(const std::string& name) {
  const auto& schema = Registry::builtin().get(name).schema;
  nlohmann::json o = nlohmann::json::object();
  if (Registry::builtin().get(name).family == "attention") return o;  // attention layers are found
  // Layer methods explain the second convolution; neuron methods one of its units.
  if (schema.contains("layers") && schema["layers"]["default"].empty()) o["layers"] = {"features.2"};
  if (schema.contains("neuron_selector")) o["neuron_selector"] = {3, 2, 2};
  if (schema.contains("n_steps")) o["n_steps"] = 16;
  if (!o.empty()) return o;
  // Perturbation methods: small budgets that still sample (4 feature groups, see request()).
  if (name == "rise") return {{"n_masks", 64}};
  if (name == "lime") return {{"num_samples", 200}};
  if (name == "kernel_shap") return {{"n_samples", 8}};
  if (name == "shapley_value_sampling") return {{"n_samples", 5}};
  if (name == "integrated_gradients") return {{"n_steps", 16}};
  if (name == "noise_tunnel") return {{"nt_samples", 3}, {"stdevs", 0.1}};
  if (name == "gradient_shap") return {{"n_samples", 6}, {"stdevs", 0.1}};
  if (name == "expected_gradients") return {{"n_samples", 6}};
  return nlohmann::json::object();
}

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    info_ = &Registry::builtin().get(GetParam());
    if (info_->family == "attention") {
      model_ = Model::load(fixture("text_bert.pt"));
      inputs_ = read_npy(fixture("text_test_ids.npy")).slice(0, 0, 3).to(at::kFloat).contiguous();
      target_ = 1;
      return;
    }
    inputs_ = read_npy(fixture("digits_test.npy")).slice(0, 0, 3).contiguous();
    reference_set_ = read_npy(fixture("digits_test.npy")).slice(0, 8, 12).contiguous();
  }
  std::unique_ptr<Explainer> make(nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json o = fast_options(GetParam());
    for (auto& [k, v] : extra.items()) o[k] = v;
    return info_->create(o);
  }
  ExplainRequest request(const at::Tensor& x) const {
    ExplainRequest r;
    r.inputs = x;
    r.target = Target::index(target_);
    if (info_->name == "gradient_shap" || info_->name == "expected_gradients" || info_->name == "lime" ||
        info_->name == "deep_lift_shap")
      r.baseline = Baseline::distribution(reference_set_);
    if (info_->family == "perturbation") {
      // Four features: the quadrants of the 8x8 digit.
      r.feature_mask = (at::arange(8).div(4, "floor").view({8, 1}) * 2 + at::arange(8).div(4, "floor").view({1, 8}))
                           .view({1, 8, 8});
    }
    return r;
  }
  Attribution explain(const Model& m, const at::Tensor& x, nlohmann::json extra = nlohmann::json::object(),
                      int64_t batch = 0) const {
    ExplainRequest r = request(x);
    r.eval.max_batch_size = batch;
    return make(std::move(extra))->explain(m, r);
  }

  const MethodInfo* info_ = nullptr;
  Model model_ = Model::load(fixture("digits_cnn.pt"));
  at::Tensor inputs_, reference_set_;
  int64_t target_ = 3;
};

// Float32 convolutions round differently at different batch sizes; Grad-CAM++'s g^2 / g^3
// weights amplify that to about 2e-5 of a normalised map. A real batching bug is O(1).
void expect_close(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  double scale = std::max(b.abs().max().item<double>(), 1e-8);
  EXPECT_LE((a - b).abs().max().item<double>(), 5e-5 * scale) << what;
}

}  // namespace

TEST_P(Conformance, ShapeOutputAndMetadata) {
  auto a = explain(model_, inputs_);
  if (a.spatial_map) {
    EXPECT_EQ(a.values.sizes(), (at::IntArrayRef{3, 1, 8, 8})) << "a map over the input's grid";
  } else if (!a.layer.empty()) {
    EXPECT_EQ(a.values.sizes(), (at::IntArrayRef{3, 16, 8, 8})) << "values over layer " << a.layer;
  } else {
    EXPECT_EQ(a.values.sizes(), inputs_.sizes());
  }
  EXPECT_TRUE(at::isfinite(a.values).all().item<bool>());
  EXPECT_EQ(a.output.size(0), 3);
  if (info_->uses_target) EXPECT_EQ(a.targets, (std::vector<int64_t>{target_, target_, target_}));
  EXPECT_GT(a.model_evaluations, 0);
  // (A global surrogate fitted to these 3 rows cannot split; it is tested on data sets.)
  if (info_->family != "global")
    EXPECT_GT(a.values.abs().sum().item<double>(), 0.0) << "an all-zero map explains nothing";
  auto meta = a.metadata();
  EXPECT_EQ(meta["method"], GetParam());
  EXPECT_EQ(meta["model_evaluations"], a.model_evaluations);
  for (const auto& [key, _] : info_->schema.items()) EXPECT_TRUE(meta["options"].contains(key)) << key;
}

TEST_P(Conformance, BatchInvariance) {
  auto together = explain(model_, inputs_);
  for (int64_t i = 0; i < inputs_.size(0); ++i) {
    auto alone = explain(model_, inputs_.slice(0, i, i + 1));
    expect_close(together.values[i], alone.values[0], "sample " + std::to_string(i));
  }
}

TEST_P(Conformance, InvariantToTheBatchSizeTheEvaluatorPicks) {
  auto automatic = explain(model_, inputs_);
  for (int64_t batch : {1, 5}) expect_close(explain(model_, inputs_, {}, batch).values, automatic.values,
                                            "batch " + std::to_string(batch));
  if (info_->schema.contains("internal_batch_size"))
    expect_close(explain(model_, inputs_, {{"internal_batch_size", 2}}).values, automatic.values, "internal_batch_size");
}

TEST_P(Conformance, DeterministicUnderASeed) {
  auto a = explain(model_, inputs_), b = explain(model_, inputs_);
  EXPECT_TRUE(at::equal(a.values, b.values));
  // A global surrogate on these 3 rows has nothing to subsample (rulefit needs 4 rows for a tree);
  // its seed is tested on data sets in its unit tests.
  if (info_->stochastic && info_->family != "global") {
    auto c = explain(model_, inputs_, {{"seed", 12345}});
    EXPECT_FALSE(at::allclose(a.values, c.values)) << "the seed must matter";
  }
}

TEST_P(Conformance, SameNumbersWithOneAndTwoThreads) {
  // Intra-op threads split reductions differently; float32 rounding may differ, nothing else.
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  auto one = explain(model_, inputs_);
  at::set_num_threads(2);
  auto two = explain(model_, inputs_);
  at::set_num_threads(before);
  const double scale = std::max(one.values.abs().max().item<double>(), 1e-12);
  EXPECT_LE((one.values - two.values).abs().max().item<double>(), 1e-6 * scale);
  EXPECT_EQ(one.targets, two.targets);
}

TEST_P(Conformance, ModelUnchangedAfterAnExceptionOrARun) {
  auto* module = model_.module();
  ASSERT_NE(module, nullptr);
  module->train(true);
  for (auto p : module->parameters()) p.set_requires_grad(false);
  std::vector<at::Tensor> before;
  for (const auto& p : module->parameters()) before.push_back(p.detach().clone());
  auto unchanged = [&](const char* when) {
    EXPECT_TRUE(module->is_training()) << when;
    for (const auto& m : module->modules()) EXPECT_TRUE(m.is_training()) << when;
    size_t i = 0;
    for (const auto& p : module->parameters()) {
      EXPECT_FALSE(p.requires_grad()) << when;
      EXPECT_TRUE(at::equal(p.detach(), before[i++])) << when;
      EXPECT_FALSE(p.grad().defined() && p.grad().abs().sum().item<double>() > 0) << when;
    }
  };
  ExplainRequest bad = request(inputs_);
  if (info_->uses_target) {
    bad.target = Target::index(10);
  } else {
    bad.inputs = at::zeros({1, 1, 9, 9});  // a shape the model cannot take
  }
  EXPECT_THROW(make()->explain(model_, bad), Error);
  unchanged("after an invalid request");

  ExplainRequest cancelled = request(inputs_);
  cancelled.eval.max_batch_size = 1;
  int calls = 0;
  cancelled.eval.progress = [&](const Progress&) {
    if (++calls == 2) cancelled.eval.cancel.cancel();
  };
  EXPECT_THROW(make()->explain(model_, cancelled), Cancelled);
  unchanged("after cancellation");

  make()->explain(model_, request(inputs_));
  unchanged("after a normal run");
}

TEST_P(Conformance, CompletenessWhereClaimed) {
  if (!info_->completeness) GTEST_SKIP() << GetParam() << " does not claim completeness";
  nlohmann::json defaults = nlohmann::json::object();
  if (info_->schema.contains("n_steps")) defaults["n_steps"] = info_->schema["n_steps"]["default"];
  auto a = explain(model_, inputs_, defaults);
  ASSERT_TRUE(a.convergence_delta.defined());
  if (!a.layer.empty()) GTEST_SKIP() << "layer attributions sum to the output difference; checked in their unit tests";
  at::NoGradGuard no_grad;
  // f at the baseline: zeros, or the mean over a baseline distribution (DeepSHAP).
  const at::Tensor f0 = request(inputs_).baseline.is_distribution()
                            ? model_.forward(reference_set_).select(1, 3).mean().expand({3})
                            : model_.forward(at::zeros_like(inputs_)).select(1, 3);
  at::Tensor df = (a.output.select(1, 3) - f0).abs();
  // Shapley values and DeepLIFT add up exactly, up to float32 rounding of the sum; a quadrature
  // (Integrated Gradients) within what its points can reach on this path (tests/path_integral.h).
  at::Tensor bound = 0.01 * df + 1e-5 * a.values.abs().reshape({3, -1}).sum(1) + 1e-6;
  if (info_->schema.contains("n_steps")) {
    const at::Tensor g = candela::testing::path_integrand(
        candela::testing::target_logit([&](const at::Tensor& p) { return model_.module()->forward({p}).toTensor(); },
                                       {3, 3, 3}),
        inputs_, at::zeros_like(inputs_));
    bound = candela::testing::quadrature_error_bound(candela::testing::sampled_variation(g),
                                                     defaults["n_steps"].get<int64_t>(), df)
                .to(at::kFloat);
  }
  EXPECT_TRUE((a.convergence_delta.abs() <= bound).all().item<bool>())
      << a.convergence_delta << "\n" << df << "\n" << bound;
  // The delta is what it claims to be: sum of attributions minus f(x) - f(baseline). With
  // feature groups each element carries its group's value, so every group counts once.
  at::Tensor weight = at::ones({1, 64});
  ExplainRequest r = request(inputs_);
  if (r.feature_mask.defined()) {
    at::Tensor ids = r.feature_mask.reshape({1, 64});
    weight = 1.0 / at::bincount(ids.flatten()).index_select(0, ids.flatten()).to(at::kFloat).view({1, 64});
  }
  at::Tensor sums = (a.values.reshape({3, -1}) * weight).sum(1);
  expect_close(sums - a.convergence_delta, a.output.select(1, 3) - f0, "delta definition");
}

INSTANTIATE_TEST_SUITE_P(Registry, Conformance, ::testing::ValuesIn(Registry::builtin().names()),
                         [](const auto& info) { return info.param; });
