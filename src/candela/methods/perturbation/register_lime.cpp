#include "candela/core/registry.h"
#include "candela/methods/perturbation/anchors.h"
#include "candela/methods/perturbation/lime.h"
#include "candela/methods/perturbation/rulefit.h"
#include "candela/methods/perturbation/surrogate_tree.h"

namespace candela {

// Called from register_perturbation_methods.
void register_lime_methods(Registry& r) {
  r.add<Lime>();
  r.add<SurrogateTree>();
  r.add<Anchors>();
  r.add<RuleFit>();
}

}  // namespace candela
