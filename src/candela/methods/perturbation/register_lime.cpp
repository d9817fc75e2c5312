#include "candela/core/registry.h"
#include "candela/methods/perturbation/lime.h"
#include "candela/methods/perturbation/surrogate_tree.h"

namespace candela {

// Called from register_perturbation_methods.
void register_lime_methods(Registry& r) {
  auto lime = method_info<Lime>(
      "lime", "perturbation",
      "A weighted linear surrogate fitted to the model on samples around the input (tabular rows: training-data "
      "statistics from --baseline dist:...; images: superpixels from --features; text: token ids).",
      "Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier");
  r.add(lime);
  auto tree = method_info<SurrogateTree>(
      "surrogate_tree", "global",
      "A global CART tree fitted to the model's predictions over the rows: if-then rules with coverage and "
      "fidelity; values are the tree's impurity-decrease feature importances.",
      "Craven & Shavlik 1996, Extracting Tree-Structured Representations of Trained Networks");
  tree.uses_target = false;
  r.add(tree);
}

}  // namespace candela
