#include "candela/core/registry.h"
#include "candela/methods/gradient/gradient_shap.h"
#include "candela/methods/gradient/input_x_gradient.h"
#include "candela/methods/gradient/integrated_gradients.h"
#include "candela/methods/gradient/noise_tunnel.h"
#include "candela/methods/gradient/saliency.h"

namespace candela {

void register_gradient_methods(Registry& r) {
  r.add<Saliency>();
  r.add<InputXGradient>();
  r.add<IntegratedGradients>();
  r.add(method_info<NoiseTunnel>("noise_tunnel", "gradient",
                                 "SmoothGrad, SmoothGrad-squared or VarGrad around any other method.",
                                 "Smilkov et al. 2017, SmoothGrad; Adebayo et al. 2018, Local explanation methods"));
  r.add(method_info<GradientShap>("gradient_shap", "gradient",
                                  "Expected (input - baseline) x gradient at random points between a baseline "
                                  "(drawn from --baseline dist:FILE.npy; any other baseline pairs each input with "
                                  "its own reference) and the input plus Gaussian noise of std `stdevs`.",
                                  "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions"));
  auto eg = method_info<GradientShap>("expected_gradients", "gradient",
                                      "Integrated gradients averaged over a baseline distribution: the gradient_shap "
                                      "estimator, named for its use with stdevs = 0 (the default).",
                                      "Erion et al. 2021, Improving performance of deep learning models with "
                                      "axiomatic attribution priors and expected gradients");
  eg.create = [](const nlohmann::json& j) -> std::unique_ptr<Explainer> {
    return std::make_unique<GradientShap>(options_from_json<GradientShap::Options>(j, "expected_gradients"),
                                          "expected_gradients");
  };
  r.add(eg);
}

}  // namespace candela
