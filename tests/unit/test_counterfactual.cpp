// Counterfactuals (candela/robustness/counterfactual.h): DiCE's loss terms against closed forms,
// and valid counterfactuals that respect every constraint on the breast-cancer MLP and on a model
// with a one-hot categorical feature.
#include <gtest/gtest.h>

#include "candela/io/npy.h"
#include "candela/robustness/counterfactual.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

EvalOptions fixed_batches() {
  EvalOptions e;
  e.measure_batch_size = false;
  return e;
}

// Every constraint holds for every counterfactual of every row.
void expect_constraints(const CounterfactualResult& r, const at::Tensor& x, const FeatureConstraints& c) {
  const at::Tensor cf = r.counterfactuals.to(at::kDouble);
  const at::Tensor xd = x.to(at::kDouble).unsqueeze(1);
  for (int64_t f : c.immutable) EXPECT_TRUE(at::equal(cf.select(2, f), xd.select(2, f).expand_as(cf.select(2, f)))) << f;
  for (int64_t f : c.integer) {  // a changed integer feature is a whole number (an unchanged one is the query's)
    const at::Tensor v = cf.select(2, f), unchanged = v.eq(xd.select(2, f).expand_as(v));
    EXPECT_TRUE((unchanged | v.eq(v.round())).all().item<bool>()) << f;
  }
  for (const auto& [f, range] : c.ranges) {
    EXPECT_GE(cf.select(2, f).min().item<double>(), range.first - 1e-4) << f;
    EXPECT_LE(cf.select(2, f).max().item<double>(), range.second + 1e-4) << f;
  }
  for (const auto& [f, dir] : c.monotone) {
    const at::Tensor change = (cf.select(2, f) - xd.select(2, f)) * dir;
    EXPECT_GE(change.min().item<double>(), -1e-4 * (1 + xd.select(2, f).abs().max().item<double>())) << f;
  }
  for (const auto& g : c.categorical) {
    const at::Tensor part = cf.index_select(2, at::tensor(g, at::kLong));
    EXPECT_TRUE(at::equal(part.sum(2), at::ones_like(part.sum(2)))) << "one-hot group sums to 1";
    EXPECT_TRUE(at::equal(part * (1 - part), at::zeros_like(part))) << "one-hot group is 0/1";
  }
}

}  // namespace

TEST(Counterfactual, DiceLossTermsAgainstClosedForms) {
  // One row, K = 2 counterfactuals, F = 3 features, C = 2 classes, target 1.
  const at::Tensor xz = at::tensor({0.5, 0.2, 0.0}, at::kDouble).view({1, 3});
  const at::Tensor z = at::tensor({0.7, 0.2, 0.4, 0.5, 0.0, 0.6}, at::kDouble).view({1, 2, 3});
  const at::Tensor logits = at::tensor({0.0, 0.3, 0.0, 2.0}, at::kDouble).view({1, 2, 2});
  const at::Tensor w = at::tensor({2.0, 1.0, 0.5}, at::kDouble);
  const auto t = candela::detail::dice_terms(z, xz, logits, at::tensor({1}, at::kLong), w, {{1, 2}});
  // hinge on the margin: relu(1 - 0.3) = 0.7, relu(1 - 2) = 0 -> mean 0.35
  EXPECT_NEAR(t.yloss.item<double>(), 0.35, 1e-12);
  // proximity: cf0 |.2,0,.4| . w = .4 + 0 + .2 = .6; cf1 |0,.2,.6| . w = 0 + .2 + .3 = .5; / (K F = 6)
  EXPECT_NEAR(t.proximity.item<double>(), 1.1 / 6, 1e-12);
  // diversity: dist(cf0, cf1) = |.2|*2 + |.2|*1 + |.2|*.5 = .7; det [[1+1e-4, 1/1.7], [1/1.7, 1+1e-4]]
  const double off = 1 / 1.7, on = 1 + 1e-4;
  EXPECT_NEAR(t.diversity.item<double>(), on * on - off * off, 1e-12);
  // regularisation over group {1, 2}: (0.2 + 0.4 - 1)^2 + (0 + 0.6 - 1)^2 = 0.16 + 0.16
  EXPECT_NEAR(t.regularisation.item<double>(), 0.32, 1e-12);
  // K = 1: no diversity term.
  EXPECT_EQ(candela::detail::dice_terms(z.slice(1, 0, 1), xz, logits.slice(1, 0, 1), at::tensor({1}, at::kLong), w, {})
                .diversity.item<double>(),
            0.0);
}

TEST(Counterfactual, TargetMarginIsTheBinaryLogitAndGeneralises) {
  // Binary logits: the margin of class 1 is log(p1 / p0).
  const at::Tensor logits = at::tensor({0.2, 1.5}, at::kDouble).view({1, 2});
  const at::Tensor p = at::softmax(logits, 1);
  EXPECT_NEAR(candela::detail::target_margin(logits, at::tensor({1}, at::kLong)).item<double>(),
              std::log(p[0][1].item<double>() / p[0][0].item<double>()), 1e-12);
  // Multiclass: f_t minus the best other class.
  const at::Tensor three = at::tensor({1.0, 4.0, 2.5}, at::kDouble).view({1, 3});
  EXPECT_DOUBLE_EQ(candela::detail::target_margin(three, at::tensor({2}, at::kLong)).item<double>(), -1.5);
  EXPECT_DOUBLE_EQ(candela::detail::target_margin(three, at::tensor({1}, at::kLong)).item<double>(), 1.5);
}

TEST(Counterfactual, ConstraintsFromJsonByNameAndIndex) {
  const std::vector<std::string> names = {"age", "income", "red", "green", "kids"};
  auto c = FeatureConstraints::from_json(
      {{"immutable", {"age"}}, {"integer", {4}}, {"categorical", nlohmann::json::array({{"red", "green"}})},
       {"ranges", {{"income", {0, 10}}}}, {"monotone", {{"kids", "increase"}}}},
      names, 5);
  EXPECT_EQ(c.immutable, std::vector<int64_t>{0});
  EXPECT_EQ(c.integer, std::vector<int64_t>{4});
  ASSERT_EQ(c.categorical.size(), 1u);
  EXPECT_EQ(c.categorical[0], (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(c.ranges.size(), 1u);
  EXPECT_EQ(c.ranges[0].first, 1);
  ASSERT_EQ(c.monotone.size(), 1u);
  EXPECT_EQ(c.monotone[0], (std::pair<int64_t, int>{4, 1}));
  EXPECT_THROW(FeatureConstraints::from_json({{"immutable", {"agee"}}}, names, 5), InvalidArgument);
  EXPECT_THROW(FeatureConstraints::from_json({{"imutable", {"age"}}}, names, 5), InvalidArgument);
  EXPECT_THROW(FeatureConstraints::from_json({{"monotone", {{"age", "up"}}}}, names, 5), InvalidArgument);
  EXPECT_THROW(FeatureConstraints::from_json({{"ranges", {{"age", {3, 1}}}}}, names, 5), InvalidArgument);
}

TEST(Counterfactual, DiceAndWachterAreValidAndRespectConstraintsOnTheBreastCancerMlp) {
  Model model = Model::load(fixture("breast_cancer_mlp.pt"));
  const at::Tensor x = read_npy(fixture("breast_cancer_test.npy")).to(at::kFloat).slice(0, 0, 4);
  const at::Tensor bg = read_npy(fixture("breast_cancer_train.npy")).to(at::kFloat);
  at::Tensor pred;
  {
    at::NoGradGuard g;
    pred = model.forward(x).argmax(1);
  }
  const at::Tensor target = 1 - pred;
  FeatureConstraints c;
  c.immutable = {0, 1};
  c.integer = {3};  // mean area
  const double lo = bg.select(1, 22).min().item<double>(), hi = bg.select(1, 22).max().item<double>();
  c.ranges = {{22, {lo, hi}}};  // worst perimeter
  c.monotone = {{20, 1}, {27, -1}};  // worst radius may only rise, worst concave points only fall
  for (const char* method : {"dice", "wachter"}) {
    CounterfactualOptions o;
    o.method = method;
    o.count = 2;
    CounterfactualResult r = counterfactuals(model, x, bg, target, c, o, fixed_batches());
    ASSERT_EQ(r.counterfactuals.sizes(), (at::IntArrayRef{4, 2, 30}));
    EXPECT_TRUE(r.valid.all().item<bool>()) << method << ": " << r.predictions << target;
    at::Tensor again;
    {
      at::NoGradGuard g;
      again = model.forward(r.counterfactuals.view({8, 30})).argmax(1).view({4, 2});
    }
    EXPECT_TRUE(at::equal(again, r.predictions)) << "the predictions reported are the model's";
    expect_constraints(r, x, c);
    const auto& rows = r.report["rows"];
    ASSERT_EQ(rows.size(), 4u);
    for (const auto& row : rows) {
      EXPECT_DOUBLE_EQ(row["validity"].get<double>(), 1.0) << method;
      EXPECT_GE(row["sparsity"].get<double>(), 0.0);
      EXPECT_LE(row["sparsity"].get<double>(), 1.0 - 1.0 / 30) << "at least one feature changed";
      EXPECT_GT(row["proximity"].get<double>(), 0.0);
      EXPECT_TRUE(row["diversity"].is_number());
    }
  }
}

TEST(Counterfactual, OneHotCategoricalAndIntegerFeaturesOnALinearModel) {
  // Features: [income, kids (integer), colour red, green, blue (one-hot)]; class 1 likes income and
  // green strongly, red is penalised.
  const at::Tensor w = at::tensor({0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.3, -2.0, 3.0, 0.0}, at::kFloat).view({2, 5});
  const at::Tensor b = at::tensor({0.0, -2.5}, at::kFloat);
  Model model = candela::testing::linear_model(w, b);
  const at::Tensor x = at::tensor({0.5, 1.0, 1.0, 0.0, 0.0, 0.2, 2.0, 0.0, 0.0, 1.0}, at::kFloat).view({2, 5});
  at::Tensor bg = at::tensor({0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 4.0, 0.0, 1.0, 0.0, 0.5, 2.0, 0.0, 0.0, 1.0,
                              0.2, 1.0, 0.0, 1.0, 0.0},
                             at::kFloat)
                      .view({4, 5});
  FeatureConstraints c;
  c.integer = {1};
  c.categorical = {{2, 3, 4}};
  c.immutable = {0};
  const at::Tensor target = at::ones({2}, at::kLong);
  for (const char* method : {"dice", "wachter"}) {
    CounterfactualOptions o;
    o.method = method;
    o.count = 3;
    CounterfactualResult r = counterfactuals(model, x, bg, target, c, o, fixed_batches());
    EXPECT_TRUE(r.valid.all().item<bool>()) << method << ": " << r.counterfactuals;
    expect_constraints(r, x, c);
  }
}

TEST(Counterfactual, OptionsAreCheckedAndMulticlassTargetsWork) {
  CounterfactualOptions bad;
  bad.count = 0;
  EXPECT_THROW(bad.validate(), InvalidArgument);
  bad = {};
  bad.method = "growing_spheres";
  EXPECT_THROW(bad.validate(), InvalidArgument);
  // Three classes: reach class 2 from rows predicted 0.
  const at::Tensor w = at::tensor({1.0, 0.0, 0.0, 1.0, -1.0, -1.0}, at::kFloat).view({3, 2});
  Model model = candela::testing::linear_model(w, at::zeros({3}));
  const at::Tensor x = at::tensor({0.8, 0.1, 0.9, 0.3}, at::kFloat).view({2, 2});
  const at::Tensor grid = at::linspace(-1, 1, 50);
  const at::Tensor bg = at::stack({grid, grid.flip(0)}, 1);
  CounterfactualOptions o;
  o.count = 2;
  CounterfactualResult r = counterfactuals(model, x, bg, at::full({2}, 2, at::kLong), {}, o, fixed_batches());
  EXPECT_TRUE(r.predictions.eq(2).all().item<bool>()) << r.counterfactuals;
}

TEST(Counterfactual, ImageCounterfactualFlipsTheDigitsCnnWithinRangeAndSparsely) {
  // The digits CNN (8x8, pixel range [0, 1]): every image reaches its target class (the class
  // after its top-1, a different one), every pixel stays in [0, 1], and the L1 step leaves pixels
  // untouched.
  Model model = Model::load(fixture("digits_cnn.pt"));
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 4).to(at::kFloat).contiguous();
  at::Tensor top;
  {
    at::NoGradGuard g;
    top = model.forward(x).argmax(1);
  }
  const at::Tensor target = (top + 1) % 10;
  ImageCounterfactualResult r = image_counterfactuals(model, x, target, {}, fixed_batches());
  EXPECT_TRUE(r.valid.all().item<bool>()) << r.report.dump();
  EXPECT_TRUE(at::equal(r.predictions, target));
  EXPECT_GE(r.counterfactuals.min().item<float>(), 0.0f);
  EXPECT_LE(r.counterfactuals.max().item<float>(), 1.0f);
  EXPECT_EQ(r.counterfactuals.sizes(), x.sizes());
  EXPECT_TRUE(at::allclose(r.change, r.counterfactuals - x, 1e-6, 1e-6));
  for (const auto& row : r.report["rows"]) {
    EXPECT_GT(row["sparsity"].get<double>(), 0.0) << row.dump();  // some pixels never move
    EXPECT_GT(row["proximity_l1"].get<double>(), 0.0);
  }
  // A larger L1 weight changes fewer pixels in total (or as few).
  ImageCounterfactualOptions sparse;
  sparse.l1_weight = 0.1;
  ImageCounterfactualResult s = image_counterfactuals(model, x, target, sparse, fixed_batches());
  EXPECT_LE(s.change.ne(0).sum().item<int64_t>(), r.change.ne(0).sum().item<int64_t>());
}
