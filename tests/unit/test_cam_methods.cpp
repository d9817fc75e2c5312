// Class activation maps: closed forms on a conv -> global-average-pool -> linear model,
// re-derivations of each weighting, suffix execution against full passes.
#include <gtest/gtest.h>

#include "candela/graph/taps.h"
#include "candela/io/npy.h"
#include "candela/methods/cam/ablation_cam.h"
#include "candela/methods/cam/eigen_cam.h"
#include "candela/methods/cam/eigen_grad_cam.h"
#include "candela/methods/cam/full_grad.h"
#include "candela/methods/cam/grad_cam.h"
#include "candela/methods/cam/grad_cam_plus_plus.h"
#include "candela/methods/cam/grad_cam_elementwise.h"
#include "candela/methods/cam/hires_cam.h"
#include "candela/methods/cam/layer_cam.h"
#include "candela/methods/cam/score_cam.h"
#include "candela/methods/cam/xgrad_cam.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::rel_error;

namespace {

// features = relu(conv(x)) as a submodule (the CAM layer), then `head` (TorchScript source using
// self.features and the parameter `head_param`).
Model conv_then(const at::Tensor& conv_w, const at::Tensor& head_param, const std::string& head) {
  torch::jit::Module features("Features"), top("Top");
  features.register_parameter("weight", conv_w, false);
  features.define("def forward(self, x):\n    return torch.relu(torch.conv2d(x, self.weight, None, 1, 1))\n");
  top.register_module("features", features);
  top.register_parameter("head_param", head_param, false);
  top.define("def forward(self, x):\n    return " + head + "\n");
  InputSpec spec;
  spec.shape = {1, 6, 6};
  spec.layout = "NCHW";
  return Model::from_module(top, spec);
}

// y = W . mean_ij relu(conv(x)): the architecture the CAM paper's closed form is about.
struct GapModel {
  at::Tensor conv_w = at::randn({4, 1, 3, 3}, at::detail::createCPUGenerator(1));
  at::Tensor fc_w = at::randn({3, 4}, at::detail::createCPUGenerator(2));
  at::Tensor x = at::randn({2, 1, 6, 6}, at::detail::createCPUGenerator(3));
  Model model = conv_then(conv_w, fc_w, "torch.matmul(self.features.forward(x).mean([2, 3]), self.head_param.t())");
  at::Tensor activations() const { return at::relu(at::conv2d(x, conv_w, {}, 1, 1)); }
};

Attribution run(const Explainer& e, const Model& m, const at::Tensor& x, Target t = Target::index(1)) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(t);
  return e.explain(m, r);
}

template <class Cam>
typename Cam::Options raw(std::vector<std::string> layers = {"features"}) {
  typename Cam::Options o;
  o.layers = std::move(layers);
  o.relu = o.normalize = o.upsample = false;
  return o;
}

}  // namespace

TEST(Cam, GradCamOnAGapModelIsTheClassActivationMap) {
  GapModel g;
  at::Tensor a = g.activations();
  // dY/dA_k = W[c,k] / (h w) everywhere, so Grad-CAM = sum_k W[c,k] A_k / (h w).
  at::Tensor expected = (g.fc_w[1].view({1, 4, 1, 1}) * a).sum(1) / 36.0;
  auto cam = run(GradCam(raw<GradCam>()), g.model, g.x);
  EXPECT_TRUE(cam.spatial_map);
  EXPECT_LT(rel_error(cam.values.squeeze(1), expected), 1e-5);
  // Gradients are constant over positions: HiResCAM and XGrad-CAM give the same map.
  EXPECT_LT(rel_error(run(HiResCam(raw<HiResCam>()), g.model, g.x).values.squeeze(1), expected), 1e-5);
  EXPECT_LT(rel_error(run(XGradCam(raw<XGradCam>()), g.model, g.x).values.squeeze(1), expected), 1e-5);
  // LayerCAM keeps the channels with positive weight.
  at::Tensor layer = (g.fc_w[1].clamp_min(0).view({1, 4, 1, 1}) * a).sum(1) / 36.0;
  EXPECT_LT(rel_error(run(LayerCam(raw<LayerCam>()), g.model, g.x).values.squeeze(1), layer), 1e-5);
}

namespace {
// y = V . flatten(relu(conv(x))): the gradient at position (i, j) of channel k is V[c, k, i, j],
// so the CAM variants that differ in how they use it give different maps, each in closed form.
struct FlatModel {
  at::Tensor conv_w = at::randn({4, 1, 3, 3}, at::detail::createCPUGenerator(4));
  at::Tensor v = at::randn({3, 4 * 36}, at::detail::createCPUGenerator(5));
  at::Tensor x = at::randn({2, 1, 6, 6}, at::detail::createCPUGenerator(6));
  Model model = conv_then(conv_w, v, "torch.matmul(self.features.forward(x).flatten(1), self.head_param.t())");
  at::Tensor activations() const { return at::relu(at::conv2d(x, conv_w, {}, 1, 1)); }
  at::Tensor gradient(int64_t c) const { return v[c].view({1, 4, 6, 6}).expand({2, 4, 6, 6}); }
};
}  // namespace

// A layer whose last operation has two outputs (adaptive_max_pool2d: values and indices) is tapped
// at the values the module returns, not at the Long indices. Grad-CAM at a 1x1 layer followed by
// a linear head is then the class's logit itself: sum_k W[c,k] A_k.
TEST(Cam, ALayerEndingInAMultiOutputOpIsTappedAtWhatItReturnsAndOnePixelMapsAreNoDefault) {
  const at::Tensor conv_w = at::randn({4, 1, 3, 3}, at::detail::createCPUGenerator(4));
  const at::Tensor fc_w = at::randn({3, 4}, at::detail::createCPUGenerator(5));
  const at::Tensor x = at::randn({2, 1, 6, 6}, at::detail::createCPUGenerator(6));
  torch::jit::Module features("Features"), pool("Pool"), top("Top");
  features.register_parameter("weight", conv_w, false);
  features.define("def forward(self, x):\n    return torch.relu(torch.conv2d(x, self.weight, None, 1, 1))\n");
  pool.define("def forward(self, x):\n    v, i = torch.adaptive_max_pool2d(x, [1, 1])\n    return v\n");
  top.register_module("features", features);
  top.register_module("pool", pool);
  top.register_parameter("fc", fc_w, false);
  top.define("def forward(self, x):\n    return torch.matmul(self.pool.forward(self.features.forward(x)).flatten(1), self.fc.t())\n");
  InputSpec spec;
  spec.shape = {1, 6, 6};
  spec.layout = "NCHW";
  const Model model = Model::from_module(top, spec);
  auto cam = run(GradCam(raw<GradCam>({"pool"})), model, x);
  ASSERT_EQ(cam.values.scalar_type(), at::kFloat);
  const at::Tensor pooled = std::get<0>(at::adaptive_max_pool2d(at::relu(at::conv2d(x, conv_w, {}, 1, 1)), {1, 1}));
  const at::Tensor logit = at::matmul(pooled.flatten(1), fc_w.t()).select(1, 1);
  EXPECT_LT(rel_error(cam.values.flatten(), logit), 1e-5);
  // With no layer given, the CAM takes the last map with more than one pixel (features, 6x6), not
  // the 1x1 pool after it, whose map would be one constant value.
  EXPECT_EQ(run(GradCam(raw<GradCam>({})), model, x).extra["layers"], nlohmann::json::array({"features"}));
}

TEST(Cam, VariantsDifferWhereGradientsVaryByPosition) {
  FlatModel f;
  const at::Tensor a = f.activations(), g = f.gradient(1);
  // Grad-CAM: channel weights are the gradient's spatial mean.
  const at::Tensor grad_cam = (g.mean({2, 3}, true) * a).sum(1);
  // HiResCAM: the gradient times the activation, element by element.
  const at::Tensor hires = (g * a).sum(1);
  // XGrad-CAM: weights sum(g * A) / sum(A) per channel (pytorch-grad-cam's eps 1e-7).
  const at::Tensor xgrad = ((g * a).sum({2, 3}, true) / (a.sum({2, 3}, true) + 1e-7) * a).sum(1);
  // LayerCAM: the positive part of the gradient times the activation.
  const at::Tensor layer = (g.clamp_min(0) * a).sum(1);
  EXPECT_LT(rel_error(run(GradCam(raw<GradCam>()), f.model, f.x).values.squeeze(1), grad_cam), 1e-5);
  EXPECT_LT(rel_error(run(HiResCam(raw<HiResCam>()), f.model, f.x).values.squeeze(1), hires), 1e-5);
  EXPECT_LT(rel_error(run(XGradCam(raw<XGradCam>()), f.model, f.x).values.squeeze(1), xgrad), 1e-5);
  EXPECT_LT(rel_error(run(LayerCam(raw<LayerCam>()), f.model, f.x).values.squeeze(1), layer), 1e-5);
  // Grad-CAM element-wise: the positive part of the product, element by element.
  const at::Tensor elementwise = (g * a).clamp_min(0).sum(1);
  EXPECT_LT(rel_error(run(GradCamElementWise(raw<GradCamElementWise>()), f.model, f.x).values.squeeze(1), elementwise),
            1e-5);
  EXPECT_GT(rel_error(elementwise, hires), 0.1);
  // ... and the four maps are really different here.
  EXPECT_GT(rel_error(hires, grad_cam), 0.1);
  EXPECT_GT(rel_error(xgrad, grad_cam), 0.1);
  EXPECT_GT(rel_error(layer, hires), 0.1);
}

TEST(Cam, GradCamPlusPlusWeightsFollowTheirFormula) {
  GapModel g;
  at::Tensor a = g.activations();
  at::Tensor grad = (g.fc_w[1] / 36.0).view({1, 4, 1, 1}).expand_as(a);
  at::Tensor g2 = grad * grad, g3 = g2 * grad;
  at::Tensor alpha = g2 / (2 * g2 + a.sum({2, 3}, true) * g3 + 1e-6);
  at::Tensor w = (grad.clamp_min(0) * alpha).sum({2, 3});
  at::Tensor expected = (w.view({2, 4, 1, 1}) * a).sum(1);
  EXPECT_LT(rel_error(run(GradCamPlusPlus(raw<GradCamPlusPlus>()), g.model, g.x).values.squeeze(1), expected), 1e-5);
}

TEST(Cam, DefaultsApplyReluNormaliseAndUpsample) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 3);
  GradCam::Options o;
  o.layers = {"features.4"};
  auto cam = run(GradCam(o), m, x, Target::top1());
  ASSERT_EQ(cam.values.sizes(), (at::IntArrayRef{3, 1, 8, 8}));
  auto rawcam = run(GradCam(raw<GradCam>({"features.4"})), m, x, Target::top1()).values.squeeze(1);
  // pytorch-grad-cam: relu, min-max, resize (bilinear), then min-max again.
  auto mm = [](at::Tensor t) {
    t = t - std::get<0>(t.reshape({t.size(0), -1}).min(1)).view({-1, 1, 1});
    return t / (std::get<0>(t.reshape({t.size(0), -1}).max(1)).view({-1, 1, 1}) + 1e-7);
  };
  at::Tensor expected = mm(at::upsample_bilinear2d(mm(rawcam.clamp_min(0)).unsqueeze(1), {8, 8}, false).squeeze(1));
  EXPECT_LT(rel_error(cam.values.squeeze(1), expected), 1e-5);
  EXPECT_NEAR(cam.values.min().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(cam.values.max().item<double>(), 1.0, 1e-5);
  // Without --layer, the last spatial layer is used.
  auto by_default = run(GradCam(), m, x, Target::top1());
  EXPECT_EQ(by_default.extra["layers"][0], "features.4");
  EXPECT_TRUE(at::allclose(by_default.values, cam.values));
}

TEST(Cam, SeveralLayersAreAveraged) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 2);
  GradCam::Options a, b, both;
  a.layers = {"features.1"};
  b.layers = {"features.4"};
  both.layers = {"features.1", "features.4"};
  at::Tensor ma = run(GradCam(a), m, x).values, mb = run(GradCam(b), m, x).values;
  at::Tensor mean = (ma + mb) / 2;
  mean = mean - std::get<0>(mean.reshape({2, -1}).min(1)).view({2, 1, 1, 1});
  mean = mean / (std::get<0>(mean.reshape({2, -1}).max(1)).view({2, 1, 1, 1}) + 1e-7);
  EXPECT_LT(rel_error(run(GradCam(both), m, x).values, mean), 1e-5);
}

TEST(Cam, EigenCamOfRankOneActivationsIsTheirSpatialPattern) {
  // A 1x1 conv of a one-channel input: every channel is a multiple of the input.
  torch::jit::Module features("F"), top("T");
  at::Tensor w = at::tensor({1.0, 2.0, -0.5}, at::kFloat).view({3, 1, 1, 1});
  features.register_parameter("weight", w, false);
  features.define("def forward(self, x):\n    return torch.conv2d(x, self.weight)\n");
  top.register_module("features", features);
  top.define("def forward(self, x):\n    return self.features.forward(x).mean([2, 3])\n");
  InputSpec spec;
  spec.shape = {1, 5, 5};
  spec.layout = "NCHW";
  Model m = Model::from_module(top, spec);
  at::Tensor x = at::randn({2, 1, 5, 5}, at::detail::createCPUGenerator(4));
  at::Tensor map = run(EigenCam(raw<EigenCam>()), m, x, Target::index(0)).values.squeeze(1);
  for (int64_t i = 0; i < 2; ++i) {
    at::Tensor p = map[i].flatten(), q = x[i][0].flatten() - x[i][0].mean();
    double corr = (p * q).sum().item<double>() / (p.norm() * q.norm()).item<double>();
    EXPECT_NEAR(std::abs(corr), 1.0, 1e-5);
  }
}

// tests/reference/make_captum_reference.py: pytorch-grad-cam's get_2d_projection (what its
// EigenGradCAM calls) of gradient x activation at the ReLU after the second convolution of the
// committed conv-relu-maxpool-conv-relu-avgpool-linear-relu-linear net, class 1. An SVD's
// singular vector has no preferred sign, so each image's map is compared up to sign.
TEST(Cam, EigenGradCamMatchesPytorchGradCamsProjection) {
  const std::string dir = std::string(CANDELA_SOURCE_DIR) + "/tests/reference/";
  Model m = Model::load(dir + "lrp_cnn.pt");
  const at::Tensor x = read_npy(dir + "lrp_cnn_x.npy");
  const at::Tensor ref = read_npy(dir + "gradcam_eigen_grad_cam_raw.npy");
  const at::Tensor map = run(EigenGradCam(raw<EigenGradCam>({"4"})), m, x).values.squeeze(1);
  ASSERT_EQ(map.sizes(), ref.sizes());
  for (int64_t i = 0; i < x.size(0); ++i) {
    const double sign = (map[i] * ref[i]).sum().item<double>() >= 0 ? 1.0 : -1.0;
    EXPECT_LT(rel_error(map[i] * sign, ref[i]), 1e-4) << "image " << i << map[i] << ref[i];
  }
}

TEST(Cam, ScoreCamWeightsAreTheSoftmaxOfMaskedScores) {
  GapModel g;
  at::Tensor a = g.activations();
  // Re-derivation: masks upsampled (align_corners, identity here) and min-max scaled.
  at::Tensor flat = a.reshape({2, 4, -1});
  at::Tensor mins = std::get<0>(flat.min(2)).view({2, 4, 1, 1}), maxs = std::get<0>(flat.max(2)).view({2, 4, 1, 1});
  at::Tensor masks = (a - mins) / (maxs - mins + 1e-8);
  at::Tensor scores = at::empty({2, 4});
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t c = 0; c < 4; ++c)
      scores[i][c] = g.model.forward((g.x[i] * masks[i][c]).unsqueeze(0))[0][1];
  at::Tensor expected = (at::softmax(scores, 1).view({2, 4, 1, 1}) * a).sum(1);
  auto cam = run(ScoreCam(raw<ScoreCam>()), g.model, g.x);
  EXPECT_LT(rel_error(cam.values.squeeze(1), expected), 1e-5);
  EXPECT_EQ(cam.model_evaluations, 2 + 2 * 4);
  ScoreCam::Options top2 = raw<ScoreCam>();
  top2.top_k = 2;
  auto fast = run(ScoreCam(top2), g.model, g.x);
  EXPECT_EQ(fast.model_evaluations, 2 + 2 * 2);
  EXPECT_EQ(fast.extra["channels_scored"], 2);
}

TEST(Cam, AblationCamMatchesItsClosedFormAndSuffixEqualsFullPasses) {
  GapModel g;
  at::Tensor a = g.activations();
  // Ablating channel k (ReLU outputs: set to 0) drops y by W[c,k] mean(A_k).
  at::Tensor y = (g.fc_w[1].view({1, 4}) * a.mean({2, 3})).sum(1, true);
  at::Tensor w = g.fc_w[1].view({1, 4}) * a.mean({2, 3}) / y;
  at::Tensor expected = (w.view({2, 4, 1, 1}) * a).sum(1);
  auto cam = run(AblationCam(raw<AblationCam>()), g.model, g.x);
  EXPECT_LT(rel_error(cam.values.squeeze(1), expected), 1e-4);
  EXPECT_TRUE(cam.extra["suffix_execution"].get<bool>());
  EXPECT_EQ(cam.extra["partial_evaluations"], 2 * 4);

  Model resnet = Model::load(fixture("resnet18.pt"));
  InputSpec small = resnet.input_spec();
  small.shape = {3, 64, 64};
  resnet.set_input_spec(small);
  at::Tensor x = at::randn({1, 3, 64, 64}, at::detail::createCPUGenerator(5));
  for (std::string layer : {"layer3.1", "layer4"}) {
    auto opts = raw<AblationCam>({layer});
    auto suffix = run(AblationCam(opts), resnet, x, Target::index(7));
    opts.suffix_execution = false;
    auto full = run(AblationCam(opts), resnet, x, Target::index(7));
    EXPECT_FALSE(full.extra["suffix_execution"].get<bool>());
    EXPECT_LT(rel_error(suffix.values, full.values), 1e-4) << layer;
  }
}

TEST(Cam, FullGradOfABiasFreeModelIsScaledInputTimesGradient) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 2);
  auto full = run(FullGrad(), m, x, Target::index(2));
  EXPECT_EQ(full.values.sizes(), (at::IntArrayRef{2, 1, 8, 8}));
  EXPECT_EQ(full.extra["bias_layers"], 2);
  // Re-derivation: each term scaled to [0,1] per channel, summed, scaled again.
  LayerTaps taps(m, {"features.0", "features.2"});
  at::Tensor xi = x.clone().requires_grad_(true);
  auto r = taps.forward(xi);
  auto g = torch::autograd::grad({r.output.select(1, 2).sum()}, {xi, r.activations[0], r.activations[1]});
  auto mm = [](at::Tensor t) {
    auto f = t.reshape({t.size(0), -1});
    t = t - std::get<0>(f.min(1)).view({-1, 1, 1});
    return t / (std::get<0>(t.reshape({t.size(0), -1}).max(1)).view({-1, 1, 1}) + 1e-7);
  };
  auto term = [&](at::Tensor t) { return mm(t.reshape({-1, 8, 8})).reshape({2, -1, 8, 8}).sum(1); };
  const auto& mod = *m.module();
  at::Tensor b0 = mod.attr("features").toModule().attr("0").toModule().attr("bias").toTensor();
  at::Tensor b2 = mod.attr("features").toModule().attr("2").toModule().attr("bias").toTensor();
  at::Tensor total = term((g[0] * x).abs()) + term((b0.view({1, -1, 1, 1}) * g[1]).abs()) +
                     term((b2.view({1, -1, 1, 1}) * g[2]).abs());
  EXPECT_LT(rel_error(full.values.squeeze(1), mm(total)), 1e-5);
}

TEST(Cam, TokenLayersFoldIntoAGrid) {
  // Tokens [N, 1 + 4, C]: a CLS token and a 2x2 grid, as a ViT block outputs them.
  torch::jit::Module block("Block"), top("Vit");
  block.define(R"(
def forward(self, x):
    t = x.flatten(2).transpose(1, 2)
    cls = torch.zeros(x.size(0), 1, x.size(1))
    return torch.cat([cls, t], 1)
)");
  at::Tensor fc = at::randn({3, 2}, at::detail::createCPUGenerator(6));
  top.register_module("blocks", block);
  top.register_parameter("fc", fc, false);
  top.define("def forward(self, x):\n    return torch.matmul(self.blocks.forward(x)[:, 1:].mean(1), self.fc.t())\n");
  InputSpec spec;
  spec.shape = {2, 2, 2};
  spec.layout = "NCHW";
  Model m = Model::from_module(top, spec);
  at::Tensor x = at::randn({1, 2, 2, 2}, at::detail::createCPUGenerator(7));
  GradCam::Options o = raw<GradCam>({"blocks"});
  o.reshape_grid = {2, 2};
  at::Tensor expected = (fc[1].view({1, 2, 1, 1}) * x).sum(1) / 4.0;
  EXPECT_LT(rel_error(run(GradCam(o), m, x).values.squeeze(1), expected), 1e-5);
  o.reshape_grid = {3, 3};
  EXPECT_THROW(run(GradCam(o), m, x), InvalidArgument);
}
