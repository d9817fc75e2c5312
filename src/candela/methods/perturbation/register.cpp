#include "candela/core/registry.h"
#include "candela/methods/perturbation/feature_ablation.h"
#include "candela/methods/perturbation/occlusion.h"
#include "candela/methods/perturbation/rise.h"
#include "candela/methods/perturbation/shapley.h"

namespace candela {

void register_perturbation_methods(Registry& r) {
  r.add(method_info<Occlusion>("occlusion", "perturbation",
                               "Average drop of the target score when a sliding window over the element is set to "
                               "the baseline (Captum's Occlusion).",
                               "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks"));
  r.add(method_info<FeatureAblation>("feature_ablation", "perturbation",
                                     "Drop of the target score when the element's feature group (--features; "
                                     "default each element) is set to the baseline (Captum's FeatureAblation).",
                                     "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks"));
  r.add(method_info<Rise>("rise", "perturbation",
                          "Average of random smooth masks weighted by the target score of the masked input.",
                          "Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation of "
                          "Black-box Models"));
  register_shapley_methods(r);
  register_lime_methods(r);
}

}  // namespace candela
