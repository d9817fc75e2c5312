#include "candela/core/registry.h"
#include "candela/methods/perturbation/feature_ablation.h"
#include "candela/methods/perturbation/occlusion.h"
#include "candela/methods/perturbation/rise.h"
#include "candela/methods/perturbation/shapley.h"

namespace candela {

void register_perturbation_methods(Registry& r) {
  r.add<Occlusion>();
  r.add<FeatureAblation>();
  r.add<Rise>();
  register_shapley_methods(r);
  register_lime_methods(r);
}

}  // namespace candela
