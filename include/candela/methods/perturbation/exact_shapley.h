// Exact Shapley values (Shapley 1953, "A Value for n-Person Games"; as attributions: Strumbelj
// & Kononenko 2014, Lundberg & Lee 2017).
// Definition, over G feature groups (the request's feature_mask; each element its own group
// when none is given): phi_g = sum_{S without g} |S|! (G - |S| - 1)! / G! [v(S + g) - v(S)],
// v(S) = mean over background rows b of f_t(x on the groups in S, b elsewhere) for a baseline
// distribution (interventional, as shap's KernelExplainer), or f_t of x with the single
// reference outside S. Efficiency: sum_g phi_g = v(all) - v(none) exactly (the reported
// convergence delta is that sum minus f_t(x) - v(none), rounding only). Cost: 2^G - 2
// coalitions per input, each with every background row; refused beyond G = 20.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct ExactShapleyOptions {
  int64_t perturbations_per_eval = 0;
  template <class V> void visit(V& v) {
    v("perturbations_per_eval", perturbations_per_eval,
      "Most coalitions per model call, each with all its background rows (0: chosen by the evaluator "
      "within --max-memory).");
  }
  void validate() const;
};

class ExactShapley : public Method<ExactShapley, ExactShapleyOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "exact_shapley",
      .family = "perturbation",
      .description = "Exact Shapley values of feature groups (all 2^G coalitions, G <= 20), the reference or the mean "
                     "over background rows (--baseline dist:FILE.npy) standing in for absent groups.",
      .reference = "Shapley 1953, A Value for n-Person Games; Strumbelj & Kononenko 2014, Explaining prediction "
                   "models and individual predictions with feature contributions",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  static constexpr int64_t kMaxGroups = 20;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
