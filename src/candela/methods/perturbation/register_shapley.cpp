#include "candela/core/registry.h"
#include "candela/methods/perturbation/shapley.h"

namespace candela {

void register_shapley_methods(Registry& r) {
  auto exact = method_info<ExactShapley>(
      "exact_shapley", "perturbation",
      "Exact Shapley values of feature groups (all 2^G coalitions, G <= 20), the reference or the mean over "
      "background rows (--baseline dist:FILE.npy) standing in for absent groups.",
      "Shapley 1953, A Value for n-Person Games; Strumbelj & Kononenko 2014, Explaining prediction models and "
      "individual predictions with feature contributions");
  exact.completeness = true;
  r.add(exact);
  auto sampling = method_info<ShapleyValueSampling>(
      "shapley_value_sampling", "perturbation",
      "Shapley values estimated from random feature orderings (optionally antithetic pairs), with standard "
      "errors and an optional target error.",
      "Castro, Gomez & Tejada 2009, Polynomial calculation of the Shapley value based on sampling");
  sampling.completeness = true;
  r.add(sampling);
  auto kernel = method_info<KernelShap>(
      "kernel_shap", "perturbation",
      "shap's KernelExplainer: Shapley-kernel weighted least squares over enumerated and sampled coalitions, "
      "the background rows (--baseline dist:FILE.npy) standing in for absent groups.",
      "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions");
  kernel.completeness = true;
  r.add(kernel);
}

}  // namespace candela
