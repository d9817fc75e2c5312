// Results that would mislead carry a warning (code, sentence, numbers) in attribution.json, and
// results that would not carry none. Each case is built so that the caveat holds by construction,
// whatever the fixtures' weights.
#include <gtest/gtest.h>

#include "candela/io/input.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::linear_model;

namespace {

Attribution explain(const std::string& method, const Model& m, const at::Tensor& x, nlohmann::json options = {},
                    Target target = Target::index(0), Baseline baseline = Baseline::zeros()) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(target);
  r.baseline = std::move(baseline);
  return Registry::builtin().create(method, options.is_null() ? nlohmann::json::object() : options)->explain(m, r);
}

const nlohmann::json* find(const Attribution& a, const std::string& code) {
  for (const auto& w : a.warnings)
    if (w["code"] == code) return &w;
  return nullptr;
}

InputSpec tabular(int64_t features) {
  InputSpec s;
  s.shape = {features};
  s.layout = "NC";
  return s;
}

}  // namespace

TEST(Warnings, ConstantAttributionOfAModelThatIgnoresItsInput) {
  // Zero weights: the gradient is 0 everywhere, so saliency says nothing.
  Model flat = linear_model(at::zeros({2, 4}), at::tensor({0.5f, -0.5f}));
  auto a = explain("saliency", flat, at::rand({3, 4}, at::detail::createCPUGenerator(1)));
  const auto* w = find(a, "constant_attribution");
  ASSERT_NE(w, nullptr) << a.warnings.dump();
  EXPECT_EQ((*w)["values"]["samples"], (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ((*w)["values"]["value"][0].get<double>(), 0.0);
  EXPECT_NE((*w)["message"].get<std::string>().find("constant"), std::string::npos);
  EXPECT_EQ(a.metadata()["warnings"], a.warnings) << "attribution.json carries them";
  // A model that uses its input: no caveat.
  Model used = linear_model(at::tensor({1.f, -2.f, 3.f, 0.5f, 0.f, 1.f, 1.f, 1.f}).view({2, 4}), at::zeros({2}));
  EXPECT_TRUE(explain("saliency", used, at::rand({3, 4}, at::detail::createCPUGenerator(1))).warnings.empty());
}

TEST(Warnings, ConvergenceDeltaAboveFivePercentOfTheOutputChange) {
  // f(x) = sum(x^2) from the zero baseline: the path integrand is 2 alpha |x|^2. Two left Riemann
  // points (alpha 0 and 1/2, weight 1/2 each) sum to |x|^2 / 2: the delta is half of f(x) - f(0).
  // Gauss-Legendre with 8 points integrates the linear integrand exactly.
  Model square = Model::from_function([](const at::Tensor& b) { return b.pow(2).sum(1, true); }, tabular(3));
  const at::Tensor x = at::tensor({1.f, 2.f, 3.f, -1.f, 0.5f, 2.f}).view({2, 3});
  auto coarse = explain("integrated_gradients", square, x, {{"n_steps", 2}, {"method", "riemann_left"}});
  const auto* w = find(coarse, "convergence_delta");
  ASSERT_NE(w, nullptr) << coarse.warnings.dump();
  EXPECT_EQ((*w)["values"]["samples"], (std::vector<int64_t>{0, 1}));
  EXPECT_NEAR((*w)["values"]["relative_delta"][0].get<double>(), 0.5, 1e-6);
  EXPECT_NEAR((*w)["values"]["relative_delta"][1].get<double>(), 0.5, 1e-6);
  EXPECT_NE((*w)["message"].get<std::string>().find("50%"), std::string::npos) << (*w)["message"];
  EXPECT_NEAR(coarse.output_change[0].item<double>(), 14.0, 1e-5);
  auto exact = explain("integrated_gradients", square, x, {{"n_steps", 8}});
  EXPECT_EQ(find(exact, "convergence_delta"), nullptr) << exact.warnings.dump();
}

TEST(Warnings, NonFiniteModelOutput) {
  Model log = Model::from_function([](const at::Tensor& b) { return b.log().sum(1, true); }, tabular(2));
  auto a = explain("saliency", log, at::tensor({1.f, -1.f, 2.f, 3.f}).view({2, 2}));
  const auto* w = find(a, "non_finite_output");
  ASSERT_NE(w, nullptr) << a.warnings.dump();
  EXPECT_EQ((*w)["values"]["count"], 1);
}

TEST(Warnings, SurrogatesThatCannotFitAnInteraction) {
  // f = x0 * x1 around the origin, with symmetric data: no linear model and no single split
  // explains any of its variance. (lime samples the continuous features here; with its default
  // quartile bins even a linear function scores low, as in lime itself.)
  Model product = Model::from_function([](const at::Tensor& b) { return (b.select(1, 0) * b.select(1, 1)).unsqueeze(1); },
                                       tabular(2));
  const at::Tensor data = at::rand({400, 2}, at::detail::createCPUGenerator(3)) * 2 - 1;
  auto lime = explain("lime", product, at::zeros({1, 2}), {{"num_samples", 500}, {"discretize_continuous", false}}, Target::index(0),
                      Baseline::distribution(data));
  const auto* w = find(lime, "poor_surrogate_fit");
  ASSERT_NE(w, nullptr) << lime.warnings.dump() << lime.extra.dump();
  EXPECT_LT(lime.extra["score"][0].get<double>(), 0.5);
  auto tree = explain("surrogate_tree", product, data, {{"max_depth", 1}});
  ASSERT_NE(find(tree, "poor_surrogate_fit"), nullptr) << tree.extra.dump();
  EXPECT_EQ(find(tree, "poor_surrogate_fit")->at("values")["metric"], "r2");
  // A linear model is fitted perfectly by lime: no caveat.
  Model line = Model::from_function([](const at::Tensor& b) { return (2 * b.select(1, 0) - b.select(1, 1)).unsqueeze(1); },
                                    tabular(2));
  auto fine = explain("lime", line, at::zeros({1, 2}), {{"num_samples", 500}, {"discretize_continuous", false}}, Target::index(0),
                      Baseline::distribution(data));
  EXPECT_EQ(find(fine, "poor_surrogate_fit"), nullptr) << fine.warnings.dump();
}

TEST(Warnings, ZBoxBoundsThatDoNotContainTheInputs) {
  // The digits CNN's spec: range [0, 1], no normalisation, so the default box is [0, 1].
  Model m = Model::load(fixture("digits_cnn.pt"));
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 2);
  auto inside = explain("lrp", m, x, {{"composite", "epsilon_gamma_box"}});
  EXPECT_EQ(find(inside, "z_box_bounds"), nullptr) << inside.warnings.dump();
  // The same pixels standardised (as a .npy saved after normalisation would be).
  auto outside = explain("lrp", m, (x - 0.5) / 0.25, {{"composite", "epsilon_gamma_box"}});
  const auto* w = find(outside, "z_box_bounds");
  ASSERT_NE(w, nullptr) << outside.warnings.dump();
  EXPECT_EQ((*w)["values"]["low"], std::vector<double>{0.0});
  EXPECT_EQ((*w)["values"]["high"], std::vector<double>{1.0});
  EXPECT_LT((*w)["values"]["input_min"].get<double>(), 0.0);
  EXPECT_NE((*w)["message"].get<std::string>().find("--mean"), std::string::npos);
  // Bounds given by the user are the user's choice: no caveat.
  auto given = explain("lrp", m, (x - 0.5) / 0.25, {{"composite", "epsilon_gamma_box"}, {"low", {-2.0}}, {"high", {2.0}}});
  EXPECT_EQ(find(given, "z_box_bounds"), nullptr) << given.warnings.dump();
}

TEST(InferLayout, FromTheShapeOfA4dArray) {
  InputSpec s;
  EXPECT_NE(infer_layout(s, at::zeros({2, 3, 32, 32})).find("NCHW"), std::string::npos);
  EXPECT_EQ(s.layout, "NCHW");
  EXPECT_EQ(s.shape, (std::vector<int64_t>{3, 32, 32}));
  InputSpec t;
  EXPECT_NE(infer_layout(t, at::zeros({2, 28, 28, 1})).find("NHWC"), std::string::npos);
  EXPECT_EQ(t.layout, "NHWC");
  EXPECT_EQ(t.channels(), 1);
  // Ambiguous or not an image: nothing is inferred, and code that needs a layout asks for it.
  for (auto shape : {std::vector<int64_t>{2, 8, 8, 8}, std::vector<int64_t>{2, 3, 3, 3}, std::vector<int64_t>{2, 30}}) {
    InputSpec u;
    EXPECT_EQ(infer_layout(u, at::zeros(shape)), "");
    EXPECT_EQ(u.layout, "");
  }
  // A layout given is kept.
  InputSpec given;
  given.layout = "NHWC";
  EXPECT_EQ(infer_layout(given, at::zeros({2, 3, 32, 32})), "");
  EXPECT_EQ(given.layout, "NHWC");
  try {
    Baseline::blurred(2.0).for_inputs(at::zeros({2, 8, 8, 8}), "", 0);
    FAIL() << "a blur needs a layout";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--layout NCHW"), std::string::npos) << e.what();
  }
}
