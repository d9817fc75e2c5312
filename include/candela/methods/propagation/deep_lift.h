// DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017, "Learning Important
// Features Through Propagating Activation Differences"), as Captum's DeepLift, and DeepSHAP
// (Lundberg & Lee 2017), as Captum's DeepLiftShap.
// Definition: multipliers m = d f / d x computed with every nonlinearity's derivative replaced
// by (f(x) - f(x_ref)) / (x - x_ref) (its gradient where |x - x_ref| < eps), and max-pooling's
// by Captum's max-pool rule; attribution (x - x_ref) * m (multiply_by_inputs), which sums to
// f_t(x) - f_t(x_ref). deep_lift_shap averages this over the rows of a baseline distribution
// (any other baseline gives each input its own reference, as gradient_shap).
// With rule = reveal_cancel, an activation right after a linear or convolution layer (batch
// norm folded in) splits the layer's input differences into positive and negative terms, each
// with its own multiplier (the paper's RevealCancel; Captum has only Rescale); other activations
// keep Rescale. The network runs on [inputs; references] in one batch so each rule sees both. Every
// call of a module is its own node, so a ReLU module used several times is handled exactly
// (Captum refuses such models).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct DeepLiftOptions {
  std::string rule = "rescale";
  bool multiply_by_inputs = true;
  double eps = 1e-10;
  template <class V> void visit(V& v) {
    v("rule", rule,
      "rescale (Captum's and shap's) or reveal_cancel (the paper's RevealCancel, for activations that directly "
      "follow a linear or convolution layer; Rescale elsewhere).",
      std::vector<std::string>{"rescale", "reveal_cancel"});
    v("multiply_by_inputs", multiply_by_inputs,
      "Return (x - x_ref) * multipliers (Captum's default); false: the multipliers alone.");
    v("eps", eps, "Below this |x - x_ref| a nonlinearity uses its gradient (Captum's eps).");
  }
  void validate() const;
};

class DeepLift : public Method<DeepLift, DeepLiftOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "deep_lift",
      .family = "propagation",
      .description = "Rescale-rule multipliers times (input - reference); sums to f(x) - f(reference).",
      .reference = "Shrikumar, Greenside & Kundaje 2017, Learning Important Features Through Propagating "
                   "Activation Differences",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 protected:
  // shap: average over the rows of a baseline distribution (deep_lift_shap).
  Attribution run(Evaluator& evaluator, const ExplainRequest& request, bool shap) const;
};

class DeepLiftShap : public Alias<DeepLiftShap, DeepLift> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "deep_lift_shap",
      .family = "propagation",
      .description = "DeepLIFT averaged over a baseline distribution (--baseline dist:FILE.npy).",
      .reference = "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
      .uses_baseline = true,
      .completeness = true};
  using Alias::Alias;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override {
    return run(evaluator, request, true);
  }
};

}  // namespace candela
