// Feature ablation (Captum's FeatureAblation; the leave-one-out idea of Zeiler & Fergus 2014
// applied to arbitrary groups). Each feature group g of request.feature_mask (default: every
// element alone) is replaced by the baseline; every element of g gets
//   a_i = f_t(x) - f_t(x with group g set to the baseline).
// Groups do not overlap, so no averaging. Ids that no element of a sample carries are
// skipped (Captum evaluates them too, for nothing): the values are Captum's, the count of
// model evaluations can be smaller. A compact group (a grid cell, a superpixel) costs less
// than a whole forward pass: only the crop it reaches goes through the early layers
// (Model::forward_local; resnet18, 32x32 cells: 1.31x the whole graph).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct FeatureAblationOptions {
  int64_t perturbations_per_eval = 0;
  template <class V> void visit(V& v) {
    v("perturbations_per_eval", perturbations_per_eval,
      "Most groups ablated per model call (rows = groups x samples), as in Captum; 0 (default; Captum: 1) lets the evaluator "
      "choose within --max-memory. Affects speed only.");
  }
  void validate() const;
};

class FeatureAblation : public Method<FeatureAblation, FeatureAblationOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "feature_ablation",
      .family = "perturbation",
      .description = "Drop of the target score when the element's feature group (--features; default each element) is "
                     "set to the baseline (Captum's FeatureAblation).",
      .reference = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
