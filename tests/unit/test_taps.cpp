// Layer taps: reading, replacing, gradients, suffix execution, concurrency, bad layer names.
#include <gtest/gtest.h>

#include <thread>

#include "candela/graph/taps.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::rel_error;

namespace {

at::Tensor digits() { return read_npy(fixture("digits_test.npy")).slice(0, 0, 4); }

// A module tree built in C++: `inner` runs only in a branch, `unused` never, `pair` returns a tuple.
Model branchy_model() {
  torch::jit::Module inner("Inner"), unused("Unused"), pair("Pair"), outer("Outer");
  inner.define("def forward(self, x):\n    return x * 2.0\n");
  unused.define("def forward(self, x):\n    return x + 1.0\n");
  pair.define("def forward(self, x):\n    return (x, x + 1.0)\n");
  outer.register_module("inner", inner);
  outer.register_module("unused", unused);
  outer.register_module("pair", pair);
  outer.define(R"(
def forward(self, x):
    a, b = self.pair.forward(x)
    if bool(x.sum() > 0.0):
        a = self.inner.forward(a)
    return a + b
)");
  InputSpec spec;
  spec.shape = {3};
  spec.layout = "NC";
  return Model::from_module(outer, spec);
}

}  // namespace

TEST(Taps, RecordLayerOutputsOnScriptedAndTracedModels) {
  for (std::string file : {"digits_cnn.pt", "digits_cnn_traced.pt"}) {
    Model m = Model::load(fixture(file));
    LayerTaps taps(m, {"features.2", "features", "classifier.1"});
    at::Tensor x = digits();
    auto run = taps.forward(x);
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(run.output, m.forward(x), 1e-6, 1e-6)) << file << ": taps must not change the output";
    EXPECT_EQ(run.activations[0].sizes(), (at::IntArrayRef{4, 16, 8, 8})) << file;
    EXPECT_EQ(run.activations[1].sizes(), (at::IntArrayRef{4, 16, 4, 4})) << file;
    EXPECT_EQ(run.activations[2].sizes(), (at::IntArrayRef{4, 32})) << file;
  }
}

TEST(Taps, GradientsWithRespectToALayerFollowTheChainRule) {
  // The last Linear's input gradient of logit c is row c of its weight.
  Model m = Model::load(fixture("digits_cnn.pt"));
  LayerTaps taps(m, {"classifier.2"});
  auto run = taps.forward(digits());
  at::Tensor g = torch::autograd::grad({run.output.select(1, 7).sum()}, {run.activations[0]})[0];
  at::Tensor w = m.module()->attr("classifier").toModule().attr("3").toModule().attr("weight").toTensor();
  EXPECT_LT(rel_error(g, w[7].expand_as(g)), 1e-6);
}

TEST(Taps, ReplacingALayerOutputChangesWhatFollows) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  LayerTaps taps(m, {"classifier.2"});
  at::Tensor x = digits();
  auto run = taps.forward(x);
  auto same = taps.forward(x, {run.activations[0].detach()});
  EXPECT_TRUE(at::allclose(same.output, run.output));
  auto zero = taps.forward(x, {at::zeros_like(run.activations[0])});
  at::Tensor bias = m.module()->attr("classifier").toModule().attr("3").toModule().attr("bias").toTensor();
  EXPECT_TRUE(at::allclose(zero.output, bias.expand_as(zero.output)));
  EXPECT_THROW(taps.forward(x, {at::zeros({4, 31})}), ShapeMismatch);
}

TEST(Taps, SuffixExecutionMatchesFullForwardIncludingSkipConnections) {
  Model resnet = Model::load(fixture("resnet18.pt"));
  at::Tensor x = at::randn({2, 3, 64, 64}, at::detail::createCPUGenerator(3));
  for (std::string layer : {"layer2.0.conv1", "layer3", "layer4.1.bn2"}) {
    LayerTaps taps(resnet, {layer});
    ASSERT_TRUE(taps.can_cut()) << layer << ": " << taps.cut_problem();
    at::NoGradGuard no_grad;
    auto full = taps.forward(x);
    auto prefix = taps.run_prefix(x);
    at::Tensor act = taps.prefix_activation(*prefix);
    EXPECT_TRUE(at::allclose(act, full.activations[0], 1e-5, 1e-5)) << layer;
    // Rows: sample 1, sample 0, then sample 1 with its activation halved.
    at::Tensor rows = at::tensor({1, 0, 1}, at::kLong);
    at::Tensor repl = act.index_select(0, rows).clone();
    repl[2].mul_(0.5);
    at::Tensor out = taps.run_suffix(*prefix, repl, rows);
    at::Tensor expected_half = taps.forward(x, {at::stack({act[0], act[1] * 0.5})}).output[1];
    EXPECT_LT(rel_error(out[0], full.output[1]), 1e-5) << layer;
    EXPECT_LT(rel_error(out[1], full.output[0]), 1e-5) << layer;
    EXPECT_LT(rel_error(out[2], expected_half), 1e-5) << layer;
  }
}

TEST(Taps, TwoExplanationsWithDifferentTapsRunConcurrently) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  LayerTaps a(m, {"features.0"}), b(m, {"classifier.1"});
  at::Tensor x = digits();
  at::Tensor expect_a = a.forward(x).activations[0].detach(), expect_b = b.forward(x).activations[0].detach();
  std::atomic<int> mismatches{0};
  auto worker = [&](const LayerTaps& taps, const at::Tensor& expected) {
    for (int i = 0; i < 50; ++i)
      if (!at::equal(taps.forward(x).activations[0].detach(), expected)) ++mismatches;
  };
  std::thread t1(worker, std::cref(a), expect_a), t2(worker, std::cref(b), expect_b);
  t1.join();
  t2.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Taps, BadLayerNamesAreClearErrors) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  try {
    LayerTaps taps(m, {"feature.2"});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("Did you mean 'features.2'"), std::string::npos) << e.what();
  }
  Model b = branchy_model();
  auto message = [&](const std::string& layer) {
    try {
      LayerTaps taps(b, {layer});
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("unused").find("never calls it"), std::string::npos) << message("unused");
  EXPECT_NE(message("inner").find("branch or loop"), std::string::npos) << message("inner");
  EXPECT_NE(message("pair").find("not a tensor"), std::string::npos) << message("pair");
  EXPECT_THROW(LayerTaps(Model::from_function([](const at::Tensor& x) { return x; }), {"a"}), UnsupportedModel);
}

TEST(Taps, InPlaceOpsAfterALayerDoNotChangeWhatItRecorded) {
  // torchvision's BasicBlock: bn2's output is then `+=`-ed and ReLU'd in place.
  Model resnet = Model::load(fixture("resnet18.pt"));
  InputSpec spec = resnet.input_spec();
  spec.shape = {3, 64, 64};
  resnet.set_input_spec(spec);
  at::Tensor x = at::randn({1, 3, 64, 64}, at::detail::createCPUGenerator(11));
  LayerTaps taps(resnet, {"layer4.0.conv2", "layer4.0.bn2"});
  auto run = taps.forward(x);
  auto bn2 = resnet.module()->attr("layer4").toModule().attr("0").toModule().attr("bn2").toModule();
  at::NoGradGuard no_grad;
  at::Tensor expected = bn2.forward({run.activations[0]}).toTensor();
  EXPECT_LT(rel_error(run.activations[1], expected), 1e-5);
}
