#include "candela/graph/graph_util.h"

#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"

namespace candela::detail {

void free_inputs(torch::jit::Node* node, std::vector<torch::jit::Value*>& out) {
  for (auto* v : node->inputs()) out.push_back(v);
  for (auto* b : node->blocks()) {
    for (auto* n : b->nodes()) free_inputs(n, out);
    for (auto* v : b->outputs()) out.push_back(v);
  }
}

using torch::jit::Node;
using torch::jit::Value;

namespace {
at::Tensor rows_of(const std::string& name, const at::Tensor& t, int64_t rows, const c10::Device& device) {
  CANDELA_CHECK_T(ShapeMismatch, t.size(0) == 1 || t.size(0) == rows, "the forward argument '", name, "' has ",
                  t.size(0), " rows but the model is called on ", rows, " rows here: give one row for every sample "
                  "(explanations then run one sample at a time) or one row for all of them.");
  at::Tensor v = t.to(device);
  if (v.size(0) == rows) return v;
  std::vector<int64_t> shape(v.sizes().begin(), v.sizes().end());
  shape[0] = rows;
  return v.expand(shape).contiguous();
}

// A parameter left out must have a default.
void require_default(const c10::Argument& p) {
  CANDELA_CHECK(p.default_value().has_value(), "the model's forward() takes '", p.name(), "' (",
                p.type()->annotation_str(), ") without a default: give it (--forward-arg ", p.name(),
                "=FILE.npy, or additional_forward_args in Python).");
}
}  // namespace

std::vector<c10::IValue> given_forward_args(const ForwardArgs& args, int64_t rows, const c10::Device& device) {
  std::vector<c10::IValue> out;
  out.reserve(args.size());
  for (const auto& [name, t] : args) out.emplace_back(rows_of(name, t, rows, device));
  return out;
}

std::vector<c10::IValue> all_forward_args(const Model& model, int64_t rows, const c10::Device& device) {
  std::vector<c10::IValue> out;
  if (!model.module()) return out;
  const auto& schema = model.module()->get_method("forward").function().getSchema().arguments();
  const auto& given = model.forward_args();
  for (size_t i = 2; i < schema.size(); ++i) {
    const auto& p = schema[i];
    auto it = std::find_if(given.begin(), given.end(), [&](const auto& g) { return g.first == p.name(); });
    if (it != given.end()) {
      out.emplace_back(rows_of(p.name(), it->second, rows, device));
      continue;
    }
    require_default(p);
    out.push_back(*p.default_value());
  }
  return out;
}

namespace {
// `is None` / `is not None` on a value that is None or that cannot be None: a constant.
bool known_none(const Value* v) { return v->type()->kind() == c10::TypeKind::NoneType; }
bool never_none(const Value* v) {
  const auto k = v->type()->kind();
  return k != c10::TypeKind::NoneType && k != c10::TypeKind::OptionalType && k != c10::TypeKind::AnyType &&
         k != c10::TypeKind::UnionType;
}
void fold_none_tests(torch::jit::Block* block, torch::jit::Graph& graph) {
  for (auto it = block->nodes().begin(); it != block->nodes().end();) {
    Node* node = *it++;
    for (auto* b : node->blocks()) fold_none_tests(b, graph);
    const bool is = node->kind() == c10::aten::__is__, isnot = node->kind() == c10::aten::__isnot__;
    if (node->kind() == c10::prim::unchecked_cast && never_none(node->input()) &&
        node->input()->type()->isSubtypeOf(*node->output()->type())) {
      node->output()->replaceAllUsesWith(node->input());
      continue;
    }
    if (!(is || isnot) || node->inputs().size() != 2) continue;
    const Value *a = node->input(0), *b = node->input(1);
    std::optional<bool> same;
    if (known_none(a) && known_none(b)) same = true;
    else if ((known_none(a) && never_none(b)) || (never_none(a) && known_none(b))) same = false;
    if (!same) continue;
    torch::jit::WithInsertPoint guard(node);
    node->output()->replaceAllUsesWith(graph.insertConstant(is ? *same : !*same));
  }
}
// An `if` whose condition is now a constant: the branch it takes, in its place.
void inline_constant_ifs(torch::jit::Block* block) {
  for (auto it = block->nodes().begin(); it != block->nodes().end();) {
    Node* node = *it++;
    for (auto* b : node->blocks()) inline_constant_ifs(b);
    if (node->kind() != c10::prim::If) continue;
    const auto cond = torch::jit::toIValue(node->input(0));
    if (!cond || !cond->isBool()) continue;
    torch::jit::Block* taken = node->blocks()[cond->toBool() ? 0 : 1];
    for (auto b = taken->nodes().begin(); b != taken->nodes().end();) (*b++)->moveBefore(node);
    for (size_t i = 0; i < node->outputs().size(); ++i) node->outputs()[i]->replaceAllUsesWith(taken->outputs()[i]);
    node->destroy();
  }
}
}  // namespace

void specialise_forward_args(std::shared_ptr<torch::jit::Graph> g, const Model& model) {
  torch::jit::Graph& graph = *g;
  if (!model.module()) return;
  const auto& schema = model.module()->get_method("forward").function().getSchema().arguments();
  if (schema.size() <= 2) return;
  CANDELA_ASSERT(graph.inputs().size() == schema.size(), "the forward graph has ", graph.inputs().size(),
                 " inputs but forward() ", schema.size(), " parameters.");
  const auto& given = model.forward_args();
  bool changed = false;
  for (size_t i = schema.size(); i-- > 2;) {
    const auto& p = schema[i];
    Value* in = graph.inputs()[i];
    const bool is_given =
        std::any_of(given.begin(), given.end(), [&](const auto& g) { return g.first == p.name(); });
    if (is_given) {
      if (in->type()->kind() != c10::TypeKind::TensorType) {
        in->setType(c10::TensorType::get());
        changed = true;
      }
      continue;
    }
    require_default(p);
    torch::jit::WithInsertPoint guard(graph.block()->nodes().front());
    Value* c = graph.insertConstant(*p.default_value());
    in->replaceAllUsesWith(c);
    graph.eraseInput(i);
    changed = true;
  }
  if (!changed) return;
  // Folding: the tests, then the branches they decide (and nothing else: a constant tensor
  // computed from constants stays the node its module computed).
  for (int round = 0; round < 3; ++round) {
    fold_none_tests(graph.block(), graph);
    torch::jit::ConstantPropagationImmutableTypes(g);
    inline_constant_ifs(graph.block());
    torch::jit::EliminateDeadCode(g);
  }
}

std::string module_path(const Node* node) {
  auto cs = node->callstack();
  if (!cs) return "";
  std::string path;
  for (const auto& entry : (*cs)->vec()) {
    const auto& info = std::get<2>(entry);
    // "SELF" marks a call to another method of the same module, not a submodule.
    if (!info || info->instance_name() == "SELF") continue;
    path += (path.empty() ? "" : ".") + info->instance_name();
  }
  return path;
}

std::string module_type(const Node* node) {
  auto cs = node->callstack();
  if (!cs) return "";
  auto vec = (*cs)->vec();
  for (auto it = vec.rbegin(); it != vec.rend(); ++it) {
    const auto& info = std::get<2>(*it);
    if (info && info->class_type() && info->class_type()->name()) return info->class_type()->name()->name();
  }
  return "";
}

std::shared_ptr<torch::jit::Graph> inlined_forward(const torch::jit::Module& module) {
  auto graph = module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  torch::jit::RemoveTensorMutation(graph);
  return graph;
}

namespace {
void collect_nested(torch::jit::Block* block, std::set<std::string>& out) {
  for (auto* node : block->nodes()) {
    std::string path = module_path(node);
    for (size_t dot = 0; !path.empty();) {
      dot = path.find('.', dot + 1);
      out.insert(path.substr(0, dot));
      if (dot == std::string::npos) break;
    }
    for (auto* b : node->blocks()) collect_nested(b, out);
  }
}
}  // namespace

namespace {
// For each module scope a node sits in (outermost first): its path and an identifier of the
// call site that entered it, so two calls of one module count as two.
std::vector<std::pair<std::string, std::string>> scopes(const Node* node) {
  std::vector<std::pair<std::string, std::string>> out;
  auto cs = node->callstack();
  if (!cs) return out;
  std::string path, site;
  for (const auto& entry : (*cs)->vec()) {
    const auto& range = std::get<1>(entry);
    site += std::to_string(reinterpret_cast<uintptr_t>(range.source().get())) + ":" + std::to_string(range.start()) + "/";
    const auto& info = std::get<2>(entry);
    if (!info || info->instance_name() == "SELF") continue;
    path += (path.empty() ? "" : ".") + info->instance_name();
    out.emplace_back(path, site);
  }
  return out;
}

// What a module's last node hands on: its last output that anything uses. A node with several
// outputs may end in one nobody reads (adaptive_max_pool2d's indices after a module that returns
// only the values); a node whose outputs are all unused keeps the last.
torch::jit::Value* returned_value(Node* node) {
  torch::jit::Value* used = nullptr;
  for (auto* v : node->outputs())
    if (v->hasUses()) used = v;
  return used ? used : node->outputs().back();
}
}  // namespace

LayerOutputs layer_outputs(torch::jit::Graph& graph) {
  LayerOutputs out;
  std::set<std::string> nested;
  std::map<std::string, std::set<std::string>> sites;
  for (auto* node : graph.nodes()) {
    for (auto* b : node->blocks()) collect_nested(b, nested);
    for (auto* v : node->outputs())
      if (v->type()->kind() == c10::TypeKind::TensorType) out.tensors.push_back(v);
    if (node->outputs().empty() || node->kind() == c10::prim::Constant) continue;
    const auto scope = scopes(node);
    for (const auto& [prefix, site] : scope) {
      if (!out.value.count(prefix)) out.order.push_back(prefix);
      sites[prefix].insert(site);
      out.value[prefix] = returned_value(node);
      if (prefix == scope.back().first) out.type[prefix] = module_type(node);
    }
    // A functional softmax inside a module (nn.MultiheadAttention's attention probabilities,
    // [N * heads, L, S]) is a layer of its own, "MODULE:softmax" (the module's last one), unless
    // the module is a Softmax itself.
    if (!scope.empty() && (node->kind() == c10::aten::softmax || node->kind() == c10::aten::_softmax) &&
        module_type(node) != "Softmax") {
      const std::string name = scope.back().first + ":softmax";
      if (!out.value.count(name)) out.order.push_back(name);
      sites[name].insert(scope.back().second);
      out.value[name] = node->output();
      out.type[name] = "softmax";
    }
  }
  for (const auto& [prefix, set] : sites) out.calls[prefix] = static_cast<int>(set.size());
  for (const auto& p : nested)
    if (!out.value.count(p)) out.nested_only.insert(p);
  return out;
}

}  // namespace candela::detail
