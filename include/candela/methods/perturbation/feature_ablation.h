// Feature ablation (Captum's FeatureAblation; the leave-one-out idea of Zeiler & Fergus 2014
// applied to arbitrary groups). Each feature group g of request.feature_mask (default: every
// element alone) is replaced by the baseline; every element of g gets
//   a_i = f_t(x) - f_t(x with group g set to the baseline).
// Groups do not overlap, so no averaging. Ids that no element of a sample carries are
// skipped (Captum evaluates them too, for nothing): the values are Captum's, the count of
// model evaluations can be smaller.
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class FeatureAblation : public Explainer {
 public:
  static constexpr bool kUsesBaseline = true;
  struct Options {
    int64_t perturbations_per_eval = 0;
    template <class V> void visit(V& v) {
      v("perturbations_per_eval", perturbations_per_eval,
        "Most groups ablated per model call (rows = groups x samples), as in Captum; 0 (default; Captum: 1) lets the evaluator "
        "choose within --max-memory. Affects speed only.");
    }
    void validate() const;
  };
  FeatureAblation() : FeatureAblation(Options{}) {}
  explicit FeatureAblation(Options options);
  std::string name() const override { return "feature_ablation"; }
  nlohmann::json options() const override;
  bool uses_baseline() const override { return kUsesBaseline; }
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
};

}  // namespace candela
