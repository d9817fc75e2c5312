#include "candela/methods/propagation/rule_graph.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/frozen_conv_folding.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/graph_util.h"
#include "candela/io/file.h"
#include "rule_ops.h"
#include "rule_passes.h"

namespace candela {
using detail::str_cat;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

std::string RuleSettings::key() const {
  return str_cat("rules:", static_cast<int>(method), ":", deeplift_eps, ":", reveal_cancel, ":",
                 composite.to_json().dump(), tap_layer.empty() ? "" : ":tap:" + tap_layer);
}

// ---- the op table ----------------------------------------------------------------------

namespace detail {

const OpRow* find_op(const std::string& kind) {
  using C = OpClass;
  static const std::map<std::string, OpRow> table = [] {
    std::map<std::string, OpRow> t;
    for (const char* k : {"aten::linear", "aten::_convolution", "aten::conv1d", "aten::conv2d", "aten::conv3d",
                          "aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d"})
      t[k] = {C::kAffine};
    const std::pair<const char*, int64_t> activations[] = {
        {"aten::relu", kRelu},       {"aten::leaky_relu", kLeakyRelu}, {"aten::elu", kElu},
        {"aten::sigmoid", kSigmoid}, {"aten::tanh", kTanh},            {"aten::softplus", kSoftplus},
        {"aten::gelu", kGelu},       {"aten::silu", kSilu},            {"aten::hardtanh", kHardtanh}};
    for (const auto& [k, act] : activations) t[k] = {C::kActivation, act};
    for (const char* k : {"aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d", "aten::adaptive_avg_pool1d",
                          "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d"})
      t[k] = {C::kAvgPool};
    for (const char* k : {"aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d", "aten::adaptive_max_pool1d",
                          "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d"})
      t[k] = {C::kMaxPool};
    for (const char* k : {"aten::add", "aten::sub"}) t[k] = {C::kSum};
    for (const char* k : {"aten::mul", "aten::div"}) t[k] = {C::kScale};
    for (const char* k : {"aten::matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::einsum"}) t[k] = {C::kMatmul};
    t["aten::batch_norm"] = {C::kBatchNorm};
    for (const char* k :
         {"aten::view", "aten::reshape", "aten::flatten", "aten::squeeze", "aten::unsqueeze", "aten::permute",
          "aten::transpose", "aten::t", "aten::contiguous", "aten::clone", "aten::cat", "aten::stack", "aten::slice",
          "aten::select", "aten::narrow", "aten::chunk", "aten::split", "aten::unbind", "aten::expand",
          "aten::expand_as", "aten::repeat", "aten::to", "aten::type_as", "aten::dropout", "aten::feature_dropout",
          "aten::alpha_dropout", "aten::feature_alpha_dropout", "aten::constant_pad_nd", "aten::pad",
          "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d",
          "aten::upsample_bilinear2d", "aten::upsample_linear1d", "aten::mean", "aten::sum", "aten::neg",
          "aten::index_select", "aten::view_as", "aten::reshape_as", "aten::flip", "aten::roll", "aten::squeeze_",
          "aten::detach", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
          "prim::TupleIndex", "aten::__getitem__", "prim::ConstantChunk", "aten::movedim", "aten::unflatten",
          "aten::pixel_shuffle", "aten::channel_shuffle", "aten::zero_pad2d", "candela::tap"})
      t[k] = {C::kStructural};
    return t;
  }();
  auto it = table.find(kind);
  return it == table.end() ? nullptr : &it->second;
}

const char* method_name(RuleMethod m) {
  switch (m) {
    case RuleMethod::kGuidedBackprop: return "guided_backprop";
    case RuleMethod::kDeconvolution: return "deconvolution";
    case RuleMethod::kDeepLift: return "deep_lift";
    case RuleMethod::kLrp: return "lrp";
  }
  return "";
}

std::string describe_node(const std::string& kind, const std::string& path, const std::string& type) {
  return str_cat(kind, path.empty() ? std::string(" in the top-level forward()") : str_cat(" at '", path, "'"),
                 type.empty() ? std::string() : str_cat(" (", type, ")"));
}

}  // namespace detail

namespace {
using detail::OpClass;
using detail::RuleSite;

bool glob_match(const char* p, const char* s) {
  for (; *p; ++p, ++s) {
    if (*p == '*') {
      for (const char* t = s;; ++t) {
        if (glob_match(p + 1, t)) return true;
        if (!*t) return false;
      }
    }
    if (!*s || (*p != '?' && *p != *s)) return false;
  }
  return !*s;
}

bool carries_tensors(const Value* v) {
  const auto& t = v->type();
  if (t->kind() == c10::TypeKind::TensorType) return true;
  if (t->kind() == c10::TypeKind::OptionalType || t->kind() == c10::TypeKind::ListType ||
      t->kind() == c10::TypeKind::TupleType) {
    for (const auto& c : t->containedTypes())
      if (c->kind() == c10::TypeKind::TensorType) return true;
  }
  return false;
}

c10::IValue constant_of(Value* v, const Node* node, RuleMethod m) {
  auto iv = torch::jit::toIValue(v);
  CANDELA_CHECK_T(UnsupportedModel, iv.has_value(), detail::method_name(m), ": ", node->kind().toQualString(), " at '",
                  detail::module_path(node), "' has a parameter computed at run time; ", detail::method_name(m),
                  " needs it constant.");
  return *iv;
}

std::vector<double> act_params(Node* node, int64_t kind, RuleMethod m) {
  auto num = [&](size_t i) { return constant_of(node->input(i), node, m).toScalar().toDouble(); };
  switch (kind) {
    case detail::kLeakyRelu: return {num(1)};
    case detail::kElu: return {num(1), num(2), num(3)};
    case detail::kSoftplus: return {num(1), num(2)};
    case detail::kHardtanh: return {num(1), num(2)};
    case detail::kGelu: {
      if (node->inputs().size() < 2) return {0.0};
      auto iv = constant_of(node->input(1), node, m);
      return {iv.isString() && iv.toStringRef() == "tanh" ? 1.0 : 0.0};
    }
    default: return {};
  }
}

std::string layer_type(const std::string& kind) { return kind == "aten::linear" ? "linear" : "conv"; }

}  // namespace

// ---- the passes ------------------------------------------------------------------------

namespace detail {

std::vector<RuleSite> find_data_path(Graph& g, const std::map<std::string, size_t>& order, const char* mname) {
  std::unordered_set<Value*> data = {g.inputs()[1]};
  auto on_path = [&](Value* v) { return data.count(v) > 0; };
  std::vector<RuleSite> sites;
  for (Node* node : g.nodes()) {
    bool reads = false;
    for (auto* v : node->inputs()) reads |= on_path(v);
    bool block_reads = false;
    for (auto* b : node->blocks())
      for (auto* n : b->nodes())
        for (auto* v : n->inputs()) block_reads |= on_path(v);
    const std::string kind = node->kind().toQualString();
    const std::string path = module_path(node), type = module_type(node);
    auto where = [&] { return describe_node(kind, path, type); };
    CANDELA_CHECK_T(UnsupportedModel, !block_reads, mname, ": the input flows through control flow (", where(),
                    "), which rule propagation does not follow. Trace the model (torch.jit.trace) so the branch "
                    "taken is fixed.");
    if (!reads) continue;
    for (auto* o : node->outputs())
      if (carries_tensors(o)) data.insert(o);
    bool tensor_in = false, tensor_out = false;
    for (auto* v : node->inputs()) tensor_in |= on_path(v) && carries_tensors(v);
    for (auto* v : node->outputs()) tensor_out |= carries_tensors(v);
    if (!tensor_in || !tensor_out) continue;  // x.size(0), x.dim(): no relevance flows there
    CANDELA_CHECK_T(UnsupportedModel, kind.empty() || kind.back() != '_' || kind == "aten::squeeze_", mname,
                    ": the in-place op ", where(), " could not be made functional, so its rule cannot be placed. "
                    "Write it out of place in the model (e.g. x = x + y, torch.relu(x)).");
    RuleSite s{node, kind, path, type};
    for (auto* v : node->inputs()) s.marked += on_path(v) && carries_tensors(v);
    const OpRow* row = find_op(kind);
    s.weights_on_path = row && row->cls == OpClass::kAffine && on_path(node->input(1));
    auto it = order.find(path);
    s.rank = it != order.end() && !path.empty() ? it->second : order.size() + sites.size();
    sites.push_back(std::move(s));
  }
  return sites;
}

void check_coverage(const std::vector<RuleSite>& sites, RuleMethod method) {
  if (method != RuleMethod::kDeepLift && method != RuleMethod::kLrp) return;
  const char* mname = method_name(method);
  for (const RuleSite& s : sites) {
    auto where = [&] { return describe_node(s.kind, s.path, s.type); };
    const OpRow* row = find_op(s.kind);
    const OpClass cls = row ? row->cls : OpClass::kStructural;
    if (row && cls == OpClass::kAffine) {
      CANDELA_CHECK_T(UnsupportedModel, !s.weights_on_path, mname, ": ", where(),
                      " has weights computed from the input; no rule covers that.");
      continue;
    }
    const bool product = row && (cls == OpClass::kScale || cls == OpClass::kMatmul);
    bool covered = false;
    if (row) {
      switch (cls) {
        case OpClass::kActivation:
        case OpClass::kAvgPool:
        case OpClass::kSum:
        case OpClass::kStructural:
        case OpClass::kBatchNorm: covered = true; break;
        // DeepLIFT has a rule for 2-d max pooling; LRP gives relevance to the maximum (the gradient).
        case OpClass::kMaxPool: covered = s.kind == "aten::max_pool2d" || method == RuleMethod::kLrp; break;
        case OpClass::kScale:
        case OpClass::kMatmul: covered = s.marked == 1; break;  // linear in the input
        case OpClass::kAffine: break;
      }
    }
    if (covered) continue;
    throw UnsupportedModel(str_cat(
        mname, " has no rule for ", where(),
        s.marked > 1 && product ? " (a product of two values computed from the input)" : "",
        ". Rule-based methods propagate only through layers with a defined rule (linear, convolution, "
        "activations, pooling, batch norm, additions and reshapes); use a gradient or perturbation method for "
        "this model."));
  }
}

std::vector<LrpRule> assign_rules(const std::vector<RuleSite>& sites, const Composite& composite) {
  // First affine layer of each type in module definition order (zennit's first-layer rules).
  std::map<std::string, size_t> first_rank;  // "conv"/"linear"/"affine" -> rank
  auto is_affine = [](const RuleSite& s) {
    const OpRow* row = find_op(s.kind);
    return row && row->cls == OpClass::kAffine;
  };
  for (const RuleSite& s : sites) {
    if (!is_affine(s)) continue;
    for (const std::string& t : {layer_type(s.kind), std::string("affine")})
      if (!first_rank.count(t) || s.rank < first_rank[t]) first_rank[t] = s.rank;
  }
  std::vector<LrpRule> rules(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const RuleSite& s = sites[i];
    if (!is_affine(s)) continue;
    const std::string t = layer_type(s.kind);
    const CompositeEntry* hit = nullptr;
    for (const auto& e : composite.entries) {
      if (e.type != "affine" && e.type != t) continue;
      if (!e.path.empty() && !glob_match(e.path.c_str(), s.path.c_str())) continue;
      if (e.first && s.rank != first_rank[e.type]) continue;
      hit = &e;
      break;
    }
    CANDELA_CHECK_T(UnsupportedModel, hit != nullptr, "lrp: the composite '", composite.name, "' has no rule for the ",
                    t, " layer ", s.kind, " at '", s.path, "'. Add an entry for it (e.g. {\"type\": \"", t,
                    "\", \"rule\": \"epsilon\"}).");
    const auto& infos = lrp_rules();
    const auto info = std::find_if(infos.begin(), infos.end(), [&](const auto& r) { return hit->rule.name == r.name; });
    CANDELA_CHECK_T(UnsupportedModel, info != infos.end() && info->for_layers, "lrp: the ", hit->rule.name,
                    " rule does not apply to the ", t, " layer '", s.path,
                    "' (its input and output differ in shape); use gradient or another rule.");
    rules[i] = hit->rule;
  }
  return rules;
}

}  // namespace detail

namespace {

// The rewrite pass: each site's node replaced by its rule op. A new op class gets its
// rewriter here and its dispatch in rewrite().
class Rewriter {
 public:
  Rewriter(Graph& g, const RuleSettings& settings, nlohmann::json& assignments)
      : g_(g), settings_(settings), method_(settings.method), assignments_(assignments) {}

  void rewrite(const std::vector<RuleSite>& sites, const std::vector<LrpRule>& rules) {
    const bool lrp = method_ == RuleMethod::kLrp, deeplift = method_ == RuleMethod::kDeepLift;
    for (size_t i = 0; i < sites.size(); ++i) {
      const RuleSite& s = sites[i];
      if (fused_.count(s.node)) continue;
      const detail::OpRow* row = detail::find_op(s.kind);
      if (!row) continue;
      torch::jit::WithInsertPoint guard(s.node);
      switch (row->cls) {
        case OpClass::kAffine: affine(s, lrp ? rules[i] : LrpRule::named("gradient", {})); break;
        case OpClass::kActivation:
          if (lrp) pass(s);  // zennit's Pass: relevance goes through activations unchanged
          else if (deeplift || row->activation == detail::kRelu) activation(s, row->activation);  // Captum: ReLUs
          break;
        case OpClass::kMaxPool:
          if (deeplift && s.kind == "aten::max_pool2d") max_pool(s);
          break;
        case OpClass::kBatchNorm:
          if (lrp) pass(s);
          break;
        // (The data-path set holds the values before rewriting; `marked` was counted then.)
        case OpClass::kAvgPool:
          if (lrp) norm(s, 1);
          break;
        case OpClass::kSum:
          if (lrp && s.marked == 2) norm(s, 2);
          break;
        case OpClass::kScale:
        case OpClass::kMatmul:
        case OpClass::kStructural: break;  // linear: the gradient is the rule
      }
    }
  }

 private:
  static c10::Symbol sym(const char* name) { return c10::Symbol::fromQualString(name); }
  void record(const RuleSite& s, const std::string& rule) {
    assignments_.push_back({{"path", s.path}, {"type", s.type}, {"op", s.kind}, {"rule", rule}});
  }
  void replace(Node* node, Value* out) {
    out->setType(node->output()->type());
    node->output()->replaceAllUsesWith(out);
    node->destroy();
  }

  // Pass: the node's value, its input's relevance passed on unchanged.
  void pass(const RuleSite& s) {
    Node* node = s.node;
    torch::jit::WithInsertPoint after(node->next());
    Value* out = g_.insert(sym("candela::rule_pass"), {node->input(0), node->output()});
    out->setType(node->output()->type());
    node->output()->replaceAllUsesAfterNodeWith(out->node(), out);
    record(s, "pass");
  }

  // Guided backprop, deconvnet and DeepLIFT's rescale.
  void activation(const RuleSite& s, int64_t kind) {
    Node* node = s.node;
    const int64_t mode = method_ == RuleMethod::kGuidedBackprop ? detail::kGuided
                         : method_ == RuleMethod::kDeconvolution ? detail::kDeconv
                                                                 : detail::kRescale;
    replace(node, g_.insert(sym("candela::rule_act"),
                            {node->input(0), g_.insertConstant(kind), g_.insertConstant(act_params(node, kind, method_)),
                             g_.insertConstant(mode), g_.insertConstant(settings_.deeplift_eps)}));
    record(s, method_ == RuleMethod::kDeepLift ? "rescale" : method_ == RuleMethod::kGuidedBackprop ? "guided" : "deconv");
  }

  // DeepLIFT's max-pool rule.
  void max_pool(const RuleSite& s) {
    Node* node = s.node;
    replace(node, g_.insert(sym("candela::rule_maxpool"),
                            {node->input(0), node->input(1), node->input(2), node->input(3), node->input(4),
                             node->input(5), g_.insertConstant(settings_.deeplift_eps)}));
    record(s, "maxpool");
  }

  // zennit's Norm rule around a parameter-free linear op: R_in = x * J^T (R / stab(f(x))).
  void norm(const RuleSite& s, size_t operands) {
    Node* node = s.node;
    const auto& entries = settings_.composite.entries;
    const double eps = entries.empty() ? 1e-6 : entries.front().rule.stabilizer;
    for (size_t o = 0; o < operands; ++o) {
      Value* in = g_.insert(sym("candela::rule_in"), {node->input(o)});
      in->setType(node->input(o)->type());
      node->replaceInput(o, in);
    }
    torch::jit::WithInsertPoint after(node->next());
    Value* out = g_.insert(sym("candela::rule_out"), {node->output(), g_.insertConstant(eps)});
    out->setType(node->output()->type());
    node->output()->replaceAllUsesAfterNodeWith(out->node(), out);
    record(s, "norm");
  }

  // Linear and convolution layers: LRP's rule; the others use the plain map, but through the
  // rule op, whose transposed convolution avoids LibTorch's slow input-only conv backward.
  void affine(const RuleSite& s, const LrpRule& rule) {
    Graph& g = g_;
    Node* node = s.node;
    const std::string& k = s.kind;
    const char* mname = detail::method_name(method_);
    const int64_t code = detail::affine_rule_code(rule.name);
    const double eps = rule.name == "epsilon" ? rule.epsilon : rule.stabilizer;
    const std::vector<double> p = {eps, rule.gamma, rule.alpha, rule.beta, rule.zero_bias ? 1.0 : 0.0};
    auto none = [&] { return g.insertConstant(c10::IValue()); };
    auto ints = [&](std::vector<int64_t> v) { return g.insertConstant(v); };
    Value *x = node->input(0), *w = node->input(1), *b = node->input(2);
    Value *stride, *padding, *dilation, *transposed, *out_pad, *groups;
    const bool conv = k != "aten::linear";
    if (!conv) {
      stride = padding = dilation = out_pad = ints({});
      transposed = g.insertConstant(false);
      groups = g.insertConstant(int64_t{1});
    } else if (k == "aten::_convolution") {
      stride = node->input(3), padding = node->input(4), dilation = node->input(5), transposed = node->input(6);
      out_pad = node->input(7), groups = node->input(8);
    } else if (k.rfind("aten::conv_transpose", 0) == 0) {
      stride = node->input(3), padding = node->input(4), out_pad = node->input(5), groups = node->input(6);
      dilation = node->input(7), transposed = g.insertConstant(true);
    } else {
      stride = node->input(3), padding = node->input(4), dilation = node->input(5), groups = node->input(6);
      transposed = g.insertConstant(false), out_pad = ints({});
      auto pad = torch::jit::toIValue(padding);
      if (pad && pad->isString()) {
        const std::string mode = pad->toStringRef();
        auto wt = torch::jit::toIValue(w);
        CANDELA_CHECK_T(UnsupportedModel, mode == "valid" || (mode == "same" && wt && wt->isTensor()), mname,
                        ": padding='", mode, "' at '", s.path, "' is not supported.");
        std::vector<int64_t> pv;
        if (mode == "same") {
          const at::Tensor wten = wt->toTensor();
          auto dil = torch::jit::toIValue(dilation)->toIntVector();
          for (int64_t d = 2; d < wten.dim(); ++d) {
            const int64_t dl = dil.size() == 1 ? dil[0] : dil[d - 2];
            const int64_t total = dl * (wten.size(d) - 1);
            CANDELA_CHECK_T(UnsupportedModel, total % 2 == 0, mname, ": padding='same' with an even kernel at '",
                            s.path, "' pads asymmetrically, which is not supported.");
            pv.push_back(total / 2);
          }
        } else {
          auto wten = torch::jit::toIValue(w);
          pv.assign(wten && wten->isTensor() ? wten->toTensor().dim() - 2 : 1, 0);
        }
        padding = ints(pv);
      }
    }
    // RevealCancel: a layer whose only use is an activation becomes one op with it.
    Node* act = node->output()->uses().size() == 1 ? node->output()->uses()[0].user : nullptr;
    const detail::OpRow* act_row = act ? detail::find_op(act->kind().toQualString()) : nullptr;
    if (method_ == RuleMethod::kDeepLift && settings_.reveal_cancel && act && act->owningBlock() == g.block() &&
        act_row && act_row->cls == OpClass::kActivation && act->input(0) == node->output()) {
      const int64_t kind = act_row->activation;
      Value* out;
      {
        torch::jit::WithInsertPoint at_act(act);
        out = g.insert(sym("candela::rule_affine_act"),
                       {x, w, b, g.insertConstant(conv), stride, padding, dilation, transposed, out_pad, groups,
                        g.insertConstant(kind), g.insertConstant(act_params(act, kind, method_)),
                        g.insertConstant(settings_.deeplift_eps)});
      }
      out->setType(act->output()->type());
      act->output()->replaceAllUsesWith(out);
      fused_.insert(act);
      act->destroy();
      node->destroy();
      record(s, "reveal_cancel");
      return;
    }
    Value *low = none(), *high = none();
    if (code == detail::kRuleZBox) {
      low = g.insertConstant(at::tensor(rule.low, at::kDouble));
      high = g.insertConstant(at::tensor(rule.high, at::kDouble));
    }
    Value* out = g.insert(sym("candela::rule_affine"),
                          {x, w, b, g.insertConstant(conv), stride, padding, dilation, transposed, out_pad, groups,
                           g.insertConstant(code), g.insertConstant(p), low, high});
    replace(node, out);
    record(s, method_ == RuleMethod::kLrp ? rule.name : "gradient");
  }

  Graph& g_;
  const RuleSettings& settings_;
  const RuleMethod method_;
  nlohmann::json& assignments_;
  std::unordered_set<Node*> fused_;  // activations merged into the layer before them (RevealCancel)
};

}  // namespace

struct RuleGraph::Impl {
  torch::jit::Module frozen;
  std::shared_ptr<Graph> graph;
  std::unique_ptr<torch::jit::GraphFunction> fn;
  bool token_ids = false;  // see detail::model_input
  nlohmann::json assignments = nlohmann::json::array();
};

RuleGraph::RuleGraph(const RuleGraph& compiled, const Model& model)
    : impl_(compiled.impl_), args_(model.forward_args()) {}

RuleGraph::RuleGraph(const Model& model, RuleSettings settings) : args_(model.forward_args()) {
  auto impl = std::make_shared<Impl>();
  impl_ = impl;
  detail::register_rule_ops();
  const RuleMethod method = settings.method;
  const char* mname = detail::method_name(method);
  CANDELA_CHECK_T(UnsupportedModel, model.module() != nullptr, mname,
                  " rewrites the model's graph: it needs a TorchScript model, not a plain function.");
  impl->token_ids = model.input_spec().layout == "NL";
  torch::jit::Module copy = model.module()->clone();
  copy.eval();
  try {
    impl->frozen = torch::jit::freeze_module(copy);
  } catch (const std::exception& e) {
    throw UnsupportedModel(str_cat(mname, ": the model could not be frozen for rule propagation (",
                                   detail::torch_message(e), ")."));
  }
  auto graph = impl->frozen.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  detail::specialise_forward_args(graph, model);
  torch::jit::RemoveTensorMutation(graph);
  if (method == RuleMethod::kLrp || settings.reveal_cancel) torch::jit::FoldFrozenConvBatchnorm(graph);
  torch::jit::EliminateDeadCode(graph);
  CANDELA_ASSERT(graph->inputs().size() == 2 + args_.size(), mname, ": the specialised forward graph takes ",
                 graph->inputs().size() - 1, " inputs, not the input and ", args_.size(), " forward arguments.");

  if (!settings.tap_layer.empty()) detail::insert_tap(*graph, settings.tap_layer, 0);

  // Module definition order, for the first-layer entries of composites.
  std::map<std::string, size_t> order;
  for (const auto& item : model.module()->named_modules()) order.emplace(item.name, order.size());

  const std::vector<RuleSite> sites = detail::find_data_path(*graph, order, mname);
  detail::check_coverage(sites, method);  // before anything is rewritten
  const std::vector<LrpRule> rules =
      method == RuleMethod::kLrp ? detail::assign_rules(sites, settings.composite) : std::vector<LrpRule>();
  Rewriter(*graph, settings, impl->assignments).rewrite(sites, rules);
  torch::jit::EliminateDeadCode(graph);
  impl->graph = graph;
  if (std::getenv("CANDELA_DUMP_RULE_GRAPH")) std::fprintf(stderr, "%s\n", graph->toString().c_str());
  impl->fn = std::make_unique<torch::jit::GraphFunction>("candela_rules", impl->graph, nullptr);
}

RuleGraph::~RuleGraph() = default;

std::shared_ptr<const RuleGraph> RuleGraph::of(const Model& model, const RuleSettings& settings) {
  auto compiled = std::static_pointer_cast<const RuleGraph>(model.cached(settings.key(), [&] {
    return std::static_pointer_cast<void>(std::make_shared<RuleGraph>(model, settings));
  }));
  if (model.forward_args().empty() && compiled->args_.empty()) return compiled;
  return std::shared_ptr<const RuleGraph>(new RuleGraph(*compiled, model));
}

at::Tensor RuleGraph::forward(const at::Tensor& x) const {
  c10::IValue result;
  try {
    std::vector<c10::IValue> in = {impl_->frozen._ivalue(), detail::model_input(x, impl_->token_ids)};
    for (auto& v : detail::given_forward_args(args_, x.size(0), x.device())) in.push_back(std::move(v));
    result = (*impl_->fn)(std::move(in));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ShapeMismatch(str_cat("the model failed on an input of shape ", detail::shape_str(x.sizes()), ": ",
                                detail::torch_message(e), "."));
  }
  CANDELA_CHECK_T(UnsupportedModel, result.isTensor(), "the model returned a ", result.tagKind(),
                  ", not a tensor. Candela explains one output tensor.");
  return result.toTensor();
}

std::pair<at::Tensor, at::Tensor> RuleGraph::forward_tapped(const at::Tensor& x) const {
  at::Tensor out;
  std::vector<at::Tensor> recorded = detail::record_taps(1, [&] { out = forward(x); });
  CANDELA_ASSERT(recorded[0].defined(), "the rule graph's tap recorded nothing: was it built with tap_layer?");
  return {out, recorded[0]};
}

const nlohmann::json& RuleGraph::assignments() const { return impl_->assignments; }

}  // namespace candela
