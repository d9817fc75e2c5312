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
  r.add<NoiseTunnel>();
  r.add<GradientShap>();
  r.add<ExpectedGradients>();
}

}  // namespace candela
