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

namespace candela {
using detail::str_cat;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// ---- rules and composites ------------------------------------------------------------

const std::vector<std::string>& LrpRule::names() {
  static const std::vector<std::string> n = {"epsilon", "zero",     "gamma",    "alpha_beta", "z_plus",
                                             "flat",    "w_square", "z_box",    "pass",       "gradient"};
  return n;
}

void LrpRule::validate() const {
  const auto& n = names();
  CANDELA_CHECK(std::find(n.begin(), n.end(), name) != n.end(), "unknown LRP rule '", name, "'.", did_you_mean(name, n),
                " Rules: epsilon, zero, gamma, alpha_beta, z_plus, flat, w_square, z_box, pass, gradient.");
  CANDELA_CHECK(std::isfinite(epsilon) && epsilon >= 0, "epsilon must be >= 0, got ", epsilon, ".");
  CANDELA_CHECK(std::isfinite(stabilizer) && stabilizer >= 0, "stabilizer must be >= 0, got ", stabilizer, ".");
  CANDELA_CHECK(std::isfinite(gamma) && gamma >= 0, "gamma must be >= 0, got ", gamma, ".");
  if (name == "alpha_beta")
    CANDELA_CHECK(alpha >= 0 && beta >= 0 && std::abs(alpha - beta - 1.0) < 1e-12,
                  "the alpha-beta rule needs alpha - beta = 1 with both >= 0 (conservation), got alpha ", alpha,
                  ", beta ", beta, ".");
  if (name == "z_box") {
    CANDELA_CHECK(!low.empty() && low.size() == high.size(),
                  "the z_box rule needs bounds: give low and high (one value, or one per input channel), or an input "
                  "spec with a range (and mean/std) to derive them from.");
    for (size_t i = 0; i < low.size(); ++i)
      CANDELA_CHECK(std::isfinite(low[i]) && std::isfinite(high[i]) && low[i] <= high[i],
                    "z_box bounds need low <= high, got low ", low[i], ", high ", high[i], ".");
  }
}

const std::vector<std::string>& Composite::builtin_names() {
  static const std::vector<std::string> n = {"epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                                             "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat"};
  return n;
}

namespace {
LrpRule with_name(LrpRule r, const std::string& name) {
  r.name = name;
  if (name == "z_plus") r.alpha = 1.0, r.beta = 0.0, r.name = "alpha_beta";
  return r;
}
CompositeEntry entry(const std::string& type, const LrpRule& rule, bool first = false) {
  CompositeEntry e;
  e.type = type;
  e.rule = rule;
  e.first = first;
  return e;
}
}  // namespace

Composite Composite::builtin(const std::string& name, const LrpRule& d) {
  Composite c;
  c.name = name;
  LrpRule ab = with_name(d, "alpha_beta");
  ab.alpha = 2.0, ab.beta = 1.0;
  const LrpRule eps = with_name(d, "epsilon"), plus = with_name(d, "z_plus"), flat = with_name(d, "flat");
  if (name == "epsilon_plus") {
    c.entries = {entry("conv", plus), entry("linear", eps)};
  } else if (name == "epsilon_plus_flat") {
    c.entries = {entry("affine", flat, true), entry("conv", plus), entry("linear", eps)};
  } else if (name == "epsilon_alpha2_beta1") {
    c.entries = {entry("conv", ab), entry("linear", eps)};
  } else if (name == "epsilon_alpha2_beta1_flat") {
    c.entries = {entry("affine", flat, true), entry("conv", ab), entry("linear", eps)};
  } else if (name == "epsilon_gamma_box") {
    c.entries = {entry("conv", with_name(d, "z_box"), true), entry("conv", with_name(d, "gamma")), entry("linear", eps)};
  } else {
    throw InvalidArgument(str_cat("unknown composite '", name, "'.", did_you_mean(name, builtin_names()),
                                  " Composites: epsilon_plus, epsilon_plus_flat, epsilon_gamma_box, "
                                  "epsilon_alpha2_beta1, epsilon_alpha2_beta1_flat, or a JSON file."));
  }
  return c;
}

Composite Composite::uniform(const LrpRule& rule) {
  Composite c;
  c.name = "uniform:" + rule.name;
  c.entries = {entry("affine", with_name(rule, rule.name))};
  return c;
}

Composite Composite::from_json(const nlohmann::json& j, const LrpRule& defaults, const std::string& source) {
  CANDELA_CHECK_T(ParseError, j.is_object() && j.contains("rules") && j["rules"].is_array(), source,
                  ": a composite is {\"name\": ..., \"rules\": [{\"type\": \"conv\", \"rule\": \"gamma\"}, ...]}.");
  CANDELA_CHECK_T(ParseError, !j.contains("name") || j["name"].is_string(), source,
                  ": the composite's \"name\" must be a string, got ", j.contains("name") ? j["name"].dump() : "", ".");
  Composite c;
  c.name = j.value("name", source);
  static const std::set<std::string> keys = {"type", "path", "first", "rule", "epsilon", "stabilizer", "gamma",
                                             "alpha", "beta", "zero_bias", "low", "high"};
  for (const auto& e : j["rules"]) {
    CANDELA_CHECK_T(ParseError, e.is_object(), source, ": each entry of \"rules\" is an object.");
    for (const auto& [k, v] : e.items())
      CANDELA_CHECK_T(ParseError, keys.count(k), source, ": unknown key '", k, "' in a composite entry.",
                      did_you_mean(k, std::vector<std::string>(keys.begin(), keys.end())));
    CANDELA_CHECK_T(ParseError, e.contains("rule") && e["rule"].is_string(), source, ": every entry needs \"rule\".");
    try {
      CompositeEntry ce;
      ce.type = e.value("type", std::string("affine"));
      CANDELA_CHECK(ce.type == "conv" || ce.type == "linear" || ce.type == "affine", "type must be conv, linear or "
                    "affine, got '", ce.type, "'.");
      ce.path = e.value("path", std::string());
      ce.first = e.value("first", false);
      ce.rule = with_name(defaults, e["rule"].get<std::string>());
      ce.rule.epsilon = e.value("epsilon", ce.rule.epsilon);
      ce.rule.stabilizer = e.value("stabilizer", ce.rule.stabilizer);
      ce.rule.gamma = e.value("gamma", ce.rule.gamma);
      ce.rule.alpha = e.value("alpha", ce.rule.alpha);
      ce.rule.beta = e.value("beta", ce.rule.beta);
      ce.rule.zero_bias = e.value("zero_bias", ce.rule.zero_bias);
      auto bounds = [&](const char* key, std::vector<double>& out) {
        if (!e.contains(key)) return;
        out = e[key].is_array() ? e[key].get<std::vector<double>>() : std::vector<double>{e[key].get<double>()};
      };
      bounds("low", ce.rule.low);
      bounds("high", ce.rule.high);
      ce.rule.validate();
      c.entries.push_back(ce);
    } catch (const nlohmann::json::exception& ex) {
      throw ParseError(str_cat(source, ": a composite entry has a value of the wrong type (", ex.what(), ")."));
    } catch (const InvalidArgument& ex) {
      throw InvalidArgument(str_cat(source, ": ", ex.what()));
    }
  }
  CANDELA_CHECK(!c.entries.empty(), source, ": the composite has no rules.");
  return c;
}

nlohmann::json Composite::to_json() const {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json r = {{"type", e.type}, {"rule", e.rule.name}};
    if (!e.path.empty()) r["path"] = e.path;
    if (e.first) r["first"] = true;
    if (e.rule.name == "epsilon") r["epsilon"] = e.rule.epsilon;
    if (e.rule.name != "epsilon" && e.rule.name != "pass" && e.rule.name != "gradient") r["stabilizer"] = e.rule.stabilizer;
    if (e.rule.name == "gamma") r["gamma"] = e.rule.gamma;
    if (e.rule.name == "alpha_beta") r["alpha"] = e.rule.alpha, r["beta"] = e.rule.beta;
    if (e.rule.name == "z_box") r["low"] = e.rule.low, r["high"] = e.rule.high;
    if (e.rule.zero_bias) r["zero_bias"] = true;
    rules.push_back(r);
  }
  return {{"name", name}, {"rules", rules}};
}

Composite resolve_composite(const std::string& name_or_file, const LrpRule& defaults, bool check_only) {
  const auto& names = Composite::builtin_names();
  if (std::find(names.begin(), names.end(), name_or_file) != names.end())
    return Composite::builtin(name_or_file, defaults);
  const bool looks_like_file = name_or_file.find('/') != std::string::npos ||
                               (name_or_file.size() > 5 && name_or_file.substr(name_or_file.size() - 5) == ".json");
  if (!looks_like_file) return Composite::builtin(name_or_file, defaults);  // unknown name: its error
  if (check_only) return {};
  const std::string text = read_file(name_or_file, 1 << 20);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat(name_or_file, ": not valid JSON (", e.what(), ")."));
  }
  return Composite::from_json(j, defaults, name_or_file);
}

std::string RuleSettings::key() const {
  return str_cat("rules:", static_cast<int>(method), ":", deeplift_eps, ":", reveal_cancel, ":",
                 composite.to_json().dump());
}

// ---- the graph -------------------------------------------------------------------------

namespace {

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

const std::map<std::string, int64_t>& activation_kinds() {
  static const std::map<std::string, int64_t> k = {
      {"aten::relu", detail::kRelu},       {"aten::leaky_relu", detail::kLeakyRelu},
      {"aten::elu", detail::kElu},         {"aten::sigmoid", detail::kSigmoid},
      {"aten::tanh", detail::kTanh},       {"aten::softplus", detail::kSoftplus},
      {"aten::gelu", detail::kGelu},       {"aten::silu", detail::kSilu},
      {"aten::hardtanh", detail::kHardtanh}};
  return k;
}

// Ops that move, copy or linearly combine values without parameters of their own: their
// gradient is every rule's answer (relevance routed unchanged, or split evenly for sums).
const std::set<std::string>& structural_ops() {
  static const std::set<std::string> s = {
      "aten::view", "aten::reshape", "aten::flatten", "aten::squeeze", "aten::unsqueeze", "aten::permute",
      "aten::transpose", "aten::t", "aten::contiguous", "aten::clone", "aten::cat", "aten::stack", "aten::slice",
      "aten::select", "aten::narrow", "aten::chunk", "aten::split", "aten::unbind", "aten::expand", "aten::expand_as",
      "aten::repeat", "aten::to", "aten::type_as", "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
      "aten::feature_alpha_dropout", "aten::constant_pad_nd", "aten::pad", "aten::upsample_nearest1d",
      "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::upsample_bilinear2d", "aten::upsample_linear1d",
      "aten::mean", "aten::sum", "aten::neg", "aten::index_select", "aten::view_as", "aten::reshape_as",
      "aten::flip", "aten::roll", "aten::squeeze_", "aten::detach", "prim::ListConstruct", "prim::ListUnpack",
      "prim::TupleConstruct", "prim::TupleUnpack", "prim::TupleIndex", "aten::__getitem__", "prim::ConstantChunk",
      "aten::movedim", "aten::unflatten", "aten::pixel_shuffle", "aten::channel_shuffle", "aten::zero_pad2d"};
  return s;
}

bool is_affine(const std::string& k) {
  return k == "aten::linear" || k == "aten::_convolution" || k == "aten::conv1d" || k == "aten::conv2d" ||
         k == "aten::conv3d" || k == "aten::conv_transpose1d" || k == "aten::conv_transpose2d" ||
         k == "aten::conv_transpose3d";
}
bool is_avg_pool(const std::string& k) {
  return k == "aten::avg_pool1d" || k == "aten::avg_pool2d" || k == "aten::avg_pool3d" ||
         k == "aten::adaptive_avg_pool1d" || k == "aten::adaptive_avg_pool2d" || k == "aten::adaptive_avg_pool3d";
}
bool is_max_pool(const std::string& k) {
  return k == "aten::max_pool1d" || k == "aten::max_pool2d" || k == "aten::max_pool3d" ||
         k == "aten::adaptive_max_pool1d" || k == "aten::adaptive_max_pool2d" || k == "aten::adaptive_max_pool3d";
}
bool is_sum(const std::string& k) { return k == "aten::add" || k == "aten::sub"; }
bool is_scale(const std::string& k) { return k == "aten::mul" || k == "aten::div"; }
bool is_matmul(const std::string& k) {
  return k == "aten::matmul" || k == "aten::mm" || k == "aten::bmm" || k == "aten::addmm" || k == "aten::einsum";
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

// "aten::layer_norm at 'encoder.norm' (LayerNorm)", for error messages.
std::string describe_node(const std::string& kind, const std::string& path, const std::string& type) {
  return str_cat(kind, path.empty() ? std::string(" in the top-level forward()") : str_cat(" at '", path, "'"),
                 type.empty() ? std::string() : str_cat(" (", type, ")"));
}

c10::IValue constant_of(Value* v, const Node* node, RuleMethod m) {
  auto iv = torch::jit::toIValue(v);
  CANDELA_CHECK_T(UnsupportedModel, iv.has_value(), method_name(m), ": ", node->kind().toQualString(), " at '",
                  detail::module_path(node), "' has a parameter computed at run time; ", method_name(m),
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

}  // namespace

struct RuleGraph::Impl {
  torch::jit::Module frozen;
  std::shared_ptr<Graph> graph;
  std::unique_ptr<torch::jit::GraphFunction> fn;
  nlohmann::json assignments = nlohmann::json::array();
};

RuleGraph::RuleGraph(const Model& model, RuleSettings settings) : impl_(std::make_unique<Impl>()) {
  detail::register_rule_ops();
  const RuleMethod method = settings.method;
  const char* mname = method_name(method);
  CANDELA_CHECK_T(UnsupportedModel, model.module() != nullptr, mname,
                  " rewrites the model's graph: it needs a TorchScript model, not a plain function.");
  torch::jit::Module copy = model.module()->clone();
  copy.eval();
  try {
    impl_->frozen = torch::jit::freeze_module(copy);
  } catch (const std::exception& e) {
    throw UnsupportedModel(str_cat(mname, ": the model could not be frozen for rule propagation (",
                                   detail::torch_message(e), ")."));
  }
  auto graph = impl_->frozen.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  torch::jit::RemoveTensorMutation(graph);
  if (method == RuleMethod::kLrp || settings.reveal_cancel) torch::jit::FoldFrozenConvBatchnorm(graph);
  torch::jit::EliminateDeadCode(graph);
  Graph& g = *graph;
  CANDELA_CHECK_T(UnsupportedModel, g.inputs().size() == 2, mname, ": forward() must take one input tensor, it takes ",
                  g.inputs().size() - 1, ".");

  // Module definition order, for the first-layer entries of composites.
  std::map<std::string, size_t> order;
  for (const auto& item : model.module()->named_modules()) order.emplace(item.name, order.size());

  // The data path: every value computed from the input.
  std::unordered_set<Value*> data = {g.inputs()[1]};
  auto on_path = [&](Value* v) { return data.count(v) > 0; };
  struct Site {
    Node* node;
    std::string kind, path, type;
    int marked;  // inputs on the data path that carry tensors
  };
  std::vector<Site> sites;
  for (Node* node : g.nodes()) {
    bool reads = false;
    for (auto* v : node->inputs()) reads |= on_path(v);
    bool block_reads = false;
    for (auto* b : node->blocks())
      for (auto* n : b->nodes())
        for (auto* v : n->inputs()) block_reads |= on_path(v);
    const std::string kind = node->kind().toQualString();
    const std::string path = detail::module_path(node), type = detail::module_type(node);
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
    int marked = 0;
    for (auto* v : node->inputs()) marked += on_path(v) && carries_tensors(v);
    sites.push_back({node, kind, path, type, marked});
  }

  // The coverage check, before anything is rewritten.
  const bool strict = method == RuleMethod::kDeepLift || method == RuleMethod::kLrp;
  for (const Site& s : sites) {
    auto where = [&] { return describe_node(s.kind, s.path, s.type); };
    if (!strict) continue;
    const std::string& k = s.kind;
    const int marked = s.marked;
    if (is_affine(k)) {
      CANDELA_CHECK_T(UnsupportedModel, !on_path(s.node->input(1)), mname, ": ", where(),
                      " has weights computed from the input; no rule covers that.");
      continue;
    }
    if (activation_kinds().count(k) || is_avg_pool(k) || is_sum(k) || structural_ops().count(k) ||
        k == "aten::batch_norm")
      continue;
    if (k == "aten::max_pool2d") continue;
    if (is_max_pool(k) && method == RuleMethod::kLrp) continue;  // winner takes all: the gradient
    if ((is_scale(k) || is_matmul(k)) && marked == 1) continue;   // linear in the input
    throw UnsupportedModel(str_cat(
        mname, " has no rule for ", where(),
        marked > 1 && (is_scale(k) || is_matmul(k)) ? " (a product of two values computed from the input)" : "",
        ". Rule-based methods propagate only through layers with a defined rule (linear, convolution, "
        "activations, pooling, batch norm, additions and reshapes); use a gradient or perturbation method for "
        "this model."));
  }

  // First affine layer of each type in module definition order (zennit's first-layer rules).
  std::map<std::string, size_t> first_rank;  // "conv"/"linear"/"affine" -> rank
  auto layer_type = [](const std::string& k) { return k == "aten::linear" ? "linear" : "conv"; };
  auto rank_of = [&](const Site& s, size_t index) {
    auto it = order.find(s.path);
    return it != order.end() && !s.path.empty() ? it->second : order.size() + index;
  };
  for (size_t i = 0; i < sites.size(); ++i) {
    if (!is_affine(sites[i].kind)) continue;
    const size_t r = rank_of(sites[i], i);
    for (const std::string& t : {std::string(layer_type(sites[i].kind)), std::string("affine")})
      if (!first_rank.count(t) || r < first_rank[t]) first_rank[t] = r;
  }

  auto sym = [](const char* name) { return c10::Symbol::fromQualString(name); };
  auto record = [&](const Site& s, const std::string& rule) {
    impl_->assignments.push_back({{"path", s.path}, {"type", s.type}, {"op", s.kind}, {"rule", rule}});
  };

  // Pass: the node's value, its input's relevance passed on unchanged.
  auto insert_pass = [&](const Site& s) {
    Node* node = s.node;
    torch::jit::WithInsertPoint after(node->next());
    Value* out = g.insert(sym("candela::rule_pass"), {node->input(0), node->output()});
    out->setType(node->output()->type());
    node->output()->replaceAllUsesAfterNodeWith(out->node(), out);
    record(s, "pass");
  };
  std::unordered_set<Node*> fused;  // activations merged into the layer before them (RevealCancel)
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site& s = sites[i];
    if (fused.count(s.node)) continue;
    Node* node = s.node;
    const std::string& k = s.kind;
    torch::jit::WithInsertPoint guard(node);
    if (is_affine(k)) {
      // The rule: LRP's from the composite; the others use the plain map (but through the
      // rule op, whose transposed convolution avoids LibTorch's slow input-only conv backward).
      LrpRule rule;
      rule.name = "gradient";
      std::string matched = "gradient";
      if (method == RuleMethod::kLrp) {
        const std::string t = layer_type(k);
        const CompositeEntry* hit = nullptr;
        for (const auto& e : settings.composite.entries) {
          if (e.type != "affine" && e.type != t) continue;
          if (!e.path.empty() && !glob_match(e.path.c_str(), s.path.c_str())) continue;
          if (e.first && rank_of(s, i) != first_rank[e.type]) continue;
          hit = &e;
          break;
        }
        CANDELA_CHECK_T(UnsupportedModel, hit != nullptr, "lrp: the composite '", settings.composite.name,
                        "' has no rule for the ", t, " layer ", k, " at '", s.path,
                        "'. Add an entry for it (e.g. {\"type\": \"", t, "\", \"rule\": \"epsilon\"}).");
        rule = hit->rule;
        matched = rule.name;
      }
      if (rule.name == "pass") {
        CANDELA_CHECK_T(UnsupportedModel, false, "lrp: the pass rule does not apply to the ", layer_type(k), " layer '",
                        s.path, "' (its input and output differ in shape); use gradient or another rule.");
      }
      int64_t code = detail::kRuleGradient;
      double eps = rule.stabilizer;
      if (rule.name == "epsilon") code = detail::kRuleEpsilon, eps = rule.epsilon;
      if (rule.name == "zero") code = detail::kRuleZero;
      if (rule.name == "alpha_beta") code = detail::kRuleAlphaBeta;
      if (rule.name == "gamma") code = detail::kRuleGamma;
      if (rule.name == "z_box") code = detail::kRuleZBox;
      if (rule.name == "w_square") code = detail::kRuleWSquare;
      if (rule.name == "flat") code = detail::kRuleFlat;
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
      if (method == RuleMethod::kDeepLift && settings.reveal_cancel && act && act->owningBlock() == g.block() &&
          activation_kinds().count(act->kind().toQualString()) && act->input(0) == node->output()) {
        const int64_t kind = activation_kinds().at(act->kind().toQualString());
        Value* out;
        {
          torch::jit::WithInsertPoint at_act(act);
          out = g.insert(sym("candela::rule_affine_act"),
                         {x, w, b, g.insertConstant(conv), stride, padding, dilation, transposed, out_pad, groups,
                          g.insertConstant(kind), g.insertConstant(act_params(act, kind, method)),
                          g.insertConstant(settings.deeplift_eps)});
        }
        out->setType(act->output()->type());
        act->output()->replaceAllUsesWith(out);
        fused.insert(act);
        act->destroy();
        node->destroy();
        record(s, "reveal_cancel");
        continue;
      }
      Value *low = none(), *high = none();
      if (code == detail::kRuleZBox) {
        low = g.insertConstant(at::tensor(rule.low, at::kDouble));
        high = g.insertConstant(at::tensor(rule.high, at::kDouble));
      }
      Value* out = g.insert(sym("candela::rule_affine"),
                            {x, w, b, g.insertConstant(conv), stride, padding, dilation, transposed, out_pad, groups,
                             g.insertConstant(code), g.insertConstant(p), low, high});
      out->setType(node->output()->type());
      node->output()->replaceAllUsesWith(out);
      node->destroy();
      record(s, matched);
      continue;
    }
    if (activation_kinds().count(k)) {
      const int64_t kind = activation_kinds().at(k);
      if (method == RuleMethod::kLrp) {
        insert_pass(s);  // zennit's Pass: relevance goes through activations unchanged
        continue;
      }
      if (method != RuleMethod::kDeepLift && kind != detail::kRelu) continue;  // Captum: ReLUs only
      const int64_t mode = method == RuleMethod::kGuidedBackprop ? detail::kGuided
                           : method == RuleMethod::kDeconvolution ? detail::kDeconv
                                                                  : detail::kRescale;
      Value* out = g.insert(sym("candela::rule_act"), {node->input(0), g.insertConstant(kind),
                                                       g.insertConstant(act_params(node, kind, method)),
                                                       g.insertConstant(mode), g.insertConstant(settings.deeplift_eps)});
      out->setType(node->output()->type());
      node->output()->replaceAllUsesWith(out);
      node->destroy();
      record(s, method == RuleMethod::kDeepLift ? "rescale" : method == RuleMethod::kGuidedBackprop ? "guided" : "deconv");
      continue;
    }
    if (k == "aten::max_pool2d" && method == RuleMethod::kDeepLift) {
      Value* out = g.insert(sym("candela::rule_maxpool"),
                            {node->input(0), node->input(1), node->input(2), node->input(3), node->input(4),
                             node->input(5), g.insertConstant(settings.deeplift_eps)});
      out->setType(node->output()->type());
      node->output()->replaceAllUsesWith(out);
      node->destroy();
      record(s, "maxpool");
      continue;
    }
    if (method != RuleMethod::kLrp) continue;
    if (k == "aten::batch_norm") {
      insert_pass(s);
      continue;
    }
    // (The data-path set holds the values before rewriting; `marked` was counted then.)
    const bool norm = is_avg_pool(k) || (is_sum(k) && s.marked == 2);
    if (norm) {
      // zennit's Norm rule: R_in = x * J^T (R / stab(f(x))).
      const double eps = settings.composite.entries.empty() ? 1e-6 : settings.composite.entries.front().rule.stabilizer;
      const size_t operands = is_sum(k) ? 2 : 1;
      for (size_t o = 0; o < operands; ++o) {
        Value* in = g.insert(sym("candela::rule_in"), {node->input(o)});
        in->setType(node->input(o)->type());
        node->replaceInput(o, in);
      }
      torch::jit::WithInsertPoint after(node->next());
      Value* out = g.insert(sym("candela::rule_out"), {node->output(), g.insertConstant(eps)});
      out->setType(node->output()->type());
      node->output()->replaceAllUsesAfterNodeWith(out->node(), out);
      record(s, "norm");
    }
  }
  torch::jit::EliminateDeadCode(graph);
  impl_->graph = graph;
  if (std::getenv("CANDELA_DUMP_RULE_GRAPH")) std::fprintf(stderr, "%s\n", graph->toString().c_str());
  impl_->fn = std::make_unique<torch::jit::GraphFunction>("candela_rules", impl_->graph, nullptr);
}

RuleGraph::~RuleGraph() = default;

std::shared_ptr<const RuleGraph> RuleGraph::of(const Model& model, const RuleSettings& settings) {
  return std::static_pointer_cast<const RuleGraph>(model.cached(settings.key(), [&] {
    return std::static_pointer_cast<void>(std::make_shared<RuleGraph>(model, settings));
  }));
}

at::Tensor RuleGraph::forward(const at::Tensor& x) const {
  c10::IValue result;
  try {
    result = (*impl_->fn)({impl_->frozen._ivalue(), x});
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

const nlohmann::json& RuleGraph::assignments() const { return impl_->assignments; }

}  // namespace candela
