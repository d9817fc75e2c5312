// ONNX models imported into the same graph as TorchScript: outputs and input gradients equal
// PyTorch's on the same weights, every method gives the same attribution on the .onnx and the
// .pt, the tf2onnx-style NHWC graph equals its NCHW twin transposed, and malformed files get
// clear errors. The operator table refuses a duplicate, and docs/onnx.md lists its operators.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <onnx/onnx_pb.h>

#include <chrono>

#include "candela/io/npy.h"
#include "candela/onnx/emit.h"
#include "candela/onnx/importer.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::rel_error;

namespace {

Attribution run(const std::string& method, const Model& m, const at::Tensor& x, nlohmann::json o = nlohmann::json::object()) {
  ExplainRequest r;
  r.inputs = x;
  r.target = Target::index(3);
  return Registry::builtin().create(method, o)->explain(m, r);
}

at::Tensor input_grad(const Model& m, const at::Tensor& x) {
  at::Tensor in = x.detach().clone().requires_grad_(true);
  at::Tensor out = m.forward(in);
  return torch::autograd::grad({out.select(1, out.size(1) - 1).sum()}, {in})[0];
}

TEST(Onnx, OutputsAndGradientsMatchPyTorch) {
  struct Case {
    const char* pt;
    const char* data;
    int64_t rows;
  };
  for (const Case& c : {Case{"digits_cnn", "digits_test.npy", 6}, Case{"breast_cancer_mlp", "breast_cancer_test.npy", 6}}) {
    Model pt = Model::load(fixture(std::string(c.pt) + ".pt"));
    const at::Tensor x = read_npy(fixture(c.data)).slice(0, 0, c.rows);
    for (int opset : {13, 17}) {
      const std::string name = std::string(c.pt) + "_op" + std::to_string(opset) + ".onnx";
      Model onnx = Model::load(fixture(name));
      at::Tensor a, b;
      {
        at::NoGradGuard ng;
        a = onnx.forward(x);
        b = pt.forward(x);
      }
      EXPECT_LT((a - b).abs().max().item<double>(), 1e-5) << name;
      EXPECT_LT((input_grad(onnx, x) - input_grad(pt, x)).abs().max().item<double>(), 1e-6) << name;
    }
  }
  Model resnet = Model::load(fixture("resnet18_op17.onnx"));
  Model resnet_pt = Model::load(fixture("resnet18.pt"));
  const at::Tensor img = at::randn({1, 3, 224, 224}, at::detail::createCPUGenerator(0));
  at::NoGradGuard ng;
  EXPECT_LT(rel_error(resnet.forward(img), resnet_pt.forward(img)), 1e-5);
}

TEST(Onnx, EveryMethodFamilyGivesThePyTorchAttribution) {
  Model pt = Model::load(fixture("digits_cnn.pt"));
  Model onnx = Model::load(fixture("digits_cnn_op17.onnx"));
  EXPECT_EQ(onnx.input_spec().layout, "NCHW");
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 3);
  // Gradient methods, propagation rules, and perturbation (forward-only) methods.
  for (const auto& info : Registry::builtin().methods()) {
    // (The attention family needs attention maps: TextFixture.OnnxExportsGiveTheSameAttributionsAsTheTracedModel.)
    if (info.family == "cam" || info.family == "layer" || info.family == "global" || info.family == "attention") continue;
    nlohmann::json o = nlohmann::json::object();
    if (info.schema.contains("n_steps")) o["n_steps"] = 8;
    if (info.name == "rise") o["n_masks"] = 32;
    if (info.name == "lime") o["num_samples"] = 64;
    if (info.name == "kernel_shap") o["n_samples"] = 16;
    if (info.name == "shapley_value_sampling") o["n_samples"] = 2;
    if (info.name == "exact_shapley") continue;  // 64 pixels: 2^64 coalitions
    if (info.name == "lrp") o["composite"] = "epsilon_gamma_box";
    ExplainRequest r;
    r.inputs = x;
    r.target = Target::index(3);
    if (info.family == "perturbation")
      r.feature_mask = (at::arange(8).div(4, "floor").view({8, 1}) * 2 + at::arange(8).div(4, "floor").view({1, 8})).view({1, 8, 8});
    const at::Tensor a = Registry::builtin().create(info.name, o)->explain(onnx, r).values;
    const at::Tensor b = Registry::builtin().create(info.name, o)->explain(pt, r).values;
    EXPECT_LT(rel_error(a, b), 1e-5) << info.name;
  }
  // A CAM and a layer method on a named ONNX layer (the node's name, sanitised).
  bool found = false;
  std::string conv2;
  for (const auto& l : onnx.layers())
    if (l.type == "Conv") conv2 = l.name, found = true;
  ASSERT_TRUE(found);
  EXPECT_LT(rel_error(run("grad_cam", onnx, x, {{"layers", {conv2}}}).values,
                      run("grad_cam", pt, x, {{"layers", {"features.2"}}}).values),
            1e-5);
  EXPECT_LT(rel_error(run("layer_gradient_x_activation", onnx, x, {{"layers", {conv2}}}).values,
                      run("layer_gradient_x_activation", pt, x, {{"layers", {"features.2"}}}).values),
            1e-5);
}

TEST(Onnx, NhwcGraphEqualsItsNchwTwinTransposed) {
  Model nhwc = Model::load(fixture("digits_nhwc.onnx"));
  Model nchw = Model::load(fixture("digits_cnn.pt"));
  EXPECT_EQ(nhwc.input_spec().layout, "NHWC");
  const at::Tensor x = read_npy(fixture("digits_test.npy")).slice(0, 0, 4);
  const at::Tensor xh = x.permute({0, 2, 3, 1}).contiguous();
  {
    at::NoGradGuard ng;
    EXPECT_LT((nhwc.forward(xh) - nchw.forward(x)).abs().max().item<double>(), 1e-5);
  }
  for (const std::string method : {"saliency", "integrated_gradients", "deep_lift", "occlusion"}) {
    nlohmann::json o = nlohmann::json::object();
    if (method == "occlusion") o["sliding_window_shapes"] = {2, 2, 1};
    const at::Tensor a = run(method, nhwc, xh, o).values;
    nlohmann::json on = nlohmann::json::object();
    if (method == "occlusion") on["sliding_window_shapes"] = {1, 2, 2};
    const at::Tensor b = run(method, nchw, x, on).values.permute({0, 2, 3, 1});
    EXPECT_LT(rel_error(a, b), 1e-5) << method;
  }
  // Keras-style names are layers.
  bool conv = false;
  for (const auto& l : nhwc.layers()) conv |= l.name == "sequential_conv2d_1_BiasAdd";
  EXPECT_TRUE(conv);
}

TEST(Onnx, MalformedFilesGetClearErrors) {
  auto expect = [](const std::string& file, auto type_tag, const std::string& needle) {
    using E = decltype(type_tag);
    try {
      Model::load(fixture(file));
      ADD_FAILURE() << file << " was accepted";
    } catch (const E& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << file << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << file << ": wrong error type: " << e.what();
    }
  };
  expect("bad_truncated.onnx", ParseError(""), "not a valid ONNX file");
  expect("bad_not_onnx.onnx", ParseError(""), "not a valid ONNX file");
  expect("bad_external_outside.onnx", UnsupportedModel(""), "outside the model's folder");
  expect("bad_external_missing.onnx", IoError(""), "is missing");
  expect("bad_absurd_shape.onnx", ParseError(""), "absurdly large");
  expect("bad_cycle.onnx", UnsupportedModel(""), "topological");
  expect("bad_unsupported_op.onnx", UnsupportedModel(""), "NonMaxSuppression");
  expect("bad_zero_stride.onnx", ParseError(""), "'strides' has the value 0");
  expect("bad_short_pads.onnx", ParseError(""), "'pads' has 2 values where 4 are expected");
}

namespace {

// A hand-built graph: x [1, 4] float through the given nodes to y (shapes left to inference).
std::string hand_built(const std::vector<onnx::NodeProto>& nodes, int opset = 17,
                       const std::vector<std::pair<std::string, int>>& extra_opsets = {}) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  for (const auto& [domain, version] : extra_opsets) {
    auto* o = m.add_opset_import();
    o->set_domain(domain);
    o->set_version(version);
  }
  auto* g = m.mutable_graph();
  g->set_name("hand_built");
  for (const auto& n : nodes) *g->add_node() = n;
  auto value = [](onnx::ValueInfoProto* v, const std::string& name) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_value(1);
    t->mutable_shape()->add_dim()->set_dim_value(4);
  };
  value(g->add_input(), "x");
  value(g->add_output(), "y");
  return m.SerializeAsString();
}

onnx::NodeProto node(const std::string& op, const std::vector<std::string>& in, const std::string& out,
                     const std::string& domain = "") {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(out + "_node");
  n.set_domain(domain);
  for (const auto& i : in) n.add_input(i);
  n.add_output(out);
  return n;
}

}  // namespace

TEST(Onnx, ManyNodesOfOneOperatorImportQuickly) {
  // 40 Add nodes in a chain, then 40 Mul. Every node's submodule once shared its class name with
  // the other nodes of its operator (all `__torch__.Add`), and compiling the root's forward()
  // took time and memory doubling with each such node: about 0.25 s at 22, std::bad_alloc past
  // 26 (the opset-14 export of the text fixture has 31 Adds).
  std::vector<onnx::NodeProto> nodes;
  std::string prev = "x";
  for (int k = 0; k < 80; ++k) {
    const std::string out = k == 79 ? "y" : "h" + std::to_string(k);
    nodes.push_back(node(k < 40 ? "Add" : "Mul", {prev, "x"}, out));
    prev = out;
  }
  const auto start = std::chrono::steady_clock::now();
  auto imp = candela::detail::import_onnx_bytes(hand_built(nodes), "/nonexistent", "chain.onnx", true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 20.0) << "the import's time grows with the nodes of one operator";
  // y = (41 x) * x^40 at x = 1: 41; the layer type is still the operator's name.
  const at::Tensor y = imp.module.forward({at::ones({1, 4})}).toTensor();
  EXPECT_TRUE(at::allclose(y, at::full({1, 4}, 41.0)));
  Model m = Model::load(fixture("text_bert_op14.onnx"));
  std::set<std::string> types;
  for (const auto& l : m.layers()) types.insert(l.type);
  for (const char* t : {"Add", "Pow", "ReduceMean", "Sqrt", "Gemm", "Gather"}) EXPECT_TRUE(types.count(t)) << t;
}

// Inputs after the first become named forward() parameters. An integer one shaped like the first
// gets the default a transformer export had (ones for a mask, zeros otherwise); one after a required
// parameter cannot (Python's rule), and a float input must always be given.
TEST(Onnx, ExtraInputsAreNamedParametersWithDefaultsWherePythonAllows) {
  auto graph = [](const std::vector<std::pair<std::string, int>>& inputs, const std::vector<onnx::NodeProto>& nodes) {
    onnx::ModelProto m;
    m.set_ir_version(8);
    m.add_opset_import()->set_version(17);
    auto* g = m.mutable_graph();
    g->set_name("inputs");
    for (const auto& n : nodes) *g->add_node() = n;
    auto value = [](onnx::ValueInfoProto* v, const std::string& name, int type) {
      v->set_name(name);
      auto* t = v->mutable_type()->mutable_tensor_type();
      t->set_elem_type(type);
      t->mutable_shape()->add_dim()->set_dim_param("batch");
      t->mutable_shape()->add_dim()->set_dim_value(4);
    };
    for (const auto& [name, type] : inputs) value(g->add_input(), name, type);
    value(g->add_output(), "y", onnx::TensorProto::FLOAT);
    return m.SerializeAsString();
  };
  auto cast = [](const std::string& in, const std::string& out) {
    onnx::NodeProto n = node("Cast", {in}, out);
    auto* to = n.add_attribute();
    to->set_name("to");
    to->set_type(onnx::AttributeProto::INT);
    to->set_i(onnx::TensorProto::FLOAT);
    return n;
  };
  const int f = onnx::TensorProto::FLOAT, i64 = onnx::TensorProto::INT64;
  const at::Tensor x = at::arange(8, at::kFloat).view({2, 4}) + 1;
  {
    auto imp = candela::detail::import_onnx_bytes(
        graph({{"input.ids", f}, {"attention_mask", i64}, {"token_type_ids", i64}},
              {cast("attention_mask", "m"), cast("token_type_ids", "t"), node("Mul", {"input.ids", "m"}, "xm"),
               node("Add", {"xm", "t"}, "y")}),
        "/nonexistent", "bert_like.onnx", true);
    Model model = Model::from_module(imp.module);
    const auto params = model.forward_parameters();
    ASSERT_EQ(params.size(), 2u);
    EXPECT_EQ(params[0].name, "attention_mask");
    EXPECT_EQ(params[1].name, "token_type_ids");
    EXPECT_TRUE(params[0].has_default && params[1].has_default);
    EXPECT_TRUE(at::equal(model.forward(x), x)) << "x * ones + zeros";
    const at::Tensor mask = at::tensor({1, 1, 0, 0}, at::kLong).view({1, 4});
    EXPECT_TRUE(at::equal(model.with_forward_args({{"attention_mask", mask}}).forward(x), x * mask.to(at::kFloat)));
  }
  {
    auto imp = candela::detail::import_onnx_bytes(
        graph({{"x", f}, {"attention_mask", i64}, {"bias", f}},
              {cast("attention_mask", "m"), node("Mul", {"x", "m"}, "xm"), node("Add", {"xm", "bias"}, "y")}),
        "/nonexistent", "float_extra.onnx", true);
    Model model = Model::from_module(imp.module);
    const auto params = model.forward_parameters();
    ASSERT_EQ(params.size(), 2u);
    EXPECT_FALSE(params[0].has_default) << "a default before a required parameter is not Python";
    EXPECT_FALSE(params[1].has_default) << "a float input has no default";
    try {
      model.forward(x);
      ADD_FAILURE() << "a required forward argument was left out";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("--forward-arg attention_mask=FILE.npy"), std::string::npos) << e.what();
    }
    const Model given = model.with_forward_args({{"attention_mask", at::ones({1, 4}, at::kLong)},
                                                 {"bias", at::full({1, 4}, 2.0)}});
    EXPECT_TRUE(at::equal(given.forward(x), x + 2));
  }
}

TEST(Onnx, FusedAndCustomDomainOperatorsAreRefusedClearly) {
  // ONNX Runtime's transformer optimizer fuses a BERT layer into com.microsoft::Attention.
  onnx::NodeProto attention = node("Attention", {"x", "w", "b"}, "y", "com.microsoft");
  auto* heads = attention.add_attribute();
  heads->set_name("num_heads");
  heads->set_type(onnx::AttributeProto::INT);
  heads->set_i(2);
  const std::string bytes = hand_built({attention}, 17, {{"com.microsoft", 1}});
  try {
    candela::detail::import_onnx_bytes(bytes, "/nonexistent", "optimized.onnx", true);
    ADD_FAILURE() << "com.microsoft::Attention was accepted";
  } catch (const UnsupportedModel& e) {
    const std::string what = e.what();
    for (const char* needle : {"com.microsoft::Attention", "node 'y_node'", "fused", "ONNX Runtime", "torch.onnx.export"})
      EXPECT_NE(what.find(needle), std::string::npos) << needle << " not in: " << what;
  }
  // Any other non-standard domain.
  const std::string custom = hand_built({node("Frobnicate", {"x"}, "y", "org.example")}, 17, {{"org.example", 1}});
  try {
    candela::detail::import_onnx_bytes(custom, "/nonexistent", "custom.onnx", true);
    ADD_FAILURE() << "org.example::Frobnicate was accepted";
  } catch (const UnsupportedModel& e) {
    EXPECT_NE(std::string(e.what()).find("org.example::Frobnicate"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("custom domain"), std::string::npos) << e.what();
  }
}

TEST(Onnx, OperatorTableListsWhatTheImporterConverts) {
  const std::vector<std::string> ops = candela::detail::supported_onnx_ops();
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  EXPECT_TRUE(std::adjacent_find(ops.begin(), ops.end()) == ops.end());
  auto listed = [&](const std::string& op) { return std::binary_search(ops.begin(), ops.end(), op); };
  for (const char* op : {"Conv", "Gemm", "Relu", "MatMul", "Resize", "ReduceMean", "Reshape", "Constant", "CumSum",
                          "GatherElements", "Where", "Expand", "Range", "Einsum", "LayerNormalization"})
    EXPECT_TRUE(listed(op)) << op;
  // Refused with the plain "is not supported" message.
  for (const char* op : {"Hardmax", "LpPool", "ReduceProd", "NonMaxSuppression"}) EXPECT_FALSE(listed(op)) << op;
  // A second emitter for an operator is a bug in Candela, not in the model.
  namespace onnx_import = candela::detail::onnx_import;
  onnx_import::OpTable t;
  const onnx_import::Emitter emitter = [](onnx_import::Emit&) { return std::string(); };
  t.add("Relu", emitter);
  EXPECT_THROW(t.add("Relu", emitter), InternalError);
}

// docs/onnx.md lists the supported operators between these markers, one "- `Op`" line each.
const char* const kOpsBegin = "<!-- onnx-ops:begin -->";
const char* const kOpsEnd = "<!-- onnx-ops:end -->";

TEST(Onnx, DocsListTheSupportedOperators) {
  const std::string path = std::string(CANDELA_SOURCE_DIR) + "/docs/onnx.md";
  std::string doc;
  {
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << "cannot read " << path;
    std::stringstream ss;
    ss << in.rdbuf();
    doc = ss.str();
  }
  const size_t begin = doc.find(kOpsBegin), end = doc.find(kOpsEnd);
  ASSERT_TRUE(begin != std::string::npos && end != std::string::npos && begin < end)
      << path << " lacks the markers " << kOpsBegin << " and " << kOpsEnd;
  const size_t from = doc.find('\n', begin) + 1;
  ASSERT_LE(from, end) << path << ": " << kOpsBegin << " and " << kOpsEnd << " must be on lines of their own";
  const std::vector<std::string> ops = candela::detail::supported_onnx_ops();
  std::string expected;
  for (const auto& op : ops) expected += "- `" + op + "`\n";
  const std::string listed = doc.substr(from, end - from);
  if (listed == expected) return;
  if (const char* update = std::getenv("CANDELA_UPDATE_ONNX_DOCS"); update && std::strcmp(update, "1") == 0) {
    std::ofstream(path, std::ios::binary) << doc.substr(0, from) << expected << doc.substr(end);
    std::printf("rewrote the operator list in %s (%zu operators)\n", path.c_str(), ops.size());
    return;
  }
  // Name the differences, then give the whole block.
  std::set<std::string> documented;
  std::istringstream lines(listed);
  for (std::string line; std::getline(lines, line);)
    if (line.size() > 4 && line.rfind("- `", 0) == 0 && line.back() == '`')
      documented.insert(line.substr(3, line.size() - 4));
  std::string missing, extra;
  for (const auto& op : ops)
    if (!documented.count(op)) missing += " " + op;
  for (const auto& op : documented)
    if (!std::binary_search(ops.begin(), ops.end(), op)) extra += " " + op;
  FAIL() << path << ": the operator list between " << kOpsBegin << " and " << kOpsEnd
         << " differs from the importer's table (candela::detail::supported_onnx_ops()).\n  imported but not listed:"
         << (missing.empty() ? " -" : missing) << "\n  listed but not imported:" << (extra.empty() ? " -" : extra)
         << "\nRegenerate it with scripts/update-onnx-docs.sh (it reruns this test with CANDELA_UPDATE_ONNX_DOCS=1), "
            "or put these lines between the markers:\n"
         << expected;
}

}  // namespace
