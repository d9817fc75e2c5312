// Feature visualisation: Lucent's parametrisations and transforms against closed forms, the
// objective language, and optimisation recovering a known preferred pattern.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "candela/graph/taps.h"
#include "candela/io/npy.h"
#include "candela/methods/visualization/feature_visualization.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;

namespace {

// numpy.fft.fftfreq(n)[k]
double fftfreq(int64_t n, int64_t k) { return static_cast<double>(k <= (n - 1) / 2 ? k : k - n) / static_cast<double>(n); }

// A vertical edge detector: -1 on the two left columns, +1 on the two right ones.
at::Tensor edge_filter() {
  at::Tensor f = at::zeros({5, 5});
  f.narrow(1, 0, 2).fill_(-1.0);
  f.narrow(1, 3, 2).fill_(1.0);
  return f;
}

// x -> relu(conv(x, edge filter on every colour)), flattened; the conv is the tappable layer "conv".
Model edge_model(int64_t size) {
  torch::jit::Module conv("EdgeConv"), outer("EdgeNet");
  conv.register_parameter("weight", edge_filter().reshape({1, 1, 5, 5}).expand({1, 3, 5, 5}).contiguous() / 3.0, false);
  conv.define("def forward(self, x):\n    return torch.conv2d(x, self.weight)\n");
  outer.register_module("conv", conv);
  outer.define("def forward(self, x):\n    return torch.relu(self.conv.forward(x)).flatten(1)\n");
  InputSpec spec;
  spec.shape = {3, size, size};
  spec.layout = "NCHW";
  return Model::from_module(outer, spec);
}

double pearson(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.flatten().to(at::kDouble), y = b.flatten().to(at::kDouble);
  x = x - x.mean();
  y = y - y.mean();
  return (x * y).sum().item<double>() / std::sqrt((x * x).sum().item<double>() * (y * y).sum().item<double>());
}

}  // namespace

TEST(FeatureVisualization, FourierFrequenciesAreNumpysRfft2dFreqs) {
  for (auto [h, w] : {std::pair<int64_t, int64_t>{6, 8}, {5, 7}, {128, 128}}) {
    at::Tensor f = fv::rfft2d_freqs(h, w);
    const int64_t wx = w % 2 == 1 ? w / 2 + 2 : w / 2 + 1;
    ASSERT_EQ(f.sizes(), (at::IntArrayRef{h, wx}));
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < wx; ++j)
        EXPECT_NEAR(f[i][j].item<double>(), std::hypot(fftfreq(h, i), fftfreq(w, j)), 1e-12) << h << "x" << w;
    at::Tensor s = fv::fourier_scale(h, w, 1.0);
    EXPECT_NEAR(s[0][0].item<double>(), static_cast<double>(std::max(h, w)), 1e-4) << "DC is clamped to 1/max(h, w)";
    EXPECT_NEAR(s[1][1].item<double>(), 1.0 / std::hypot(fftfreq(h, 1), fftfreq(w, 1)), 1e-4);
  }
}

TEST(FeatureVisualization, FourierImageOfOneCoefficientIsACosine) {
  // irfftn(norm="ortho") of one coefficient X at (ky, kx), 0 < kx < w/2, with its Hermitian
  // twin: x[n, m] = 2/sqrt(hw) * (Re X cos φ - Im X sin φ), φ = 2π(ky n/h + kx m/w); Lucent divides by 4.
  const int64_t h = 8, w = 10, ky = 3, kx = 2;
  const double re = 0.7, im = -0.4;
  at::Tensor spectrum = at::zeros({1, 1, h, w / 2 + 1, 2});
  spectrum[0][0][ky][kx][0] = re;
  spectrum[0][0][ky][kx][1] = im;
  at::Tensor scale = fv::fourier_scale(h, w, 1.0);
  at::Tensor image = fv::fourier_image(spectrum, scale, h, w);
  ASSERT_EQ(image.sizes(), (at::IntArrayRef{1, 1, h, w}));
  const double s = 1.0 / std::hypot(fftfreq(h, ky), fftfreq(w, kx));
  double worst = 0;
  for (int64_t n = 0; n < h; ++n)
    for (int64_t m = 0; m < w; ++m) {
      const double phi = 2 * M_PI * (static_cast<double>(ky * n) / h + static_cast<double>(kx * m) / w);
      const double expected = 2.0 / std::sqrt(static_cast<double>(h * w)) * s * (re * std::cos(phi) - im * std::sin(phi)) / 4.0;
      worst = std::max(worst, std::abs(image[0][0][n][m].item<double>() - expected));
    }
  EXPECT_LT(worst, 1e-5);
  // decay_power 0 leaves the spectrum unscaled.
  EXPECT_TRUE(at::allclose(fv::fourier_scale(h, w, 0.0), at::ones_like(scale)));
}

TEST(FeatureVisualization, ColourDecorrelationIsLucentsNormalisedMatrix) {
  const double raw[3][3] = {{0.26, 0.09, 0.02}, {0.27, 0.00, -0.05}, {0.27, -0.09, 0.03}};
  double max_norm = 0;
  for (int c = 0; c < 3; ++c)
    max_norm = std::max(max_norm, std::sqrt(raw[0][c] * raw[0][c] + raw[1][c] * raw[1][c] + raw[2][c] * raw[2][c]));
  at::Tensor m = fv::color_correlation_normalized();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(m[i][j].item<double>(), raw[i][j] / max_norm, 1e-6);
  // A constant colour v becomes M v at every pixel (image_hwc @ M^T).
  const float v[3] = {0.3f, -1.2f, 0.8f};
  at::Tensor image = at::tensor({v[0], v[1], v[2]}).reshape({1, 3, 1, 1}).expand({2, 3, 4, 5}).contiguous();
  at::Tensor out = fv::decorrelate_colors(image);
  for (int i = 0; i < 3; ++i) {
    const double expected = (raw[i][0] * v[0] + raw[i][1] * v[1] + raw[i][2] * v[2]) / max_norm;
    EXPECT_NEAR(out.select(1, i).min().item<double>(), expected, 1e-6);
    EXPECT_NEAR(out.select(1, i).max().item<double>(), expected, 1e-6);
  }
  EXPECT_THROW(fv::decorrelate_colors(at::zeros({1, 1, 4, 4})), InvalidArgument);
}

TEST(FeatureVisualization, TransformsMatchTheirClosedForms) {
  at::Tensor x = at::arange(2 * 3 * 7 * 7, at::kFloat).reshape({2, 3, 7, 7});
  // pad: a 0.5 frame of the given width.
  at::Tensor p = fv::pad(x, 2, 0.5);
  EXPECT_EQ(p.sizes(), (at::IntArrayRef{2, 3, 11, 11}));
  EXPECT_TRUE(at::equal(p.narrow(2, 2, 7).narrow(3, 2, 7), x));
  EXPECT_EQ(p[0][0][0][0].item<float>(), 0.5f);
  EXPECT_EQ(p[1][2][10][10].item<float>(), 0.5f);
  // translate: out(x, y) = in(x - dx, y - dy), zeros where nothing comes in.
  at::Tensor t = fv::translate(x, 3, 1);
  for (int64_t i = 0; i < 7; ++i)
    for (int64_t j = 0; j < 7; ++j) {
      const float expected = (i >= 1 && j >= 3) ? x[1][2][i - 1][j - 3].item<float>() : 0.f;
      EXPECT_EQ(t[1][2][i][j].item<float>(), expected) << i << "," << j;
    }
  EXPECT_TRUE(at::equal(fv::translate(x, 0, 0), x));
  // rotate: 0 degrees is the identity; 90 degrees about the centre of an odd square is
  // numpy's rot90 (counter-clockwise on screen), exactly, as every sample lands on a pixel.
  EXPECT_LT((fv::rotate(x, 0.0) - x).abs().max().item<double>(), 1e-4);
  EXPECT_LT((fv::rotate(x, 90.0) - at::rot90(x, 1, {2, 3})).abs().max().item<double>(), 1e-3);
  // scale: 1 is the identity; a linear ramp stays the same ramp (align_corners interpolation);
  // shrinking pads with zeros to Lucent's size: ceil(s*n) + 2*ceil((n - ceil(s*n))/2).
  EXPECT_LT((fv::scale(x, 1.0) - x).abs().max().item<double>(), 1e-4);
  at::Tensor ramp = at::arange(10, at::kFloat).reshape({1, 1, 1, 10}).expand({1, 1, 10, 10}).contiguous();
  at::Tensor up = fv::scale(ramp, 1.1);  // 11 x 11
  ASSERT_EQ(up.sizes(), (at::IntArrayRef{1, 1, 11, 11}));
  for (int64_t j = 0; j < 11; ++j) EXPECT_NEAR(up[0][0][5][j].item<double>(), 9.0 * j / 10.0, 1e-5);
  at::Tensor down = fv::scale(ramp, 0.9);  // 9 x 9, padded by 1 on each side
  ASSERT_EQ(down.sizes(), (at::IntArrayRef{1, 1, 11, 11}));
  EXPECT_EQ(down[0][0][0][5].item<float>(), 0.f);
  EXPECT_NEAR(down[0][0][5][1 + 8].item<double>(), 9.0, 1e-5);
  // A fixed draw composes pad 12 -> jitter -> scale -> rotate -> jitter, as written out.
  fv::TransformDraw d{5, 2, 0.96, -7.0, 3, 1};
  at::Tensor img = at::rand({1, 3, 32, 32});
  at::Tensor manual = fv::translate(fv::rotate(fv::scale(fv::translate(fv::pad(img, 12, 0.5), 5, 2), 0.96), -7.0), 3, 1);
  EXPECT_TRUE(at::equal(fv::standard_transforms(img, d), manual));
  EXPECT_EQ(manual.size(2), static_cast<int64_t>(std::ceil(0.96 * 56)) + 2 * 1);
}

TEST(FeatureVisualization, TransformDrawsComeFromLucentsListsAndTheSeed) {
  std::mt19937_64 a(7), b(7);
  std::set<double> scales, angles;
  for (int i = 0; i < 2000; ++i) {
    fv::TransformDraw d = fv::draw_transforms(a), e = fv::draw_transforms(b);
    EXPECT_EQ(d.jitter1_dx, e.jitter1_dx);
    EXPECT_EQ(d.angle, e.angle);
    EXPECT_TRUE(d.jitter1_dx >= 0 && d.jitter1_dx < 8 && d.jitter1_dy >= 0 && d.jitter1_dy < 8);
    EXPECT_TRUE(d.jitter2_dx >= 0 && d.jitter2_dx < 4 && d.jitter2_dy >= 0 && d.jitter2_dy < 4);
    scales.insert(d.scale);
    angles.insert(d.angle);
  }
  EXPECT_EQ(scales.size(), 11u);
  EXPECT_EQ(*scales.begin(), 1.0 + (0.0 - 5.0) / 50.0);
  EXPECT_EQ(*scales.rbegin(), 1.0 + (10.0 - 5.0) / 50.0);
  EXPECT_EQ(angles.size(), 21u);
  EXPECT_EQ(*angles.begin(), -10.0);
  EXPECT_EQ(*angles.rbegin(), 10.0);
}

TEST(FeatureVisualization, ObjectivesParseCombineAndExplainMistakes) {
  Objective o = Objective::parse("channel(layer4, 12) - 0.5*neuron(layer3,2,1,4)[1] + 1e-2*diversity(layer2) + class(7)");
  ASSERT_EQ(o.terms.size(), 4u);
  EXPECT_EQ(o.terms[0].kind, "channel");
  EXPECT_EQ(o.terms[0].layer, "layer4");
  EXPECT_EQ(o.terms[0].channel, 12);
  EXPECT_EQ(o.terms[1].weight, -0.5);
  EXPECT_EQ(o.terms[1].x, 1);
  EXPECT_EQ(o.terms[1].y, 4);
  EXPECT_EQ(o.terms[1].batch, 1);
  EXPECT_DOUBLE_EQ(o.terms[2].weight, 1e-2);
  EXPECT_EQ(o.terms[3].kind, "class");
  EXPECT_EQ(o.terms[3].channel, 7);
  EXPECT_EQ(o.layers(), (std::vector<std::string>{"layer4", "layer3", "layer2"}));
  Objective again = Objective::parse(o.to_string());
  ASSERT_EQ(again.terms.size(), 4u);
  EXPECT_EQ(again.to_string(), o.to_string());
  EXPECT_EQ(Objective::parse("-deepdream(x)").terms[0].weight, -1.0);
  for (const char* bad : {"", "chanel(a,1)", "channel(a)", "channel(a,-1)", "channel(a,1) +", "2*", "channel(a,1)[x]",
                          "neuron(a,1,2)", "class(a)"})
    EXPECT_THROW(Objective::parse(bad), InvalidArgument) << bad;
  try {
    Objective::parse("chanel(a,1)");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("channel"), std::string::npos) << e.what();
  }
  EXPECT_EQ(objective_catalog().size(), 5u);
}

TEST(FeatureVisualization, ObjectiveTermsAreLucentsQuantities) {
  at::Tensor act = at::randn({3, 4, 5, 6});
  at::Tensor output = at::randn({3, 10});
  Objective o = Objective::parse("neuron(l,2) + channel(l,1)[2] + deepdream(l) + class(4) + diversity(l)");
  auto v = objective_terms(o, {act}, output);
  EXPECT_NEAR(v[0].item<double>(), act.select(1, 2).select(1, 2).select(1, 3).mean().item<double>(), 1e-6);
  EXPECT_NEAR(v[1].item<double>(), act[2][1].mean().item<double>(), 1e-6);
  EXPECT_NEAR(v[2].item<double>(), act.pow(2).mean().item<double>(), 1e-6);
  EXPECT_NEAR(v[3].item<double>(), output.select(1, 4).mean().item<double>(), 1e-6);
  double sim = 0;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j) {
      if (i == j) continue;
      at::Tensor fi = act[i].reshape({4, -1}), fj = act[j].reshape({4, -1});
      at::Tensor gi = at::mm(fi, fi.t()), gj = at::mm(fj, fj.t());
      sim += ((gi / gi.norm()) * (gj / gj.norm())).sum().item<double>();
    }
  EXPECT_NEAR(v[4].item<double>(), -sim / 3.0, 1e-5);
  EXPECT_THROW(objective_terms(Objective::parse("channel(l,9)"), {act}, output), InvalidArgument);
}

TEST(FeatureVisualization, NeuronOfAnEdgeFilterRecoversTheFilter) {
  Model model = edge_model(16);
  FeatureVisualizationOptions o;
  o.param = "pixel";
  o.decorrelate = false;
  o.transforms = "none";
  o.size = 16;
  o.steps = 200;
  FeatureVisualization r = visualize(model, Objective::parse("neuron(conv,0)"), o);
  ASSERT_EQ(r.images.sizes(), (at::IntArrayRef{1, 3, 16, 16}));
  ASSERT_EQ(r.objective.size(), 200u);
  EXPECT_GT(r.objective.back(), r.objective.front());
  // The conv output is 12x12; neuron (6, 6) sees input rows and columns 6..10.
  at::Tensor patch = r.images[0].mean(0).narrow(0, 6, 5).narrow(1, 6, 5);
  EXPECT_GT(pearson(patch, edge_filter()), 0.9);
}

TEST(FeatureVisualization, ChannelThroughFourierAndTransformsDrawsTheEdge) {
  // Lucent's defaults (Fourier, decorrelated colours, standard transforms), fewer steps: somewhere
  // in the image a 5x5 window of the grey image correlates with the edge filter above 0.9.
  Model model = edge_model(48);
  FeatureVisualizationOptions o;
  o.size = 48;
  o.steps = 128;
  FeatureVisualization r = visualize(model, Objective::parse("channel(conv,0)"), o);
  at::Tensor grey = r.images[0].mean(0);
  at::Tensor windows = grey.unfold(0, 5, 1).unfold(1, 5, 1).reshape({-1, 25}).to(at::kDouble);
  at::Tensor f = edge_filter().flatten().to(at::kDouble);
  f = (f - f.mean()) / f.norm();
  windows = windows - windows.mean(1, true);
  at::Tensor ncc = at::mv(windows, f) / windows.norm(2, {1}).clamp_min(1e-12);
  EXPECT_GT(ncc.max().item<double>(), 0.9);
  EXPECT_GT(r.objective.back(), r.objective.front());
}

TEST(FeatureVisualization, ReachedActivationBeatsEveryDatasetSample) {
  Model model = Model::load(fixture("digits_cnn.pt"));
  at::Tensor data = read_npy(fixture("digits_test.npy"));
  const std::string layer = "features.2";
  LayerTaps taps(model, {layer});
  at::Tensor acts;
  {
    at::NoGradGuard no_grad;
    acts = taps.forward(data).activations[0];  // [16, C, 8, 8]
  }
  // The channel the data excites most (not a dead one), and the best sample's mean activation.
  at::Tensor means = acts.mean({2, 3});  // [16, C]
  const int64_t channel = std::get<0>(means.max(0)).argmax().item<int64_t>();
  const double best_sample = means.select(1, channel).max().item<double>();
  FeatureVisualizationOptions o;
  o.param = "pixel";
  o.transforms = "none";
  o.size = 8;
  o.steps = 256;
  Objective obj = Objective::parse("channel(" + layer + "," + std::to_string(channel) + ")");
  FeatureVisualization r = visualize(model, obj, o);
  at::NoGradGuard no_grad;
  const double reached = taps.forward(r.images).activations[0][0][channel].mean().item<double>();
  EXPECT_GT(reached, best_sample);
  EXPECT_NEAR(reached, r.objective.back(), 0.1 * std::abs(reached) + 1e-3) << "the curve tracks the activation";
}

TEST(FeatureVisualization, BadRequestsAreClearErrors) {
  Model model = edge_model(16);
  FeatureVisualizationOptions o;
  o.size = 16;
  o.steps = 2;
  EXPECT_THROW(visualize(model, Objective::parse("channel(nope,0)"), o), InvalidArgument);
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,3)"), o), InvalidArgument);
  EXPECT_THROW(visualize(model, Objective::parse("diversity(conv)"), o), InvalidArgument) << "batch 1";
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)[2]"), o), InvalidArgument);
  o.param = "wavelet";
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)"), o), InvalidArgument);
  CancelToken cancel;
  cancel.cancel();
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)"), FeatureVisualizationOptions{.size = 16}, {}, cancel),
               Cancelled);
}

TEST(FeatureVisualization, DatasetExamplesAreTheTopKWithTheirReceptiveFields) {
  Model model = edge_model(16);
  at::Tensor data = at::rand({10, 3, 16, 16}, at::detail::createCPUGenerator(4));
  // Sample 6 gets a strong vertical edge at rows 3..7, columns 9..13: its peak is at (3, 9).
  data[6].zero_();
  data[6].narrow(1, 3, 5).narrow(2, 12, 2).fill_(3.0);
  auto examples = dataset_examples(model, "conv", 0, data, 3, 4);
  ASSERT_EQ(examples.size(), 3u);
  LayerTaps taps(model, {"conv"});
  at::NoGradGuard no_grad;
  at::Tensor means = taps.forward(data).activations[0].select(1, 0).mean({1, 2}).to(at::kDouble);
  at::Tensor order = std::get<1>(means.sort(0, /*descending=*/true));
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(examples[j].index, order[static_cast<int64_t>(j)].item<int64_t>());
    EXPECT_NEAR(examples[j].activation, means[examples[j].index].item<double>(), 1e-9);
    // A 5x5 convolution without padding: output (y, x) sees input rows y..y+4, columns x..x+4.
    EXPECT_EQ(examples[j].bottom - examples[j].top, 5);
    EXPECT_EQ(examples[j].right - examples[j].left, 5);
    EXPECT_EQ(examples[j].top, examples[j].y);
    EXPECT_EQ(examples[j].left, examples[j].x);
  }
  auto six = std::find_if(examples.begin(), examples.end(), [](const DatasetExample& e) { return e.index == 6; });
  ASSERT_NE(six, examples.end()) << "the planted edge is among the top 3";
  EXPECT_EQ(six->y, 3);
  EXPECT_EQ(six->x, 9);
  EXPECT_THROW(dataset_examples(model, "conv", 4, data, 3), InvalidArgument);
}

// ---- MACO ----------------------------------------------------------------------------------

namespace {

// relu(conv(x)) with two channels: 0 the vertical edge filter above, 1 its transpose (a
// horizontal edge); every colour alike. The conv is the tappable layer "conv".
Model two_edge_model(int64_t size) {
  torch::jit::Module conv("TwoEdgeConv"), outer("TwoEdgeNet");
  at::Tensor w = at::stack({edge_filter(), edge_filter().t().contiguous()}).reshape({2, 1, 5, 5});
  conv.register_parameter("weight", w.expand({2, 3, 5, 5}).contiguous() / 3.0, false);
  conv.define("def forward(self, x):\n    return torch.conv2d(x, self.weight)\n");
  outer.register_module("conv", conv);
  outer.define("def forward(self, x):\n    return torch.relu(self.conv.forward(x)).flatten(1)\n");
  InputSpec spec;
  spec.shape = {3, size, size};
  spec.layout = "NCHW";
  return Model::from_module(outer, spec);
}

}  // namespace

TEST(FeatureVisualization, MacoPhaseOnlyParametrisationRoundTrips) {
  // An image's own magnitude with its own phase gives it back (even and odd widths).
  for (int64_t w : {16, 15}) {
    at::Tensor x = at::rand({1, 3, 12, w}, at::detail::createCPUGenerator(1)).to(at::kDouble);
    at::Tensor z = at::fft_rfft2(x);
    at::Tensor back = fv::phase_to_image(z.abs(), at::angle(z), 12, w);
    ASSERT_EQ(back.sizes(), x.sizes());
    EXPECT_LT((back - x).abs().max().item<double>(), 1e-12) << "width " << w;
  }
}

TEST(FeatureVisualization, MacoImagesKeepTheFixedMagnitude) {
  const int64_t h = 16, w = 16;
  at::Tensor mag = fv::maco_default_magnitude(h, w, 1.0).to(at::kDouble);
  ASSERT_EQ(mag.sizes(), (at::IntArrayRef{h, w / 2 + 1}));
  EXPECT_NEAR(mag[0][0].item<double>(), 16.0, 1e-9) << "DC: 1 / (1/max(h, w))";
  EXPECT_NEAR(mag[0][3].item<double>(), 16.0 / 3.0, 1e-5) << "1/f with f = 3/16";
  at::Generator gen = at::detail::createCPUGenerator(2);
  at::Tensor phase = at::randn({1, 3, h, w / 2 + 1}, gen, at::TensorOptions().dtype(at::kDouble));
  // irfft2 keeps every coefficient of the columns 1..w/2-1 (the others are made Hermitian): there
  // the image's spectrum has exactly the fixed magnitude, whatever the phase.
  at::Tensor y = fv::phase_to_image(mag, phase, h, w);
  at::Tensor inner = at::fft_rfft2(y).abs().narrow(-1, 1, w / 2 - 1);
  EXPECT_LT((inner - mag.narrow(-1, 1, w / 2 - 1)).abs().max().item<double>(), 1e-9);
  // maco_image: the logit of the output is the standardised image (mean 0, population std 1),
  // so its spectrum is the magnitude times one constant; and the phase is standardised first,
  // so an affine change of the phase changes nothing.
  at::Tensor img = fv::maco_image(mag.to(at::kFloat), phase.to(at::kFloat), h, w, /*decorrelate=*/false).to(at::kDouble);
  at::Tensor logit = at::log(img / (1 - img));
  EXPECT_NEAR(logit.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(logit.std(/*unbiased=*/false).item<double>(), 1.0, 1e-3);
  at::Tensor ratio = at::fft_rfft2(logit).abs().narrow(-1, 1, w / 2 - 1) / mag.narrow(-1, 1, w / 2 - 1);
  EXPECT_LT(((ratio - ratio.mean()).abs().max() / ratio.mean()).item<double>(), 1e-3) << "one constant factor";
  at::Tensor shifted = fv::maco_image(mag.to(at::kFloat), (phase * 3.0 + 1.0).to(at::kFloat), h, w, false);
  EXPECT_LT((shifted.to(at::kDouble) - img).abs().max().item<double>(), 1e-4);
}

TEST(FeatureVisualization, MacoCropsAreTensorFlowsCropAndResize) {
  // On a linear ramp bilinear sampling is exact: a crop's pixel (i, j) is the ramp at TensorFlow's
  // sample position y1 (H-1) + i (y2-y1)(H-1)/(out-1), and 0 where that falls outside the image.
  const int64_t h = 8, w = 8;
  at::Tensor ys = at::arange(h, at::kFloat).unsqueeze(1).expand({h, w}), xs = at::arange(w, at::kFloat).unsqueeze(0).expand({h, w});
  at::Tensor ramp = (10 * ys + xs).reshape({1, 1, h, w});
  at::Tensor boxes = at::tensor({0.0, 0.0, 1.0, 1.0, 0.25, 0.5, 0.75, 1.0, -0.5, 0.0, 0.5, 1.0}, at::kDouble).reshape({3, 4});
  at::Tensor crops = fv::crop_and_resize(ramp, boxes, 5, 5);
  ASSERT_EQ(crops.sizes(), (at::IntArrayRef{3, 1, 5, 5}));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        const double y = (boxes[b][0].item<double>() + i * (boxes[b][2] - boxes[b][0]).item<double>() / 4) * (h - 1);
        const double x = (boxes[b][1].item<double>() + j * (boxes[b][3] - boxes[b][1]).item<double>() / 4) * (w - 1);
        const double want = y < 0 || y > h - 1 || x < 0 || x > w - 1 ? 0.0 : 10 * y + x;
        EXPECT_NEAR(crops[b][0][i][j].item<double>(), want, 1e-4) << b << " " << i << " " << j;
      }
  EXPECT_TRUE(at::allclose(fv::crop_and_resize(ramp, boxes.narrow(0, 0, 1), h, w), ramp, 1e-5, 1e-4)) << "the identity";
  // Xplique's boxes: square, sides clipped to [0.05, 1].
  at::Generator gen = at::detail::createCPUGenerator(3);
  at::Tensor bx = fv::draw_maco_boxes(1000, 0.5, gen);
  at::Tensor side = bx.select(1, 2) - bx.select(1, 0);
  EXPECT_LT((side - (bx.select(1, 3) - bx.select(1, 1))).abs().max().item<double>(), 1e-12);
  EXPECT_GE(side.min().item<double>(), 0.05 - 1e-12);
  EXPECT_LE(side.max().item<double>(), 1.0 + 1e-12);
  EXPECT_NEAR(side.mean().item<double>(), 0.5, 0.01) << "N(0.5, 0.05²): the mean's std is 0.0016";
}

TEST(FeatureVisualization, MacoNeuronOfAnEdgeFilterRecoversTheFilterAndItsReceptiveField) {
  // One 16x16 image seen whole (no crops, the model's size: no resize): neuron (6, 6) of the 5x5
  // convolution sees input rows and columns 6..10 only. By Cauchy-Schwarz the neuron is largest for
  // a patch proportional to the filter; and the transparency (the summed |gradient| w.r.t. the
  // image) is exactly 0 outside the receptive field.
  Model model = edge_model(16);
  FeatureVisualizationOptions o;
  o.param = "maco";
  o.decorrelate = false;
  o.size = 16;
  o.steps = 64;
  o.maco_crops = 0;
  FeatureVisualization r = visualize(model, Objective::parse("neuron(conv,0)"), o);
  ASSERT_EQ(r.images.sizes(), (at::IntArrayRef{1, 3, 16, 16}));
  ASSERT_EQ(r.alpha.sizes(), (at::IntArrayRef{1, 3, 16, 16}));
  ASSERT_EQ(r.objective.size(), 64u);
  LayerTaps taps(model, {"conv"});
  at::NoGradGuard no_grad;
  // The neuron is at most 10 (the 10 right pixels at 1, the 10 left ones at 0, colours weighted 1/3);
  // the curve starts at the random phase's value (plus noise of std ~0.2 on this neuron).
  const double reached = taps.forward(r.images).activations[0][0][0][6][6].item<double>();
  EXPECT_GT(reached, r.objective.front() + 2.0) << "from " << r.objective.front() << " to " << reached;
  at::Tensor patch = r.images[0].mean(0).narrow(0, 6, 5).narrow(1, 6, 5);
  EXPECT_GT(pearson(patch, edge_filter()), 0.9);
  at::Tensor alpha = r.alpha[0].sum(0);
  EXPECT_GT(alpha.narrow(0, 6, 5).narrow(1, 6, 5).sum().item<double>(), 0.0);
  alpha.narrow(0, 6, 5).narrow(1, 6, 5).zero_();
  EXPECT_EQ(alpha.abs().max().item<double>(), 0.0) << "no gradient outside the receptive field";
  at::Tensor shown = maco_alpha_display(r.alpha[0]);
  EXPECT_NEAR(shown.max().item<double>(), 1.0, 1e-6);
  EXPECT_GE(shown.min().item<double>(), 0.0);
}

TEST(FeatureVisualization, MacoChannelThroughCropsPrefersTheFiltersOrientation) {
  // Channel 0 of the linear (pre-ReLU) vertical-edge convolution, averaged over a crop, is the
  // crop's left-to-right brightness slope; channel 1 (the transposed filter) its top-to-bottom
  // slope. The 1/f magnitude is the same under transposition, so at a random phase the two are
  // exchangeable (both ~0); only the phase, which MACO optimises through Xplique's crops and
  // noise, can favour one. After optimising channel 0, on 256 fresh crops of the image (side 0.5,
  // as the optimisation's first ones) channel 0 must exceed its value at the initial phase and
  // twice channel 1's magnitude.
  Model model = two_edge_model(24);
  FeatureVisualizationOptions o;
  o.param = "maco";
  o.size = 32;
  o.steps = 48;
  o.maco_crops = 8;
  const Objective obj = Objective::parse("channel(conv,0)");
  FeatureVisualization r = visualize(model, obj, o);
  FeatureVisualizationOptions still = o;  // one step of 1e-12: the image at the initial phase
  still.steps = 1;
  still.lr = 1e-12;
  const at::Tensor start = visualize(model, obj, still).images;
  // Dataset examples of both channels in one pass equal the one-channel calls.
  at::Tensor data = at::rand({6, 3, 24, 24}, at::detail::createCPUGenerator(5));
  auto both = dataset_examples(model, "conv", std::vector<int64_t>{1, 0}, data, 2);
  ASSERT_EQ(both.size(), 2u);
  for (int64_t c : {0, 1}) {
    auto one = dataset_examples(model, "conv", c, data, 2);
    const auto& many = both[c == 1 ? 0 : 1];
    ASSERT_EQ(many.size(), one.size());
    for (size_t j = 0; j < one.size(); ++j) {
      EXPECT_EQ(many[j].index, one[j].index);
      EXPECT_EQ(many[j].top, one[j].top);
      EXPECT_EQ(many[j].left, one[j].left);
    }
  }
  LayerTaps taps(model, {"conv"});
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(11);
  const at::Tensor boxes = fv::draw_maco_boxes(256, 0.5, gen);
  auto on_crops = [&](const at::Tensor& image) {
    return taps.forward(fv::crop_and_resize(image, boxes, 24, 24)).activations[0].mean({0, 2, 3});  // [2]
  };
  const at::Tensor after = on_crops(r.images), before = on_crops(start);
  const double v = after[0].item<double>(), hz = after[1].item<double>(), v0 = before[0].item<double>();
  EXPECT_GT(v, v0) << "channel 0 from " << v0 << " to " << v;
  EXPECT_GT(v, 2 * std::abs(hz)) << "vertical " << v << " horizontal " << hz;
}

TEST(FeatureVisualization, MacoRefusesWhatItCannotDo) {
  Model model = edge_model(16);
  FeatureVisualizationOptions o;
  o.param = "maco";
  o.size = 16;
  o.steps = 1;
  o.batch = 2;
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)"), o), InvalidArgument) << "one image";
  o.batch = 1;
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0) + diversity(conv)"), o), InvalidArgument);
  o.magnitude = at::ones({2, 16, 9});
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)"), o), InvalidArgument) << "2 of 3 channels";
  o.magnitude = at::ones({1, 16, 9}) * -1;
  EXPECT_THROW(visualize(model, Objective::parse("channel(conv,0)"), o), InvalidArgument) << "negative";
  // A magnitude computed from images: the mean |rfft2|, resized to the image's grid.
  at::Tensor imgs = at::rand({4, 3, 8, 8}, at::detail::createCPUGenerator(6));
  at::Tensor m = maco_magnitude(imgs, 8);
  EXPECT_TRUE(at::allclose(m, at::fft_rfft2(imgs).abs().mean(0), 1e-5, 1e-5));
  EXPECT_EQ(maco_magnitude(imgs, 16).sizes(), (at::IntArrayRef{3, 16, 9}));
  o.magnitude = maco_magnitude(imgs, 16);
  EXPECT_NO_THROW(visualize(model, Objective::parse("channel(conv,0)"), o));
  FeatureVisualizationOptions bad;
  bad.maco_box = 2;
  EXPECT_THROW(bad.validate(), InvalidArgument);
  EXPECT_EQ(FeatureVisualizationOptions{}.resolved().steps, 512);
  EXPECT_EQ(FeatureVisualizationOptions{.param = "maco"}.resolved().steps, 256);
  EXPECT_EQ(FeatureVisualizationOptions{.param = "maco"}.resolved().size, 512);
}

TEST(FeatureVisualization, UpsamplingFollowsLucentsRenderVis) {
  // Lucent resizes to 224 whenever the image is smaller than 224; "auto" does so unless the model
  // declares a smaller size (then that size: the model cannot take more), "model" only to a larger
  // declared size. The size is seen through a model that records its input width.
  auto width_model = [](std::vector<int64_t> shape) {
    InputSpec spec;
    spec.layout = shape.empty() ? "" : "NCHW";
    spec.shape = std::move(shape);
    return Model::from_function(
        [](const at::Tensor& x) { return (x.mean({1, 2, 3}) * 0 + static_cast<double>(x.size(3))).unsqueeze(1); }, spec);
  };
  auto seen = [&](const Model& m, const std::string& upsample) {
    FeatureVisualizationOptions o;
    o.size = 32;
    o.steps = 1;
    o.transforms = "none";
    o.upsample = upsample;
    return std::lround(visualize(m, Objective::parse("class(0)"), o).objective[0]);
  };
  const Model big = width_model({3, 224, 224}), small = width_model({3, 48, 48}), none = width_model({});
  EXPECT_EQ(seen(big, "auto"), 224);
  EXPECT_EQ(seen(none, "auto"), 224) << "no declared size: Lucent's 224";
  EXPECT_EQ(seen(small, "auto"), 48) << "a declared size below 224 wins";
  EXPECT_EQ(seen(small, "lucent"), 224);
  EXPECT_EQ(seen(none, "model"), 32);
  EXPECT_EQ(seen(big, "none"), 32);
}
