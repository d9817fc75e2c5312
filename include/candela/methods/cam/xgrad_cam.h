// XGrad-CAM (Fu et al. 2020). w_c = sum_ij g_cij A_cij / (sum_ij A_cij + 1e-7);
// map = sum_c w_c A_c.
#pragma once

#include "candela/methods/cam/base_cam.h"

namespace candela {

class XGradCam : public CamWith<XGradCam, PlainCamOptions> {
 public:
  static constexpr MethodTraits kTraits{
      .name = "xgrad_cam",
      .family = "cam",
      .description = "Channel weights from activation-normalised gradients.",
      .reference = "Fu et al. 2020, Axiom-based Grad-CAM"};
  using CamWith::CamWith;

 protected:
  at::Tensor layer_map(const LayerData& layer) const override;
};

}  // namespace candela
