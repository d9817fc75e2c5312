#include "candela/core/registry.h"
#include "candela/methods/perturbation/shapley.h"

namespace candela {

void register_shapley_methods(Registry& r) {
  r.add<ExactShapley>();
  r.add<ShapleyValueSampling>();
  r.add<KernelShap>();
}

}  // namespace candela
