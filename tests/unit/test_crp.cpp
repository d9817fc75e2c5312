// CRP: conditional heatmaps against conservation and linearity, the plain LRP heatmap against the
// registry's lrp, and reference samples.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "candela/io/npy.h"
#include "candela/methods/concept/crp.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::rel_error;

namespace {

// conv(1->4) -> relu -> conv(4->6) -> relu -> average pool -> linear(6->3), no biases: the w_square rule
// conserves relevance exactly at every layer.
Model bias_free_cnn() {
  at::Generator gen = at::detail::createCPUGenerator(9);
  torch::jit::Module c1("C1"), c2("C2"), fc("Fc"), outer("BiasFree");
  c1.register_parameter("weight", at::randn({4, 1, 3, 3}, gen), false);
  c1.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, None, 1, 1)\n");
  c2.register_parameter("weight", at::randn({6, 4, 3, 3}, gen), false);
  c2.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, None, 1, 1)\n");
  fc.register_parameter("weight", at::randn({3, 6}, gen), false);
  fc.define("def forward(self, x):\n    return torch.linear(x, self.weight)\n");
  outer.register_module("conv1", c1);
  outer.register_module("conv2", c2);
  outer.register_module("fc", fc);
  outer.define(R"(
def forward(self, x):
    h = torch.relu(self.conv1.forward(x))
    h = torch.relu(self.conv2.forward(h))
    return self.fc.forward(torch.adaptive_avg_pool2d(h, [1, 1]).flatten(1))
)");
  InputSpec spec;
  spec.shape = {1, 6, 6};
  spec.layout = "NCHW";
  return Model::from_module(outer, spec);
}

}  // namespace

TEST(Crp, ChannelHeatmapsSumToTheirRelevanceAndToTheLrpHeatmap) {
  Model model = bias_free_cnn();
  at::Tensor x = at::rand({3, 1, 6, 6}, at::detail::createCPUGenerator(2));
  at::Tensor targets = at::tensor({0, 2, 1}, at::kLong);
  LrpOptions o;
  o.rule = "w_square";
  CrpResult r = crp(model, "conv2", {0, 1, 2, 3, 4, 5}, x, targets, o);
  ASSERT_EQ(r.channel_relevance.sizes(), (at::IntArrayRef{3, 6}));
  ASSERT_EQ(r.heatmaps.sizes(), (at::IntArrayRef{3, 6, 1, 6, 6}));
  // One-hot output relevance, conserved down to the layer: the channels' relevances sum to 1.
  for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(r.channel_relevance[i].sum().item<double>(), 1.0, 1e-5);
  // Each conditional heatmap carries exactly its channel's relevance to the input.
  at::Tensor sums = r.heatmaps.to(at::kDouble).reshape({3, 6, -1}).sum(2);
  EXPECT_LT((sums - r.channel_relevance).abs().max().item<double>(), 1e-5);
  // The channels' heatmaps add up to the plain LRP heatmap.
  EXPECT_LT(rel_error(r.heatmaps.sum(1), r.lrp), 1e-6);
  EXPECT_THROW(crp(model, "conv2", {6}, x, targets, o), InvalidArgument);
  EXPECT_THROW(crp(model, "nope", {0}, x, targets, o), InvalidArgument);
}

TEST(Crp, PlainHeatmapIsTheRegistrysLrpAndConditionalMapsAddUp) {
  Model model = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 4);
  at::Tensor targets = at::tensor({1, 3, 5, 7}, at::kLong);
  std::vector<int64_t> all(16);
  for (int64_t c = 0; c < 16; ++c) all[static_cast<size_t>(c)] = c;
  CrpResult r = crp(model, "features.2", all, x, targets, LrpOptions{});  // epsilon_plus
  ExplainRequest req;
  req.inputs = x;
  req.target = Target::indices({1, 3, 5, 7});
  Attribution lrp = Registry::builtin().create("lrp", {})->explain(model, req);
  EXPECT_LT(rel_error(r.lrp, lrp.values), 1e-5);
  EXPECT_LT(rel_error(r.heatmaps.sum(1), r.lrp), 1e-5);
  // The most relevant channel's heatmap is not the whole map (the condition does something).
  EXPECT_GT(rel_error(r.heatmaps.select(1, r.channel_relevance[0].argmax().item<int64_t>())[0], r.lrp[0]), 1e-3);
}

TEST(Crp, ReferenceSamplesMaximiseTheChannelsRelevance) {
  Model model = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy"));
  at::Tensor targets = read_npy(fixture("digits_test_labels.npy")).to(at::kLong);
  auto [idx, values] = crp_reference_samples(model, "features.2", 5, x, targets, 4, LrpOptions{}, 5);
  CrpResult all = crp(model, "features.2", {}, x, targets, LrpOptions{});
  at::Tensor expected = std::get<1>(all.channel_relevance.select(1, 5).topk(4));
  EXPECT_TRUE(at::equal(idx, expected));
  EXPECT_NEAR(values[0].item<double>(), all.channel_relevance[expected[0].item<int64_t>()][5].item<double>(), 1e-9);
}
