// Known answers for the perturbation methods (occlusion, feature ablation, RISE) and the
// feature masks they use.
#include <gtest/gtest.h>

#include "candela/io/image.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::linear_model;
using candela::testing::rel_error;
using candela::testing::TempDir;

namespace {

struct LinearCase {
  at::Tensor w = at::tensor({0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0, -2.0, 0.1, 0.0, 1.0, 1.0}, at::kFloat).view({3, 4});
  at::Tensor b = at::tensor({0.1, -0.2, 0.3}, at::kFloat);
  at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5, -3.0, 0.0, 2.0, 1.0}, at::kFloat).view({2, 4});
  Model model = linear_model(w, b);
};

// A linear model over a 1 x 4 x 4 image: output k = sum_ij weight[k, 4 i + j] x_ij.
Model image_linear_model(const at::Tensor& weight, std::string layout = "NCHW") {
  torch::jit::Module m("ImageLinear");
  m.register_parameter("weight", weight.clone(), false);
  m.define(R"(
def forward(self, x):
    return torch.matmul(torch.flatten(x, 1), self.weight.t())
)");
  InputSpec spec;
  spec.shape = layout == "NCHW" ? std::vector<int64_t>{1, 4, 4} : std::vector<int64_t>{4, 4, 1};
  spec.layout = layout;
  return Model::from_module(m, spec);
}

// Output 0: the mean of the pixels in rows [0, 8) and columns [0, 8) of a 1 x 16 x 16 image;
// output 1: zero. The region mean is a submodule called from the parent.
Model region_mean_model() {
  torch::jit::Module sub("RegionMean");
  sub.define(R"(
def forward(self, x):
    return torch.mean(x[:, :, 0:8, 0:8], dim=[1, 2, 3])
)");
  torch::jit::Module m("RegionModel");
  m.register_module("sub", sub);
  m.define(R"(
def forward(self, x):
    r = self.sub.forward(x)
    return torch.stack([r, torch.zeros_like(r)], 1)
)");
  InputSpec spec;
  spec.shape = {1, 16, 16};
  spec.layout = "NCHW";
  return Model::from_module(m, spec);
}

Attribution run(const Explainer& e, const Model& m, const at::Tensor& x, Target t, Baseline base = Baseline::zeros(),
                at::Tensor feature_mask = {}, int64_t max_batch = 0) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(t);
  r.baseline = std::move(base);
  r.feature_mask = std::move(feature_mask);
  r.eval.max_batch_size = max_batch;
  return e.explain(m, r);
}

}  // namespace

// ---- feature ablation ----------------------------------------------------------------

TEST(FeatureAblation, LinearModelEachFeatureIsWeightTimesDifference) {
  LinearCase c;
  const at::Tensor ref = at::tensor({0.5, -0.5, 1.0, 0.0}, at::kFloat).view({1, 4});
  for (int64_t ppe : {1, 3, 0}) {
    FeatureAblation fa({.perturbations_per_eval = ppe});
    auto a = run(fa, c.model, c.x, Target::index(1), Baseline::tensor(ref));
    // Ablating feature i changes the score by w_i (x_i - b_i).
    EXPECT_LT(rel_error(a.values, (c.x - ref) * c.w[1]), 1e-6) << "perturbations_per_eval " << ppe;
    EXPECT_EQ(a.model_evaluations, 2 + 2 * 4) << "the inputs, then 4 features x 2 samples";
    if (ppe > 0) EXPECT_LE(a.batch_size, ppe * 2);
  }
  auto top = run(FeatureAblation(), c.model, c.x, Target::top1());
  const at::Tensor cls = (at::matmul(c.x, c.w.t()) + c.b).argmax(1);
  EXPECT_EQ(top.targets, (std::vector<int64_t>{cls[0].item<int64_t>(), cls[1].item<int64_t>()}));
  EXPECT_LT(rel_error(top.values, c.x * c.w.index_select(0, cls)), 1e-6);
  EXPECT_LT(rel_error(top.output, at::matmul(c.x, c.w.t()) + c.b), 1e-6);
}

TEST(FeatureAblation, GroupsGetTheDropOfTheWholeGroup) {
  LinearCase c;
  // Groups {0, 2} and {1, 3}: each element of a group gets the group's summed w_i x_i.
  const at::Tensor mask = at::tensor({0, 1, 0, 1}, at::kLong);
  auto a = run(FeatureAblation(), c.model, c.x, Target::index(0), Baseline::zeros(), mask);
  const at::Tensor t = c.x * c.w[0];
  const at::Tensor g0 = t.select(1, 0) + t.select(1, 2), g1 = t.select(1, 1) + t.select(1, 3);
  const at::Tensor expected = at::stack({g0, g1, g0, g1}, 1);
  EXPECT_LT(rel_error(a.values, expected), 1e-6);
  EXPECT_EQ(a.model_evaluations, 2 + 2 * 2);

  // One mask per sample; sample 1 uses ids {0, 3} only, so ids 1 and 2 cost it nothing.
  const at::Tensor per_sample = at::tensor({0, 0, 1, 2, 3, 3, 0, 0}, at::kLong).view({2, 4});
  auto b = run(FeatureAblation(), c.model, c.x, Target::index(0), Baseline::zeros(), per_sample);
  const at::Tensor t0 = t[0], t1 = t[1];
  const double s00 = (t0[0] + t0[1]).item<double>(), s1a = (t1[0] + t1[1]).item<double>(),
               s1b = (t1[2] + t1[3]).item<double>();
  const at::Tensor expected_b = at::tensor({s00, s00, t0[2].item<double>(), t0[3].item<double>(), s1a, s1a, s1b, s1b},
                                           at::kFloat)
                                    .view({2, 4});
  EXPECT_LT(rel_error(b.values, expected_b), 1e-6);
  EXPECT_EQ(b.model_evaluations, 2 + 3 + 2);
}

TEST(FeatureAblation, ImageGroupsFromAnHxWMaskCoverEveryChannelLayout) {
  const at::Tensor weight = at::arange(16, at::kFloat).view({1, 16});
  const at::Tensor quad = grid_mask(4, 4, 2);  // 2 x 2 squares, ids 0..3
  // Element (r, c) has contribution 4r + c; group sums: 0+1+4+5, 2+3+6+7, 8+9+12+13, 10+11+14+15.
  const at::Tensor expected =
      at::tensor({10, 10, 18, 18, 10, 10, 18, 18, 42, 42, 50, 50, 42, 42, 50, 50}, at::kFloat);
  for (std::string layout : {"NCHW", "NHWC"}) {
    Model m = image_linear_model(weight, layout);
    at::Tensor x = layout == "NCHW" ? at::ones({1, 1, 4, 4}) : at::ones({1, 4, 4, 1});
    auto a = run(FeatureAblation(), m, x, Target::index(0), Baseline::zeros(), quad);
    EXPECT_LT(rel_error(a.values.flatten(), expected), 1e-6) << layout;
    EXPECT_EQ(a.model_evaluations, 1 + 4);
  }
}

// ---- occlusion -------------------------------------------------------------------------

TEST(Occlusion, DefaultWindowOnTabularInputsIsFeatureAblation) {
  LinearCase c;
  const at::Tensor ref = at::full({1, 4}, 0.25, at::kFloat);
  auto a = run(Occlusion(), c.model, c.x, Target::index(2), Baseline::tensor(ref));
  EXPECT_LT(rel_error(a.values, (c.x - ref) * c.w[2]), 1e-6);
  EXPECT_EQ(a.model_evaluations, 2 + 2 * 4);
}

TEST(Occlusion, OverlappingAndCutOffWindowsAreAveraged) {
  LinearCase c;
  const at::Tensor t = c.x * c.w[1];  // c_i = w_i (x_i - 0)
  auto s = [&](int64_t row, int64_t from, int64_t to) { return t[row].slice(0, from, to).sum().item<double>(); };
  // Window 2, stride 1: windows [0,2) [1,3) [2,4).
  auto a = run(Occlusion({.sliding_window_shapes = {2}}), c.model, c.x, Target::index(1));
  for (int64_t r = 0; r < 2; ++r) {
    const double w0 = s(r, 0, 2), w1 = s(r, 1, 3), w2 = s(r, 2, 4);
    const std::vector<double> expected = {w0, (w0 + w1) / 2, (w1 + w2) / 2, w2};
    for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(a.values[r][i].item<double>(), expected[i], 1e-5) << r << "," << i;
  }
  EXPECT_EQ(a.model_evaluations, 2 + 3 * 2);
  // Window 3, stride 2: ceil((4 - 3) / 2) + 1 = 2 windows, [0,3) and [2,4) (cut off at the border).
  auto b = run(Occlusion({.sliding_window_shapes = {3}, .strides = {2}}), c.model, c.x, Target::index(1));
  for (int64_t r = 0; r < 2; ++r) {
    const double w0 = s(r, 0, 3), w1 = s(r, 2, 4);
    const std::vector<double> expected = {w0, w0, (w0 + w1) / 2, w1};
    for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(b.values[r][i].item<double>(), expected[i], 1e-5) << r << "," << i;
  }
  EXPECT_EQ(b.model_evaluations, 2 + 2 * 2);
}

TEST(Occlusion, ImageWindowsAndStridesMatchHandComputedValues) {
  // x = 1, baseline 0, weight 4r + c: a window's drop is the sum of 4r + c over it.
  const at::Tensor weight = at::arange(16, at::kFloat).view({1, 16});
  Model m = image_linear_model(weight);
  const at::Tensor x = at::ones({1, 1, 4, 4});
  // 3x3 windows, stride 1: at (0,0) (0,1) (1,0) (1,1) they drop 45, 54, 81, 90.
  auto a = run(Occlusion({.sliding_window_shapes = {1, 3, 3}}), m, x, Target::index(0));
  const at::Tensor expected = at::tensor({45.0, 49.5, 49.5, 54.0,       //
                                          63.0, 67.5, 67.5, 72.0,       //
                                          63.0, 67.5, 67.5, 72.0,       //
                                          81.0, 85.5, 85.5, 90.0},
                                         at::kFloat)
                                  .view({1, 1, 4, 4});
  EXPECT_LT(rel_error(a.values, expected), 1e-6) << a.values;
  EXPECT_EQ(a.model_evaluations, 1 + 4);
  EXPECT_EQ(a.extra["windows"], 4);

  // 2x2 windows, stride 2 (one value for every dimension): each element gets its square's sum.
  auto b = run(Occlusion({.sliding_window_shapes = {1, 2, 2}, .strides = {2}}), m, x, Target::index(0));
  const at::Tensor squares =
      at::tensor({10, 10, 18, 18, 10, 10, 18, 18, 42, 42, 50, 50, 42, 42, 50, 50}, at::kFloat).view({1, 1, 4, 4});
  EXPECT_LT(rel_error(b.values, squares), 1e-6);
  EXPECT_EQ(b.model_evaluations, 1 + 4);

  // 3x3 windows, stride 2: positions 0 and 2 per side, the second cut off to 2 rows/columns.
  // Window drops: (0,0) 45, (0,2) rows 0-2 cols 2-3: 3*(2+3) + 2*(0+4+8) = 39,
  // (2,0) rows 2-3 cols 0-2: 3*(8+12) + 2*(0+1+2) = 66, (2,2): 2*(8+12) + 2*(2+3) = 50.
  auto c = run(Occlusion({.sliding_window_shapes = {1, 3, 3}, .strides = {1, 2, 2}}), m, x, Target::index(0));
  const double a00 = 45, a02 = 39, a20 = 66, a22 = 50;
  const at::Tensor cut = at::tensor({a00, a00, (a00 + a02) / 2, a02,                                        //
                                     a00, a00, (a00 + a02) / 2, a02,                                        //
                                     (a00 + a20) / 2, (a00 + a20) / 2, (a00 + a02 + a20 + a22) / 4, (a02 + a22) / 2,  //
                                     a20, a20, (a20 + a22) / 2, a22},
                                    at::kFloat)
                             .view({1, 1, 4, 4});
  EXPECT_LT(rel_error(c.values, cut), 1e-6) << c.values;
}

TEST(Occlusion, BatchingDoesNotChangeTheValues) {
  const at::Tensor weight = at::randn({3, 16}, at::TensorOptions().dtype(at::kFloat));
  Model m = image_linear_model(weight);
  const at::Tensor x = at::rand({3, 1, 4, 4});
  Occlusion one({.sliding_window_shapes = {1, 2, 3}, .strides = {1, 1, 2}});
  Occlusion many({.sliding_window_shapes = {1, 2, 3}, .strides = {1, 1, 2}, .perturbations_per_eval = 0});
  auto a = run(one, m, x, Target::index(2), Baseline::constant(0.5), {}, 1);
  auto b = run(many, m, x, Target::index(2), Baseline::constant(0.5));
  EXPECT_LT(rel_error(a.values, b.values), 1e-6);
  EXPECT_EQ(a.batch_size, 1);
  EXPECT_GT(b.batch_size, 3);
}

TEST(Occlusion, RejectsWindowsThatDoNotFit) {
  Model m = image_linear_model(at::ones({1, 16}));
  const at::Tensor x = at::ones({1, 1, 4, 4});
  EXPECT_THROW(run(Occlusion({.sliding_window_shapes = {3, 3}}), m, x, Target::index(0)), InvalidArgument);
  EXPECT_THROW(run(Occlusion({.sliding_window_shapes = {1, 5, 1}}), m, x, Target::index(0)), InvalidArgument);
  EXPECT_THROW(run(Occlusion({.sliding_window_shapes = {1, 2, 2}, .strides = {1, 3, 3}}), m, x, Target::index(0)),
               InvalidArgument);
  EXPECT_THROW(Occlusion({.sliding_window_shapes = {0}}), InvalidArgument);
  EXPECT_THROW(Registry::builtin().create("occlusion", {{"strides", {-1}}}), InvalidArgument);
}

TEST(Occlusion, DefaultImageWindowIsAFifteenthOfTheSideWithHalfStride) {
  const at::Tensor x = at::ones({1, 3, 60, 45});
  InputSpec spec;
  spec.shape = {3, 60, 45};
  spec.layout = "NCHW";
  Model m = Model::from_function([](const at::Tensor& t) { return t.flatten(1).sum(1, true); }, spec);
  auto a = run(Occlusion(), m, x, Target::index(0));
  // round(45 / 15) = 3, stride ceil(3 / 2) = 2; all channels at once.
  EXPECT_EQ(a.extra["sliding_window_shapes"], (std::vector<int64_t>{3, 3, 3}));
  EXPECT_EQ(a.extra["strides"], (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(a.extra["windows"], 30 * 22);  // (ceil(57 / 2) + 1) x (ceil(42 / 2) + 1)
  // A sum model on x = 1: a window drops its element count, 27 inside the image; element
  // (0, 0) lies in the first window only.
  EXPECT_NEAR(a.values[0][0][0][0].item<double>(), 27.0, 1e-4);
}

// ---- RISE ------------------------------------------------------------------------------

TEST(Rise, SaliencyConcentratesOnTheRegionTheModelReads) {
  Model m = region_mean_model();
  const at::Tensor x = at::ones({1, 1, 16, 16});
  Rise rise({.n_masks = 2000, .grid_size = 4});
  auto a = run(rise, m, x, Target::index(0));
  ASSERT_EQ(a.values.sizes(), x.sizes());
  const at::Tensor s = a.values[0][0];
  const double inside = s.slice(0, 0, 8).slice(1, 0, 8).mean().item<double>();
  const double far = s.slice(0, 12, 16).slice(1, 12, 16).mean().item<double>();
  // Far from the region a mask value is nearly independent of the score: E[f M] / p1 ~ E[f] = p1.
  EXPECT_NEAR(far, 0.5, 0.05);
  EXPECT_GT(inside, far + 0.1) << "inside " << inside << " far " << far;
  const int64_t peak = s.argmax().item<int64_t>();
  EXPECT_LT(peak / 16, 8);
  EXPECT_LT(peak % 16, 8);
  EXPECT_EQ(a.model_evaluations, 1 + 2000);
  ASSERT_TRUE(a.extra.contains("standard_error"));
  EXPECT_LT(a.extra["standard_error"]["max"].get<double>(), 0.05);
}

TEST(Rise, DeterministicUnderASeedAndInvariantToTheBatchSize) {
  Model m = region_mean_model();
  const at::Tensor x = at::rand({2, 1, 16, 16});
  Rise rise({.n_masks = 60, .grid_size = 5, .seed = 7});
  auto a = run(rise, m, x, Target::index(0), Baseline::zeros(), {}, 0);
  auto b = run(rise, m, x, Target::index(0), Baseline::zeros(), {}, 1);
  auto c = run(rise, m, x, Target::index(0), Baseline::zeros(), {}, 7);
  EXPECT_LT(rel_error(b.values, a.values), 1e-6);
  EXPECT_LT(rel_error(c.values, a.values), 1e-6);
  EXPECT_TRUE(at::equal(run(rise, m, x, Target::index(0)).values, a.values));
  auto other = run(Rise({.n_masks = 60, .grid_size = 5, .seed = 8}), m, x, Target::index(0));
  EXPECT_FALSE(at::allclose(other.values, a.values));
  // Each sample's saliency is its own: explaining it alone gives the same map.
  auto alone = run(rise, m, x.slice(0, 1, 2), Target::index(0));
  EXPECT_LT(rel_error(alone.values[0], a.values[1]), 1e-6);
}

TEST(Rise, MasksFollowThePapersConstruction) {
  Rise rise({.n_masks = 10, .grid_size = 7, .p1 = 0.3, .seed = 3});
  const at::Tensor m = rise.masks(0, 400, 20, 30);
  ASSERT_EQ(m.sizes(), (at::IntArrayRef{400, 20, 30}));
  EXPECT_GE(m.min().item<double>(), 0.0);
  EXPECT_LE(m.max().item<double>(), 1.0);
  EXPECT_NEAR(m.mean().item<double>(), 0.3, 0.02);
  // Mask i depends only on (seed, i).
  EXPECT_TRUE(at::equal(rise.masks(5, 3, 20, 30), m.slice(0, 5, 8)));
  // A single cell (s = 1) kept with p1 = 1 is all ones.
  EXPECT_TRUE(at::equal(Rise({.grid_size = 1, .p1 = 1.0}).masks(0, 2, 5, 5), at::ones({2, 5, 5})));
}

TEST(Rise, MultipliesTheInputOrBlendsWithTheBaseline) {
  // f = sum of all pixels: with x = 1 and baseline 0, f(x * M) = sum(M).
  InputSpec spec;
  spec.shape = {1, 6, 6};
  spec.layout = "NCHW";
  Model m = Model::from_function([](const at::Tensor& t) { return t.flatten(1).sum(1, true); }, spec);
  Rise rise({.n_masks = 5, .grid_size = 3, .p1 = 0.5});
  const at::Tensor masks = rise.masks(0, 5, 6, 6);
  const at::Tensor f = masks.flatten(1).sum(1);
  const at::Tensor expected = (f.view({5, 1, 1}) * masks).sum(0) / (5 * 0.5);
  auto a = run(rise, m, at::ones({1, 1, 6, 6}), Target::index(0));
  EXPECT_LT(rel_error(a.values[0][0], expected), 1e-5);
  // Baseline 1 and input 1: every masked input is all ones, f = 36.
  auto b = run(rise, m, at::ones({1, 1, 6, 6}), Target::index(0), Baseline::constant(1.0));
  EXPECT_LT(rel_error(b.values[0][0], 36.0 * masks.sum(0) / (5 * 0.5)), 1e-5);
}

TEST(Rise, RefusesInputsThatAreNotImages) {
  LinearCase c;
  EXPECT_THROW(run(Rise({.n_masks = 4}), c.model, c.x, Target::index(0)), InvalidArgument);
  EXPECT_THROW(Rise({.p1 = 0.0}), InvalidArgument);
}

// ---- feature masks ---------------------------------------------------------------------

TEST(FeatureMask, GridIdsAreRowMajorSquaresCutAtTheBorder) {
  const at::Tensor g = grid_mask(5, 5, 2);
  const at::Tensor expected = at::tensor({0, 0, 1, 1, 2,  //
                                          0, 0, 1, 1, 2,  //
                                          3, 3, 4, 4, 5,  //
                                          3, 3, 4, 4, 5,  //
                                          6, 6, 7, 7, 8},
                                         at::kLong)
                                  .view({5, 5});
  EXPECT_TRUE(at::equal(g, expected));
  EXPECT_EQ(feature_count(g), 9);
  EXPECT_EQ(feature_count(grid_mask(4, 7, 10)), 1);
  EXPECT_THROW(grid_mask(4, 4, 0), InvalidArgument);
}

TEST(FeatureMask, SegmentersFindSeveralSegmentsOnTheSampleImage) {
  const at::Tensor img = load_image(fixture("sample_224.png"), 3, 224, 224);
  for (const at::Tensor& m : {slic_mask(img, 20), slic_mask(img, 20, 0.0), felzenszwalb_mask(img)}) {
    ASSERT_EQ(m.sizes(), (at::IntArrayRef{224, 224}));
    EXPECT_EQ(m.scalar_type(), at::kLong);
    const int64_t g = feature_count(m);
    EXPECT_GT(g, 1);
    EXPECT_EQ(std::get<0>(at::_unique(m)).numel(), g) << "ids are 0..G-1 with none unused";
    EXPECT_EQ(m.min().item<int64_t>(), 0);
  }
  // About (224 / 20)^2 = 125 SLIC regions.
  const int64_t slic = feature_count(slic_mask(img, 20));
  EXPECT_GT(slic, 40);
  EXPECT_LT(slic, 400);
  EXPECT_THROW(slic_mask(img * 255, 20), InvalidArgument) << "not in [0, 1]";
  EXPECT_THROW(slic_mask(at::rand({2, 8, 8}), 4), InvalidArgument) << "two channels";
}

TEST(FeatureMask, SpecsGiveMasksShapedLikeTheInputs) {
  InputSpec tab;
  tab.layout = "NC";
  const at::Tensor t = at::rand({2, 3});
  at::Tensor each = make_feature_mask("each", t, tab, {});
  EXPECT_TRUE(at::equal(each, at::tensor({0, 1, 2, 0, 1, 2}, at::kLong).view({2, 3})));

  InputSpec nchw;
  nchw.shape = {3, 4, 4};
  nchw.layout = "NCHW";
  const at::Tensor x = at::rand({2, 3, 4, 4});
  at::Tensor grid = make_feature_mask("grid:2", x, nchw, {});
  ASSERT_EQ(grid.sizes(), x.sizes());
  for (int64_t ch = 0; ch < 3; ++ch) EXPECT_TRUE(at::equal(grid[1][ch], grid_mask(4, 4, 2)));
  EXPECT_EQ(feature_count(make_feature_mask("each", x, nchw, {})), 48);

  InputSpec nhwc;
  nhwc.shape = {4, 4, 3};
  nhwc.layout = "NHWC";
  at::Tensor g2 = make_feature_mask("grid:2", at::rand({1, 4, 4, 3}), nhwc, {});
  for (int64_t ch = 0; ch < 3; ++ch) EXPECT_TRUE(at::equal(g2[0].select(2, ch), grid_mask(4, 4, 2)));

  // Segmenters: from the display images, or from the inputs with the normalisation undone.
  const at::Tensor img = load_image(fixture("sample_224.png"), 3, 224, 224).unsqueeze(0);
  InputSpec norm;
  norm.shape = {3, 224, 224};
  norm.layout = "NCHW";
  norm.mean = {0.485, 0.456, 0.406};
  norm.std = {0.229, 0.224, 0.225};
  const at::Tensor mean = at::tensor(norm.mean, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
  const at::Tensor sd = at::tensor(norm.std, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
  const at::Tensor inputs = (img - mean) / sd;
  at::Tensor slic = make_feature_mask("slic:20", inputs, norm, img);
  ASSERT_EQ(slic.sizes(), inputs.sizes());
  EXPECT_TRUE(at::equal(slic[0][0], slic_mask(img[0], 20)));
  EXPECT_TRUE(at::equal(slic[0][2], slic[0][0]));
  EXPECT_TRUE(at::equal(make_feature_mask("slic:20", inputs, norm, {}), slic)) << "undoing mean/std";
  at::Tensor fz = make_feature_mask("felzenszwalb:100", inputs, norm, img);
  EXPECT_TRUE(at::equal(fz[0][1], felzenszwalb_mask(img[0], 100)));

  // An .npy of ids, [H, W] for an image.
  TempDir dir;
  write_npy(dir / "mask.npy", grid_mask(4, 4, 2).to(at::kInt));
  EXPECT_TRUE(at::equal(make_feature_mask(dir / "mask.npy", x, nchw, {}), grid));
}

TEST(FeatureMask, ErrorsNameTheProblem) {
  InputSpec nchw;
  nchw.shape = {1, 4, 4};
  nchw.layout = "NCHW";
  const at::Tensor x = at::rand({2, 1, 4, 4});
  InputSpec tab;
  tab.layout = "NC";
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "no InvalidArgument";
  };
  EXPECT_NE(message([&] { make_feature_mask("bogus", x, nchw, {}); }).find("unknown feature mask 'bogus'"),
            std::string::npos);
  EXPECT_NE(message([&] { make_feature_mask("grid:0", x, nchw, {}); }).find("positive integer"), std::string::npos);
  EXPECT_NE(message([&] { make_feature_mask("grid", x, nchw, {}); }).find("needs a value"), std::string::npos);
  EXPECT_NE(message([&] { make_feature_mask("grid:2", at::rand({2, 5}), tab, {}); }).find("image inputs"),
            std::string::npos);
  EXPECT_NE(message([&] { make_feature_mask("slic:4", x * 9, nchw, {}); }).find("[0, 1]"), std::string::npos)
      << "no normalisation to undo and values outside [0, 1]";
  EXPECT_NE(message([&] { expand_feature_mask(at::tensor({0, -1, 1, 2}, at::kLong), at::rand({1, 4}), tab); })
                .find("found id -1"),
            std::string::npos);
  EXPECT_NE(message([&] { expand_feature_mask(at::zeros({3}, at::kLong), at::rand({1, 4}), tab); })
                .find("does not fit"),
            std::string::npos);
  EXPECT_NE(message([&] { expand_feature_mask(at::full({4}, 0.5), at::rand({1, 4}), tab); }).find("integers"),
            std::string::npos);
  // Accepted shapes: one input's, [N, ...], [1, ...] and [N, H, W] for images.
  EXPECT_EQ(expand_feature_mask(at::zeros({1, 4}, at::kLong), at::rand({3, 4}), tab).sizes(),
            (at::IntArrayRef{3, 4}));
  EXPECT_EQ(expand_feature_mask(at::zeros({2, 4, 4}, at::kLong), x, nchw).sizes(), x.sizes());
  EXPECT_EQ(expand_feature_mask(at::ones({4}), at::rand({1, 4}), tab).scalar_type(), at::kLong);
  // Feature ablation reports a bad request mask the same way.
  LinearCase c;
  EXPECT_THROW(run(FeatureAblation(), c.model, c.x, Target::index(0), Baseline::zeros(), at::zeros({5}, at::kLong)),
               InvalidArgument);
}
