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

LayerOutputs layer_outputs(torch::jit::Graph& graph) {
  LayerOutputs out;
  std::set<std::string> nested;
  std::string previous_path;
  for (auto* node : graph.nodes()) {
    for (auto* b : node->blocks()) collect_nested(b, nested);
    for (auto* v : node->outputs())
      if (v->type()->kind() == c10::TypeKind::TensorType) out.tensors.push_back(v);
    std::string path = module_path(node);
    if (path.empty() || node->outputs().empty() || node->kind() == c10::prim::Constant) {
      if (node->kind() != c10::prim::Constant) previous_path.clear();
      continue;
    }
    std::vector<std::string> prefixes;
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1))
      prefixes.push_back(path.substr(0, dot));
    prefixes.push_back(path);
    for (const auto& prefix : prefixes) {
      if (!out.value.count(prefix)) out.order.push_back(prefix);
      // A new call starts when the previous node came from outside this module.
      bool continuing = previous_path == prefix || previous_path.rfind(prefix + ".", 0) == 0;
      if (!continuing) out.calls[prefix]++;
      out.value[prefix] = node->outputs().back();
      if (prefix == path) out.type[prefix] = module_type(node);
    }
    previous_path = path;
  }
  for (const auto& p : nested)
    if (!out.value.count(p)) out.nested_only.insert(p);
  return out;
}

}  // namespace candela::detail
