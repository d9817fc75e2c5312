#include "candela/core/registry.h"
#include "candela/methods/propagation/deconvolution.h"
#include "candela/methods/propagation/deep_lift.h"
#include "candela/methods/propagation/guided_backprop.h"
#include "candela/methods/propagation/guided_grad_cam.h"
#include "candela/methods/propagation/lrp.h"

namespace candela {

void register_propagation_methods(Registry& r) {
  r.add<GuidedBackprop>();
  r.add<Deconvolution>();
  r.add<GuidedGradCam>();
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
  auto lrp = method_info<Lrp>("lrp", "propagation",
                              "Layer-wise relevance propagation with zennit's rules and composites (--composite).",
                              "Bach et al. 2015, Layer-Wise Relevance Propagation; Anders et al. 2021, zennit");
  lrp.catalog["composites"] = {
      {"epsilon_plus", "conv: z_plus; linear: epsilon"},
      {"epsilon_plus_flat", "first conv or linear: flat; conv: z_plus; linear: epsilon"},
      {"epsilon_gamma_box", "first conv: z_box (low/high, default from the input spec); conv: gamma; linear: epsilon"},
      {"epsilon_alpha2_beta1", "conv: alpha_beta (2, 1); linear: epsilon"},
      {"epsilon_alpha2_beta1_flat", "first conv or linear: flat; conv: alpha_beta (2, 1); linear: epsilon"},
      {"FILE.json", "{\"rules\": [{\"type\": \"conv\"|\"linear\"|\"affine\", \"path\": \"glob\", \"first\": true, "
                    "\"rule\": \"gamma\", \"gamma\": 0.5}, ...]}: the first matching entry wins"}};
  lrp.catalog["rules"] = {
      {"epsilon", "R_in = x * W^T (R / (z + epsilon sign z))"},
      {"zero", "LRP-0: epsilon without a stabiliser"},
      {"gamma", "positive contributions boosted by gamma (zennit's generalised form)"},
      {"alpha_beta", "alpha * positive - beta * negative contributions, alpha - beta = 1"},
      {"z_plus", "positive contributions only (alpha 1, beta 0)"},
      {"flat", "uniform over the receptive field"},
      {"w_square", "in proportion to squared weights"},
      {"z_box", "bounded input domain [low, high] (first layer)"},
      {"other layers", "activations and unfolded batch norms pass relevance; additions and average pooling split "
                       "it in proportion (norm); max pooling routes it to the maximum; BatchNorm after a "
                       "convolution is folded into it"}};
  r.add(lrp);
}

}  // namespace candela
