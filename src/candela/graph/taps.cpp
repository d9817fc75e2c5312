#include "candela/graph/taps.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/library.h>
#include <torch/script.h>

#include <set>
#include <unordered_map>
#include <unordered_set>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/graph_util.h"

namespace candela {
using detail::shape_str;
using detail::str_cat;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

namespace {

// What the taps of one call record and substitute. One per call, on the calling thread.
struct TapContext {
  std::vector<at::Tensor> recorded;
  const std::vector<at::Tensor>* replace = nullptr;
  bool track = false;  // LayerTaps::forward's `track`
};
thread_local TapContext* current_context = nullptr;

class ContextScope {
 public:
  explicit ContextScope(TapContext* ctx) : previous_(current_context) { current_context = ctx; }
  ~ContextScope() { current_context = previous_; }

 private:
  TapContext* previous_;
};

// The recorded tensor is never the one that flows on: in-place ops that RemoveTensorMutation
// could not rewrite (a residual `+=` next to a downsample branch, an in-place ReLU) would
// otherwise overwrite the recording and its place in the autograd graph.
at::Tensor tap(const at::Tensor& x, int64_t slot) {
  TapContext* ctx = current_context;
  if (!ctx || slot < 0 || slot >= static_cast<int64_t>(ctx->recorded.size())) return x.clone();
  at::Tensor recorded = x;
  if (ctx->replace && slot < static_cast<int64_t>(ctx->replace->size()) && (*ctx->replace)[slot].defined()) {
    recorded = (*ctx->replace)[slot];
    CANDELA_CHECK_T(ShapeMismatch, recorded.sizes() == x.sizes(), "the replacement for a tapped layer has shape ",
                    shape_str(recorded.sizes()), " but the layer's output has shape ", shape_str(x.sizes()), ".");
  }
  if (ctx->track && !recorded.requires_grad() && at::GradMode::is_enabled())
    recorded = recorded.detach().requires_grad_(true);
  ctx->recorded[slot] = recorded;
  return recorded.clone();
}

// The op is opaque to the JIT's optimisation passes (conservative alias analysis), so it is
// never moved, merged or removed.
TORCH_LIBRARY(candela, m) {
  m.def(torch::schema("candela::tap(Tensor x, int slot) -> Tensor", c10::AliasAnalysisKind::CONSERVATIVE));
  m.impl("tap", c10::DispatchKey::CompositeImplicitAutograd, TORCH_FN(tap));
}

bool is_tensor(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

}  // namespace

class LayerTaps::Prefix {
 public:
  std::vector<c10::IValue> values;  // the suffix graph's inputs that come from the prefix
  at::Tensor activation;
  int64_t batch = 0;
};

namespace detail {

void insert_tap(Graph& g, const std::string& layer, int64_t slot) {
  auto lo = layer_outputs(g);
  CANDELA_CHECK(!lo.nested_only.count(layer), "layer '", layer,
                "' runs only inside a branch or loop of forward(); choose the module that encloses it.");
  CANDELA_CHECK(lo.value.count(layer), "unknown layer '", layer, "'.", did_you_mean(layer, lo.order),
                " Run `candela info MODEL` for the layer names (a BatchNorm after a convolution is folded into it).");
  Value* v = lo.value.at(layer);
  CANDELA_CHECK(is_tensor(v), "layer '", layer, "' returns a ", v->type()->str(), ", not a tensor.");
  torch::jit::WithInsertPoint guard(v->node()->next());
  Value* slot_value = g.insertConstant(slot);
  Value* out = g.insert(c10::Symbol::fromQualString("candela::tap"), {v, slot_value});
  out->setType(v->type());
  v->replaceAllUsesAfterNodeWith(out->node(), out);
}

std::vector<at::Tensor> record_taps(size_t slots, const std::function<void()>& call) {
  TapContext ctx;
  ctx.recorded.resize(slots);
  ContextScope scope(&ctx);
  call();
  return ctx.recorded;
}

}  // namespace detail

struct LayerTaps::Impl {
  torch::jit::Module module;
  std::shared_ptr<Graph> graph;
  std::unique_ptr<torch::jit::GraphFunction> fn;
  size_t count = 0;
  bool token_ids = false;  // the model takes int64 token ids (layout NL): see detail::model_input

  // Suffix execution at layer 0.
  std::string cut_problem;
  std::unique_ptr<torch::jit::GraphFunction> prefix_fn, suffix_fn;
  std::vector<int> crossing_kind;  // per suffix input: 0 = the cut activation, 1 = batch tensor, 2 = other
  void build_cut(Node* cut_node, Value* cut_value);
};

LayerTaps::LayerTaps(const LayerTaps& compiled, const Model& model)
    : impl_(compiled.impl_), layers_(compiled.layers_), args_(model.forward_args()) {}

LayerTaps::LayerTaps(const Model& model, std::vector<std::string> layers, const GraphRewrite& rewrite)
    : layers_(std::move(layers)), args_(model.forward_args()) {
  auto impl = std::make_shared<Impl>();
  impl_ = impl;
  CANDELA_CHECK(!layers_.empty(), "give at least one layer to tap (see `candela info` for the names).");
  CANDELA_CHECK_T(UnsupportedModel, model.module() != nullptr,
                  "layer taps need a TorchScript model; this model is a plain function.");
  impl->module = *model.module();
  impl->token_ids = model.input_spec().layout == "NL";
  impl->graph = detail::inlined_forward(impl->module);
  detail::specialise_forward_args(impl->graph, model);
  Graph& g = *impl->graph;
  auto lo = detail::layer_outputs(g);

  std::vector<std::string> submodules;
  for (const auto& item : impl->module.named_modules()) submodules.push_back(item.name);
  std::unordered_map<Value*, Value*> tapped;  // original value -> its latest tap output
  Node* first_tap = nullptr;
  for (size_t slot = 0; slot < layers_.size(); ++slot) {
    const std::string& name = layers_[slot];
    if (!lo.value.count(name)) {
      bool exists = std::find(submodules.begin(), submodules.end(), name) != submodules.end();
      CANDELA_CHECK(!lo.nested_only.count(name), "layer '", name,
                    "' runs only inside a branch or loop of forward(); tap the module that encloses it.");
      CANDELA_CHECK(!exists, "layer '", name, "' exists but forward() never calls it; pick a layer that runs "
                    "(see `candela info`).");
      throw InvalidArgument(str_cat("unknown layer '", name, "'.", did_you_mean(name, lo.order),
                                    " Run `candela info MODEL` for the layer names."));
    }
    Value* v = lo.value.at(name);
    CANDELA_CHECK(is_tensor(v), "layer '", name, "' returns a ", v->type()->str(),
                  ", not a tensor; tap one of its submodules instead.");
    Value* current = tapped.count(v) ? tapped.at(v) : v;
    torch::jit::WithInsertPoint guard(current->node()->next());
    Value* slot_value = g.insertConstant(static_cast<int64_t>(slot));
    Value* out = g.insert(c10::Symbol::fromQualString("candela::tap"), {current, slot_value});
    out->setType(current->type());
    current->replaceAllUsesAfterNodeWith(out->node(), out);
    tapped[v] = out;
    if (slot == 0) first_tap = out->node();
  }
  impl->count = layers_.size();
  if (rewrite) rewrite(g);
  impl->fn = std::make_unique<torch::jit::GraphFunction>("candela_tapped", impl->graph, nullptr);
  impl->build_cut(first_tap, first_tap->output());
}

LayerTaps::~LayerTaps() = default;

std::shared_ptr<const LayerTaps> LayerTaps::of(const Model& model, const std::vector<std::string>& layers,
                                               const std::string& rewrite_key, const GraphRewrite& rewrite) {
  std::string key = "taps";
  for (const auto& l : layers) key += "\n" + l;
  if (rewrite) key += "\nrewrite:" + rewrite_key;
  auto compiled = std::static_pointer_cast<const LayerTaps>(model.cached(
      key, [&] { return std::static_pointer_cast<void>(std::make_shared<LayerTaps>(model, layers, rewrite)); }));
  if (model.forward_args().empty() && compiled->args_.empty()) return compiled;
  return std::shared_ptr<const LayerTaps>(new LayerTaps(*compiled, model));
}

LayerTaps::Run LayerTaps::forward(const at::Tensor& x, const std::vector<at::Tensor>& replace, bool track) const {
  TapContext ctx;
  ctx.recorded.resize(impl_->count);
  ctx.replace = &replace;
  ctx.track = track;
  ContextScope scope(&ctx);
  Run run;
  try {
    std::vector<c10::IValue> in = {impl_->module._ivalue(), detail::model_input(x, impl_->token_ids)};
    for (auto& v : detail::given_forward_args(args_, x.size(0), x.device())) in.push_back(std::move(v));
    auto result = (*impl_->fn)(std::move(in));
    CANDELA_CHECK_T(UnsupportedModel, result.isTensor(), "the model returned a ", result.tagKind(), ", not a tensor.");
    run.output = result.toTensor();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw ShapeMismatch(str_cat("the model failed on an input of shape ", shape_str(x.sizes()), ": ",
                                msg.substr(0, msg.find('\n')), "."));
  }
  for (size_t i = 0; i < impl_->count; ++i)
    CANDELA_CHECK(ctx.recorded[i].defined(), "layer '", layers_[i], "' was not reached by this forward pass.");
  run.activations = std::move(ctx.recorded);
  return run;
}

// Splits the tapped graph at `cut_node` into a prefix (everything up to the tap) and a
// suffix (the rest). Values the suffix reads from before the cut become suffix inputs;
// those that do not depend on the model input (constants, parameters) are recomputed in
// the suffix instead, so nothing but activations crosses the cut.
void LayerTaps::Impl::build_cut(Node* cut_node, Value* cut_value) {
  Graph& g = *graph;
  // The input and the given forward arguments (an attention mask): batch values, fed from the
  // prefix to the suffix like activations.
  std::unordered_set<const Value*> depends_on_input(g.inputs().begin() + 1, g.inputs().end());
  auto is_input = [&](const Value* v) { return v->node() == g.param_node() && v != g.inputs().at(0); };
  std::unordered_set<const Node*> dependent_nodes;  // includes checks with no outputs
  std::vector<Node*> prefix, suffix;
  bool after = false;
  for (auto* node : g.nodes()) {
    (after ? suffix : prefix).push_back(node);
    if (node == cut_node) after = true;
    if (after && node != cut_node) continue;
    std::vector<Value*> reads;
    detail::free_inputs(node, reads);
    bool dep = std::any_of(reads.begin(), reads.end(), [&](Value* v) { return depends_on_input.count(v) > 0; });
    if (dep) {
      dependent_nodes.insert(node);
      for (auto* o : node->outputs()) depends_on_input.insert(o);
    }
  }
  std::unordered_set<const Node*> in_prefix(prefix.begin(), prefix.end());
  std::vector<Value*> crossing;
  std::unordered_set<const Value*> seen;
  for (auto* node : suffix) {
    std::vector<Value*> reads;
    detail::free_inputs(node, reads);
    for (auto* v : reads) {
      bool from_prefix = v->node()->owningGraph() == &g && (in_prefix.count(v->node()) || is_input(v));
      if (!from_prefix || !depends_on_input.count(v) || !seen.insert(v).second) continue;
      if (!is_tensor(v)) {
        cut_problem = str_cat("the value '", v->debugName(), "' (", v->type()->str(),
                              ") is computed from the input before the cut and used after it");
        return;
      }
      crossing.push_back(v);
    }
  }
  for (auto* v : g.outputs())
    if ((in_prefix.count(v->node()) || is_input(v)) && depends_on_input.count(v) && seen.insert(v).second) {
      if (!is_tensor(v)) {
        cut_problem = "the model's output is computed before the cut";
        return;
      }
      crossing.push_back(v);
    }

  // Prefix: the original inputs, the prefix nodes, the crossing values as a tuple.
  auto pg = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  for (auto* v : g.inputs()) env[v] = pg->addInput()->setType(v->type());
  auto lookup = [&](Value* v) { return env.at(v); };
  for (auto* node : prefix) {
    Node* c = pg->insertNode(pg->createClone(node, lookup));
    for (size_t i = 0; i < node->outputs().size(); ++i) env[node->outputs()[i]] = c->outputs()[i];
  }
  std::vector<Value*> outs;
  for (auto* v : crossing) outs.push_back(env.at(v));
  pg->registerOutput(pg->insertNode(pg->createTuple(outs))->output());
  torch::jit::EliminateDeadCode(pg);

  // Suffix: self, the crossing values, then the input-independent prefix nodes (recomputed)
  // and the suffix nodes.
  auto sg = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> senv;
  senv[g.inputs().at(0)] = sg->addInput("self")->setType(g.inputs().at(0)->type());
  for (auto* v : crossing) {
    senv[v] = sg->addInput()->setType(v->type());
    crossing_kind.push_back(v == cut_value ? 0 : 1);
  }
  auto slookup = [&](Value* v) { return senv.at(v); };
  for (auto* node : prefix) {
    if (dependent_nodes.count(node) || node == cut_node) continue;
    Node* c = sg->insertNode(sg->createClone(node, slookup));
    for (size_t i = 0; i < node->outputs().size(); ++i) senv[node->outputs()[i]] = c->outputs()[i];
  }
  for (auto* node : suffix) {
    Node* c = sg->insertNode(sg->createClone(node, slookup));
    for (size_t i = 0; i < node->outputs().size(); ++i) senv[node->outputs()[i]] = c->outputs()[i];
  }
  for (auto* v : g.outputs()) sg->registerOutput(senv.at(v));
  torch::jit::EliminateDeadCode(sg);
  if (std::find(crossing_kind.begin(), crossing_kind.end(), 0) == crossing_kind.end()) {
    cut_problem = "nothing after the cut layer reads its output";
    return;
  }
  prefix_fn = std::make_unique<torch::jit::GraphFunction>("candela_prefix", pg, nullptr);
  suffix_fn = std::make_unique<torch::jit::GraphFunction>("candela_suffix", sg, nullptr);
}

bool LayerTaps::can_cut() const { return impl_->suffix_fn != nullptr; }
const std::string& LayerTaps::cut_problem() const { return impl_->cut_problem; }

std::shared_ptr<const LayerTaps::Prefix> LayerTaps::run_prefix(const at::Tensor& x) const {
  CANDELA_CHECK(can_cut(), "layer '", layers_[0], "' cannot be cut: ", impl_->cut_problem, ".");
  TapContext ctx;  // the taps in the prefix record nothing that is used; keep them quiet
  ctx.recorded.resize(impl_->count);
  ContextScope scope(&ctx);
  std::vector<c10::IValue> in = {impl_->module._ivalue(), detail::model_input(x, impl_->token_ids)};
  for (auto& v : detail::given_forward_args(args_, x.size(0), x.device())) in.push_back(std::move(v));
  auto out = (*impl_->prefix_fn)(std::move(in));
  auto prefix = std::make_shared<Prefix>();
  prefix->batch = x.size(0);
  const auto& elems = out.toTupleRef().elements();
  for (size_t i = 0; i < elems.size(); ++i) {
    prefix->values.push_back(elems[i]);
    if (impl_->crossing_kind[i] == 0) prefix->activation = elems[i].toTensor();
  }
  return prefix;
}

at::Tensor LayerTaps::prefix_activation(const Prefix& prefix) const { return prefix.activation; }

at::Tensor LayerTaps::run_suffix(const Prefix& prefix, const at::Tensor& activations,
                                 const at::Tensor& sample_of_row) const {
  CANDELA_CHECK_T(ShapeMismatch, activations.sizes().slice(1) == prefix.activation.sizes().slice(1),
                  "replacement activations have per-sample shape ", shape_str(activations.sizes().slice(1)),
                  " but layer '", layers_[0], "' outputs ", shape_str(prefix.activation.sizes().slice(1)), ".");
  at::Tensor rows = sample_of_row.to(at::kLong);
  std::vector<c10::IValue> stack = {impl_->module._ivalue()};
  for (size_t i = 0; i < prefix.values.size(); ++i) {
    if (impl_->crossing_kind[i] == 0) {
      stack.emplace_back(activations);
      continue;
    }
    at::Tensor t = prefix.values[i].toTensor();
    CANDELA_CHECK_T(ShapeMismatch, t.dim() >= 1 && t.size(0) == prefix.batch, "a value crossing the cut at '",
                    layers_[0], "' has shape ", shape_str(t.sizes()), " without the batch dimension ", prefix.batch,
                    "; use full forward passes for this layer.");
    stack.emplace_back(t.index_select(0, rows.to(t.device())));
  }
  TapContext ctx;
  ctx.recorded.resize(impl_->count);
  ContextScope scope(&ctx);
  auto out = (*impl_->suffix_fn)(stack);
  CANDELA_CHECK_T(UnsupportedModel, out.isTensor(), "the model returned a ", out.tagKind(), ", not a tensor.");
  return out.toTensor();
}

}  // namespace candela
