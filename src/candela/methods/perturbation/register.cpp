#include "candela/core/registry.h"

namespace candela {

void register_perturbation_methods(Registry& r) {}

}  // namespace candela
