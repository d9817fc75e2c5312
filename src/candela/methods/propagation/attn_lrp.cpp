// AttnLRP and CP-LRP (attn_lrp.h): ops whose backward implements a rule in the
// gradient x input form of LXT, and the pass that places them.
#include "candela/methods/propagation/attn_lrp.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/library.h>
#include <torch/script.h>

#include <set>
#include <unordered_set>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/graph_util.h"
#include "candela/graph/taps.h"

namespace candela {
using detail::str_cat;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

namespace {

// z + eps * sign(z), sign(0) = +1.
at::Tensor stab(const at::Tensor& z, double eps) { return z + eps * (2 * z.ge(0).to(z.scalar_type()) - 1); }

// Identity rule: the value y = f(x), the relevance R_x = R_y; with R = v * g that is g_x = g_y * y / x.
class IdentityFn : public torch::autograd::Function<IdentityFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y, double eps) {
    ctx->save_for_backward({x, y});
    ctx->saved_data["eps"] = eps;
    return y.clone();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    return {grads[0] * s[1] / stab(s[0], ctx->saved_data["eps"].toDouble()), at::Tensor(), at::Tensor()};
  }
};

// Uniform rule for one operand of a product of two activations: half the gradient.
class ScaleFn : public torch::autograd::Function<ScaleFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double factor) {
    ctx->saved_data["factor"] = factor;
    return x.clone();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0] * ctx->saved_data["factor"].toDouble(), at::Tensor()};
  }
};

// Epsilon rule after a linear layer: R_x = x W^T (R_z / stab(z)) is g_z scaled by z / stab(z).
class EpsilonFn : public torch::autograd::Function<EpsilonFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& z, double eps) {
    ctx->save_for_backward({z});
    ctx->saved_data["eps"] = eps;
    return z.clone();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor z = ctx->get_saved_variables()[0];
    return {grads[0] * z / stab(z, ctx->saved_data["eps"].toDouble()), at::Tensor()};
  }
};

// LayerNorm with the standard deviation held constant: y = (x - mean) / sigma * w + b is linear in
// x, and its gradient is (w g - mean(w g)) / sigma over the normalised dimensions.
class LayerNormFn : public torch::autograd::Function<LayerNormFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::IntArrayRef shape,
                            const c10::optional<at::Tensor>& w, const c10::optional<at::Tensor>& b, double eps) {
    at::Tensor wt = w.has_value() ? *w : at::Tensor(), bt = b.has_value() ? *b : at::Tensor();
    ctx->save_for_backward({x, wt});
    ctx->saved_data["dims"] = static_cast<int64_t>(shape.size());
    ctx->saved_data["eps"] = eps;
    return at::layer_norm(x, shape, wt, bt, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const at::Tensor& x = s[0];
    const int64_t k = ctx->saved_data["dims"].toInt();
    std::vector<int64_t> dims;
    for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
    const at::Tensor sigma = (x.var(dims, /*unbiased=*/false, /*keepdim=*/true) + ctx->saved_data["eps"].toDouble()).sqrt();
    at::Tensor g = s[1].defined() ? grads[0] * s[1] : grads[0];
    return {(g - g.mean(dims, /*keepdim=*/true)) / sigma, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor lrp_identity(const at::Tensor& x, const at::Tensor& y, double eps) { return IdentityFn::apply(x, y, eps); }
at::Tensor lrp_scale(const at::Tensor& x, double factor) { return ScaleFn::apply(x, factor); }
at::Tensor lrp_epsilon(const at::Tensor& z, double eps) { return EpsilonFn::apply(z, eps); }
at::Tensor lrp_layer_norm(const at::Tensor& x, c10::IntArrayRef shape, const c10::optional<at::Tensor>& w,
                          const c10::optional<at::Tensor>& b, double eps) {
  return LayerNormFn::apply(x, shape, w, b, eps);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(candela, m) {
  const auto k = c10::AliasAnalysisKind::CONSERVATIVE;
  m.def(torch::schema("candela::lrp_identity(Tensor x, Tensor y, float eps) -> Tensor", k));
  m.def(torch::schema("candela::lrp_scale(Tensor x, float factor) -> Tensor", k));
  m.def(torch::schema("candela::lrp_epsilon(Tensor z, float eps) -> Tensor", k));
  m.def(torch::schema("candela::lrp_layer_norm(Tensor x, int[] normalized_shape, Tensor? weight, Tensor? bias, "
                      "float eps) -> Tensor", k));
}

TORCH_LIBRARY_IMPL(candela, CompositeImplicitAutograd, m) {
  m.impl("lrp_identity", TORCH_FN(lrp_identity));
  m.impl("lrp_scale", TORCH_FN(lrp_scale));
  m.impl("lrp_epsilon", TORCH_FN(lrp_epsilon));
  m.impl("lrp_layer_norm", TORCH_FN(lrp_layer_norm));
}

// ---- the rewrite ----------------------------------------------------------------------------

namespace detail {
namespace {

bool carries_tensor(const Value* v) {
  const auto& t = v->type();
  if (t->kind() == c10::TypeKind::TensorType) return true;
  for (const auto& c : t->containedTypes())
    if (c->kind() == c10::TypeKind::TensorType) return true;
  return false;
}

const std::set<std::string>& identity_ops() {
  static const std::set<std::string> s = {"aten::gelu", "aten::silu", "aten::relu", "aten::tanh", "aten::sigmoid",
                                          "aten::elu", "aten::leaky_relu", "aten::softplus", "aten::hardtanh",
                                          "aten::mish"};
  return s;
}
const std::set<std::string>& linear_ops() {
  static const std::set<std::string> s = {
      "aten::add", "aten::sub", "aten::neg", "aten::view", "aten::reshape", "aten::flatten", "aten::squeeze",
      "aten::unsqueeze", "aten::permute", "aten::transpose", "aten::t", "aten::contiguous", "aten::clone", "aten::cat",
      "aten::stack", "aten::slice", "aten::select", "aten::narrow", "aten::chunk", "aten::split", "aten::unbind",
      "aten::expand", "aten::expand_as", "aten::repeat", "aten::to", "aten::type_as", "aten::dropout",
      "aten::feature_dropout", "aten::mean", "aten::sum", "aten::index_select", "aten::view_as", "aten::reshape_as",
      "aten::detach", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
      "prim::TupleIndex", "aten::__getitem__", "prim::ConstantChunk", "aten::movedim", "aten::unflatten",
      "aten::masked_fill", "aten::where", "aten::constant_pad_nd", "aten::pad", "aten::gather", "aten::flip",
      "aten::roll", "aten::numpy_T", "aten::mT", "aten::split_with_sizes", "aten::unsafe_split", "aten::dropout_",
      "aten::copy", "aten::squeeze_", "aten::unsqueeze_", "aten::tensor_split",
      // constants shaped like an activation: no relevance flows into them
      "aten::zeros_like", "aten::ones_like", "aten::full_like", "aten::empty_like",
      // pooling: averages are linear; a maximum gives its relevance to the winner (the gradient)
      "aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d", "aten::adaptive_avg_pool1d",
      "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d", "aten::max_pool1d", "aten::max_pool2d",
      "aten::max_pool3d", "aten::adaptive_max_pool2d"};
  return s;
}
// Ops whose outputs carry no relevance (shapes, comparisons, indices): the path stops there.
const std::set<std::string>& no_relevance_ops() {
  static const std::set<std::string> s = {"aten::size", "aten::tensor", "prim::NumToTensor", "aten::Int",
                                          "aten::_shape_as_tensor", "aten::eq", "aten::ne", "aten::lt", "aten::gt",
                                          "aten::le", "aten::ge", "aten::argmax", "aten::argmin", "aten::dim",
                                          "aten::numel", "aten::scalar_tensor", "aten::sign"};
  return s;
}
// Ops that compute a normalisation statistic (a decomposed LayerNorm's variance and std).
const std::set<std::string>& statistic_ops() {
  static const std::set<std::string> s = {"aten::pow", "aten::sqrt", "aten::rsqrt", "aten::var", "aten::std",
                                          "aten::mean", "aten::add", "aten::sub", "aten::mul", "aten::to",
                                          "aten::clamp", "aten::clamp_min", "aten::square"};
  return s;
}

// True when every use of v ends, through statistic ops only, as the divisor of a division.
bool only_feeds_divisor(const Value* v, int depth = 0) {
  if (depth > 16 || v->uses().empty()) return false;
  for (const auto& use : v->uses()) {
    const Node* u = use.user;
    const std::string k = u->kind().toQualString();
    if (k == "aten::div" && use.offset == 1) continue;
    if (!statistic_ops().count(k)) return false;
    for (const auto* o : u->outputs())
      if (carries_tensor(o) && !only_feeds_divisor(o, depth + 1)) return false;
  }
  return true;
}

c10::Symbol sym(const char* name) { return c10::Symbol::fromQualString(name); }

// True when the only use of `node`'s output is an add of a term off the relevance path (a bias).
template <class On>
bool bias_add_after(const Node* node, const On& on) {
  const auto& uses = node->output()->uses();
  const Node* u = uses.size() == 1 ? uses[0].user : nullptr;
  return u && u->kind() == sym("aten::add") && u->inputs().size() >= 2 && !on(u->input(uses[0].offset == 0 ? 1 : 0));
}

// The last node of an exported Erf GELU around `erf`: erf(x / c) (or x * c), then a chain of at
// most three single-use adds and muls by constants, 1 + erf, x and x * 0.5, in the orders
// exporters write it. Null when the pattern is not exactly that.
Node* erf_gelu_end(Node* erf) {
  const Node* scale = erf->input(0)->node();
  const std::string sk = scale->kind().toQualString();
  if ((sk != "aten::div" && sk != "aten::mul") || scale->inputs().size() < 2 || !scale->input(1)->node()->kind().is_prim())
    return nullptr;
  const Value* x = scale->input(0);
  // A value is x, x * constant, or a constant.
  auto is_x_term = [&](const Value* v) {
    if (v == x) return true;
    const Node* n = v->node();
    return n->kind() == sym("aten::mul") && n->inputs().size() == 2 &&
           ((n->input(0) == x && n->input(1)->node()->kind().is_prim()) ||
            (n->input(1) == x && n->input(0)->node()->kind().is_prim()));
  };
  // Before x enters: 1 + erf and constant factors; x (or x * c) enters by a mul; after it, only
  // constant factors (a constant factor is linear: the identity rule's y / x absorbs it).
  Node* cur = erf;
  bool used_x = false;
  for (int step = 0; step < 4; ++step) {
    if (cur->outputs().size() != 1 || cur->output()->uses().size() != 1) break;
    Node* next = cur->output()->uses()[0].user;
    const std::string nk = next->kind().toQualString();
    const bool add = nk == "aten::add", mul = nk == "aten::mul";
    const Value* o = (add || mul) && next->inputs().size() >= 2 ? next->input(next->input(0) == cur->output() ? 1 : 0) : nullptr;
    const bool constant = o && o->node()->kind().is_prim();
    if (used_x) {
      if (!(mul && constant)) break;
    } else if (mul && o && is_x_term(o) && !constant) {
      used_x = true;
    } else if (!((add || mul) && constant)) {
      return nullptr;
    }
    cur = next;
  }
  return used_x && cur != erf ? cur : nullptr;
}

}  // namespace

nlohmann::json attn_lrp_rewrite(Graph& g, bool cp_lrp, double eps, bool from_input) {
  std::unordered_set<const Value*> path;
  std::vector<Node*> nodes;
  if (from_input) path.insert(g.inputs().at(1));
  for (Node* n : g.nodes()) {
    nodes.push_back(n);
    if (!from_input && n->kind() == sym("candela::tap")) path.insert(n->output());
  }
  nlohmann::json rules = nlohmann::json::array();
  auto on = [&](const Value* v) { return path.count(v) > 0; };
  // A linear layer split in two by an exporter (ONNX MatMul + Add): the epsilon rule goes after the Add.
  std::unordered_set<const Node*> bias_adds;
  for (Node* node : nodes) {
    const std::string kind = node->kind().toQualString();
    if (kind == "candela::tap") continue;
    std::vector<size_t> in_path;
    for (size_t i = 0; i < node->inputs().size(); ++i)
      if (on(node->input(i)) && carries_tensor(node->input(i))) in_path.push_back(i);
    if (in_path.empty()) continue;
    bool tensor_out = false;
    for (auto* o : node->outputs()) tensor_out |= carries_tensor(o);
    if (!tensor_out) continue;  // x.size(0): no relevance flows there
    if (no_relevance_ops().count(kind)) continue;  // its outputs stay off the path
    const std::string where = str_cat(kind, module_path(node).empty() ? "" : " at '" + module_path(node) + "'");
    CANDELA_CHECK_T(UnsupportedModel, node->blocks().empty(), "attn_lrp: the relevance path runs through control "
                    "flow (", where, "); trace the model (torch.jit.trace) so the branch taken is fixed.");
    for (auto* o : node->outputs())
      if (carries_tensor(o)) path.insert(o);
    auto record = [&](const std::string& rule) {
      rules.push_back({{"path", module_path(node)}, {"type", module_type(node)}, {"op", kind}, {"rule", rule}});
    };
    auto count_on = [&](std::initializer_list<size_t> operands) {
      int c = 0;
      for (size_t i : operands) c += i < node->inputs().size() && on(node->input(i)) ? 1 : 0;
      return c;
    };
    // Wraps input i in op(input, constant) placed before the node.
    auto wrap_input = [&](size_t i, const char* op, double value) {
      torch::jit::WithInsertPoint guard(node);
      Value* w = g.insert(sym(op), {node->input(i), g.insertConstant(value)});
      w->setType(node->input(i)->type());
      path.insert(w);
      node->replaceInput(i, w);
    };
    // Puts op(x?, y, eps) after the node (constants too) and gives its output the node's later uses.
    auto after = [&](const char* op, Value* x) {
      torch::jit::WithInsertPoint guard(node->next());
      std::vector<torch::jit::NamedValue> args;
      if (x) args.emplace_back(x);
      args.emplace_back(node->output());
      args.emplace_back(g.insertConstant(eps));
      Value* out = g.insert(sym(op), args);
      out->setType(node->output()->type());
      node->output()->replaceAllUsesAfterNodeWith(out->node(), out);
      path.insert(out);
    };

    if (identity_ops().count(kind)) {
      after("candela::lrp_identity", node->input(0));
      record("identity");
    } else if (kind == "aten::erf") {
      // An Erf-based GELU, x * 0.5 * (1 + erf(x / sqrt(2))) (ONNX exports before opset 20). When the
      // whole pattern is found, its output gets the identity rule exactly as aten::gelu does
      // (g_x = g_y * y / stab(x)); otherwise the gate is held constant (the identity rule without
      // the stabiliser). Either way the gate carries no relevance.
      Node* end = erf_gelu_end(node);
      torch::jit::WithInsertPoint guard(node->next());
      Value* d = g.insert(sym("aten::detach"), {node->output()});
      d->setType(node->output()->type());
      node->output()->replaceAllUsesAfterNodeWith(d->node(), d);
      if (end) {
        Value* x = node->input(0)->node()->input(0);
        torch::jit::WithInsertPoint at_end(end->next());
        Value* out = g.insert(sym("candela::lrp_identity"), {x, end->output(), g.insertConstant(eps)});
        out->setType(end->output()->type());
        end->output()->replaceAllUsesAfterNodeWith(out->node(), out);
        path.insert(out);
        record("identity (erf gelu)");
      } else {
        record("identity (erf gelu gate held constant)");
      }
    } else if (kind == "aten::layer_norm") {
      torch::jit::WithInsertPoint guard(node);
      Value* out = g.insert(sym("candela::lrp_layer_norm"),
                            {node->input(0), node->input(1), node->input(2), node->input(3), node->input(4)});
      out->setType(node->output()->type());
      node->output()->replaceAllUsesWith(out);
      path.insert(out);
      record("layer_norm_std_constant");
    } else if (kind == "aten::softmax" || kind == "aten::_softmax") {
      if (cp_lrp) {
        // The attention weights become constants: nothing flows back into the scores, and
        // A V is linear in V (full relevance to V, none to A).
        torch::jit::WithInsertPoint guard(node->next());
        Value* d = g.insert(sym("aten::detach"), {node->output()});
        d->setType(node->output()->type());
        node->output()->replaceAllUsesAfterNodeWith(d->node(), d);
        record("cp_constant");
      } else {
        record("softmax_gradient");
      }
    } else if (kind == "aten::linear" || kind == "aten::_convolution" || kind.rfind("aten::conv", 0) == 0) {
      CANDELA_CHECK_T(UnsupportedModel, !on(node->input(1)), "attn_lrp: ", where,
                      " has a weight computed from the input; no rule covers that.");
      if (kind == "aten::linear" && node->inputs().size() >= 3 && node->input(2)->type()->kind() == c10::TypeKind::NoneType &&
          bias_add_after(node, on)) {
        // A bias-free linear whose bias is the Add that follows (ONNX MatMul + Add): one layer.
        bias_adds.insert(node->output()->uses()[0].user);
        record("epsilon (with the following bias add)");
      } else {
        after("candela::lrp_epsilon", nullptr);
        record("epsilon");
      }
    } else if (kind == "aten::matmul" || kind == "aten::bmm" || kind == "aten::mm" || kind == "aten::mul" ||
               kind == "aten::baddbmm" || kind == "aten::addmm") {
      const bool shifted = kind == "aten::baddbmm" || kind == "aten::addmm";  // input 0 is the added term
      const size_t a = shifted ? 1 : 0, b = shifted ? 2 : 1;
      if (count_on({a, b}) == 2) {
        wrap_input(a, "candela::lrp_scale", 0.5);
        wrap_input(b, "candela::lrp_scale", 0.5);
        record("uniform");
      } else if (kind == "aten::addmm") {
        after("candela::lrp_epsilon", nullptr);
        record("epsilon");
      } else if (kind == "aten::matmul" && !on(node->input(1))) {
        // x W with a constant W: a linear layer (its bias, if any, is the Add that follows).
        if (bias_add_after(node, on)) {
          bias_adds.insert(node->output()->uses()[0].user);
          record("epsilon (with the following bias add)");
        } else {
          after("candela::lrp_epsilon", nullptr);
          record("epsilon");
        }
      } else {
        record(kind == "aten::mul" && statistic_ops().count(kind) && only_feeds_divisor(node->output())
                   ? "statistic" : "linear");
      }
    } else if (kind == "aten::div") {
      if (on(node->input(1)) && node->inputs().size() >= 2) {
        CANDELA_CHECK_T(UnsupportedModel, on(node->input(0)), "attn_lrp has no rule for ", where,
                        " (a constant divided by an activation).");
        torch::jit::WithInsertPoint guard(node);
        Value* d = g.insert(sym("aten::detach"), {node->input(1)});
        d->setType(node->input(1)->type());
        node->replaceInput(1, d);
        record("std_constant");
      } else {
        record("linear");
      }
    } else if (bias_adds.count(node)) {
      after("candela::lrp_epsilon", nullptr);
      record("epsilon");
    } else if (statistic_ops().count(kind) && only_feeds_divisor(node->output())) {
      record("statistic");  // its only use is a divisor held constant: no relevance reaches it
    } else if (linear_ops().count(kind)) {
      record("linear");
    } else if (kind == "aten::_native_multi_head_attention" || kind == "aten::_transformer_encoder_layer_fwd") {
      // nn.MultiheadAttention / nn.TransformerEncoderLayer in inference: one fused kernel.
      throw UnsupportedModel(str_cat(
          "attn_lrp cannot propagate through ", where,
          module_type(node).empty() ? "" : " (" + module_type(node) + ")",
          ": the fused fast path that nn.MultiheadAttention takes when nothing requires grad (a model traced under "
          "torch.no_grad() in eval mode). It hides the attention map and has no LRP rule. Trace the model with "
          "gradients enabled (outside torch.no_grad(), parameters requiring grad) so that the attention is traced "
          "as matmul/softmax ops, or write the attention out (see tests/fixtures/make_vit_fixtures.py)."));
    } else {
      throw UnsupportedModel(str_cat("attn_lrp has no rule for ", where,
                                     module_type(node).empty() ? "" : " (" + module_type(node) + ")",
                                     ". It propagates through linear layers, LayerNorm, softmax, GELU/SiLU and other "
                                     "elementwise activations, products, sums and reshapes; use a gradient or "
                                     "perturbation method for this model."));
    }
  }
  return rules;
}

}  // namespace detail

// ---- the method -------------------------------------------------------------------------------

void AttnLrp::Options::validate() const {
  CANDELA_CHECK(variant == "attn_lrp" || variant == "cp_lrp", "attn_lrp: variant must be attn_lrp or cp_lrp, got '",
                variant, "'.");
  CANDELA_CHECK(epsilon > 0, "attn_lrp: epsilon must be > 0, got ", epsilon, ".");
  for (const auto& l : layers) CANDELA_CHECK(!l.empty(), "attn_lrp got an empty layer name.");
}

namespace {

// The rewritten graph without taps (relevance at the model's input).
struct InputGraph {
  torch::jit::Module module;
  std::unique_ptr<torch::jit::GraphFunction> fn;
  nlohmann::json rules;
};

}  // namespace

Attribution AttnLrp::attribute(Evaluator& ev, const ExplainRequest& req) const {
  const Model& model = ev.model();
  CANDELA_CHECK_T(UnsupportedModel, model.module() != nullptr,
                  "attn_lrp rewrites the model's graph: it needs a TorchScript model, not a plain function.");
  const bool cp = options_.variant == "cp_lrp";
  const double eps = options_.epsilon;
  const std::string key = str_cat("attn_lrp:", options_.variant, ":", eps);
  const at::Tensor& x = req.inputs;
  const int64_t n = x.size(0);

  std::shared_ptr<const LayerTaps> taps;
  std::shared_ptr<InputGraph> input_graph;
  auto rules = std::make_shared<nlohmann::json>();
  if (!options_.layers.empty()) {
    taps = LayerTaps::of(model, options_.layers, key, [&](Graph& g) { *rules = detail::attn_lrp_rewrite(g, cp, eps, false); });
    // A cached graph was rewritten earlier: its rules are kept with it.
    auto cached = std::static_pointer_cast<nlohmann::json>(model.cached(key + ":rules", [&] {
      return std::static_pointer_cast<void>(std::make_shared<nlohmann::json>(*rules));
    }));
    rules = cached;
  } else {
    input_graph = std::static_pointer_cast<InputGraph>(model.cached(key + ":input", [&] {
      auto ig = std::make_shared<InputGraph>();
      ig->module = *model.module();
      auto graph = detail::inlined_forward(ig->module);
      detail::specialise_forward_args(graph, model);
      ig->rules = detail::attn_lrp_rewrite(*graph, cp, eps, true);
      ig->fn = std::make_unique<torch::jit::GraphFunction>("candela_attn_lrp", graph, nullptr);
      return std::static_pointer_cast<void>(ig);
    }));
    *rules = input_graph->rules;
  }

  std::vector<at::Tensor> values, outputs;
  ev.batched("attn_lrp", n, Evaluator::Automatic{.with_grad = true}, [&](int64_t b, int64_t e) {
    at::AutoGradMode grad_mode(true);
    const at::Tensor xb = x.slice(0, b, e);
    at::Tensor out;
    std::vector<at::Tensor> wrt;
    if (taps) {
      auto run = taps->forward(xb, {}, /*track=*/true);
      out = run.output;
      wrt = run.activations;
      for (size_t i = 1; i < wrt.size(); ++i)
        CANDELA_CHECK_T(ShapeMismatch, wrt[i].sizes() == wrt[0].sizes(), "attn_lrp sums the relevance of its layers, "
                        "so they must have one shape: '", options_.layers[0], "' is ", detail::shape_str(wrt[0].sizes()),
                        " but '", options_.layers[i], "' is ", detail::shape_str(wrt[i].sizes()), ".");
    } else {
      at::Tensor xg = xb.detach().requires_grad_(true);
      try {
        std::vector<c10::IValue> in = {input_graph->module._ivalue(), xg};
        for (auto& v : detail::given_forward_args(model.forward_args(), xg.size(0), xg.device()))
          in.push_back(std::move(v));
        out = (*input_graph->fn)(std::move(in)).toTensor();
      } catch (const Error&) {
        throw;
      } catch (const std::exception& ex) {
        throw ShapeMismatch(str_cat("the model failed on an input of shape ", detail::shape_str(xb.sizes()), ": ",
                                    detail::torch_message(ex), "."));
      }
      wrt = {xg};
    }
    const at::Tensor rows = at::arange(b, e, at::TensorOptions().dtype(at::kLong).device(x.device()));
    const at::Tensor score = req.target.scores(out, rows);  // relevance at the output: the target's score
    auto g = torch::autograd::grad({score.sum()}, wrt, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    at::Tensor r;
    for (size_t i = 0; i < wrt.size(); ++i) {
      at::Tensor ri = g[i].defined() ? (wrt[i].detach() * g[i]) : at::zeros_like(wrt[i]);
      r = r.defined() ? r + ri : ri;
    }
    values.push_back(r.detach());
    outputs.push_back(out.detach());
  });

  Attribution a;
  a.values = at::cat(values);
  a.output = at::cat(outputs);
  a.targets = req.target.classes(a.output);
  if (!options_.layers.empty()) a.layer = options_.layers[0];
  const at::Tensor idx = at::arange(n, at::TensorOptions().dtype(at::kLong));
  const at::Tensor out_rel = req.target.scores(a.output, idx).to(at::kDouble);
  const at::Tensor in_sum = detail::sum_per_sample(a.values.to(at::kDouble));
  a.extra["relevance"] = {{"output", detail::tensor_to_json(out_rel)},
                          {"input", detail::tensor_to_json(in_sum)},
                          {"ratio", detail::tensor_to_json(in_sum / out_rel)}};
  a.extra["rules"] = *rules;
  a.extra["variant"] = options_.variant;
  if (options_.layers.size() > 1) a.extra["layers"] = options_.layers;
  return a;
}

}  // namespace candela
