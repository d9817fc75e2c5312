// Known answers for the layer and neuron methods: closed forms on two-layer models built in
// C++, completeness on the digits CNN, and direct re-derivations of Captum's formulas with plain
// autograd over the network's layers (tests/path_integral.h's Chain).
#include <gtest/gtest.h>

#include "candela/graph/taps.h"
#include "candela/io/npy.h"
#include "path_integral.h"
#include "test_util.h"

using namespace candela;
using namespace candela::testing;

namespace {

// fc2(act(fc1(x))) with fc1: 4 -> 3 and fc2: 3 -> 2, as tappable submodules. `body` is the
// forward's source, e.g. "return self.fc2.forward(self.fc1.forward(x))".
struct TwoLayer {
  at::Tensor w1 = at::tensor({0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0, -2.0, 0.1, 0.0, 1.0, 1.0}, at::kFloat).view({3, 4});
  at::Tensor b1 = at::tensor({0.1, -0.2, 0.3}, at::kFloat);
  at::Tensor w2 = at::tensor({1.0, -2.0, 0.5, 0.25, 1.5, -1.0}, at::kFloat).view({2, 3});
  at::Tensor b2 = at::tensor({0.05, -0.4}, at::kFloat);
  at::Tensor x = at::tensor({1.0, 2.0, -1.0, 0.5, -3.0, 0.0, 2.0, 1.0, 0.5, 0.5, 0.5, -0.5}, at::kFloat).view({3, 4});
  at::Tensor ref = at::tensor({0.5, -0.5, 0.25, 1.0}, at::kFloat).view({1, 4});

  Model model(const std::string& body) const {
    auto linear = [](const at::Tensor& w, const at::Tensor& b) {
      torch::jit::Module m("Linear");
      m.register_parameter("weight", w.clone(), false);
      m.register_parameter("bias", b.clone(), false);
      m.define("def forward(self, x):\n    return torch.matmul(x, self.weight.t()) + self.bias\n");
      return m;
    };
    torch::jit::Module m("TwoLayer");
    m.register_module("fc1", linear(w1, b1));
    m.register_module("fc2", linear(w2, b2));
    m.define("def forward(self, x):\n    " + body + "\n");
    InputSpec spec;
    spec.shape = {4};
    spec.layout = "NC";
    return Model::from_module(m, spec);
  }
  Model linear() const { return model("return self.fc2.forward(self.fc1.forward(x))"); }
  // The same function, with and without a value (x.size(0)) that crosses fc1's cut.
  Model relu() const { return model("return self.fc2.forward(torch.relu(self.fc1.forward(x)))"); }
  Model relu_uncuttable() const {
    return model("n = x.size(0)\n    return self.fc2.forward(torch.relu(self.fc1.forward(x))).view(n, -1)");
  }
  // With a skip connection from the input; in the second, the value crossing the cut (x.t(),
  // [4, N]) has no batch dimension first, which only run_suffix finds out.
  Model skip() const { return model("return self.fc2.forward(torch.relu(self.fc1.forward(x))) + x.narrow(1, 0, 2)"); }
  Model skip_transposed() const {
    return model("t = x.t()\n    return self.fc2.forward(torch.relu(self.fc1.forward(x))) + t.t().narrow(1, 0, 2)");
  }
  at::Tensor fc1(const at::Tensor& in) const { return at::matmul(in, w1.t()) + b1; }
};

at::Tensor digits(int64_t n = 4) { return read_npy(fixture("digits_test.npy")).slice(0, 0, n); }

Attribution run(const Explainer& e, const Model& m, const at::Tensor& x, Target t = Target::top1(),
                Baseline base = Baseline::zeros(), int64_t max_batch = 0) {
  ExplainRequest r;
  r.inputs = x;
  r.target = std::move(t);
  r.baseline = std::move(base);
  r.eval.max_batch_size = max_batch;
  return e.explain(m, r);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument";
}

// f_t(x) - f_t(b) for each sample, t the attribution's targets.
at::Tensor output_change(const Model& m, const Attribution& a, const at::Tensor& base) {
  at::NoGradGuard no_grad;
  at::Tensor fb = m.forward(base);
  at::Tensor t = at::tensor(a.targets, at::kLong).view({-1, 1});
  return (a.output.gather(1, t) - fb.gather(1, t)).view({-1});
}

// Captum's LayerIntegratedGradients re-derived with plain autograd on the Sequential digits CNN:
// each path point replaces the layer's output and the rest of the network runs from there.
at::Tensor direct_layer_ig(const Model& m, const std::string& layer, const at::Tensor& x, const at::Tensor& base,
                           int64_t target, int64_t steps) {
  const Chain chain(*m.module(), {"features", "classifier"});
  at::NoGradGuard no_grad;
  at::Tensor h_x = chain.up_to(x, layer), h_b = chain.up_to(base, layer);
  std::vector<double> alphas, weights;
  reference_quadrature("gausslegendre", steps, alphas, weights);
  at::Tensor total = at::zeros_like(h_x);
  for (int64_t k = 0; k < steps; ++k) {
    at::AutoGradMode enable(true);
    at::Tensor h = (h_b + alphas[k] * (h_x - h_b)).requires_grad_(true);
    at::Tensor score = chain.after(h, layer).select(1, target).sum();
    total += weights[k] * torch::autograd::grad({score}, {h})[0];
  }
  return total * (h_x - h_b);
}

// Captum's LayerConductance formula, all n_steps + 1 points in one batch, with plain autograd.
at::Tensor direct_conductance(const Model& m, const std::string& layer, const at::Tensor& x, const at::Tensor& base,
                              int64_t target, int64_t steps, const std::string& method) {
  const Chain chain(*m.module(), {"features", "classifier"});
  std::vector<double> alphas, weights;
  reference_quadrature(method, steps + 1, alphas, weights);
  std::vector<at::Tensor> scaled;
  for (double a : alphas) scaled.push_back(base + a * (x - base));
  at::Tensor in = at::cat(scaled);
  at::Tensor h = chain.up_to(in, layer).detach().requires_grad_(true);
  at::Tensor g = torch::autograd::grad({chain.after(h, layer).select(1, target).sum()}, {h})[0];
  const int64_t n = x.size(0);
  at::Tensor diffs = h.slice(0, n) - h.slice(0, 0, -n);
  at::Tensor terms = (diffs * g.slice(0, 0, -n)).detach();
  std::vector<int64_t> shape = {steps, n};
  for (int64_t d = 1; d < h.dim(); ++d) shape.push_back(h.size(d));
  return terms.view(shape).sum(0);
}

}  // namespace

// ---- layer_activation ---------------------------------------------------------------------

TEST(LayerActivation, IsTheLayersOutput) {
  TwoLayer c;
  Model m = c.linear();
  auto a = run(LayerActivation({.layers = {"fc1"}}), m, c.x);
  EXPECT_LT(rel_error(a.values, c.fc1(c.x)), 1e-7);
  EXPECT_EQ(a.layer, "fc1");
  EXPECT_LT(rel_error(a.output, m.forward(c.x)), 1e-7);
  EXPECT_EQ(a.model_evaluations, 3);
}

// ---- layer_gradient_x_activation ------------------------------------------------------------

TEST(LayerGradientXActivation, LinearModelIsActivationTimesTheNextWeightRow) {
  TwoLayer c;
  Model m = c.linear();
  auto a = run(LayerGradientXActivation({.layers = {"fc1"}}), m, c.x, Target::index(1));
  EXPECT_LT(rel_error(a.values, c.fc1(c.x) * c.w2[1]), 1e-6);
  EXPECT_EQ(a.layer, "fc1");
  auto g = run(LayerGradientXActivation({.layers = {"fc1"}, .multiply_by_inputs = false}), m, c.x, Target::top1());
  at::Tensor pred = m.forward(c.x).argmax(1);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(g.targets[i], pred[i].item<int64_t>());
    EXPECT_LT(rel_error(g.values[i], c.w2[pred[i].item<int64_t>()]), 1e-6) << "sample " << i;
  }
}

// ---- layer_integrated_gradients -----------------------------------------------------------

TEST(LayerIntegratedGradients, LinearModelIsActivationChangeTimesWeightRowForEveryQuadrature) {
  TwoLayer c;
  Model m = c.linear();
  const at::Tensor expected = (c.fc1(c.x) - c.fc1(c.ref)) * c.w2[0];
  for (std::string method : {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"}) {
    for (int64_t steps : {2, 7, 50}) {
      LayerIntegratedGradients lig({.layers = {"fc1"}, .n_steps = steps, .method = method});
      auto a = run(lig, m, c.x, Target::index(0), Baseline::tensor(c.ref));
      EXPECT_LT(rel_error(a.values, expected), 1e-6) << method << " n_steps=" << steps;
      EXPECT_LT(a.convergence_delta.abs().max().item<double>(), 1e-5) << method;
      EXPECT_EQ(a.layer, "fc1");
      EXPECT_TRUE(a.extra["suffix_execution"].get<bool>());
      EXPECT_EQ(a.model_evaluations, 2 * 3) << "endpoints only: the path runs after the cut";
      EXPECT_EQ(a.extra["partial_evaluations"].get<int64_t>(), 3 + 3 * steps) << "prefix once + suffix per point";
    }
  }
  auto local = run(LayerIntegratedGradients({.layers = {"fc1"}, .multiply_by_inputs = false}), m, c.x,
                   Target::index(1), Baseline::tensor(c.ref));
  EXPECT_LT(rel_error(local.values, c.w2[1].expand_as(local.values)), 1e-6);
}

TEST(LayerIntegratedGradients, SuffixExecutionAndFullPassesGiveTheSameNumbers) {
  TwoLayer c;
  Model cuttable = c.relu(), uncuttable = c.relu_uncuttable();
  {
    LayerTaps t1(cuttable, {"fc1"}), t2(uncuttable, {"fc1"});
    ASSERT_TRUE(t1.can_cut()) << t1.cut_problem();
    ASSERT_FALSE(t2.can_cut());
  }
  for (int64_t cap : {0, 2, 5}) {
    LayerIntegratedGradients lig({.layers = {"fc1"}, .n_steps = 16, .internal_batch_size = cap});
    auto s = run(lig, cuttable, c.x, Target::index(1), Baseline::tensor(c.ref));
    auto f = run(lig, uncuttable, c.x, Target::index(1), Baseline::tensor(c.ref));
    EXPECT_TRUE(s.extra["suffix_execution"].get<bool>());
    EXPECT_FALSE(f.extra["suffix_execution"].get<bool>());
    EXPECT_NE(f.extra["suffix_execution_reason"].get<std::string>().find("used after it"), std::string::npos)
        << f.extra.dump();
    EXPECT_LT(rel_error(s.values, f.values), 1e-6) << "internal_batch_size=" << cap;
    EXPECT_LT(rel_error(s.convergence_delta, f.convergence_delta), 1e-5);
    EXPECT_EQ(f.model_evaluations, 2 * 3 + 3 * 16) << "endpoints + one full pass per path point";
    EXPECT_FALSE(f.extra.contains("partial_evaluations"));
  }
  // A cut the graph allows but whose crossing value is not batch-shaped: full passes take over.
  LayerIntegratedGradients lig({.layers = {"fc1"}, .n_steps = 16});
  auto s = run(lig, c.skip(), c.x, Target::index(0), Baseline::tensor(c.ref));
  auto f = run(lig, c.skip_transposed(), c.x, Target::index(0), Baseline::tensor(c.ref));
  EXPECT_TRUE(s.extra["suffix_execution"].get<bool>());
  EXPECT_FALSE(f.extra["suffix_execution"].get<bool>());
  EXPECT_NE(f.extra["suffix_execution_reason"].get<std::string>().find("without the batch dimension"), std::string::npos)
      << f.extra.dump();
  EXPECT_LT(rel_error(s.values, f.values), 1e-6);
  EXPECT_LT(rel_error(s.convergence_delta, f.convergence_delta), 1e-5);
}

TEST(LayerIntegratedGradients, MatchesADirectTapsDerivationOnDigitsCnn) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = digits(3), base = at::full_like(x, 0.25);
  for (std::string layer : {"features.2", "classifier.1"}) {
    auto a = run(LayerIntegratedGradients({.layers = {layer}, .n_steps = 12}), m, x, Target::index(4),
                 Baseline::constant(0.25));
    ASSERT_TRUE(a.extra["suffix_execution"].get<bool>()) << layer;
    EXPECT_LT(rel_error(a.values, direct_layer_ig(m, layer, x, base, 4, 12)), 1e-5) << layer;
  }
}

TEST(LayerIntegratedGradients, SumsToTheOutputChangeWithinTheQuadratureBoundOnDigitsCnn) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  const Chain chain(*m.module(), {"features", "classifier"});
  at::Tensor x = digits(6);
  for (std::string layer : {"features.4", "classifier.1"}) {
    auto a = run(LayerIntegratedGradients({.layers = {layer}}), m, x);
    at::Tensor change = output_change(m, a, at::zeros_like(x));
    at::Tensor sums = a.values.reshape({x.size(0), -1}).sum(1);
    // The delta is what it claims to be, and within what 50 Gauss-Legendre points can reach on
    // this path through the layer (tests/path_integral.h).
    EXPECT_LT((a.convergence_delta - (sums - change)).abs().max().item<double>(), 1e-5) << layer;
    at::Tensor h_x, h_b;
    {
      at::NoGradGuard no_grad;
      h_x = chain.up_to(x, layer);
      h_b = chain.up_to(at::zeros_like(x), layer);
    }
    const at::Tensor g =
        path_integrand(target_logit([&](const at::Tensor& h) { return chain.after(h, layer); }, a.targets), h_x, h_b);
    EXPECT_TRUE(((sums - change).abs().to(at::kDouble) <= quadrature_error_bound(sampled_variation(g), 50, change))
                    .all()
                    .item<bool>())
        << layer << ": |delta| " << (sums - change).abs() << " variation " << sampled_variation(g);
    const std::vector<int64_t> shape = layer == "features.4" ? std::vector<int64_t>{6, 16, 4, 4} : std::vector<int64_t>{6, 32};
    EXPECT_EQ(a.values.sizes().vec(), shape) << layer;
    // Batches that split path points across samples give the same numbers.
    auto b = run(LayerIntegratedGradients({.layers = {layer}, .internal_batch_size = 7}), m, x);
    EXPECT_LT(rel_error(b.values, a.values), 1e-5) << layer;
  }
}

// ---- layer_conductance --------------------------------------------------------------------

TEST(LayerConductance, LinearModelIsTheActivationChangeOverThePathTimesTheWeightRow) {
  TwoLayer c;
  Model m = c.linear();
  const at::Tensor change = (c.fc1(c.x) - c.fc1(c.ref)) * c.w2[1];
  for (std::string method : {"gausslegendre", "riemann_trapezoid", "riemann_left"}) {
    for (int64_t steps : {1, 4, 50}) {
      // The layer is linear in the input: the sum telescopes to h(x_n) - h(x_0), which covers
      // alpha_n - alpha_0 of the path.
      std::vector<double> al, w;
      reference_quadrature(method, steps + 1, al, w);
      auto a = run(LayerConductance({.layers = {"fc1"}, .n_steps = steps, .method = method}), m, c.x, Target::index(1),
                   Baseline::tensor(c.ref));
      EXPECT_LT(rel_error(a.values, change * (al.back() - al.front())), 1e-5) << method << " " << steps;
      EXPECT_EQ(a.layer, "fc1");
      EXPECT_EQ(a.model_evaluations, 2 * 3 + 3 * (steps + 1));
    }
  }
}

TEST(LayerConductance, MatchesCaptumsFormulaForAnyBatchSplit) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = digits(4);
  for (std::string layer : {"features.2", "classifier.2"}) {
    at::Tensor expected = direct_conductance(m, layer, x, at::zeros_like(x), 3, 6, "gausslegendre");
    for (int64_t cap : {0, 1, 3, 4, 9}) {
      auto a = run(LayerConductance({.layers = {layer}, .n_steps = 6, .internal_batch_size = cap}), m, x,
                   Target::index(3));
      EXPECT_LT(rel_error(a.values, expected), 1e-5) << layer << " internal_batch_size=" << cap;
    }
  }
  at::Tensor expected = direct_conductance(m, "features.4", x, at::zeros_like(x), 7, 5, "riemann_right");
  auto a = run(LayerConductance({.layers = {"features.4"}, .n_steps = 5, .method = "riemann_right"}), m, x,
               Target::index(7));
  EXPECT_LT(rel_error(a.values, expected), 1e-5);
}

TEST(LayerConductance, SumsToTheOutputChangeWithinTheQuadratureBoundOnDigitsCnn) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = digits(6);
  for (std::string layer : {"features.4", "classifier.1"}) {
    auto a = run(LayerConductance({.layers = {layer}}), m, x);
    at::Tensor change = output_change(m, a, at::zeros_like(x));
    at::Tensor sums = a.values.reshape({x.size(0), -1}).sum(1);
    EXPECT_LT((a.convergence_delta - (sums - change)).abs().max().item<double>(), 1e-5) << layer;
    // Conductance sums to a Riemann-Stieltjes sum of the input path's integrand over Captum's
    // n_steps + 1 points, which stop short of 0 and 1 by less than a gap: its error is below
    // (V(g) + max |g|) times the largest gap (tests/path_integral.h).
    const at::Tensor g = path_integrand(
        target_logit([&](const at::Tensor& p) { return m.module()->forward({p}).toTensor(); }, a.targets), x,
        at::zeros_like(x));
    const at::Tensor reach = sampled_variation(g) + g.abs().amax(1);
    EXPECT_TRUE(((sums - change).abs().to(at::kDouble) <= quadrature_error_bound(reach, 50, change)).all().item<bool>())
        << layer << ": |delta| " << (sums - change).abs() << " bound " << quadrature_error_bound(reach, 50, change);
  }
}

// ---- neuron_gradient -----------------------------------------------------------------------

TEST(NeuronGradient, LinearLayerNeuronGradientIsItsWeightRow) {
  TwoLayer c;
  Model m = c.linear();
  for (int64_t j = 0; j < 3; ++j) {
    auto a = run(NeuronGradient({.layers = {"fc1"}, .neuron_selector = {j}}), m, c.x, Target::index(1));
    EXPECT_LT(rel_error(a.values, c.w1[j].expand_as(c.x)), 1e-7) << "neuron " << j;
    EXPECT_TRUE(a.layer.empty()) << "values are input-shaped";
    EXPECT_TRUE(a.targets.empty()) << "the target is not used";
    EXPECT_EQ(a.extra["layer"], "fc1");
  }
}

TEST(NeuronGradient, ConvolutionNeuronGradientIsItsKernelAtItsReceptiveField) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = digits(2);
  auto a = run(NeuronGradient({.layers = {"features.0"}, .neuron_selector = {3, 2, 5}}), m, x);
  at::Tensor kernel = m.module()->attr("features").toModule().attr("0").toModule().attr("weight").toTensor()[3][0];
  at::Tensor expected = at::zeros_like(x);
  expected.slice(2, 1, 4).slice(3, 4, 7).copy_(kernel.expand({2, 1, 3, 3}));  // padding 1: rows 1..3, cols 4..6
  EXPECT_LT(rel_error(a.values, expected), 1e-7);
}

// ---- neuron_integrated_gradients ----------------------------------------------------------

TEST(NeuronIntegratedGradients, LinearNeuronIsInputChangeTimesWeightRow) {
  TwoLayer c;
  Model m = c.linear();
  auto a = run(NeuronIntegratedGradients({.layers = {"fc1"}, .neuron_selector = {2}, .n_steps = 5}), m, c.x,
               Target::top1(), Baseline::tensor(c.ref));
  EXPECT_LT(rel_error(a.values, (c.x - c.ref) * c.w1[2]), 1e-6);
  EXPECT_LT(a.convergence_delta.abs().max().item<double>(), 1e-5);
  EXPECT_EQ(a.model_evaluations, 2 * 3 + 3 * 5);
}

TEST(NeuronIntegratedGradients, SumsToTheNeuronsChangeWithinTheQuadratureBoundOnDigitsCnn) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  const Chain chain(*m.module(), {"features", "classifier"});
  at::Tensor x = digits(6);
  for (std::string layer : {"features.3", "classifier.2"}) {
    // The neuron that changes most between baseline and inputs on these weights: a hand-picked
    // one may be dead on a fixture trained elsewhere.
    at::Tensor swing;
    {
      at::NoGradGuard no_grad;
      swing = (chain.up_to(x, layer) - chain.up_to(at::zeros_like(x), layer)).abs().sum(0);
    }
    const int64_t flat = swing.flatten().argmax().item<int64_t>();
    std::vector<int64_t> neuron;
    for (int64_t d = swing.dim() - 1, rest = flat; d >= 0; --d) {
      neuron.insert(neuron.begin(), rest % swing.size(d));
      rest /= swing.size(d);
    }
    auto a = run(NeuronIntegratedGradients({.layers = {layer}, .neuron_selector = neuron}), m, x);
    auto value = [&](const at::Tensor& in) {
      at::Tensor h = chain.up_to(in, layer);
      for (auto i : neuron) h = h.select(1, i);
      return h;
    };
    at::Tensor change;
    {
      at::NoGradGuard no_grad;
      change = value(x) - value(at::zeros_like(x));
    }
    at::Tensor sums = a.values.reshape({x.size(0), -1}).sum(1);
    ASSERT_GT(change.abs().max().item<double>(), 0.0) << layer << ": every neuron of the layer is dead on these inputs";
    EXPECT_LT((a.convergence_delta - (sums - change)).abs().max().item<double>(), 1e-5) << layer;
    const at::Tensor g = path_integrand([&](const at::Tensor& p, int64_t) { return value(p); }, x, at::zeros_like(x));
    EXPECT_TRUE(((sums - change).abs().to(at::kDouble) <= quadrature_error_bound(sampled_variation(g), 50, change))
                    .all()
                    .item<bool>())
        << layer << ": |delta| " << (sums - change).abs() << " variation " << sampled_variation(g);
    EXPECT_EQ(a.values.sizes(), x.sizes());
  }
}

// ---- Captum's numbers -------------------------------------------------------------------------

TEST(LayerMethods, MatchCaptumOnATwoLayerReluNet) {
  // Captum 0.8 (LayerIntegratedGradients, LayerConductance, NeuronIntegratedGradients) on the same
  // nn.Linear weights, baselines = ref, n_steps = 5, gausslegendre; target 1 for the layer methods.
  TwoLayer c;
  Model m = c.relu();
  auto captum = [](std::vector<double> v, std::vector<int64_t> shape) { return at::tensor(v, at::kFloat).view(shape); };
  auto lig = run(LayerIntegratedGradients({.layers = {"fc1"}, .n_steps = 5}), m, c.x, Target::index(1),
                 Baseline::tensor(c.ref));
  EXPECT_LT(rel_error(lig.values, captum({-0.43604165, 0.0, 1.49861193, 0.31249997, 8.30875015, -1.40000010, -0.21875,
                                          5.05750036, 1.24999988},
                                         {3, 3})),
            1e-6);
  EXPECT_LT(rel_error(lig.convergence_delta, captum({-0.13742959, -0.76625013, 1.04500055}, {3})), 1e-5);
  auto cond = run(LayerConductance({.layers = {"fc1"}, .n_steps = 5}), m, c.x, Target::index(1), Baseline::tensor(c.ref));
  EXPECT_LT(rel_error(cond.values, captum({-0.42281502, 0.0, 1.58519828, 0.29139671, 7.57547998, -1.30545712,
                                           -0.20397770, 2.73203564, 1.16558683},
                                          {3, 3})),
            1e-6);
  EXPECT_LT(rel_error(cond.convergence_delta, captum({-0.03761661, -1.42608070, -1.35010481}, {3})), 1e-5);
  auto nig = run(NeuronIntegratedGradients({.layers = {"fc2"}, .neuron_selector = {0}, .n_steps = 5}), m, c.x,
                 Target::top1(), Baseline::tensor(c.ref));
  EXPECT_LT(rel_error(nig.values, captum({0.11148286, -0.89444447, -1.44540477, -0.26510635, -5.29666662, -1.46333337,
                                          -2.36833310, 0.0, 0.0, -2.92666674, -0.33833331, -4.97833347},
                                         {3, 4})),
            1e-6);
}

// ---- bad input -----------------------------------------------------------------------------

TEST(LayerMethods, MissingOrSeveralLayersAreClearErrors) {
  EXPECT_NE(error_of([] { LayerIntegratedGradients(); })
                .find("layer_integrated_gradients needs one layer: pass --layer NAME (see `candela info MODEL`)"),
            std::string::npos);
  EXPECT_NE(error_of([] { LayerConductance({.layers = {"fc1", "fc2"}}); })
                .find("layer_conductance explains one layer at a time, got 2 ('fc1', 'fc2')"),
            std::string::npos);
  const auto& reg = Registry::builtin();
  for (std::string name : {"layer_activation", "layer_gradient_x_activation", "layer_integrated_gradients",
                           "layer_conductance", "neuron_gradient", "neuron_integrated_gradients"}) {
    ASSERT_TRUE(reg.contains(name)) << name;
    const auto& info = reg.get(name);
    EXPECT_EQ(info.family, "layer");
    EXPECT_EQ(info.schema["layers"]["type"], "string[]") << name;
    EXPECT_NE(error_of([&] { reg.create(name); }).find(name + " needs one layer"), std::string::npos) << name;
    nlohmann::json two = {{"layers", {"a", "b"}}};
    if (name.rfind("neuron", 0) == 0) two["neuron_selector"] = {0};
    EXPECT_NE(error_of([&] { reg.create(name, two); })
                  .find("one layer at a time"),
              std::string::npos)
        << name;
  }
  EXPECT_TRUE(reg.get("layer_integrated_gradients").completeness);
  EXPECT_TRUE(reg.get("layer_conductance").completeness);
  EXPECT_TRUE(reg.get("layer_integrated_gradients").uses_baseline);
  EXPECT_FALSE(reg.get("neuron_gradient").uses_baseline);
  for (std::string name : {"layer_activation", "neuron_gradient", "neuron_integrated_gradients"})
    EXPECT_FALSE(reg.get(name).uses_target) << name;
  EXPECT_TRUE(reg.get("layer_conductance").uses_target);

  TwoLayer c;
  Model m = c.linear();
  std::string unknown = error_of([&] { run(LayerActivation({.layers = {"fc3"}}), m, c.x); });
  EXPECT_NE(unknown.find("unknown layer 'fc3'"), std::string::npos) << unknown;
  EXPECT_THROW(run(LayerActivation({.layers = {"fc1"}}), Model::from_function([](const at::Tensor& x) { return x; }), c.x),
               UnsupportedModel);
}

TEST(NeuronMethods, BadNeuronSelectorsAreClearErrors) {
  TwoLayer c;
  Model m = c.linear();
  for (std::string name : {"neuron_gradient", "neuron_integrated_gradients"}) {
    const auto& reg = Registry::builtin();
    auto explain = [&](nlohmann::json selector) {
      return error_of([&] { run(*reg.create(name, {{"layers", {"fc1"}}, {"neuron_selector", selector}}), m, c.x); });
    };
    std::string wrong_length = explain({1, 0});
    EXPECT_NE(wrong_length.find("neuron_selector [1, 0] has 2 indices but layer 'fc1' outputs shape [3] per sample; "
                                "give 1 index"),
              std::string::npos)
        << wrong_length;
    std::string out_of_range = explain({3});
    EXPECT_NE(out_of_range.find("neuron_selector [3] is out of range for layer 'fc1' with per-sample shape [3]: "
                                "index 0 must be in 0..2"),
              std::string::npos)
        << out_of_range;
    EXPECT_NE(explain({-1}).find("negative index"), std::string::npos) << explain({-1});
    EXPECT_NE(explain(nlohmann::json::array()).find(name + " needs a neuron"), std::string::npos);
  }
}
