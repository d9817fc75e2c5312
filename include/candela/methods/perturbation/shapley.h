// The Shapley-value family of perturbation methods: exact_shapley, shapley_value_sampling,
// kernel_shap. They share one game (see exact_shapley.h) and differ in how they estimate
// its Shapley values.
#pragma once

#include "candela/methods/perturbation/exact_shapley.h"
#include "candela/methods/perturbation/kernel_shap.h"
#include "candela/methods/perturbation/shapley_value_sampling.h"

namespace candela {

class Registry;
// Adds the three methods (family "perturbation"); register_perturbation_methods calls it.
void register_shapley_methods(Registry& registry);

}  // namespace candela
