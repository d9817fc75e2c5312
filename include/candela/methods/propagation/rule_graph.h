// Rule graphs: a copy of a TorchScript model's graph whose backward pass implements a
// propagation rule instead of the gradient (guided backprop, deconvnet, DeepLIFT, LRP).
//
// The copy is frozen (weights become constants; for LRP, BatchNorm after a convolution is
// folded into it, as zennit's SequentialMergeBatchNorm), freed of in-place mutation, and its
// activation, linear, convolution, pooling, addition and normalisation nodes are replaced by
// custom ops (candela::rule_*) whose autograd backward is the rule. Which LRP rule applies to
// which layer is data: a Composite, matching layers by type, module path (glob) and "first
// layer" (zennit's composites). Before a graph is used, a coverage check refuses every node on
// the path from the input to the output that the method has no rule for, naming the node,
// its module path and the method; a rule method never silently returns gradient numbers for
// a layer it does not understand. The model itself is never edited.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "candela/core/model.h"
#include "candela/methods/propagation/lrp_rules.h"

namespace candela {

enum class RuleMethod { kGuidedBackprop, kDeconvolution, kDeepLift, kLrp };

struct RuleSettings {
  RuleMethod method = RuleMethod::kLrp;
  Composite composite;       // kLrp
  double deeplift_eps = 1e-10;  // kDeepLift: below this |x - x_ref| the rule falls back to the gradient
  bool reveal_cancel = false;   // kDeepLift: RevealCancel on layer + activation pairs, Rescale elsewhere
  std::string tap_layer;        // non-empty: forward_tapped() also returns this layer's output (CRP)
  std::string key() const;
};

class RuleGraph {
 public:
  // Builds and checks the graph. UnsupportedModel for a function model, for a node on the
  // data path without a rule, and for control flow on the data path.
  RuleGraph(const Model& model, RuleSettings settings);
  // Built once per model and settings, then reused; called with `model`'s own forward arguments.
  static std::shared_ptr<const RuleGraph> of(const Model& model, const RuleSettings& settings);
  ~RuleGraph();
  RuleGraph(const RuleGraph&) = delete;
  RuleGraph& operator=(const RuleGraph&) = delete;

  // The model's output, computed by the rule graph; its backward applies the rules. For
  // DeepLIFT, x is [inputs; references] (2N rows).
  at::Tensor forward(const at::Tensor& x) const;
  // With settings.tap_layer: the output and that layer's output, whose gradient is the relevance
  // reaching the layer (the rules' backward carries relevance itself).
  std::pair<at::Tensor, at::Tensor> forward_tapped(const at::Tensor& x) const;
  // Every rewritten node: {"path", "type", "op", "rule"}, in graph order.
  const nlohmann::json& assignments() const;

 private:
  struct Impl;
  RuleGraph(const RuleGraph& compiled, const Model& model);  // the same graph, another model copy's forward args
  std::shared_ptr<const Impl> impl_;
  std::vector<std::pair<std::string, at::Tensor>> args_;  // Model::forward_args
};

}  // namespace candela
