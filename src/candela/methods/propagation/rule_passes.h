// The passes that turn a frozen TorchScript graph into a rule graph (not public API):
//   find_data_path   the nodes that read a value computed from the input, in graph order
//   check_coverage   refuses a node the method has no rule for, before anything is rewritten
//   assign_rules     LRP: which composite entry each linear or convolution layer gets
//   rewrite          each node replaced by its rule op, chosen by the op table (rule_graph.cpp)
// Every aten op a rule method knows is one row of the op table: its class says how the
// coverage check treats it and which rewriter it gets. A new op is one row there.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "candela/methods/propagation/rule_graph.h"

namespace torch::jit {
struct Graph;
struct Node;
}  // namespace torch::jit

namespace candela::detail {

enum class OpClass {
  kAffine,      // linear and convolutions: the LRP rule of the composite, the gradient otherwise
  kActivation,  // guided/deconv on ReLU, DeepLIFT's rescale, LRP's pass
  kAvgPool,     // LRP's norm rule; the gradient otherwise
  kMaxPool,     // DeepLIFT's max-pool rule (2-d); LRP: winner takes all (the gradient)
  kSum,         // add/sub: LRP's norm rule when both operands come from the input
  kScale,       // mul/div: linear when one operand comes from the input
  kMatmul,      // the same for products
  kBatchNorm,   // LRP: pass (after a convolution it is folded into it first)
  kStructural,  // moves, copies or sums values without parameters: the gradient is every rule's answer
};
struct OpRow {
  OpClass cls;
  int64_t activation = -1;  // kActivation: its ActKind
};
// The op table's row of an aten kind ("aten::relu"), or null.
const OpRow* find_op(const std::string& kind);

struct RuleSite {
  torch::jit::Node* node = nullptr;
  std::string kind, path, type;  // "aten::linear", "classifier.0", "Linear"
  int marked = 0;                // inputs on the data path that carry tensors
  bool weights_on_path = false;  // an affine layer whose weight is computed from the input
  size_t rank = 0;               // module definition order (layers outside modules come last)
};

// `order`: module path -> definition order. UnsupportedModel for control flow on the data path
// and for an in-place op that could not be made functional.
std::vector<RuleSite> find_data_path(torch::jit::Graph& graph, const std::map<std::string, size_t>& order,
                                     const char* method);
// UnsupportedModel naming the first node on the data path without a rule (DeepLIFT and LRP;
// guided backprop and deconvolution take the gradient where they have no rule, as Captum).
void check_coverage(const std::vector<RuleSite>& sites, RuleMethod method);
// The rule of every affine site (others get an unused default), from the first matching
// composite entry; UnsupportedModel for a layer no entry matches or a rule that cannot apply.
std::vector<LrpRule> assign_rules(const std::vector<RuleSite>& sites, const Composite& composite);

// "aten::layer_norm at 'encoder.norm' (LayerNorm)", for error messages.
std::string describe_node(const std::string& kind, const std::string& path, const std::string& type);
const char* method_name(RuleMethod method);

}  // namespace candela::detail
