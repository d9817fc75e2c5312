// Shapley value sampling (Castro, Gomez & Tejada 2009, "Polynomial calculation of the Shapley
// value based on sampling"; Captum's ShapleyValueSampling).
// Definition: for each of n_samples random orderings of the G feature groups, start from the
// reference and add the groups one by one; group g gets v(before + g) - v(before). The
// attribution is the mean over orderings, an unbiased estimate of the exact Shapley value of
// the game v of exact_shapley (v averages f over the background rows of a distribution
// baseline; Captum's single baseline is the case of one reference per input). Each ordering's
// contributions sum to v(all) - v(none), so efficiency holds exactly for any n_samples.
//
// Beyond Captum: `antithetic` pairs every ordering with its reverse (a group early in one is
// late in the other, which cancels much of the variance of an additive part; Mitchell et al.
// 2022, "Sampling permutations for Shapley value estimation"); an odd n_samples is then
// rounded up to whole pairs. extra.standard_error[i][g] is the standard error of the mean
// over orderings (over pairs with antithetic). With target_error > 0, orderings are added
// (up to max_samples) until every group's standard error is below it.
// Cost per input: (G - 1) coalitions per ordering (v(none) and v(all) are shared), each with
// every background row; Captum's costs G per ordering plus one.
#pragma once

#include "candela/core/method.h"

namespace candela {

struct ShapleyValueSamplingOptions {
  int64_t n_samples = 25;
  int64_t perturbations_per_eval = 0;
  bool antithetic = false;
  double target_error = 0.0;
  int64_t max_samples = 2000;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("n_samples", n_samples, "Number of random feature orderings (permutations).");
    v("perturbations_per_eval", perturbations_per_eval,
      "Most coalitions per model call, each with all its background rows (0: chosen by the evaluator "
      "within --max-memory).");
    v("antithetic", antithetic, "Pair every ordering with its reverse (n_samples rounded up to pairs).");
    v("target_error", target_error,
      "If > 0: add orderings until every group's standard error is below this (0: off).");
    v("max_samples", max_samples, "Most orderings per input when target_error is set.");
    v("seed", seed, "Seed of the orderings.");
  }
  void validate() const;
};

class ShapleyValueSampling : public Method<ShapleyValueSampling, ShapleyValueSamplingOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "shapley_value_sampling",
      .family = "perturbation",
      .description = "Shapley values estimated from random feature orderings (optionally antithetic pairs), with "
                     "standard errors and an optional target error.",
      .reference = "Castro, Gomez & Tejada 2009, Polynomial calculation of the Shapley value based on sampling",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
