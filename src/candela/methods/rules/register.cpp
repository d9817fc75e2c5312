#include "candela/core/registry.h"
#include "candela/methods/rules/deconvolution.h"
#include "candela/methods/rules/deep_lift.h"
#include "candela/methods/rules/guided_backprop.h"
#include "candela/methods/rules/guided_grad_cam.h"
#include "candela/methods/rules/lrp.h"

namespace candela {

void register_rule_methods(Registry& r) {
  r.add(method_info<GuidedBackprop>("guided_backprop", "propagation",
                                    "Gradient with ReLUs passing only positive gradients where the input was positive.",
                                    "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net"));
  r.add(method_info<Deconvolution>("deconvolution", "propagation",
                                   "Gradient with ReLUs passing only positive gradients (no forward mask).",
                                   "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks"));
  r.add(method_info<GuidedGradCam>("guided_grad_cam", "propagation",
                                   "Grad-CAM map (nearest-upsampled) times guided backpropagation.",
                                   "Selvaraju et al. 2017, Grad-CAM"));
  auto dl = method_info<DeepLift>("deep_lift", "propagation",
                                  "Rescale-rule multipliers times (input - reference); sums to f(x) - f(reference).",
                                  "Shrikumar, Greenside & Kundaje 2017, Learning Important Features Through "
                                  "Propagating Activation Differences");
  dl.completeness = true;
  r.add(dl);
  auto dls = method_info<DeepLift>("deep_lift_shap", "propagation",
                                   "DeepLIFT averaged over a baseline distribution (--baseline dist:FILE.npy).",
                                   "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions");
  dls.create = [](const nlohmann::json& j) -> std::unique_ptr<Explainer> {
    return std::make_unique<DeepLift>(options_from_json<DeepLift::Options>(j, "deep_lift_shap"), true);
  };
  dls.completeness = true;
  r.add(dls);
  r.add(method_info<Lrp>("lrp", "propagation",
                         "Layer-wise relevance propagation with zennit's rules and composites (--composite).",
                         "Bach et al. 2015, Layer-Wise Relevance Propagation; Anders et al. 2021, zennit"));
}

}  // namespace candela
