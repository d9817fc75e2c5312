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

namespace candela {

// One LRP rule and its parameters (zennit's names and defaults).
struct LrpRule {
  std::string name = "epsilon";  // epsilon zero gamma alpha_beta z_plus flat w_square z_box pass gradient
  double epsilon = 1e-6;         // epsilon rule's stabiliser
  double stabilizer = 1e-6;      // every other rule's
  double gamma = 0.25;
  double alpha = 2.0, beta = 1.0;
  bool zero_bias = false;        // zennit's zero_params="bias"
  std::vector<double> low, high; // z-box bounds: one value, or one per input channel

  static const std::vector<std::string>& names();
  void validate() const;
};

// Which rule each linear or convolution layer gets. The first entry that matches wins.
struct CompositeEntry {
  std::string type = "affine";  // "conv" (incl. transposed), "linear" or "affine" (either)
  std::string path;             // glob over the module path ("features.*"); empty: any
  bool first = false;           // only the first such layer in module definition order
  LrpRule rule;
};

struct Composite {
  std::string name;
  std::vector<CompositeEntry> entries;

  // epsilon_plus, epsilon_plus_flat, epsilon_gamma_box, epsilon_alpha2_beta1,
  // epsilon_alpha2_beta1_flat (zennit's layer maps), with the parameters of `defaults`.
  static Composite builtin(const std::string& name, const LrpRule& defaults);
  static const std::vector<std::string>& builtin_names();
  // One rule for every layer.
  static Composite uniform(const LrpRule& rule);
  // {"name": ..., "rules": [{"type": "conv", "path": "features.*", "first": true, "rule": "z_box",
  //   "low": -3, "high": 3, ...}, ...]}; parameters not given come from `defaults`.
  static Composite from_json(const nlohmann::json& j, const LrpRule& defaults, const std::string& source);
  nlohmann::json to_json() const;
};

enum class RuleMethod { kGuidedBackprop, kDeconvolution, kDeepLift, kLrp };

struct RuleSettings {
  RuleMethod method = RuleMethod::kLrp;
  Composite composite;       // kLrp
  double deeplift_eps = 1e-10;  // kDeepLift: below this |x - x_ref| the rule falls back to the gradient
  bool reveal_cancel = false;   // kDeepLift: RevealCancel on layer + activation pairs, Rescale elsewhere
  std::string key() const;
};

class RuleGraph {
 public:
  // Builds and checks the graph. UnsupportedModel for a function model, for a node on the
  // data path without a rule, and for control flow on the data path.
  RuleGraph(const Model& model, RuleSettings settings);
  // Built once per model and settings, then reused.
  static std::shared_ptr<const RuleGraph> of(const Model& model, const RuleSettings& settings);
  ~RuleGraph();
  RuleGraph(const RuleGraph&) = delete;
  RuleGraph& operator=(const RuleGraph&) = delete;

  // The model's output, computed by the rule graph; its backward applies the rules. For
  // DeepLIFT, x is [inputs; references] (2N rows).
  at::Tensor forward(const at::Tensor& x) const;
  // Every rewritten node: {"path", "type", "op", "rule"}, in graph order.
  const nlohmann::json& assignments() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "epsilon_plus" or a JSON file's path -> the composite (rules not given take `defaults`).
// check_only: only refuse an unknown built-in name (a file is read when used).
Composite resolve_composite(const std::string& name_or_file, const LrpRule& defaults, bool check_only = false);

}  // namespace candela
