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

#include "candela/core/explainer.h"

namespace candela {

class ExactShapley : public Explainer {
 public:
  static constexpr bool kUsesBaseline = true;
  static constexpr int64_t kMaxGroups = 20;
  struct Options {
    int64_t perturbations_per_eval = 0;
    template <class V> void visit(V& v) {
      v("perturbations_per_eval", perturbations_per_eval,
        "Most coalitions per model call, each with all its background rows (0: chosen by the evaluator "
        "within --max-memory).");
    }
    void validate() const;
  };
  ExactShapley() : ExactShapley(Options{}) {}
  explicit ExactShapley(Options options);
  std::string name() const override { return "exact_shapley"; }
  nlohmann::json options() const override;
  bool uses_baseline() const override { return kUsesBaseline; }
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
