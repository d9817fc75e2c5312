// GradientSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions";
// Captum's GradientShap) and expected gradients (Erion et al. 2021).
// Definition: a = E_{b ~ D, e ~ N(0, stdevs^2), u ~ U(0,1)} [ (x + e - b) * grad f_t(b + u (x + e - b)) ],
// estimated with n_samples draws per input; D is the baseline distribution. Expected
// gradients is the same estimator with stdevs = 0. In expectation the attributions sum to
// f_t(x) - E_D[f_t(b)]; that gap is reported as the convergence delta.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct GradientShapOptions {
  int64_t n_samples = 5;
  double stdevs = 0.0;
  bool multiply_by_inputs = true;
  int64_t internal_batch_size = 0;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("n_samples", n_samples, "Random (baseline, path point) draws per input.");
    v("stdevs", stdevs, "Standard deviation of Gaussian noise added to the input.");
    v("multiply_by_inputs", multiply_by_inputs, "Multiply gradients by (input - baseline).");
    v("internal_batch_size", internal_batch_size, "Largest rows per model call (0: automatic).");
    v("seed", seed, "Seed of the draws.");
  }
  void validate() const;
};

class GradientShap : public Method<GradientShap, GradientShapOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "gradient_shap",
      .family = "gradient",
      .description = "Expected (input - baseline) x gradient at random points between a baseline (drawn from "
                     "--baseline dist:FILE.npy; any other baseline pairs each input with its own reference) and "
                     "the input plus Gaussian noise of std `stdevs`.",
      .reference = "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
      .uses_baseline = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

class ExpectedGradients : public Alias<ExpectedGradients, GradientShap> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "expected_gradients",
      .family = "gradient",
      .description = "Integrated gradients averaged over a baseline distribution: the gradient_shap estimator, "
                     "named for its use with stdevs = 0 (the default).",
      .reference = "Erion et al. 2021, Improving performance of deep learning models with axiomatic attribution "
                   "priors and expected gradients",
      .uses_baseline = true};
  using Alias::Alias;
};

}  // namespace candela
