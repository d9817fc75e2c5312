#include "candela/core/registry.h"
#include "candela/methods/propagation/attn_lrp.h"
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
  r.add<DeepLift>();
  r.add<DeepLiftShap>();
  r.add<Lrp>();
  r.add<AttnLrp>();
}

}  // namespace candela
