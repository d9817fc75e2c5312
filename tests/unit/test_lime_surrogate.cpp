// Known answers for the CSV reader, LIME and the global surrogate tree.
#include <gtest/gtest.h>

#include <fstream>

#include "candela/io/csv.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::TempDir;
using candela::testing::linear_model;
using candela::testing::rel_error;

namespace {

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name, std::ios::binary) << text;
  return dir / name;
}

// The ParseError message read_csv gives for `text`.
std::string csv_error(const std::string& text) {
  TempDir dir;
  try {
    read_csv(write(dir, "t.csv", text));
  } catch (const ParseError& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

Attribution explain(const Explainer& e, const Model& m, const at::Tensor& x, Baseline base = Baseline::zeros(),
                    at::Tensor mask = {}, Target t = Target::top1()) {
  ExplainRequest r;
  r.inputs = x;
  r.baseline = std::move(base);
  r.feature_mask = std::move(mask);
  r.target = std::move(t);
  return e.explain(m, r);
}

at::Tensor training_rows(int64_t m, const std::vector<double>& mean, const std::vector<double>& std_, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t d = static_cast<int64_t>(mean.size());
  return at::randn({m, d}, gen, at::kFloat) * at::tensor(std_, at::kFloat) + at::tensor(mean, at::kFloat);
}

}  // namespace

// ---- CSV -------------------------------------------------------------------------------------

TEST(Csv, HeaderIsDetectedAndQuotedNamesMayHoldCommas) {
  TempDir dir;
  Table t = read_csv(write(dir, "a.csv", "age,\"income, k$\" , \"say \"\"hi\"\"\"\n1,2.5,-3\r\n4, 5e1 ,+6\n\n"));
  EXPECT_EQ(t.columns, (std::vector<std::string>{"age", "income, k$", "say \"hi\""}));
  ASSERT_EQ(t.values.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_EQ(t.values.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(t.values, at::tensor({1.f, 2.5f, -3.f, 4.f, 50.f, 6.f}).view({2, 3})));
}

TEST(Csv, WithoutHeaderColumnsAreNamedF0ToFn) {
  TempDir dir;
  Table t = read_csv(write(dir, "b.csv", "\xEF\xBB\xBF" "0.5,1\n2,3"));
  EXPECT_EQ(t.columns, (std::vector<std::string>{"f0", "f1"}));
  EXPECT_TRUE(at::equal(t.values, at::tensor({0.5f, 1.f, 2.f, 3.f}).view({2, 2})));
}

TEST(Csv, EveryErrorNamesTheFileLineColumnAndFix) {
  {
    TempDir dir;
    try {
      read_csv(dir / "missing.csv");
      FAIL();
    } catch (const IoError& e) {
      EXPECT_CONTAINS(e.what(), "missing.csv");
    }
  }
  EXPECT_CONTAINS(csv_error(""), "is empty");
  EXPECT_CONTAINS(csv_error("\n\n"), "is empty");
  EXPECT_CONTAINS(csv_error("a,b\n"), "no data rows");
  EXPECT_CONTAINS(csv_error("a,b\n1,2\n3\n"), "line 3 has 1 cell but line 1 (the header) has 2");
  EXPECT_CONTAINS(csv_error("1,2\n3,4,5\n"), "line 2 has 3 cells but line 1 has 2");
  EXPECT_CONTAINS(csv_error("id,age\n1,30\n2,\n"), "missing value at line 3, column 'age'; fill or drop it");
  EXPECT_CONTAINS(csv_error("1,2\n3, \n"), "missing value at line 2, column 2; fill or drop it");
  EXPECT_CONTAINS(csv_error("id,age\n1,thirty\n"), "'thirty' at line 2, column 'age' is not a number");
  EXPECT_CONTAINS(csv_error("id,age\n1,nan\n"), "non-finite value 'nan' at line 2, column 'age'");
  EXPECT_CONTAINS(csv_error("id,age\n1,-inf\n"), "non-finite value '-inf'");
  EXPECT_CONTAINS(csv_error("nan,1\n"), "non-finite value 'nan' at line 1, column 1");
  EXPECT_CONTAINS(csv_error("id,age\n1,1e300\n"), "outside the range of float32");
  EXPECT_CONTAINS(csv_error("\"id,age\n1,2\n"), "unterminated quote in the cell starting at line 1");
  EXPECT_CONTAINS(csv_error("a,,c\n1,2,3\n"), "no name for column 2");
  EXPECT_CONTAINS(csv_error("id,age\n1,x\n"), "t.csv");
}

// ---- LIME: the surrogate's solver --------------------------------------------------------------

TEST(LimeSurrogate, RidgeMatchesTheWeightedNormalEquationsAndLassoShrinks) {
  auto gen = at::detail::createCPUGenerator(3);
  at::Tensor z = at::randn({300, 3}, gen, at::kDouble);
  at::Tensor y = z.matmul(at::tensor({2.0, -1.0, 0.0}, at::kDouble)) + 0.5;
  at::Tensor w = at::rand({300}, gen, at::kDouble);
  auto exact = fit_lime_surrogate(z, y, w, "none", 10, "ridge", 0.0);
  EXPECT_NEAR(exact.coef[0], 2.0, 1e-10);
  EXPECT_NEAR(exact.coef[1], -1.0, 1e-10);
  EXPECT_NEAR(exact.coef[2], 0.0, 1e-10);
  EXPECT_NEAR(exact.intercept, 0.5, 1e-10);
  EXPECT_NEAR(exact.score, 1.0, 1e-12);
  EXPECT_NEAR(exact.local_prediction, y[0].item<double>(), 1e-10);
  // Ridge(alpha): (Zc' W Zc + alpha I) b = Zc' W yc with weighted centring.
  auto ridge = fit_lime_surrogate(z, y, w, "none", 10, "ridge", 5.0);
  at::Tensor zm = (w.unsqueeze(1) * z).sum(0) / w.sum(), ym = (w * y).sum() / w.sum();
  at::Tensor zc = z - zm, yc = y - ym;
  at::Tensor b = at::linalg_solve(zc.t().matmul(w.unsqueeze(1) * zc) + 5.0 * at::eye(3, at::kDouble),
                                  zc.t().matmul(w * yc));
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(ridge.coef[j], b[j].item<double>(), 1e-10);
  EXPECT_EQ(ridge.standard_error.size(), 3u);
  // Lasso with a large alpha zeroes every coefficient; a small one keeps the signs.
  auto zero = fit_lime_surrogate(z, y, w, "none", 10, "lasso", 100.0);
  for (double c : zero.coef) EXPECT_EQ(c, 0.0);
  auto lasso = fit_lime_surrogate(z, y, w, "none", 10, "lasso", 0.1);
  EXPECT_GT(lasso.coef[0], 1.5);
  EXPECT_LT(lasso.coef[1], -0.5);
  EXPECT_EQ(lasso.coef[2], 0.0);
  EXPECT_TRUE(lasso.standard_error.empty());
  // Forward selection (num_features <= 6) picks the strongest feature first.
  auto one = fit_lime_surrogate(z, y, w, "auto", 1, "ridge", 1.0);
  EXPECT_EQ(one.features, (std::vector<int64_t>{0}));
  EXPECT_EQ(one.coef[1], 0.0);
  auto top = fit_lime_surrogate(z, y, w, "highest_weights", 2, "ridge", 1.0);
  EXPECT_EQ(top.features.size(), 2u);
}

// ---- LIME: tabular -----------------------------------------------------------------------------

TEST(LimeTabular, LinearModelWithoutDiscretisationGivesWeightTimesStd) {
  const std::vector<double> mean = {1.0, -2.0, 0.0, 5.0}, sd = {1.0, 2.0, 1.0, 3.0};
  at::Tensor train = training_rows(2000, mean, sd, 1);
  at::Tensor w = at::tensor({2.0f, -1.0f, 4.0f, 0.0f}).view({1, 4});
  Model m = linear_model(w, at::tensor({0.3f}));
  at::Tensor x = training_rows(2, mean, sd, 2);
  Lime lime({.discretize_continuous = false, .seed = 7});
  auto a = explain(lime, m, x, Baseline::distribution(train));
  ASSERT_EQ(a.values.sizes(), x.sizes());
  // lime fits on (x - mean) / std, so the coefficient of a linear model is w_j * std_j.
  at::Tensor expected = w[0] * train.std(0, /*unbiased=*/false);
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_LT(rel_error(a.values[i], expected), 2e-3) << a.values[i] << expected;
    EXPECT_GT(a.extra["score"][i].get<double>(), 0.9999);
    // The surrogate at the instance is the model there.
    EXPECT_NEAR(a.extra["local_prediction"][i].get<double>(), a.output[i][0].item<double>(), 1e-2);
  }
  EXPECT_EQ(a.model_evaluations, 2 * 5000) << "the instances, then num_samples - 1 perturbations each";
  EXPECT_EQ(a.extra["mode"], "tabular");
  EXPECT_NEAR(a.extra["kernel_width"].get<double>(), std::sqrt(4.0) * 0.75, 1e-12);
  EXPECT_EQ(a.extra["explanation"][0][0]["feature"], "f2") << "largest |weight| first";
}

TEST(LimeTabular, DiscretisedWeightsHaveTheSignsOfTheModel) {
  const std::vector<double> mean = {0.0, 0.0, 0.0}, sd = {1.0, 1.0, 1.0};
  at::Tensor train = training_rows(1000, mean, sd, 3);
  Model m = linear_model(at::tensor({1.5f, -2.0f, 0.0f}).view({1, 3}), at::tensor({0.0f}));
  // An instance in the top quartile of every feature: being in that bin raises the output
  // where w > 0 and lowers it where w < 0.
  at::Tensor x = at::tensor({1.5f, 1.5f, 1.5f}).view({1, 3});
  auto a = explain(Lime({.num_samples = 3000}), m, x, Baseline::distribution(train));
  EXPECT_GT(a.values[0][0].item<double>(), 0.5);
  EXPECT_LT(a.values[0][1].item<double>(), -0.5);
  EXPECT_LT(std::abs(a.values[0][2].item<double>()), 0.1);
  const std::string first = a.extra["explanation"][0][0]["feature"];
  EXPECT_EQ(first.rfind("f1 > ", 0), 0u) << first;
  EXPECT_FLOAT_EQ(a.extra["explanation"][0][0]["weight"].get<double>(), a.values[0][1].item<float>());
  // The model only sees values the training data spans (each drawn within its bin).
  at::Tensor lo = train.amin(0), hi = train.amax(0);
  auto recorder = std::make_shared<std::vector<at::Tensor>>();
  Model spy = Model::from_function(
      [recorder](const at::Tensor& b) {
        recorder->push_back(b.clone());
        return b.sum(1, true);
      },
      InputSpec{.shape = {3}, .layout = "NC"});
  explain(Lime({.num_samples = 500}), spy, x, Baseline::distribution(train));
  at::Tensor seen = at::cat(*recorder);
  EXPECT_TRUE((seen >= lo).all().item<bool>() && (seen <= hi).all().item<bool>());
}

// lime's discretised fit from its definition, on the very rows the model saw: each feature
// becomes "in the instance's quartile" (np.percentile's quartiles, np.searchsorted's bins),
// the kernel is sqrt(exp(-d^2 / w^2)) of the Euclidean distance from the all-ones row with
// w = 0.75 sqrt(d), and the weights are sklearn's Ridge(alpha=1) with the kernel as sample
// weights (centred on the weighted means, intercept unpenalised).
TEST(LimeTabular, DiscretisedFitIsLimesRidgeOnTheBinIndicators) {
  at::Tensor train = training_rows(500, {0.0, 1.0, -1.0}, {1.0, 2.0, 0.5}, 31);
  const at::Tensor w = at::tensor({1.5f, -2.0f, 0.25f});
  auto recorder = std::make_shared<std::vector<at::Tensor>>();
  Model spy = Model::from_function(
      [recorder, w](const at::Tensor& b) {
        recorder->push_back(b.clone());
        return at::matmul(b, w).unsqueeze(1);
      },
      InputSpec{.shape = {3}, .layout = "NC"});
  at::Tensor x = at::tensor({0.3f, -1.2f, -0.6f}).view({1, 3});
  auto a = explain(Lime({.num_samples = 400, .seed = 5}), spy, x, Baseline::distribution(train));

  // The instance is evaluated alone first, then the perturbations; row 0 of the fit is x.
  const at::Tensor seen = at::cat(*recorder), rows = seen.to(at::kDouble);
  ASSERT_EQ(rows.size(0), 400);
  const at::Tensor y = at::matmul(seen, w).to(at::kDouble);  // the outputs lime regressed on
  const at::Tensor td = train.to(at::kDouble), xd = x[0].to(at::kDouble);
  at::Tensor z = at::empty({400, 3}, at::kDouble);
  for (int64_t j = 0; j < 3; ++j) {
    const at::Tensor q = at::quantile(td.select(1, j), at::tensor({0.25, 0.5, 0.75}, at::kDouble));
    auto bin = [&](const at::Tensor& v) { return (q.unsqueeze(0) < v.unsqueeze(1)).sum(1); };
    z.select(1, j).copy_(bin(rows.select(1, j)) == bin(xd[j].view({1})));
  }
  ASSERT_TRUE(z[0].all().item<bool>());
  const at::Tensor dist = (z - 1.0).pow(2).sum(1).sqrt();
  const double width = 0.75 * std::sqrt(3.0);
  const at::Tensor k = at::sqrt(at::exp(-dist.pow(2) / (width * width)));
  const at::Tensor zm = at::matmul(k, z) / k.sum(), ym = at::dot(k, y) / k.sum();
  const at::Tensor zc = z - zm, yc = y - ym;
  const at::Tensor gram = at::matmul(zc.t() * k, zc) + at::eye(3, at::kDouble);
  const at::Tensor coef = at::linalg_solve(gram, at::matmul(zc.t() * k, yc));

  // Both fits are in double; the attribution is stored as float.
  EXPECT_LT(rel_error(a.values[0].to(at::kDouble), coef), 1e-6) << a.values[0] << coef;
  const double intercept = (ym - at::dot(zm, coef)).item<double>();
  EXPECT_NEAR(a.extra["intercept"][0].get<double>(), intercept, 1e-10 * (1 + std::abs(intercept)));
  EXPECT_NEAR(a.extra["local_prediction"][0].get<double>(), intercept + coef.sum().item<double>(), 1e-10 * (1 + std::abs(intercept)));
}

TEST(LimeTabular, DeterministicUnderASeedAndBatchInvariant) {
  at::Tensor train = training_rows(200, {0, 0, 0}, {1, 1, 1}, 4);
  Model m = linear_model(at::tensor({1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f}).view({2, 3}), at::tensor({0.f, 0.f}));
  at::Tensor x = training_rows(3, {0, 0, 0}, {1, 1, 1}, 5);
  Lime lime({.num_samples = 500, .seed = 11});
  auto a = explain(lime, m, x, Baseline::distribution(train));
  auto b = explain(lime, m, x, Baseline::distribution(train));
  EXPECT_TRUE(at::equal(a.values, b.values));
  auto alone = explain(lime, m, x.slice(0, 2, 3), Baseline::distribution(train));
  EXPECT_TRUE(at::allclose(alone.values[0], a.values[2], 1e-5, 1e-7));
  auto c = explain(Lime({.num_samples = 500, .seed = 12}), m, x, Baseline::distribution(train));
  EXPECT_FALSE(at::allclose(a.values, c.values));
}

TEST(LimeTabular, BreastCancerMlpWithLimeDefaults) {
  Model m = Model::load(candela::testing::fixture("breast_cancer_mlp.pt"));
  at::Tensor train = read_npy(candela::testing::fixture("breast_cancer_train.npy"));
  at::Tensor x = read_npy(candela::testing::fixture("breast_cancer_test.npy")).slice(0, 0, 4);
  auto a = explain(Lime(), m, x, Baseline::distribution(train), {}, Target::index(1));
  EXPECT_EQ(a.model_evaluations, 4 * 5000);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ((a.values[i] != 0).sum().item<int64_t>(), 10) << "num_features = 10 by highest weights";
    EXPECT_EQ(a.extra["explanation"][i].size(), 10u);
    const double score = a.extra["score"][i];
    EXPECT_GT(score, 0.0);
    EXPECT_LE(score, 1.0);
  }
}

TEST(LimeTabular, BadRequestsAreClearErrors) {
  Model m = linear_model(at::tensor({1.0f, 2.0f}).view({1, 2}), at::tensor({0.f}));
  at::Tensor x = at::ones({1, 2});
  try {
    explain(Lime(), m, x);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_CONTAINS(e.what(), "--baseline dist:");
  }
  try {
    Lime({.num_samples = 0});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_CONTAINS(e.what(), "num_samples must be at least 2");
  }
  EXPECT_THROW(Lime({.regressor = "svm"}), InvalidArgument);
  EXPECT_THROW(Lime({.kernel_width = -1}), InvalidArgument);
  EXPECT_THROW(options_from_json<Lime::Options>({{"num_samples", 0}}, "lime"), InvalidArgument);
}

// ---- LIME: images ------------------------------------------------------------------------------

namespace {
// 8x8 images, four 4x4 quadrant superpixels (ids 0 1 / 2 3); the model scores the mean of
// quadrant 1 (top right), the score of each image in [N, 1].
struct QuadrantCase {
  at::Tensor mask = (at::arange(8).div(4, "floor").view({8, 1}) * 2 + at::arange(8).div(4, "floor").view({1, 8}));
  at::Tensor x = at::rand({2, 3, 8, 8}, at::detail::createCPUGenerator(9)) + 0.5;
  Model model = Model::from_function(
      [](const at::Tensor& b) { return b.slice(2, 0, 4).slice(3, 4, 8).pow(2).mean({1, 2, 3}).unsqueeze(1); },
      [] {
        InputSpec s;
        s.shape = {3, 8, 8};
        s.layout = "NCHW";
        return s;
      }());
};
}  // namespace

TEST(LimeImage, TheScoredSuperpixelGetsTheLargestWeight) {
  QuadrantCase c;
  for (auto hide : {std::vector<double>{}, std::vector<double>{0.0}}) {
    auto a = explain(Lime({.num_samples = 400, .hide_color = hide}), c.model, c.x, Baseline::zeros(), c.mask);
    EXPECT_EQ(a.extra["mode"], "image");
    for (int64_t i = 0; i < 2; ++i) {
      at::Tensor v = a.values[i];
      const double scored = v[0][0][4].item<double>();
      EXPECT_GT(scored, 0.0);
      // Every element of a superpixel carries its weight, over all channels.
      EXPECT_TRUE(at::allclose(v.slice(1, 0, 4).slice(2, 4, 8), at::full({3, 4, 4}, scored, v.options())));
      // The others only pick up ridge's shrinkage leaking through the sample's correlations.
      EXPECT_LT(v.slice(1, 4, 8).abs().max().item<double>(), 1e-2 * scored);
      EXPECT_LT(v.slice(1, 0, 4).slice(2, 0, 4).abs().max().item<double>(), 1e-2 * scored);
      EXPECT_GT(a.extra["score"][i].get<double>(), 0.999);
    }
  }
  // With hide_color 0 the on/off difference is the quadrant's mean square exactly.
  auto a = explain(Lime({.num_samples = 400, .feature_selection = "none", .alpha = 0.0, .hide_color = {0.0}}),
                   c.model, c.x, Baseline::zeros(), c.mask);
  const double truth = c.x[0].slice(1, 0, 4).slice(2, 4, 8).pow(2).mean().item<double>();
  EXPECT_NEAR(a.values[0][0][0][4].item<double>(), truth, 1e-5);
}

TEST(LimeImage, ChannelsLastAndPerChannelHideColour) {
  QuadrantCase c;
  InputSpec spec;
  spec.shape = {8, 8, 3};
  spec.layout = "NHWC";
  Model nhwc = Model::from_function(
      [](const at::Tensor& b) { return b.slice(1, 0, 4).slice(2, 4, 8).pow(2).mean({1, 2, 3}).unsqueeze(1); }, spec);
  at::Tensor x = c.x.permute({0, 2, 3, 1}).contiguous();
  auto a = explain(Lime({.num_samples = 300, .hide_color = {0.0, 0.0, 0.0}}), nhwc, x, Baseline::zeros(), c.mask);
  at::Tensor v = a.values[1];
  EXPECT_GT(v[0][4][2].item<double>(), 0.5);
  EXPECT_TRUE(at::allclose(v.slice(0, 0, 4).slice(1, 4, 8), v[0][4][2].expand({4, 4, 3})));
  EXPECT_LT(v.slice(0, 4, 8).abs().max().item<double>(), 1e-2 * v[0][4][2].item<double>());
  EXPECT_THROW(explain(Lime({.hide_color = {0.0, 0.0}}), nhwc, x, Baseline::zeros(), c.mask), InvalidArgument);
}

TEST(LimeImage, CnnFixtureIsBatchAndBatchSizeInvariant) {
  Model m = Model::load(candela::testing::fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(candela::testing::fixture("digits_test.npy")).slice(0, 0, 3).contiguous();
  at::Tensor mask = (at::arange(8).div(4, "floor").view({8, 1}) * 2 + at::arange(8).div(4, "floor").view({1, 8}));
  Lime lime({.num_samples = 200});
  auto run = [&](const at::Tensor& in, int64_t batch) {
    ExplainRequest r;
    r.inputs = in;
    r.target = Target::index(3);
    r.feature_mask = mask.view({1, 8, 8});
    r.eval.max_batch_size = batch;
    return lime.explain(m, r);
  };
  auto together = run(x, 0);
  EXPECT_GT(together.values.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(together.targets, (std::vector<int64_t>{3, 3, 3}));
  EXPECT_EQ(together.model_evaluations, 3 * 200);
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_TRUE(at::allclose(run(x.slice(0, i, i + 1), 0).values[0], together.values[i], 1e-4, 1e-6)) << i;
  EXPECT_TRUE(at::allclose(run(x, 5).values, together.values, 1e-4, 1e-6));
}

TEST(LimeImage, WithoutAFeatureMaskAskForSuperpixels) {
  QuadrantCase c;
  try {
    explain(Lime(), c.model, c.x);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_CONTAINS(e.what(), "--features slic:20");
  }
}

// ---- LIME: text --------------------------------------------------------------------------------

TEST(LimeText, RemovingTheCountedTokenIsItsWeight) {
  // Token ids as floats, 0 = padding (the mask token). The model counts token 7.
  InputSpec spec;
  spec.shape = {10};
  spec.layout = "NL";
  Model m = Model::from_function([](const at::Tensor& b) { return (b == 7).sum(1, true).to(at::kFloat); }, spec);
  at::Tensor x = at::tensor({3.f, 7.f, 5.f, 7.f, 9.f, 2.f, 0.f, 0.f, 0.f, 0.f}).view({1, 10});
  auto a = explain(Lime({.num_samples = 1000, .alpha = 0.0}), m, x);
  EXPECT_EQ(a.extra["mode"], "text");
  EXPECT_EQ(a.extra["feature_count"][0], 5) << "bag of words: tokens 2 3 5 7 9";
  at::Tensor v = a.values[0];
  EXPECT_NEAR(v[1].item<double>(), 2.0, 1e-6) << "both 7s go together";
  EXPECT_NEAR(v[3].item<double>(), 2.0, 1e-6);
  for (int k : {0, 2, 4, 5}) EXPECT_LT(std::abs(v[k].item<double>()), 1e-6) << k;
  for (int k : {6, 7, 8, 9}) EXPECT_EQ(v[k].item<double>(), 0.0) << "padding is no feature";
  EXPECT_NEAR(a.extra["score"][0].get<double>(), 1.0, 1e-9);
  // By position, each 7 counts once.
  auto p = explain(Lime({.num_samples = 1000, .bow = false}), m, x);  // lime's Ridge(alpha=1) shrinks a little
  EXPECT_EQ(p.extra["feature_count"][0], 6);
  EXPECT_NEAR(p.values[0][1].item<double>(), 1.0, 0.05);
  EXPECT_NEAR(p.values[0][3].item<double>(), 1.0, 0.05);
  EXPECT_LT(p.values[0].slice(0, 4, 6).abs().max().item<double>(), 0.05);
  // Fractional "token ids" are refused.
  EXPECT_THROW(explain(Lime(), m, x + 0.5), InvalidArgument);
}

// ---- Surrogate tree ----------------------------------------------------------------------------

namespace {
Model threshold_model() {
  InputSpec spec;
  spec.shape = {3};
  spec.layout = "NC";
  // class 1 ("high") exactly when x0 > 0.5
  Model m = Model::from_function(
      [](const at::Tensor& b) {
        at::Tensor s = b.select(1, 0) - 0.5;
        return at::stack({-s, s}, 1);
      },
      spec);
  m.set_class_names({"low", "high"});
  return m;
}
}  // namespace

TEST(SurrogateTree, RecoversAThresholdRuleWithFidelityOne) {
  Model m = threshold_model();
  at::Tensor x = at::rand({300, 3}, at::detail::createCPUGenerator(21));
  auto a = explain(SurrogateTree({.feature_names = {"x0", "x1", "x2"}}), m, x);
  EXPECT_EQ(a.extra["fidelity"].get<double>(), 1.0);
  EXPECT_EQ(a.extra["depth"], 1);
  EXPECT_EQ(a.extra["leaves"], 2);
  ASSERT_EQ(a.extra["rules"].size(), 2u);
  double coverage = 0;
  for (const auto& r : a.extra["rules"]) {
    EXPECT_EQ(r["fidelity"].get<double>(), 1.0);
    coverage += r["coverage"].get<double>();
    EXPECT_NEAR(r["conditions"][0]["threshold"].get<double>(), 0.5, 0.02);
  }
  EXPECT_NEAR(coverage, 1.0, 1e-12);
  const std::string left = a.extra["rules"][0]["rule"], right = a.extra["rules"][1]["rule"];
  EXPECT_EQ(left.rfind("if x0 <= 0.", 0), 0u) << left;
  EXPECT_CONTAINS(left, " then low");
  EXPECT_EQ(right.rfind("if x0 > 0.", 0), 0u) << right;
  EXPECT_CONTAINS(right, " then high");
  // All the impurity decrease is x0's, for every row.
  ASSERT_EQ(a.values.sizes(), x.sizes());
  EXPECT_TRUE(at::allclose(a.values, at::tensor({1.f, 0.f, 0.f}).expand_as(x)));
  // Default names f0, f1, ...
  auto d = explain(SurrogateTree(), m, x);
  EXPECT_CONTAINS(d.extra["rules"][1]["rule"].get<std::string>(), "f0 > ");
}

// A two-level rule, class 1 exactly when x0 > 0.5 and x1 > 0.3: the tree has three leaves
// and fidelity 1, and each feature's importance is its Gini decrease, n_node * gini(node) -
// the children's, computed here from the counts of the three regions.
TEST(SurrogateTree, TwoLevelRuleAndItsGiniImportances) {
  InputSpec spec{.shape = {3}, .layout = "NC"};
  Model m = Model::from_function(
      [](const at::Tensor& b) {
        at::Tensor s = at::minimum(b.select(1, 0) - 0.5, b.select(1, 1) - 0.3);
        return at::stack({-s, s}, 1);
      },
      spec);
  m.set_class_names({"low", "high"});
  at::Tensor x = at::rand({400, 3}, at::detail::createCPUGenerator(23));
  auto a = explain(SurrogateTree({.feature_names = {"x0", "x1", "x2"}}), m, x);
  EXPECT_EQ(a.extra["fidelity"].get<double>(), 1.0);
  EXPECT_EQ(a.extra["depth"], 2);
  EXPECT_EQ(a.extra["leaves"], 3);

  const at::Tensor hi0 = x.select(1, 0) > 0.5, hi1 = x.select(1, 1) > 0.3;
  const double n = 400, pos = (hi0 & hi1).sum().item<double>();
  const double n0 = hi0.sum().item<double>(), n1 = hi1.sum().item<double>();
  auto gini = [](double count, double positives) {
    const double p = positives / count;
    return count * 2 * p * (1 - p);  // count-weighted Gini impurity of a two-class node
  };
  // Splitting on x0 first leaves x0 <= 0.5 pure (class 0) and splits x0 > 0.5 on x1; the other
  // order is symmetric. CART takes the root split with the larger decrease.
  const double root = gini(n, pos);
  const double x0_first = root - gini(n0, pos), x1_first = root - gini(n1, pos);
  at::Tensor expected = x0_first >= x1_first ? at::tensor({x0_first, gini(n0, pos), 0.0})
                                             : at::tensor({gini(n1, pos), x1_first, 0.0});
  expected = expected / root;  // the decreases add up to the root's impurity: the leaves are pure
  EXPECT_LT(rel_error(a.values[0].to(at::kDouble), expected), 1e-6) << a.values[0] << expected;
  EXPECT_TRUE(at::equal(a.values, a.values[0].expand_as(a.values)));

  // The positive leaf's rule has both conditions, at thresholds between the nearest rows.
  int positive_rules = 0;
  for (const auto& r : a.extra["rules"]) {
    const std::string rule = r["rule"];
    if (rule.find("then high") == std::string::npos) continue;
    ++positive_rules;
    ASSERT_EQ(r["conditions"].size(), 2u) << rule;
    EXPECT_CONTAINS(rule, "x0 > 0.");
    EXPECT_CONTAINS(rule, "x1 > 0.");
    EXPECT_NEAR(r["coverage"].get<double>(), pos / n, 1e-12);
    for (const auto& c : r["conditions"])
      EXPECT_NEAR(c["threshold"].get<double>(), c["feature"] == "x0" ? 0.5 : 0.3, 0.03) << rule;
  }
  EXPECT_EQ(positive_rules, 1) << a.extra["rules"];
}

TEST(SurrogateTree, RegressionOutputAndDegenerateData) {
  InputSpec spec;
  spec.shape = {2};
  Model m = Model::from_function([](const at::Tensor& b) { return (b.select(1, 1) > 0.25).to(at::kFloat) * 3.0 + 1.0; },
                                 spec);
  at::Tensor x = at::rand({200, 2}, at::detail::createCPUGenerator(22));
  auto a = explain(SurrogateTree(), m, x);
  EXPECT_EQ(a.extra["task"], "regression");
  EXPECT_NEAR(a.extra["fidelity"].get<double>(), 1.0, 1e-9) << "R^2 of the tree against the model";
  EXPECT_CONTAINS(a.extra["rules"][1]["rule"].get<std::string>(), "f1 > ");
  EXPECT_CONTAINS(a.extra["rules"][1]["rule"].get<std::string>(), "then 4");
  // One row, or one prediction everywhere: a single leaf, no importance.
  auto one = explain(SurrogateTree(), threshold_model(), at::full({1, 3}, 0.9f));
  EXPECT_EQ(one.extra["rules"][0]["rule"], "always high");
  EXPECT_EQ(one.extra["fidelity"].get<double>(), 1.0);
  EXPECT_EQ(one.values.abs().sum().item<double>(), 0.0);
  EXPECT_THROW(SurrogateTree({.max_depth = 0}), InvalidArgument);
  EXPECT_THROW(explain(SurrogateTree({.feature_names = {"a"}}), threshold_model(), at::rand({5, 3})), InvalidArgument);
}

// ---- Registration ------------------------------------------------------------------------------

namespace candela {
void register_lime_methods(Registry& registry);
}

TEST(LimeRegistration, BothMethodsAreCreatedFromJsonWithLimesDefaults) {
  Registry r;
  register_lime_methods(r);
  const auto& lime = r.get("lime");
  EXPECT_EQ(lime.family, "perturbation");
  EXPECT_TRUE(lime.stochastic);
  EXPECT_TRUE(lime.uses_baseline);
  EXPECT_EQ(lime.schema["num_samples"]["default"], 5000);
  EXPECT_EQ(lime.schema["num_features"]["default"], 10);
  EXPECT_EQ(lime.schema["alpha"]["default"], 1.0);
  auto e = r.create("lime", {{"num_samples", 50}, {"regressor", "lasso"}});
  EXPECT_EQ(e->options()["regressor"], "lasso");
  EXPECT_THROW(r.create("lime", {{"regresor", "lasso"}}), InvalidArgument);
  const auto& tree = r.get("surrogate_tree");
  EXPECT_FALSE(tree.uses_target);
  EXPECT_EQ(tree.schema["max_depth"]["default"], 4);
  auto t = r.create("surrogate_tree", {{"feature_names", {"a", "b", "c"}}});
  auto a = t->explain(threshold_model(), [] {
    ExplainRequest q;
    q.inputs = at::rand({50, 3}, at::detail::createCPUGenerator(5));
    return q;
  }());
  EXPECT_EQ(a.extra["fidelity"].get<double>(), 1.0);
  EXPECT_EQ(a.method, "surrogate_tree");
}
