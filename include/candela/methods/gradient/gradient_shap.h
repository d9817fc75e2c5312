// GradientSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions";
// Captum's GradientShap) and expected gradients (Erion et al. 2021).
// Definition: a = E_{b ~ D, e ~ N(0, stdevs^2), u ~ U(0,1)} [ (x + e - b) * grad f_t(b + u (x + e - b)) ],
// estimated with n_samples draws per input; D is the baseline distribution. Expected
// gradients is the same estimator with stdevs = 0. In expectation the attributions sum to
// f_t(x) - E_D[f_t(b)]; that gap is reported as the convergence delta.
#pragma once

#include "candela/core/explainer.h"

namespace candela {

class GradientShap : public Explainer {
 public:
  static constexpr bool kUsesBaseline = true;
  struct Options {
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
  GradientShap() : GradientShap(Options{}) {}
  explicit GradientShap(Options options, std::string name = "gradient_shap");
  std::string name() const override { return name_; }
  nlohmann::json options() const override;
  bool uses_baseline() const override { return kUsesBaseline; }
  Attribution attribute(Evaluator& evaluator, const ExplainRequest& request) const override;

 private:
  Options options_;
  std::string name_;
};

}  // namespace candela
