#include "candela/core/registry.h"

#include "candela/core/error.h"

namespace candela {

const Registry& Registry::builtin() {
  static const Registry registry = [] {
    Registry r;
    register_gradient_methods(r);
    register_cam_methods(r);
    register_layer_methods(r);
    register_perturbation_methods(r);
    register_propagation_methods(r);
    register_attention_methods(r);
    return r;
  }();
  return registry;
}

nlohmann::json Registry::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& m : methods())
    out.push_back({{"name", m.name}, {"family", m.family}, {"description", m.description},
                   {"reference", m.reference}, {"options", m.schema}, {"completeness", m.completeness},
                   {"stochastic", m.stochastic}, {"uses_baseline", m.uses_baseline},
                   {"uses_target", m.uses_target}, {"catalog", m.catalog}});
  return out;
}

}  // namespace candela
