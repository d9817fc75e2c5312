#include "candela/graph/graph_util.h"

#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

namespace candela::detail {

using torch::jit::Node;
using torch::jit::Value;

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
