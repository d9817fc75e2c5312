// Known answers for the gradient methods.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "candela/io/npy.h"
#include "path_integral.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::linear_model;
using candela::testing::rel_error;
using namespace candela::testing;

namespace {

struct LinearCase {
  at::Tensor w = at::tensor({0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0, -2.0, 0.1, 0.0, 1.0, 1.0}, at::kFloat).view({3, 4});
  at::Tensor b = at::tensor({0.1, -0.2, 0.3}, at::kFloat);
  at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5, -3.0, 0.0, 2.0, 1.0}, at::kFloat).view({2, 4});
  Model model = linear_model(w, b);
};

Attribution run(const Explainer& e, const Model& m, const at::Tensor& x, Target t,
                Baseline base = Baseline::zeros()) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(t);
  r.baseline = std::move(base);
  return e.explain(m, r);
}

}  // namespace

TEST(IntegratedGradients, LinearModelIsExactForEveryQuadrature) {
  LinearCase c;
  const at::Tensor ref = at::tensor({0.5, 0.5, 0.5, 0.5}, at::kFloat).view({1, 4});
  for (std::string method : {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"}) {
    for (int64_t steps : {2, 7, 50}) {
      IntegratedGradients ig({.n_steps = steps, .method = method});
      auto a = run(ig, c.model, c.x, Target::index(1), Baseline::tensor(ref));
      at::Tensor expected = (c.x - ref) * c.w[1];
      EXPECT_LT(rel_error(a.values, expected), 1e-6) << method << " n_steps=" << steps;
      EXPECT_LT(a.convergence_delta.abs().max().item<double>(), 1e-5) << method;
      EXPECT_EQ(a.model_evaluations, 2 * 2 + 2 * steps) << "endpoints + path points";
    }
  }
}

TEST(IntegratedGradients, LocalAttributionIsTheAverageGradient) {
  LinearCase c;
  IntegratedGradients ig({.multiply_by_inputs = false});
  auto a = run(ig, c.model, c.x, Target::index(2));
  EXPECT_LT(rel_error(a.values, c.w[2].expand_as(c.x)), 1e-6);
}

TEST(IntegratedGradients, QuadratureWeightsAndKnownGaussLegendreNodes) {
  std::vector<double> al, w;
  quadrature("gausslegendre", 3, al, w);
  const double d = std::sqrt(3.0 / 5.0) / 2.0;
  EXPECT_NEAR(al[0], 0.5 - d, 1e-15);
  EXPECT_NEAR(al[1], 0.5, 1e-15);
  EXPECT_NEAR(al[2], 0.5 + d, 1e-15);
  EXPECT_NEAR(w[0], 5.0 / 18.0, 1e-14);
  EXPECT_NEAR(w[1], 8.0 / 18.0, 1e-14);
  for (std::string m : {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"}) {
    for (int64_t n : {2, 5, 50, 200}) {
      quadrature(m, n, al, w);
      double sum = 0;
      for (double x : w) sum += x;
      EXPECT_NEAR(sum, 1.0, 1e-12) << m << " " << n;
      EXPECT_TRUE(std::is_sorted(al.begin(), al.end())) << m;
      EXPECT_GE(al.front(), 0.0);
      EXPECT_LE(al.back(), 1.0);
    }
  }
  // Gauss-Legendre with n nodes integrates a degree 2n-1 polynomial exactly.
  quadrature("gausslegendre", 4, al, w);
  double integral = 0;
  for (size_t i = 0; i < al.size(); ++i) integral += w[i] * std::pow(al[i], 7);
  EXPECT_NEAR(integral, 1.0 / 8.0, 1e-14);
  // Every rule agrees with an independent derivation (Golub-Welsch for Gauss-Legendre).
  for (std::string m : {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"}) {
    for (int64_t n : {2, 7, 50, 200}) {
      std::vector<double> ra, rw;
      quadrature(m, n, al, w);
      reference_quadrature(m, n, ra, rw);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(al[i], ra[i], 1e-12) << m << " " << n << " node " << i;
        EXPECT_NEAR(w[i], rw[i], 1e-12) << m << " " << n << " weight " << i;
      }
    }
  }
}

TEST(IntegratedGradients, MlpCompletenessErrorStaysWithinTheQuadratureBoundAsStepsGrow) {
  Model mlp = Model::load(fixture("breast_cancer_mlp.pt"));
  at::Tensor x = read_npy(fixture("breast_cancer_test.npy")).slice(0, 0, 12);
  const std::vector<int64_t> target(12, 1);
  at::Tensor change;
  {
    at::NoGradGuard no_grad;
    change = (mlp.module()->forward({x}).toTensor() - mlp.module()->forward({at::zeros_like(x)}).toTensor()).select(1, 1);
  }
  // How much the path integrand varies on these weights (tests/path_integral.h): the error of any
  // of Captum's rules with n points stays below it times 4/n, so it falls to zero as steps grow.
  const at::Tensor variation = sampled_variation(path_integrand(
      target_logit([&](const at::Tensor& p) { return mlp.module()->forward({p}).toTensor(); }, target), x,
      at::zeros_like(x)));
  auto check = [&](IntegratedGradients::Options o) {
    auto a = run(IntegratedGradients(o), mlp, x, Target::index(1));
    // The reported delta is the sum of attributions minus f(x) - f(b), recomputed here.
    at::Tensor error = a.values.sum(1) - change;
    EXPECT_LT((a.convergence_delta - error).abs().max().item<double>(), 1e-5) << o.method << " " << o.n_steps;
    EXPECT_TRUE((error.abs().to(at::kDouble) <= quadrature_error_bound(variation, o.n_steps, change)).all().item<bool>())
        << o.method << " n_steps=" << o.n_steps << ": |delta| " << error.abs() << " variation " << variation;
  };
  for (int64_t steps : {4, 16, 64, 256}) check({.n_steps = steps, .method = "riemann_trapezoid"});
  check({});  // gausslegendre, 50 steps
}

TEST(IntegratedGradients, AdaptiveMeetsItsToleranceOrSaysItRanOutOfSteps) {
  struct Case {
    std::string model, data;
  };
  for (const auto& c : {Case{"breast_cancer_mlp.pt", "breast_cancer_test.npy"}, Case{"digits_cnn.pt", "digits_test.npy"}}) {
    Model m = Model::load(fixture(c.model));
    at::Tensor x = read_npy(fixture(c.data)).slice(0, 0, 6);
    for (double tol : {0.01, 0.001}) {
      // With the default cap the tolerance may be out of reach on some fixture: then the method
      // says so. With a cap of 100000 points, halving the pieces around each kink always gets there.
      for (int64_t cap : {int64_t{1024}, int64_t{100000}}) {
        auto a = run(IntegratedGradients({.method = "adaptive", .tolerance = tol, .max_steps = cap}), m, x, Target::top1());
        at::Tensor fb;
        {
          at::NoGradGuard no_grad;
          fb = m.module()->forward({at::zeros_like(x)}).toTensor();
        }
        for (int64_t i = 0; i < x.size(0); ++i) {
          const int64_t t = a.targets[i];
          const double df = std::abs(a.output[i][t].item<double>() - fb[i][t].item<double>());
          const double delta = a.values[i].sum().item<double>() - (a.output[i][t].item<double>() - fb[i][t].item<double>());
          EXPECT_NEAR(a.convergence_delta[i].item<double>(), delta, 1e-5) << c.model << " " << i;
          if (a.extra["converged"][i].get<bool>()) {
            EXPECT_LE(std::abs(delta), tol * df * 1.0001 + 1e-5) << c.model << " " << i;
          } else {
            // Out of points, or asked for less than float32 resolves in f (then the pieces stop
            // halving below 1e-9).
            const bool unresolvable = tol * df < 1e-4;
            EXPECT_TRUE(a.extra["steps"][i].get<int64_t>() >= cap || unresolvable)
                << c.model << " " << i << ": stopped before its cap, steps " << a.extra["steps"][i];
            EXPECT_TRUE(cap == 1024 || unresolvable) << c.model << " " << i << ": did not converge with 100000 points";
          }
        }
      }
    }
  }
}

TEST(Saliency, LinearModelGradientIsTheWeightRow) {
  LinearCase c;
  auto a = run(Saliency(), c.model, c.x, Target::index(0));
  EXPECT_LT(rel_error(a.values, c.w[0].abs().expand_as(c.x)), 1e-7);
  auto s = run(Saliency({.abs = false}), c.model, c.x, Target::indices({0, 2}));
  EXPECT_LT(rel_error(s.values[0], c.w[0]), 1e-7);
  EXPECT_LT(rel_error(s.values[1], c.w[2]), 1e-7);
  EXPECT_EQ(s.model_evaluations, 2);
}

TEST(Saliency, Top1ExplainsEachSamplesArgmax) {
  LinearCase c;
  auto a = run(Saliency({.abs = false}), c.model, c.x, Target::top1());
  at::Tensor pred = c.model.forward(c.x).argmax(1);
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.targets[i], pred[i].item<int64_t>());
    EXPECT_LT(rel_error(a.values[i], c.w[pred[i].item<int64_t>()]), 1e-7);
  }
}

TEST(InputXGradient, LinearModelIsInputTimesWeight) {
  LinearCase c;
  auto a = run(InputXGradient(), c.model, c.x, Target::index(1));
  EXPECT_LT(rel_error(a.values, c.x * c.w[1]), 1e-7);
}

TEST(Target, FunctionTargetIsLinearInTheOutput) {
  LinearCase c;
  auto both = Target::function([](const at::Tensor& out) { return out.select(1, 0) + out.select(1, 2); }, "0+2");
  auto a = run(IntegratedGradients(), c.model, c.x, both);
  auto a0 = run(IntegratedGradients(), c.model, c.x, Target::index(0));
  auto a2 = run(IntegratedGradients(), c.model, c.x, Target::index(2));
  EXPECT_LT(rel_error(a.values, a0.values + a2.values), 1e-6);
  EXPECT_TRUE(a.targets.empty());
  EXPECT_EQ(a.target, "0+2");
}

TEST(Target, OutOfRangeClassIsAClearError) {
  LinearCase c;
  try {
    run(Saliency(), c.model, c.x, Target::index(3));
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("out of range: the model has 3 outputs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(run(Saliency(), c.model, c.x, Target::indices({0, 1, 2})), InvalidArgument);
  EXPECT_THROW(Target::parse("cat", {"dog", "bird"}), InvalidArgument);
  EXPECT_EQ(Target::parse("bird", {"dog", "bird"}).describe(), "1");
  EXPECT_EQ(Target::parse("3,1").describe(), "3,1");
}

TEST(NoiseTunnel, ZeroNoiseReproducesTheWrappedMethod) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 3);
  auto base = run(IntegratedGradients({.n_steps = 8}), m, x, Target::top1());
  nlohmann::json inner = {{"n_steps", 8}};
  for (std::string type : {"smoothgrad", "smoothgrad_sq", "vargrad"}) {
    NoiseTunnel nt({.nt_type = type, .nt_samples = 3, .stdevs = 0.0, .base_method = "integrated_gradients",
                    .base_options = inner});
    auto a = run(nt, m, x, Target::top1());
    at::Tensor expected = type == "smoothgrad" ? base.values
                          : type == "smoothgrad_sq" ? base.values * base.values
                                                    : at::zeros_like(base.values);
    EXPECT_LT((a.values - expected).abs().max().item<double>(), 1e-5 * base.values.abs().max().item<double>()) << type;
  }
}

TEST(NoiseTunnel, SmoothGradOfALinearModelIsItsWeights) {
  LinearCase c;
  NoiseTunnel nt({.nt_samples = 10, .stdevs = 0.7, .base_options = {{"abs", false}}});
  auto a = run(nt, c.model, c.x, Target::index(2));
  EXPECT_LT(rel_error(a.values, c.w[2].expand_as(c.x)), 1e-6);
  NoiseTunnel var({.nt_type = "vargrad", .nt_samples = 10, .stdevs = 0.7, .base_options = {{"abs", false}}});
  EXPECT_LT(run(var, c.model, c.x, Target::index(2)).values.abs().max().item<double>(), 1e-6);
  EXPECT_EQ(a.model_evaluations, 2 + 2 * 10) << "target forward + one gradient per noisy copy";
}

TEST(NoiseTunnel, SmoothGradOfASineInClosedForm) {
  // f = sum sin(x_j): with Gaussian noise of std s, E[cos(x + e)] = cos(x) exp(-s^2/2),
  // E[cos^2(x + e)] = (1 + cos(2x) exp(-2 s^2)) / 2, and vargrad is their difference's variance.
  // 4000 draws: every estimate is within 5 standard errors (each |cos| <= 1, so 5 / sqrt(4000)).
  InputSpec spec;
  spec.shape = {5};
  spec.layout = "NC";
  Model sine = Model::from_function([](const at::Tensor& b) { return b.sin().sum(1, true); }, spec);
  const at::Tensor x = at::tensor({0.0, 0.7, 1.5, -2.0, 3.0}, at::kDouble).view({1, 5});
  const double s = 0.5, tol = 5.0 / std::sqrt(4000.0);
  const at::Tensor mean = x.cos() * std::exp(-s * s / 2), square = (1 + (2 * x).cos() * std::exp(-2 * s * s)) / 2;
  const std::map<std::string, at::Tensor> expected = {
      {"smoothgrad", mean}, {"smoothgrad_sq", square}, {"vargrad", square - mean * mean}};
  for (const auto& [type, want] : expected) {
    NoiseTunnel nt({.nt_type = type, .nt_samples = 4000, .stdevs = s, .base_options = {{"abs", false}}});
    auto a = run(nt, sine, x, Target::index(0));
    EXPECT_LT((a.values.to(at::kDouble) - want).abs().max().item<double>(), tol) << type << a.values << want;
  }
}

TEST(GradientShap, NoisyInputsOfALinearModelAverageToInputMinusReference) {
  // Captum's GradientShap adds N(0, stdevs^2) to the input: each draw gives w * (x + e - b), so the
  // mean is w * (x - b) up to |w| stdevs / sqrt(n_samples) per element (5 standard errors here).
  LinearCase c;
  const at::Tensor ref = at::tensor({1.0, -1.0, 0.0, 2.0}, at::kFloat);
  const double s = 0.5;
  auto a = run(GradientShap({.n_samples = 4000, .stdevs = s}), c.model, c.x, Target::index(0), Baseline::tensor(ref));
  const at::Tensor want = (c.x - ref) * c.w[0];
  EXPECT_TRUE(((a.values - want).abs() <= 5 * s / std::sqrt(4000.0) * c.w[0].abs() + 1e-6).all().item<bool>())
      << a.values << want;
  EXPECT_GT((a.values - want).abs().max().item<double>(), 0.0) << "the noise is there";
}

TEST(GradientShap, LinearModelWithOneReferenceIsExact) {
  LinearCase c;
  const at::Tensor ref = at::tensor({1.0, -1.0, 0.0, 2.0}, at::kFloat);
  auto one = run(GradientShap({.n_samples = 7}), c.model, c.x, Target::index(0), Baseline::tensor(ref));
  EXPECT_LT(rel_error(one.values, (c.x - ref) * c.w[0]), 1e-6);
  // A distribution whose draws all equal one reference gives the same answer.
  auto a = run(GradientShap({.n_samples = 7}), c.model, c.x, Target::index(0),
               Baseline::distribution(ref.unsqueeze(0).repeat({5, 1})));
  EXPECT_LT(rel_error(a.values, (c.x - ref) * c.w[0]), 1e-6);
}

TEST(GradientShap, ExpectedGradientsOfALinearModelIsInputMinusTheMeanReference) {
  // With many draws the distribution's average reference appears: a = (x - E[b]) w.
  LinearCase c;
  at::Tensor dist = at::tensor({0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0}, at::kFloat).view({2, 4});
  auto e = Registry::builtin().create("expected_gradients", {{"n_samples", 4000}});
  auto a = run(*e, c.model, c.x, Target::index(0), Baseline::distribution(dist));
  EXPECT_LT(rel_error(a.values, (c.x - 1.0) * c.w[0]), 0.05);
}

TEST(Baseline, KindsProduceWhatTheySay) {
  at::Tensor x = at::full({2, 3, 9, 9}, 0.25);
  EXPECT_TRUE(at::allclose(Baseline::blurred(2.0).for_inputs(x, "NCHW", 0), x, 1e-6, 1e-6));
  at::Tensor step = at::zeros({1, 1, 9, 9});
  step.slice(3, 5) = 1.0;
  at::Tensor blurred = Baseline::blurred(1.0).for_inputs(step, "NCHW", 0);
  EXPECT_GT(blurred[0][0][4][4].item<double>(), 0.1);
  EXPECT_LT(blurred[0][0][4][4].item<double>(), 0.9);
  at::Tensor u = Baseline::uniform(-1, 3).for_inputs(x, "NCHW", 7);
  EXPECT_GE(u.min().item<double>(), -1.0);
  EXPECT_LE(u.max().item<double>(), 3.0);
  EXPECT_TRUE(at::equal(u, Baseline::uniform(-1, 3).for_inputs(x, "NCHW", 7)));
  EXPECT_EQ(Baseline::parse("constant:0.5").for_inputs(x, "", 0).mean().item<double>(), 0.5);
  EXPECT_THROW(Baseline::parse("cosntant:1"), InvalidArgument);
  EXPECT_THROW(Baseline::blurred(1.0).for_inputs(at::zeros({2, 5}), "NC", 0), InvalidArgument);
  EXPECT_THROW(Baseline::tensor(at::zeros({7})).for_inputs(at::zeros({2, 5}), "NC", 0), ShapeMismatch);
}

namespace {
// A 1x1-conv "segmentation" model: [N, 2, H, W] -> [N, 3, H, W].
Model segmentation_model(at::Tensor w) {
  torch::jit::Module head("Head"), top("Seg");
  head.register_parameter("weight", w, false);
  head.define("def forward(self, x):\n    return torch.conv2d(x, self.weight)\n");
  top.register_module("head", head);
  top.define("def forward(self, x):\n    return self.head.forward(x)\n");
  InputSpec spec;
  spec.shape = {2, 4, 4};
  spec.layout = "NCHW";
  return Model::from_module(top, spec);
}
}  // namespace

TEST(Target, SegmentationRegionAndBoxTargets) {
  at::Tensor w = at::randn({3, 2, 1, 1}, at::detail::createCPUGenerator(8));
  Model m = segmentation_model(w);
  at::Tensor x = at::randn({2, 2, 4, 4}, at::detail::createCPUGenerator(9));
  at::Tensor mask = at::zeros({4, 4});
  mask.slice(0, 1, 3).slice(1, 0, 2) = 1.0;
  // Linear model: IG over the region = x * w[c] inside the region, 0 outside.
  auto region = run(IntegratedGradients(), m, x, Target::region(2, mask));
  at::Tensor expected = x * w[2].view({1, 2, 1, 1}) * mask;
  EXPECT_LT(rel_error(region.values, expected), 1e-5);
  auto box = run(IntegratedGradients(), m, x, Target::box(2, 1, 0, 3, 2));
  EXPECT_LT(rel_error(box.values, expected), 1e-5);
  auto parsed = run(IntegratedGradients(), m, x, Target::parse("region:2:1,0,3,2"));
  EXPECT_LT(rel_error(parsed.values, expected), 1e-5);
  EXPECT_THROW(run(Saliency(), m, x, Target::region(3, mask)), InvalidArgument);
  EXPECT_THROW(run(Saliency(), m, x, Target::region(1, at::ones({3, 3}))), ShapeMismatch);
  EXPECT_THROW(run(Saliency(), m, x, Target::box(0, 0, 0, 5, 1)), InvalidArgument);
  // A CAM of a segmentation target works the same way.
  auto cam = Registry::builtin().create("grad_cam", {{"layers", {"head"}}})->explain(m, [&] {
    ExplainRequest r;
    r.inputs = x;
    r.target = Target::region(2, mask);
    return r;
  }());
  EXPECT_EQ(cam.values.sizes(), (at::IntArrayRef{2, 1, 4, 4}));
}

TEST(Target, ElementOfAMultiDimensionalOutput) {
  LinearCase c;
  auto by_element = run(IntegratedGradients(), c.model, c.x, Target::parse("element:2"));
  auto by_class = run(IntegratedGradients(), c.model, c.x, Target::index(2));
  EXPECT_LT(rel_error(by_element.values, by_class.values), 1e-7);
  EXPECT_THROW(run(Saliency(), c.model, c.x, Target::element({3})), InvalidArgument);
  EXPECT_THROW(run(Saliency(), c.model, c.x, Target::element({0, 1})), InvalidArgument);
}
