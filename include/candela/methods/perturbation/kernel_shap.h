// Kernel SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions";
// shap's KernelExplainer).
// Definition: phi minimises sum_S w(S) [v(S) - v(none) - sum_{g in S} phi_g]^2 subject to
// sum_g phi_g = v(all) - v(none), with the Shapley kernel w(S) = (M - 1) / (C(M, |S|) |S| (M - |S|))
// over the M groups that vary (a group equal to the reference in every background row gets
// 0, as in shap), and v the game of exact_shapley (f averaged over the background rows).
// Coalitions as shap: n_samples (0 = "auto" = 2M + 2048, at most 2^M - 2) coalitions;
// subset sizes (with their complements) are enumerated whole while the budget allows, the
// rest is sampled by size in complement pairs, repeats adding weight. The constraint is met
// by eliminating the last group and solving the weighted least squares in double (normal
// equations; the pseudo-inverse when singular, as shap), so sum_g phi_g = f_t(x) - E_b[f_t(b)] exactly. With every
// coalition enumerated the result is the exact Shapley value. shap's l1_reg feature
// selection is not applied (shap's l1_reg=False; its default only selects when fewer than
// 20% of the coalitions are sampled).
//
// extra.standard_error[i][g]: the cluster-robust (sandwich) standard error of the fit, the
// clusters being the random draws (a coalition and its complement) and the enumerated part
// fixed: Cov = A^-1 [sum_d (s_d - mean s)(s_d - mean s)^T] A^-1 * D / (D - 1), A the weighted
// normal matrix and s_d the draw's weighted residual score; the delta-method twin of
// resampling the draws with replacement and refitting (the pairs bootstrap), at the cost of
// one fit. 0 when everything is enumerated. With target_error > 0, n_samples grows (up to max_samples;
// values already evaluated are reused) until every standard error is below it.
// Cost per input: n_samples coalitions x background rows, plus f(x) and f(background).
#pragma once

#include "candela/core/method.h"

namespace candela {

struct KernelShapOptions {
  int64_t n_samples = 0;
  int64_t perturbations_per_eval = 0;
  bool standard_errors = true;
  double target_error = 0.0;
  int64_t max_samples = 65536;
  int64_t seed = 0;
  template <class V> void visit(V& v) {
    v("n_samples", n_samples, "Coalitions per input (shap's nsamples); 0 = auto = 2 * groups + 2048.");
    v("perturbations_per_eval", perturbations_per_eval,
      "Most coalitions per model call, each with all its background rows (0: chosen by the evaluator "
      "within --max-memory).");
    v("standard_errors", standard_errors,
      "Report extra.standard_error (sandwich estimate over the sampled draws); false: NaN.");
    v("target_error", target_error,
      "If > 0: raise n_samples until every group's standard error is below this (0: off).");
    v("max_samples", max_samples, "Most coalitions per input when target_error is set.");
    v("seed", seed, "Seed of the sampled coalitions.");
  }
  void validate() const;
};

class KernelShap : public Method<KernelShap, KernelShapOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "kernel_shap",
      .family = "perturbation",
      .description = "shap's KernelExplainer: Shapley-kernel weighted least squares over enumerated and sampled "
                     "coalitions, the background rows (--baseline dist:FILE.npy) standing in for absent groups.",
      .reference = "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
      .uses_baseline = true,
      .completeness = true};
  using Method::Method;
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;
};

}  // namespace candela
