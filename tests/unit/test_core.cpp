// Model loading, options, registry and the evaluator.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <sys/resource.h>

#include <array>
#include <fstream>
#include <map>

#include "candela/core/memory.h"
#include "candela/graph/local_forward.h"
#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::TempDir;

TEST(Model, LoadsScriptedAndTracedFixturesWithTheirSidecar) {
  Model scripted = Model::load(fixture("digits_cnn.pt"));
  Model traced = Model::load(fixture("digits_cnn_traced.pt"));
  EXPECT_EQ(scripted.input_spec().shape, (std::vector<int64_t>{1, 8, 8}));
  EXPECT_EQ(scripted.input_spec().layout, "NCHW");
  EXPECT_EQ(scripted.class_names().size(), 10u);
  at::Tensor x = read_npy(fixture("digits_test.npy"));
  std::ifstream in(fixture("digits_test_expected.json"));
  auto expected = nlohmann::json::parse(in).get<std::vector<std::vector<double>>>();
  at::NoGradGuard no_grad;
  at::Tensor a = scripted.forward(x), b = traced.forward(x);
  for (size_t i = 0; i < expected.size(); ++i)
    for (size_t j = 0; j < expected[i].size(); ++j) EXPECT_NEAR(a[i][j].item<double>(), expected[i][j], 1e-5);
  EXPECT_TRUE(at::allclose(a, b, 1e-6, 1e-6));
}

TEST(Model, ListsLayersWithOutputShapes) {
  for (std::string file : {"digits_cnn.pt", "digits_cnn_traced.pt"}) {
    Model m = Model::load(fixture(file));
    auto layers = m.layers();
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& l : layers) shapes[l.name] = l.output_shape;
    EXPECT_EQ(shapes["features.0"], (std::vector<int64_t>{1, 8, 8, 8})) << file;
    EXPECT_EQ(shapes["features.4"], (std::vector<int64_t>{1, 16, 4, 4})) << file;
    EXPECT_EQ(shapes["classifier.3"], (std::vector<int64_t>{1, 10})) << file;
    EXPECT_GT(m.activation_bytes_per_sample(), 8 * 8 * 8 * 4);
  }
}

// The budget's unit: every activation storage of one row's forward, counted once. An in-place
// operation and a view add nothing; the input is the caller's.
TEST(Model, ActivationBytesCountEachStorageOnce) {
  auto bytes = [](const std::string& body) {
    torch::jit::Module mod("Activations");
    mod.define("def forward(self, x):\n" + body);
    return Model::from_module(mod, InputSpec{.shape = {3, 5, 7}, .layout = "NCHW"}).activation_bytes_per_sample();
  };
  const int64_t one = 3 * 5 * 7 * 4;
  EXPECT_EQ(bytes("    y = x * 2.0\n    y.relu_()\n    return y.flatten(1)\n"), one);
  EXPECT_EQ(bytes("    y = x * 2.0\n    z = torch.relu(y)\n    return z.flatten(1)\n"), 2 * one);
  EXPECT_EQ(bytes("    y = x * 2.0\n    y += x\n    return y.sum(2).flatten(1)\n"), one + 3 * 7 * 4);
}

TEST(Model, RejectsFilesThatAreNotTorchScript) {
  TempDir dir;
  std::ofstream(dir / "junk.pt") << "this is not a zip archive";
  EXPECT_THROW(Model::load(dir / "junk.pt"), UnsupportedModel);
  EXPECT_THROW(Model::load(dir / "missing.pt"), IoError);
  std::ofstream(dir / "m.onnx") << "x";
  EXPECT_THROW(Model::load(dir / "m.onnx"), ParseError) << "ONNX files are imported; this one is not ONNX";
}

TEST(Model, BadSidecarIsAParseErrorNamingTheFile) {
  TempDir dir;
  std::filesystem::copy_file(fixture("linear.pt"), dir / "m.pt");
  std::ofstream(dir / "m.json") << R"({"input": {"shape": [5], "layout": "NCWH"}})";
  try {
    Model::load(dir / "m.pt");
    FAIL();
  } catch (const ParseError& e) {
    EXPECT_NE(std::string(e.what()).find("m.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("NCHW"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "m.json") << "{not json";
  EXPECT_THROW(Model::load(dir / "m.pt"), ParseError);
  // A fractional or absurd dimension is refused, not truncated (found by fuzzing).
  for (const char* shape : {"[2.5]", "[1e300]", "[\"5\"]"}) {
    std::ofstream(dir / "m.json") << R"({"input": {"shape": )" << shape << "}}";
    try {
      Model::load(dir / "m.pt");
      ADD_FAILURE() << shape;
    } catch (const ParseError& e) {
      EXPECT_NE(std::string(e.what()).find("whole numbers"), std::string::npos) << e.what();
    }
  }
}

TEST(Options, UnknownKeysWrongTypesAndChoicesAreRejected) {
  const auto& reg = Registry::builtin();
  try {
    reg.create("integrated_gradients", {{"n_step", 5}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("Did you mean 'n_steps'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reg.create("integrated_gradients", {{"n_steps", "many"}}), InvalidArgument);
  EXPECT_THROW(reg.create("integrated_gradients", {{"n_steps", 2.5}}), InvalidArgument);
  EXPECT_THROW(reg.create("integrated_gradients", {{"n_steps", 0}}), InvalidArgument);
  EXPECT_THROW(reg.create("integrated_gradients", {{"method", "simpson"}}), InvalidArgument);
  EXPECT_THROW(reg.create("noise_tunnel", {{"base_method", "noise_tunnel"}}), InvalidArgument);
  EXPECT_THROW(reg.create("integrated_gradent"), InvalidArgument);
  auto ig = reg.create("integrated_gradients", {{"n_steps", 3.0}, {"method", "riemann_left"}});
  EXPECT_EQ(ig->options()["n_steps"], 3);
  EXPECT_EQ(ig->options()["method"], "riemann_left");
  EXPECT_EQ(ig->options()["multiply_by_inputs"], true);
}

TEST(Options, CommandLineValuesFollowTheSchema) {
  const auto& schema = Registry::builtin().get("noise_tunnel").schema;
  EXPECT_EQ(parse_option_value(schema, "noise_tunnel", "nt_samples", "12"), 12);
  EXPECT_EQ(parse_option_value(schema, "noise_tunnel", "stdevs", "0.5"), 0.5);
  EXPECT_EQ(parse_option_value(schema, "noise_tunnel", "base_method", "saliency"), "saliency");
  EXPECT_EQ(parse_option_value(schema, "noise_tunnel", "base_options", R"({"abs": false})")["abs"], false);
  EXPECT_THROW(parse_option_value(schema, "noise_tunnel", "nt_samples", "12x"), InvalidArgument);
  EXPECT_THROW(parse_option_value(schema, "noise_tunnel", "stdevs", "nan"), InvalidArgument);
  EXPECT_THROW(parse_option_value(schema, "noise_tunnel", "nt_sample", "3"), InvalidArgument);
}

TEST(Registry, EveryMethodDescribesEveryOption) {
  const auto& reg = Registry::builtin();
  for (const auto& m : reg.methods()) {
    EXPECT_FALSE(m.description.empty()) << m.name;
    EXPECT_FALSE(m.reference.empty()) << m.name;
    for (const auto& [key, field] : m.schema.items()) {
      EXPECT_TRUE(field.contains("default")) << m.name << "." << key;
      EXPECT_FALSE(field["description"].get<std::string>().empty()) << m.name << "." << key;
    }
    // The defaults in the schema are the options a method reports when given nothing else
    // (layer and neuron methods must be told which layer and unit).
    nlohmann::json given = nlohmann::json::object();
    if (m.schema.contains("layers") && m.schema["layers"]["default"].empty() && m.family == "layer")
      given["layers"] = {"fc"};
    if (m.schema.contains("neuron_selector")) given["neuron_selector"] = {0};
    auto e = m.create(given);
    for (const auto& [key, field] : m.schema.items())
      if (key != "base_options" && !given.contains(key))
        EXPECT_EQ(e->options()[key], field["default"]) << m.name << "." << key;
  }
  for (std::string name : {"saliency", "input_x_gradient", "integrated_gradients", "noise_tunnel", "gradient_shap",
                           "expected_gradients"})
    EXPECT_TRUE(reg.contains(name)) << name;
}

TEST(Evaluator, BatchSizeFollowsTheMemoryBudgetAndCountsEvaluations) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  const int64_t per = m.activation_bytes_per_sample();
  ASSERT_GT(per, 0);
  EvalOptions small;
  small.max_memory_mb = 10.0 * per / (1024.0 * 1024.0);  // room for 10 rows with gradients
  small.measure_batch_size = false;  // the budget's size (measurement: the next test)
  Evaluator ev(m, small);
  EXPECT_EQ(ev.batch_size(true), 10);
  EXPECT_EQ(ev.batch_size(true, 4), 4);
  EXPECT_EQ(ev.batch_size(false), 20) << "a forward without autograd frees activations as it goes";

  at::Tensor x = read_npy(fixture("digits_test.npy"));
  std::vector<Progress> seen;
  small.progress = [&](const Progress& p) { seen.push_back(p); };
  ExplainRequest r;
  r.inputs = x;
  r.eval = small;
  auto a = Saliency().explain(m, r);
  EXPECT_EQ(a.model_evaluations, 16);
  EXPECT_EQ(a.batch_size, 10);
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen.back().done, 16);
  EXPECT_EQ(seen.back().total, 16);
}

TEST(Evaluator, BatchSizeSearchKeepsTheFastestPerRow) {
  std::vector<int64_t> tried;
  // 20 ms a call, plus 30 ms per row past the fourth: 5 ms per row at 4, twice that at 2.
  auto fastest_at_four = [&](int64_t b) {
    tried.push_back(b);
    return 0.020 + 0.030 * static_cast<double>(std::max<int64_t>(0, b - 4));
  };
  EXPECT_EQ(candela::detail::fastest_batch_size(32, fastest_at_four), 4);
  EXPECT_EQ(tried, (std::vector<int64_t>{1, 2, 4, 8})) << "the search stops at the first size past the best";
  // A fixed cost per call only: every size is faster per row, up to the budget's.
  tried.clear();
  EXPECT_EQ(candela::detail::fastest_batch_size(20, [&](int64_t b) { tried.push_back(b); return 1.0; }), 20);
  EXPECT_EQ(tried, (std::vector<int64_t>{1, 2, 4, 8, 16, 20}));
  EXPECT_EQ(candela::detail::fastest_batch_size(1, [](int64_t) { return 1.0; }), 1);
  // A size within 10% of the best (noise) does not end the search.
  const std::map<int64_t, double> per_row = {{1, 1.0}, {2, 0.5}, {4, 0.525}, {8, 0.3}, {16, 0.9}, {32, 0.1}};
  EXPECT_EQ(candela::detail::fastest_batch_size(32, [&](int64_t b) { return per_row.at(b) * static_cast<double>(b); }), 8);
}

TEST(Evaluator, MeasuresBatchSizesOncePerModelAndKeepsThemOnDisk) {
  TempDir dir;
  const char* before = std::getenv("CANDELA_CACHE_DIR");
  const std::string saved = before ? before : "";
  ::setenv("CANDELA_CACHE_DIR", dir.path().c_str(), 1);
  std::filesystem::copy_file(fixture("digits_cnn.pt"), dir / "m.pt");
  std::filesystem::copy_file(fixture("digits_cnn.json"), dir / "m.json");
  ExplainRequest r;
  r.inputs = read_npy(fixture("digits_test.npy"));
  r.target = Target::index(1);  // no forward-only pass for a top-1: the gradient pass alone
  int measuring = 0;
  r.eval.progress = [&](const Progress& p) { measuring += p.stage.rfind("measuring", 0) == 0 && p.done == 0; };
  Model m = Model::load(dir / "m.pt");
  const Attribution first = Saliency().explain(m, r);
  EXPECT_EQ(measuring, 1) << "the gradient pass is measured before the first one";
  EXPECT_LE(first.batch_size, Evaluator(m, r.eval).batch_size(true));
  measuring = 0;
  const Attribution again = Saliency().explain(m, r);
  EXPECT_EQ(measuring, 0) << "measured once per model";
  EXPECT_TRUE(at::equal(again.values, first.values)) << "one batch size, so the same bits";

  // Written for the file: a key naming it, per pass. A new process (a new Model) reads it.
  nlohmann::json cache = nlohmann::json::parse(std::ifstream(dir / "batch-sizes.json"));
  ASSERT_FALSE(cache.empty());
  for (auto& [key, rows] : cache.items()) {
    EXPECT_NE(key.find("m.pt"), std::string::npos) << key;
    EXPECT_GE(rows.get<int64_t>(), 1);
    rows = 3;
  }
  std::ofstream(dir / "batch-sizes.json") << cache.dump();
  const Attribution later = Saliency().explain(Model::load(dir / "m.pt"), r);
  EXPECT_EQ(measuring, 0);
  EXPECT_EQ(later.batch_size, 3) << "the size on disk";
  EXPECT_LT(candela::testing::rel_error(later.values, first.values), 1e-5);
  // A damaged cache is measured again, not an error.
  std::ofstream(dir / "batch-sizes.json") << "{not json";
  EXPECT_NO_THROW(Saliency().explain(Model::load(dir / "m.pt"), r));
  EXPECT_EQ(measuring, 1);
  if (before) ::setenv("CANDELA_CACHE_DIR", saved.c_str(), 1);
  else ::unsetenv("CANDELA_CACHE_DIR");
}

// test_main.cpp turns reuse on, as the CLI does: a block far above glibc's largest mmap
// threshold (32 MiB), freed and asked for again, comes back without the kernel faulting its pages
// in anew (by default each of the three would be 16384 fresh 4 KiB pages).
TEST(Memory, FreedBlocksAreReusedWithoutFreshPageFaults) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  ASSERT_TRUE(reusing_freed_memory()) << "CANDELA_NO_MEMORY_REUSE or a MALLOC_* variable is set";
  const auto minor_faults = [] {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return static_cast<int64_t>(r.ru_minflt);
  };
  const int64_t n = int64_t{16} << 20;  // 64 MiB of float
  at::empty({n}).fill_(1.0f);           // first touch: the pages arrive here
  const int64_t before = minor_faults();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(at::empty({n}).fill_(2.0f)[n - 1].item<float>(), 2.0f);
  const int64_t pages = n * 4 / 4096;
  EXPECT_LT(minor_faults() - before, pages / 8) << "freed memory went back to the system";
  release_freed_memory();  // and a host can still hand it back
#else
  GTEST_SKIP() << "glibc's malloc only (ASan brings its own)";
#endif
}

TEST(Evaluator, CancellationStopsBetweenBatches) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  ExplainRequest r;
  r.inputs = read_npy(fixture("digits_test.npy"));
  r.eval.max_batch_size = 4;
  int calls = 0;
  r.eval.progress = [&](const Progress& p) {
    if (++calls == 3) r.eval.cancel.cancel();
  };
  EXPECT_THROW(IntegratedGradients().explain(m, r), Cancelled);
  EXPECT_LE(calls, 4);
}

TEST(Inputs, NanAndShapeErrorsNameTheProblem) {
  Model m = Model::load(fixture("digits_cnn.pt"));
  at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 2).clone();
  x[1][0][3][4] = NAN;
  try {
    check_inputs(m, x);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_inputs(m, at::zeros({2, 3, 8, 8})), ShapeMismatch);
  EXPECT_THROW(check_inputs(m, at::zeros({2, 1, 8, 8}, at::kLong)), InvalidArgument);
}

// ---- local re-evaluation (graph/local_forward.h) ---------------------------------------------

namespace {

std::shared_ptr<torch::jit::Graph> frozen_graph(const torch::jit::Module& module) {
  torch::jit::Module copy = module.clone();
  copy.eval();
  return torch::jit::freeze(copy).get_method("forward").graph();
}

// conv 3x3 pad 1 -> average pool 2x2 -> conv 5x5 pad 2 -> ReLU -> mean over the image -> linear.
torch::jit::Module local_net(const std::string& extra_before_mean = "") {
  auto gen = at::detail::createCPUGenerator(3);
  torch::jit::Module m("LocalNet");
  m.register_parameter("w1", at::randn({4, 3, 3, 3}, gen), false);
  m.register_parameter("w2", at::randn({5, 4, 5, 5}, gen), false);
  m.register_parameter("w3", at::randn({2, 5}, gen), false);
  m.register_buffer("position", at::randn({1, 3, 32, 32}, gen));
  m.define(R"(
def forward(self, x):
    )" + extra_before_mean + R"(
    a = torch.conv2d(x, self.w1, None, [1, 1], [1, 1])
    b = torch.avg_pool2d(a, [2, 2], [2, 2])
    c = torch.conv2d(b, self.w2, None, [1, 1], [2, 2])
    d = torch.relu(c)
    return torch.matmul(d.mean([2, 3]), self.w3.t())
)");
  return m;
}

// A small CNN on 64x64 images: 3x3 convolutions (two at stride 2), ReLUs, a mean, a linear layer.
Model small_cnn() {
  auto gen = at::detail::createCPUGenerator(11);
  torch::jit::Module m("SmallCnn");
  const std::vector<std::pair<int64_t, int64_t>> channels = {{3, 8}, {8, 16}, {16, 16}, {16, 32}};
  for (size_t i = 0; i < channels.size(); ++i) {
    const auto [in, out] = channels[i];
    m.register_parameter("w" + std::to_string(i + 1), at::randn({out, in, 3, 3}, gen) / std::sqrt(9.0 * in), false);
    m.register_parameter("b" + std::to_string(i + 1), at::randn({out}, gen) * 0.1, false);
  }
  m.register_parameter("w5", at::randn({4, 32}, gen), false);
  m.define(R"(
def forward(self, x):
    a = torch.relu(torch.conv2d(x, self.w1, self.b1, [1, 1], [1, 1]))
    b = torch.relu(torch.conv2d(a, self.w2, self.b2, [2, 2], [1, 1]))
    c = torch.relu(torch.conv2d(b, self.w3, self.b3, [1, 1], [1, 1]))
    d = torch.relu(torch.conv2d(c, self.w4, self.b4, [2, 2], [1, 1]))
    return torch.matmul(d.mean([2, 3]), self.w5.t())
)");
  m.register_attribute("training", c10::BoolType::get(), false);  // eval mode (a C++-built module has no flag)
  InputSpec spec;
  spec.shape = {3, 64, 64};
  return Model::from_module(m, spec);
}

}  // namespace

TEST(LocalForward, ReceptiveFieldsAreTheGraphsOwn) {
  torch::jit::Module m = local_net();
  std::string why;
  auto local = candela::detail::LocalForward::build(frozen_graph(m), &why);
  ASSERT_TRUE(local) << why;
  // Cuts after a, b and d (c's only reader is the ReLU: the cut goes after it); the mean ends them.
  ASSERT_EQ(local->cuts(), 3u);
  // Position q of a layer reads input rows [q*s - lo, q*s + hi]: conv 3x3 pad 1 gives (1, 1, 1);
  // the pool (2, 1, 2); the 5x5 conv with pad 2 at stride 2: (2, 2*2 + 1, 2*2 + 2) = (2, 5, 6).
  const std::vector<std::array<int64_t, 3>> expected = {{1, 1, 1}, {2, 1, 2}, {2, 5, 6}};
  for (size_t c = 0; c < 3; ++c)
    for (const auto& axis : local->geometry(c))
      EXPECT_EQ((std::array<int64_t, 3>{axis.stride, axis.lo, axis.hi}), expected[c]) << "cut " << c;
  // The same region as the input gradient's support at an interior position of c (the network
  // is linear up to there, so every input the position reads has a non-zero gradient).
  at::Tensor x = at::randn({1, 3, 32, 32}, at::detail::createCPUGenerator(4)).requires_grad_(true);
  const at::Tensor w1 = m.attr("w1").toTensor(), w2 = m.attr("w2").toTensor();
  at::Tensor c = at::conv2d(at::avg_pool2d(at::conv2d(x, w1, {}, 1, 1), {2, 2}, {2, 2}), w2, {}, 1, 2);
  const int64_t q = 5;
  at::Tensor g = torch::autograd::grad({c.select(2, q).select(2, q).sum()}, {x})[0];
  at::Tensor rows = g.abs().sum({0, 1, 3}).nonzero().view(-1), cols = g.abs().sum({0, 1, 2}).nonzero().view(-1);
  EXPECT_EQ(rows.min().item<int64_t>(), q * 2 - 5);
  EXPECT_EQ(rows.max().item<int64_t>(), q * 2 + 6);
  EXPECT_EQ(cols.min().item<int64_t>(), q * 2 - 5);
  EXPECT_EQ(cols.max().item<int64_t>(), q * 2 + 6);
}

TEST(LocalForward, GraphsThatAreNotLocalAreNotCut) {
  std::string why;
  // A position-dependent constant (a positional embedding) added to the input: no cut.
  EXPECT_FALSE(candela::detail::LocalForward::build(frozen_graph(local_net("x = x + self.position")), &why));
  EXPECT_NE(why.find("aten::add"), std::string::npos) << why;
  // The image's mean subtracted first: every output reads every pixel.
  why.clear();
  EXPECT_FALSE(candela::detail::LocalForward::build(frozen_graph(local_net("x = x - x.mean()")), &why));
  EXPECT_NE(why.find("aten::mean"), std::string::npos) << why;
  // A per-channel constant keeps locality.
  EXPECT_TRUE(candela::detail::LocalForward::build(frozen_graph(local_net("x = x * self.w1[0:1, :, 0:1, 0:1]")), &why))
      << why;
}

class LocalForwardModels : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(LocalForward, LocalForwardModels, ::testing::Values("resnet18.pt", "resnet18_op17.onnx"));

TEST_P(LocalForwardModels, RowsThatDifferInABoxGetTheWholeGraphsOutputs) {
  Model m = Model::load(fixture(GetParam()));
  std::string why;
  auto local = candela::detail::LocalForward::build(frozen_graph(*m.module()), &why);
  ASSERT_TRUE(local) << why;
  at::NoGradGuard no_grad;
  const at::Tensor refs = at::randn({2, 3, 96, 96}, at::detail::createCPUGenerator(5));
  const at::Tensor sample = at::tensor({0, 1, 0, 1, 0, 1, 0}, at::kLong);
  at::Tensor rows = refs.index_select(0, sample).clone();
  // Corners, edges, the interior, one pixel of one channel, an unchanged row, a stripe across.
  rows[0].narrow(1, 0, 8).narrow(2, 0, 8).zero_();
  rows[1].narrow(1, 88, 8).narrow(2, 88, 8).zero_();
  rows[2].narrow(1, 40, 16).narrow(2, 30, 10).fill_(2.0);
  rows[3][1][50][7] = -3.0;
  rows[5].narrow(1, 0, 96).narrow(2, 60, 4).zero_();
  rows[6].narrow(1, 90, 6).narrow(2, 0, 5).zero_();
  const at::Tensor whole = m.forward_inference(rows);
  const at::Tensor out = local->run(rows, refs, sample);
  ASSERT_TRUE(out.defined());
  EXPECT_GE(local->last_cut(), 0);
  EXPECT_LE(candela::testing::rel_error(out, whole), 1e-5);
  // A batch of unchanged rows: the reference's activation through the suffix.
  const at::Tensor unchanged = local->run(refs, refs, at::tensor({0, 1}, at::kLong));
  EXPECT_LE(candela::testing::rel_error(unchanged, m.forward_inference(refs)), 1e-5);
  // Through the model: the same outputs (the first batch of a kind is checked against the whole graph).
  EXPECT_LE(candela::testing::rel_error(m.forward_local(rows, refs, sample), whole), 1e-5);
  EXPECT_LE(candela::testing::rel_error(m.forward_local(rows, refs, sample), whole), 1e-5);
  // Rows that differ everywhere: nothing to save, the caller runs the whole graph.
  const at::Tensor other = at::randn({2, 3, 96, 96}, at::detail::createCPUGenerator(6));
  EXPECT_FALSE(local->run(other, refs, at::tensor({0, 1}, at::kLong)).defined());
  EXPECT_EQ(local->last_cut(), -1);
  EXPECT_LE(candela::testing::rel_error(m.forward_local(other, refs, at::tensor({0, 1}, at::kLong)),
                                        m.forward_inference(other)), 1e-6);
}

TEST(LocalForward, RowsWithReferencesOfTheirOwn) {
  // A KernelSHAP coalition of one cell is the baseline with one cell of the input; one of all
  // cells but one is the input with one cell of the baseline; -1: no reference, the whole image.
  Model m = small_cnn();
  auto local = candela::detail::LocalForward::build(frozen_graph(*m.module()), nullptr);
  ASSERT_TRUE(local);
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({1, 3, 64, 64}, at::detail::createCPUGenerator(9));
  const at::Tensor refs = at::cat({x, at::zeros_like(x)});
  at::Tensor rows = at::zeros({5, 3, 64, 64});
  rows[0].narrow(1, 8, 8).narrow(2, 48, 8).copy_(x[0].narrow(1, 8, 8).narrow(2, 48, 8));
  rows[1].narrow(1, 56, 8).narrow(2, 0, 8).copy_(x[0].narrow(1, 56, 8).narrow(2, 0, 8));
  rows[2] = x[0];
  rows[2].narrow(1, 30, 5).narrow(2, 0, 6).zero_();
  rows[3] = x[0];
  rows[3].narrow(1, 60, 4).narrow(2, 60, 4).zero_();
  rows[4] = x[0] * 0.5;
  const at::Tensor out = local->run(rows, refs, at::tensor({1, 1, 0, 0, -1}, at::kLong));
  ASSERT_TRUE(out.defined());
  EXPECT_GE(local->last_cut(), 0);
  EXPECT_LE(candela::testing::rel_error(out, m.forward_inference(rows)), 1e-5);
  // A reference that does not exist: the caller runs the whole model.
  EXPECT_FALSE(local->run(rows, refs, at::tensor({1, 1, 0, 0, 2}, at::kLong)).defined());
}

TEST(LocalForward, OcclusionAblationAndKernelShapGiveTheWholeModelsAttributions) {
  Model m = small_cnn();
  ExplainRequest r;
  r.inputs = at::randn({1, 3, 64, 64}, at::detail::createCPUGenerator(8));
  r.target = Target::index(3);
  Occlusion::Options o;
  o.sliding_window_shapes = {3, 8, 8};
  o.strides = {3, 8, 8};
  // Feature ablation and KernelSHAP over the same 8x8 cells.
  at::Tensor ids = at::arange(64, at::kLong).div(8, "floor");
  const at::Tensor cells = (ids.view({64, 1}) * 8 + ids.view({1, 64})).expand({1, 3, 64, 64}).contiguous();
  KernelShapOptions k;
  k.n_samples = 150;  // shap enumerates the 64 one-cell and 64 all-but-one-cell coalitions first
  const double scale = m.forward_inference(r.inputs).abs().max().item<double>();
  for (int method = 0; method < 3; ++method) {
    auto explain = [&] {
      if (method == 0) return Occlusion(o).explain(m, r);
      ExplainRequest f = r;
      f.feature_mask = cells;
      return method == 1 ? FeatureAblation().explain(m, f) : KernelShap(k).explain(m, f);
    };
    const Attribution a = explain();
    // Occlusion's and ablation's rows re-ran a crop, but f(x) (and the first batch: the check),
    // KernelSHAP's coalitions of one cell and of all cells but one; the others run whole.
    ASSERT_TRUE(a.extra.contains("local_evaluations")) << method;
    if (method < 2) EXPECT_GE(a.extra["local_evaluations"].get<int64_t>() * 2, a.model_evaluations) << method;
    ::setenv("CANDELA_NO_LOCAL_FORWARD", "1", 1);
    const Attribution b = explain();
    ::unsetenv("CANDELA_NO_LOCAL_FORWARD");
    EXPECT_FALSE(b.extra.contains("local_evaluations"));
    // Occlusion and ablation: each value is f(x) - f(perturbed x); the outputs agree to float32
    // rounding, so do the drops. KernelSHAP solves a least-squares problem on them, which can
    // magnify that rounding: a looser bound, still far below a wrong evaluation's effect.
    const double tolerance = method < 2 ? 1e-5 * scale : 1e-3 * b.values.abs().max().item<double>();
    EXPECT_LE((a.values - b.values).abs().max().item<double>(), tolerance) << method;
    EXPECT_GT(b.values.abs().max().item<double>(), 1e-3 * scale);
  }
}

TEST(Model, InferenceGraphIsTheSameFunctionAndFollowsTheWeights) {
  Model m = Model::load(fixture("resnet18.pt"));
  const at::Tensor x = at::randn({2, 3, 64, 64}, at::detail::createCPUGenerator(7));
  at::NoGradGuard no_grad;
  auto close = [](const at::Tensor& a, const at::Tensor& b) {
    // BatchNorm folded into the convolutions: float32 rounding of the folded weights only.
    return (a - b).abs().max().item<double>() <= 1e-4 * b.abs().max().item<double>();
  };
  const at::Tensor plain = m.forward(x), fast = m.forward_inference(x);
  EXPECT_TRUE(close(fast, plain));
  EXPECT_TRUE(close(m.forward_inference(x.slice(0, 1, 2)), plain.slice(0, 1, 2))) << "another batch size";
  // Weights changed in place: the optimised copy is rebuilt from them.
  for (auto p : m.module()->parameters()) p.mul_(0.5);
  const at::Tensor plain_half = m.forward(x);
  ASSERT_FALSE(close(plain_half, plain));
  EXPECT_TRUE(close(m.forward_inference(x), plain_half));
  // A module in training mode runs as it is.
  m.module()->train(true);
  EXPECT_TRUE(at::equal(m.forward_inference(x), m.forward(x)));
  m.module()->train(false);
  // A bad input gets forward()'s error.
  EXPECT_THROW(m.forward_inference(at::zeros({1, 5, 8, 8})), ShapeMismatch);
  // Double inputs and function models: the same numbers as forward().
  Model lin = candela::testing::linear_model(at::tensor({1.0, -2.0, 0.5}, at::kDouble).view({1, 3}),
                                             at::tensor({0.25}, at::kDouble));
  const at::Tensor xd = at::randn({4, 3}, at::kDouble);
  EXPECT_TRUE(at::allclose(lin.forward_inference(xd), lin.forward(xd), 0, 1e-12));
  Model fn = Model::from_function([](const at::Tensor& t) { return t.sum(1, true); });
  EXPECT_TRUE(at::equal(fn.forward_inference(xd), xd.sum(1, true)));
}
